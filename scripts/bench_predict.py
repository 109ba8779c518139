"""Cold start of a one-image predict, as whole processes: signs_jax (cold and warm compilation cache)
side by side with Keras `load_model` + `predict` when tf-keras is importable by --keras-python.

    python scripts/bench_predict.py --weights /tmp/ResNet50.h5 --image photo.jpg [--keras-python /path/to/python]

(a full-size ResNet50.h5: `scripts/check_full_keras_model.py --out /tmp/ResNet50.h5`, or any saved model)

Reports the median wall time of --repeats runs of each.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KERAS_SNIPPET = r"""
import os, sys
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1"); os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, tf_keras as keras
model = keras.models.load_model(sys.argv[1])
x = keras.utils.img_to_array(keras.utils.load_img(sys.argv[2], target_size=model.input_shape[1:3])) / 255.0
print(model.predict(x[None], verbose=0)[0].tolist())
"""


def timed(cmd, env=None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="a Keras .h5 (or a run directory; then no Keras comparison)")
    p.add_argument("--image", required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--keras-python",
        default=os.environ.get("KERAS_PYTHON") or sys.executable,
        help="a Python that can import tf_keras (default: $KERAS_PYTHON, then this Python)",
    )
    args = p.parse_args()

    ours = [
        sys.executable,
        "-m",
        "signs_jax.predict",
        args.image,
        "--weights",
        args.weights,
        "--interpolation",
        "nearest",
        "--json",
    ]
    results = {}
    cold = []
    for _ in range(args.repeats):
        cache = tempfile.mkdtemp(prefix="signs_jax_cache_")
        cold.append(timed(ours, dict(os.environ, SIGNS_JAX_CACHE=cache)))
        shutil.rmtree(cache)
    results["signs_jax, empty compilation cache"] = cold
    cache = tempfile.mkdtemp(prefix="signs_jax_cache_")
    env = dict(os.environ, SIGNS_JAX_CACHE=cache)
    timed(ours, env)  # fill the cache
    results["signs_jax, warm compilation cache"] = [timed(ours, env) for _ in range(args.repeats)]
    shutil.rmtree(cache)
    if Path(args.weights).suffix == ".h5":
        probe = subprocess.run([args.keras_python, "-c", "import tf_keras"], capture_output=True)
        if probe.returncode == 0:
            results["Keras load_model + predict"] = [
                timed([args.keras_python, "-c", KERAS_SNIPPET, args.weights, args.image]) for _ in range(args.repeats)
            ]
        else:
            print(f"(Keras skipped: {args.keras_python} cannot import tf_keras)")
    medians = {k: statistics.median(v) for k, v in results.items()}
    keras = medians.get("Keras load_model + predict")
    for name, median in medians.items():
        ratio = f"  {median / keras:.2f}x Keras" if keras else ""
        print(f"{name:40s} median {median:6.2f} s  (runs: {', '.join(f'{t:.2f}' for t in results[name])}){ratio}")


if __name__ == "__main__":
    main()

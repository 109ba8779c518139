"""Throughput and latency of `python -m signs_jax.serve` under a bounded load, over real HTTP.

    python scripts/bench_serve.py --weights RUN_OR_H5 [--requests 500] [--concurrency 8] [--json]

Starts the server as a process on a free port, waits for it, then sends --requests POST /api/predict uploads
(raw JPEG bodies), --concurrency at a time, cycling through the SIGNS test photos: the JPEG files of --images
(default ../shared/datasets/signs_jpg/test_signs), else the packaged test set's images encoded as JPEG.
Every answer must be a 200 with a class; reports requests per second and the p50/p99 latency of one request.
"""

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGES = ROOT.parent / "shared" / "datasets" / "signs_jpg" / "test_signs"


def signs_photos(folder: Path):
    """(name, JPEG bytes) of the SIGNS test photos."""
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if files:
            return [(p.name, p.read_bytes()) for p in files]
    sys.path.insert(0, str(ROOT))
    import h5py
    from PIL import Image

    from signs_jax.data import PACKAGED_SIGNS

    photos = []
    with h5py.File(PACKAGED_SIGNS / "test_signs.h5", "r") as f:
        for i, image in enumerate(f["test_set_x"][:]):
            out = io.BytesIO()
            Image.fromarray(image).save(out, format="JPEG", quality=95)
            photos.append((f"test{i:03d}.jpg", out.getvalue()))
    return photos


def start_server(weights: str, timeout: float = 300):
    """The server process and its base URL, once it says where it listens."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "signs_jax.serve", "--weights", weights, "--port", "0"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    started = time.perf_counter()
    line = process.stdout.readline()
    found = re.search(r"http://\S+/", line)
    if not found:
        process.kill()
        sys.exit(f"error: the server did not start (exit status {process.wait()})")
    return process, found.group(0), time.perf_counter() - started


def ask(base: str, name: str, data: bytes) -> float:
    request = urllib.request.Request(
        f"{base}api/predict?filename={urllib.parse.quote(name)}", data=data, headers={"Content-Type": "image/jpeg"}
    )
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as answer:
        record = json.load(answer)
    if "class" not in record:
        raise RuntimeError(f"{name}: unexpected answer {record}")
    return time.perf_counter() - t0


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="a run directory, a work directory or a Keras .h5")
    p.add_argument("--requests", type=int, default=500, help="requests in all (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default: %(default)s)")
    p.add_argument("--images", default=str(DEFAULT_IMAGES), help="folder of JPEG photos (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = p.parse_args()

    photos = signs_photos(Path(args.images))
    process, base, startup = start_server(args.weights)
    try:
        ask(base, *photos[0])  # the first request pays for nothing the others do not
        jobs = [photos[i % len(photos)] for i in range(args.requests)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            latencies = list(pool.map(lambda job: ask(base, *job), jobs))
        elapsed = time.perf_counter() - t0
    finally:
        process.terminate()
        process.wait(timeout=60)
    result = {
        "weights": args.weights,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "startup_s": round(startup, 2),
        "seconds": round(elapsed, 3),
        "requests_per_s": round(args.requests / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * percentile(latencies, 99), 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:15s} {value}")


if __name__ == "__main__":
    main()

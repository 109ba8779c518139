"""`python -m signs_jax.export WEIGHTS --format {onnx,stablehlo,keras} OUT`: the model for other runtimes.

Both graph formats hold the whole inference function, weights included: float32 images in [0, 1] of the
model's input size, any batch size, in; the probabilities predict reports (softmax of the logits divided
by the weights' calibration temperature) out. How to run each one without signs_jax: docs/export.md.
"""

import argparse
import sys

from . import cli

FORMATS = ("onnx", "stablehlo", "keras")
# jax.export lowers for these at once, so one file runs wherever JAX does.
STABLEHLO_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
ONNX_INPUT, ONNX_OUTPUT = "images", "probabilities"
MISSING_ONNX = '--format onnx needs the export extra: pip install -e ".[export]"'


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m signs_jax.export",
        description="Export a trained model: ONNX (onnxruntime and other ONNX runtimes), StableHLO (a serialized "
        "jax.export module: JAX alone runs it) or a Keras 2 weights .h5. ONNX and StableHLO take float32 "
        "images (N, H, W, 3) in [0, 1], any N, and return the calibrated probabilities (N, classes).",
        epilog="OUT is written to a temporary file and renamed into place. An existing OUT is replaced only with "
        "--force, and never when it is WEIGHTS, a directory or an image.",
    )
    p.add_argument(
        "weights", metavar="WEIGHTS", help="a run directory, a work directory (its newest run) or a Keras .h5"
    )
    p.add_argument("out", metavar="OUT", help="the file to write")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    return p


def inference_function(weights):
    """`images -> probabilities` with the variables closed over, computed with XLA's own convolution.

    The matmul convolution some models train with is tuned for XLA's CPU backend; it owns the same
    parameters, and as a plain convolution the graph stays small and portable (for ONNX, an op each).
    """
    import jax

    from .models import CONV_IMPLEMENTATIONS

    model = weights.model.clone(conv=CONV_IMPLEMENTATIONS["xla"], inference_conv=None)
    variables, temperature = weights.variables, weights.temperature

    def probabilities(images):
        return jax.nn.softmax(model.apply(variables, images) / temperature, axis=-1)

    return probabilities


def input_shape(weights, batch):
    return (batch, *weights.model.input_shape)


def export_stablehlo(weights, path):
    """Write a serialized `jax.export.Exported` with a symbolic batch size; `jax.export.deserialize` reads it."""
    import jax
    import jax.numpy as jnp

    from .files import atomic_path

    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct(input_shape(weights, batch), jnp.float32)
    exported = jax.export.export(jax.jit(inference_function(weights)), platforms=STABLEHLO_PLATFORMS)(spec)
    with atomic_path(path) as tmp:
        tmp.write_bytes(exported.serialize())
    return path


def export_onnx(weights, path):
    """Write a self-contained ONNX model (jax2onnx) with a dynamic batch axis, input `images`, output
    `probabilities`; the class names and the source of the weights go into its metadata."""
    import contextlib
    import io
    import json
    import logging

    onnx, to_onnx = _onnx_modules()
    from .files import atomic_path

    # onnx_ir warns about every shape constant whose type it leaves unset, and jax2onnx 0.13 prints debugging
    # lines while converting: noise to the user, whose stdout may be a pipe reading our own output.
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        proto = to_onnx(
            inference_function(weights),
            [input_shape(weights, "N")],
            model_name="signs_jax",
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
        )
    for key, value in (("class_names", json.dumps(list(weights.class_names))), ("weights", weights.source)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
    return path


def export_keras(weights, path):
    """The weights as a Keras 2 weights file (`signs_jax.keras_h5.save_keras_h5`): no temperature, no class names."""
    from .keras_h5 import save_keras_h5

    return save_keras_h5(path, weights.variables)


EXPORTERS = {"onnx": export_onnx, "stablehlo": export_stablehlo, "keras": export_keras}


def _onnx_modules():
    import logging

    from .errors import UserError

    # jax2onnx logs a warning with a traceback for each optional plugin that does not import under this JAX
    # (dm-pix's, which the model does not use): noise that would bury the one line a user needs.
    logging.getLogger("jax2onnx").setLevel(logging.ERROR)
    try:
        import onnx
        from jax2onnx import to_onnx
    except ImportError:
        raise UserError(MISSING_ONNX) from None
    return onnx, to_onnx


def check_out(args):
    from pathlib import Path

    from .errors import UserError
    from .files import check_write_target

    out = Path(args.out)
    check_write_target(out, "OUT", "h5" if args.format == "keras" else "export", inputs=[args.weights])
    if (out.exists() or out.is_symlink()) and not args.force:
        raise UserError(f"{out}: exists; not overwriting it (pass --force to replace it)")


def run(args) -> int:
    from .weights import load_weights

    if args.format == "onnx":
        _onnx_modules()  # before the (slow) load: a missing extra is reported at once
    check_out(args)
    weights = load_weights(args.weights, flag="WEIGHTS")
    EXPORTERS[args.format](weights, args.out)
    print(f"{args.out}: {args.format} export of {weights.source}")
    return 0


def main(argv=None) -> int:
    from .errors import run_cli

    return run_cli(build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())

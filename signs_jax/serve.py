"""`python -m signs_jax.serve [--weights ...]`: a small web app, a page to try photos on and a JSON API.

`POST /api/predict` answers, for one uploaded image, what `predict --json` prints for it (the path being the
uploaded file's name); `POST /api/explain` answers the explanation overlay as a PNG; `GET /api/health` says the
server is up; `GET /` is the page (signs_jax/static/index.html). The model is compiled once, for one batch
shape, at start; one thread runs every forward pass, batching the requests that wait (`signs_jax.batching`).

Needs the `serve` extra (Starlette, uvicorn, python-multipart). Nothing heavy is imported before the arguments
are parsed: `--help` and argument errors never load JAX or the web stack.
"""

import argparse
import sys

from . import cli
from .calibration import DEFAULT_THRESHOLD

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 10
MISSING_EXTRA = 'serve needs the serve extra: pip install -e ".[serve]"'


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog="python -m signs_jax.serve",
        description="A web page and a JSON API that classify hand-sign photos with a trained model (default: the "
        "best checkpoint of the newest run under checkpoints/) or a Keras .h5. Stop it with Ctrl-C.",
        epilog="API: POST /api/predict with an image (multipart field 'image', or the raw body with an image "
        "Content-Type and an optional ?filename=) answers predict --json's record; POST /api/explain the same way "
        "answers the explanation overlay as a PNG; GET /api/health. docs/serve.md has examples.",
    )
    cli.add_weights_arguments(p)
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 opens it to the network)",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port, 0 for any free one (default: %(default)s)")
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        metavar="P",
        help="mark an answer uncertain when its uncalibrated confidence is below P, as predict's --threshold "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        metavar="MB",
        help="largest image accepted, in MiB; a larger upload is refused (413) while it is read (default: %(default)s)",
    )
    return p


def main(argv=None) -> int:
    from .errors import run_cli

    return run_cli(build_parser, run, argv)


def validate_args(args) -> None:
    import math

    from .errors import UserError
    from .predict import check_threshold

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be between 0 (any free port) and 65535")
    if not (math.isfinite(args.max_upload_mb) and args.max_upload_mb > 0):
        raise UserError(f"--max-upload-mb {args.max_upload_mb}: must be a positive number of MiB")
    check_threshold(args.threshold)


def check_serve_extra() -> None:
    """The web stack, or one line saying how to install it."""
    from .errors import UserError

    try:
        import python_multipart  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError(MISSING_EXTRA) from None


def run(args) -> int:
    import logging

    from .weights import load_weights

    validate_args(args)
    check_serve_extra()
    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's notes on read-only checkpoint directories
    weights = load_weights(args.weights, args.workdir)
    sock = listening_socket(args.host, args.port)  # before the compile: a taken port fails at once
    import uvicorn

    from .serve_app import Predictor, create_app

    predictor = Predictor(weights, args.threshold)
    try:
        port = sock.getsockname()[1]
        shown_host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"serving {weights.source} on http://{shown_host}:{port}/ (Ctrl-C stops)", flush=True)
        server = uvicorn.Server(
            uvicorn.Config(create_app(predictor, round(args.max_upload_mb * 2**20)), log_level="warning")
        )
        server.run(sockets=[sock])
    finally:
        predictor.close()
        sock.close()
    return 0


def listening_socket(host: str, port: int):
    """A bound TCP socket for `host` and `port` (0: any free port), or one line saying why not."""
    import socket

    from .errors import UserError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise UserError(f"--host {host}: not an address to listen on ({err.strerror or err})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise UserError(f"{host}:{port}: cannot listen there ({err.strerror or err})") from None
    return sock


if __name__ == "__main__":
    sys.exit(main())

"""The web app of `python -m signs_jax.serve`: its routes, how an upload is read, and the model behind them.

Every answer is JSON (`{"error": "<one line>"}` for a refused request) except the page and the explanation PNG.
An upload is counted while it is read and refused (413) as soon as it is over the limit. Decoding and
explanations run in worker threads, off the event loop; forward passes run in one thread (`BatchQueue`).
"""

import asyncio
import io
import json
import tempfile
import threading
from importlib import resources
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .batching import BatchQueue
from .explain import DEFAULT_METHOD, DEFAULT_STAGE, method_name
from .images import ImageError, load_image
from .predict import compiled_forward, prediction_record

UPLOAD_NAME = "upload"  # the "path" of a raw-body upload without ?filename=
SERVE_BATCH = 8  # the one compiled batch shape: requests waiting together share a forward pass
FORM_OVERHEAD = 64 * 1024  # what a multipart body may add to the image (boundaries, part headers)
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
EXPLAIN_METHOD = method_name(DEFAULT_METHOD, DEFAULT_STAGE)


class RequestError(Exception):
    """A refused request: its HTTP status and the one line the client gets."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Predictor:
    """The weights, compiled once at start, and what the routes ask of them."""

    def __init__(self, weights, threshold: float, batch_size: int = SERVE_BATCH):
        self.weights = weights
        self.threshold = threshold
        self.size = tuple(weights.model.input_shape[:2])
        forward = compiled_forward(weights.model)
        self.queue = BatchQueue(lambda x: forward(weights.variables, x), batch_size, (*self.size, 3))
        self.queue.submit(np.zeros((*self.size, 3), np.float32)).result()  # the compile, before the first request
        self._explaining = threading.Lock()  # one explanation (dozens of backward passes) at a time

    def close(self) -> None:
        self.queue.close()

    def decode(self, data: bytes, name: str) -> np.ndarray:
        """The uploaded bytes as the model's input, decoded as predict decodes a file; 400 naming `name` if not."""
        return self._read(data, name, lambda path: load_image(path, self.size))

    def _read(self, data: bytes, name: str, read):
        """`read(path)` of the upload written to a temporary file; the decoder's error names the upload."""
        with tempfile.TemporaryDirectory(prefix="signs-serve-") as tmp:
            path = Path(tmp) / UPLOAD_NAME
            path.write_bytes(data)
            try:
                return read(path)
            except ImageError as err:
                raise RequestError(400, str(err).replace(str(path), name, 1)) from None

    async def record(self, data: bytes, name: str) -> dict:
        image = await run_in_threadpool(self.decode, data, name)
        logits = await asyncio.wrap_future(self.queue.submit(image))
        return prediction_record(name, logits, self.weights, self.threshold)

    def explanation_png(self, data: bytes, name: str) -> bytes:
        """The photo with the default method's map of the predicted class over it, as predict --explain draws
        its right half, encoded as PNG."""
        from PIL import Image

        from .explain_pictures import display_photo, explanation_maps, overlaid_photo

        image, photo = self._read(data, name, lambda path: (load_image(path, self.size), display_photo(path)))
        with self._explaining:
            maps, _ = explanation_maps(self.weights, image[None])
        picture = Image.fromarray(np.round(overlaid_photo(photo, maps[0]) * 255).astype(np.uint8))
        out = io.BytesIO()
        picture.save(out, format="PNG")
        return out.getvalue()


async def read_upload(request: Request, limit: int):
    """(file name, bytes) of the image a request carries: the multipart field `image`, or the raw body with an
    image Content-Type. The body is counted as it arrives: over the limit, reading stops with a 413."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_form = kind == "multipart/form-data"
    if not (is_form or kind.startswith(RAW_IMAGE_TYPES)):
        raise RequestError(
            415, f"Content-Type {kind or 'missing'}: send an image, or a multipart form with the image as 'image'"
        )
    body_limit = limit + (FORM_OVERHEAD if is_form else 0)
    too_large = RequestError(413, f"upload larger than the limit of {_mib(limit)} (--max-upload-mb)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > body_limit:
                raise too_large
    except ClientDisconnect:
        raise RequestError(400, "the client closed the connection before the upload was complete") from None
    if is_form:
        name, data = await _form_image(request, bytes(body))
    else:
        name, data = request.query_params.get("filename") or UPLOAD_NAME, bytes(body)
    if not data:
        raise RequestError(400, f"{name}: empty upload")
    if len(data) > limit:
        raise too_large
    return name, data


async def _form_image(request: Request, body: bytes):
    async def chunks():
        yield body

    try:
        form = await MultiPartParser(request.headers, chunks(), max_files=1, max_fields=8).parse()
    except MultiPartException as err:
        raise RequestError(400, f"cannot read the form: {err.message}") from None
    upload = form.get("image")
    if not isinstance(upload, UploadFile):
        raise RequestError(400, "the form has no file in the field 'image'")
    return upload.filename or UPLOAD_NAME, await upload.read()


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def create_app(predictor: Predictor, max_upload_bytes: int) -> Starlette:
    """The routes over `predictor`; uploads over `max_upload_bytes` are refused."""
    page = resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")

    async def index(request):
        return HTMLResponse(page)

    async def health(request):
        names = list(predictor.weights.class_names)
        return JSONResponse({"status": "ok", "weights": predictor.weights.source, "classes": names})

    async def predict(request):
        name, data = await read_upload(request, max_upload_bytes)
        # json.dumps as predict --json writes it: the same text, not only the same values
        return Response(json.dumps(await predictor.record(name=name, data=data)), media_type="application/json")

    async def explain(request):
        name, data = await read_upload(request, max_upload_bytes)
        png = await run_in_threadpool(predictor.explanation_png, data, name)
        return Response(png, media_type="image/png", headers={"X-Explain-Method": EXPLAIN_METHOD})

    async def refused(request, err: RequestError):
        return JSONResponse({"error": str(err)}, status_code=err.status)

    async def http_error(request, err: HTTPException):
        return JSONResponse({"error": err.detail}, status_code=err.status_code, headers=err.headers)

    async def failed(request, err: Exception):
        return JSONResponse({"error": f"internal error: {type(err).__name__}: {err}"}, status_code=500)

    routes = [
        Route("/", index),
        Route("/api/health", health),
        Route("/api/predict", predict, methods=["POST"]),
        Route("/api/explain", explain, methods=["POST"]),
    ]
    handlers = {RequestError: refused, HTTPException: http_error, Exception: failed}
    return Starlette(routes=routes, exception_handlers=handlers)

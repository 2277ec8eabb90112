"""Images uploaded from the browser: checked, size-limited and kept by content in the data folder.

The browser first sends the file to Gradio's upload route (its temporary folder); `store_upload` then copies
it to `<data>/uploads/<sha256>.<ext>`, so a workflow refers to a file that outlives Gradio's cache and that
a run confined to the data folder may read. Only files inside Gradio's upload folder are taken, and only
images PIL can open; the received file is removed from that folder whether it is kept or refused.

Budgets (README, "Limits"): one file at most MAX_UPLOAD_BYTES, one upload request at most
MAX_UPLOAD_REQUEST_BYTES in all (UploadQuota, whatever the number of files in it), and whatever else Gradio
keeps in its temporary folder deleted after GRADIO_CACHE_SECONDS.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nodes.limits import image_size_problem, open_image_header

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
# One image per request, as the canvas sends it, plus room for the multipart headers around it.
MAX_UPLOAD_REQUEST_BYTES = MAX_UPLOAD_BYTES + 1024 * 1024
GRADIO_CACHE_SECONDS = 3600
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


class UploadRefused(ValueError):
    """The upload is not an image we keep; the message says why."""


def store_upload(received: Path, uploads: Path, gradio_folder: Path) -> Path:
    """Copy an uploaded image into `uploads` under its content hash; return where it now lives."""
    received = received.resolve()
    if not received.is_relative_to(gradio_folder.resolve()) or not received.is_file():
        raise UploadRefused("that file did not come through the upload route")
    try:
        return _keep(received, uploads)
    finally:
        received.unlink(missing_ok=True)  # kept or refused, Gradio's copy has served its purpose


def _keep(received: Path, uploads: Path) -> Path:
    size = received.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise UploadRefused(f"the file is {size / 1e6:.1f} MB; uploads are limited to {MAX_UPLOAD_BYTES / 1e6:.0f} MB")
    data = received.read_bytes()
    try:
        with open_image_header(data) as image:
            kind = image.format
            too_large = image_size_problem(*image.size)  # from the header, before anything is decoded
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise UploadRefused(f"not an image this can read ({error})") from None
    if too_large is not None:
        raise UploadRefused(too_large)
    if kind not in SUFFIXES:
        raise UploadRefused(f"{kind} images are not supported: upload a PNG, JPEG or WebP")
    uploads.mkdir(parents=True, exist_ok=True)
    target = uploads / (hashlib.sha256(data).hexdigest() + SUFFIXES[kind])
    if not target.exists():
        # Written beside the target and renamed, so a half-written file never carries the final name.
        with tempfile.NamedTemporaryFile(dir=uploads, delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, target)
    return target


class _RequestTooLarge(Exception):
    pass


class UploadQuota:
    """ASGI middleware: an upload request (POST …/upload) over `limit` bytes in all is answered 413, from its
    Content-Length before anything is read, or as soon as a body without one passes the limit."""

    def __init__(self, app: ASGIApp, limit: int = MAX_UPLOAD_REQUEST_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/upload"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _RequestTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _RequestTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        message = f"an upload request is limited to {self.limit / 1e6:.0f} MB in all".encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(message)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": message})


def upload_limits() -> dict[str, Any]:
    """Gradio launch arguments for the upload budgets: per file, and per request through UploadQuota."""
    return {"max_file_size": MAX_UPLOAD_BYTES, "app_kwargs": {"middleware": [Middleware(UploadQuota)]}}

"""Images uploaded from the browser: checked, size-limited and kept by content in the data folder.

The browser first sends the file to Gradio's upload route (its temporary folder); `store_upload` then copies
it to `<data>/uploads/<sha256>.<ext>`, so a workflow refers to a file that outlives Gradio's cache and that
a run confined to the data folder may read. Only files inside Gradio's upload folder are taken, and only
images PIL can open.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from nodes.limits import image_size_problem

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


class UploadRefused(ValueError):
    """The upload is not an image we keep; the message says why."""


def store_upload(received: Path, uploads: Path, gradio_folder: Path) -> Path:
    """Copy an uploaded image into `uploads` under its content hash; return where it now lives."""
    received = received.resolve()
    if not received.is_relative_to(gradio_folder.resolve()) or not received.is_file():
        raise UploadRefused("that file did not come through the upload route")
    size = received.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise UploadRefused(f"the file is {size / 1e6:.1f} MB; uploads are limited to {MAX_UPLOAD_BYTES / 1e6:.0f} MB")
    data = received.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
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

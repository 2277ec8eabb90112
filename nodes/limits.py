"""Budgets nodes check before any work starts (README, "Limits"), read from the environment when checked.

Imports nothing heavy (PIL, not torch): the upload route checks images against the same budget.
"""

from __future__ import annotations

import io
import os
import warnings

from PIL import Image

DEFAULT_MAX_PIXELS = 2**26  # 67 Mpx per node output (width × height × batch): 4096² × 4, ~0.8 GB as float32 RGB
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # one decoded image: a 6,300² photo, ~0.5 GB as float32 RGBA


def _budget(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{variable} must be a whole number of pixels, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{variable} must be at least 1, got {value}")
    return value


def max_pixels() -> int:
    """The most pixels (width × height × batch) one node may make: FLOWCANVAS_MAX_PIXELS."""
    return _budget("FLOWCANVAS_MAX_PIXELS", DEFAULT_MAX_PIXELS)


def max_image_pixels() -> int:
    """The largest image (width × height) that is decoded, from an upload or a file: FLOWCANVAS_MAX_IMAGE_PIXELS."""
    return _budget("FLOWCANVAS_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)


def _pixels(count: int) -> str:
    return f"{count / 1e6:,.0f} Mpx" if count >= 10**6 else f"{count:,} px"


def pixel_problems(width: int, height: int, batch: int, field: str) -> list[tuple[str, str]]:
    """A node check's (field, message) when width × height × batch passes the budget, else none."""
    total, budget = width * height * batch, max_pixels()
    if total <= budget:
        return []
    return [
        (
            field,
            f"{width}×{height} px × {batch} is {_pixels(total)}, over the budget of {_pixels(budget)} "
            "(FLOWCANVAS_MAX_PIXELS)",
        )
    ]


def image_size_problem(width: int, height: int) -> str | None:
    """Why an image of this size is not decoded, or None."""
    budget = max_image_pixels()
    if width * height <= budget:
        return None
    return (
        f"the image is {width}×{height} px ({_pixels(width * height)}), over the budget of {_pixels(budget)} "
        "(FLOWCANVAS_MAX_IMAGE_PIXELS)"
    )


def open_image_header(data: bytes) -> Image.Image:
    """The image in `data`, opened (its header read, nothing decoded), without PIL's decompression-bomb warning:
    callers check image_size_problem on the header instead. PIL still raises DecompressionBombError past twice
    its own limit (179 Mpx)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))

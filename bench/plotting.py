"""Drawing helpers the benches share for their PIL plots (no plotting library is a dependency)."""

from __future__ import annotations

import math
from typing import Any

from PIL import ImageDraw, ImageFont


def font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def dashed_line(
    draw: ImageDraw.ImageDraw,
    points: list[tuple[float, float]],
    colour: tuple[int, int, int],
    pattern: tuple[int, ...] | None,
    width: int,
) -> None:
    if pattern is None:
        draw.line(points, fill=colour, width=width, joint="curve")
        return
    index, left, on = 0, float(pattern[0]), True  # position in the pattern carries over between segments
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        length = math.hypot(x1 - x0, y1 - y0)
        done = 0.0
        while done < length:
            step = min(left, length - done)
            if on:
                a, b = done / length, (done + step) / length
                draw.line(
                    [(x0 + (x1 - x0) * a, y0 + (y1 - y0) * a), (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b)],
                    fill=colour,
                    width=width,
                )
            done += step
            left -= step
            if left <= 1e-9:
                index = (index + 1) % len(pattern)
                left, on = float(pattern[index]), not on


def marker(draw: ImageDraw.ImageDraw, x: float, y: float, kind: str, colour: tuple[int, int, int], r: int = 4) -> None:
    if kind == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    elif kind == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=colour)
    elif kind == "triangle":
        draw.polygon([(x, y - r - 1), (x - r - 1, y + r), (x + r + 1, y + r)], fill=colour)
    else:
        draw.polygon([(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)], fill=colour)

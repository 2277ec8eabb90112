"""Read back a shape scene from pixels: background colour, object colour, shape, size and the object's mask.

It turns a generated image into numbers an edit can be scored with ("is the star still red?"), and it is
built to survive what a small generator does to pixels: blur and noise. The steps:

1. Background: every border pixel votes for its nearest palette colour (scenes keep the border clear of
   the object); the winner names the background, and those voters' median is its measured RGB.
2. Object colour: the median of the pixels clearly off the background (their interior, so anti-aliased
   edge pixels that mix in background do not pull it), named by the nearest palette colour.
3. Mask: each pixel's position on the line from the background RGB to the object RGB; at least halfway
   counts as object, which is how the dataset defines the drawn region of an anti-aliased edge.
4. Shape: every candidate is drawn with the dataset's own code, with the mask's area and centroid
   (using the candidate's known area and centroid in unit coordinates to get extent and centre), refined
   by a small search over extent and position; the highest IoU with the mask wins.
5. Size: the fitted extent, which unlike raw area is comparable across shapes (a large star covers less
   than a small square), against a threshold between the dataset's two extent ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from nodes.shapes.dataset import CANVAS, EXTENT_RANGES, PALETTE, SHAPES, coverage, shape_contains

# Fewer object pixels than this is noise or nothing, not a shape (the smallest drawn diamond has ~98).
MIN_OBJECT_PIXELS = 12
# Distance from the background (RGB in [0, 1]) beyond which a pixel is surely object, before the object's
# colour is known. Half the closest palette pair's distance (0.44), well above noise of σ ≈ 0.03.
ROUGH_DISTANCE = 0.2
# Between the largest small extent and the smallest large one, in canvas pixels.
SIZE_THRESHOLD = (EXTENT_RANGES["small"][1] + EXTENT_RANGES["large"][0]) / 2
# The refinement's search: relative extent changes and position shifts (in pixels) tried around the fit.
EXTENT_STEPS = (0.94, 1.0, 1.06)
SHIFT_STEPS = (-0.5, 0.0, 0.5)
REFINED_CANDIDATES = 3  # only the best few initial fits are refined
# Templates are also compared blurred by these Gaussians (σ in pixels), thresholded like the mask: a blurry
# image rounds a small diamond's corners and fills a small ring's hole, and so does the matching template.
TEMPLATE_BLURS = (0.0, 1.0, 2.0)

_NAMES = tuple(PALETTE)
_RGB = np.array([PALETTE[name] for name in _NAMES], dtype=np.float32) / 255.0


@dataclass(frozen=True)
class Analysis:
    """What an image shows. With no object found, `colour`, `shape`, `size`, `centre` and `extent` are None.

    Confidences are in [0, 1]: `background_confidence` and `colour_confidence` are the fractions of the
    border and object-interior pixels whose nearest palette colour agrees; `shape_confidence` is the best
    template's IoU with the mask; `size_confidence` grows with the fitted extent's distance from the size
    threshold (1 at the edge of either extent range or beyond). `centre` and `extent` are the fitted
    template's, in canvas (64-pixel) units like a Scene's.
    """

    background: str
    colour: str | None
    shape: str | None
    size: str | None
    mask: np.ndarray
    centre: tuple[float, float] | None
    extent: float | None
    background_rgb: tuple[float, float, float]
    colour_rgb: tuple[float, float, float] | None
    background_confidence: float
    colour_confidence: float
    shape_confidence: float
    size_confidence: float
    shape_scores: tuple[tuple[str, float], ...]  # (shape, IoU) for every candidate, best first

    @property
    def has_object(self) -> bool:
        return self.shape is not None


def as_rgb_array(image: Any) -> np.ndarray:
    """A PIL image, or an [H, W, 3] / [3, H, W] array or tensor (uint8, or float in [0, 1]) → float32 [H, W, 3]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim != 3 or 3 not in (array.shape[0], array.shape[-1]):
        raise ValueError(f"expected an RGB image [H, W, 3] or [3, H, W], got shape {array.shape}")
    if array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def nearest_colour(rgb: np.ndarray) -> np.ndarray:
    """Index into the palette's names of the nearest palette colour, for RGB in [0, 1] of shape [..., 3]."""
    distances = ((rgb[..., None, :] - _RGB) ** 2).sum(axis=-1)
    return distances.argmin(axis=-1)


def analyze(image: Any) -> Analysis:
    """Read back background colour, object colour, shape, size and mask from one scene image."""
    pixels = as_rgb_array(image)
    height, width = pixels.shape[:2]
    scale = CANVAS / min(height, width)  # image pixels → canvas units

    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    votes = nearest_colour(border)
    background_index = int(np.bincount(votes, minlength=len(_NAMES)).argmax())
    background_rgb = np.median(border[votes == background_index], axis=0)
    background_confidence = float((votes == background_index).mean())

    offset = pixels - background_rgb
    rough = np.sqrt((offset ** 2).sum(axis=-1)) > ROUGH_DISTANCE
    if rough.sum() < MIN_OBJECT_PIXELS:
        return _nothing(_NAMES[background_index], background_rgb, background_confidence, rough)

    interior = _erode(rough)
    sample = pixels[interior] if interior.sum() >= MIN_OBJECT_PIXELS else pixels[rough]
    colour_rgb = np.median(sample, axis=0)
    colour_votes = nearest_colour(sample)
    colour_index = int(nearest_colour(colour_rgb))
    colour_confidence = float((colour_votes == colour_index).mean())

    direction = colour_rgb - background_rgb
    mask = (offset @ direction) >= 0.5 * float(direction @ direction)
    if mask.sum() < MIN_OBJECT_PIXELS:
        return _nothing(_NAMES[background_index], background_rgb, background_confidence, mask)

    scores, fits = _match_shapes(mask)
    best = scores[0][0]
    centre, extent = fits[best]
    extent_canvas = extent * scale
    size = "large" if extent_canvas >= SIZE_THRESHOLD else "small"
    half_gap = (EXTENT_RANGES["large"][0] - EXTENT_RANGES["small"][1]) / 2
    return Analysis(
        background=_NAMES[background_index], colour=_NAMES[colour_index], shape=best, size=size, mask=mask,
        centre=(centre[0] * scale, centre[1] * scale), extent=extent_canvas,
        background_rgb=_rgb_tuple(background_rgb), colour_rgb=_rgb_tuple(colour_rgb),
        background_confidence=background_confidence, colour_confidence=colour_confidence,
        shape_confidence=scores[0][1],
        size_confidence=min(1.0, abs(extent_canvas - SIZE_THRESHOLD) / half_gap),
        shape_scores=scores,
    )


def _nothing(background: str, background_rgb: np.ndarray, confidence: float, mask: np.ndarray) -> Analysis:
    return Analysis(
        background=background, colour=None, shape=None, size=None, mask=np.zeros_like(mask, dtype=bool),
        centre=None, extent=None, background_rgb=_rgb_tuple(background_rgb), colour_rgb=None,
        background_confidence=confidence, colour_confidence=0.0, shape_confidence=0.0, size_confidence=0.0,
        shape_scores=(),
    )


def _rgb_tuple(rgb: np.ndarray) -> tuple[float, float, float]:
    return (float(rgb[0]), float(rgb[1]), float(rgb[2]))


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels of `mask` whose four neighbours are in it too."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    inner[0] = inner[-1] = inner[:, 0] = inner[:, -1] = False
    return inner


@lru_cache(maxsize=None)
def _unit_moments(shape: str) -> tuple[float, float, float]:
    """Area and centroid (x, y) of `shape` in unit coordinates, measured on a fine grid."""
    steps = 1024
    grid = (np.arange(steps) + 0.5) / steps * 2.0 - 1.0
    inside = shape_contains(shape, grid[None, :], grid[:, None])
    area = inside.mean() * 4.0
    rows, columns = np.nonzero(inside)
    return float(area), float(grid[columns].mean()), float(grid[rows].mean())


@lru_cache(maxsize=64)
def _blur_matrix(length: int, sigma: float) -> np.ndarray:
    """[length, length] matrix that applies a 1-D Gaussian of `sigma` pixels (zero beyond the edges)."""
    offsets = np.arange(length)[:, None] - np.arange(length)[None, :]
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum(axis=1, keepdims=True).max()).astype(np.float32)


def _templates(shape: str, centre: tuple[float, float], extent: float, size: tuple[int, int]) -> list[np.ndarray]:
    """The shape's drawn region at each of TEMPLATE_BLURS: as drawn, then as a blurry generator would draw it."""
    drawn = coverage(shape, centre, extent, size, supersample=2)
    masks = []
    for sigma in TEMPLATE_BLURS:
        blurred = drawn if sigma == 0 else _blur_matrix(size[0], sigma) @ drawn @ _blur_matrix(size[1], sigma).T
        masks.append(blurred >= 0.5)
    return masks


def _best_iou(mask: np.ndarray, shape: str, centre: tuple[float, float], extent: float) -> float:
    best = 0.0
    for template in _templates(shape, centre, extent, mask.shape):
        union = np.count_nonzero(mask | template)
        if union:
            best = max(best, np.count_nonzero(mask & template) / union)
    return best


def _match_shapes(mask: np.ndarray) -> tuple[tuple[tuple[str, float], ...], dict[str, tuple[tuple[float, float], float]]]:
    """Every shape's IoU with `mask` at its best-found fit, best first, and each fit's (centre, extent)."""
    rows, columns = np.nonzero(mask)
    area = float(len(rows))
    centroid = (columns.mean() + 0.5, rows.mean() + 0.5)  # pixel centres, in continuous coordinates
    fits: dict[str, tuple[tuple[float, float], float]] = {}
    scores: dict[str, float] = {}
    for shape in SHAPES:
        unit_area, unit_x, unit_y = _unit_moments(shape)
        extent = math.sqrt(area / unit_area)
        centre = (centroid[0] - unit_x * extent, centroid[1] - unit_y * extent)
        fits[shape] = (centre, extent)
        scores[shape] = _best_iou(mask, shape, centre, extent)
    for shape in sorted(scores, key=scores.get, reverse=True)[:REFINED_CANDIDATES]:
        (x, y), extent = fits[shape]
        for factor in EXTENT_STEPS:
            for dx in SHIFT_STEPS:
                for dy in SHIFT_STEPS:
                    trial = ((x + dx, y + dy), extent * factor)
                    iou = _best_iou(mask, shape, *trial)
                    if iou > scores[shape]:
                        scores[shape], fits[shape] = iou, trial
    ranked = tuple(sorted(((shape, float(iou)) for shape, iou in scores.items()), key=lambda item: -item[1]))
    return ranked, fits

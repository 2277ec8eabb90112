"""Read back a shape scene from pixels: background colour, object colour, shape, size and the object's mask.

It turns a generated image into numbers an edit can be scored with ("is the star still red?"), and it is
built to survive what a small generator does to pixels: blur and noise. The steps:

1. Background: every border pixel votes for its nearest palette colour (scenes keep the border clear of
   the object); the winner names the background, and those voters' median is its measured RGB.
2. Object colour: blur and anti-aliasing only mix the object's colour with the background's, so the pixels
   clearly off the background lie on the segment between the two. The palette colour whose segment from
   the background they fit best (least mean squared distance) names the object; a nearest-colour vote
   would call a blurred orange star on cyan "grey", the colour halfway along. A light pull towards the
   median of the least mixed pixels settles collinear candidates (black → grey → white).
3. Coverage: each pixel's position α on the segment from the background RGB to the object's palette RGB
   (the colour the dataset drew with, which blur cannot desaturate). The mask is α ≥ 0.5, which is how the
   dataset defines the drawn region of an anti-aliased edge.
4. Shape: α's total and centroid are unchanged by blur, so they give each candidate's extent and centre
   (with the candidate's known area and centroid in unit coordinates). Every candidate is drawn there
   with the dataset's own code, as drawn and blurred by each of TEMPLATE_BLURS, and compared with α by
   soft IoU (Σ min / Σ max); the highest wins, and its IoU is the shape confidence.
5. Size: the fitted extent, which unlike raw area is comparable across shapes (a large star covers less
   than a small square), against a threshold between the dataset's two extent ranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from nodes.embedded.dataset import CANVAS, EXTENT_RANGES, SHAPES, coverage, shape_contains
from nodes.embedded.segment import PALETTE_NAMES, as_rgb_array, segment

# How far around those pixels the matching looks (pixels): room for blurred edges, not for far-off noise.
MATCH_REACH = 4
# Between the largest small extent and the smallest large one, in canvas pixels.
SIZE_THRESHOLD = (EXTENT_RANGES["small"][1] + EXTENT_RANGES["large"][0]) / 2
# Each template is also compared blurred by these Gaussians (σ in image pixels): a blurry image rounds a
# small diamond's corners and half fills a small ring's hole, and so must the template it is matched with.
TEMPLATE_BLURS = (0.0, 0.75, 1.5, 2.25)


@dataclass(frozen=True)
class Analysis:
    """What an image shows. With no object found, `colour`, `shape`, `size`, `centre`, `extent` and
    `colour_rgb` are None, the mask is empty and the object's confidences are 0.

    Confidences are in [0, 1]: `background_confidence` is the fraction of border pixels whose nearest
    palette colour agrees; `colour_confidence` is 1 - (the chosen colour's mixing cost / the runner-up's),
    so 1 for a clean image and near 0 for a toss-up; `shape_confidence`
    is the best template's soft IoU with the object's coverage; `size_confidence` grows with the fitted
    extent's distance from the size threshold (1 at either extent range's edge or beyond). `centre` and
    `extent` are the fitted template's, in canvas (64-pixel) units like a Scene's.
    """

    background: str
    colour: str | None
    shape: str | None
    size: str | None
    mask: np.ndarray = field(repr=False, compare=False)  # [H, W] bool: the object's drawn region
    centre: tuple[float, float] | None
    extent: float | None
    background_rgb: tuple[float, float, float]
    colour_rgb: tuple[float, float, float] | None  # measured: the median of the least background-mixed pixels
    background_confidence: float
    colour_confidence: float
    shape_confidence: float
    size_confidence: float
    shape_scores: tuple[tuple[str, float], ...]  # (shape, soft IoU) for every candidate, best first

    @property
    def has_object(self) -> bool:
        return self.shape is not None


def analyze(image: Any) -> Analysis:
    """Read back background colour, object colour, shape, size and mask from one scene image."""
    pixels = as_rgb_array(image)
    scale = CANVAS / min(pixels.shape[:2])  # image pixels → canvas units
    found = segment(pixels)
    if not found.has_object:
        return _nothing(
            PALETTE_NAMES[found.background_index], found.background_rgb, found.background_confidence, pixels.shape[:2]
        )

    scores, fits = _match_shapes(found.alpha, dilate(found.rough, MATCH_REACH))
    best = scores[0][0]
    centre, extent = fits[best]
    extent_canvas = extent * scale
    half_gap = (EXTENT_RANGES["large"][0] - EXTENT_RANGES["small"][1]) / 2
    return Analysis(
        background=PALETTE_NAMES[found.background_index],
        colour=PALETTE_NAMES[found.colour_index],
        shape=best,
        size="large" if extent_canvas >= SIZE_THRESHOLD else "small",
        mask=found.mask,
        centre=(centre[0] * scale, centre[1] * scale),
        extent=extent_canvas,
        background_rgb=_rgb_tuple(found.background_rgb),
        colour_rgb=_rgb_tuple(found.colour_rgb),
        background_confidence=found.background_confidence,
        colour_confidence=found.colour_confidence,
        shape_confidence=scores[0][1],
        size_confidence=min(1.0, abs(extent_canvas - SIZE_THRESHOLD) / half_gap),
        shape_scores=scores,
    )


def _nothing(background: str, background_rgb: np.ndarray, confidence: float, size: tuple[int, int]) -> Analysis:
    return Analysis(
        background=background,
        colour=None,
        shape=None,
        size=None,
        mask=np.zeros(size, dtype=bool),
        centre=None,
        extent=None,
        background_rgb=_rgb_tuple(background_rgb),
        colour_rgb=None,
        background_confidence=confidence,
        colour_confidence=0.0,
        shape_confidence=0.0,
        size_confidence=0.0,
        shape_scores=(),
    )


def _rgb_tuple(rgb: np.ndarray) -> tuple[float, float, float]:
    return (float(rgb[0]), float(rgb[1]), float(rgb[2]))


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """`mask` grown by `steps` pixels (4-neighbour steps)."""
    for _ in range(steps):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        mask = grown
    return mask


@lru_cache(maxsize=None)
def _unit_moments(shape: str) -> tuple[float, float, float]:
    """Area and centroid (x, y) of `shape` in unit coordinates, measured on a fine grid."""
    steps = 1024
    grid = (np.arange(steps) + 0.5) / steps * 2.0 - 1.0
    inside = shape_contains(shape, grid[None, :], grid[:, None])
    rows, columns = np.nonzero(inside)
    return float(inside.mean() * 4.0), float(grid[columns].mean()), float(grid[rows].mean())


@lru_cache(maxsize=256)
def _blur_matrix(length: int, sigma: float) -> np.ndarray:
    """[length, length] matrix applying a normalised 1-D Gaussian of `sigma` pixels (zero beyond the edges)."""
    radius = math.ceil(3 * sigma)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    offsets = np.arange(length)[None, :] - np.arange(length)[:, None]
    matrix = np.where(np.abs(offsets) <= radius, taps[np.clip(offsets + radius, 0, 2 * radius)], 0.0)
    return matrix.astype(np.float32)


def _match_shapes(
    alpha: np.ndarray, region: np.ndarray
) -> tuple[tuple[tuple[str, float], ...], dict[str, tuple[tuple[float, float], float]]]:
    """Every shape's best soft IoU with the coverage `alpha` inside `region`, best first, and each shape's
    fitted (centre, extent) in image pixels."""
    rows, columns = np.nonzero(region)
    top, left = rows.min(), columns.min()
    window = (slice(top, rows.max() + 1), slice(left, columns.max() + 1))
    # Unclipped inside the region: noise there averages out of the total and the centroid.
    observed = np.where(region[window], alpha[window], 0.0).astype(np.float32)
    if observed.sum() <= 0:  # pixels pulling away from the object's colour outweigh it (a generated oddity)
        observed = np.clip(observed, 0.0, 1.0)
    height, width = observed.shape
    mass = float(observed.sum())
    ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5  # pixel centres, in continuous coordinates
    centroid = (float(observed.sum(axis=0) @ xs) / mass, float(observed.sum(axis=1) @ ys) / mass)
    target = np.clip(observed, 0.0, 1.0)

    scores: dict[str, float] = {}
    fits: dict[str, tuple[tuple[float, float], float]] = {}
    for shape in SHAPES:
        unit_area, unit_x, unit_y = _unit_moments(shape)
        extent = math.sqrt(mass / unit_area)
        centre = (centroid[0] - unit_x * extent, centroid[1] - unit_y * extent)
        drawn = coverage(shape, centre, extent, (height, width), supersample=2)  # 2× is plenty to compare
        best = 0.0
        for sigma in TEMPLATE_BLURS:
            template = drawn if sigma == 0 else (_blur_matrix(height, sigma) @ drawn @ _blur_matrix(width, sigma).T)
            union = float(np.maximum(template, target).sum())
            best = max(best, float(np.minimum(template, target).sum()) / union if union else 0.0)
        scores[shape] = best
        fits[shape] = ((centre[0] + left, centre[1] + top), extent)
    ranked = tuple(sorted(scores.items(), key=lambda item: -item[1]))
    return ranked, fits

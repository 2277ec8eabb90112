"""Find the object of a shape scene from its pixels: the background colour, the object's colour and the mask
of the pixels it covers (steps 1–3 of nodes.embedded.analyzer, which goes on to name the shape and size).

The ObjectMask node uses this alone; it needs nothing of the shape matching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from nodes.embedded.dataset import PALETTE

# Fewer object pixels than this is noise or nothing, not a shape (the smallest drawn diamond has ~200).
MIN_OBJECT_PIXELS = 12
# Distance from the background (RGB in [0, 1]) beyond which a pixel is surely object, before the object's
# colour is known: under half the closest palette pair's distance (0.44), far above noise of σ ≈ 0.03.
ROUGH_DISTANCE = 0.2
# Weight of the pull towards the measured colour when naming the object's colour (nodes.embedded.analyzer, step 2).
COLOUR_PULL = 0.02

PALETTE_NAMES = tuple(PALETTE)
PALETTE_RGB = np.array([PALETTE[name] for name in PALETTE_NAMES], dtype=np.float32) / 255.0


@dataclass(frozen=True)
class Segmentation:
    """A scene split into background and object. With no object found, `colour_index`, `colour_rgb`, `alpha`
    and `rough` are None, the mask is empty and `colour_confidence` is 0."""

    background_index: int  # into PALETTE_NAMES
    background_rgb: np.ndarray  # measured: the median of the border pixels that voted for it
    background_confidence: float  # the fraction of border pixels whose nearest palette colour agrees
    mask: np.ndarray = field(repr=False)  # [H, W] bool: the object's drawn region (α ≥ 0.5)
    colour_index: int | None = None
    colour_rgb: np.ndarray | None = None  # measured: the median of the least background-mixed pixels
    colour_confidence: float = 0.0  # 1 − (the chosen colour's mixing cost / the runner-up's)
    alpha: np.ndarray | None = field(default=None, repr=False)  # [H, W]: position from background to object colour
    rough: np.ndarray | None = field(default=None, repr=False)  # [H, W] bool: pixels surely off the background

    @property
    def has_object(self) -> bool:
        return self.colour_index is not None


def segment(image: Any) -> Segmentation:
    """Background, object colour and object mask of one scene image (see nodes.embedded.analyzer, steps 1–3)."""
    pixels = as_rgb_array(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    votes = nearest_colour(border)
    background_index = int(np.bincount(votes, minlength=len(PALETTE_NAMES)).argmax())
    background_rgb = np.median(border[votes == background_index], axis=0)
    background_confidence = float((votes == background_index).mean())
    nothing = Segmentation(
        background_index, background_rgb, background_confidence, np.zeros(pixels.shape[:2], dtype=bool)
    )

    offset = pixels - background_rgb
    distance = np.sqrt((offset**2).sum(axis=-1))
    rough = distance > ROUGH_DISTANCE
    if np.count_nonzero(rough) < MIN_OBJECT_PIXELS:
        return nothing

    least_mixed = rough & (distance >= np.median(distance[rough]))
    colour_rgb = np.median(pixels[least_mixed], axis=0)
    costs = _mixing_costs(offset[rough], background_rgb, colour_rgb)
    costs[background_index] = np.inf
    colour_index, runner_up = (int(i) for i in np.argsort(costs)[:2])
    colour_confidence = 1.0 - float(costs[colour_index] / costs[runner_up]) if costs[runner_up] > 0 else 0.0

    direction = PALETTE_RGB[colour_index] - background_rgb
    alpha = (offset @ direction) / float(direction @ direction)
    mask = alpha >= 0.5
    if np.count_nonzero(mask) < MIN_OBJECT_PIXELS:
        return nothing
    return Segmentation(
        background_index,
        background_rgb,
        background_confidence,
        mask,
        colour_index,
        colour_rgb,
        colour_confidence,
        alpha,
        rough,
    )


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
    distances = ((rgb[..., None, :] - PALETTE_RGB) ** 2).sum(axis=-1)
    return distances.argmin(axis=-1)


def _mixing_costs(offsets: np.ndarray, background_rgb: np.ndarray, measured_rgb: np.ndarray) -> np.ndarray:
    """For each palette colour: how badly the pixels (`offsets` from the background, [N, 3]) fit mixtures
    of it with the background (mean squared distance from the segment), plus the pull towards the
    measured colour. [len(PALETTE)]."""
    segments = PALETTE_RGB - background_rgb
    lengths = np.maximum((segments * segments).sum(axis=1), 1e-12)
    positions = np.clip(offsets @ segments.T / lengths, 0.0, 1.0)  # [N, colours]
    squared = (offsets * offsets).sum(axis=1)[:, None]
    # |o - t·s|² = |o|² - 2t(o·s) + t²|s|², without building the [N, colours, 3] residuals
    residuals = squared - 2 * positions * (offsets @ segments.T) + positions**2 * lengths
    return residuals.mean(axis=0) + COLOUR_PULL * ((PALETTE_RGB - measured_rgb) ** 2).sum(axis=1)

"""Procedural, captioned shape scenes: the training data of the embedded model.

A scene is one flat-coloured shape on a flat background of another colour, e.g. "a large red star on a
blue background". Everything is drawn from an explicit seed (a numpy Generator), so a scene and its
pixels are reproducible.

Geometry lives on a 64-pixel canvas (`CANVAS`), with continuous coordinates in which pixel (i, j) spans
[j, j+1] × [i, i+1] (x right, y down). A shape is defined in unit coordinates, inside [-1, 1]² and
touching that box on at least one axis; `extent` scales it to pixels and `centre` places it. Shapes are
never rotated, so the analyzer can match them exactly. Small shapes are 20–26 pixels across: at ×8 down, a
smaller one spans under three latent cells, too few for an 8×8 latent to keep a star apart from a cross.

Pixels are anti-aliased by supersampling: each pixel's coverage is the fraction of SUPERSAMPLE² sample
points inside the shape, and its colour blends background and object by that coverage. The drawn region
(`object_mask`) is the pixels at least half covered.

Sampled centres and extents are whole numbers, so every scene of a (shape, extent) pair reuses one cached
coverage stamp; that is what makes `batch` fast enough to feed training on the fly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    from nodes.models.components import VAE

CANVAS = 64
SUPERSAMPLE = 4
MARGIN = 1  # pixels kept clear of the object on every side, so the border shows only background

# Far apart in RGB (the closest pair, orange and yellow, is 113 apart on the 0–255 scale), so naming a colour
# by the nearest palette entry stays right under blur, noise and a generator's colour drift.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 30),
    "orange": (250, 135, 0),
    "yellow": (240, 240, 40),
    "green": (20, 170, 40),
    "cyan": (20, 220, 230),
    "blue": (20, 40, 230),
    "purple": (160, 30, 200),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "grey": (128, 128, 128),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "ring", "star", "heart")
SIZES: tuple[str, ...] = ("small", "large")
EXTENT_RANGES: dict[str, tuple[int, int]] = {"small": (10, 13), "large": (17, 25)}  # inclusive, in canvas pixels


Combination = tuple[str, str, str]  # (colour, shape, background)

# Held-out split: a combination is held out when a salted SHA-256 of its words falls in the lowest
# HELD_OUT_FRACTION of the hash range. The salt and fraction fix the set for good; change them only
# together with a retrained model.
HELD_OUT_SALT = "flowcanvas-shapes/held-out/v1"
HELD_OUT_FRACTION = 0.1

RING_INNER = 0.5  # inner radius of the ring, as a fraction of its outer radius
CROSS_HALF_WIDTH = 1 / 3  # half-width of each arm of the cross
STAR_INNER = 0.5  # inner vertices' radius as a fraction of the tips'; fat enough to read when small


@dataclass(frozen=True)
class Scene:
    """One shape on a background. `centre` and `extent` are in canvas pixels (see the module docstring)."""

    shape: str
    colour: str
    background: str
    size: str
    centre: tuple[float, float]
    extent: float

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; known: {', '.join(SHAPES)}")
        for name in (self.colour, self.background):
            if name not in PALETTE:
                raise ValueError(f"unknown colour {name!r}; known: {', '.join(COLOURS)}")
        if self.colour == self.background:
            raise ValueError(f"the object and the background are both {self.colour}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; known: {', '.join(SIZES)}")
        if self.extent <= 0:
            raise ValueError(f"extent must be positive, not {self.extent}")

    @property
    def combination(self) -> Combination:
        return (self.colour, self.shape, self.background)

    @property
    def caption(self) -> str:
        """The canonical caption, naming every attribute ("a large red star on an orange background"); the
        varied ones people write come from `nodes.embedded.captions.describe`."""
        article = "an" if self.background[0] in "aeiou" else "a"
        return f"a {self.size} {self.colour} {self.shape} on {article} {self.background} background"


def shape_contains(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether unit-coordinate points (u right, v down; broadcast together) lie inside `shape`."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if shape == "triangle":  # apex at the top, base along the bottom edge
        return (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 1.0) & (av <= CROSS_HALF_WIDTH)) | ((av <= 1.0) & (au <= CROSS_HALF_WIDTH))
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= RING_INNER * RING_INNER)
    if shape == "star":
        return _star_contains(u, v)
    if shape == "heart":
        return _heart_contains(u, v)
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


# A five-pointed star, tip up, around its centre: with tip radius R it spans 2R·sin 72° across and runs
# from -R (the top tip) to R·cos 36° (the lower tips). R is chosen so the width fills [-1, 1], and the
# star is moved down so its height is centred.
_STAR_RADIUS = 1.0 / math.sin(math.radians(72))
_STAR_MID = _STAR_RADIUS * (math.cos(math.radians(36)) - 1.0) / 2.0  # its height's middle, above its centre


def _star_contains(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = u / _STAR_RADIUS, (v + _STAR_MID) / _STAR_RADIUS
    radius = np.hypot(x, y)
    # Fold the angle from the top tip into one half-spike: 0 at a tip, 36° at an inner vertex.
    angle = np.mod(np.arctan2(x, -y), 2 * math.pi / 5)
    angle = np.minimum(angle, 2 * math.pi / 5 - angle)
    px, py = radius * np.cos(angle), radius * np.sin(angle)
    # Inside when on the centre's side of the edge from the tip (1, 0) to the inner vertex.
    ix, iy = STAR_INNER * math.cos(math.pi / 5), STAR_INNER * math.sin(math.pi / 5)
    return (ix - 1.0) * py - iy * (px - 1.0) >= 0.0


# A heart: a square stood on its corner with a disc on each upper edge, built with its tip at y = 1. The
# square's half-diagonal d makes the width exactly 2 (d/2 + d/√2 = 1); the whole is then moved up so its
# height is centred.
_HEART_D = 2.0 * (math.sqrt(2.0) - 1.0)
_HEART_R = _HEART_D / math.sqrt(2.0)  # the discs' radius: half the square's side
_HEART_LOBE_Y = 1.0 - 1.5 * _HEART_D  # the discs' centres, midway along the upper edges
_HEART_MID = (1.0 + _HEART_LOBE_Y - _HEART_R) / 2.0  # halfway between the tip and the top


def _heart_contains(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    y = v + _HEART_MID
    square = np.abs(u) + np.abs(y - (1.0 - _HEART_D)) <= _HEART_D
    left = (u + _HEART_D / 2) ** 2 + (y - _HEART_LOBE_Y) ** 2 <= _HEART_R**2
    right = (u - _HEART_D / 2) ** 2 + (y - _HEART_LOBE_Y) ** 2 <= _HEART_R**2
    return square | left | right


def _patch(shape: str, extent: float, offset: tuple[float, float], supersample: int) -> tuple[int, np.ndarray]:
    """Coverage of `shape` centred at `offset` ∈ [0, 1)² of pixel (0, 0): (first pixel index, [n, n] patch).

    The patch spans pixels first … first + n - 1 on both axes, around pixel 0, and holds the whole shape.
    """
    reach = math.ceil(extent) + 1
    pixels = np.arange(-reach, reach + 1, dtype=np.float64)
    samples = (pixels[:, None] + (np.arange(supersample) + 0.5) / supersample).ravel()
    u = (samples[None, :] - offset[0]) / extent
    v = (samples[:, None] - offset[1]) / extent
    inside = shape_contains(shape, u, v)
    # Summing the strided sub-grids is several times faster than a mean over a reshaped array.
    hits = np.zeros((len(pixels), len(pixels)), dtype=np.float32)
    for row in range(supersample):
        for column in range(supersample):
            hits += inside[row::supersample, column::supersample]
    return -reach, hits / np.float32(supersample * supersample)


# Sampled scenes have whole-number geometry, so at 64² they need only len(SHAPES) × 15 extents = 120 stamps.
_cached_patch = lru_cache(maxsize=1024)(_patch)


def _draw(
    frame: np.ndarray, shape: str, centre: tuple[float, float], extent: float, supersample: int, cache: bool
) -> None:
    """Write the shape's coverage into `frame` (2-D, zero where nothing is drawn), clipped to the frame."""
    column, row = math.floor(centre[0]), math.floor(centre[1])
    make_patch = _cached_patch if cache else _patch
    first, patch = make_patch(shape, float(extent), (centre[0] - column, centre[1] - row), supersample)
    top, left = row + first, column + first
    height, width = frame.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + patch.shape[0], height), min(left + patch.shape[1], width)
    if y0 < y1 and x0 < x1:
        frame[y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - left : x1 - left]


def coverage(
    shape: str,
    centre: tuple[float, float],
    extent: float,
    size: tuple[int, int],
    supersample: int = SUPERSAMPLE,
    *,
    cache: bool = False,
) -> np.ndarray:
    """Per-pixel coverage [H, W] in [0, 1] of `shape` placed at `centre` with `extent`, in the frame's pixels.

    `cache` keeps the stamp for reuse: right for the few whole-number geometries of sampled scenes, wrong
    for arbitrary fitted ones (they would only evict the useful stamps).
    """
    frame = np.zeros(size, dtype=np.float32)
    _draw(frame, shape, centre, extent, supersample, cache)
    return frame


def _scene_coverage(frame: np.ndarray, scene: Scene) -> None:
    """Draw `scene`'s object coverage into a square `frame`, scaling canvas geometry to the frame's size."""
    scale = frame.shape[0] / CANVAS
    centre = (scene.centre[0] * scale, scene.centre[1] * scale)
    _draw(frame, scene.shape, centre, scene.extent * scale, SUPERSAMPLE, cache=True)


def _compose(alpha: np.ndarray, objects: np.ndarray, backgrounds: np.ndarray) -> np.ndarray:
    """Blend per-image colours [N, 3] (0–255) by coverage [N, H, W] → uint8 [N, 3, H, W]."""
    back = backgrounds[:, :, None, None]
    blended = back + (objects - backgrounds)[:, :, None, None] * alpha[:, None]
    return np.rint(blended).astype(np.uint8)


def render(scene: Scene, size: int = CANVAS) -> Image.Image:
    """The scene as an anti-aliased RGB image of `size`² pixels (geometry scaled from the 64-pixel canvas)."""
    alpha = np.zeros((1, size, size), dtype=np.float32)
    _scene_coverage(alpha[0], scene)
    pixels = _compose(
        alpha,
        np.array([PALETTE[scene.colour]], dtype=np.float32),
        np.array([PALETTE[scene.background]], dtype=np.float32),
    )[0]
    return Image.fromarray(pixels.transpose(1, 2, 0))


def object_mask(scene: Scene, size: int = CANVAS) -> np.ndarray:
    """The drawn region [size, size] (bool): the pixels the object covers at least half of."""
    frame = np.zeros((size, size), dtype=np.float32)
    _scene_coverage(frame, scene)
    return frame >= 0.5


def _held_out_hash(combination: Combination) -> float:
    digest = hashlib.sha256(f"{HELD_OUT_SALT}:{'/'.join(combination)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


ALL_COMBINATIONS: tuple[Combination, ...] = tuple(
    (colour, shape, background)
    for colour in COLOURS
    for shape in SHAPES
    for background in COLOURS
    if background != colour
)
HELD_OUT_COMBINATIONS: tuple[Combination, ...] = tuple(
    combination for combination in ALL_COMBINATIONS if _held_out_hash(combination) < HELD_OUT_FRACTION
)
_HELD_OUT = frozenset(HELD_OUT_COMBINATIONS)
TRAINING_COMBINATIONS: tuple[Combination, ...] = tuple(
    combination for combination in ALL_COMBINATIONS if combination not in _HELD_OUT
)


def is_held_out(colour: str, shape: str, background: str) -> bool:
    """Whether the (colour, shape, background) combination is kept out of training, for generalisation tests."""
    return (colour, shape, background) in _HELD_OUT


def random_scene(rng: np.random.Generator, *, allowed: Sequence[Combination] = ALL_COMBINATIONS) -> Scene:
    """A scene with a combination drawn uniformly from `allowed`, a random size, extent and place.

    The object lies wholly inside the canvas, MARGIN pixels clear of every edge.
    """
    colour, shape, background = allowed[int(rng.integers(len(allowed)))]
    size = SIZES[int(rng.integers(len(SIZES)))]
    low, high = EXTENT_RANGES[size]
    extent = int(rng.integers(low, high + 1))
    x, y = (int(c) for c in rng.integers(extent + MARGIN, CANVAS - extent - MARGIN + 1, size=2))
    return Scene(shape=shape, colour=colour, background=background, size=size, centre=(x, y), extent=extent)


def sample_training_scene(rng: np.random.Generator) -> Scene:
    """A random scene whose combination is never held out."""
    return random_scene(rng, allowed=TRAINING_COMBINATIONS)


def sample_held_out_scene(rng: np.random.Generator) -> Scene:
    """A random scene whose combination is always held out."""
    return random_scene(rng, allowed=HELD_OUT_COMBINATIONS)


def batch(rng: np.random.Generator, n: int, held_out: bool = False) -> tuple[torch.Tensor, list[str], list[Scene]]:
    """`n` random scenes (training or held-out combinations): images float32 [n, 3, 64, 64] in [0, 1],
    canonical captions and scenes. The pixels equal those of `render`, so a batch and its rendered PNGs agree.
    """
    sample = sample_held_out_scene if held_out else sample_training_scene
    scenes = [sample(rng) for _ in range(n)]
    alpha = np.zeros((n, CANVAS, CANVAS), dtype=np.float32)
    for frame, scene in zip(alpha, scenes):
        _scene_coverage(frame, scene)
    objects = np.array([PALETTE[scene.colour] for scene in scenes], dtype=np.float32).reshape(n, 3)
    backgrounds = np.array([PALETTE[scene.background] for scene in scenes], dtype=np.float32).reshape(n, 3)
    pixels = _compose(alpha, objects, backgrounds)
    images = torch.from_numpy(pixels.astype(np.float32) / np.float32(255.0))
    return images, [scene.caption for scene in scenes], scenes


def encoded_training_set(vae: VAE, count: int, seed: int = 0, chunk: int = 256) -> Iterator[torch.Tensor]:
    """Model latents of `count` training scenes (seen combinations, as training drew them), `chunk` at a time:
    the embedded model's own data, for statistics such as pruned noise's data-sparse directions."""
    rng = np.random.default_rng(seed)
    for start in range(0, count, chunk):
        images, _, _ = batch(rng, min(chunk, count - start))
        yield vae.encode(images).float().cpu()

"""Directionally pruned source noise: Gaussian starting noise with the draws that point into data-sparse
directions thrown away (Lee, Kim, Lee, "Is There a Better Source Distribution than Gaussian? Exploring Source
Distributions for Image Flow Matching"; docs/algorithms.md, "Pruned source noise").

Offline, from a model's own data (`source_axes`): the latents are L2-normalised, their full PCA basis and its
negation give 2d candidate directions, and a direction whose best cosine with any data point is at most τ is
data-sparse. The kept directions are stored beside the model (`AXES_FILE`). At sampling time a Gaussian draw
is kept only if its cosine with every data-sparse direction is at most τ_r; kept draws are unchanged Gaussian
samples, so the source is N(0, I) with a few cones cut out. The model is not retrained.

The paper works on whole 32×32 and 64×64 images. A latent of SD3 or FLUX at 1024 px has 262,144 values, too
many directions for a full PCA, so the statistics are taken over `block`×`block` latent tiles (every channel),
and each tile of a noise is pruned on its own; a model whose whole latent is one tile (the embedded model at
64 px, 8×8) is pruned exactly as in the paper. The paper's thresholds were set on CIFAR-10 (d = 3072:
τ = 0.01, τ_r = 0.048); a random direction's cosines scale as 1/√d, so they carry over to d values per tile
as τ·√(3072/d), which is what a new axes file stores as its defaults.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from pydantic import Field
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nodes.fields import seed_field
from nodes.models.base import FlowModel
from nodes.models.components import VAE
from nodes.models.loader import AXES_FILE, ModelLoadError, resolve_source
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.sampling.sampler import NoiseUnavailable
from nodes.types import SocketType

PAPER_DIMENSION = 3072  # CIFAR-10's 3×32×32, where the paper set its thresholds
PAPER_SPARSE_THRESHOLD = 0.01  # τ: a direction no data point comes closer to than this is data-sparse
PAPER_REJECT_THRESHOLD = 0.048  # τ_r: a draw closer than this to a data-sparse direction is thrown away
DRAW_CHUNK = 1024  # candidates drawn at once; fixed, so a seed gives the same noise however many are needed
MIN_ACCEPTANCE = 1e-4  # about this share of draws kept or fewer, a threshold is refused (the paper keeps about 6e-4)
PATIENCE = 4  # draws allowed: this many times what MIN_ACCEPTANCE would need (a threshold just above it rarely fails)


def scaled_threshold(paper_value: float, dimension: int) -> float:
    """A CIFAR-10 cosine threshold carried to `dimension` values (cosines of random directions go as 1/√d)."""
    return paper_value * math.sqrt(PAPER_DIMENSION / dimension)


@dataclass(frozen=True)
class SourceAxes:
    """Data-sparse directions of a model's latent tiles, with the thresholds they were found and are used with."""

    axes: torch.Tensor  # [m, channels·block·block] float32, unit rows
    channels: int
    block: int
    sparse_threshold: float  # τ they were selected with
    reject_threshold: float  # τ_r a draw is tested against unless the node says otherwise
    samples: int  # data tiles they were computed from
    family: str
    data: str  # where the data came from, in words

    @property
    def dimension(self) -> int:
        return self.channels * self.block * self.block

    def save(self, path: Path) -> None:
        meta = {
            "channels": self.channels,
            "block": self.block,
            "sparse_threshold": self.sparse_threshold,
            "reject_threshold": self.reject_threshold,
            "samples": self.samples,
            "family": self.family,
            "data": self.data,
        }
        save_file({"axes": self.axes.contiguous()}, str(path), metadata={"flowcanvas": json.dumps(meta)})

    @classmethod
    def load(cls, path: Path) -> SourceAxes:
        """Read an axes file; ValueError says what is wrong with one that is not ours or not whole."""
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {})["flowcanvas"])
                axes = handle.get_tensor("axes").float()
            loaded = cls(
                axes=axes,
                channels=int(meta["channels"]),
                block=int(meta["block"]),
                sparse_threshold=float(meta["sparse_threshold"]),
                reject_threshold=float(meta["reject_threshold"]),
                samples=int(meta["samples"]),
                family=str(meta["family"]),
                data=str(meta["data"]),
            )
        except (OSError, KeyError, TypeError, ValueError, SafetensorError) as error:
            raise ValueError(f"not a source-axes file ({type(error).__name__}: {error})") from None
        if axes.ndim != 2 or axes.shape[1] != loaded.dimension:
            raise ValueError(f"axes of shape {tuple(axes.shape)} do not match tiles of {loaded.dimension} values")
        return loaded


def to_tiles(latents: torch.Tensor, block: int) -> torch.Tensor:
    """[B, C, H, W] → [B·(H/block)·(W/block), C·block·block]: every block×block tile of every image, row-major."""
    b, c, h, w = latents.shape
    tiles = latents.reshape(b, c, h // block, block, w // block, block).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(-1, c * block * block)


def from_tiles(tiles: torch.Tensor, shape: tuple[int, ...], block: int) -> torch.Tensor:
    """The inverse of `to_tiles` for latents of `shape`."""
    b, c, h, w = shape
    grid = tiles.reshape(b, h // block, w // block, c, block, block).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(b, c, h, w)


def sparse_axes(vectors: torch.Tensor, sparse_threshold: float, chunk: int = 8192) -> torch.Tensor:
    """The paper's data-sparse directions of `vectors` [N, d]: of the full PCA basis of the L2-normalised data
    and its negation (2d directions), those whose largest cosine with any data point is at most the threshold.
    Returns [m, d] float32 unit rows."""
    unit = vectors.double() / vectors.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    centred = unit - unit.mean(dim=0)
    _, basis = torch.linalg.eigh(centred.T @ centred)  # columns: orthonormal principal directions
    directions = torch.cat([basis.T, -basis.T])
    closest = torch.full((len(directions),), -math.inf, dtype=torch.float64)
    for start in range(0, len(unit), chunk):
        closest = torch.maximum(closest, (unit[start : start + chunk] @ directions.T).max(dim=0).values)
    return directions[closest <= sparse_threshold].float()


def source_axes(
    latent_batches: Iterable[torch.Tensor], block: int, family: str, data: str, max_tiles: int = 200_000
) -> SourceAxes:
    """SourceAxes from a model's data latents [B, C, H, W] (H and W multiples of `block`), at the paper's
    thresholds carried to the tile size; at most `max_tiles` tiles are used, the first ones given."""
    tiles, channels = [], 0
    count = 0
    for latents in latent_batches:
        channels = latents.shape[1]
        batch_tiles = to_tiles(latents.float().cpu(), block)[: max_tiles - count]
        tiles.append(batch_tiles)
        count += len(batch_tiles)
        if count >= max_tiles:
            break
    if not tiles:
        raise ValueError("no data latents to compute the axes from")
    data_tiles = torch.cat(tiles)
    dimension = data_tiles.shape[1]
    sparse = scaled_threshold(PAPER_SPARSE_THRESHOLD, dimension)
    return SourceAxes(
        axes=sparse_axes(data_tiles, sparse),
        channels=channels,
        block=block,
        sparse_threshold=sparse,
        reject_threshold=scaled_threshold(PAPER_REJECT_THRESHOLD, dimension),
        samples=len(data_tiles),
        family=family,
        data=data,
    )


class PruningTooStrict(NoiseUnavailable):
    """Too few Gaussian draws pass the threshold to fill the noise in reasonable time."""


def passes(draws: torch.Tensor, axes: torch.Tensor, reject_threshold: float) -> torch.Tensor:
    """Which rows of `draws` [n, d] have cosine at most the threshold with every row of `axes`."""
    if not len(axes):
        return torch.ones(len(draws), dtype=torch.bool)
    return (draws @ axes.T).max(dim=1).values <= reject_threshold * draws.norm(dim=1)


def acceptance(axes: torch.Tensor, reject_threshold: float, generator: torch.Generator, draws: int = 16_384) -> float:
    """The share of Gaussian draws the threshold keeps, estimated from `draws` of them."""
    sample = torch.randn((draws, axes.shape[1]), generator=generator, dtype=torch.float32)
    return float(passes(sample, axes, reject_threshold).float().mean())


def pruned_gaussian(
    count: int, axes: torch.Tensor, reject_threshold: float, generator: torch.Generator
) -> tuple[torch.Tensor, int]:
    """`count` Gaussian vectors [count, d] (float32) whose cosine with every row of `axes` is at most the
    threshold, taken in draw order from `generator`, and how many were drawn. Draws come DRAW_CHUNK at a time,
    so the result depends only on the generator's state, the axes and the threshold."""
    dimension = axes.shape[1]
    kept: list[torch.Tensor] = []
    have = drawn = 0
    limit = math.ceil(PATIENCE * max(count, 1) / MIN_ACCEPTANCE)
    while have < count:
        if drawn >= limit or (drawn >= PATIENCE / MIN_ACCEPTANCE and have == 0):
            raise PruningTooStrict(
                f"{have} of {drawn:,} Gaussian draws passed the threshold {reject_threshold:g} "
                f"(the paper keeps about 1 in 1,700; about 1 in {1 / MIN_ACCEPTANCE:,.0f} or fewer is refused)"
            )
        draws = torch.randn((DRAW_CHUNK, dimension), generator=generator, dtype=torch.float32)
        drawn += DRAW_CHUNK
        draws = draws[passes(draws, axes, reject_threshold)]
        kept.append(draws[: count - have])
        have += len(kept[-1])
    return torch.cat(kept) if kept else torch.empty((0, dimension)), drawn


@dataclass(frozen=True)
class PrunedNoiseSource:
    """A NOISE value: seeded Gaussian noise with every latent tile pruned against a model's data-sparse axes.

    `sample` gives what a sampler starts from (a particle sampler draws several, in turn, from one
    generator); `draw` is one seed's noise, as the plain Noise node's."""

    seed: int
    axes: SourceAxes
    reject_threshold: float

    def check_shape(self, shape: tuple[int, ...]) -> str | None:
        """Why latents of `shape` cannot take this noise, or None."""
        _, channels, height, width = shape
        if channels != self.axes.channels:
            return f"the axes are for {self.axes.channels}-channel latents, this latent has {channels}"
        if height % self.axes.block or width % self.axes.block:
            block = self.axes.block
            return (
                f"the latent is {height}×{width}, not a whole number of the axes' {block}×{block} tiles "
                f"(an image size that is a multiple of {block} latent pixels is)"
            )
        return None

    def sample(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Float32 CPU noise of `shape` [B, C, H, W]; NoiseUnavailable if the shape does not fit the axes or
        the threshold keeps too few draws."""
        problem = self.check_shape(shape)
        if problem is not None:
            raise NoiseUnavailable(problem)
        tiles_needed = shape[0] * (shape[2] // self.axes.block) * (shape[3] // self.axes.block)
        tiles, _ = pruned_gaussian(tiles_needed, self.axes.axes, self.reject_threshold, generator)
        return from_tiles(tiles, shape, self.axes.block)

    def draw(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        generator = torch.Generator("cpu").manual_seed(self.seed)
        return self.sample(shape, generator).to(device, dtype)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def image_latents(vae: VAE, folder: Path, size: int, batch: int = 8) -> Iterator[torch.Tensor]:
    """Latents of the images in `folder` (sorted by name), each scaled and centre-cropped to size × size."""
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    for start in range(0, len(files), batch):
        pixels = []
        for file in files[start : start + batch]:
            try:
                with Image.open(file) as opened:
                    square = ImageOps.fit(opened.convert("RGB"), (size, size), Image.Resampling.LANCZOS)
            except (OSError, Image.DecompressionBombError) as error:
                raise ValueError(f"{file.name} is not an image this can read ({error})") from None
            pixels.append(torch.from_numpy(np.asarray(square, dtype=np.float32) / 255.0).permute(2, 0, 1))
        yield vae.encode(torch.stack(pixels)).float().cpu()


def model_axes_path(model: FlowModel) -> Path | None:
    """Where a model keeps its axes: AXES_FILE in its folder (None for a single file or a hub id)."""
    try:
        source = resolve_source(model.source)
    except ModelLoadError:
        return None
    return Path(source.location) / AXES_FILE if source.kind == "folder" else None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@node(
    "PrunedNoise",
    category="sampling",
    inputs=[Input("model", SocketType.FLOW_MODEL, "Whose data-sparse directions to avoid")],
    outputs=[Output("noise", SocketType.NOISE)],
)
class PrunedNoise(Node):
    """Seeded Gaussian noise that skips draws pointing into directions the model's data never goes (SourceFM's
    pruned sampling). Wire it where a Noise node goes; the model is not retrained."""

    class Params(NodeParams):
        seed: int = seed_field(0, "The seed; the same seed gives the same image.")
        threshold: float | None = Field(
            None,
            gt=0.0,
            le=1.0,
            description="Largest cosine a draw may have with a data-sparse direction (lower prunes more); blank: "
            "the one stored with the axes, the paper's 0.048 carried to the model's tile size.",
        )
        axes: str = Field(
            "",
            max_length=4096,
            description="A source-axes file (python run.py source-axes); blank: the model's own, "
            f"{AXES_FILE} in its folder.",
            json_schema_extra={"reads": "file"},
        )

    def run(self, ctx: NodeContext, params: Params, model: FlowModel) -> dict[str, Any]:
        path = ctx.resolve_path(params.axes, field="axes") if params.axes else model_axes_path(model)
        if path is None or not path.is_file():
            raise NodeError(
                f"{model.source} has no source axes" if not params.axes else f"no file at {params.axes!r}",
                field="axes",
                hint=f"compute them with: python run.py source-axes --model {model.source}",
            )
        try:
            axes = SourceAxes.load(path)
        except ValueError as error:
            raise NodeError(f"{path.name}: {error}", field="axes") from None
        if axes.family != model.family or axes.channels != model.latent_channels:
            raise NodeError(
                f"{path.name} holds axes for a {axes.family} model with {axes.channels}-channel latents, but the "
                f"model is {model.family} with {model.latent_channels}",
                field="axes",
            )
        ctx.record_seed("seed", params.seed)
        # Recorded under the name the workflow gives it, never the server's path (records travel in PNGs).
        ctx.record_model_hash(params.axes or f"{model.source} ({AXES_FILE})", file_sha256(path))
        threshold = params.threshold if params.threshold is not None else axes.reject_threshold
        return {"noise": PrunedNoiseSource(params.seed, axes, threshold)}

"""The flow-model adapter interface: what solvers and editors ask of a model, whatever its family.

Convention (docs/algorithms.md, "Conventions"): x_σ = (1−σ)·x0 + σ·ε, v = ε − x0, σ from 1 (noise) to 0 (data). Latents
on wires are always unpacked [B, C, h, w] in model space (VAE output already shifted and scaled); FLUX
packing and position ids happen inside the FLUX adapter. Solvers and editors see only `FlowModel`, so
every editor works with every family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from nodes.models.components import VAE, Conditioning
from nodes.models.previews import LinearPreview, cached_linear_preview, channel_stretch, vae_fingerprint


@dataclass(frozen=True)
class VelocityQuery:
    """One guided-velocity request; several go through `FlowModel.velocities` in a single forward call.

    The fields mean what they mean in `FlowModel.velocity` (SD3: CFG with `negative` when `guidance` > 1;
    FLUX: `guidance` embedded, true CFG with `negative` when `true_cfg` > 1)."""

    x: torch.Tensor
    positive: Conditioning
    negative: Conditioning | None = None
    guidance: float = 1.0
    true_cfg: float = 1.0


def _same_conditioning(a: Conditioning | None, b: Conditioning | None) -> bool:
    if a is None or b is None:
        return a is b
    return a is b or (torch.equal(a.prompt_embeds, b.prompt_embeds) and torch.equal(a.pooled, b.pooled))


def _same_query(a: VelocityQuery, b: VelocityQuery) -> bool:
    return (
        a.guidance == b.guidance
        and a.true_cfg == b.true_cfg
        and a.x.shape == b.x.shape
        and (a.x is b.x or torch.equal(a.x, b.x))
        and _same_conditioning(a.positive, b.positive)
        and _same_conditioning(a.negative, b.negative)
    )


class FlowModel(ABC):
    """One model family behind one interface: velocity, latent geometry, default schedule, provenance."""

    family: str
    source: str  # where it was loaded from (folder, file, hub id, embedded:name)
    sha256: str  # content hash of the weights, recorded with every run

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype: ...

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    @property
    @abstractmethod
    def latent_channels(self) -> int: ...

    @property
    @abstractmethod
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell (8 for SD3 and FLUX)."""

    @abstractmethod
    def predict(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning, guidance: float | None = None
    ) -> torch.Tensor:
        """One forward call: v for each row of x with the matching row of cond (no CFG).

        `sigma` is a 0-dim float32 tensor; `guidance` is FLUX's embedded guidance (ignored by SD3)."""

    @abstractmethod
    def velocity(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        positive: Conditioning,
        negative: Conditioning | None = None,
        guidance: float = 1.0,
        true_cfg: float = 1.0,
    ) -> torch.Tensor:
        """The guided velocity as the family's diffusers pipeline computes it.

        SD3: classifier-free guidance with scale `guidance` (only when > 1; `negative` batched with
        `positive` in one call). FLUX: `guidance` goes into the guidance embedding (dev) or is ignored
        (schnell); true CFG with `negative` runs only when `true_cfg` > 1, as a second call."""

    def velocities(self, sigma: torch.Tensor, queries: list[VelocityQuery]) -> list[torch.Tensor]:
        """The guided velocity of every query at the same σ, in one transformer call (editors compare source
        and target flows this way). A query equal to an earlier one (same latent bits, prompts and guidance)
        is evaluated once and shares its result, so identical flows stay identical to the last bit."""
        unique: list[VelocityQuery] = []
        slot: list[int] = []
        for query in queries:
            match = next((k for k, seen in enumerate(unique) if _same_query(seen, query)), None)
            if match is None:
                unique.append(query)
                match = len(unique) - 1
            slot.append(match)
        results = self.batched_velocities(sigma, unique)
        return [results[k] for k in slot]

    @abstractmethod
    def batched_velocities(self, sigma: torch.Tensor, queries: list[VelocityQuery]) -> list[torch.Tensor]:
        """`velocities` without the de-duplication: every query's rows go into one forward call."""

    def noise_like(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Fresh Gaussian noise for an editor step, drawn in the layout the family's reference editors use
        (unpacked here; FLUX draws it packed), so a seed reproduces their draws."""
        return randn_tensor(tuple(x.shape), generator=generator, device=x.device, dtype=x.dtype)

    @abstractmethod
    def default_sigmas(self, steps: int, height: int, width: int) -> torch.Tensor:
        """The family pipeline's schedule for `steps` at this image size: T+1 float32 values ending in 0."""

    def latent_shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The unpacked latent shape for an image of height × width pixels (as the pipelines compute it)."""
        factor = self.vae_scale_factor
        return (batch, self.latent_channels, height // factor, width // factor)

    def preview_rgb(self, latent: torch.Tensor) -> torch.Tensor:
        """A cheap look at what model-space latents [B, C, h, w] decode to, for live previews: [B, 3, H, W]
        float32 in [0, 1] on the CPU, at whatever size is cheap (the preview is scaled for display).
        A model without an autoencoder can only show its first channels, stretched."""
        return channel_stretch(latent)

    def nbytes(self) -> int:
        return 0  # the model manager owns the weights; the executor's cache must not count them

    @property
    def defaults_key(self) -> str:
        """Which row of an editor's per-model defaults applies: the embedded model has its own."""
        return "embedded" if self.source.startswith("embedded:") else self.family

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "source": self.source,
            "sha256": self.sha256,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
        }


class PipelineFlowModel(FlowModel):
    """What every diffusers-backed family shares: the pipeline, its transformer and scheduler config."""

    def __init__(self, pipe: Any, *, source: str, sha256: str, cache_root: Path | None = None) -> None:
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.scheduler_config = dict(pipe.scheduler.config)
        self.source = source
        self.sha256 = sha256
        # Read once: diffusers walks every submodule on each `.device`/`.dtype` access (a cost per step).
        # The execution device is where inputs go, also when offload hooks keep the weights elsewhere.
        self._device = torch.device(pipe._execution_device)
        self._dtype = pipe.transformer.dtype
        self._linear_preview: LinearPreview | None = None  # fitted or read from the cache at the first preview
        self.cache_root = cache_root  # where the linear preview's fit is kept (None: nowhere)

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

    @cached_property
    def autoencoder(self) -> VAE:
        """The pipeline's VAE with its shift and scale, as the VAE wire value applies them."""
        return VAE(self.family, self.pipe.vae, self.source)

    def preview_rgb(self, latent: torch.Tensor) -> torch.Tensor:
        """The embedded model's decoder is small enough to run for every preview: the real image. Others go
        through a linear map fitted on their own VAE, fitted (or read from the cache) at the first preview
        rather than at load, so a run without previews never pays for it (docs/algorithms.md, "Live previews")."""
        if self.defaults_key == "embedded":
            return self.autoencoder.decode(latent)
        if self._linear_preview is None:
            key = vae_fingerprint(self.autoencoder, fallback=self.sha256)
            self._linear_preview = cached_linear_preview(self.autoencoder, self.vae_scale_factor, key, self.cache_root)
        return self._linear_preview.apply(latent)

"""The values on model-side wires: a loaded model's text encoders (TEXT_ENCODER) and autoencoder (VAE), and
the Conditioning and Latent values they make.

Text goes through the family pipeline's own `encode_prompt` (so embeddings equal diffusers' bit for bit)
with the model's own `max_sequence_length`. Latents are x0 = (E(img).mode() − shift)·scale and images
are D(x/scale + shift), with the image cropped to a multiple of 16 px at the top-left first (docs/algorithms.md, "Conventions").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from nodes.vocabulary import Vocabulary


@dataclass(frozen=True)
class Conditioning:
    """Encoded prompt(s) for one family: a batch of rows, one per prompt."""

    family: str
    prompt_embeds: torch.Tensor  # [B, L, D]
    pooled: torch.Tensor  # [B, P]
    prompts: tuple[str, ...] = ()
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. FLUX txt_ids

    @property
    def batch(self) -> int:
        return self.prompt_embeds.shape[0]

    def repeat_to(self, batch: int) -> Conditioning:
        """Broadcast a single prompt to `batch` rows (as diffusers does for num_images_per_prompt)."""
        if self.batch == batch:
            return self
        if self.batch != 1:
            raise ValueError(f"conditioning has {self.batch} prompts, cannot broadcast to a batch of {batch}")
        return Conditioning(
            self.family,
            self.prompt_embeds.repeat(batch, 1, 1),
            self.pooled.repeat(batch, 1),
            self.prompts * batch,
            self.extra,
        )

    def row(self, index: int) -> Conditioning:
        """The `index`-th prompt alone (a batch of 1); a single prompt is its own every row."""
        if self.batch == 1:
            return self
        pick = slice(index, index + 1)
        prompts = self.prompts[pick] if self.prompts else ()
        return Conditioning(self.family, self.prompt_embeds[pick], self.pooled[pick], prompts, self.extra)

    @staticmethod
    def cat(parts: list[Conditioning]) -> Conditioning:
        """Stack conditionings along the batch (one forward call for several prompts)."""
        first = parts[0]
        if any(p.family != first.family for p in parts):
            raise ValueError("cannot batch conditionings of different model families")
        length = max(p.prompt_embeds.shape[1] for p in parts)
        if any(p.prompt_embeds.shape[1] != length for p in parts):
            raise ValueError("cannot batch conditionings of different sequence lengths")
        return Conditioning(
            first.family,
            torch.cat([p.prompt_embeds for p in parts]),
            torch.cat([p.pooled for p in parts]),
            tuple(x for p in parts for x in p.prompts),
            first.extra,
        )

    def nbytes(self) -> int:
        tensors = [self.prompt_embeds, self.pooled, *self.extra.values()]
        return sum(t.element_size() * t.numel() for t in tensors)


@dataclass(frozen=True)
class Latent:
    """Latents in model space, unpacked [B, C, h, w], tagged with the family that can decode them."""

    samples: torch.Tensor
    family: str

    def nbytes(self) -> int:
        return self.samples.element_size() * self.samples.numel()


@dataclass(frozen=True)
class TextEncoder:
    """The prompt encoders of one loaded model (a TEXT_ENCODER value)."""

    family: str
    pipe: Any
    max_sequence_length: int
    source: str
    device: torch.device  # the pipeline's execution device, read once at load (it is costly to look up)
    vocabulary: Vocabulary | None = None  # the words a closed-vocabulary model knows (its flowcanvas.json)

    def encode(self, prompts: list[str]) -> Conditioning:
        device = self.device
        with torch.no_grad():
            if self.family == "flux":
                embeds, pooled, txt_ids = self.pipe.encode_prompt(
                    prompt=prompts, prompt_2=None, device=device, max_sequence_length=self.max_sequence_length
                )
                return Conditioning("flux", embeds, pooled, tuple(prompts), {"txt_ids": txt_ids})
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                prompt=prompts,
                prompt_2=None,
                prompt_3=None,
                do_classifier_free_guidance=False,
                device=device,
                max_sequence_length=self.max_sequence_length,
            )
            return Conditioning("sd3", embeds, pooled, tuple(prompts))

    def nbytes(self) -> int:
        return 0  # the model manager owns the weights


@dataclass(frozen=True)
class VAE:
    """The autoencoder of one loaded model (a VAE value), with its latent shift and scale."""

    family: str
    vae: Any
    source: str

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        return float(self.vae.config.shift_factor or 0.0)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] → model-space latents (mode of the posterior)."""
        _, _, h, w = images.shape
        images = images[:, :, : h - h % 16, : w - w % 16]
        pixels = (images * 2 - 1).to(self.vae.device, self.vae.dtype)
        with torch.no_grad():
            mode = self.vae.encode(pixels).latent_dist.mode()
        return (mode - self.shift_factor) * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space latents → [B, 3, H, W] float32 in [0, 1] (as the pipelines' postprocess)."""
        with torch.no_grad():
            image = self.vae.decode(
                latents.to(self.vae.dtype) / self.scaling_factor + self.shift_factor, return_dict=False
            )[0]
        return (image / 2 + 0.5).clamp(0, 1).float().cpu()

    def nbytes(self) -> int:
        return 0

"""Text and VAE encoders: their wire values and the TextEncode, VAEEncode and VAEDecode nodes.

Text goes through the family pipeline's own `encode_prompt` (so embeddings equal diffusers' bit for bit)
with the model's own `max_sequence_length`. Latents are x0 = (E(img).mode() − shift)·scale and images
are D(x/scale + shift), with the image cropped to a multiple of 16 px at the top-left first (§0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field

from nodes.models.base import Conditioning, Latent
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.types import SocketType


@dataclass(frozen=True)
class TextEncoder:
    """The prompt encoders of one loaded model (a TEXT_ENCODER value)."""

    family: str
    pipe: Any
    max_sequence_length: int
    source: str
    device: torch.device  # the pipeline's execution device, read once at load (it is costly to look up)

    def encode(self, prompts: list[str]) -> Conditioning:
        device = self.device
        with torch.no_grad():
            if self.family == "flux":
                embeds, pooled, txt_ids = self.pipe.encode_prompt(
                    prompt=prompts, prompt_2=None, device=device, max_sequence_length=self.max_sequence_length)
                return Conditioning("flux", embeds, pooled, tuple(prompts), {"txt_ids": txt_ids})
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                prompt=prompts, prompt_2=None, prompt_3=None, do_classifier_free_guidance=False, device=device,
                max_sequence_length=self.max_sequence_length)
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
            image = self.vae.decode(latents.to(self.vae.dtype) / self.scaling_factor + self.shift_factor,
                                    return_dict=False)[0]
        return (image / 2 + 0.5).clamp(0, 1).float().cpu()

    def nbytes(self) -> int:
        return 0


@node("TextEncode", category="conditioning",
      inputs=[Input("encoder", SocketType.TEXT_ENCODER, "The model's text encoders (from Load Flow Model)")],
      outputs=[Output("positive", SocketType.CONDITIONING, "What to draw"),
               Output("negative", SocketType.CONDITIONING, "What to steer away from (used by CFG)")])
class TextEncode(Node):
    """Encode a prompt and a negative prompt with the model's own text encoders."""

    class Params(NodeParams):
        text: str = Field("", max_length=20_000, title="Prompt", description="The prompt: what the image should show.",
                          json_schema_extra={"widget": "multiline"})
        negative_text: str = Field("", max_length=20_000, title="Negative prompt",
                                   description="The negative prompt; an empty one is still encoded, as diffusers does.",
                                   json_schema_extra={"widget": "multiline"})

    def run(self, ctx: NodeContext, params: Params, encoder: TextEncoder) -> dict[str, Any]:
        return {"positive": encoder.encode([params.text]), "negative": encoder.encode([params.negative_text])}


@node("VAEEncode", category="latent",
      inputs=[Input("vae", SocketType.VAE), Input("image", SocketType.IMAGE)],
      outputs=[Output("latent", SocketType.LATENT)])
class VAEEncode(Node):
    """Turn images into latents (cropped to a multiple of 16 px at the top-left)."""

    class Params(NodeParams):
        pass

    def run(self, ctx: NodeContext, params: Params, vae: VAE, image: torch.Tensor) -> dict[str, Any]:
        if image.shape[-1] < 16 or image.shape[-2] < 16:
            raise NodeError(f"the image is {image.shape[-1]}×{image.shape[-2]} px; at least 16×16 is needed",
                            field="image")
        return {"latent": Latent(vae.encode(image), vae.family)}


@node("VAEDecode", category="latent",
      inputs=[Input("vae", SocketType.VAE), Input("latent", SocketType.LATENT)],
      outputs=[Output("image", SocketType.IMAGE)])
class VAEDecode(Node):
    """Turn latents into images."""

    class Params(NodeParams):
        pass

    def run(self, ctx: NodeContext, params: Params, vae: VAE, latent: Latent) -> dict[str, Any]:
        if latent.family != vae.family:
            raise NodeError(f"a {latent.family} latent cannot be decoded by a {vae.family} VAE", field="latent",
                            hint="wire the VAE of the model that made the latent")
        return {"image": vae.decode(latent.samples)}

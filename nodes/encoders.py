"""The TextEncode, VAEEncode and VAEDecode nodes: prompts to conditionings, images to latents and back,
through the TEXT_ENCODER and VAE values of nodes.models.components."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from nodes.models.components import VAE, Latent, TextEncoder
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.types import SocketType
from nodes.vocabulary import warning


@node(
    "TextEncode",
    category="conditioning",
    inputs=[Input("encoder", SocketType.TEXT_ENCODER, "The model's text encoders (from Load Flow Model)")],
    outputs=[
        Output("positive", SocketType.CONDITIONING, "What to draw"),
        Output("negative", SocketType.CONDITIONING, "What to steer away from (used by CFG)"),
    ],
)
class TextEncode(Node):
    """Encode a prompt and a negative prompt with the model's own text encoders."""

    class Params(NodeParams):
        text: str = Field(
            "",
            max_length=20_000,
            title="Prompt",
            description="The prompt: what the image should show.",
            json_schema_extra={"widget": "multiline", "vocabulary_from": "encoder"},
        )
        negative_text: str = Field(
            "",
            max_length=20_000,
            title="Negative prompt",
            description="The negative prompt; an empty one is still encoded, as diffusers does.",
            json_schema_extra={"widget": "multiline"},
        )

    def run(self, ctx: NodeContext, params: Params, encoder: TextEncoder) -> dict[str, Any]:
        if encoder.vocabulary is not None:
            for field in ("text", "negative_text"):
                message = warning(getattr(params, field), encoder.vocabulary)
                if message:
                    ctx.warn(message, field=field)
        return {"positive": encoder.encode([params.text]), "negative": encoder.encode([params.negative_text])}


@node(
    "VAEEncode",
    category="latent",
    inputs=[Input("vae", SocketType.VAE), Input("image", SocketType.IMAGE)],
    outputs=[Output("latent", SocketType.LATENT)],
)
class VAEEncode(Node):
    """Turn images into latents (cropped to a multiple of 16 px at the top-left)."""

    class Params(NodeParams):
        pass

    def run(self, ctx: NodeContext, params: Params, vae: VAE, image: torch.Tensor) -> dict[str, Any]:
        if image.shape[-1] < 16 or image.shape[-2] < 16:
            raise NodeError(
                f"the image is {image.shape[-1]}×{image.shape[-2]} px; at least 16×16 is needed", field="image"
            )
        return {"latent": Latent(vae.encode(image), vae.family)}


@node(
    "VAEDecode",
    category="latent",
    inputs=[Input("vae", SocketType.VAE), Input("latent", SocketType.LATENT)],
    outputs=[Output("image", SocketType.IMAGE)],
)
class VAEDecode(Node):
    """Turn latents into images."""

    class Params(NodeParams):
        pass

    def run(self, ctx: NodeContext, params: Params, vae: VAE, latent: Latent) -> dict[str, Any]:
        if latent.family != vae.family:
            raise NodeError(
                f"a {latent.family} latent cannot be decoded by a {vae.family} VAE",
                field="latent",
                hint="wire the VAE of the model that made the latent",
            )
        return {"image": vae.decode(latent.samples)}

"""Edit Mask: the region an edit must change, found from the difference between the source and target prompts
(DiffEdit, Couairon et al., ICLR 2023; docs/algorithms.md, "Edit Mask").

The source latent is noised to a middle level several times; at each draw the model's velocity for the target
prompt is compared with its velocity for the source prompt. Where the two prompts describe the same thing the
velocities agree; where the edit changes something they differ. The mean absolute difference over channels and
draws, clipped at a multiple of its mean and scaled to [0, 1], is thresholded at one half (as diffusers'
StableDiffusionDiffEditPipeline.generate_mask does, there with the multiple 3; 1.5 here lets a background edit's
large region in whole). It works for any family through the adapter: for an object's
colour or shape the mask covers the object, for the background it covers the background.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from nodes.editors.common import EditPrompts, check_edit_inputs
from nodes.fields import seed_field
from nodes.models.base import FlowModel, VelocityQuery
from nodes.models.components import Conditioning, Latent
from nodes.registry import Input, Node, NodeContext, NodeParams, Output, node
from nodes.types import SocketType


def velocity_difference(
    model: FlowModel,
    x_src: torch.Tensor,
    prompts: EditPrompts,
    *,
    strength: float,
    samples: int,
    guidance: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """[B, h, w]: mean over `samples` noise draws at σ = strength of |v(target) − v(source)|, averaged over channels."""
    sigma = torch.tensor(strength, dtype=torch.float32, device=x_src.device)
    total = torch.zeros(x_src.shape[0], *x_src.shape[2:], dtype=torch.float32, device=x_src.device)
    for _ in range(samples):
        noisy = (sigma * model.noise_like(x_src, generator) + (1 - sigma) * x_src).to(x_src.dtype)
        v_target, v_source = model.velocities(
            sigma,
            [
                VelocityQuery(noisy, prompts.target, prompts.negative, guidance),
                VelocityQuery(noisy, prompts.source, prompts.negative, guidance),
            ],
        )
        total += (v_target.to(torch.float32) - v_source.to(torch.float32)).abs().mean(dim=1)
    return total / samples


def edit_mask(difference: torch.Tensor, clip_ratio: float, threshold: float) -> torch.Tensor:
    """[B, h, w] of 0/1: each image's difference clipped at clip_ratio × its mean, scaled to [0, 1], thresholded."""
    ceiling = (difference.flatten(1).mean(dim=1) * clip_ratio).clamp_min(torch.finfo(torch.float32).tiny)
    scaled = torch.minimum(difference, ceiling[:, None, None]) / ceiling[:, None, None]
    return (scaled >= threshold).to(torch.float32)


def pixel_edit_mask(
    model: FlowModel,
    x_src: torch.Tensor,
    prompts: EditPrompts,
    *,
    strength: float,
    samples: int,
    guidance: float,
    clip_ratio: float,
    threshold: float,
    seed: int,
) -> torch.Tensor:
    """[B, H, W] of 0/1 at the image's size: the whole Edit Mask, from the source latent to pixels."""
    with torch.inference_mode():
        difference = velocity_difference(
            model,
            x_src,
            prompts,
            strength=strength,
            samples=samples,
            guidance=guidance,
            generator=torch.Generator("cpu").manual_seed(seed),
        )
    cells = edit_mask(difference, clip_ratio, threshold)
    return F.interpolate(cells[:, None], scale_factor=model.vae_scale_factor, mode="nearest")[:, 0].cpu()


@node(
    "EditMask",
    category="masks",
    inputs=[
        Input("model", SocketType.FLOW_MODEL),
        Input("source_latent", SocketType.LATENT, "The image to edit, encoded (VAE Encode)"),
        Input("source", SocketType.CONDITIONING, "A prompt that describes the source image"),
        Input("target", SocketType.CONDITIONING, "The same prompt with the edit made"),
        Input("negative", SocketType.CONDITIONING, "SD3's CFG negative (TextEncode's negative output)", optional=True),
    ],
    outputs=[Output("mask", SocketType.MASK, "1 where the edit changes the image, at the image's size")],
)
class EditMaskNode(Node):
    """The region an edit changes, from where the model's flows for the source and target prompts differ
    (DiffEdit): the object for a colour or shape edit, the background for a background edit."""

    class Params(NodeParams):
        strength: float = Field(
            0.5,
            gt=0.0,
            lt=1.0,
            json_schema_extra={"step": 0.05},
            description="Noise level the prompts are compared at: higher finds larger changes (shape), lower finer ones.",
        )
        samples: int = Field(
            10, ge=1, le=64, description="Noise draws averaged: more gives a steadier mask, each costs two model calls."
        )
        guidance: float = Field(
            1.0,
            ge=0.0,
            le=100.0,
            json_schema_extra={"step": 0.5},
            description=(
                "FLUX: the embedded guidance of both velocities. SD3: a CFG scale only multiplies the difference, "
                "which the mask scales away (above 1 it needs the negative)."
            ),
        )
        clip_ratio: float = Field(
            1.5,
            gt=0.0,
            le=100.0,
            json_schema_extra={"step": 0.5},
            description=(
                "Differences above this multiple of their mean count as fully changed: lower lets a large region "
                "(a background) in whole."
            ),
        )
        threshold: float = Field(
            0.5,
            ge=0.0,
            le=1.0,
            json_schema_extra={"step": 0.05},
            description="Cells whose scaled difference reaches this are in the mask: lower gives a larger mask.",
        )
        seed: int = seed_field(0, "The seed of the noise draws.")

    def run(
        self,
        ctx: NodeContext,
        params: Params,
        model: FlowModel,
        source_latent: Latent,
        source: Conditioning,
        target: Conditioning,
        negative: Conditioning | None = None,
    ) -> dict[str, Any]:
        prompts = EditPrompts(source, target, negative)
        check_edit_inputs(model, source_latent, prompts, params.guidance, params.guidance)
        ctx.record_seed("seed", params.seed)
        x_src = source_latent.samples.to(model.device, model.dtype)
        return {"mask": pixel_edit_mask(model, x_src, prompts, **params.model_dump())}

"""The Sampler node, with empty latents and seeded noise drawn as diffusers draws it, and the step reporting
(progress, live previews, cancellation) that the editors share.

The Sampler composes a model's guided velocity with any SIGMAS schedule and SOLVER (k-diffusion's
decomposition): same seed, schedule and solver as a diffusers pipeline give the same bits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from diffusers.utils.torch_utils import randn_tensor
from pydantic import Field

from nodes.fields import guidance_field, preview_every_field, seed_field, true_cfg_field
from nodes.image import preview_png
from nodes.limits import pixel_problems
from nodes.models.base import FlowModel
from nodes.models.components import Conditioning, Latent
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.sampling.solvers import Solver, Step
from nodes.types import SocketType

NoiseDraw = Callable[[tuple[int, ...], torch.Generator], torch.Tensor]  # shape, generator → float32 CPU noise


def gaussian(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32)


class NoiseUnavailable(ValueError):
    """A NOISE value cannot give noise of the shape asked (a pruning threshold that keeps too few draws)."""


class Noise(Protocol):
    """A NOISE value: starting noise from a seed. `draw` is the seed's noise for one sampler; `sample` draws from
    a generator a sampler already holds (a particle sampler draws many starts from one); `check_shape` says why
    a latent shape cannot take it, or None."""

    @property
    def seed(self) -> int: ...

    def check_shape(self, shape: tuple[int, ...]) -> str | None: ...

    def sample(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor: ...

    def draw(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor: ...


@dataclass(frozen=True)
class NoiseSource:
    """Plain Gaussian noise from a seeded CPU generator, so a seed means the same on every device (and the same
    as in diffusers)."""

    seed: int

    def check_shape(self, shape: tuple[int, ...]) -> str | None:
        return None

    def sample(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        return gaussian(shape, generator)

    def draw(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        generator = torch.Generator("cpu").manual_seed(self.seed)
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)


@node("Noise", category="sampling", outputs=[Output("noise", SocketType.NOISE)])
class NoiseNode(Node):
    """Seeded starting noise; seeds mean the same as in diffusers (a CPU torch.Generator)."""

    class Params(NodeParams):
        seed: int = seed_field(0, "The seed; the same seed gives the same image.")

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        ctx.record_seed("seed", params.seed)
        return {"noise": NoiseSource(params.seed)}


@node(
    "EmptyLatent",
    category="latent",
    inputs=[Input("model", SocketType.FLOW_MODEL)],
    outputs=[Output("latent", SocketType.LATENT)],
)
class EmptyLatent(Node):
    """A blank latent of the model's shape for an image size (the start of text-to-image)."""

    class Params(NodeParams):
        width: int = Field(
            1024, ge=16, le=8192, multiple_of=16, description="Image width in pixels (a multiple of 16)."
        )
        height: int = Field(
            1024, ge=16, le=8192, multiple_of=16, description="Image height in pixels (a multiple of 16)."
        )
        batch_size: int = Field(1, ge=1, le=64, description="Images per run.")

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        return pixel_problems(params.width, params.height, params.batch_size, "batch_size")

    def run(self, ctx: NodeContext, params: Params, model: FlowModel) -> dict[str, Any]:
        shape = model.latent_shape(params.batch_size, params.height, params.width)
        return {"latent": Latent(torch.zeros(shape, dtype=model.dtype, device=model.device), model.family)}


def require_family(model: FlowModel, **values: Conditioning | Latent | None) -> None:
    """Refuse conditionings and latents made by another model family (they would fail deep in the model)."""
    for name, value in values.items():
        if value is not None and value.family != model.family:
            raise NodeError(
                f"{name} comes from a {value.family} model, but the model is {model.family}",
                field=name,
                hint="wire everything from the same Load Flow Model node",
            )


def require_negative_for_cfg(model: FlowModel, negative: Conditioning | None, guidance: float) -> None:
    """Refuse SD3 guidance above 1 without the negative conditioning: its CFG needs one, and without it the
    guidance would silently do nothing."""
    if model.family == "sd3" and negative is None and guidance > 1:
        raise NodeError(
            "SD3 guidance above 1 needs the negative conditioning",
            field="negative",
            hint="wire TextEncode's negative output (an empty negative prompt is fine)",
        )


def start_index(steps: int, denoise: float) -> int:
    """First step for img2img strength `denoise`, as diffusers' img2img pipelines compute it."""
    init_steps = min(steps * denoise, steps)
    return int(max(steps - init_steps, 0))


def latent_preview(model: FlowModel, x0: torch.Tensor) -> bytes:
    """A live preview PNG of the first image of a clean estimate, as the model approximates its decoding."""
    return preview_png(model.preview_rgb(x0[:1]))


# Live previews are for people: more than a few a second is not seen, and on a small model a preview (a VAE
# decode and a PNG, ~20 ms) costs as much as several sampling steps.
PREVIEW_INTERVAL = 0.25  # seconds, at least, between two previews of one node


def step_progress(ctx: NodeContext, model: FlowModel, preview_every: int) -> Callable[[Step], None]:
    """A step callback that reports progress to the run, with a preview of the clean estimate every
    `preview_every` steps (never when 0), at most one per PREVIEW_INTERVAL, and at the last step; every report is
    also a cancellation point."""
    last_shown: float | None = None

    def report(step: Step) -> None:
        nonlocal last_shown
        now = time.monotonic()
        due = preview_every and (step.done % preview_every == 0 or step.done == step.total)
        show = due and (step.done == step.total or last_shown is None or now - last_shown >= PREVIEW_INTERVAL)
        if show:
            last_shown = now
        ctx.progress(step.done, step.total, latent_preview(model, step.x0_estimate) if show else None)

    return report


# What every sampler of a guided velocity takes first (the Sampler, the Particle Sampler).
GUIDED_INPUTS = (
    Input("model", SocketType.FLOW_MODEL),
    Input("positive", SocketType.CONDITIONING),
    Input("negative", SocketType.CONDITIONING, "Used by CFG (SD3) and true CFG (FLUX)", optional=True),
)


@node(
    "Sampler",
    category="sampling",
    inputs=[
        *GUIDED_INPUTS,
        Input("latent", SocketType.LATENT, "Empty for text-to-image; an encoded image for image-to-image"),
        Input("sigmas", SocketType.SIGMAS),
        Input("solver", SocketType.SOLVER),
        Input("noise", SocketType.NOISE),
    ],
    outputs=[Output("latent", SocketType.LATENT)],
)
class Sampler(Node):
    """Integrate the flow from noise to an image along a schedule with a solver."""

    class Params(NodeParams):
        guidance: float = guidance_field()
        true_cfg: float = true_cfg_field()
        denoise: float = Field(
            1.0,
            ge=0.0,
            le=1.0,
            json_schema_extra={"step": 0.01},
            description=(
                "How much of the input latent to redraw: 1 ignores it (text-to-image), lower keeps more of it."
            ),
        )
        preview_every: int = preview_every_field()

    def run(
        self,
        ctx: NodeContext,
        params: Params,
        model: FlowModel,
        positive: Conditioning,
        latent: Latent,
        sigmas: torch.Tensor,
        solver: Solver,
        noise: Noise,
        negative: Conditioning | None = None,
    ) -> dict[str, Any]:
        require_family(model, positive=positive, negative=negative, latent=latent)
        require_negative_for_cfg(model, negative, params.guidance)
        steps = len(sigmas) - 1
        first = start_index(steps, params.denoise)
        if first >= steps:
            raise NodeError("denoise is too low to take a single step", field="denoise")
        sigmas = sigmas[first:]
        x0 = latent.samples.to(model.device, model.dtype)
        problem = noise.check_shape(tuple(x0.shape))
        if problem is not None:
            raise NodeError(problem, field="noise")
        try:
            eps = noise.draw(tuple(x0.shape), model.dtype, model.device)
        except NoiseUnavailable as error:
            raise NodeError(str(error), field="noise", hint="raise the noise's threshold") from None
        # Text-to-image starts from pure noise (exactly, as the pipelines do); image-to-image mixes it in.
        x = eps if first == 0 and float(sigmas[0]) == 1.0 else sigmas[0] * eps + (1.0 - sigmas[0]) * x0

        def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return model.velocity(x, sigma, positive, negative, params.guidance, params.true_cfg)

        with torch.inference_mode():
            result = solver.sample(velocity, x, sigmas, step_progress(ctx, model, params.preview_every))
        return {"latent": Latent(result, model.family)}

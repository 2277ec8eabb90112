"""FlowEdit (Kulikov et al., ICCV 2025; docs/algorithms.md, "FlowEdit"): inversion-free text editing, and its node.

An ODE is integrated directly on the edited latent Z, driven by the difference between the target- and
source-conditioned velocities evaluated at coupled noisy points: z_src = (1−σ)·x_src + σ·ε and
z_tar = z_src + (Z − x_src). The first T − n_max steps are skipped (how much structure is kept), the last
n_min are plain sampling with the target prompt (a sharper finish).

Noise comes from one seeded generator in the reference's order: one draw per repeat per active step, then
one more where the plain-sampling tail begins, each shaped like the source latent (packed for FLUX).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field

from nodes.editors.common import (
    EDIT_INPUTS,
    EDITED_OUT,
    EditPrompts,
    check_edit_inputs,
    model_defaults,
    per_model_defaults,
)
from nodes.fields import preview_every_field, seed_field
from nodes.models.base import FlowModel, VelocityQuery
from nodes.models.components import Conditioning, Latent
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, node
from nodes.sampling.sampler import step_progress
from nodes.sampling.solvers import EULER, Solver, Step, StepCallback, euler_update
from nodes.types import SocketType


@dataclass(frozen=True)
class FlowEditDefaults:
    n_max: int
    src_guidance: float
    tar_guidance: float


# The reference YAMLs (SD3 at T=50, FLUX at T=28); the embedded model's row was tuned on bench/editing.py.
DEFAULTS: dict[str, FlowEditDefaults] = {
    "sd3": FlowEditDefaults(n_max=33, src_guidance=3.5, tar_guidance=13.5),
    "flux": FlowEditDefaults(n_max=24, src_guidance=1.5, tar_guidance=5.5),
    "embedded": FlowEditDefaults(n_max=21, src_guidance=3.5, tar_guidance=9.0),
}


def active_steps(steps: int, n_max: int, n_min: int) -> tuple[int, int]:
    """(first FlowEdit step, first plain-sampling step) for T steps: steps i with T − i ≤ n_max are active,
    and the last n_min of them sample plainly."""
    first = max(0, steps - n_max)
    return first, max(first, steps - n_min)


def coupled_points(
    x_src: torch.Tensor, edited: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_src, z_tar): the source noised to σ and the edited latent moved by the same offset.

    z_tar is formed as z_src + (Z − x_src), which is z_src to the last bit while Z = x_src, so an edit whose
    target equals its source never moves."""
    z_src = sigma * noise + (1.0 - sigma) * x_src
    return z_src, z_src + (edited - x_src)


def flowedit_steps(
    model: FlowModel,
    x_src: torch.Tensor,
    edited: torch.Tensor,
    sigmas: torch.Tensor,
    step_range: range,
    prompts: EditPrompts,
    *,
    n_avg: int,
    src_guidance: float,
    tar_guidance: float,
    generator: torch.Generator,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """FlowEdit's ODE over the given steps, from the edited latent `edited`: Z ← Z + dσ·mean(v_t − v_s)."""
    total = len(sigmas) - 1
    for i in step_range:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        delta = torch.zeros_like(x_src, dtype=torch.float32)
        for _ in range(n_avg):
            z_src, z_tar = coupled_points(x_src, edited, sigma, model.noise_like(x_src, generator))
            v_src, v_tar = model.velocities(
                sigma,
                [
                    VelocityQuery(z_src, prompts.source, prompts.negative, src_guidance, true_cfg=1.0),
                    VelocityQuery(z_tar, prompts.target, prompts.negative, tar_guidance, true_cfg=1.0),
                ],
            )
            delta += (v_tar.to(torch.float32) - v_src.to(torch.float32)) / n_avg
        edited = euler_update(edited, sigma_next - sigma, delta).to(x_src.dtype)
        if callback is not None:
            callback(Step(i + 1, total, edited, edited))
    return edited


def sampling_tail(
    model: FlowModel,
    x_src: torch.Tensor,
    edited: torch.Tensor,
    sigmas: torch.Tensor,
    start: int,
    prompts: EditPrompts,
    *,
    tar_guidance: float,
    generator: torch.Generator,
    solver: Solver,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """The last steps as plain sampling with the target prompt, from the edited latent re-noised to σ_start."""
    total = len(sigmas) - 1
    sigma = sigmas[start]
    noised = sigma * model.noise_like(x_src, generator) + (1.0 - sigma) * x_src
    x = edited + noised - x_src

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return model.velocity(x, sigma, prompts.target, prompts.negative, tar_guidance, 1.0)

    def on_step(step: Step) -> None:
        if callback is not None:
            callback(Step(start + step.done, total, step.latent, step.x0_estimate))

    return solver.sample(velocity, x, sigmas[start:], on_step)


def flowedit(
    model: FlowModel,
    x_src: torch.Tensor,
    sigmas: torch.Tensor,
    prompts: EditPrompts,
    *,
    n_max: int,
    n_min: int = 0,
    n_avg: int = 1,
    src_guidance: float,
    tar_guidance: float,
    generator: torch.Generator,
    solver: Solver = EULER,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Edit the source latent `x_src` from `prompts.source` towards `prompts.target` along `sigmas` (T+1 levels).

    n_max ≤ 0 returns the source unchanged; n_max ≥ T starts from pure noise; n_min = n_max is SDEdit."""
    if n_avg < 1:
        raise ValueError(f"n_avg must be at least 1, got {n_avg}")
    if n_min > n_max:
        raise ValueError(f"n_min ({n_min}) must not exceed n_max ({n_max})")
    if n_max <= 0:
        return x_src.clone()
    sigmas = sigmas.to(device=x_src.device, dtype=torch.float32)
    steps = len(sigmas) - 1
    first, tail = active_steps(steps, n_max, n_min)
    edited = flowedit_steps(
        model,
        x_src,
        x_src,
        sigmas,
        range(first, tail),
        prompts,
        n_avg=n_avg,
        src_guidance=src_guidance,
        tar_guidance=tar_guidance,
        generator=generator,
        callback=callback,
    )
    if tail == steps:
        return edited
    return sampling_tail(
        model,
        x_src,
        edited,
        sigmas,
        tail,
        prompts,
        tar_guidance=tar_guidance,
        generator=generator,
        solver=solver,
        callback=callback,
    )


# ---- the node ----------------------------------------------------------------------------------------------------

TAIL_SOLVER = Input(
    "solver", SocketType.SOLVER, "Solver for the last n_min plain steps (Euler when unwired)", optional=True
)


def n_max_field() -> Any:
    counts = per_model_defaults(DEFAULTS, "n_max")
    return Field(
        None,
        ge=0,
        le=1000,
        description=(
            "How many of the last steps edit: more lets the edit change more (shape, layout), fewer keeps more of "
            f"the source. Blank: the model's default ({counts})."
        ),
    )


def source_guidance_field() -> Any:
    values = per_model_defaults(DEFAULTS, "src_guidance")
    return Field(
        None,
        ge=0.0,
        le=100.0,
        json_schema_extra={"step": 0.5},
        description=(
            f"Guidance for the source prompt (SD3: CFG scale; FLUX: embedded). Blank: the model's default ({values})."
        ),
    )


def target_guidance_field() -> Any:
    values = per_model_defaults(DEFAULTS, "tar_guidance")
    return Field(
        None,
        ge=0.0,
        le=100.0,
        json_schema_extra={"step": 0.5},
        description=(
            f"Guidance for the target prompt; higher pushes the edit harder. Blank: the model's default ({values})."
        ),
    )


@node("FlowEdit", category="editors", inputs=[*EDIT_INPUTS, TAIL_SOLVER], outputs=[EDITED_OUT])
class FlowEditNode(Node):
    """Edit an image by prompt without inversion (FlowEdit): describe the source, then the same with the change."""

    class Params(NodeParams):
        n_max: int | None = n_max_field()
        n_min: int = Field(
            0,
            ge=0,
            le=1000,
            description=(
                "Finish with this many plain sampling steps on the target prompt: sharper detail, weaker hold on "
                "the source. 0: edit to the end."
            ),
        )
        n_avg: int = Field(
            1,
            ge=1,
            le=32,
            description=("Noise draws averaged per step: smoother, more faithful edits at n_avg times the cost."),
        )
        src_guidance: float | None = source_guidance_field()
        tar_guidance: float | None = target_guidance_field()
        seed: int = seed_field(42, "The seed of the noise the edit draws.")
        preview_every: int = preview_every_field()

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        if params.n_max is not None and params.n_min > params.n_max:
            return [("n_min", f"n_min ({params.n_min}) must not exceed n_max ({params.n_max})")]
        return []

    def run(
        self,
        ctx: NodeContext,
        params: Params,
        model: FlowModel,
        source_latent: Latent,
        source: Conditioning,
        target: Conditioning,
        sigmas: torch.Tensor,
        negative: Conditioning | None = None,
        solver: Solver | None = None,
    ) -> dict[str, Any]:
        chosen = model_defaults(DEFAULTS, model, params)
        if params.n_min > chosen.n_max:
            raise NodeError(
                f"n_min ({params.n_min}) must not exceed n_max ({chosen.n_max}, the model's default)", field="n_min"
            )
        prompts = EditPrompts(source, target, negative)
        check_edit_inputs(model, source_latent, prompts, chosen.src_guidance, chosen.tar_guidance)
        ctx.record_seed("seed", params.seed)
        x_src = source_latent.samples.to(model.device, model.dtype)
        with torch.inference_mode():
            edited = flowedit(
                model,
                x_src,
                sigmas,
                prompts,
                n_max=chosen.n_max,
                n_min=params.n_min,
                n_avg=params.n_avg,
                src_guidance=chosen.src_guidance,
                tar_guidance=chosen.tar_guidance,
                generator=torch.Generator("cpu").manual_seed(params.seed),
                solver=solver or EULER,
                callback=step_progress(ctx, model, params.preview_every),
            )
        return {"latent": Latent(edited, model.family)}

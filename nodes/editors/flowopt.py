"""FlowOpt (Ronai, Kulikov, Michaeli, arXiv 2510.22010; docs/algorithms.md, "FlowOpt"): editing and inversion by zero-order
optimisation through the whole sampler, and its node.

The sampler from σ_s to 0 is a black box f. Starting from an inversion of the source y (UniInv), the
starting latent is fixed-point iterated, z ← z − η·(f(z) − y), so that sampling it with the target prompt
lands as close to the source as the prompt allows (edit), or with the source prompt reproduces it (invert).
No noise is drawn: the result is a deterministic function of its inputs. Each iteration's output is
streamed as a preview, so a user can stop once it looks right and rerun with that many iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field

from nodes.editors.common import EDIT_INPUTS, EditPrompts, check_edit_inputs, model_defaults, per_model_defaults
from nodes.models.base import FlowModel
from nodes.models.components import Conditioning, Latent
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.sampling.sampler import step_progress
from nodes.sampling.solvers import EULER, Solver, Step, StepCallback, VelocityFn
from nodes.types import SocketType


@dataclass(frozen=True)
class FlowOptDefaults:
    n_max: int
    iterations: int
    eta: float
    src_guidance: float
    tar_guidance: float


# Reference YAMLs at T = 15 (edit); the embedded row was tuned on bench/editing.py.
DEFAULTS: dict[str, FlowOptDefaults] = {
    "sd3": FlowOptDefaults(n_max=12, iterations=8, eta=0.01, src_guidance=1.0, tar_guidance=3.5),
    "flux": FlowOptDefaults(n_max=13, iterations=8, eta=0.0025, src_guidance=1.0, tar_guidance=3.5),
    "embedded": FlowOptDefaults(n_max=12, iterations=8, eta=0.01, src_guidance=1.0, tar_guidance=3.5),
}


def uniinv(velocity: VelocityFn, y: torch.Tensor, sigmas: torch.Tensor, start: int) -> torch.Tensor:
    """UniInv: invert the clean latent y up to sigmas[start] along the schedule's own levels, ascending.

    Each step predicts with the previous velocity and corrects with the velocity at the predicted point; the
    first velocity is taken at σ = 0. Costs (T − start) + 1 evaluations."""
    levels = [
        torch.zeros((), dtype=torch.float32, device=sigmas.device),
        *(sigmas[i] for i in range(len(sigmas) - 2, start - 1, -1)),
    ]
    x = y
    v_previous = velocity(y, levels[0])
    for low, high in zip(levels, levels[1:]):
        step = high - low
        predicted = (x.to(torch.float32) + step * v_previous).to(y.dtype)
        v_previous = velocity(predicted, high)
        x = (x.to(torch.float32) + step * v_previous).to(y.dtype)
    return x


def fixed_point_iterations(
    sample: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    y: torch.Tensor,
    *,
    eta: float,
    iterations: int,
    callback: StepCallback | None = None,
) -> list[torch.Tensor]:
    """out_k = f(z_k), z_{k+1} = z_k − η·(out_k − y) for k = 0 … K; returns every out_k (the last is the result)."""
    z = start
    outputs = []
    for k in range(iterations + 1):
        out = sample(z)
        outputs.append(out)
        if callback is not None:
            callback(Step(k + 1, iterations + 1, out, out))
        if k < iterations:
            z = (z.to(torch.float32) - eta * (out.to(torch.float32) - y.to(torch.float32))).to(z.dtype)
    return outputs


def flowopt(
    model: FlowModel,
    y: torch.Tensor,
    sigmas: torch.Tensor,
    prompts: EditPrompts,
    *,
    mode: Literal["edit", "invert"],
    n_max: int,
    iterations: int,
    eta: float,
    src_guidance: float,
    tar_guidance: float,
    solver: Solver = EULER,
    callback: StepCallback | None = None,
) -> list[torch.Tensor]:
    """Every iteration's output for the source latent y (the last is the edit or the reconstruction)."""
    steps = len(sigmas) - 1
    if not 1 <= n_max <= steps:
        raise ValueError(f"n_max must be between 1 and the step count {steps}, got {n_max}")
    sigmas = sigmas.to(device=y.device, dtype=torch.float32)
    start = steps - n_max

    def source_velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return model.velocity(x, sigma, prompts.source, prompts.negative, src_guidance)

    cond, guidance = (prompts.target, tar_guidance) if mode == "edit" else (prompts.source, src_guidance)

    def sample(z: torch.Tensor) -> torch.Tensor:
        return solver.sample(
            lambda x, sigma: model.velocity(x, sigma, cond, prompts.negative, guidance), z, sigmas[start:]
        )

    return fixed_point_iterations(
        sample, uniinv(source_velocity, y, sigmas, start), y, eta=eta, iterations=iterations, callback=callback
    )


@node(
    "FlowOpt",
    category="editors",
    inputs=[
        *EDIT_INPUTS[:3],
        Input("target", SocketType.CONDITIONING, "The edited prompt (not used to invert)", optional=True),
        *EDIT_INPUTS[4:],
        Input(
            "solver",
            SocketType.SOLVER,
            "Solver of the sampler being optimised through (Euler when unwired)",
            optional=True,
        ),
    ],
    outputs=[
        Output("latent", SocketType.LATENT, "The last iteration's result"),
        Output("iterations", SocketType.LATENT, "Every iteration's result, as one batch, first to last"),
    ],
)
class FlowOptNode(Node):
    """Edit (or invert) an image by optimising the starting noise through the whole sampler (FlowOpt)."""

    class Params(NodeParams):
        mode: Literal["edit", "invert"] = Field(
            "edit",
            description=(
                "edit: sample with the target prompt while staying close to the source; invert: find the noise that "
                "reproduces the source with its own prompt."
            ),
        )
        n_max: int | None = Field(
            None,
            ge=1,
            le=1000,
            description=(
                "How many of the last steps the sampler runs: more lets the edit change more. Blank: the model's "
                f"default ({per_model_defaults(DEFAULTS, 'n_max')})."
            ),
        )
        iterations: int | None = Field(
            None,
            ge=0,
            le=500,
            description=(
                "Optimisation rounds, each one full sampling pass: more stays closer to the source. Blank: the "
                f"model's default ({per_model_defaults(DEFAULTS, 'iterations')})."
            ),
        )
        eta: float | None = Field(
            None,
            gt=0.0,
            le=10.0,
            json_schema_extra={"step": 0.001},
            description=(
                "Step size of each round: larger converges faster but can overshoot and diverge. Blank: the model's "
                f"default ({per_model_defaults(DEFAULTS, 'eta')})."
            ),
        )
        src_guidance: float | None = Field(
            None,
            ge=0.0,
            le=100.0,
            json_schema_extra={"step": 0.5},
            description=(
                "Guidance of the source prompt during inversion (1: none). Blank: the model's default "
                f"({per_model_defaults(DEFAULTS, 'src_guidance')})."
            ),
        )
        tar_guidance: float | None = Field(
            None,
            ge=0.0,
            le=100.0,
            json_schema_extra={"step": 0.5},
            description=(
                "Guidance of the target prompt while editing; higher pushes the edit harder. Blank: the model's "
                f"default ({per_model_defaults(DEFAULTS, 'tar_guidance')})."
            ),
        )

    def run(
        self,
        ctx: NodeContext,
        params: Params,
        model: FlowModel,
        source_latent: Latent,
        source: Conditioning,
        sigmas: torch.Tensor,
        target: Conditioning | None = None,
        negative: Conditioning | None = None,
        solver: Solver | None = None,
    ) -> dict[str, Any]:
        chosen = model_defaults(DEFAULTS, model, params)
        steps = len(sigmas) - 1
        # A blank n_max never asks for more steps than the schedule has; a typed one is checked instead.
        n_max = min(chosen.n_max, steps) if params.n_max is None else params.n_max
        if n_max > steps:
            raise NodeError(
                f"n_max ({n_max}) is more than the schedule's {steps} steps",
                field="n_max",
                hint="lower n_max or raise the schedule's steps",
            )
        if params.mode == "edit" and target is None:
            raise NodeError(
                "editing needs the target prompt",
                field="target",
                hint="wire a TextEncode with the edited prompt, or set mode to invert",
            )
        prompts = EditPrompts(source, target if target is not None else source, negative)
        check_edit_inputs(
            model,
            source_latent,
            prompts,
            chosen.src_guidance,
            chosen.tar_guidance if params.mode == "edit" else chosen.src_guidance,
        )
        y = source_latent.samples.to(model.device, model.dtype)
        with torch.inference_mode():
            outputs = flowopt(
                model,
                y,
                sigmas,
                prompts,
                mode=params.mode,
                n_max=n_max,
                iterations=chosen.iterations,
                eta=chosen.eta,
                src_guidance=chosen.src_guidance,
                tar_guidance=chosen.tar_guidance,
                # Each iteration is a whole sampling pass, so every one is worth a preview.
                solver=solver or EULER,
                callback=step_progress(ctx, model, preview_every=1),
            )
        return {"latent": Latent(outputs[-1], model.family), "iterations": Latent(torch.cat(outputs), model.family)}

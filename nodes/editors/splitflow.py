"""SplitFlow (Yoon et al., NeurIPS 2025; docs/algorithms.md, "SplitFlow and Decompose Prompt"): FlowEdit with the
target split into sub-prompts, as the authors' code does it.

While T − i ≥ n_dec, every sub-prompt and the full target run their own FlowEdit flow from the source, each with its
own noise. After the step T − i = n_dec the sub-prompt latents are projected onto the full-target latent's direction
at each location and averaged (Latent Trajectory Projection). The next step moves that latent once with the
sub-prompts' velocity differences merged by Velocity Field Aggregation: a softmax over the flows of each one's summed
cosine agreement with the others, so flows that agree weigh more. Plain FlowEdit with the full target prompt
finishes the edit.

`projection` and `aggregation` switch the parts off or swap the rule, for the paper's ablation: no projection
(the sub-prompt latents are averaged as they are), the plain mean, or "distinct" (the softmax of disagreement, the
abstract's "emphasising distinct directions", which the code does not do).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from nodes.editors.common import EDIT_INPUTS, EDITED_OUT, EditPrompts, check_edit_inputs, model_defaults, per_model
from nodes.editors.flowedit import DEFAULTS as FLOWEDIT_DEFAULTS
from nodes.editors.flowedit import (
    TAIL_SOLVER,
    active_steps,
    coupled_points,
    flowedit_steps,
    n_max_field,
    sampling_tail,
    source_guidance_field,
    target_guidance_field,
)
from nodes.fields import preview_every_field, seed_field
from nodes.models.base import FlowModel, VelocityQuery
from nodes.models.components import Conditioning, Latent, TextEncoder
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, node
from nodes.sampling.sampler import step_progress
from nodes.sampling.solvers import EULER, Solver, Step, StepCallback, euler_update
from nodes.types import SocketType

NORM_EPS = 1e-8
MAX_SUB_PROMPTS = 8  # the paper uses up to 3; more are allowed but rarely help

Aggregation = Literal["vfa", "mean", "distinct"]

# SD3: the authors' n_middle = 28 at n_max = 33 and T = 50 (six split steps, then the aggregation step); FLUX: the
# same share of its n_max; embedded: bench/editor_defaults.py's choice on its tuning pairs (three split steps).
N_DEC_DEFAULTS: dict[str, int] = {"sd3": 28, "flux": 20, "embedded": 19}


def project(latent: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """The component of `latent` along `direction`, per spatial location across channels.

    ⟨x, d⟩/⟨d, d⟩·d equals ⟨x, d̂⟩·d̂; written this way, a latent projected onto itself is returned exactly."""
    squared_norm = (direction * direction).sum(dim=1, keepdim=True).clamp_min(NORM_EPS**2)
    return (latent * direction).sum(dim=1, keepdim=True) / squared_norm * direction


def trajectory_projection(sub_latents: list[torch.Tensor], target_latent: torch.Tensor) -> torch.Tensor:
    """LTP: the mean over the sub-prompt latents of each one projected onto the full-target latent."""
    base = target_latent.to(torch.float32)
    return torch.stack([project(x.to(torch.float32), base) for x in sub_latents]).mean(dim=0)


def aggregation_weights(flows: list[torch.Tensor], rule: Aggregation = "vfa") -> torch.Tensor:
    """Weights [N, B, 1, h, w] that sum to 1 at each location. vfa: softmax over k of Σ_{j≠k} cos_c(g_k, g_j);
    distinct: the softmax of minus that sum; mean: 1/N."""
    stacked = torch.stack([g.to(torch.float32) for g in flows])  # [N, B, C, h, w]
    if rule == "mean":
        return torch.full((len(flows), *stacked.shape[1:2], 1, *stacked.shape[3:]), 1.0 / len(flows))
    norms = stacked.norm(dim=2, keepdim=True)
    cosines = torch.einsum("kbchw,jbchw->kjbhw", stacked, stacked) / (
        (norms.squeeze(2).unsqueeze(1) * norms.squeeze(2).unsqueeze(0)).clamp_min(NORM_EPS)
    )
    agreement = cosines.sum(dim=1) - cosines.diagonal(dim1=0, dim2=1).permute(3, 0, 1, 2)  # drop j = k
    return torch.softmax(agreement if rule == "vfa" else -agreement, dim=0).unsqueeze(2)


def aggregate(flows: list[torch.Tensor], rule: Aggregation = "vfa") -> torch.Tensor:
    """VFA (or the ablation's rule): Σ_k w_k ⊙ g_k."""
    weights = aggregation_weights(flows, rule)
    return sum(weights[k] * g.to(torch.float32) for k, g in enumerate(flows))


def flow_differences(
    model: FlowModel,
    x_src: torch.Tensor,
    latents: list[torch.Tensor],
    conditions: list[Conditioning],
    sigma: torch.Tensor,
    prompts: EditPrompts,
    *,
    src_guidance: float,
    tar_guidance: float,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """v(z_tar,k; condition k) − v(z_src,k; source) for each flow k, each with its own noise draw, in one model call."""
    points = [coupled_points(x_src, latent, sigma, model.noise_like(x_src, generator)) for latent in latents]
    queries = []
    for (z_src, z_tar), condition in zip(points, conditions):
        queries += [
            VelocityQuery(z_src, prompts.source, prompts.negative, src_guidance),
            VelocityQuery(z_tar, condition, prompts.negative, tar_guidance),
        ]
    velocities = model.velocities(sigma, queries)
    return [
        v_tar.to(torch.float32) - v_src.to(torch.float32) for v_src, v_tar in zip(velocities[::2], velocities[1::2])
    ]


def decomposition_phase(
    model: FlowModel,
    x_src: torch.Tensor,
    sigmas: torch.Tensor,
    split_steps: range,
    aggregation_step: int | None,
    prompts: EditPrompts,
    sub_prompts: list[Conditioning],
    *,
    projection: bool,
    aggregation: Aggregation,
    src_guidance: float,
    tar_guidance: float,
    generator: torch.Generator,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """SplitFlow's own steps: returns the latent plain FlowEdit continues from.

    Over `split_steps`, N + 1 FlowEdit flows (the sub-prompts, then the full target) each move with their own
    noise. Then LTP (or, without `projection`, the plain mean of the sub-prompt latents) merges them, and the
    `aggregation_step` moves the merged latent once with the aggregate of the sub-prompts' differences."""
    total = len(sigmas) - 1
    difference = dict(src_guidance=src_guidance, tar_guidance=tar_guidance, generator=generator)
    conditions = [*sub_prompts, prompts.target]
    latents = [x_src] * len(conditions)
    for i in split_steps:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        flows = flow_differences(model, x_src, latents, conditions, sigma, prompts, **difference)
        latents = [euler_update(x, sigma_next - sigma, g).to(x_src.dtype) for x, g in zip(latents, flows)]
        if callback is not None:
            callback(Step(i + 1, total, latents[-1], latents[-1]))
    subs = latents[:-1]
    merged = (
        trajectory_projection(subs, latents[-1])
        if projection
        else torch.stack([x.to(torch.float32) for x in subs]).mean(dim=0)
    ).to(x_src.dtype)
    if aggregation_step is None:
        return merged
    sigma, sigma_next = sigmas[aggregation_step], sigmas[aggregation_step + 1]
    flows = flow_differences(model, x_src, [merged] * len(sub_prompts), sub_prompts, sigma, prompts, **difference)
    merged = euler_update(merged, sigma_next - sigma, aggregate(flows, aggregation)).to(x_src.dtype)
    if callback is not None:
        callback(Step(aggregation_step + 1, total, merged, merged))
    return merged


def splitflow(
    model: FlowModel,
    x_src: torch.Tensor,
    sigmas: torch.Tensor,
    prompts: EditPrompts,
    sub_prompts: list[Conditioning],
    *,
    n_max: int,
    n_dec: int,
    n_min: int = 0,
    n_avg: int = 1,
    projection: bool = True,
    aggregation: Aggregation = "vfa",
    src_guidance: float,
    tar_guidance: float,
    generator: torch.Generator,
    solver: Solver = EULER,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Edit like `flowedit`, with the steps T − i ≥ n_dec split over the sub-prompts and T − i = n_dec − 1 the
    aggregation step. n_dec above n_max + 1 is plain FlowEdit (n_avg applies to FlowEdit's steps only)."""
    if not sub_prompts:
        raise ValueError("SplitFlow needs at least one sub-prompt")
    if n_avg < 1:
        raise ValueError(f"n_avg must be at least 1, got {n_avg}")
    if n_min > n_max:
        raise ValueError(f"n_min ({n_min}) must not exceed n_max ({n_max})")
    if n_max <= 0:
        return x_src.clone()
    sigmas = sigmas.to(device=x_src.device, dtype=torch.float32)
    steps = len(sigmas) - 1
    first, tail = active_steps(steps, n_max, n_min)
    last_split = min(tail - 1, steps - n_dec)  # the step T − i = n_dec
    aggregation_index = last_split + 1
    edited = x_src
    if aggregation_index >= first:
        edited = decomposition_phase(
            model,
            x_src,
            sigmas,
            range(first, last_split + 1),
            aggregation_index if aggregation_index < tail else None,
            prompts,
            sub_prompts,
            projection=projection,
            aggregation=aggregation,
            src_guidance=src_guidance,
            tar_guidance=tar_guidance,
            generator=generator,
            callback=callback,
        )
    edited = flowedit_steps(
        model,
        x_src,
        edited,
        sigmas,
        range(max(first, aggregation_index + 1), tail),
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


@node(
    "SplitFlow",
    category="editors",
    inputs=[*EDIT_INPUTS, Input("encoder", SocketType.TEXT_ENCODER, "Encodes the sub-prompts"), TAIL_SOLVER],
    outputs=[EDITED_OUT],
)
class SplitFlowNode(Node):
    """Edit several attributes at once: FlowEdit with the target split into one sub-prompt per change."""

    class Params(NodeParams):
        sub_prompts: list[str] = Field(
            ...,
            min_length=1,
            max_length=MAX_SUB_PROMPTS,
            description=(
                "The target split into 1–3 prompts, each the source with one change made (Decompose Prompt writes "
                "them)."
            ),
            json_schema_extra={"widget": "list"},
        )
        n_max: int | None = n_max_field()
        n_dec: int | None = Field(
            None,
            ge=0,
            le=1000,
            description=(
                "The sub-prompt flows run until this many steps remain, are merged, then FlowEdit finishes: lower "
                f"gives the sub-prompts more steps. Blank: the model's default ({per_model(N_DEC_DEFAULTS)})."
            ),
        )
        projection: bool = Field(
            True,
            description="Merge the sub-prompt flows by projecting them onto the full target's (LTP); off: plain mean.",
        )
        aggregation: Aggregation = Field(
            "vfa",
            description=(
                "How the merge step weighs the sub-prompt flows: vfa (the authors': agreeing flows weigh more), "
                "mean, or distinct (disagreeing flows weigh more)."
            ),
        )
        n_min: int = Field(
            0,
            ge=0,
            le=1000,
            description=("Finish with this many plain sampling steps on the target prompt. 0: edit to the end."),
        )
        n_avg: int = Field(
            1,
            ge=1,
            le=32,
            description="Noise draws averaged per FlowEdit step after the merge (each split flow draws once per step).",
        )
        src_guidance: float | None = source_guidance_field()
        tar_guidance: float | None = target_guidance_field()
        seed: int = seed_field(42, "The seed of the noise the edit draws.")
        preview_every: int = preview_every_field()

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        problems = []
        if params.n_max is not None and params.n_min > params.n_max:
            problems.append(("n_min", f"n_min ({params.n_min}) must not exceed n_max ({params.n_max})"))
        if any(not text.strip() for text in params.sub_prompts):
            problems.append(("sub_prompts", "a sub-prompt is empty; remove it or write the change it makes"))
        return problems

    def run(
        self,
        ctx: NodeContext,
        params: Params,
        model: FlowModel,
        source_latent: Latent,
        source: Conditioning,
        target: Conditioning,
        sigmas: torch.Tensor,
        encoder: TextEncoder,
        negative: Conditioning | None = None,
        solver: Solver | None = None,
    ) -> dict[str, Any]:
        for field, message in self.check(params):
            raise NodeError(message, field=field)
        chosen = model_defaults(FLOWEDIT_DEFAULTS, model, params)
        n_dec = N_DEC_DEFAULTS[model.defaults_key] if params.n_dec is None else params.n_dec
        if params.n_min > chosen.n_max:
            raise NodeError(
                f"n_min ({params.n_min}) must not exceed n_max ({chosen.n_max}, the model's default)", field="n_min"
            )
        if encoder.family != model.family:
            raise NodeError(
                f"the encoder is from a {encoder.family} model, but the model is {model.family}",
                field="encoder",
                hint="wire everything from the same Load Flow Model node",
            )
        prompts = EditPrompts(source, target, negative)
        check_edit_inputs(model, source_latent, prompts, chosen.src_guidance, chosen.tar_guidance)
        ctx.record_seed("seed", params.seed)
        sub_prompts = [encoder.encode([text]) for text in params.sub_prompts]
        x_src = source_latent.samples.to(model.device, model.dtype)
        with torch.inference_mode():
            edited = splitflow(
                model,
                x_src,
                sigmas,
                prompts,
                sub_prompts,
                n_max=chosen.n_max,
                n_dec=n_dec,
                n_min=params.n_min,
                n_avg=params.n_avg,
                projection=params.projection,
                aggregation=params.aggregation,
                src_guidance=chosen.src_guidance,
                tar_guidance=chosen.tar_guidance,
                generator=torch.Generator("cpu").manual_seed(params.seed),
                solver=solver or EULER,
                callback=step_progress(ctx, model, params.preview_every),
            )
        return {"latent": Latent(edited, model.family)}

"""FlowChef (Patel et al., ICCV 2025; docs/algorithms.md, "FlowChef"): steering sampling by gradient skipping, and the FlowChef
node (its inverse problems' degradation operators live in nodes.degrade).

Sampling starts from pure noise at σ = 1; the source image enters only through a loss. At each guided step
the velocity v is computed once and frozen, a few gradient steps pull the clean estimate x̂0 = x − σ·v
towards the objective and land on x directly (dx̂0/dx = I, so nothing is backpropagated through the
transformer), then the Euler step reuses the same v. What the objective keeps depends on the task:

- edit: the source latent everywhere for the first `source_steps`, then only outside the mask M, while
  masked CFG v = v_t + s·M⊙(v_t − v_s) pushes the inside from the source prompt towards the target;
- inpaint: the source latent outside the mask, with one prompt and no masked CFG;
- inverse_problem: a degraded observation y = A(x). Super-resolution and deblurring compare A(D(x̂0)) with y
  in pixels, backpropagating through the VAE decoder D only; box inpainting is inpaint with a box mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from nodes.degrade import (
    Degradation,
    OperatorName,
    blur_kernel_field,
    blur_kernel_problems,
    blur_sigma_field,
    box_size_field,
    centre_box,
    factor_field,
    operator_field,
)
from nodes.editors.common import model_defaults, per_model_defaults
from nodes.fields import preview_every_field, seed_field
from nodes.models.base import FlowModel, VelocityQuery
from nodes.models.components import VAE, Conditioning, Latent
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.sampling.sampler import require_family, step_progress
from nodes.sampling.solvers import Step, StepCallback, clean_estimate, euler_update
from nodes.types import SocketType

Task = Literal["edit", "inpaint", "inverse_problem"]
OptimizerName = Literal["sgd", "adam"]

Objective = Callable[[torch.Tensor, int], torch.Tensor]
"""objective(x0_estimate, step_index) → the scalar loss a guided step lowers (differentiable in x0_estimate)."""

# A latent cell belongs to the mask when more than this fraction of its pixels do (the reference's > 0.1).
MASK_THRESHOLD = 0.1
# Images are cropped to a multiple of this at the top-left before encoding (docs/algorithms.md, "Conventions").
CROP = 16


# The latent size the lr values are stated at: SD3 and FLUX at 1024×1024 px (16 channels × 128 × 128), where the
# reference's values were set. An SGD step's pull is scaled to it (see `sgd_lr`).
REFERENCE_LATENT_ELEMENTS = 16 * 128 * 128

Kind = Literal["edit", "inpaint", "restore"]
"""Which row of defaults a run takes: edit; inpaint (and box inpainting); restore (super-resolution, deblurring)."""


@dataclass(frozen=True)
class FlowChefDefaults:
    lr: float
    opt_iters: int
    optimizer: OptimizerName
    guidance: float
    source_steps: int = 0
    true_cfg: float = 1.0


# Per kind of task, per family (docs/algorithms.md, "FlowChef", where each row's source is stated). FLUX: the
# reference demo's FLUX.1-dev rows, and for restoring its InstaFlow inverse-problem row (Adam, CFG off). SD3 has no
# reference code: FLUX's rows by analogy, with SD3's CFG in place of FLUX's embedded guidance. The embedded rows
# are the ones bench/flowchef_sweep.py chose on its tuning scenes.
DEFAULTS: dict[Kind, dict[str, FlowChefDefaults]] = {
    "edit": {
        "sd3": FlowChefDefaults(lr=0.5, opt_iters=1, optimizer="sgd", guidance=4.0, source_steps=20, true_cfg=2.0),
        "flux": FlowChefDefaults(lr=0.5, opt_iters=1, optimizer="sgd", guidance=0.0, source_steps=20, true_cfg=2.0),
        "embedded": FlowChefDefaults(lr=6.0, opt_iters=1, optimizer="sgd", guidance=4.0, source_steps=7, true_cfg=1.0),
    },
    "inpaint": {
        "sd3": FlowChefDefaults(lr=0.5, opt_iters=1, optimizer="sgd", guidance=4.0),
        "flux": FlowChefDefaults(lr=0.5, opt_iters=1, optimizer="sgd", guidance=0.5),
        "embedded": FlowChefDefaults(lr=40.0, opt_iters=1, optimizer="sgd", guidance=1.0),
    },
    "restore": {
        "sd3": FlowChefDefaults(lr=0.02, opt_iters=1, optimizer="adam", guidance=1.0),
        "flux": FlowChefDefaults(lr=0.02, opt_iters=1, optimizer="adam", guidance=1.0),
        "embedded": FlowChefDefaults(lr=0.05, opt_iters=5, optimizer="adam", guidance=2.0),
    },
}


def defaults_kind(task: Task, operator: OperatorName | None) -> Kind:
    """The row of DEFAULTS a task (with its operator, for inverse problems) takes."""
    if task == "inverse_problem":
        return "inpaint" if operator == "box_inpaint" else "restore"
    return task


def defaults_summary(attribute: str, kinds: tuple[Kind, ...] = ("edit", "inpaint", "restore")) -> str:
    """'edit SD3 0.5, FLUX 0.5, embedded 6; inpaint …': the defaults of one param, for its description."""
    return "; ".join(f"{kind} {per_model_defaults(DEFAULTS[kind], attribute)}" for kind in kinds)


def sgd_lr(lr: float, latent_elements: int) -> float:
    """The SGD step size that pulls each element of a latent of this size as hard as `lr` does at the reference
    size: the loss is a mean over the image's latent elements, so its gradient per element shrinks as they grow."""
    return lr * latent_elements / REFERENCE_LATENT_ELEMENTS


# ---- FlowChef --------------------------------------------------------------------------------------------------


def masked_cfg(v_target: torch.Tensor, v_source: torch.Tensor, region: torch.Tensor, scale: float) -> torch.Tensor:
    """v_t + scale·M⊙(v_t − v_s): the target flow pushed away from the source inside the region, v_t outside it."""
    return v_target + scale * region.to(v_target.dtype) * (v_target - v_source)


def per_image_mean(values: torch.Tensor) -> torch.Tensor:
    """The sum over the batch of each image's mean: a batch of B images steps each as it would be stepped alone."""
    return values.flatten(1).mean(dim=1).sum()


def masked_mse(x0: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, loss_weight: float) -> torch.Tensor:
    """loss_weight·mean(weight⊙(x0 − y)²) per image; the mean counts every element, masked-out zeros too (as the
    reference)."""
    return loss_weight * per_image_mean(weight * (x0 - y).square())


def gradient_skip_step(
    x: torch.Tensor,
    v: torch.Tensor,
    sigma: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor],
    *,
    iters: int,
    lr: float,
    optimizer: OptimizerName,
) -> torch.Tensor:
    """x after `iters` optimiser steps on loss(x − σ·v) with v frozen (gradient skipping), in fp32, cast back.

    The gradient is taken on a leaf copy of x only, so nothing flows into whatever produced v. Adam starts
    with fresh moments at every call, as the reference re-creates it every sampling step."""
    frozen = v.detach().to(torch.float32)
    latent = x.detach().to(torch.float32).clone().requires_grad_(True)
    adam = torch.optim.Adam([latent], lr=lr) if optimizer == "adam" else None
    with torch.enable_grad():
        for _ in range(iters):
            # autograd.grad, not backward: the VAE's weights (inverse problems) must not collect gradients.
            (grad,) = torch.autograd.grad(loss(latent - sigma * frozen), latent)
            if adam is None:
                with torch.no_grad():
                    latent -= lr * grad
            else:
                latent.grad = grad
                adam.step()
    return latent.detach().to(x.dtype)


def latent_region(mask: torch.Tensor, latent_shape: tuple[int, ...], factor: int) -> torch.Tensor:
    """A pixel MASK [B, H, W] → [B, 1, h, w] of 0/1 at latent resolution: a cell is in the region when more than
    MASK_THRESHOLD of its pixels are. The mask is cropped at the top-left as its image was before encoding."""
    batch, _, h, w = latent_shape
    height, width = mask.shape[-2:]
    if not (0 <= height - h * factor < CROP and 0 <= width - w * factor < CROP):
        raise NodeError(
            f"the mask is {width}×{height} px, but the latent is of a {w * factor}×{h * factor} px image",
            field="mask",
            hint="make the mask from the image the latent was encoded from",
        )
    if mask.shape[0] not in (1, batch):
        raise NodeError(f"{mask.shape[0]} masks for a batch of {batch}", field="mask")
    pixels = mask[:, None, : h * factor, : w * factor].to(torch.float32)
    cells = F.interpolate(pixels, size=(h, w), mode="area")
    return (cells > MASK_THRESHOLD).to(torch.float32).expand(batch, 1, h, w)


def decode_differentiable(vae: VAE, latents: torch.Tensor) -> torch.Tensor:
    """Model-space latents → images in [0, 1], unclamped and with the graph kept (a pixel loss reaches the latents)."""
    inner = vae.vae
    image = inner.decode(
        latents.to(inner.device, inner.dtype) / vae.scaling_factor + vae.shift_factor, return_dict=False
    )[0]
    return image.to(torch.float32) / 2 + 0.5


def required_inputs(task: Task, operator: OperatorName | None) -> tuple[str, ...]:
    """The optional inputs a task (with its operator, for inverse problems) cannot run without."""
    if task == "inverse_problem":
        return ("source_latent",) if operator == "box_inpaint" else ("vae", "measurement")
    return ("source_latent", "mask") if task == "inpaint" else ("source_latent",)


INPUT_HINTS = {
    "source_latent": "wire VAE Encode of the source image",
    "mask": "wire a mask of the region to fill (Box Mask, Object Mask, …)",
    "vae": "wire the VAE output of Load Flow Model",
    "measurement": "wire the degraded image (Degrade Image makes one from a clean image)",
}


@dataclass(frozen=True)
class Problem:
    """What a FlowChef run steers towards: the output latent's shape, the objective, and the masked-CFG region."""

    shape: tuple[int, ...]
    objective: Objective
    cfg_region: torch.Tensor | None  # [B, 1, h, w]; only an edit has one


def restored_size(degradation: Degradation, measurement: torch.Tensor) -> tuple[int, int]:
    """(height, width) of the restored image: the measurement's × the operator's scale, cropped to a multiple of 16."""
    height, width = (side * degradation.scale // CROP * CROP for side in measurement.shape[-2:])
    if height == 0 or width == 0:
        raise NodeError(
            f"the measurement is {measurement.shape[-1]}×{measurement.shape[-2]} px; restored, it must "
            f"be at least {CROP}×{CROP}",
            field="measurement",
        )
    return height, width


def measurement_problem(
    model: FlowModel, degradation: Degradation, vae: VAE, measurement: torch.Tensor, loss_weight: float
) -> Problem:
    """Super-resolution and deblurring: loss_weight·MSE(A(D(x̂0)), y) in pixels, through the VAE decoder."""
    height, width = restored_size(degradation, measurement)
    scale = degradation.scale
    # A clone: a value made under inference mode cannot take part in autograd.
    y = measurement[..., : height // scale, : width // scale].to(model.device, torch.float32).clone()

    def objective(x0: torch.Tensor, step: int) -> torch.Tensor:
        return loss_weight * per_image_mean(
            (degradation.apply(decode_differentiable(vae, x0)).to(y.device) - y).square()
        )

    return Problem(model.latent_shape(y.shape[0], height, width), objective, None)


def latent_problem(
    model: FlowModel,
    task: Task,
    source_latent: torch.Tensor,
    mask: torch.Tensor | None,
    source_steps: int,
    loss_weight: float,
) -> Problem:
    """edit, inpaint and box inpainting: a masked MSE to the source latent (the mask: 1 = the region to change)."""
    y = source_latent.to(model.device, torch.float32).clone()
    shape = tuple(y.shape)
    region = (
        latent_region(mask.to(model.device), shape, model.vae_scale_factor)
        if mask is not None
        else torch.zeros(shape[0], 1, *shape[2:], device=model.device)
    )
    known = 1.0 - region
    if task != "edit":
        return Problem(shape, lambda x0, step: masked_mse(x0, y, known, loss_weight), None)
    everywhere = torch.ones_like(region)

    def objective(x0: torch.Tensor, step: int) -> torch.Tensor:
        return masked_mse(x0, y, everywhere if step < source_steps else known, loss_weight)

    return Problem(shape, objective, region)


def build_problem(
    model: FlowModel,
    task: Task,
    *,
    source_latent: torch.Tensor | None,
    mask: torch.Tensor | None,
    degradation: Degradation | None,
    vae: VAE | None,
    measurement: torch.Tensor | None,
    source_steps: int,
    loss_weight: float,
) -> Problem:
    """The task's problem, or a NodeError naming a missing input."""
    if task == "inverse_problem" and degradation is None:
        raise ValueError("an inverse problem needs its degradation operator")
    operator = degradation.operator if task == "inverse_problem" and degradation is not None else None
    given = {"source_latent": source_latent, "mask": mask, "vae": vae, "measurement": measurement}
    for name in required_inputs(task, operator):
        if given[name] is None:
            what = operator.replace("_", " ") if operator else task
            raise NodeError(f"{what} needs the {name} input", field=name, hint=INPUT_HINTS[name])
    # From here on, required_inputs has seen to it that what the task reads is not None.
    if operator in ("super_resolution", "gaussian_deblur"):
        return measurement_problem(model, degradation, vae, measurement, loss_weight)
    if operator == "box_inpaint" and mask is None:
        height, width = (side * model.vae_scale_factor for side in source_latent.shape[-2:])
        mask = centre_box(height, width, degradation.box_size)[None]
    return latent_problem(model, task, source_latent, mask, source_steps, loss_weight)


def flowchef(
    model: FlowModel,
    sigmas: torch.Tensor,
    target: Conditioning,
    *,
    task: Task,
    source: Conditioning | None = None,
    negative: Conditioning | None = None,
    source_latent: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    degradation: Degradation | None = None,
    vae: VAE | None = None,
    measurement: torch.Tensor | None = None,
    max_steps: int,
    source_steps: int,
    opt_iters: int,
    lr: float,
    optimizer: OptimizerName,
    loss_weight: float,
    guidance: float,
    true_cfg: float,
    generator: torch.Generator,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Sample from noise along `sigmas` (T+1 levels) with the target prompt, steered by the task's objective.

    `mask` is a pixel MASK (1 = the region to edit or fill); `measurement` an IMAGE degraded by `degradation`.
    The first min(max_steps, T) steps are steered; `lr` is stated at the reference latent size (`sgd_lr`; Adam's
    steps are the same size at every latent size already); `guidance` is SD3's CFG scale (with `negative`) or FLUX's
    embedded guidance; masked CFG (edit only, against the `source` prompt) is on when true_cfg > 1.
    Raises NodeError naming the input at fault when one is missing or does not fit."""
    problem = build_problem(
        model,
        task,
        source_latent=source_latent,
        mask=mask,
        degradation=degradation,
        vae=vae,
        measurement=measurement,
        source_steps=source_steps,
        loss_weight=loss_weight,
    )
    steps = len(sigmas) - 1
    steered = min(max_steps, steps)
    region = problem.cfg_region
    use_cfg = steered > 0 and true_cfg > 1 and region is not None and bool(region.any())
    if use_cfg and source is None:
        raise NodeError(
            "masked CFG (true_cfg above 1 with a mask) needs the source prompt",
            field="source",
            hint="wire the source prompt's conditioning, or set true_cfg to 1",
        )
    if model.family == "sd3" and guidance > 1 and negative is None:
        raise NodeError(
            "SD3 guidance above 1 needs the negative conditioning",
            field="negative",
            hint="wire TextEncode's negative output (an empty negative prompt is fine)",
        )
    sigmas = sigmas.to(device=model.device, dtype=torch.float32)
    latent_elements = math.prod(problem.shape[1:])
    step_size = lr if optimizer == "adam" else sgd_lr(lr, latent_elements)
    x = model.noise_like(torch.empty(problem.shape, dtype=model.dtype, device=model.device), generator)
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        queries = [VelocityQuery(x, target, negative, guidance)]
        if use_cfg and i < steered:
            queries.append(VelocityQuery(x, source, negative, guidance))
        with torch.no_grad():
            velocities = model.velocities(sigma, queries)
        v = velocities[0] if len(velocities) == 1 else masked_cfg(velocities[0], velocities[1], region, true_cfg)
        if i < steered and opt_iters > 0:
            x = gradient_skip_step(
                x, v, sigma, partial(problem.objective, step=i), iters=opt_iters, lr=step_size, optimizer=optimizer
            )
        if callback is not None:
            callback(Step(i + 1, steps, x, clean_estimate(x, sigma, v)))
        x = euler_update(x, sigma_next - sigma, v)
    return x


# ---- the nodes -------------------------------------------------------------------------------------------------


@node(
    "FlowChef",
    category="editors",
    inputs=[
        Input("model", SocketType.FLOW_MODEL),
        Input("target", SocketType.CONDITIONING, "The prompt to sample: the edit, the fill, or the clean image"),
        Input(
            "source",
            SocketType.CONDITIONING,
            "edit: a prompt describing the source (masked CFG pushes away from it)",
            optional=True,
        ),
        Input("negative", SocketType.CONDITIONING, "SD3's CFG negative (TextEncode's negative output)", optional=True),
        Input(
            "source_latent", SocketType.LATENT, "edit, inpaint, box inpainting: the encoded source image", optional=True
        ),
        Input("mask", SocketType.MASK, "edit: the region to change; inpaint/box: the region to fill", optional=True),
        Input("vae", SocketType.VAE, "Super-resolution and deblurring compare decoded pixels", optional=True),
        Input("measurement", SocketType.IMAGE, "Super-resolution and deblurring: the degraded image", optional=True),
        Input("sigmas", SocketType.SIGMAS, "The schedule: its step count is T"),
    ],
    outputs=[Output("latent", SocketType.LATENT, "The steered latent")],
)
class FlowChefNode(Node):
    """Edit, inpaint or restore an image by steering sampling from noise towards it (FlowChef): no inversion and
    no backpropagation through the model."""

    class Params(NodeParams):
        task: Task = Field(
            "edit",
            description=(
                "edit: redraw the masked region to the target prompt and keep the rest; inpaint: fill the masked region "
                "from the prompt; inverse_problem: restore the degraded image the operator describes."
            ),
        )
        operator: OperatorName = operator_field()
        factor: Literal[2, 4] = factor_field()
        blur_kernel: int = blur_kernel_field()
        blur_sigma: float = blur_sigma_field()
        box_size: int = box_size_field()
        max_steps: int | None = Field(
            None,
            ge=0,
            le=1000,
            description="Steer only the first N steps, then sample freely (lets the prompt shape fine detail). Blank: every step.",
        )
        source_steps: int | None = Field(
            None,
            ge=0,
            le=1000,
            description=(
                "edit: for this many first steps the whole image is pulled to the source (keeps the layout), then only "
                f"outside the mask. Blank: {defaults_summary('source_steps', ('edit',))}."
            ),
        )
        opt_iters: int | None = Field(
            None,
            ge=0,
            le=100,
            description=(
                "Gradient steps per sampling step: more holds the result closer to the source or measurement. "
                f"Blank: {defaults_summary('opt_iters')}."
            ),
        )
        lr: float | None = Field(
            None,
            ge=0.0,
            le=1000.0,
            json_schema_extra={"step": 0.05},
            description=(
                "Gradient step size, the same pull at every image size (as at 1024 px SD3/FLUX); too high overshoots. "
                f"Blank: {defaults_summary('lr')}."
            ),
        )
        optimizer: OptimizerName | None = Field(
            None,
            description=(
                "sgd: steps in proportion to the error; adam: steps of a fixed size (set lr near 0.02). "
                f"Blank: {defaults_summary('optimizer')}."
            ),
        )
        loss_weight: float = Field(
            1000.0,
            ge=0.0,
            le=1e6,
            description="Multiplies the loss, and so each SGD step: higher holds closer to the source or measurement.",
        )
        guidance: float | None = Field(
            None,
            ge=0.0,
            le=100.0,
            json_schema_extra={"step": 0.5},
            description=(
                "SD3: CFG scale with the negative (on above 1); FLUX-dev: embedded guidance; higher follows the prompt "
                f"more. Blank: {defaults_summary('guidance')}."
            ),
        )
        true_cfg: float | None = Field(
            None,
            ge=0.0,
            le=100.0,
            json_schema_extra={"step": 0.5},
            description=(
                "edit: masked CFG pushing the masked region from the source prompt to the target; 1 or below is off. "
                f"Blank: {defaults_summary('true_cfg', ('edit',))}."
            ),
        )
        seed: int = seed_field(0, "The seed of the starting noise; another seed, another result.")
        preview_every: int = preview_every_field()

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        if params.task != "inverse_problem":
            return []
        return blur_kernel_problems(params.operator, params.blur_kernel)

    def run(
        self,
        ctx: NodeContext,
        params: Params,
        model: FlowModel,
        target: Conditioning,
        sigmas: torch.Tensor,
        source: Conditioning | None = None,
        negative: Conditioning | None = None,
        source_latent: Latent | None = None,
        mask: torch.Tensor | None = None,
        vae: VAE | None = None,
        measurement: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        for field, message in self.check(params):
            raise NodeError(message, field=field)
        require_family(model, target=target, source=source, negative=negative, source_latent=source_latent, vae=vae)
        kind = defaults_kind(params.task, params.operator)
        chosen = model_defaults(DEFAULTS[kind], model, params)
        ctx.record_seed("seed", params.seed)
        degradation = Degradation(
            params.operator, params.factor, params.blur_kernel, params.blur_sigma, params.box_size
        )
        result = flowchef(
            model,
            sigmas,
            target,
            task=params.task,
            source=source,
            negative=negative,
            source_latent=None if source_latent is None else source_latent.samples,
            mask=mask,
            degradation=degradation if params.task == "inverse_problem" else None,
            vae=vae,
            measurement=measurement,
            max_steps=len(sigmas) - 1 if params.max_steps is None else params.max_steps,
            source_steps=chosen.source_steps,
            opt_iters=chosen.opt_iters,
            lr=chosen.lr,
            optimizer=chosen.optimizer,
            loss_weight=params.loss_weight,
            guidance=chosen.guidance,
            true_cfg=chosen.true_cfg,
            generator=torch.Generator("cpu").manual_seed(params.seed),
            callback=step_progress(ctx, model, params.preview_every),
        )
        return {"latent": Latent(result, model.family)}

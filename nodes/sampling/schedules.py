"""Noise schedules (SIGMAS) for rectified-flow sampling, and the schedule nodes.

Convention (docs/algorithms.md, "Conventions"): x_σ = (1−σ)·x0 + σ·ε, v = ε − x0, σ from 1 (noise) to 0 (data). A schedule is
a 1-D float32 CPU tensor of T+1 descending values ending in 0; step i goes from sigmas[i] to sigmas[i+1].
Schedules never know about solvers (k-diffusion style), so any schedule composes with any solver.

Every model-style schedule is computed by diffusers' own `FlowMatchEulerDiscreteScheduler`
(nodes.models.schedules), so it equals what the pipelines use by construction; only `custom_sigmas` (typed
by hand) is built here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from pydantic import Field

from nodes.fields import MAX_SIDE
from nodes.models.base import FlowModel
from nodes.models.schedules import euler_scheduler_sigmas, flux_mu
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.types import SocketType

MAX_STEPS = 1000
SIGMAS_OUT = Output("sigmas", SocketType.SIGMAS, "Noise levels from 1 down to 0, one step between each pair")


def _check_steps(steps: int) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")


def linear_sigmas(steps: int) -> torch.Tensor:
    """Evenly spaced σ from 1 to 1/1000, then 0: `FlowMatchEulerDiscreteScheduler(shift=1.0)`."""
    _check_steps(steps)
    return euler_scheduler_sigmas({"shift": 1.0}, steps)


def shifted_sigmas(steps: int, shift: float) -> torch.Tensor:
    """The static shift σ ← s·σ/(1+(s−1)·σ) of `FlowMatchEulerDiscreteScheduler(shift=s)` (SD3: s=3).

    diffusers shifts sigma_min twice (last σ 0.008929 for s=3, T=50), and so does this."""
    _check_steps(steps)
    if not shift > 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return euler_scheduler_sigmas({"shift": shift}, steps)


def flux_sigmas(
    steps: int,
    image_seq_len: int,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
) -> torch.Tensor:
    """FluxPipeline's schedule: linspace(1, 1/T, T) under the exponential time shift with mu from the token count."""
    _check_steps(steps)
    if image_seq_len < 1:
        raise ValueError(f"image_seq_len must be at least 1, got {image_seq_len}")
    if max_seq_len == base_seq_len:
        raise ValueError("max_seq_len and base_seq_len must differ (the shift is interpolated between them)")
    mu = flux_mu(image_seq_len, base_seq_len, max_seq_len, base_shift, max_shift)
    return euler_scheduler_sigmas({"use_dynamic_shifting": True}, steps, mu=mu, spaced_by_pipeline=True)


def custom_sigmas(values: Sequence[float]) -> torch.Tensor:
    """A hand-written schedule: strictly descending values in [0, 1]; a final 0 is appended if missing."""
    if len(values) == 0:
        raise ValueError("a schedule needs at least one noise level")
    for value in values:
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"noise levels must lie in [0, 1], got {value}")
    for earlier, later in zip(values, values[1:]):
        if not later < earlier:
            raise ValueError(f"noise levels must strictly decrease, but {later} follows {earlier}")
    sigmas = list(values) if values[-1] == 0.0 else [*values, 0.0]
    if len(sigmas) < 2:
        raise ValueError("a schedule needs a level above 0 to start from")
    if len(sigmas) - 1 > MAX_STEPS:
        raise ValueError(f"a schedule may have at most {MAX_STEPS} steps, got {len(sigmas) - 1}")
    return torch.tensor(sigmas, dtype=torch.float32)


def parse_sigmas(text: str) -> list[float]:
    """Comma-separated numbers (spaces allowed) → floats; a clear error names the entry that is not a number."""
    parts = [part.strip() for part in text.split(",")]
    if parts and parts[-1] == "":
        parts.pop()  # tolerate a trailing comma
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(f"{part!r} is not a number") from None
    return values


# ---- nodes -------------------------------------------------------------------------------------------------------


def _steps_field(default: int = 28) -> Any:
    return Field(default, ge=1, le=MAX_STEPS, description="Number of sampling steps.")


def _schedule(build: Callable[[], torch.Tensor], field: str) -> dict[str, Any]:
    try:
        return {"sigmas": build()}
    except ValueError as error:
        raise NodeError(str(error), field=field) from None


@node("LinearSchedule", category="sampling", outputs=[SIGMAS_OUT])
class LinearSchedule(Node):
    """Evenly spaced noise levels (a flow scheduler with shift 1, e.g. FLUX.1-schnell)."""

    class Params(NodeParams):
        steps: int = _steps_field()

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        return _schedule(lambda: linear_sigmas(params.steps), "steps")


@node("ShiftedSchedule", category="sampling", outputs=[SIGMAS_OUT])
class ShiftedSchedule(Node):
    """Noise levels with a static shift that spends more steps at high noise (SD3 and SD3.5 use 3.0)."""

    class Params(NodeParams):
        steps: int = _steps_field()
        shift: float = Field(
            3.0,
            gt=0,
            le=100,
            description="Above 1 spends more steps at high noise; 1 is even.",
            json_schema_extra={"step": 0.1},
        )

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        return _schedule(lambda: shifted_sigmas(params.steps, params.shift), "shift")


@node("FluxDynamicShiftSchedule", category="sampling", outputs=[SIGMAS_OUT])
class FluxDynamicShiftSchedule(Node):
    """FLUX.1-dev's schedule: the shift grows with the image size (more steps at high noise for big images)."""

    class Params(NodeParams):
        steps: int = _steps_field()
        width: int = Field(1024, ge=16, le=MAX_SIDE, description="Image width in pixels.")
        height: int = Field(1024, ge=16, le=MAX_SIDE, description="Image height in pixels.")
        base_shift: float = Field(
            0.5, ge=0, le=10, description="Shift (mu) at the base token count.", json_schema_extra={"step": 0.05}
        )
        max_shift: float = Field(
            1.15, ge=0, le=10, description="Shift (mu) at the max token count.", json_schema_extra={"step": 0.05}
        )
        base_seq_len: int = Field(256, ge=1, le=1_000_000, description="Token count where the shift is base_shift.")
        max_seq_len: int = Field(4096, ge=1, le=1_000_000, description="Token count where the shift is max_shift.")

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        if params.max_seq_len <= params.base_seq_len:
            return [
                (
                    "max_seq_len",
                    f"max_seq_len ({params.max_seq_len}) must be above base_seq_len ({params.base_seq_len})",
                )
            ]
        return []

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        for field, message in self.check(params):
            raise NodeError(message, field=field)
        # FLUX packs 2×2 latent cells (8 px each) into one token: (H/16)·(W/16) tokens.
        image_seq_len = (params.height // 16) * (params.width // 16)
        return _schedule(
            lambda: flux_sigmas(
                params.steps,
                image_seq_len,
                params.base_shift,
                params.max_shift,
                params.base_seq_len,
                params.max_seq_len,
            ),
            "steps",
        )


@node(
    "ModelSchedule",
    category="sampling",
    inputs=[Input("model", SocketType.FLOW_MODEL, "The model to sample")],
    outputs=[SIGMAS_OUT],
)
class ModelSchedule(Node):
    """The schedule the model's own diffusers pipeline would use at this size."""

    class Params(NodeParams):
        steps: int = _steps_field()
        width: int = Field(1024, ge=16, le=MAX_SIDE, description="Image width in pixels.")
        height: int = Field(1024, ge=16, le=MAX_SIDE, description="Image height in pixels.")

    def run(self, ctx: NodeContext, params: Params, model: FlowModel) -> dict[str, Any]:
        return _schedule(
            lambda: model.default_sigmas(params.steps, params.height, params.width).to(
                device="cpu", dtype=torch.float32
            ),
            "steps",
        )


@node("CustomSchedule", category="sampling", outputs=[SIGMAS_OUT])
class CustomSchedule(Node):
    """Noise levels typed by hand, from 1 (noise) down to 0 (data)."""

    class Params(NodeParams):
        sigmas: str = Field(
            "1.0, 0.75, 0.5, 0.25, 0.0",
            min_length=1,
            max_length=20_000,
            description="Comma-separated noise levels, decreasing, between 1 and 0 (a final 0 is added if missing).",
        )

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        try:
            custom_sigmas(parse_sigmas(params.sigmas))
        except ValueError as error:
            return [("sigmas", str(error))]
        return []

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        return _schedule(lambda: custom_sigmas(parse_sigmas(params.sigmas)), "sigmas")

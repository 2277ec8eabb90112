"""ODE solvers (SOLVER) for rectified-flow sampling, the step payload every sampler reports, and the solver nodes.

A solver is one short function `(velocity_fn, x, sigmas, callback) -> x` that integrates along any schedule
(nodes.sampling.schedules), wrapped as a `Solver` value for the SOLVER socket: `sample_euler`, `sample_heun`,
`sample_midpoint`, `sample_adams_bashforth2`. The diffusers-derived solvers repeat diffusers' own float
arithmetic (fp32 state updates cast back to the velocity's dtype), so they are bit-identical to
`FlowMatchEulerDiscreteScheduler` / `FlowMatchHeunDiscreteScheduler`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nodes.registry import Node, NodeContext, NodeParams, Output, node
from nodes.types import SocketType

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""v = velocity_fn(x, sigma): the flow's velocity at x, with sigma a 0-dim float32 tensor from the schedule."""


@dataclass(frozen=True)
class Step:
    """What a sampler, editor or optimiser reports after each of its steps (or iterations).

    `done` of `total` are finished (1-based); `latent` is the state it carries on from; `x0_estimate` is the
    clean image it currently predicts, which is what a live preview shows (for an editor whose state is
    already a clean latent, the two are the same tensor)."""

    done: int
    total: int
    latent: torch.Tensor
    x0_estimate: torch.Tensor


StepCallback = Callable[[Step], None]
"""Called with each Step; it may raise to stop the loop (cancellation)."""


def euler_update(x: torch.Tensor, dsigma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x + dσ·v in fp32, cast back to v's dtype: `FlowMatchEulerDiscreteScheduler.step`'s exact float ops."""
    return (x.to(torch.float32) + dsigma * v).to(v.dtype)


def clean_estimate(x: torch.Tensor, sigma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x̂0 = x − σ·v, for previews."""
    return (x.to(torch.float32) - sigma * v).to(v.dtype)


def _check_schedule(sigmas: torch.Tensor) -> int:
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must be a 1-D tensor of at least 2 values, got shape {tuple(sigmas.shape)}")
    return sigmas.shape[0] - 1


def sample_euler(
    velocity_fn: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor, callback: StepCallback | None = None
) -> torch.Tensor:
    """Euler: x ← x + (σ_{i+1} − σ_i)·v(x, σ_i). One evaluation per step; equals diffusers' `step` bit for bit."""
    steps = _check_schedule(sigmas)
    for i in range(steps):
        v = velocity_fn(x, sigmas[i])
        x0_estimate = clean_estimate(x, sigmas[i], v)
        x = euler_update(x, sigmas[i + 1] - sigmas[i], v)
        if callback is not None:
            callback(Step(i + 1, steps, x, x0_estimate))
    return x


def _heun_derivative(sample: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    # FlowMatchHeunDiscreteScheduler forms d = (x − x̂0)/σ with x̂0 = x − v·σ: equal to v in exact arithmetic
    # but not in floating point, so the same ops are kept for bit-identical results.
    return (sample - (sample - v * sigma)) / sigma


def sample_heun(
    velocity_fn: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor, callback: StepCallback | None = None
) -> torch.Tensor:
    """Heun (trapezoidal predictor–corrector) as `FlowMatchHeunDiscreteScheduler` (s_churn=0).

    The last step is plain Euler (its corrector would call the model at σ=0, on pure data), so T steps cost
    2T−1 evaluations."""
    steps = _check_schedule(sigmas)
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        v = velocity_fn(x, sigma)
        sample = x.to(torch.float32)
        derivative = _heun_derivative(sample, v, sigma)
        dt = sigma_next - sigma
        predicted = (sample + derivative * dt).to(v.dtype)
        if i < steps - 1:
            v_next = velocity_fn(predicted, sigma_next)
            derivative_next = _heun_derivative(predicted.to(torch.float32), v_next, sigma_next)
            x = (sample + 0.5 * (derivative + derivative_next) * dt).to(v_next.dtype)
        else:
            x = predicted
        if callback is not None:
            callback(Step(i + 1, steps, x, clean_estimate(sample, sigma, v)))
    return x


def sample_midpoint(
    velocity_fn: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor, callback: StepCallback | None = None
) -> torch.Tensor:
    """Explicit midpoint: a half Euler step, then the full step with the velocity there. Two evaluations on every
    step, the last one included (its midpoint σ_{T−1}/2 is above 0, so no call at pure data): 2T in all."""
    steps = _check_schedule(sigmas)
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        sigma_mid = (sigma + sigma_next) / 2
        v = velocity_fn(x, sigma)
        half = euler_update(x, sigma_mid - sigma, v)
        v_mid = velocity_fn(half, sigma_mid)
        x0_estimate = clean_estimate(x, sigma, v)
        x = euler_update(x, sigma_next - sigma, v_mid)
        if callback is not None:
            callback(Step(i + 1, steps, x, x0_estimate))
    return x


def sample_adams_bashforth2(
    velocity_fn: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor, callback: StepCallback | None = None
) -> torch.Tensor:
    """Two-step Adams–Bashforth in σ with variable steps, one evaluation per step; the first step is Euler.

    x ← x + h·(v_i + (h/(2·h_prev))·(v_i − v_{i−1})), h = σ_{i+1} − σ_i: the velocity extrapolated linearly in σ
    to the middle of the step. Second order. Extrapolating in σ, not in log σ as DPM-Solver++(2M) does, keeps
    the correction bounded on flow schedules whose last level before 0 is tiny (the linear schedule's 0.001
    after steps of 0.25 at T=4), where a log-σ extrapolation overshoots and ends worse than Euler at 4–8 steps;
    the last step to σ=0 needs no special case."""
    steps = _check_schedule(sigmas)
    previous_v: torch.Tensor | None = None
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        v = velocity_fn(x, sigma)
        velocity = v
        if previous_v is not None:
            ratio = (sigma_next - sigma) / (2 * (sigma - sigmas[i - 1]))
            velocity = v.to(torch.float32) + ratio * (v.to(torch.float32) - previous_v.to(torch.float32))
        x0_estimate = clean_estimate(x, sigma, v)
        x = (x.to(torch.float32) + (sigma_next - sigma) * velocity).to(v.dtype)
        if callback is not None:
            callback(Step(i + 1, steps, x, x0_estimate))
        previous_v = v
    return x


@dataclass(frozen=True)
class Solver:
    """A SOLVER value: a named sampling function `sample(velocity_fn, x, sigmas, callback) -> x` and its cost."""

    name: str
    sample_fn: Callable[[VelocityFn, torch.Tensor, torch.Tensor, StepCallback | None], torch.Tensor]
    evaluations_fn: Callable[[int], int]

    def sample(
        self, velocity_fn: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor, callback: StepCallback | None = None
    ) -> torch.Tensor:
        return self.sample_fn(velocity_fn, x, sigmas, callback)

    def evaluations(self, steps: int) -> int:
        """Model evaluations for `steps` steps (a schedule of steps+1 sigmas ending in 0)."""
        return self.evaluations_fn(steps)


EULER = Solver("euler", sample_euler, lambda steps: steps)
HEUN = Solver("heun", sample_heun, lambda steps: 2 * steps - 1)
MIDPOINT = Solver("midpoint", sample_midpoint, lambda steps: 2 * steps)
ADAMS_BASHFORTH2 = Solver("adams_bashforth2", sample_adams_bashforth2, lambda steps: steps)
SOLVERS: dict[str, Solver] = {solver.name: solver for solver in (EULER, HEUN, MIDPOINT, ADAMS_BASHFORTH2)}


# ---- nodes -------------------------------------------------------------------------------------------------------

SOLVER_OUT = Output("solver", SocketType.SOLVER, "How each step moves from one noise level to the next")


def _solver_node(type_name: str, solver: Solver, doc: str) -> type[Node]:
    class SolverNode(Node):
        class Params(NodeParams):
            pass

        def run(self, ctx: NodeContext, params: NodeParams, **inputs: Any) -> dict[str, Any]:
            return {"solver": solver}

    SolverNode.__name__ = SolverNode.__qualname__ = type_name
    SolverNode.__doc__ = doc
    return node(type_name, category="sampling", outputs=[SOLVER_OUT])(SolverNode)


EulerSolver = _solver_node("EulerSolver", EULER, "Euler steps: one model call per step, first order.")
HeunSolver = _solver_node(
    "HeunSolver",
    HEUN,
    "Heun steps: two model calls per step (one on the last), second order; sharper than Euler at the same step count.",
)
MidpointSolver = _solver_node("MidpointSolver", MIDPOINT, "Midpoint steps: two model calls per step, second order.")
MultistepSolver = _solver_node(
    "MultistepSolver",
    ADAMS_BASHFORTH2,
    "Adams–Bashforth steps: one model call per step, second order by reusing the previous step's velocity.",
)

"""Noise schedules (SIGMAS) and ODE solvers (SOLVER) for rectified-flow sampling, plus their nodes.

Convention (algorithms.md §0): x_σ = (1−σ)·x0 + σ·ε, v = ε − x0, σ from 1 (noise) to 0 (data). A schedule is
a 1-D float32 CPU tensor of T+1 descending values ending in 0; step i goes from sigmas[i] to sigmas[i+1].
Schedules and solvers never know about each other (k-diffusion style), so any pair composes:

- schedules: `linear_sigmas`, `shifted_sigmas`, `flux_sigmas`, `scheduler_sigmas`, `custom_sigmas`, and BOSS
  (`boss_cost_matrix`, `boss_path`, `boss_sigmas`), which picks the steps that best follow a fine trajectory;
- solvers: `sample_euler`, `sample_heun`, `sample_midpoint`, `sample_adams_bashforth2`, one short function each with
  the signature `(velocity_fn, x, sigmas, callback) -> x`, wrapped as `Solver` values for the SOLVER socket.

The diffusers-derived schedules and solvers repeat diffusers' own float arithmetic (numpy float64/float32,
then float32 torch; fp32 state updates cast back to the velocity's dtype), so they are bit-identical to
`FlowMatchEulerDiscreteScheduler` / `FlowMatchHeunDiscreteScheduler`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from nodes.models.base import Conditioning, FlowModel
from nodes.primitives import MAX_SEED
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.runtime import cache_dir
from nodes.types import SocketType

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""v = velocity_fn(x, sigma): the flow's velocity at x, with sigma a 0-dim float32 tensor from the schedule."""

StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
"""callback(step_index, total_steps, x, x0_estimate) after each step; step_index is 0-based (the step from
sigmas[i] to sigmas[i+1] just taken). It may raise to stop sampling (cancellation)."""

MAX_STEPS = 1000
BaseGrid = Literal["uniform", "shifted"]


# ---- schedules ----------------------------------------------------------------------------------------------


def flux_mu(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
            base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """The resolution-dependent shift of FluxPipeline (`calculate_shift`): linear in the packed token count."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    intercept = base_shift - slope * base_seq_len
    return image_seq_len * slope + intercept


def _training_sigma_range(shift: float, dynamic: bool, num_train_timesteps: int) -> tuple[float, float]:
    """sigma_max and sigma_min as the scheduler's constructor leaves them.

    The constructor shifts its training sigmas in float32 torch (unless shifting is dynamic), and
    `set_timesteps` spaces from these already-shifted ends, so a static shift hits sigma_min twice."""
    timesteps = np.linspace(1, num_train_timesteps, num_train_timesteps, dtype=np.float32)[::-1].copy()
    sigmas = torch.from_numpy(timesteps).to(dtype=torch.float32) / num_train_timesteps
    if not dynamic:
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return sigmas[0].item(), sigmas[-1].item()


def _set_timesteps_sigmas(steps: int, *, shift: float = 1.0, dynamic: bool = False, mu: float | None = None,
                          sigmas: np.ndarray | None = None, num_train_timesteps: int = 1000,
                          time_shift_type: str = "exponential") -> torch.Tensor:
    """`FlowMatchEulerDiscreteScheduler.set_timesteps(steps, sigmas=sigmas, mu=mu).sigmas`, op for op."""
    if sigmas is None:
        sigma_max, sigma_min = _training_sigma_range(shift, dynamic, num_train_timesteps)
        values = np.linspace(sigma_max * num_train_timesteps, sigma_min * num_train_timesteps, steps)
        values = values / num_train_timesteps  # float64, as diffusers computes it
    else:
        values = np.array(sigmas).astype(np.float32)
    if dynamic:
        if mu is None:
            raise ValueError("dynamic shifting needs mu")
        # diffusers raises (1/σ − 1) to the power 1.0, which is exact, so it is left out here.
        if time_shift_type == "exponential":
            values = math.exp(mu) / (math.exp(mu) + (1 / values - 1))
        elif time_shift_type == "linear":
            values = mu / (mu + (1 / values - 1))
        else:
            raise ValueError(f"unknown time_shift_type {time_shift_type!r}")
    else:
        values = shift * values / (1 + (shift - 1) * values)
    return torch.cat([torch.from_numpy(values).to(dtype=torch.float32), torch.zeros(1)])


def _check_steps(steps: int) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")


def linear_sigmas(steps: int) -> torch.Tensor:
    """Evenly spaced σ from 1 to 1/1000, then 0: `FlowMatchEulerDiscreteScheduler(shift=1.0)`."""
    _check_steps(steps)
    return _set_timesteps_sigmas(steps, shift=1.0)


def shifted_sigmas(steps: int, shift: float) -> torch.Tensor:
    """The static shift σ ← s·σ/(1+(s−1)·σ) of `FlowMatchEulerDiscreteScheduler(shift=s)` (SD3: s=3).

    Matches diffusers exactly, including its double shift of sigma_min (last σ 0.008929 for s=3, T=50)."""
    _check_steps(steps)
    if not shift > 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return _set_timesteps_sigmas(steps, shift=shift)


def flux_sigmas(steps: int, image_seq_len: int, base_shift: float = 0.5, max_shift: float = 1.15,
                base_seq_len: int = 256, max_seq_len: int = 4096) -> torch.Tensor:
    """FluxPipeline's schedule: linspace(1, 1/T, T) under the exponential time shift with mu from the token count."""
    _check_steps(steps)
    if image_seq_len < 1:
        raise ValueError(f"image_seq_len must be at least 1, got {image_seq_len}")
    if max_seq_len == base_seq_len:
        raise ValueError("max_seq_len and base_seq_len must differ (the shift is interpolated between them)")
    mu = flux_mu(image_seq_len, base_seq_len, max_seq_len, base_shift, max_shift)
    return _set_timesteps_sigmas(steps, dynamic=True, mu=mu, sigmas=np.linspace(1.0, 1 / steps, steps))


_UNSUPPORTED_SCHEDULER_OPTIONS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                                  "invert_sigmas", "shift_terminal", "stochastic_sampling")


def scheduler_sigmas(scheduler_config: Mapping[str, Any], steps: int, image_seq_len: int, *,
                     flux_style: bool = False) -> torch.Tensor:
    """A model's default schedule from its `FlowMatchEulerDiscreteScheduler` config, as its pipeline sets it.

    `flux_style`: FluxPipeline passes sigmas=linspace(1, 1/T, T) and always a resolution mu; the SD3 pipeline
    lets the scheduler space T steps itself and passes mu only when the config shifts dynamically."""
    _check_steps(steps)
    unsupported = [name for name in _UNSUPPORTED_SCHEDULER_OPTIONS if scheduler_config.get(name)]
    if unsupported:
        raise ValueError(f"scheduler options not supported by FlowCanvas schedules: {', '.join(unsupported)}")
    dynamic = bool(scheduler_config.get("use_dynamic_shifting", False))
    mu = flux_mu(image_seq_len, scheduler_config.get("base_image_seq_len", 256),
                 scheduler_config.get("max_image_seq_len", 4096), scheduler_config.get("base_shift", 0.5),
                 scheduler_config.get("max_shift", 1.15))
    return _set_timesteps_sigmas(
        steps,
        shift=float(scheduler_config.get("shift", 1.0)),
        dynamic=dynamic,
        mu=mu,
        sigmas=np.linspace(1.0, 1 / steps, steps) if flux_style else None,
        num_train_timesteps=int(scheduler_config.get("num_train_timesteps", 1000)),
        time_shift_type=scheduler_config.get("time_shift_type", "exponential"),
    )


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


# ---- BOSS: Bellman optimal step-size straightening (algorithms.md §5) ------------------------------------------


def boss_grid(k_max: int, base_grid: BaseGrid = "uniform", shift: float = 3.0) -> torch.Tensor:
    """The fine grid BOSS chooses nodes from: σ_k = 1 − k/k_max, or the shifted schedule with k_max steps."""
    if k_max < 1:
        raise ValueError(f"k_max must be at least 1, got {k_max}")
    if base_grid == "uniform":
        return (1 - torch.arange(k_max + 1, dtype=torch.float64) / k_max).to(torch.float32)
    if base_grid == "shifted":
        return shifted_sigmas(k_max, shift)
    raise ValueError(f"base_grid must be 'uniform' or 'shifted', got {base_grid!r}")


def euler_update(x: torch.Tensor, dsigma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x + dσ·v in fp32, cast back to v's dtype: `FlowMatchEulerDiscreteScheduler.step`'s exact float ops."""
    return (x.to(torch.float32) + dsigma * v).to(v.dtype)


def clean_estimate(x: torch.Tensor, sigma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x̂0 = x − σ·v, for previews."""
    return (x.to(torch.float32) - sigma * v).to(v.dtype)


# Bounds the temporary tensors of the cost computation (elements, about 256 MiB of float64).
_COST_CHUNK_ELEMENTS = 1 << 25


def _add_one_step_errors(cost: torch.Tensor, xs: torch.Tensor, vs: torch.Tensor, grid: torch.Tensor) -> None:
    """cost[i, j] += Σ (x_i + (σ_j − σ_i)·v_i − x_j)² over the batch and elements, for all i < j.

    xs: [k_max+1, B, D] trajectory, vs: [k_max, B, D] velocities (float32, CPU). The errors are formed and
    summed in float64 so that the smallest costs (short jumps, nearly exact) keep their digits."""
    per_node = xs[0].numel()
    chunk = max(1, _COST_CHUNK_ELEMENTS // per_node)
    for j in range(1, xs.shape[0]):
        for start in range(0, j, chunk):
            stop = min(j, start + chunk)
            jump = (grid[j] - grid[start:stop]).to(torch.float64).view(-1, 1, 1)
            error = xs[start:stop].to(torch.float64) + jump * vs[start:stop] - xs[j]
            cost[start:stop, j] += error.square().sum(dim=(1, 2))


def boss_cost_matrix(velocity_fn: VelocityFn, noise_batches: Iterable[torch.Tensor], k_max: int, *,
                     grid: torch.Tensor | None = None,
                     progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """C[i, j]: the mean (per sample, summed over elements) squared error of one Euler jump from node i to node j
    against the fine Euler trajectory through every grid node, for i < j (0 elsewhere).

    Each batch of noise is integrated with k_max Euler steps (one model evaluation each, reused for every
    jump from that node); `progress(evaluations_so_far)` is called after each evaluation and may raise to
    stop. `grid` defaults to the uniform grid σ_k = 1 − k/k_max. Returns a float64 [k_max+1, k_max+1] tensor."""
    grid = boss_grid(k_max) if grid is None else grid.to(torch.float32).cpu()
    if grid.shape != (k_max + 1,):
        raise ValueError(f"the grid must hold k_max+1 = {k_max + 1} values, got shape {tuple(grid.shape)}")
    cost = torch.zeros(k_max + 1, k_max + 1, dtype=torch.float64)
    samples = 0
    evaluations = 0
    for noise in noise_batches:
        batch = noise.shape[0]
        xs = torch.empty(k_max + 1, batch, noise[0].numel(), dtype=torch.float32)
        vs = torch.empty(k_max, batch, noise[0].numel(), dtype=torch.float32)
        x = noise
        xs[0] = x.to(torch.float32).reshape(batch, -1).cpu()
        for k in range(k_max):
            v = velocity_fn(x, grid[k])
            x = euler_update(x, grid[k + 1] - grid[k], v)
            vs[k] = v.to(torch.float32).reshape(batch, -1).cpu()
            xs[k + 1] = x.to(torch.float32).reshape(batch, -1).cpu()
            evaluations += 1
            if progress is not None:
                progress(evaluations)
        _add_one_step_errors(cost, xs, vs, grid)
        samples += batch
    if samples == 0:
        raise ValueError("the cost matrix needs at least one noise sample")
    return cost / samples


def boss_path(cost: torch.Tensor | np.ndarray, nfe: int) -> list[int]:
    """The nfe+1 grid indices from 0 to n−1 whose summed jump costs are least (Bellman DP, ties to the smallest j).

    dp[k][i] is the least cost of reaching the last node from node i in exactly k jumps."""
    table = np.asarray(cost, dtype=np.float64)
    n = table.shape[0]
    if nfe < 1:
        raise ValueError(f"nfe must be at least 1, got {nfe}")
    if nfe >= n - 1:
        return list(range(n))
    # Only forward jumps that stop short of the end may precede further jumps.
    allowed = np.triu(np.ones((n, n), dtype=bool), k=1)
    allowed[:, n - 1] = False
    dp = np.full((nfe + 1, n), np.inf)
    dp[1, : n - 1] = table[: n - 1, n - 1]
    for k in range(2, nfe + 1):
        dp[k] = np.where(allowed, table + dp[k - 1][None, :], np.inf).min(axis=1)
    path = [0]
    for k in range(nfe, 1, -1):
        current = path[-1]
        candidates = np.where(allowed[current], table[current] + dp[k - 1], np.inf)
        path.append(int(np.argmin(candidates)))  # argmin returns the first (smallest j) of equal minima
    path.append(n - 1)
    return path


def boss_noise_batches(sample_shape: Sequence[int], num_samples: int, batch: int, seed: int, *,
                       dtype: torch.dtype = torch.float32,
                       device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Standard-normal noise in batches, drawn sample by sample from one seeded CPU generator, so the
    samples are the same whatever the batch size."""
    if num_samples < 1 or batch < 1:
        raise ValueError("num_samples and batch must be at least 1")
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, num_samples, batch):
        count = min(batch, num_samples - start)
        rows = [torch.randn(tuple(sample_shape), generator=generator, dtype=torch.float32) for _ in range(count)]
        yield torch.stack(rows).to(device=device, dtype=dtype)


def boss_sigmas(velocity_fn: VelocityFn, shape: Sequence[int], nfe: int, k_max: int = 100,
                num_samples: int = 100, batch: int = 100, base_grid: BaseGrid = "uniform", shift: float = 3.0,
                seed: int = 0) -> torch.Tensor:
    """A BOSS schedule of nfe Euler steps for `velocity_fn` on samples of `shape` (one sample, no batch dim)."""
    grid = boss_grid(k_max, base_grid, shift)
    if nfe >= k_max:
        return grid  # every grid node is a step: nothing to choose, no model calls needed
    cost = boss_cost_matrix(velocity_fn, boss_noise_batches(shape, num_samples, batch, seed), k_max, grid=grid)
    return grid[boss_path(cost, nfe)]


# ---- solvers -----------------------------------------------------------------------------------------------------


def _check_schedule(sigmas: torch.Tensor) -> int:
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must be a 1-D tensor of at least 2 values, got shape {tuple(sigmas.shape)}")
    return sigmas.shape[0] - 1


def sample_euler(velocity_fn: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor,
                 callback: StepCallback | None = None) -> torch.Tensor:
    """Euler: x ← x + (σ_{i+1} − σ_i)·v(x, σ_i). One evaluation per step; equals diffusers' `step` bit for bit."""
    steps = _check_schedule(sigmas)
    for i in range(steps):
        v = velocity_fn(x, sigmas[i])
        x0_estimate = clean_estimate(x, sigmas[i], v)
        x = euler_update(x, sigmas[i + 1] - sigmas[i], v)
        if callback is not None:
            callback(i, steps, x, x0_estimate)
    return x


def _heun_derivative(sample: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    # FlowMatchHeunDiscreteScheduler forms d = (x − x̂0)/σ with x̂0 = x − v·σ: equal to v in exact arithmetic
    # but not in floating point, so the same ops are kept for bit-identical results.
    return (sample - (sample - v * sigma)) / sigma


def sample_heun(velocity_fn: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor,
                callback: StepCallback | None = None) -> torch.Tensor:
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
            callback(i, steps, x, clean_estimate(sample, sigma, v))
    return x


def sample_midpoint(velocity_fn: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor,
                    callback: StepCallback | None = None) -> torch.Tensor:
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
            callback(i, steps, x, x0_estimate)
    return x


def sample_adams_bashforth2(velocity_fn: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor,
                            callback: StepCallback | None = None) -> torch.Tensor:
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
            callback(i, steps, x, x0_estimate)
        previous_v = v
    return x


@dataclass(frozen=True)
class Solver:
    """A SOLVER value: a named sampling function `sample(velocity_fn, x, sigmas, callback) -> x` and its cost."""

    name: str
    sample_fn: Callable[[VelocityFn, torch.Tensor, torch.Tensor, StepCallback | None], torch.Tensor]
    evaluations_fn: Callable[[int], int]

    def sample(self, velocity_fn: VelocityFn, x: torch.Tensor, sigmas: torch.Tensor,
               callback: StepCallback | None = None) -> torch.Tensor:
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

MAX_SIDE = 16384
SIGMAS_OUT = Output("sigmas", SocketType.SIGMAS, "Noise levels from 1 down to 0, one step between each pair")
SOLVER_OUT = Output("solver", SocketType.SOLVER, "How each step moves from one noise level to the next")


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
        shift: float = Field(3.0, gt=0, le=100, description="Above 1 spends more steps at high noise; 1 is even.",
                             json_schema_extra={"step": 0.1})

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        return _schedule(lambda: shifted_sigmas(params.steps, params.shift), "shift")


@node("FluxDynamicShiftSchedule", category="sampling", outputs=[SIGMAS_OUT])
class FluxDynamicShiftSchedule(Node):
    """FLUX.1-dev's schedule: the shift grows with the image size (more steps at high noise for big images)."""

    class Params(NodeParams):
        steps: int = _steps_field()
        width: int = Field(1024, ge=16, le=MAX_SIDE, description="Image width in pixels.")
        height: int = Field(1024, ge=16, le=MAX_SIDE, description="Image height in pixels.")
        base_shift: float = Field(0.5, ge=0, le=10, description="Shift (mu) at the base token count.",
                                  json_schema_extra={"step": 0.05})
        max_shift: float = Field(1.15, ge=0, le=10, description="Shift (mu) at the max token count.",
                                 json_schema_extra={"step": 0.05})
        base_seq_len: int = Field(256, ge=1, le=1_000_000, description="Token count where the shift is base_shift.")
        max_seq_len: int = Field(4096, ge=1, le=1_000_000, description="Token count where the shift is max_shift.")

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        if params.max_seq_len <= params.base_seq_len:
            return [("max_seq_len", f"max_seq_len ({params.max_seq_len}) must be above base_seq_len "
                                    f"({params.base_seq_len})")]
        return []

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        for field, message in self.check(params):
            raise NodeError(message, field=field)
        # FLUX packs 2×2 latent cells (8 px each) into one token: (H/16)·(W/16) tokens.
        image_seq_len = (params.height // 16) * (params.width // 16)
        return _schedule(lambda: flux_sigmas(params.steps, image_seq_len, params.base_shift, params.max_shift,
                                             params.base_seq_len, params.max_seq_len), "steps")


@node("ModelSchedule", category="sampling", inputs=[Input("model", SocketType.FLOW_MODEL, "The model to sample")],
      outputs=[SIGMAS_OUT])
class ModelSchedule(Node):
    """The schedule the model's own diffusers pipeline would use at this size."""

    class Params(NodeParams):
        steps: int = _steps_field()
        width: int = Field(1024, ge=16, le=MAX_SIDE, description="Image width in pixels.")
        height: int = Field(1024, ge=16, le=MAX_SIDE, description="Image height in pixels.")

    def run(self, ctx: NodeContext, params: Params, model: FlowModel) -> dict[str, Any]:
        return _schedule(lambda: model.default_sigmas(params.steps, params.height, params.width)
                         .to(device="cpu", dtype=torch.float32), "steps")


@node("CustomSchedule", category="sampling", outputs=[SIGMAS_OUT])
class CustomSchedule(Node):
    """Noise levels typed by hand, from 1 (noise) down to 0 (data)."""

    class Params(NodeParams):
        sigmas: str = Field("1.0, 0.75, 0.5, 0.25, 0.0", min_length=1, max_length=20_000,
                            description="Comma-separated noise levels, decreasing, between 1 and 0 "
                                        "(a final 0 is added if missing).")

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        try:
            custom_sigmas(parse_sigmas(params.sigmas))
        except ValueError as error:
            return [("sigmas", str(error))]
        return []

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        return _schedule(lambda: custom_sigmas(parse_sigmas(params.sigmas)), "sigmas")


def _conditioning_key(cond: Conditioning | None) -> Any:
    if cond is None:
        return None
    if cond.prompts:
        return {"family": cond.family, "prompts": list(cond.prompts)}
    # Conditioning made without prompt text: only the embeddings themselves say what it is.
    digest = hashlib.sha256()
    for tensor in (cond.prompt_embeds, cond.pooled):
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return {"family": cond.family, "embeddings": digest.hexdigest()}


def boss_cache_key(model: FlowModel, positive: Conditioning, negative: Conditioning | None, guidance: float,
                   shape: Sequence[int], k_max: int, num_samples: int, seed: int, base_grid: str) -> str:
    """SHA-256 of canonical JSON of everything the cost matrix depends on (batch size does not: see
    `boss_noise_batches`)."""
    material = {"format": 1, "model": model.sha256, "positive": _conditioning_key(positive),
                "negative": _conditioning_key(negative), "guidance": guidance, "shape": list(shape),
                "k_max": k_max, "num_samples": num_samples, "seed": seed, "base_grid": base_grid}
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@node("BossSchedule", category="sampling",
      inputs=[Input("model", SocketType.FLOW_MODEL, "The model to sample"),
              Input("positive", SocketType.CONDITIONING, "The prompt the schedule is tuned for"),
              Input("negative", SocketType.CONDITIONING, "Negative prompt, when guidance uses one", optional=True)],
      outputs=[SIGMAS_OUT])
class BossSchedule(Node):
    """Few-step schedule found for this model and prompt (BOSS): picks the steps that best follow a fine
    trajectory. Costs num_samples × k_max model calls once; the result is cached on disk."""

    class Params(NodeParams):
        nfe: int = Field(8, ge=1, le=MAX_STEPS, description="Number of Euler steps (model calls) to plan for.")
        k_max: int = Field(100, ge=2, le=MAX_STEPS, description="Steps of the fine trajectory the steps are "
                                                                 "chosen from; finer is slower.")
        num_samples: int = Field(100, ge=1, le=10_000, description="Noise samples the error is averaged over.")
        batch: int = Field(100, ge=1, le=10_000, description="Samples per model call; lower it if memory runs out.")
        width: int = Field(1024, ge=16, le=MAX_SIDE, description="Image width in pixels.")
        height: int = Field(1024, ge=16, le=MAX_SIDE, description="Image height in pixels.")
        guidance: float = Field(3.5, ge=0, le=100, description="Guidance scale; use the one you will sample with.",
                                json_schema_extra={"step": 0.1})
        base_grid: BaseGrid = Field("uniform", description="Fine steps evenly spaced, or spaced like the model's "
                                                           "own schedule.")
        seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the noise samples.",
                          json_schema_extra={"widget": "seed"})

    def run(self, ctx: NodeContext, params: Params, model: FlowModel, positive: Conditioning,
            negative: Conditioning | None = None) -> dict[str, Any]:
        ctx.record_seed("seed", params.seed)
        shape = model.latent_shape(1, params.height, params.width)[1:]
        if params.base_grid == "shifted":
            grid = model.default_sigmas(params.k_max, params.height, params.width).to(device="cpu",
                                                                                         dtype=torch.float32)
        else:
            grid = boss_grid(params.k_max)
        if params.nfe >= params.k_max:
            return {"sigmas": grid}  # every grid node is a step: nothing to choose, no model calls needed
        key = boss_cache_key(model, positive, negative, params.guidance, shape, params.k_max, params.num_samples,
                             params.seed, params.base_grid)
        path = cache_dir("boss") / f"{key}.npy"
        if path.exists():
            cost = np.load(path, allow_pickle=False)
        else:
            cost = self._cost_matrix(ctx, params, model, positive, negative, shape, grid).numpy()
            partial = path.with_name(f"{key}.{os.getpid()}.partial.npy")
            np.save(partial, cost)
            os.replace(partial, path)  # never leave a half-written matrix under the real name
        return {"sigmas": grid[boss_path(cost, params.nfe)]}

    @staticmethod
    def _cost_matrix(ctx: NodeContext, params: Params, model: FlowModel, positive: Conditioning,
                     negative: Conditioning | None, shape: Sequence[int], grid: torch.Tensor) -> torch.Tensor:
        total = math.ceil(params.num_samples / params.batch) * params.k_max

        def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return model.velocity(x, sigma.to(model.device), positive, negative, params.guidance)

        noise = boss_noise_batches(shape, params.num_samples, params.batch, params.seed, dtype=model.dtype,
                                   device=model.device)
        return boss_cost_matrix(velocity, noise, params.k_max, grid=grid,
                                progress=lambda done: ctx.progress(done, total))


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
HeunSolver = _solver_node("HeunSolver", HEUN, "Heun steps: two model calls per step (one on the last), second "
                                              "order; sharper than Euler at the same step count.")
MidpointSolver = _solver_node("MidpointSolver", MIDPOINT, "Midpoint steps: two model calls per step, second "
                                                          "order.")
MultistepSolver = _solver_node("MultistepSolver", ADAMS_BASHFORTH2, "Adams–Bashforth steps: one model call per "
                                                                    "step, second order by reusing the previous "
                                                                    "step's velocity.")

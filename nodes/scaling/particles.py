"""Inference-time scaling by particle sampling: spend a budget of model evaluations (NFE) searching for the
image a verifier scores best (Kim et al., "Inference-Time Scaling for Flow Models via Stochastic Generation and
Rollover Budget Forcing"; docs/algorithms.md, "Inference-time scaling").

The three ideas of the paper, for any rectified-flow model behind the adapter:
- **stochastic generation**: the flow ODE becomes a reverse-time SDE with the same marginals, so particles
  have randomness to select from (drift −u + ½g²·score, g(r) = norm·r², Euler–Maruyama);
- **interpolant conversion**: the same model is sampled along a variance-preserving path (β from 0.1 to 20)
  instead of the linear one, by querying it at the linear time with the same signal-to-noise ratio;
- **Rollover Budget Forcing (RBF)**: a fixed NFE budget split into per-step quotas, a step ending as soon as a
  candidate beats the best score so far and its unused quota rolling over to later steps.

Methods: best-of-N (N independent samples, the best kept), particle filtering (sequential Monte Carlo:
weights exp(Δscore/λ), multinomial resampling), and RBF. One NFE is one guided velocity of one particle (CFG's
two passes count once, as the paper counts); decoding and scoring are not counted. The image returned is the
clean estimate x̂0 = x − t·v of the last evaluation, which for the linear ODE is exactly the Euler sampler's
last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field

from nodes.editors.common import model_defaults, per_model_defaults
from nodes.fields import guidance_field, true_cfg_field
from nodes.limits import pixel_problems
from nodes.models.base import FlowModel
from nodes.models.components import VAE, Conditioning, Latent
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.sampling.sampler import (
    GUIDED_INPUTS,
    Noise,
    NoiseDraw,
    NoiseUnavailable,
    gaussian,
    latent_preview,
    require_family,
    require_negative_for_cfg,
)
from nodes.sampling.solvers import Solver
from nodes.scaling.verifiers import Verifier
from nodes.types import SocketType

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # model-frame x, linear time σ → v
Scorer = Callable[[torch.Tensor], torch.Tensor]  # clean latents [N, …] → scores [N]
Progress = Callable[[int, torch.Tensor], None]  # NFE used so far, the best clean latent so far [1, …]
PathKind = Literal["linear", "vp"]
TimeGrid = Literal["adaptive", "schedule"]
Process = Literal["ode", "sde"]
Method = Literal["best_of_n", "particle_filter", "rbf"]

VP_BETA_MIN, VP_BETA_MAX = 0.1, 20.0  # the VP path the paper converts to (its code's VPScheduler)


def adaptive_times(sigmas: list[float]) -> list[float]:
    """The paper's adaptive grid over a schedule: r = sqrt(1 − (1 − σ)²), small steps near the noise, where the
    SDE's diffusion g(r) = norm·r² is largest (a linear schedule gives its 1, .995, .980, …, .436, 0)."""
    return [math.sqrt(max(0.0, 1.0 - (1.0 - s) ** 2)) for s in sigmas]


class BudgetExceeded(RuntimeError):
    """A search asked for more evaluations than its budget (a bug: the methods plan within it)."""


class CountedVelocity:
    """The model's guided velocity, counting one NFE per particle evaluated and refusing to pass the budget."""

    def __init__(self, velocity: Velocity, budget: int) -> None:
        self.velocity = velocity
        self.budget = budget
        self.used = 0

    @property
    def left(self) -> int:
        return self.budget - self.used

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.used + x.shape[0] > self.budget:
            raise BudgetExceeded(f"{self.used} + {x.shape[0]} evaluations would pass the budget of {self.budget}")
        self.used += x.shape[0]
        return self.velocity(x, sigma)


# ---------------------------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Path:
    """An interpolant x = a(r)·x0 + b(r)·ε in path time r (1: noise, 0: data), and how the linear-path model
    is queried on it: at linear time t = b/(a+b) (the same signal-to-noise ratio) with x/(a+b)."""

    kind: PathKind

    def coefficients(self, r: float) -> tuple[float, float, float, float]:
        """a, b and their derivatives da/dr, db/dr."""
        if self.kind == "linear":
            return 1.0 - r, r, -1.0, 1.0
        exponent = 0.5 * (VP_BETA_MAX - VP_BETA_MIN) * r * r + VP_BETA_MIN * r
        rate = (VP_BETA_MAX - VP_BETA_MIN) * r + VP_BETA_MIN
        a, b = math.exp(-exponent / 2), math.sqrt(-math.expm1(-exponent))
        return a, b, -0.5 * rate * a, 0.5 * rate * math.exp(-exponent) / max(b, 1e-12)

    def model_time(self, r: float) -> tuple[float, float]:
        """The linear time t with the same signal-to-noise ratio, and the scale s with x_path = s·x_linear."""
        a, b, _, _ = self.coefficients(r)
        return b / (a + b), a + b


@dataclass(frozen=True)
class Estimate:
    """The model's reading of particles x at path time r: their clean and noise estimates."""

    x0: torch.Tensor
    eps: torch.Tensor


def estimate(velocity: Velocity, path: Path, x: torch.Tensor, r: float) -> Estimate:
    """x̂0 and ε̂ of particles x (path frame) at path time r, from one velocity evaluation per particle."""
    t, s = path.model_time(r)
    linear = x / s
    v = velocity(linear, torch.tensor(t, dtype=torch.float32))
    return Estimate(x0=linear - t * v, eps=linear + (1.0 - t) * v)


def step(
    path: Path, x: torch.Tensor, found: Estimate, r: float, r_next: float, norm: float, generator: torch.Generator
) -> torch.Tensor:
    """One reverse step from r to r_next < r: Euler on the ODE when `norm` is 0, else Euler–Maruyama on the
    SDE with the same marginals and diffusion g(r) = norm·r² (in path time)."""
    a, b, da, db = path.coefficients(r)
    drift = da * found.x0 + db * found.eps  # the path velocity dx/dr
    dr = r - r_next
    if norm == 0.0:
        return x - dr * drift
    g = norm * r * r
    score = -found.eps / b
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
    return x + dr * (-drift + 0.5 * g * g * score) + g * math.sqrt(dr) * noise


def _evaluate(velocity: Velocity, path: Path, x: torch.Tensor, r: float, chunk: int) -> Estimate:
    """`estimate` in model calls of at most `chunk` particles (memory), the same values as one call."""
    parts = [estimate(velocity, path, part, r) for part in x.split(chunk)]
    return Estimate(torch.cat([p.x0 for p in parts]), torch.cat([p.eps for p in parts]))


@dataclass(frozen=True)
class Search:
    """What every method is given: the counted velocity, the scorer, the path-time grid, the path, the SDE's
    diffusion norm (0: the deterministic ODE), a seeded generator, particles per model call and progress."""

    velocity: CountedVelocity
    score: Scorer
    times: list[float]  # r_0 = 1 > r_1 > … > r_S = 0
    path: Path
    norm: float
    generator: torch.Generator
    chunk: int = 8
    progress: Progress | None = None
    source: NoiseDraw = gaussian  # the starting noises: the NOISE input's `sample`

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    def noise(self, count: int, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        return self.source((count, *shape), self.generator).to(like.device, like.dtype)

    def report(self, best: torch.Tensor) -> None:
        if self.progress is not None:
            self.progress(self.velocity.used, best)


def best_of_n(search: Search, shape: tuple[int, ...], like: torch.Tensor, solver: Solver | None = None) -> torch.Tensor:
    """N = budget // steps independent samples, stepped together; the best-scored final x̂0 is kept. On the
    model's own ODE (linear path, no noise) a wired solver integrates them instead, N = budget // its
    evaluations per sample."""
    if solver is not None and search.path.kind == "linear" and search.norm == 0.0:
        return _best_of_n_solved(search, solver, shape, like)
    count = search.velocity.budget // search.steps
    if count < 1:
        raise ValueError(
            f"a budget of {search.velocity.budget} evaluations is less than one sample of {search.steps} steps"
        )
    x = search.noise(count, shape, like)
    for k in range(search.steps):
        found = _evaluate(search.velocity, search.path, x, search.times[k], search.chunk)
        if k + 1 < search.steps:
            x = step(search.path, x, found, search.times[k], search.times[k + 1], search.norm, search.generator)
        search.report(found.x0[:1])
    scores = search.score(found.x0)
    return found.x0[int(scores.argmax())].unsqueeze(0)


def _best_of_n_solved(search: Search, solver: Solver, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    per_sample = solver.evaluations(search.steps)
    count = search.velocity.budget // per_sample
    if count < 1:
        raise ValueError(
            f"a budget of {search.velocity.budget} evaluations is less than one sample "
            f"({solver.name}, {search.steps} steps: {per_sample} evaluations)"
        )

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.cat([search.velocity(part, sigma) for part in x.split(search.chunk)])

    samples = solver.sample(
        velocity,
        search.noise(count, shape, like),
        torch.tensor(search.times, dtype=torch.float32),
        lambda done: search.report(done.x0_estimate[:1]),
    )
    return samples[int(search.score(samples).argmax())].unsqueeze(0)


def particle_filter(search: Search, shape: tuple[int, ...], like: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sequential Monte Carlo over N = budget // steps particles: after each step every particle's x̂0 is
    scored, weights are multiplied by exp(Δscore/λ), and the particles are resampled (multinomially, from the
    seeded generator) whenever the effective sample size falls below N, as the paper's SMC does."""
    count = search.velocity.budget // search.steps
    if count < 1:
        raise ValueError(
            f"a budget of {search.velocity.budget} evaluations is less than one sample of {search.steps} steps"
        )
    x = search.noise(count, shape, like)
    weights = torch.ones(count, dtype=torch.float64)
    previous = torch.zeros(count, dtype=torch.float64)
    for k in range(search.steps):
        found = _evaluate(search.velocity, search.path, x, search.times[k], search.chunk)
        scores = search.score(found.x0).double()
        search.report(found.x0[int(scores.argmax())].unsqueeze(0))
        if k + 1 == search.steps:
            return found.x0[int(scores.argmax())].unsqueeze(0)
        weights = weights * torch.exp((scores - previous) / temperature)
        normalised = weights / weights.sum()
        if 1.0 / float((normalised**2).sum()) < count - 1e-9:
            chosen = torch.multinomial(normalised, count, replacement=True, generator=search.generator)
            x, found = x[chosen], Estimate(found.x0[chosen], found.eps[chosen])
            scores, weights = scores[chosen], torch.ones(count, dtype=torch.float64)
        previous = scores
        x = step(search.path, x, found, search.times[k], search.times[k + 1], search.norm, search.generator)
    raise AssertionError("unreachable: the last step returns")


def rollover_budget_forcing(
    search: Search, shape: tuple[int, ...], like: torch.Tensor, chains: int, initial: int
) -> torch.Tensor:
    """RBF as the authors' code runs it, per chain: the best of `initial` noises (scored on x̂0 at r_0), then
    one stochastic candidate at a time per chain. A candidate scoring above the chain's best so far is taken at
    once and the step's unused quota rolls over to the next; when the quota runs out the step's best candidate
    is taken. Quotas are (budget − chains·initial) / (steps·chains). The last transition is re-drawn with
    whatever budget is left, and the best candidate of the last step over all chains is returned."""
    steps = search.steps
    quota = (search.velocity.budget - chains * initial) // (steps * chains)
    if initial < 1 or quota < 1:
        raise ValueError(
            f"a budget of {search.velocity.budget} evaluations leaves no candidates per step for {chains} chain(s) "
            f"of {steps} steps after {initial} initial noises each"
        )
    pool = search.noise(chains * initial, shape, like)
    found = _evaluate(search.velocity, search.path, pool, search.times[0], search.chunk)
    pool_scores = search.score(found.x0).view(chains, initial)
    pick = pool_scores.argmax(dim=1) + torch.arange(chains) * initial
    x, current = pool[pick], Estimate(found.x0[pick], found.eps[pick])
    best_score = pool_scores.max(dim=1).values.double()
    level = [0] * chains  # the index of each chain's current time
    allowed = [quota] * chains
    drawn = [0] * chains
    step_best: list[tuple[float, torch.Tensor, Estimate] | None] = [None] * chains
    search.report(current.x0[int(best_score.argmax())].unsqueeze(0))
    while search.velocity.left >= chains:
        candidates = torch.cat(
            [
                step(
                    search.path,
                    x[c : c + 1],
                    Estimate(current.x0[c : c + 1], current.eps[c : c + 1]),
                    search.times[level[c]],
                    search.times[level[c] + 1],
                    search.norm,
                    search.generator,
                )
                for c in range(chains)
            ]
        )
        # Chains at different levels evaluate at different times: one call per distinct time.
        x0s, epss = torch.empty_like(candidates), torch.empty_like(candidates)
        for time_index in sorted(set(level)):
            members = [c for c in range(chains) if level[c] == time_index]
            got = estimate(search.velocity, search.path, candidates[members], search.times[time_index + 1])
            x0s[members], epss[members] = got.x0, got.eps
        scores = search.score(x0s).double()
        for c in range(chains):
            value = float(scores[c])
            drawn[c] += 1
            candidate = (value, candidates[c : c + 1], Estimate(x0s[c : c + 1], epss[c : c + 1]))
            if step_best[c] is None or value > step_best[c][0]:
                step_best[c] = candidate
            can_advance = level[c] + 1 < steps - 1
            taken: tuple[float, torch.Tensor, Estimate] | None = None
            if value > best_score[c]:
                best_score[c] = value
                if can_advance:
                    taken, allowed[c] = candidate, quota + (allowed[c] - drawn[c])
            elif drawn[c] >= allowed[c] and can_advance:
                taken, allowed[c] = step_best[c], quota
            if taken is not None:
                x[c : c + 1], current.x0[c : c + 1], current.eps[c : c + 1] = taken[1], taken[2].x0, taken[2].eps
                level[c], drawn[c], step_best[c] = level[c] + 1, 0, None
        leader = max(range(chains), key=lambda c: step_best[c][0] if step_best[c] is not None else -math.inf)
        shown = step_best[leader]
        search.report(shown[2].x0 if shown is not None else current.x0[leader : leader + 1])
    finals = [best for c, best in enumerate(step_best) if best is not None and level[c] + 1 == steps - 1]
    if not finals:  # the budget ran out before any chain reached the last step: the most advanced estimate
        leader = max(range(chains), key=lambda c: (level[c], float(best_score[c])))
        return current.x0[leader : leader + 1]
    return max(finals, key=lambda best: best[0])[2].x0


# ---------------------------------------------------------------------------------------------- the node

DEFAULT_NFE = 200


@dataclass(frozen=True)
class ScalingDefaults:
    """What a blank search param takes, per model (fields named as the params they fill)."""

    method: Method
    path: PathKind
    process: Process
    diffusion_norm: float
    time_grid: TimeGrid


# SD3 and FLUX: the paper's settings (RBF on the VP SDE, g = 3r², the adaptive grid), measured by its authors
# on FLUX.1-schnell; SD3's by analogy (no real weights here to measure either). The embedded row is what
# bench/inference_scaling.py's tuning prompts chose (README, "Inference-time scaling"): on this small model,
# 28 steps and a verifier that is nearly the measure, best-of-N on its own ODE and schedule beat every
# stochastic method at equal NFE.
PAPER = ScalingDefaults(method="rbf", path="vp", process="sde", diffusion_norm=3.0, time_grid="adaptive")
DEFAULTS: dict[str, ScalingDefaults] = {
    "sd3": PAPER,
    "flux": PAPER,
    "embedded": ScalingDefaults(
        method="best_of_n", path="linear", process="ode", diffusion_norm=3.0, time_grid="schedule"
    ),
}


@node(
    "ParticleSampler",
    category="scaling",
    inputs=[
        *GUIDED_INPUTS,
        Input("latent", SocketType.LATENT, "Its shape (size and batch) is what is drawn"),
        Input("sigmas", SocketType.SIGMAS, "The time grid, read as path time (1: noise, 0: data)"),
        Input(
            "solver",
            SocketType.SOLVER,
            "Integrates best-of-N on the model's own ODE (linear path); blank: Euler. The SDEs step with "
            "Euler–Maruyama",
            optional=True,
        ),
        Input("noise", SocketType.NOISE, "Seeds every draw: initial noises, SDE noise, resampling"),
        Input("vae", SocketType.VAE, "Decodes clean estimates for the verifier"),
        Input("verifier", SocketType.VERIFIER),
    ],
    outputs=[Output("latent", SocketType.LATENT)],
)
class ParticleSampler(Node):
    """Spend a budget of model evaluations searching for the image the verifier scores best: best-of-N,
    particle filtering, or Rollover Budget Forcing, on the linear or the variance-preserving path."""

    class Params(NodeParams):
        method: Method | None = Field(
            None,
            description="best_of_n, particle_filter (SMC) or rbf (Rollover Budget Forcing); blank: "
            + per_model_defaults(DEFAULTS, "method"),
        )
        nfe_budget: int = Field(DEFAULT_NFE, ge=1, le=100_000, description="Model evaluations per image, at most.")
        path: PathKind | None = Field(
            None,
            description="linear: the model's own path; vp: sampled as variance-preserving; blank: "
            + per_model_defaults(DEFAULTS, "path"),
        )
        process: Process | None = Field(
            None,
            description="ode: deterministic steps; sde: stochastic ones with the same marginals (particle filtering "
            "and RBF need them to have choices); blank: " + per_model_defaults(DEFAULTS, "process"),
        )
        time_grid: TimeGrid | None = Field(
            None,
            description="adaptive: the paper's r = sqrt(1 − (1 − σ)²) over the schedule; schedule: as wired; blank: "
            + per_model_defaults(DEFAULTS, "time_grid"),
        )
        diffusion_norm: float | None = Field(
            None, ge=0.0, le=20.0, description="SDE noise g(r) = norm·r²; blank: the paper's 3 for every model."
        )
        temperature: float = Field(1.0, gt=0.0, le=100.0, description="particle_filter: weights exp(Δscore/λ).")
        chains: int = Field(2, ge=1, le=64, description="rbf: independent chains (the paper's 2).")
        initial_noises: int = Field(
            0, ge=0, le=1000, description="rbf: noises tried per chain at the start; 0: a tenth of the budget."
        )
        guidance: float = guidance_field()
        true_cfg: float = true_cfg_field()
        particles_per_call: int = Field(
            8, ge=1, le=256, description="Particles per model call: lower it if memory runs out."
        )

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        if params.method in ("particle_filter", "rbf") and (params.process == "ode" or params.diffusion_norm == 0):
            return [
                ("process", f"{params.method} selects among stochastic steps: use sde with a diffusion norm above 0")
            ]
        return []

    def run(
        self,
        ctx: NodeContext,
        params: Params,
        model: FlowModel,
        positive: Conditioning,
        latent: Latent,
        sigmas: torch.Tensor,
        noise: Noise,
        vae: VAE,
        verifier: Verifier,
        negative: Conditioning | None = None,
        solver: Solver | None = None,
    ) -> dict[str, Any]:
        require_family(model, positive=positive, negative=negative, latent=latent)
        require_negative_for_cfg(model, negative, params.guidance)
        chosen = model_defaults(DEFAULTS, model, params)
        if chosen.method in ("particle_filter", "rbf") and not (chosen.process == "sde" and chosen.diffusion_norm > 0):
            raise NodeError(f"{chosen.method} selects among stochastic steps: use sde", field="process")
        times = [float(s) for s in sigmas]
        if len(times) < 2 or times[0] != 1.0 or times[-1] != 0.0:
            raise NodeError("the schedule must run from 1 (noise) to 0 (data)", field="sigmas")
        if chosen.time_grid == "adaptive":
            times = adaptive_times(times)
        solved = chosen.method == "best_of_n" and chosen.path == "linear" and chosen.process == "ode"
        if solver is not None and not solved:
            ctx.warn(
                f"the solver is not used: {chosen.method} on the {chosen.path} {chosen.process} steps with "
                "Euler–Maruyama (only best-of-N on the linear ODE integrates with a wired solver)",
                field="solver",
            )
        ctx.record_seed("noise", noise.seed)
        generator = torch.Generator("cpu").manual_seed(noise.seed)
        like = latent.samples.to(model.device, model.dtype)
        batch, shape = like.shape[0], tuple(like.shape[1:])
        problem = noise.check_shape(tuple(like.shape))
        if problem is not None:
            raise NodeError(problem, field="noise")
        held = _particles_held(chosen.method, params, len(times) - 1)
        height, width = (side * model.vae_scale_factor for side in shape[-2:])
        for field_name, message in pixel_problems(width, height, held, "nfe_budget"):  # before any is drawn
            raise NodeError(f"{held} particles at once: {message}", field=field_name, hint="lower the budget")
        total = params.nfe_budget * batch

        def score(x0: torch.Tensor) -> torch.Tensor:
            return verifier.score(vae.decode(x0))

        results = []
        for index in range(batch):  # each image its own search, with its own prompt and budget
            spent_before = index * params.nfe_budget
            row_positive, row_negative = positive.row(index), negative.row(index) if negative is not None else None

            def guided(
                x: torch.Tensor,
                sigma: torch.Tensor,
                pos: Conditioning = row_positive,
                neg: Conditioning | None = row_negative,
            ) -> torch.Tensor:
                return model.velocity(x, sigma, pos, neg, params.guidance, params.true_cfg)

            def progress(used: int, best: torch.Tensor, spent_before: int = spent_before) -> None:
                ctx.progress(spent_before + used, total, latent_preview(model, best))

            search = Search(
                velocity=CountedVelocity(guided, params.nfe_budget),
                score=score,
                times=times,
                path=Path(chosen.path),
                norm=chosen.diffusion_norm if chosen.process == "sde" else 0.0,
                generator=generator,
                chunk=params.particles_per_call,
                progress=progress,
                source=noise.sample,
            )
            try:
                with torch.inference_mode():
                    results.append(_run_method(search, chosen.method, params, shape, like, solver))
            except NoiseUnavailable as error:
                raise NodeError(str(error), field="noise", hint="raise the noise's threshold") from None
            except ValueError as error:
                raise NodeError(str(error), field="nfe_budget") from None
        return {"latent": Latent(torch.cat(results), model.family)}


def _initial_noises(params: ParticleSampler.Params) -> int:
    """RBF's noises tried per chain at the start: as set, else a tenth of the budget over the chains."""
    return params.initial_noises or max(1, params.nfe_budget // (10 * params.chains))


def _particles_held(method: Method, params: ParticleSampler.Params, steps: int) -> int:
    """How many particles a method keeps in memory at once (the images it amounts to count against the pixel
    budget)."""
    if method == "rbf":
        return params.chains * _initial_noises(params)
    return max(1, params.nfe_budget // steps)


def _run_method(
    search: Search,
    method: Method,
    params: ParticleSampler.Params,
    shape: tuple[int, ...],
    like: torch.Tensor,
    solver: Solver | None,
) -> torch.Tensor:
    if method == "best_of_n":
        return best_of_n(search, shape, like, solver)
    if method == "particle_filter":
        return particle_filter(search, shape, like, params.temperature)
    return rollover_budget_forcing(search, shape, like, params.chains, _initial_noises(params))

"""BOSS (docs/algorithms.md, "BOSS schedules"): the Bellman path against brute force, the cost matrix against closed forms, schedules
that beat uniform and shifted ones on a flow with a known exact solution, and the cached BossSchedule node."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from nodes.registry import NodeContext, RunCancelled
from nodes.sampling.boss import (
    BossSchedule,
    boss_cache_key,
    boss_cost_matrix,
    boss_grid,
    boss_noise_batches,
    boss_path,
    boss_sigmas,
)
from nodes.sampling.schedules import linear_sigmas, shifted_sigmas
from nodes.sampling.solvers import EULER
from storage.config import data_home
from tests.test_solvers import GaussianFlow, GaussianFlowModel, conditioning

# ---- the Bellman path ----------------------------------------------------------------------------------------


def path_cost(cost: np.ndarray, path: list[int]) -> float:
    """Summed jump costs, added right to left as the DP adds them (so equal paths give equal floats)."""
    total = 0.0
    for start, stop in reversed(list(zip(path, path[1:]))):
        total = cost[start, stop] + total
    return total


def brute_force_path(cost: np.ndarray, nfe: int) -> tuple[list[int], float]:
    """Every path of nfe jumps from the first to the last node; combinations come in lexicographic order,
    so keeping only strict improvements keeps the tie-break toward the smallest j."""
    n = cost.shape[0]
    best_path: list[int] = []
    best = np.inf
    for interior in itertools.combinations(range(1, n - 1), nfe - 1):
        path = [0, *interior, n - 1]
        total = path_cost(cost, path)
        if total < best:
            best_path, best = path, total
    return best_path, best


def structured_costs(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    gaps = np.subtract.outer(np.arange(n), np.arange(n)).T  # j − i
    return {
        "random": rng.random((n, n)),
        "small integers (many ties)": rng.integers(0, 3, (n, n)).astype(float),
        "all equal (every path ties)": np.ones((n, n)),
        "zero": np.zeros((n, n)),
        "convex in the jump (uniform is best)": np.maximum(gaps, 0).astype(float) ** 2,
        "cheap long jumps": np.where(gaps > 0, 1.0 / np.maximum(gaps, 1), 0.0),
    }


@pytest.mark.parametrize("n", range(2, 9))
def test_bellman_path_matches_brute_force_on_random_and_structured_costs(n):
    rng = np.random.default_rng(n)
    for name, cost in structured_costs(n, rng).items():
        for nfe in range(1, n - 1):
            expected_path, expected_cost = brute_force_path(cost, nfe)
            path = boss_path(cost, nfe)
            assert path == expected_path, (name, nfe)
            assert path_cost(cost, path) == expected_cost, (name, nfe)


def test_ties_go_to_the_smallest_j():
    assert boss_path(np.ones((6, 6)), 3) == [0, 1, 2, 5]
    cost = np.zeros((5, 5))
    cost[0, 1] = 1.0  # 0→2→4 and 0→3→4 tie at 0; 0→1→4 costs 1
    assert boss_path(cost, 2) == [0, 2, 4]


def test_one_step_is_noise_to_data_and_a_budget_at_least_the_grid_is_the_whole_grid():
    cost = np.random.default_rng(0).random((11, 11))
    assert boss_path(cost, 1) == [0, 10]
    assert boss_path(cost, 10) == list(range(11))
    assert boss_path(cost, 50) == list(range(11))
    with pytest.raises(ValueError, match="nfe"):
        boss_path(cost, 0)


def constant_velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return torch.full_like(x, 0.25)


def test_boss_sigmas_for_one_step_and_for_the_whole_grid():
    assert boss_sigmas(constant_velocity, (3,), 1, k_max=10, num_samples=2).tolist() == [1.0, 0.0]
    calls = []

    def counted(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        calls.append(sigma)
        return constant_velocity(x, sigma)

    assert torch.equal(boss_sigmas(counted, (3,), 10, k_max=10, num_samples=2), boss_grid(10))
    assert torch.equal(boss_sigmas(counted, (3,), 12, k_max=10, num_samples=2), boss_grid(10))
    assert calls == []  # nothing to choose, so no trajectories


# ---- the cost matrix ------------------------------------------------------------------------------------------


def test_uniform_grid_is_one_minus_k_over_k_max():
    grid = boss_grid(100)
    assert grid.dtype == torch.float32 and grid[0] == 1 and grid[-1] == 0
    assert torch.equal(grid, torch.tensor([1 - k / 100 for k in range(101)], dtype=torch.float32))


def test_cost_matrix_of_a_velocity_linear_in_sigma_is_the_closed_form_jump_error():
    # v = a·σ: the fine Euler path moves by −(a/K)·Σσ_k, one jump by −(a/K)·(j−i)·σ_i; their gap is
    # a·(j−i)(j−i−1)/(2K²) in every element, whatever the noise.
    k_max, a, elements = 10, 3.0, 6
    cost = boss_cost_matrix(
        lambda x, sigma: a * sigma * torch.ones_like(x), boss_noise_batches((2, 3), 5, 2, seed=0), k_max
    )
    expected = torch.zeros(k_max + 1, k_max + 1, dtype=torch.float64)
    for i, j in itertools.combinations(range(k_max + 1), 2):
        expected[i, j] = elements * (a * (j - i) * (j - i - 1) / (2 * k_max**2)) ** 2
    assert cost.dtype == torch.float64 and cost.shape == (k_max + 1, k_max + 1)
    assert torch.allclose(cost, expected, rtol=1e-4, atol=1e-9)


def test_cost_matrix_of_a_linear_velocity_is_the_closed_form_jump_error():
    # v = −λx: each fine step multiplies x by q = 1 + λ/K, so x_i = q^i·ε and one jump from i to j misses
    # x_j by q^i·(q^(j−i) − 1 − (j−i)·λ/K)·ε.
    k_max, rate = 8, 0.7
    noise = torch.cat(list(boss_noise_batches((4,), 6, 4, seed=3))).double()
    cost = boss_cost_matrix(lambda x, sigma: -rate * x, boss_noise_batches((4,), 6, 4, seed=3), k_max)
    q = 1 + rate / k_max
    mean_square = noise.pow(2).sum(1).mean().item()
    expected = torch.zeros(k_max + 1, k_max + 1, dtype=torch.float64)
    for i, j in itertools.combinations(range(k_max + 1), 2):
        expected[i, j] = mean_square * q ** (2 * i) * (q ** (j - i) - 1 - (j - i) * rate / k_max) ** 2
    assert torch.allclose(cost, expected, rtol=1e-3, atol=1e-7 * expected.max().item())


def test_cost_matrix_needs_no_model_call_per_jump():
    calls = []
    progress = []
    boss_cost_matrix(
        lambda x, sigma: calls.append(sigma) or -x,
        boss_noise_batches((3,), 10, 4, seed=0),
        20,
        progress=progress.append,
    )
    assert len(calls) == 3 * 20  # three batches (4, 4, 2) × k_max
    assert progress == list(range(1, 61))


def test_noise_and_costs_do_not_depend_on_the_batch_size():
    whole = torch.cat(list(boss_noise_batches((2, 3), 7, 7, seed=5)))
    split = torch.cat(list(boss_noise_batches((2, 3), 7, 3, seed=5)))
    assert torch.equal(whole, split)
    velocity = GaussianFlow.random((2, 3), seed=1, s_low=0.3, s_high=0.8).velocity
    in_one = boss_cost_matrix(velocity, boss_noise_batches((2, 3), 7, 7, seed=5), 12)
    in_three = boss_cost_matrix(velocity, boss_noise_batches((2, 3), 7, 3, seed=5), 12)
    assert torch.allclose(in_one, in_three, rtol=1e-6, atol=1e-12)


def test_cost_matrix_rejects_a_grid_of_the_wrong_length():
    with pytest.raises(ValueError, match="k_max"):
        boss_cost_matrix(constant_velocity, boss_noise_batches((3,), 2, 2, seed=0), 10, grid=boss_grid(5))


# ---- BOSS schedules on a flow with a known exact solution -------------------------------------------------------

FLOW = GaussianFlow.random((16,), seed=1, s_low=0.2, s_high=0.6)
EVALUATION_NOISE = torch.randn(512, 16, generator=torch.Generator().manual_seed(7))


def endpoint_error(sigmas: torch.Tensor) -> float:
    """Mean squared distance of Euler's endpoint from the exact flow's, on noise BOSS never saw."""
    sampled = EULER.sample(FLOW.velocity, EVALUATION_NOISE, sigmas)
    return (sampled - FLOW.endpoint(EVALUATION_NOISE)).pow(2).sum(1).mean().item()


@pytest.fixture(scope="module")
def gaussian_cost() -> torch.Tensor:
    return boss_cost_matrix(FLOW.velocity, boss_noise_batches((16,), 64, 64, seed=0), 100)


@pytest.mark.parametrize("nfe", [2, 4, 8])
def test_boss_ends_closer_to_the_exact_flow_than_uniform_and_shifted_schedules(gaussian_cost, nfe):
    boss = boss_grid(100)[boss_path(gaussian_cost, nfe)]
    assert len(boss) == nfe + 1 and boss[0] == 1 and boss[-1] == 0 and bool((boss[1:] < boss[:-1]).all())
    for name, rival in [
        ("uniform", boss_grid(nfe)),
        ("linear", linear_sigmas(nfe)),
        ("shifted", shifted_sigmas(nfe, 3.0)),
    ]:
        assert endpoint_error(boss) < endpoint_error(rival), name


def test_boss_sigmas_is_the_bellman_path_through_the_cost_of_its_seeded_noise(gaussian_cost):
    sigmas = boss_sigmas(FLOW.velocity, (16,), 4, k_max=100, num_samples=64, batch=32, seed=0)
    assert torch.equal(sigmas, boss_grid(100)[boss_path(gaussian_cost, 4)])


def test_a_shifted_base_grid_picks_from_the_shifted_schedule():
    sigmas = boss_sigmas(FLOW.velocity, (16,), 3, k_max=30, num_samples=8, base_grid="shifted", shift=3.0)
    grid = shifted_sigmas(30, 3.0)
    assert len(sigmas) == 4 and all(value in grid.tolist() for value in sigmas.tolist())
    with pytest.raises(ValueError, match="base_grid"):
        boss_grid(10, "karras")  # type: ignore[arg-type]


# ---- the BossSchedule node -------------------------------------------------------------------------------------

SIZE = 16  # 16 px → a 2×2 latent of 4 channels with the test model's 8 px cells


def model() -> GaussianFlowModel:
    return GaussianFlowModel(GaussianFlow.random((4, 2, 2), seed=2, s_low=0.2, s_high=0.6))


def boss_params(**changes) -> BossSchedule.Params:
    values = {
        "nfe": 4,
        "k_max": 20,
        "num_samples": 6,
        "batch": 4,
        "width": SIZE,
        "height": SIZE,
        "guidance": 2.0,
        "seed": 3,
    }
    return BossSchedule.Params(**{**values, **changes})


def run_boss(
    flow_model: GaussianFlowModel,
    params: BossSchedule.Params,
    *,
    negative=None,
    cancelled: bool = False,
    progress: list | None = None,
) -> torch.Tensor:
    ctx = NodeContext(
        node_id="boss",
        node_type="BossSchedule",
        device="cpu",
        cache_root=data_home() / "cache",
        on_progress=lambda step, total, preview: progress.append((step, total)) if progress is not None else None,
        is_cancelled=lambda: cancelled,
    )
    return BossSchedule().run(ctx, params, model=flow_model, positive=conditioning(), negative=negative)["sigmas"]


def test_boss_node_computes_the_schedule_from_the_models_guided_velocity(home: Path):
    flow_model = model()
    progress: list[tuple[int, int]] = []
    negative = conditioning("blurry")
    sigmas = run_boss(flow_model, boss_params(), negative=negative, progress=progress)

    guided = GaussianFlow(flow_model.flow.mu + 0.1 * 2.0, flow_model.flow.s)
    assert torch.equal(sigmas, boss_sigmas(guided.velocity, (4, 2, 2), 4, k_max=20, num_samples=6, seed=3))
    x, sigma, positive, passed_negative, guidance = flow_model.calls[0]
    assert x.shape == (4, 4, 2, 2) and x.dtype == torch.float32
    assert sigma.ndim == 0 and sigma.dtype == torch.float32 and sigma == 1.0
    assert positive.prompts == ("a cat",) and passed_negative is negative and guidance == 2.0
    assert progress == [(step, 40) for step in range(1, 41)]  # 2 batches × k_max, one report per model call


def test_boss_node_caches_the_cost_matrix_on_disk(home: Path):
    first = run_boss(model(), boss_params())
    assert len(list((home / "cache" / "boss").glob("*.npy"))) == 1
    again = model()
    other_budget = boss_params(nfe=6, batch=6)  # neither the step budget nor the batch size is in the key
    assert len(run_boss(again, other_budget)) == 7 and again.calls == []
    assert torch.equal(run_boss(again, boss_params()), first)
    run_boss(again, boss_params(guidance=4.0))
    assert len(again.calls) == 40 and len(list((home / "cache" / "boss").glob("*.npy"))) == 2


def test_boss_node_with_a_budget_of_the_whole_grid_calls_no_model(home: Path):
    flow_model = model()
    assert torch.equal(run_boss(flow_model, boss_params(nfe=20)), boss_grid(20))
    assert flow_model.calls == []


def test_boss_node_can_be_cancelled_and_leaves_no_cache(home: Path):
    with pytest.raises(RunCancelled):
        run_boss(model(), boss_params(), cancelled=True)
    assert not list((home / "cache" / "boss").glob("*"))


def test_boss_node_shifted_grid_comes_from_the_models_schedule(home: Path):
    flow_model = model()
    sigmas = run_boss(flow_model, boss_params(base_grid="shifted"))
    grid = flow_model.default_sigmas(20, SIZE, SIZE).tolist()
    assert sigmas[0] == 1 and sigmas[-1] == 0 and all(value in grid for value in sigmas.tolist())


def test_boss_cache_key_changes_with_every_input_it_depends_on():
    flow_model = model()
    base = dict(
        model=flow_model,
        positive=conditioning(),
        negative=None,
        guidance=2.0,
        shape=(4, 2, 2),
        k_max=20,
        num_samples=6,
        seed=3,
        base_grid="uniform",
    )
    key = boss_cache_key(**base)
    assert boss_cache_key(**base) == key
    unprompted = conditioning()
    unprompted = type(unprompted)(unprompted.family, torch.ones(1, 4, 8), unprompted.pooled)
    for change in [
        {"positive": conditioning("a dog")},
        {"negative": conditioning("")},
        {"guidance": 2.5},
        {"shape": (4, 4, 4)},
        {"k_max": 21},
        {"num_samples": 7},
        {"seed": 4},
        {"base_grid": "shifted"},
        {"positive": unprompted},
    ]:
        assert boss_cache_key(**{**base, **change}) != key, change
    other_weights = model()
    other_weights.sha256 = "1" * 64
    assert boss_cache_key(**{**base, "model": other_weights}) != key

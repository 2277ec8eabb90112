"""BOSS, Bellman optimal step-size straightening (docs/algorithms.md, "BOSS schedules"), and the BossSchedule node.

BOSS picks, from a fine grid of noise levels, the few steps whose one-step Euler jumps best follow the fine
Euler trajectory of the model itself: a cost matrix of jump errors (k_max model calls per noise batch),
then a Bellman dynamic programme over it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from nodes.fields import MAX_SIDE, seed_field
from nodes.models.base import FlowModel
from nodes.models.components import Conditioning
from nodes.registry import Input, Node, NodeContext, NodeParams, node
from nodes.sampling.schedules import MAX_STEPS, SIGMAS_OUT, shifted_sigmas
from nodes.sampling.solvers import VelocityFn, euler_update
from nodes.types import SocketType

BaseGrid = Literal["uniform", "shifted"]


def boss_grid(k_max: int, base_grid: BaseGrid = "uniform", shift: float = 3.0) -> torch.Tensor:
    """The fine grid BOSS chooses nodes from: σ_k = 1 − k/k_max, or the shifted schedule with k_max steps."""
    if k_max < 1:
        raise ValueError(f"k_max must be at least 1, got {k_max}")
    if base_grid == "uniform":
        return (1 - torch.arange(k_max + 1, dtype=torch.float64) / k_max).to(torch.float32)
    if base_grid == "shifted":
        return shifted_sigmas(k_max, shift)
    raise ValueError(f"base_grid must be 'uniform' or 'shifted', got {base_grid!r}")


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


def boss_cost_matrix(
    velocity_fn: VelocityFn,
    noise_batches: Iterable[torch.Tensor],
    k_max: int,
    *,
    grid: torch.Tensor | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
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


def boss_noise_batches(
    sample_shape: Sequence[int],
    num_samples: int,
    batch: int,
    seed: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """Standard-normal noise in batches, drawn sample by sample from one seeded CPU generator, so the
    samples are the same whatever the batch size."""
    if num_samples < 1 or batch < 1:
        raise ValueError("num_samples and batch must be at least 1")
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, num_samples, batch):
        count = min(batch, num_samples - start)
        rows = [torch.randn(tuple(sample_shape), generator=generator, dtype=torch.float32) for _ in range(count)]
        yield torch.stack(rows).to(device=device, dtype=dtype)


def boss_sigmas(
    velocity_fn: VelocityFn,
    shape: Sequence[int],
    nfe: int,
    k_max: int = 100,
    num_samples: int = 100,
    batch: int = 100,
    base_grid: BaseGrid = "uniform",
    shift: float = 3.0,
    seed: int = 0,
) -> torch.Tensor:
    """A BOSS schedule of nfe Euler steps for `velocity_fn` on samples of `shape` (one sample, no batch dim)."""
    grid = boss_grid(k_max, base_grid, shift)
    if nfe >= k_max:
        return grid  # every grid node is a step: nothing to choose, no model calls needed
    cost = boss_cost_matrix(velocity_fn, boss_noise_batches(shape, num_samples, batch, seed), k_max, grid=grid)
    return grid[boss_path(cost, nfe)]


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


def boss_cache_key(
    model: FlowModel,
    positive: Conditioning,
    negative: Conditioning | None,
    guidance: float,
    shape: Sequence[int],
    k_max: int,
    num_samples: int,
    seed: int,
    base_grid: str,
) -> str:
    """SHA-256 of canonical JSON of everything the cost matrix depends on (batch size does not: see
    `boss_noise_batches`)."""
    material = {
        "format": 1,
        "model": model.sha256,
        "positive": _conditioning_key(positive),
        "negative": _conditioning_key(negative),
        "guidance": guidance,
        "shape": list(shape),
        "k_max": k_max,
        "num_samples": num_samples,
        "seed": seed,
        "base_grid": base_grid,
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@node(
    "BossSchedule",
    category="sampling",
    inputs=[
        Input("model", SocketType.FLOW_MODEL, "The model to sample"),
        Input("positive", SocketType.CONDITIONING, "The prompt the schedule is tuned for"),
        Input("negative", SocketType.CONDITIONING, "Negative prompt, when guidance uses one", optional=True),
    ],
    outputs=[SIGMAS_OUT],
)
class BossSchedule(Node):
    """Few-step schedule found for this model and prompt (BOSS): picks the steps that best follow a fine
    trajectory. Costs num_samples × k_max model calls once; the result is cached on disk."""

    class Params(NodeParams):
        nfe: int = Field(8, ge=1, le=MAX_STEPS, description="Number of Euler steps (model calls) to plan for.")
        k_max: int = Field(
            100,
            ge=2,
            le=MAX_STEPS,
            description="Steps of the fine trajectory the steps are chosen from; finer is slower.",
        )
        num_samples: int = Field(100, ge=1, le=10_000, description="Noise samples the error is averaged over.")
        batch: int = Field(100, ge=1, le=10_000, description="Samples per model call; lower it if memory runs out.")
        width: int = Field(1024, ge=16, le=MAX_SIDE, description="Image width in pixels.")
        height: int = Field(1024, ge=16, le=MAX_SIDE, description="Image height in pixels.")
        guidance: float = Field(
            3.5,
            ge=0,
            le=100,
            description="Guidance scale; use the one you will sample with.",
            json_schema_extra={"step": 0.1},
        )
        base_grid: BaseGrid = Field(
            "uniform", description="Fine steps evenly spaced, or spaced like the model's own schedule."
        )
        seed: int = seed_field(0, "Seed of the noise samples.")

    def run(
        self,
        ctx: NodeContext,
        params: Params,
        model: FlowModel,
        positive: Conditioning,
        negative: Conditioning | None = None,
    ) -> dict[str, Any]:
        ctx.record_seed("seed", params.seed)
        shape = model.latent_shape(1, params.height, params.width)[1:]
        if params.base_grid == "shifted":
            grid = model.default_sigmas(params.k_max, params.height, params.width).to(device="cpu", dtype=torch.float32)
        else:
            grid = boss_grid(params.k_max)
        if params.nfe >= params.k_max:
            return {"sigmas": grid}  # every grid node is a step: nothing to choose, no model calls needed
        key = boss_cache_key(
            model,
            positive,
            negative,
            params.guidance,
            shape,
            params.k_max,
            params.num_samples,
            params.seed,
            params.base_grid,
        )
        folder = ctx.cache_dir("boss")
        path = None if folder is None else folder / f"{key}.npy"
        if path is not None and path.exists():
            cost = np.load(path, allow_pickle=False)
        else:
            cost = self._cost_matrix(ctx, params, model, positive, negative, shape, grid).numpy()
            if path is not None:
                partial = path.with_name(f"{key}.{os.getpid()}.partial.npy")
                np.save(partial, cost)
                os.replace(partial, path)  # never leave a half-written matrix under the real name
        return {"sigmas": grid[boss_path(cost, params.nfe)]}

    @staticmethod
    def _cost_matrix(
        ctx: NodeContext,
        params: Params,
        model: FlowModel,
        positive: Conditioning,
        negative: Conditioning | None,
        shape: Sequence[int],
        grid: torch.Tensor,
    ) -> torch.Tensor:
        total = math.ceil(params.num_samples / params.batch) * params.k_max

        def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return model.velocity(x, sigma.to(model.device), positive, negative, params.guidance)

        noise = boss_noise_batches(
            shape, params.num_samples, params.batch, params.seed, dtype=model.dtype, device=model.device
        )
        return boss_cost_matrix(
            velocity, noise, params.k_max, grid=grid, progress=lambda done: ctx.progress(done, total)
        )

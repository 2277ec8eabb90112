"""Schedules and solvers: bit-identical to diffusers' flow-matching schedulers, the right order of accuracy,
and their nodes through the registry and the executor."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

from nodes.models.base import FlowModel, VelocityQuery
from nodes.models.components import Conditioning
from nodes.models.schedules import flux_mu, pipeline_sigmas
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, node, node_spec, unregister
from nodes.sampling.boss import boss_grid
from nodes.sampling.schedules import (
    CustomSchedule,
    FluxDynamicShiftSchedule,
    LinearSchedule,
    ModelSchedule,
    ShiftedSchedule,
    custom_sigmas,
    flux_sigmas,
    linear_sigmas,
    parse_sigmas,
    shifted_sigmas,
)
from nodes.sampling.solvers import (
    ADAMS_BASHFORTH2,
    EULER,
    HEUN,
    MIDPOINT,
    SOLVERS,
    EulerSolver,
    HeunSolver,
    MidpointSolver,
    MultistepSolver,
    Solver,
    Step,
    sample_euler,
    sample_heun,
)
from nodes.types import SocketType
from pipelines.executor import Executor
from pipelines.plan import build_plan
from pipelines.workflow import load_workflow
from tests.conftest import link, workflow_dict

SD3_CONFIG = {"shift": 3.0}
FLUX_DEV_CONFIG = {
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
FLUX_SCHNELL_CONFIG = {"shift": 1.0}


def diffusers_sigmas(
    config: dict[str, Any], steps: int, image_seq_len: int | None = None, *, flux_style: bool = False
) -> torch.Tensor:
    """`scheduler.sigmas` as the SD3 pipeline (steps, mu only if dynamic) or FluxPipeline (sigmas and mu) set it."""
    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    mu = None
    if image_seq_len is not None:
        mu = flux_mu(
            image_seq_len,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
    if flux_style:
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    elif config.get("use_dynamic_shifting"):
        scheduler.set_timesteps(steps, mu=mu)
    else:
        scheduler.set_timesteps(steps)
    return scheduler.sigmas


def tokens(pixels_h: int, pixels_w: int) -> int:
    return (pixels_h // 16) * (pixels_w // 16)


# ---- schedules ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "sigmas", "checks"),
    [
        ("SD3 T=50", lambda: shifted_sigmas(50, 3.0), {1: 0.993124, 17: 0.850143, 49: 0.008929}),
        ("SD3 T=28", lambda: shifted_sigmas(28, 3.0), {1: 0.987381}),
        ("SD3 T=15", lambda: shifted_sigmas(15, 3.0), {3: 0.916958}),
        ("FLUX 1024² T=28", lambda: flux_sigmas(28, tokens(1024, 1024)), {1: 0.988409, 4: 0.949873, 27: 0.104721}),
        ("FLUX 1024² T=15", lambda: flux_sigmas(15, tokens(1024, 1024)), {2: 0.953549}),
        ("FLUX 512² T=28", lambda: flux_sigmas(28, tokens(512, 512)), {1: 0.980656}),
    ],
)
def test_schedules_reproduce_their_check_values(case, sigmas, checks):
    values = sigmas()
    for index, expected in checks.items():
        assert abs(values[index].item() - expected) < 5e-7, (case, index)


def test_flux_mu_is_calculate_shift():
    assert flux_mu(tokens(1024, 1024)) == pytest.approx(1.15)
    assert flux_mu(tokens(512, 512)) == pytest.approx(0.63)


@pytest.mark.parametrize("shift", [1.0, 3.0, 1.7, 6.0])
def test_shifted_schedule_is_bit_identical_to_the_euler_scheduler(shift):
    for steps in [*range(1, 61), 100, 250, 1000]:
        ours = shifted_sigmas(steps, shift)
        assert ours.dtype == torch.float32 and ours[-1] == 0 and len(ours) == steps + 1
        assert torch.equal(ours, diffusers_sigmas({"shift": shift}, steps)), (shift, steps)


def test_shifted_schedule_shifts_sigma_min_twice_as_diffusers_does():
    last = shifted_sigmas(50, 3.0)[-2].item()
    once = 3 * 0.001 / (1 + 2 * 0.001)
    assert last == pytest.approx(3 * once / (1 + 2 * once), abs=1e-7)  # 0.008929, not 0.002994


def test_linear_schedule_is_the_unshifted_euler_scheduler():
    for steps in (1, 2, 7, 28, 50, 333):
        assert torch.equal(linear_sigmas(steps), diffusers_sigmas({}, steps))
    assert linear_sigmas(4)[0] == 1.0 and linear_sigmas(4)[-2].item() == pytest.approx(0.001)


@pytest.mark.parametrize(("height", "width"), [(1024, 1024), (512, 512), (768, 1360), (256, 256), (2048, 2048)])
def test_flux_schedule_is_bit_identical_to_flux_pipeline_sigmas(height, width):
    for steps in (1, 2, 4, 15, 28, 50):
        expected = diffusers_sigmas(FLUX_DEV_CONFIG, steps, tokens(height, width), flux_style=True)
        assert torch.equal(flux_sigmas(steps, tokens(height, width)), expected)


@pytest.mark.parametrize(
    ("config", "flux_style"),
    [
        (SD3_CONFIG, False),
        (FLUX_DEV_CONFIG, True),
        (FLUX_SCHNELL_CONFIG, True),
        (FLUX_DEV_CONFIG, False),  # a dynamically shifted config under the SD3 pipeline: default spacing + mu
        ({**FLUX_DEV_CONFIG, "time_shift_type": "linear"}, True),
        ({"shift": 2.0, "num_train_timesteps": 500}, False),
    ],
)
def test_pipeline_sigmas_follow_the_model_config_as_its_pipeline_does(config, flux_style):
    for steps in (1, 4, 28, 50):
        for seq_len in (tokens(512, 512), tokens(1024, 1024)):
            expected = diffusers_sigmas(config, steps, seq_len, flux_style=flux_style)
            assert torch.equal(pipeline_sigmas(config, steps, seq_len, flux_style=flux_style), expected)


def test_heun_scheduler_steps_between_the_same_sigmas_as_the_euler_schedule():
    for steps in (2, 10, 28):
        heun = FlowMatchHeunDiscreteScheduler(shift=3.0)
        heun.set_timesteps(steps)
        assert torch.equal(torch.unique_consecutive(heun.sigmas), shifted_sigmas(steps, 3.0))


def test_custom_schedule_appends_the_final_zero_and_validates():
    assert custom_sigmas([1.0, 0.5, 0.2]).tolist() == pytest.approx([1.0, 0.5, 0.2, 0.0])
    assert custom_sigmas([0.9, 0.1, 0.0]).tolist() == pytest.approx([0.9, 0.1, 0.0])
    assert custom_sigmas([1.0]).dtype == torch.float32
    out_of_range = r"\[0, 1\]"
    for bad, message in [
        ([], "at least one"),
        ([0.0], "above 0"),
        ([1.0, 0.5, 0.5], "strictly decrease"),
        ([0.2, 0.5], "strictly decrease"),
        ([1.5, 0.5], out_of_range),
        ([1.0, float("nan")], out_of_range),
        ([1.0, -0.1], out_of_range),
    ]:
        with pytest.raises(ValueError, match=message):
            custom_sigmas(bad)


def test_parse_sigmas_reads_comma_separated_numbers():
    assert parse_sigmas(" 1, 0.5 ,0.25,") == [1.0, 0.5, 0.25]
    with pytest.raises(ValueError, match="'abc' is not a number"):
        parse_sigmas("1, abc")


def test_schedule_functions_reject_impossible_arguments():
    with pytest.raises(ValueError, match="steps"):
        linear_sigmas(0)
    with pytest.raises(ValueError, match="shift"):
        shifted_sigmas(10, 0.0)
    with pytest.raises(ValueError, match="differ"):
        flux_sigmas(10, 4096, base_seq_len=256, max_seq_len=256)


# ---- solvers: parity with diffusers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x_dtype", "v_dtype"),
    [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.float32, torch.float16)],
)
def test_euler_equals_the_euler_scheduler_step_bit_for_bit(x_dtype, v_dtype):
    generator = torch.Generator().manual_seed(0)
    steps = 12
    velocities = [torch.randn(2, 4, 8, 8, generator=generator).to(v_dtype) for _ in range(steps)]
    x = torch.randn(2, 4, 8, 8, generator=generator).to(x_dtype)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(steps)
    expected = x
    for t, v in zip(scheduler.timesteps, velocities):
        expected = scheduler.step(v, t, expected).prev_sample
    feed = iter(velocities)
    ours = sample_euler(lambda x_, sigma: next(feed), x, shifted_sigmas(steps, 3.0))
    assert ours.dtype == expected.dtype and torch.equal(ours, expected)


def toy_velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A nonlinear, σ-dependent field (no model needed), in x's dtype."""
    xf = x.to(torch.float32)
    return (torch.sin(3 * xf) * sigma + xf * (1 - sigma) - 0.5).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("steps", [1, 2, 9, 28])
def test_heun_equals_a_loop_of_the_heun_scheduler_step(dtype, steps):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    scheduler = FlowMatchHeunDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(steps)
    expected = x
    for index, t in enumerate(scheduler.timesteps):
        # The scheduler's sigmas list holds the level each of its model calls is made at.
        expected = scheduler.step(toy_velocity(expected, scheduler.sigmas[index]), t, expected).prev_sample
    ours = sample_heun(toy_velocity, x, shifted_sigmas(steps, 3.0))
    assert ours.dtype == dtype and torch.equal(ours, expected)


@pytest.mark.parametrize("solver", list(SOLVERS.values()), ids=list(SOLVERS))
def test_each_solver_makes_as_many_model_calls_as_it_says(solver: Solver):
    for steps in (1, 2, 5):
        calls = []
        solver.sample(
            lambda x, sigma, calls=calls: calls.append(sigma) or torch.ones_like(x),
            torch.zeros(3),
            linear_sigmas(steps),
        )
        assert len(calls) == solver.evaluations(steps)
        assert all(sigma.dtype == torch.float32 and sigma.ndim == 0 and sigma > 0 for sigma in calls)
    assert (
        EULER.evaluations(28),
        HEUN.evaluations(28),
        MIDPOINT.evaluations(28),
        ADAMS_BASHFORTH2.evaluations(28),
    ) == (28, 55, 56, 28)


@pytest.mark.parametrize("solver", list(SOLVERS.values()), ids=list(SOLVERS))
def test_each_solver_calls_back_after_every_step_and_stops_when_the_callback_raises(solver: Solver):
    seen: list[tuple[int, int]] = []
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(2))

    def record(step: Step) -> None:
        assert step.latent.shape == step.x0_estimate.shape == x.shape
        seen.append((step.done, step.total))

    solver.sample(toy_velocity, x, linear_sigmas(4), record)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

    class Stop(Exception):
        pass

    def stop_after_two(step: Step) -> None:
        if step.done == 2:
            raise Stop

    calls = []
    with pytest.raises(Stop):
        solver.sample(lambda x_, s: calls.append(s) or toy_velocity(x_, s), x, linear_sigmas(10), stop_after_two)
    assert len(calls) <= solver.evaluations(2) + 1


def test_callback_x0_estimate_is_x_minus_sigma_v_at_the_step_start():
    estimates = []
    x = torch.full((3,), 2.0)
    sample_euler(
        lambda x_, s: torch.full_like(x_, 0.5),
        x,
        custom_sigmas([1.0, 0.5]),
        lambda step: estimates.append(step.x0_estimate),
    )
    assert estimates[0].tolist() == pytest.approx([1.5] * 3)  # 2 − 1·0.5


def test_solvers_keep_the_velocity_dtype():
    x = torch.randn(4, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    for solver in SOLVERS.values():
        assert solver.sample(toy_velocity, x, linear_sigmas(3)).dtype == torch.bfloat16


# ---- solvers: order of accuracy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianFlow:
    """The rectified flow between N(0, I) noise and N(μ, diag s²) data: its velocity E[ε − x0 | x_σ] and its
    exact ODE solution are known in closed form (each coordinate's quantile moves affinely:
    x_σ = (1−σ)μ + sqrt((1−σ)²s² + σ²)·z), and the flow is curved unless s = 1."""

    mu: torch.Tensor
    s: torch.Tensor

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        variance = (1 - sigma) ** 2 * self.s**2 + sigma**2
        return (sigma - (1 - sigma) * self.s**2) / variance * (x - (1 - sigma) * self.mu) - self.mu

    def endpoint(self, noise: torch.Tensor) -> torch.Tensor:
        """Where the exact flow takes noise at σ=1 to at σ=0."""
        return self.mu + self.s * noise

    @staticmethod
    def random(shape: tuple[int, ...], seed: int, s_low: float, s_high: float) -> GaussianFlow:
        generator = torch.Generator().manual_seed(seed)
        return GaussianFlow(
            torch.randn(shape, generator=generator), s_low + (s_high - s_low) * torch.rand(shape, generator=generator)
        )


def error_at(solver: Solver, velocity, noise: torch.Tensor, exact: torch.Tensor, steps: int) -> float:
    return (solver.sample(velocity, noise, boss_grid(steps)) - exact).pow(2).mean().sqrt().item()


def convergence_ratio(solver: Solver, velocity, noise: torch.Tensor, exact: torch.Tensor, steps: int) -> float:
    """Error with `steps` uniform steps over error with twice as many: ≈ 2^order."""
    return error_at(solver, velocity, noise, exact, steps) / error_at(solver, velocity, noise, exact, 2 * steps)


NOISE = torch.randn(256, 3, generator=torch.Generator().manual_seed(7))


def test_the_gaussian_toy_flow_endpoint_is_the_exact_solution():
    flow = GaussianFlow.random((3,), seed=0, s_low=0.5, s_high=1.5)
    fine = HEUN.sample(flow.velocity, NOISE, boss_grid(400))
    assert torch.allclose(fine, flow.endpoint(NOISE), atol=1e-4)


def test_euler_converges_at_first_order_and_the_others_at_second_on_a_linear_flow():
    # dx/dσ = x: x(0) = x(1)·e^{−1}.
    exact = NOISE * torch.exp(torch.tensor(-1.0))
    assert convergence_ratio(EULER, lambda x, s: x, NOISE, exact, 16) == pytest.approx(2.0, abs=0.1)
    for solver in (HEUN, MIDPOINT, ADAMS_BASHFORTH2):
        assert convergence_ratio(solver, lambda x, s: x, NOISE, exact, 16) == pytest.approx(4.0, abs=0.4), solver.name


def test_second_order_solvers_converge_at_second_order_on_the_gaussian_flow():
    flow = GaussianFlow.random((3,), seed=0, s_low=0.5, s_high=1.5)
    exact = flow.endpoint(NOISE)
    assert convergence_ratio(EULER, flow.velocity, NOISE, exact, 32) == pytest.approx(2.0, abs=0.1)
    for solver in (HEUN, ADAMS_BASHFORTH2):
        assert convergence_ratio(solver, flow.velocity, NOISE, exact, 32) == pytest.approx(4.0, abs=0.4), solver.name
    # Midpoint's leading error term nearly cancels on this flow: at least second order.
    assert convergence_ratio(MIDPOINT, flow.velocity, NOISE, exact, 16) > 3.6
    for solver in (HEUN, MIDPOINT, ADAMS_BASHFORTH2):
        assert error_at(solver, flow.velocity, NOISE, exact, 16) < error_at(EULER, flow.velocity, NOISE, exact, 16) / 10


def test_adams_bashforth_stays_stable_on_schedules_whose_last_levels_shrink_fast():
    flow = GaussianFlow.random((3,), seed=0, s_low=0.5, s_high=1.5)
    exact = flow.endpoint(NOISE)
    for sigmas in (linear_sigmas(4), shifted_sigmas(4, 3.0), flux_sigmas(4, 4096)):
        euler = (EULER.sample(flow.velocity, NOISE, sigmas) - exact).pow(2).mean()
        multistep = (ADAMS_BASHFORTH2.sample(flow.velocity, NOISE, sigmas) - exact).pow(2).mean()
        assert multistep < euler


# ---- nodes ---------------------------------------------------------------------------------------------------


class GaussianFlowModel(FlowModel):
    """A FlowModel without weights: the Gaussian flow's velocity, with data mean μ + 0.1·guidance."""

    family = "sd3"
    source = "test:gaussian"
    sha256 = "0" * 64

    def __init__(self, flow: GaussianFlow) -> None:
        self.flow = flow
        self.calls: list[tuple[torch.Tensor, torch.Tensor, Conditioning, Conditioning | None, float]] = []

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def latent_channels(self) -> int:
        return self.flow.mu.shape[0]

    @property
    def vae_scale_factor(self) -> int:
        return 8

    def predict(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning, guidance: float | None = None
    ) -> torch.Tensor:
        return self.velocity(x, sigma, cond, guidance=guidance or 1.0)

    def velocity(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        positive: Conditioning,
        negative: Conditioning | None = None,
        guidance: float = 1.0,
        true_cfg: float = 1.0,
    ) -> torch.Tensor:
        self.calls.append((x, sigma, positive, negative, guidance))
        return GaussianFlow(self.flow.mu + 0.1 * guidance, self.flow.s).velocity(x, sigma)

    def batched_velocities(self, sigma: torch.Tensor, queries: list[VelocityQuery]) -> list[torch.Tensor]:
        return [self.velocity(q.x, sigma, q.positive, q.negative, q.guidance, q.true_cfg) for q in queries]

    def default_sigmas(self, steps: int, height: int, width: int) -> torch.Tensor:
        _, _, h, w = self.latent_shape(1, height, width)
        return pipeline_sigmas(SD3_CONFIG, steps, (h // 2) * (w // 2), flux_style=False)


def conditioning(prompt: str = "a cat") -> Conditioning:
    return Conditioning("sd3", torch.zeros(1, 4, 8), torch.zeros(1, 8), prompts=(prompt,))


def context() -> NodeContext:
    return NodeContext(node_id="n", node_type="test", device="cpu")


def run_node(cls, inputs: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
    return cls().run(context(), cls.Params(**params), **(inputs or {}))


def test_schedule_nodes_output_their_schedules():
    assert torch.equal(run_node(LinearSchedule, steps=10)["sigmas"], linear_sigmas(10))
    assert torch.equal(run_node(ShiftedSchedule, steps=28)["sigmas"], shifted_sigmas(28, 3.0))
    assert torch.equal(run_node(ShiftedSchedule, steps=20, shift=5.0)["sigmas"], shifted_sigmas(20, 5.0))
    assert torch.equal(
        run_node(FluxDynamicShiftSchedule, steps=28, width=1024, height=1024)["sigmas"],
        diffusers_sigmas(FLUX_DEV_CONFIG, 28, tokens(1024, 1024), flux_style=True),
    )
    assert torch.equal(
        run_node(FluxDynamicShiftSchedule, steps=20, width=1360, height=768)["sigmas"],
        flux_sigmas(20, tokens(768, 1360)),
    )
    assert run_node(CustomSchedule, sigmas="1, 0.6, 0.3")["sigmas"].tolist() == pytest.approx([1, 0.6, 0.3, 0])


def test_model_schedule_is_the_models_default():
    model = GaussianFlowModel(GaussianFlow.random((4, 1, 1), seed=0, s_low=0.5, s_high=1.0))
    sigmas = run_node(ModelSchedule, {"model": model}, steps=28, width=1024, height=1024)["sigmas"]
    assert torch.equal(sigmas, diffusers_sigmas(SD3_CONFIG, 28))


def test_schedule_nodes_report_bad_params_on_the_field():
    with pytest.raises(NodeError) as error:
        run_node(CustomSchedule, sigmas="1, 0.5, 0.7")
    assert error.value.field == "sigmas" and "strictly decrease" in str(error.value)
    assert CustomSchedule.check(CustomSchedule.Params(sigmas="1, x")) == [("sigmas", "'x' is not a number")]
    bad_lengths = FluxDynamicShiftSchedule.Params(base_seq_len=4096, max_seq_len=256)
    assert FluxDynamicShiftSchedule.check(bad_lengths)[0][0] == "max_seq_len"
    with pytest.raises(NodeError) as error:
        FluxDynamicShiftSchedule().run(context(), bad_lengths)
    assert error.value.field == "max_seq_len"
    with pytest.raises(ValueError):
        ShiftedSchedule.Params(shift=0)


def test_solver_nodes_output_their_solvers():
    for cls, expected in [
        (EulerSolver, EULER),
        (HeunSolver, HEUN),
        (MidpointSolver, MIDPOINT),
        (MultistepSolver, ADAMS_BASHFORTH2),
    ]:
        assert run_node(cls)["solver"] is expected


def test_sampling_nodes_declare_their_sockets():
    for cls in (LinearSchedule, ShiftedSchedule, FluxDynamicShiftSchedule, ModelSchedule, CustomSchedule):
        spec = node_spec(cls)
        assert spec["category"] == "sampling" and spec["outputs"][0] == {
            "name": "sigmas",
            "type": "SIGMAS",
            "description": spec["outputs"][0]["description"],
        }
        assert all(param["description"] for param in spec["params"])
    for cls in (EulerSolver, HeunSolver, MidpointSolver, MultistepSolver):
        spec = node_spec(cls)
        assert spec["type"] == cls.__name__ and spec["outputs"][0]["type"] == "SOLVER" and spec["description"]


@pytest.fixture
def sigmas_sink() -> Iterator[str]:
    """A throwaway output node that records the SIGMAS it receives (no built-in output node takes SIGMAS)."""

    @node("TestSigmasSink", category="test", output_node=True, inputs=[Input("sigmas", SocketType.SIGMAS)])
    class TestSigmasSink(Node):
        class Params(NodeParams):
            pass

        def run(self, ctx: NodeContext, params: NodeParams, sigmas: torch.Tensor) -> dict[str, Any]:
            ctx.emit_output("sigmas", b"", "txt", {"sigmas": sigmas})
            return {}

    yield "TestSigmasSink"
    unregister("TestSigmasSink")


def test_schedule_and_solver_nodes_run_in_a_workflow_plan(sigmas_sink):
    document = workflow_dict(
        {
            "schedule": {"type": "FluxDynamicShiftSchedule", "params": {"steps": 15, "width": 512, "height": 768}},
            "sink": {"type": sigmas_sink, "inputs": {"sigmas": link("schedule", "sigmas")}},
            "solver": {"type": "HeunSolver"},
        }
    )
    executor = Executor()
    result = executor.execute(build_plan(load_workflow(document)), run_id="r")
    assert torch.equal(result.output_items[0].meta["sigmas"], flux_sigmas(15, tokens(768, 512)))
    solver_plan = build_plan(load_workflow(document), target="solver")
    assert executor.execute(solver_plan, run_id="r2").target_outputs["solver"]["solver"] is HEUN

"""FlowChef (docs/algorithms.md, "FlowChef"): the gradient-skipping step in closed form, masked CFG, the degradation operators,
every task on tiny SD3 and FLUX models, the node's errors, and its progress through a workflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from nodes.degrade import Degradation, DegradeImage, centre_box, downsample, gaussian_blur, gaussian_kernel
from nodes.editors.flowchef import (
    DEFAULTS,
    REFERENCE_LATENT_ELEMENTS,
    FlowChefNode,
    flowchef,
    gradient_skip_step,
    latent_region,
    masked_cfg,
    masked_mse,
    sgd_lr,
)
from nodes.image import encode_png, to_pil
from nodes.models.components import Latent
from nodes.models.loader import MANAGER, LoadedModel, LoadOptions
from nodes.registry import NodeContext, NodeError, RunCancelled
from nodes.sampling.solvers import EULER
from pipelines.executor import CancelToken, Executor, RunEvent
from pipelines.plan import build_plan
from pipelines.workflow import load_workflow
from tests.tiny_models import saved_tiny_model

TEMPLATES = Path(__file__).resolve().parents[1] / "pipelines" / "templates"
STEPS = 3
# lr is stated at the reference latent size, so each SGD step pulls by 2·lr·loss_weight/262,144 = 0.39: strong, stable.
SMALL = {"lr": 51.2, "loss_weight": 1000.0}


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- the optimisation step ---------------------------------------------------------------------------------------


def closed_form_case() -> tuple[torch.Tensor, ...]:
    g = generator(3)
    x, v, y = (torch.randn(2, 4, 3, 5, generator=g) for _ in range(3))
    weight = (torch.rand(2, 1, 3, 5, generator=g) > 0.5).to(torch.float32)
    return x, v, y, weight, torch.tensor(0.7)


def test_sgd_shrinks_the_masked_residual_by_the_closed_form_factor():
    x, v, y, weight, sigma = closed_form_case()
    lr, loss_weight, iters = 2.0, 5.0, 3
    stepped = gradient_skip_step(
        x, v, sigma, lambda x0: masked_mse(x0, y, weight, loss_weight), iters=iters, lr=lr, optimizer="sgd"
    )
    before, after = x - sigma * v - y, stepped - sigma * v - y
    # The mean is per image (60 elements) and summed over the batch: 1 − 2·2·5/60 = 2/3 per iteration.
    factor = (1 - lr * 2 * loss_weight / x[0].numel()) ** iters
    inside = weight.expand_as(x).bool()
    torch.testing.assert_close(after[inside], before[inside] * factor, rtol=1e-5, atol=1e-6)
    assert torch.equal(stepped[~inside], x[~inside])


@pytest.mark.parametrize("shape", [(1, 16, 128, 128), (1, 8, 8, 8), (3, 16, 4, 6)])
def test_the_sgd_pull_per_step_is_the_same_at_every_latent_size(shape: tuple[int, ...]):
    g = generator(4)
    x, v, y = (torch.randn(shape, generator=g) for _ in range(3))
    weight, lr, loss_weight = torch.ones(shape[0], 1, *shape[2:]), 0.5, 1000.0
    latent_elements = x[0].numel()
    stepped = gradient_skip_step(
        x,
        v,
        torch.tensor(0.4),
        lambda x0: masked_mse(x0, y, weight, loss_weight),
        iters=1,
        lr=sgd_lr(lr, latent_elements),
        optimizer="sgd",
    )
    residual = x - 0.4 * v - y
    pull = 2 * lr * loss_weight / REFERENCE_LATENT_ELEMENTS  # ≈ 0.0038: the reference's FLUX value at 1024 px
    torch.testing.assert_close(stepped - 0.4 * v - y, residual * (1 - pull), rtol=1e-4, atol=1e-5)
    if latent_elements == REFERENCE_LATENT_ELEMENTS:
        assert sgd_lr(lr, latent_elements) == lr, "at 1024 px SD3/FLUX the reference's lr is used unchanged"


def test_adam_variant_is_torch_adam_on_the_same_loss():
    x, v, y, weight, sigma = closed_form_case()
    lr, iters = 0.1, 4

    def loss(x0: torch.Tensor) -> torch.Tensor:
        return masked_mse(x0, y, weight, 1000.0)

    stepped = gradient_skip_step(x, v, sigma, loss, iters=iters, lr=lr, optimizer="adam")
    latent = x.clone().requires_grad_(True)
    adam = torch.optim.Adam([latent], lr=lr)
    for _ in range(iters):
        adam.zero_grad()
        loss(latent - sigma * v).backward()
        adam.step()
    assert torch.equal(stepped, latent.detach())
    assert not torch.equal(stepped, x)


def test_the_step_never_backpropagates_into_what_made_the_velocity():
    layer = torch.nn.Linear(5, 5)
    x, _, y, weight, sigma = closed_form_case()
    v = layer(torch.randn(2, 4, 3, 5, generator=generator(4)))  # carries a graph back to the layer's weights
    gradient_skip_step(x, v, sigma, lambda x0: masked_mse(x0, y, weight, 1.0), iters=2, lr=0.5, optimizer="sgd")
    assert layer.weight.grad is None and layer.bias.grad is None


def test_masked_cfg_changes_v_only_inside_the_mask():
    g = generator(5)
    v_target, v_source = torch.randn(1, 16, 4, 4, generator=g), torch.randn(1, 16, 4, 4, generator=g)
    region = torch.zeros(1, 1, 4, 4)
    region[..., 1:3, :2] = 1.0
    guided = masked_cfg(v_target, v_source, region, 3.0)
    inside = region.expand_as(v_target).bool()
    assert torch.equal(guided[~inside], v_target[~inside])
    torch.testing.assert_close(guided[inside], (v_target + 3.0 * (v_target - v_source))[inside])


def test_the_mask_reaches_latent_cells_that_are_over_a_tenth_covered_after_the_encoders_crop():
    mask = torch.zeros(1, 40, 60)  # the image is cropped to 48×32 px: a 6×4 latent
    mask[0, 0:8, 0:7] = 1.0  # 7/8 of cell (0, 0)
    mask[0, 8:9, 8:14] = 1.0  # 6/64 of cell (1, 1): under a tenth
    mask[0, 8:16, 40:42] = 1.0  # a quarter of cell (1, 5)
    mask[0, 16:24, 16:23] = 1.0
    mask[0, 16:24, 23:24] = 1.0  # cell (2, 2) whole
    mask[0, 32:40, :] = 1.0  # cropped away
    region = latent_region(mask, (2, 16, 4, 6), 8)
    expected = torch.zeros(2, 1, 4, 6)
    expected[:, 0, 0, 0] = expected[:, 0, 1, 5] = expected[:, 0, 2, 2] = 1.0
    assert torch.equal(region, expected)
    with pytest.raises(NodeError) as error:
        latent_region(torch.zeros(1, 64, 64), (1, 16, 4, 6), 8)
    assert error.value.field == "mask"


# ---- operators -----------------------------------------------------------------------------------------------


def test_super_resolution_shrinks_by_averaging_and_keeps_a_flat_image_flat():
    flat = torch.full((1, 3, 40, 60), 0.3)
    low = downsample(flat, 4)
    assert low.shape == (1, 3, 10, 15)
    assert torch.allclose(low, torch.full_like(low, 0.3))
    ramp = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(downsample(ramp, 2)[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))


@pytest.mark.parametrize("size,sigma", [(1, 1.0), (11, 1.0), (9, 3.0)])
def test_gaussian_kernel_sums_to_one_and_blur_keeps_a_flat_image_flat(size: int, sigma: float):
    taps = gaussian_kernel(size, sigma)
    assert taps.shape == (size,) and torch.argmax(taps) == size // 2
    torch.testing.assert_close(torch.outer(taps, taps).sum(), torch.tensor(1.0))
    flat = torch.full((2, 3, 12, 10), 0.6)
    torch.testing.assert_close(gaussian_blur(flat, size, sigma), flat)


def test_gaussian_blur_spreads_a_point_into_the_kernel():
    point = torch.zeros(1, 1, 9, 9)
    point[..., 4, 4] = 1.0
    taps = gaussian_kernel(5, 1.0)
    blurred = gaussian_blur(point, 5, 1.0)
    torch.testing.assert_close(blurred[0, 0, 2:7, 2:7], torch.outer(taps, taps))
    assert blurred[0, 0, :2].abs().max() == 0


def test_an_even_blur_kernel_is_refused():
    with pytest.raises(ValueError):
        gaussian_kernel(4, 1.0)
    deblur = FlowChefNode.Params(task="inverse_problem", operator="gaussian_deblur", blur_kernel=4)
    problems = FlowChefNode.check(deblur)
    assert [field for field, _ in problems] == ["blur_kernel"]
    assert FlowChefNode.check(FlowChefNode.Params(task="edit", blur_kernel=4)) == []


def test_box_inpainting_blanks_the_centre_box():
    image = torch.ones(1, 3, 10, 12)
    blanked = Degradation("box_inpaint", box_size=4).apply(image)
    assert torch.equal(blanked[0, 0], 1.0 - centre_box(10, 12, 4))
    assert blanked[0, 0, 3:7, 4:8].sum() == 0 and blanked.sum() == 3 * (120 - 16)


@pytest.mark.parametrize(
    "params,measured,view",
    [
        ({"operator": "super_resolution", "factor": 4}, (10, 15), (40, 60)),
        ({"operator": "super_resolution", "factor": 2}, (20, 30), (40, 60)),
        ({"operator": "gaussian_deblur"}, (40, 60), (40, 60)),
        ({"operator": "box_inpaint"}, (40, 60), (40, 60)),
    ],
)
def test_degrade_image_sizes(params: dict[str, Any], measured: tuple[int, int], view: tuple[int, int]):
    image = torch.rand(2, 3, 40, 60, generator=generator())
    out = DegradeImage().run(
        NodeContext(node_id="d", node_type="DegradeImage", device="cpu"), DegradeImage.Params(**params), image=image
    )
    assert out["image"].shape == (2, 3, *measured) and out["view"].shape == (2, 3, *view)
    assert out["image"].min() >= 0 and out["image"].max() <= 1


def test_degrade_image_refuses_an_image_too_small_to_shrink():
    with pytest.raises(NodeError) as error:
        DegradeImage().run(
            NodeContext(node_id="d", node_type="DegradeImage", device="cpu"),
            DegradeImage.Params(operator="super_resolution", factor=4),
            image=torch.rand(1, 3, 3, 8),
        )
    assert error.value.field == "factor"


# ---- on tiny models ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    loaded = {}
    for family in ("sd3", "flux"):
        folder = saved_tiny_model(family, tmp_path_factory.mktemp(family) / "model")
        loaded[family] = MANAGER.get(str(folder), LoadOptions(device="cpu"))
    yield loaded
    MANAGER.free()


def scene(loaded: LoadedModel) -> dict[str, Any]:
    """Prompts, a 36×40 px source (cropped to 32×32 when encoded), a mask of its left half, and a schedule."""
    encode = loaded.text_encoder.encode
    image = torch.rand(1, 3, 36, 40, generator=generator(1))
    mask = torch.zeros(1, 36, 40)
    mask[..., :16] = 1.0
    return {
        "image": image,
        "latent": loaded.vae.encode(image),
        "mask": mask,
        "target": encode(["a red circle on a blue background"]),
        "source": encode(["a green square on a blue background"]),
        "negative": encode([""]),
        "sigmas": loaded.model.default_sigmas(STEPS, 32, 32),
    }


def run(
    loaded: LoadedModel, task: str, operator: str | None = None, *, seed: int = 0, **overrides: Any
) -> torch.Tensor:
    s = scene(loaded)
    degradation = Degradation(operator, factor=4) if operator else None
    inputs: dict[str, Any] = {"source_latent": s["latent"]}
    if task == "edit":
        inputs |= {"source": s["source"], "mask": s["mask"]}
    elif task == "inpaint":
        inputs |= {"mask": s["mask"]}
    elif operator != "box_inpaint":
        inputs = {"vae": loaded.vae, "measurement": degradation.apply(s["image"])}
    settings = {
        "max_steps": STEPS,
        "source_steps": 1,
        "opt_iters": 2,
        "optimizer": "sgd",
        "guidance": 2.0,
        "true_cfg": 2.0,
        **SMALL,
        **inputs,
        **overrides,
    }
    return flowchef(
        loaded.model,
        s["sigmas"],
        s["target"],
        task=task,
        negative=s["negative"],
        degradation=degradation,
        generator=generator(seed),
        **settings,
    )


TASKS = [
    ("edit", None),
    ("inpaint", None),
    ("inverse_problem", "box_inpaint"),
    ("inverse_problem", "super_resolution"),
    ("inverse_problem", "gaussian_deblur"),
]


@pytest.mark.parametrize("family", ["sd3", "flux"])
@pytest.mark.parametrize("task,operator", TASKS, ids=[op or task for task, op in TASKS])
def test_every_task_runs_on_both_families_and_is_deterministic_per_seed(
    tiny, family: str, task: str, operator: str | None
):
    loaded = tiny[family]
    first = run(loaded, task, operator)
    # SR: a 9×10 measurement ×4 is 36×40 px, cropped like the encoder's input to 32×32 px.
    assert first.shape == (1, 16, 4, 4) and first.dtype == loaded.model.dtype
    assert torch.isfinite(first).all()
    assert torch.equal(run(loaded, task, operator), first)
    assert not torch.equal(run(loaded, task, operator, seed=1), first)


def test_without_steering_it_is_plain_euler_sampling_from_seeded_noise(tiny):
    loaded = tiny["flux"]
    s = scene(loaded)
    unsteered = run(loaded, "edit", max_steps=0)
    noise = loaded.model.noise_like(s["latent"], generator(0))
    expected = EULER.sample(
        lambda x, sigma: loaded.model.velocity(x, sigma, s["target"], s["negative"], 2.0),
        noise,
        s["sigmas"],
        lambda *args: None,
    )
    assert torch.equal(unsteered, expected)


def test_an_empty_mask_edit_reconstructs_the_source(tiny):
    loaded = tiny["sd3"]
    source = scene(loaded)["latent"]
    steered = run(loaded, "edit", mask=None)
    free = run(loaded, "edit", mask=None, max_steps=0)
    assert (steered - source).norm() < 0.5 * (free - source).norm()
    # No mask, no masked CFG: the source prompt and true_cfg change nothing.
    assert torch.equal(run(loaded, "edit", mask=None, true_cfg=5.0, source=None), steered)


def test_inpaint_keeps_the_unmasked_region_closer_to_the_source_than_free_sampling(tiny):
    loaded = tiny["flux"]
    source = scene(loaded)["latent"]
    known = (slice(None), slice(None), slice(None), slice(2, 4))  # the right half; the left half is filled
    steered = run(loaded, "inpaint")
    free = run(loaded, "inpaint", max_steps=0)
    assert (steered - source)[known].norm() < 0.5 * (free - source)[known].norm()


def test_masked_cfg_needs_a_mask_and_true_cfg_above_one(tiny):
    loaded = tiny["flux"]
    assert torch.equal(run(loaded, "edit", true_cfg=1.0), run(loaded, "edit", true_cfg=0.5))
    assert not torch.equal(run(loaded, "edit", true_cfg=3.0), run(loaded, "edit", true_cfg=1.0))


def test_source_steps_pull_the_whole_image_to_the_source(tiny):
    loaded = tiny["flux"]
    # Without masked CFG, source steps over every step are an edit with an empty mask, to the last bit.
    everywhere = run(loaded, "edit", true_cfg=1.0, source_steps=STEPS)
    assert torch.equal(everywhere, run(loaded, "edit", true_cfg=1.0, mask=None))
    assert not torch.equal(everywhere, run(loaded, "edit", true_cfg=1.0, source_steps=0))


def test_max_steps_is_clamped_and_source_steps_past_it_do_nothing(tiny):
    loaded = tiny["flux"]
    assert torch.equal(run(loaded, "edit", max_steps=100), run(loaded, "edit", max_steps=STEPS))
    assert torch.equal(
        run(loaded, "edit", max_steps=2, source_steps=50), run(loaded, "edit", max_steps=2, source_steps=2)
    )
    assert not torch.equal(run(loaded, "edit", max_steps=2), run(loaded, "edit", max_steps=1))


def test_one_model_call_per_step_and_no_gradients_in_the_weights(tiny, monkeypatch: pytest.MonkeyPatch):
    loaded = tiny["sd3"]
    calls: list[int] = []
    original = loaded.model.velocities

    def counted(sigma: torch.Tensor, queries: list) -> list[torch.Tensor]:
        calls.append(len(queries))
        return original(sigma, queries)

    monkeypatch.setattr(loaded.model, "velocities", counted)
    run(loaded, "edit", max_steps=2)
    assert calls == [2, 2, 1]  # target and source while steering (masked CFG), then the target alone
    calls.clear()
    run(loaded, "inverse_problem", "super_resolution")
    assert calls == [1] * STEPS
    modules = [loaded.model.transformer, loaded.vae.vae]
    assert all(p.grad is None for module in modules for p in module.parameters())


# ---- the node ------------------------------------------------------------------------------------------------


def node_run(loaded: LoadedModel, params: dict[str, Any], **inputs: Any) -> dict[str, Any]:
    s = scene(loaded)
    wired = {"model": loaded.model, "target": s["target"], "sigmas": s["sigmas"], **inputs}
    ctx = NodeContext(node_id="chef", node_type="FlowChef", device="cpu")
    return FlowChefNode().run(ctx, FlowChefNode.Params(**params), **wired)


@pytest.mark.parametrize(
    "params,given,field",
    [
        ({"task": "edit"}, {"negative"}, "source_latent"),
        ({"task": "inpaint"}, {"negative", "source_latent"}, "mask"),
        ({"task": "inverse_problem", "operator": "box_inpaint"}, {"negative"}, "source_latent"),
        ({"task": "inverse_problem", "operator": "super_resolution"}, {"negative", "measurement"}, "vae"),
        ({"task": "inverse_problem", "operator": "gaussian_deblur"}, {"negative", "vae"}, "measurement"),
        ({"task": "edit", "true_cfg": 2.0}, {"negative", "source_latent", "mask"}, "source"),
        ({"task": "edit", "guidance": 4.0}, {"source_latent"}, "negative"),
    ],
)
def test_missing_inputs_are_named(tiny, params: dict[str, Any], given: set[str], field: str):
    loaded = tiny["sd3"]
    s = scene(loaded)
    available = {
        "negative": s["negative"],
        "source_latent": Latent(s["latent"], "sd3"),
        "mask": s["mask"],
        "vae": loaded.vae,
        "measurement": downsample(s["image"], 4),
    }
    with pytest.raises(NodeError) as error:
        node_run(loaded, params, **{name: available[name] for name in given})
    assert error.value.field == field and error.value.hint


def test_inputs_from_another_family_are_refused(tiny):
    flux_prompt = tiny["flux"].text_encoder.encode(["a red circle"])
    with pytest.raises(NodeError) as error:
        node_run(tiny["sd3"], {"task": "edit"}, target=flux_prompt)
    assert error.value.field == "target" and "flux" in str(error.value)
    with pytest.raises(NodeError) as error:
        node_run(tiny["sd3"], {"task": "inverse_problem"}, vae=tiny["flux"].vae)
    assert error.value.field == "vae"


@pytest.mark.parametrize(
    "task,operator,kind",
    [
        ("edit", "super_resolution", "edit"),
        ("inverse_problem", "super_resolution", "restore"),
        ("inpaint", None, "inpaint"),
    ],
)
def test_blank_params_take_the_defaults_of_the_model_and_task(tiny, task: str, operator: str | None, kind: str):
    loaded = tiny["flux"]
    s = scene(loaded)
    row = DEFAULTS[kind]["flux"]
    shared = {"task": task, "loss_weight": 10.0, "seed": 3, **({"operator": operator} if operator else {})}
    if task == "inverse_problem":
        inputs = {"vae": loaded.vae, "measurement": Degradation("super_resolution", factor=4).apply(s["image"])}
    else:
        inputs = {"source_latent": Latent(s["latent"], "flux"), "mask": s["mask"], "source": s["source"]}
    blank = node_run(loaded, shared, **inputs)["latent"].samples
    explicit = node_run(
        loaded,
        {
            **shared,
            "lr": row.lr,
            "opt_iters": row.opt_iters,
            "optimizer": row.optimizer,
            "source_steps": row.source_steps,
            "true_cfg": row.true_cfg,
            "guidance": row.guidance,
            "max_steps": STEPS,
        },
        **inputs,
    )["latent"].samples
    assert torch.equal(blank, explicit)
    other = DEFAULTS["edit" if kind != "edit" else "restore"]["flux"]
    assert other != row, "another kind's row differs, so taking the wrong one would show"


def test_the_edit_template_reports_every_step(tiny, tmp_path: Path):
    picture = tmp_path / "in.png"
    picture.write_bytes(encode_png(to_pil(torch.rand(1, 3, 40, 60, generator=generator(2)))[0]))
    workflow = load_workflow(TEMPLATES / "edit-flowchef.json")
    overrides = {
        "Model": tiny["sd3"].model.source,
        "Source image": str(picture),
        "Steps": 4,
        "flowchef.preview_every": 2,
        "flowchef.lr": 0.05,
    }
    events: list[RunEvent] = []
    result = Executor().execute(build_plan(workflow, overrides, target="flowchef"), run_id="r", sinks=[events.append])
    progress = [e.data for e in events if e.kind == "node_progress" and e.node == "flowchef"]
    assert [(p["step"], p["total"]) for p in progress] == [(i, 4) for i in range(1, 5)]
    assert [p["step"] for p in progress if "preview_png" in p] == [2, 4]
    assert result.target_outputs["flowchef"]["latent"].samples.shape == (1, 16, 4, 6)
    assert result.seeds == {"flowchef.seed": 0, "mask.seed": 0}


def test_cancelling_stops_at_the_next_step(tiny, tmp_path: Path):
    picture = tmp_path / "in.png"
    picture.write_bytes(encode_png(to_pil(torch.rand(1, 3, 32, 32, generator=generator(2)))[0]))
    workflow = load_workflow(TEMPLATES / "inpaint-flowchef.json")
    overrides = {"Model": tiny["flux"].model.source, "Source image": str(picture), "Steps": 6}
    token = CancelToken()
    seen: list[int] = []

    def cancel_at_step_2(event: RunEvent) -> None:
        if event.kind == "node_progress" and event.node == "flowchef":
            seen.append(event.data["step"])
            if event.data["step"] == 2:
                token.cancel()

    with pytest.raises(RunCancelled):
        Executor().execute(build_plan(workflow, overrides), run_id="r", sinks=[cancel_at_step_2], cancel=token)
    assert seen == [1, 2]

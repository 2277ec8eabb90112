"""The Sampler node: per-step progress with previews, cancellation at every step, img2img strength, family checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nodes.sampling.sampler as sampler_module
from nodes.models.loader import MANAGER
from nodes.registry import RunCancelled
from nodes.sampling.sampler import start_index
from pipelines.executor import CancelToken, Executor, NodeFailed, RunEvent
from pipelines.plan import build_plan
from pipelines.workflow import load_workflow
from tests.tiny_models import saved_tiny_model

TEMPLATES = Path(__file__).resolve().parents[1] / "pipelines" / "templates"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    yield {family: saved_tiny_model(family, tmp_path_factory.mktemp(family) / "model") for family in ("sd3", "flux")}
    MANAGER.free()


def txt2img(folder: Path, steps: int, **extra) -> tuple:
    workflow = load_workflow(TEMPLATES / "txt2img-sd3.json")
    overrides = {"Model": str(folder), "Steps": steps, "Width": 32, "Height": 32, **extra}
    return workflow, overrides


def test_every_step_reports_progress_and_previews_come_every_n_steps(folders, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sampler_module, "PREVIEW_INTERVAL", 0.0)
    workflow, overrides = txt2img(folders["sd3"], 6, **{"sampler.preview_every": 2})
    events: list[RunEvent] = []
    Executor().execute(build_plan(workflow, overrides), run_id="r", sinks=[events.append])
    progress = [e for e in events if e.kind == "node_progress" and e.node == "sampler"]
    assert [(e.data["step"], e.data["total"]) for e in progress] == [(i, 6) for i in range(1, 7)]
    with_preview = [e.data["step"] for e in progress if "preview_png" in e.data]
    assert with_preview == [2, 4, 6]
    assert all(e.data["preview_png"].startswith(b"\x89PNG") for e in progress if "preview_png" in e.data)


def test_previews_are_kept_a_quarter_second_apart_but_the_last_step_always_shows(folders):
    workflow, overrides = txt2img(folders["sd3"], 12, **{"sampler.preview_every": 1})
    events: list[RunEvent] = []
    Executor().execute(build_plan(workflow, overrides), run_id="r", sinks=[events.append])
    progress = [e for e in events if e.kind == "node_progress" and e.node == "sampler"]
    with_preview = [e.data["step"] for e in progress if "preview_png" in e.data]
    # A tiny model's 12 steps take far less than 12 × PREVIEW_INTERVAL: the first preview, few others, the last.
    assert with_preview[0] == 1 and with_preview[-1] == 12 and len(with_preview) < 12


def test_cancelling_mid_sampling_stops_at_the_next_step(folders):
    workflow, overrides = txt2img(folders["sd3"], 20)
    token = CancelToken()
    steps_seen: list[int] = []

    def cancel_at_step_3(event: RunEvent) -> None:
        if event.kind == "node_progress" and event.node == "sampler":
            steps_seen.append(event.data["step"])
            if event.data["step"] == 3:
                token.cancel()

    with pytest.raises(RunCancelled):
        Executor().execute(build_plan(workflow, overrides), run_id="r", sinks=[cancel_at_step_3], cancel=token)
    assert steps_seen == [1, 2, 3]


@pytest.mark.parametrize("steps,strength,expected", [(28, 1.0, 0), (28, 0.6, 11), (10, 0.25, 7), (10, 0.0, 10)])
def test_img2img_start_follows_diffusers_strength_rule(steps: int, strength: float, expected: int):
    # diffusers' img2img get_timesteps: init = min(N·strength, N); t_start = int(max(N − init, 0))
    assert start_index(steps, strength) == expected


def test_img2img_with_low_strength_stays_close_to_the_source(folders, tmp_path: Path):
    from nodes.image import encode_png, to_pil

    picture = tmp_path / "in.png"
    picture.write_bytes(encode_png(to_pil(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)))[0]))
    workflow = load_workflow(TEMPLATES / "img2img-sd3.json")
    base = {"Model": str(folders["sd3"]), "Source image": str(picture), "Width": 32, "Height": 32, "Steps": 10}
    executor = Executor()
    encoded = executor.execute(build_plan(workflow, base, target="encode"), run_id="r").target_outputs["encode"]
    low = executor.execute(build_plan(workflow, {**base, "Strength": 0.2}, target="sampler"), run_id="r")
    high = executor.execute(build_plan(workflow, {**base, "Strength": 1.0}, target="sampler"), run_id="r")
    source = encoded["latent"].samples
    near = (low.target_outputs["sampler"]["latent"].samples - source).abs().mean()
    far = (high.target_outputs["sampler"]["latent"].samples - source).abs().mean()
    assert near < far


def test_a_latent_from_another_family_is_refused_with_the_field(folders):
    workflow, overrides = txt2img(folders["sd3"], 2)
    document = json.loads(workflow.model_dump_json())
    document["nodes"]["flux"] = {"type": "LoadFlowModel", "params": {"source": str(folders["flux"])}}
    document["nodes"]["latent"]["inputs"]["model"] = {"node": "flux", "output": "model"}
    with pytest.raises(NodeFailed) as failure:
        Executor().execute(build_plan(load_workflow(document), overrides), run_id="r")
    assert failure.value.node_id == "sampler" and failure.value.field == "latent"
    assert "flux" in failure.value.message and "sd3" in failure.value.message


def test_sd3_guidance_without_the_negative_is_refused_rather_than_silently_dropped(folders):
    """SD3's CFG needs the negative; FLUX's embedded guidance does not (its true CFG is off at 1)."""
    for family, template in (("sd3", "txt2img-sd3.json"), ("flux", "txt2img-flux.json")):
        workflow = load_workflow(TEMPLATES / template)
        document = json.loads(workflow.model_dump_json())
        del document["nodes"]["sampler"]["inputs"]["negative"]
        overrides = {"Model": str(folders[family]), "Steps": 2, "Width": 32, "Height": 32, "Guidance": 7.0}
        plan = build_plan(load_workflow(document), overrides)
        if family == "flux":
            Executor().execute(plan, run_id="r")
            continue
        with pytest.raises(NodeFailed) as failure:
            Executor().execute(plan, run_id="r")
        assert failure.value.node_id == "sampler" and failure.value.field == "negative"
        assert "needs the negative conditioning" in failure.value.message


def test_sizes_that_are_not_multiples_of_16_are_invalid_before_running(folders):
    workflow, overrides = txt2img(folders["sd3"], 2, Width=40)
    from pipelines.validate import validate_workflow

    issues = validate_workflow(workflow, overrides)
    assert [(i.node, i.field, i.code) for i in issues] == [("latent", "width", "out_of_bounds")]
    assert "multiple of 16" in issues[0].message and "fed by width.value" in issues[0].message

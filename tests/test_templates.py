"""Every starter workflow in pipelines/templates validates, is saved canonically, and runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.image import encode_png, to_pil
from pipelines.jobs import RunRequest, WorkerPool
from pipelines.validate import validate_workflow
from pipelines.workflow import canonical_json, load_workflow
from storage import RunStatus

TEMPLATES = sorted((Path(__file__).resolve().parents[1] / "pipelines" / "templates").glob("*.json"))


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.name for p in TEMPLATES])
def test_template_is_valid_and_canonical(path: Path):
    workflow = load_workflow(path)
    assert validate_workflow(workflow) == []
    assert path.read_text(encoding="utf-8") == canonical_json(workflow)
    assert workflow.exposed, "a starter workflow exposes its main fields"


@pytest.fixture(scope="module")
def tiny_model_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved tiny SD3 and FLUX models standing in for real weights (no downloads here)."""
    from tests.tiny_models import saved_tiny_clip, saved_tiny_model

    folders = {
        family: saved_tiny_model(family, tmp_path_factory.mktemp(family) / "model") for family in ("sd3", "flux")
    }
    return {**folders, "clip": saved_tiny_clip(tmp_path_factory.mktemp("clip") / "model")}


def small_overrides(workflow, picture: Path, models: dict[str, Path]) -> dict[str, object]:
    """Point a template at test inputs: a small picture, a tiny model of its family (and a tiny CLIP verifier),
    a small size, few steps, a small search budget."""
    family = "flux" if "flux" in workflow.tags else "sd3"
    values = {
        "Source image": str(picture),
        "Model": str(models[family]),
        "Verifier": str(models["clip"]),
        "Width": 64,
        "Height": 64,
        "Steps": 4,
        "NFE budget": 40,
    }
    labels = {e.label for e in workflow.exposed}
    return {label: value for label, value in values.items() if label in labels}


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.name for p in TEMPLATES])
def test_template_runs(path: Path, pool: WorkerPool, tmp_path: Path, tiny_model_folders: dict[str, Path]):
    import torch

    picture = tmp_path / "input.png"
    picture.write_bytes(encode_png(to_pil(torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(0)))[0]))
    workflow = load_workflow(path)
    outcome = pool.submit(
        RunRequest(workflow=workflow, overrides=small_overrides(workflow, picture, tiny_model_folders), device="cpu")
    ).wait(300)
    assert outcome.status == RunStatus.SUCCEEDED, outcome.error
    assert any(a.kind == "image" for a in outcome.artifacts)

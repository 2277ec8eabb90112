"""Every starter workflow in pipelines/templates validates, is saved canonically, and runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.image import encode_png, to_pil
from pipelines.graph import validate_workflow
from pipelines.jobs import RunRequest, WorkerPool
from pipelines.workflow import canonical_json, load_workflow
from storage import RunStatus

TEMPLATES = sorted((Path(__file__).resolve().parents[1] / "pipelines" / "templates").glob("*.json"))


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.name for p in TEMPLATES])
def test_template_is_valid_and_canonical(path: Path):
    workflow = load_workflow(path)
    assert validate_workflow(workflow) == []
    assert path.read_text(encoding="utf-8") == canonical_json(workflow)
    assert workflow.exposed, "a starter workflow exposes its main fields"


@pytest.mark.parametrize("path", TEMPLATES, ids=[p.name for p in TEMPLATES])
def test_template_runs(path: Path, pool: WorkerPool, tmp_path: Path):
    import torch

    picture = tmp_path / "input.png"
    picture.write_bytes(encode_png(to_pil(torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(0)))[0]))
    workflow = load_workflow(path)
    overrides = {e.label: str(picture) for e in workflow.exposed if e.label == "Source image"}
    outcome = pool.submit(RunRequest(workflow=workflow, overrides=overrides, device="cpu")).wait(120)
    assert outcome.status == RunStatus.SUCCEEDED, outcome.error
    assert any(a.kind == "image" for a in outcome.artifacts)

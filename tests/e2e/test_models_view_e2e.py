"""The Models view: sources with family and hash; a run loads the embedded model, the view lists it on cpu with
its memory, and Free releases it from the model manager and the run cache (the object is really gone)."""

from __future__ import annotations

import gc
import json
import re
import weakref
from pathlib import Path

import pytest

from app.ui.views.models import describe_source, offered_sources
from pipelines.jobs import RunRequest, WorkerPool
from pipelines.workflow import load_workflow
from storage import RunStatus
from tests.conftest import running_app

STARTER = Path(__file__).resolve().parents[2] / "pipelines" / "templates" / "txt2img-embedded.json"
CHROMIUM = Path("/usr/bin/chromium")
EDITOR = "document.querySelector('.fc-root').flowcanvas"
RUN_TIMEOUT_MS = 300_000  # the first run loads the embedded model on a shared CPU


def small_starter() -> dict:
    document = json.loads(STARTER.read_text(encoding="utf-8"))
    for entry in document["nodes"].values():  # fewest steps: this is about loading, not the picture
        if "steps" in entry.get("params", {}):
            entry["params"]["steps"] = 2
    return document


def test_sources_list_the_embedded_model_with_family_and_hash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLOWCANVAS_MODEL_SOURCES", f"stabilityai/stable-diffusion-3-medium-diffusers,{tmp_path}")
    sources = offered_sources()
    assert sources[0] == "embedded:shapes"
    shapes = describe_source("embedded:shapes", with_hash=True)
    assert (shapes.kind, shapes.family) == ("embedded", "sd3")
    assert shapes.sha256 is not None and re.fullmatch(r"[0-9a-f]{64}", shapes.sha256)
    assert describe_source("embedded:shapes").sha256 is None  # hashing only on request
    hub = describe_source("stabilityai/stable-diffusion-3-medium-diffusers")
    assert (hub.kind, hub.family) == ("hub", "sd3")
    empty_folder = describe_source(str(tmp_path))
    assert empty_folder.family.startswith("unusable: ") and "model_index.json" in empty_folder.family


def test_free_releases_the_model_from_the_manager_and_the_run_cache(pool: WorkerPool) -> None:
    pool.free_models()
    outcome = pool.submit(RunRequest(workflow=load_workflow(small_starter()), device="cpu")).wait(600)
    assert outcome.status is RunStatus.SUCCEEDED
    [row] = pool.loaded_models()
    assert (row.source, row.device, row.family) == ("embedded:shapes", "cpu", "sd3")
    assert row.nbytes > 1_000_000 and set(row.held_by) == {"model manager", "cpu run cache"}
    model = next(
        entry.outputs["model"]
        for worker in pool.workers()
        for _, entry in worker.executor.cache.entries()
        if "model" in entry.outputs
    )
    alive = weakref.ref(model)
    del model
    assert pool.free_models("embedded:nothing-like-it") == 0 and pool.loaded_models() != []
    assert pool.free_models("embedded:shapes") == 1
    gc.collect()
    assert pool.loaded_models() == [] and alive() is None


def test_the_models_view_lists_a_loaded_model_and_frees_it(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-test.txt")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (tests/run.sh installs it)")
    with running_app(tmp_path / "data") as (url, _), sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(url)
        page.wait_for_function("document.querySelector('.fc-root')?.flowcanvas !== undefined")
        expect = sync_api.expect
        loaded = page.locator("#models-loaded")
        page.locator("button[role=tab]", has_text="Models").click()
        page.click("#models-free-all")  # other tests in this process may have left models loaded
        expect(page.locator("#models-status textarea, #models-status input").first).to_have_value(
            re.compile(r"^Freed every loaded model")
        )
        expect(loaded.get_by_role("gridcell", name="embedded:shapes")).to_have_count(0)
        expect(page.locator("#models-sources").get_by_role("gridcell", name="embedded:shapes")).to_have_count(1)

        page.locator("button[role=tab]", has_text="Canvas").click()
        page.evaluate(f"(w) => {{ {EDITOR}.load(w); {EDITOR}.commit(); {EDITOR}.run(); }}", small_starter())
        page.wait_for_function(
            f"['succeeded', 'failed'].includes({EDITOR}.runView.state.status)", timeout=RUN_TIMEOUT_MS
        )
        assert page.evaluate(f"{EDITOR}.runView.state.status") == "succeeded"

        page.locator("button[role=tab]", has_text="Models").click()
        row = loaded.get_by_role("row").filter(has=page.get_by_role("gridcell", name="embedded:shapes"))
        expect(row).to_have_count(1)
        expect(row).to_contain_text("cpu")
        expect(row).to_contain_text(re.compile(r"[0-9.,]+ MiB"))
        expect(row).to_contain_text("model manager, cpu run cache")

        page.click("#models-free")  # the dropdown holds the one loaded model
        expect(page.locator("#models-status textarea, #models-status input").first).to_have_value(
            "Freed 'embedded:shapes': 1 model(s) released."
        )
        expect(loaded.get_by_role("gridcell", name="embedded:shapes")).to_have_count(0)
        browser.close()

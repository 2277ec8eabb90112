"""The Batch tab in Chromium: sweep exposed fields of the canvas's workflow, see the count, queue, follow, and get
a captioned results grid with its downloads; bad input is reported in the view and queues nothing.

Runs go through the app's own worker pool on the committed embedded model at 2 steps.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.conftest import running_app
from tests.studio_e2e import (
    CHROMIUM,
    broken_header_words,
    cell_texts,
    chromium,
    markdown,
    open_app,
    open_tab,
    set_cell,
    wait_for_text,
)

pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-test.txt")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (tests/run.sh installs it)", allow_module_level=True)

PROMPTS = ("a large red circle on a blue background", "a large green square on a white background")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running_app(tmp_path_factory.mktemp("batch-data")) as running:
        yield running


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        opened = open_app(browser, server[0])
        open_tab(opened, "Batch")
        yield opened


def load_fields(page, *labels: str) -> None:
    """Load the canvas's workflow and pick `labels`, in that order (rows 0, 1, … of the values table)."""
    page.click("#batch-load")
    page.wait_for_selector("#batch-fields input[type=checkbox]")
    for label in labels:
        page.locator(f"#batch-fields input[name='{label}']").click()
    page.wait_for_function(
        "(n) => document.querySelectorAll('#batch-sweeps [data-col=\"0\"][role=gridcell]').length === n",
        arg=len(labels),
    )


def test_a_2x2_sweep_is_counted_queued_and_shown_as_a_4_image_captioned_grid(page, server, tmp_path: Path):
    _, storage = server
    load_fields(page, "Seed", "Prompt", "Steps")
    wait_for_text(page, "#batch-count", "Steps (1) = 1 run", timeout=10_000)
    assert markdown(page, "batch-count") == "Seed (1) × Prompt (1) × Steps (1) = 1 run"
    set_cell(page, "batch-sweeps", 0, 1, "1, 2")
    set_cell(page, "batch-sweeps", 1, 1, ", ".join(PROMPTS))
    set_cell(page, "batch-sweeps", 2, 1, "2")
    wait_for_text(page, "#batch-count", "= 4 runs", timeout=10_000)
    assert markdown(page, "batch-count") == "Seed (2) × Prompt (2) × Steps (1) = 4 runs"
    assert page.inner_text("#batch-queue").strip() == "Queue 4 runs"
    assert storage.list_runs() == []  # counting queues nothing

    page.click("#batch-queue")
    wait_for_text(page, "#batch-progress", "4 of 4 finished (4 succeeded")
    captions = page.locator("#batch-results .caption-label").all_inner_texts()
    expected = [
        f"#{i + 1} Seed={seed}, Prompt={prompt}, Steps=2"
        for i, (seed, prompt) in enumerate((s, p) for s in (1, 2) for p in PROMPTS)
    ]
    assert captions == expected
    assert page.locator("#batch-results img").count() == 4
    # A 2 × 2 grid (like the downloadable sheet) whose captions are shown whole, not cut with an ellipsis.
    boxes = [page.locator("#batch-results .thumbnail-item").nth(i).bounding_box() for i in range(4)]
    assert len({round(box["x"]) for box in boxes}) == 2 and len({round(box["y"]) for box in boxes}) == 2, boxes
    cut = page.locator("#batch-results .caption-label").evaluate_all(
        "(labels) => labels.filter((l) => l.scrollWidth > l.clientWidth || l.scrollHeight > l.clientHeight)"
        ".map((l) => l.innerText)"
    )
    assert cut == []
    for table in ("batch-sweeps", "batch-results-table"):
        assert broken_header_words(page, table) == [], table

    runs = storage.list_runs()
    assert len(runs) == 4 and {str(r.status) for r in runs} == {"succeeded"}
    [batch_id] = {r.batch_id for r in runs}
    assert batch_id and page.input_value("#batch-ref textarea, #batch-ref input") == batch_id
    by_index = sorted(runs, key=lambda r: r.batch_index)
    assert [(r.overrides["Seed"], r.overrides["Prompt"]) for r in by_index] == [
        (1, PROMPTS[0]),
        (1, PROMPTS[1]),
        (2, PROMPTS[0]),
        (2, PROMPTS[1]),
    ]
    # Outputs are named as stored (relative to the artifact folder), never by where the server keeps them.
    stored = [next(a.path for a in storage.list_artifacts(r.id) if a.kind == "image") for r in by_index]
    outputs_column = 4 + 3 + 1  # index, run, status, seconds; Seed, Prompt, Steps; error
    assert cell_texts(page, "batch-results-table", outputs_column) == stored
    assert not any(str(storage.home) in path or path.startswith("/") for path in stored)

    with page.expect_download() as download:
        page.click("#batch-csv-out")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
    assert [(row["run"], row["status"], row["Seed"], row["Prompt"], row["outputs"]) for row in rows] == [
        (r.id, "succeeded", str(r.overrides["Seed"]), r.overrides["Prompt"], path) for r, path in zip(by_index, stored)
    ]
    with page.expect_download() as download:
        page.click("#batch-grid")
    from PIL import Image

    with Image.open(download.value.path()) as grid:
        assert grid.width > 2 * 64 and grid.height > 2 * 64  # 2 × 2 cells of 64 px, with captions


def test_a_past_batch_reopens_by_its_id(page, server):
    _, storage = server
    [batch_id] = {r.batch_id for r in storage.list_runs() if r.batch_id}
    page.fill("#batch-ref textarea, #batch-ref input", "")
    page.click("#batch-show")
    wait_for_text(page, "#batch-message", "no batch with id", timeout=10_000)
    page.fill("#batch-ref textarea, #batch-ref input", batch_id)
    page.click("#batch-show")
    wait_for_text(page, "#batch-progress", f"batch {batch_id}: 4 of 4 finished", timeout=10_000)
    assert page.locator("#batch-results .caption-label").count() == 4


def test_a_bad_range_is_reported_and_nothing_can_be_queued(page, server):
    _, storage = server
    before = len(storage.list_runs())
    load_fields(page, "Seed")
    set_cell(page, "batch-sweeps", 0, 1, "1..3:x")
    wait_for_text(page, "#batch-count", "not a range", timeout=10_000)
    assert "1..3:x" in markdown(page, "batch-count")
    assert page.locator("#batch-queue").is_disabled()
    set_cell(page, "batch-sweeps", 0, 1, "")
    wait_for_text(page, "#batch-count", "Seed: enter at least one value", timeout=10_000)
    assert page.locator("#batch-queue").is_disabled()
    assert len(storage.list_runs()) == before


def test_zipped_fields_of_unequal_lengths_are_refused(page):
    load_fields(page, "Seed", "Steps")
    set_cell(page, "batch-sweeps", 0, 1, "1, 2, 3")
    set_cell(page, "batch-sweeps", 1, 1, "2, 3")
    set_cell(page, "batch-sweeps", 1, 2, "1")  # the same group as Seed: zipped
    wait_for_text(page, "#batch-count", "zipped fields must have equal lengths", timeout=10_000)
    assert page.locator("#batch-queue").is_disabled()
    set_cell(page, "batch-sweeps", 1, 1, "2, 3, 4")
    wait_for_text(page, "#batch-count", "Seed + Steps (3) = 3 runs", timeout=10_000)


def test_nothing_to_run_is_refused(page):
    load_fields(page)
    wait_for_text(page, "#batch-count", "nothing to run", timeout=10_000)
    assert page.locator("#batch-queue").is_disabled()


def test_a_jobs_csv_with_a_column_that_is_no_field_is_refused_and_a_matching_one_counts(page, server, tmp_path):
    _, storage = server
    before = len(storage.list_runs())
    load_fields(page)
    bad = tmp_path / "bad.csv"
    bad.write_text("Seed,Colour\n1,#ff0000\n2,#00ff00\n", encoding="utf-8")
    page.set_input_files("#batch-csv input[type=file]", str(bad))
    wait_for_text(page, "#batch-count", "are not fields of", timeout=10_000)
    text = markdown(page, "batch-count")
    assert "Colour" in text and "Seed" not in text.split("are not fields")[0]
    assert page.locator("#batch-queue").is_disabled()

    page.locator("#batch-csv button[aria-label='Clear']").click()
    good = tmp_path / "good.csv"
    good.write_text(
        'Seed,Prompt\n1,a small blue star on a black background\n2,"a large red, round circle"\n3,x\n', encoding="utf-8"
    )
    page.set_input_files("#batch-csv input[type=file]", str(good))
    wait_for_text(page, "#batch-count", "Seed + Prompt (3) = 3 runs", timeout=10_000)
    assert not page.locator("#batch-queue").is_disabled()
    assert len(storage.list_runs()) == before

"""The Runs tab in Chromium: the history (still there after a restart), the queue (pause, cancel a queued run,
move one to the front, resume) and a run's page (outputs, timings, values; re-run gives the same image; open in
canvas). Runs are queued through the HTTP API (gradio_client) on the committed embedded model at 2 steps.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client

from tests.conftest import running_app
from tests.studio_e2e import (
    CHROMIUM,
    EDITOR,
    STARTER,
    broken_header_words,
    cell_texts,
    chromium,
    markdown,
    open_app,
    open_tab,
    pixels,
    wait_for_text,
)

pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-test.txt")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (tests/run.sh installs it)", allow_module_level=True)

FAST = {"Steps": 2, "Prompt": "a large yellow square on a purple background", "Seed": 7}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running_app(tmp_path_factory.mktemp("runs-data")) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server[0], verbose=False)


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def page(server, browser):
    opened = open_app(browser, server[0])
    open_tab(opened, "Runs")
    yield opened


def submit(client: Client, values: dict, *, wait: bool) -> str:
    run_id, _, _, issues = client.predict(STARTER, values, None, wait, api_name="/run")
    assert issues == [] and run_id, issues
    return run_id


def image_pixels(storage, run_id: str) -> np.ndarray:
    [image] = [a for a in storage.list_artifacts(run_id) if a.kind == "image"]
    return pixels(storage.artifacts.absolute(image.path))


def wait_for_cell(page, table: str, column: int, text: str) -> None:
    page.wait_for_function(
        '([table, column, text]) => [...document.querySelectorAll(`#${table} [role=gridcell][data-col="${column}"]`)]'
        ".some((cell) => cell.innerText.trim() === text)",
        arg=[table, column, text],
        timeout=60_000,
    )


def click_row(page, table: str, column: int, text: str) -> None:
    """Select the row of `#table` whose cell in `column` reads `text`."""
    page.locator(f'#{table} [role="gridcell"][data-col="{column}"]', has_text=text).first.click()


def wait_for_history_status(page, run_id: str, status: str) -> None:
    """Until the history row of `run_id` shows `status` (the tab's timer refreshes the table)."""
    page.wait_for_function(
        "([id, status]) => [...document.querySelectorAll('#runs-history [role=row]')].some((row) =>"
        " row.querySelector('[data-col=\"0\"]')?.innerText.trim() === id"
        " && row.querySelector('[data-col=\"1\"]')?.innerText.trim() === status)",
        arg=[run_id, status],
        timeout=120_000,
    )


def shown_whole(page, selector: str) -> dict:
    """How the image `selector` is drawn: its object-fit, its box and its own size, once it has loaded (measured
    before, a busy machine reads the size of an image still on its way)."""
    image = page.locator(selector).first
    image.evaluate(
        "(img) => img.complete || new Promise((done) => { img.onload = img.onerror = done; })", timeout=30_000
    )
    return image.evaluate(
        "(img) => ({fit: getComputedStyle(img).objectFit, box: [img.clientWidth, img.clientHeight],"
        " natural: [img.naturalWidth, img.naturalHeight]})"
    )


def test_a_run_page_shows_outputs_timings_values_and_a_rerun_gives_the_same_image(page, server, client):
    _, storage = server
    run_id = submit(client, FAST, wait=True)
    page.click("#runs-refresh")
    wait_for_history_status(page, run_id, "succeeded")
    click_row(page, "runs-history", 0, run_id)
    wait_for_cell(page, "runs-summary", 1, run_id)
    assert page.locator("#runs-outputs img").count() == 1
    # The 64-px output whole (not cropped to a strip), at a size one can see.
    drawn = shown_whole(page, "#runs-outputs img")
    assert drawn["natural"] == [64, 64] and drawn["fit"] == "contain", drawn
    assert 128 <= min(drawn["box"]) and max(drawn["box"]) <= 2 * min(drawn["box"]), drawn
    for table in ("runs-history", "runs-summary", "runs-timings", "runs-values", "runs-seeds"):
        assert broken_header_words(page, table) == [], table
    timed = cell_texts(page, "runs-timings", 0)
    assert {"sampler", "decode", "save"} <= set(timed)
    assert all(float(seconds) >= 0 for seconds in cell_texts(page, "runs-timings", 1))
    values = dict(zip(cell_texts(page, "runs-values", 0), cell_texts(page, "runs-values", 1)))
    assert values == {"Steps": "2", "Prompt": FAST["Prompt"], "Seed": "7"}
    assert cell_texts(page, "runs-seeds", 0) == ["noise.seed"] and cell_texts(page, "runs-seeds", 1) == ["7"]
    assert '"device"' in page.inner_text("#runs-environment")

    page.click("#runs-rerun")
    wait_for_text(page, "#runs-page-message", f"of {run_id}: ", timeout=30_000)
    rerun_id = markdown(page, "runs-page-message").split()[1]
    assert rerun_id != run_id
    wait_for_cell(page, "runs-summary", 1, rerun_id)
    wait_for_cell(page, "runs-summary", 1, "succeeded")  # the timer refreshes the page until the run ends
    # The message follows the re-run to its end too (it said "queued" for good before).
    wait_for_text(page, "#runs-page-message", f"re-run {rerun_id} of {run_id}: succeeded in ", timeout=30_000)
    assert page.locator("#runs-outputs img").count() == 1
    original, rerun = storage.get_run(run_id), storage.get_run(rerun_id)
    assert rerun.overrides == original.overrides and rerun.seeds == original.seeds == {"noise.seed": 7}
    assert np.array_equal(image_pixels(storage, rerun_id), image_pixels(storage, run_id))


def test_open_in_canvas_shows_the_run_with_its_values_written_in(page, server, client):
    run_id = submit(client, {**FAST, "Seed": 12}, wait=True)
    page.fill("#runs-ref textarea, #runs-ref input", run_id)
    page.click("#runs-show")
    wait_for_cell(page, "runs-summary", 1, run_id)
    page.click("#runs-open-canvas")
    page.wait_for_function(f"{EDITOR}.graph.node('noise')?.params.seed === 12")
    assert page.evaluate(f"{EDITOR}.graph.node('schedule').params.steps") == 2
    assert page.evaluate(f"{EDITOR}.graph.node('prompt').params.text") == FAST["Prompt"]
    open_tab(page, "Runs")


def test_pause_cancel_a_queued_run_move_one_to_the_front_and_resume(page, server, client):
    _, storage = server
    page.click("#runs-pause")
    wait_for_text(page, "#runs-queue-state", "paused", timeout=10_000)
    first = submit(client, {**FAST, "Seed": 21}, wait=False)
    second = submit(client, {**FAST, "Seed": 22}, wait=False)
    third = submit(client, {**FAST, "Seed": 23}, wait=False)
    wait_for_cell(page, "runs-queue", 1, third)
    assert cell_texts(page, "runs-queue", 1) == [first, second, third]
    assert cell_texts(page, "runs-queue", 2) == ["queued"] * 3

    click_row(page, "runs-queue", 1, second)
    page.wait_for_function(
        "(id) => document.querySelector('#runs-queue-selected textarea, #runs-queue-selected input').value === id",
        arg=second,
    )
    page.click("#runs-cancel")
    wait_for_text(page, "#runs-action-message", f"cancelled {second}", timeout=10_000)
    page.wait_for_function(
        "(id) => ![...document.querySelectorAll('#runs-queue [data-col=\"1\"]')]"
        ".some((cell) => cell.innerText.trim() === id)",
        arg=second,
        timeout=10_000,
    )
    record = storage.get_run(second)
    assert str(record.status) == "cancelled" and record.started_at is None
    wait_for_history_status(page, second, "cancelled")

    click_row(page, "runs-queue", 1, third)
    page.wait_for_function(
        "(id) => document.querySelector('#runs-queue-selected textarea, #runs-queue-selected input').value === id",
        arg=third,
    )
    page.click("#runs-front")
    wait_for_text(page, "#runs-action-message", f"moved {third} front", timeout=10_000)
    page.wait_for_function(
        '(id) => document.querySelector(\'#runs-queue [data-row="0"][data-col="1"]\')?.innerText.trim() === id',
        arg=third,
        timeout=10_000,
    )
    assert cell_texts(page, "runs-queue", 1) == [third, first]
    assert {str(storage.get_run(run_id).status) for run_id in (first, third)} == {"queued"}

    page.click("#runs-resume")
    wait_for_text(page, "#runs-queue-state", "The queue is running", timeout=10_000)
    page.wait_for_function(
        "() => document.querySelectorAll('#runs-queue [data-col=\"1\"]').length === 0", timeout=120_000
    )
    started = {run_id: storage.get_run(run_id).started_at for run_id in (first, third)}
    assert started[third] < started[first]  # moved to the front: ran first
    wait_for_history_status(page, first, "succeeded")
    wait_for_history_status(page, third, "succeeded")


def test_runs_are_still_listed_after_a_server_restart(browser, tmp_path: Path):
    home = tmp_path / "data"
    with running_app(home) as (url, _):
        client = Client(url, verbose=False)
        kept = submit(client, FAST, wait=True)
        marked_up = copy.deepcopy(STARTER)
        marked_up["name"] = "<b>restart</b> check"
        named, status, _, _ = client.predict(marked_up, FAST, None, True, api_name="/run")
        assert status == "succeeded"
    with running_app(home) as (url, storage):
        assert {r.id for r in storage.list_runs()} == {kept, named}
        restarted = open_app(browser, url)
        open_tab(restarted, "Runs")
        wait_for_history_status(restarted, kept, "succeeded")
        wait_for_history_status(restarted, named, "succeeded")
        # The name is user text: shown as written, never as markup.
        wait_for_cell(restarted, "runs-history", 2, "<b>restart</b> check")
        assert restarted.locator("#runs-history b").count() == 0
        click_row(restarted, "runs-history", 0, kept)
        wait_for_cell(restarted, "runs-summary", 1, kept)
        assert restarted.locator("#runs-outputs img").count() == 1
        restarted.close()

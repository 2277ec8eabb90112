"""What the canvas shows of a run (app.ui.canvas_runs): node states from the worker's events, relayed live, rebuilt
from storage after a restart; and the upload store behind the image widget. No browser here (see
test_canvas_e2e.py for the same through Chromium)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from app.ui.canvas_runs import CanvasRuns, RunState
from app.ui.uploads import UploadRefused, store_upload
from pipelines.executor import RunEvent
from pipelines.jobs import RunRequest, WorkerPool
from pipelines.workflow import parse_workflow
from storage import Storage
from tests.conftest import link, workflow_dict
from tests.support_nodes import STEP_REACHED


def url_of(path: str) -> str:
    return f"/files/{path}"


def swatch() -> dict:
    return workflow_dict(
        {
            "swatch": {"type": "EmptyImage", "params": {"width": 8, "height": 8, "color": "#3b82f6"}},
            "save": {"type": "SaveImage", "inputs": {"images": link("swatch", "image")}},
        }
    )


def run_to_end(pool: WorkerPool, document: dict, **request: object) -> list[dict]:
    runs = CanvasRuns(pool.storage, pool, url_of)
    handle = pool.submit(RunRequest(workflow=parse_workflow(document), device="cpu", **request))
    return list(runs.relay(handle))


def test_a_relayed_run_goes_from_queued_to_done_with_its_output_images(pool: WorkerPool):
    states = run_to_end(pool, swatch())
    assert states[0]["nodes"]["swatch"]["state"] in ("queued", "running", "done")
    final = states[-1]
    assert final["status"] == "succeeded"
    assert final["nodes"]["swatch"]["state"] == "done" and final["nodes"]["swatch"]["seconds"] >= 0
    [output] = final["outputs"]
    assert output["node"] == "save" and output["url"].startswith("/files/") and output["url"].endswith(".png")
    assert final["nodes"]["save"]["images"] == [output["url"]]
    # Run again: nothing changed, so the swatch comes from the cache (the output node always runs).
    again = run_to_end(pool, swatch())[-1]
    assert again["nodes"]["swatch"]["state"] == "cached" and again["nodes"]["save"]["state"] == "done"


def test_preview_images_show_on_their_node_and_in_the_outputs_live_and_rebuilt(pool: WorkerPool, storage: Storage):
    document = swatch()
    document["nodes"]["preview"] = {"type": "PreviewImage", "inputs": {"images": link("swatch", "image")}}
    live = run_to_end(pool, document)[-1]
    assert sorted(output["node"] for output in live["outputs"]) == ["preview", "save"]
    assert len(live["nodes"]["preview"]["images"]) == 1
    restarted = WorkerPool(storage)
    try:
        [rebuilt] = CanvasRuns(storage, restarted, url_of).follow(live["run_id"])
    finally:
        restarted.shutdown()
    assert rebuilt["nodes"]["preview"]["images"] == live["nodes"]["preview"]["images"]


def test_progress_steps_reach_the_node_while_it_runs(pool: WorkerPool):
    document = workflow_dict(
        {
            "a": {"type": "TestConst", "params": {"value": 1}},
            "slow": {"type": "TestSlow", "params": {"steps": 6, "delay": 0.05}, "inputs": {"a": link("a")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("slow")}},
        }
    )
    states = run_to_end(pool, document)
    running = [s["nodes"]["slow"] for s in states if s["nodes"].get("slow", {}).get("state") == "running"]
    assert running and all(entry["total"] == 6 for entry in running if "total" in entry)
    assert any(entry.get("step", 0) >= 1 for entry in running)
    assert states[-1]["nodes"]["slow"]["state"] == "done" and "step" not in states[-1]["nodes"]["slow"]


def test_a_failed_run_names_its_node_and_drops_the_nodes_that_never_ran(pool: WorkerPool):
    document = workflow_dict(
        {
            "a": {"type": "TestConst", "params": {"value": 1}},
            "fail": {"type": "TestFail", "inputs": {"a": link("a")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("fail")}},
        }
    )
    final = run_to_end(pool, document)[-1]
    assert final["status"] == "failed"
    assert final["nodes"]["fail"] == {"state": "failed", "error": "this node always fails"}
    assert final["error"]["canvas_node"] == "fail" and final["error"]["field"] == "user"
    assert "sink" not in final["nodes"] and final["nodes"]["a"]["state"] == "done"


def test_cancel_stops_the_run_and_marks_the_node_it_stopped_in(pool: WorkerPool):
    document = workflow_dict(
        {
            "a": {"type": "TestConst"},
            "slow": {"type": "TestSlow", "params": {"steps": 2000, "delay": 0.005}, "inputs": {"a": link("a")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("slow")}},
        }
    )
    runs = CanvasRuns(pool.storage, pool, url_of)
    STEP_REACHED.clear()
    handle = pool.submit(RunRequest(workflow=parse_workflow(document), device="cpu"))
    assert STEP_REACHED.wait(10)
    assert runs.cancel(handle.run_id)
    final = list(runs.relay(handle))[-1]
    assert final["status"] == "cancelled"
    assert final["nodes"]["slow"]["state"] == "stopped" and "sink" not in final["nodes"]
    assert not runs.cancel(handle.run_id), "an ended run cannot be cancelled again"
    assert not runs.cancel("no-such-run")


def test_run_up_to_a_node_shows_only_what_it_needs(pool: WorkerPool):
    document = workflow_dict(
        {
            "a": {"type": "TestConst", "params": {"value": 2}},
            "b": {"type": "TestAdd", "inputs": {"a": link("a")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("b")}},
        }
    )
    final = run_to_end(pool, document, target="b")[-1]
    assert final["status"] == "succeeded" and set(final["nodes"]) == {"a", "b"}


def test_a_reopened_page_follows_a_held_run_and_after_a_restart_rebuilds_it_from_storage(
    pool: WorkerPool, storage: Storage
):
    live = run_to_end(pool, swatch())[-1]
    runs = CanvasRuns(storage, pool, url_of)
    replayed = list(runs.follow(live["run_id"]))
    assert replayed[-1] == live, "the worker replays every event of a run it still holds"

    restarted = WorkerPool(storage)  # a new process: no handles, only what storage kept
    try:
        [rebuilt] = CanvasRuns(storage, restarted, url_of).follow(live["run_id"])
    finally:
        restarted.shutdown()
    assert rebuilt["status"] == "succeeded" and rebuilt["outputs"] == live["outputs"]
    assert rebuilt["nodes"]["swatch"]["state"] == "done"
    assert rebuilt["nodes"]["save"]["images"] == live["nodes"]["save"]["images"]
    assert list(CanvasRuns(storage, pool, url_of).follow("no-such-run")) == []


def test_a_failed_run_rebuilt_from_storage_still_marks_its_node(pool: WorkerPool, storage: Storage):
    document = workflow_dict(
        {
            "a": {"type": "TestConst"},
            "fail": {"type": "TestFail", "inputs": {"a": link("a")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("fail")}},
        }
    )
    live = run_to_end(pool, document)[-1]
    restarted = WorkerPool(storage)
    try:
        [rebuilt] = CanvasRuns(storage, restarted, url_of).follow(live["run_id"])
    finally:
        restarted.shutdown()
    assert rebuilt["status"] == "failed" and rebuilt["nodes"]["fail"]["state"] == "failed"
    assert rebuilt["error"]["canvas_node"] == "fail"


def test_a_subgraph_node_is_done_only_when_all_its_inner_nodes_are():
    state = RunState("r", url_of)
    state.apply(RunEvent("run_queued", "r", data={"nodes": ["a", "group/x", "group/y"]}))
    state.apply(RunEvent("run_started", "r"))
    assert state.to_json()["nodes"] == {
        "a": {"state": "queued"},
        "group": {"state": "queued"},
        "group/x": {"state": "queued"},
        "group/y": {"state": "queued"},
    }
    state.apply(RunEvent("node_started", "r", "group/x"))
    state.apply(RunEvent("node_finished", "r", "group/x", data={"seconds": 0.25}))
    assert state.nodes["group"]["state"] == "running"
    assert state.nodes["group/x"] == {"state": "done", "seconds": 0.25}, "an opened subgraph shows its own nodes"
    state.apply(RunEvent("node_cached", "r", "group/y"))
    assert state.nodes["group"] == {"state": "done", "seconds": 0.25}, "one inner node ran: done, with its seconds"
    assert state.nodes["group/y"] == {"state": "cached"}


def test_nested_subgraph_paths_each_follow_their_own_nodes():
    state = RunState("r", url_of)
    state.apply(RunEvent("run_queued", "r", data={"nodes": ["outer/inner/x", "outer/y"]}))
    state.apply(RunEvent("node_finished", "r", "outer/inner/x", data={"seconds": 0.5}))
    assert state.nodes["outer/inner"] == {"state": "done", "seconds": 0.5}
    assert state.nodes["outer"]["state"] == "running", "outer/y has not run yet"
    state.apply(RunEvent("node_started", "r", "outer/y"))
    state.apply(RunEvent("run_failed", "r", "outer/y", data={"error": {"message": "boom", "node": "outer/y"}}))
    assert state.nodes["outer/y"]["error"] == "boom" and state.nodes["outer"]["state"] == "failed"
    assert state.error["canvas_node"] == "outer"
    state.apply(RunEvent("node_progress", "r", "a", data={"step": 2, "total": 4, "preview_png": b"\x89PNG"}))
    assert state.nodes["a"]["preview"].startswith("data:image/png;base64,")
    assert (state.nodes["a"]["step"], state.nodes["a"]["total"]) == (2, 4)


def png_bytes(colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_upload_is_kept_by_content_in_the_uploads_folder(tmp_path: Path):
    received = tmp_path / "gradio" / "abc" / "picture.png"
    received.parent.mkdir(parents=True)
    received.write_bytes(png_bytes())
    kept = store_upload(received, tmp_path / "uploads", tmp_path / "gradio")
    assert kept.parent == tmp_path / "uploads" and kept.suffix == ".png" and kept.read_bytes() == png_bytes()
    assert not received.exists(), "Gradio's temporary copy is removed once kept"
    received.write_bytes(png_bytes())
    assert store_upload(received, tmp_path / "uploads", tmp_path / "gradio") == kept
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == [kept.name], "no temporary file is left"


@pytest.mark.parametrize("case", ["outside", "not-an-image", "gif"])
def test_an_upload_that_is_not_a_received_image_is_refused(tmp_path: Path, case: str):
    gradio = tmp_path / "gradio"
    gradio.mkdir()
    if case == "outside":
        received = tmp_path / "elsewhere.png"
        received.write_bytes(png_bytes())
        expected = "upload route"
    elif case == "not-an-image":
        received = gradio / "notes.png"
        received.write_text("not an image")
        expected = "not an image"
    else:
        received = gradio / "anim.gif"
        Image.new("RGB", (4, 4)).save(received, format="GIF")
        expected = "GIF images are not supported"
    with pytest.raises(UploadRefused, match=expected):
        store_upload(received, tmp_path / "uploads", gradio)
    assert not (tmp_path / "uploads").exists()
    assert received.exists() == (case == "outside"), "a refused upload leaves Gradio's folder; other files stay"


def test_an_upload_of_a_huge_image_in_a_small_file_is_refused_from_its_header(tmp_path: Path):
    gradio = tmp_path / "gradio"
    gradio.mkdir()
    received = gradio / "bomb.png"
    Image.new("1", (13000, 13000)).save(received, format="PNG")  # 169 Mpx in ~20 KB
    assert received.stat().st_size < 100_000
    with pytest.raises(UploadRefused, match=r"13000×13000 px \(169 Mpx\), over the budget of 40 Mpx"):
        store_upload(received, tmp_path / "uploads", gradio)
    assert not (tmp_path / "uploads").exists()

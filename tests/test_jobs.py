"""The job worker: runs are queued rows, executed in order, stored atomically, followed by events, cancellable."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from nodes.files import INSTALL_ROOT
from pipelines.issues import WorkflowInvalid
from pipelines.jobs import RunRequest, WorkerPool
from pipelines.workflow import PNG_RUN_KEY, PNG_WORKFLOW_KEY, canonical_json, load_workflow
from storage import RunStatus, Storage
from tests.conftest import link, workflow_dict
from tests.support_nodes import EXECUTIONS, STEP_REACHED


def image_workflow(colour: str = "#336699") -> dict:
    return workflow_dict(
        {
            "seed": {"type": "Seed", "params": {"seed": 42}},
            "img": {"type": "EmptyImage", "params": {"width": 8, "height": 8, "color": colour}},
            "save": {
                "type": "SaveImage",
                "params": {"filename_prefix": "test"},
                "inputs": {"images": link("img", "image")},
            },
            "seed_sink": {"type": "TestSink", "inputs": {"value": link("seed", "seed")}},
        },
        exposed=[{"node": "img", "param": "color", "label": "Colour"}],
    )


def slow_workflow(steps: int = 2000, delay: float = 0.002) -> dict:
    return workflow_dict(
        {
            "a": {"type": "TestConst", "params": {"value": 1}},
            "slow": {"type": "TestSlow", "params": {"steps": steps, "delay": delay}, "inputs": {"a": link("a")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("slow")}},
        }
    )


def request(document: dict, **kwargs) -> RunRequest:
    return RunRequest(workflow=load_workflow(document), device="cpu", **kwargs)


def test_a_run_is_recorded_with_its_artifacts_environment_and_seeds(pool: WorkerPool, storage: Storage):
    handle = pool.submit(request(image_workflow(), overrides={"Colour": "#ff0000"}))
    outcome = handle.wait(30)
    assert outcome.status == RunStatus.SUCCEEDED
    record = storage.get_run(handle.run_id)
    assert record.status == RunStatus.SUCCEEDED
    assert record.overrides == {"Colour": "#ff0000"}
    assert record.seeds == {"seed.seed": 42}
    assert record.environment["torch"] and record.environment["device"] == "cpu"
    assert set(record.node_timings) == {"seed", "img", "save", "seed_sink"}
    kinds = sorted(a.kind for a in storage.list_artifacts(handle.run_id))
    assert kinds == ["image", "value"]
    image = next(a for a in outcome.artifacts if a.kind == "image")
    with Image.open(storage.artifacts.absolute(image.path)) as png:
        assert png.getpixel((0, 0)) == (255, 0, 0)
        embedded = load_workflow(png.text[PNG_WORKFLOW_KEY].encode())
        run_record = json.loads(png.text[PNG_RUN_KEY])
    assert embedded.nodes["img"].params["color"] == "#ff0000"  # the PNG reopens as the image it shows
    assert run_record["run_id"] == handle.run_id and run_record["seeds"] == {"seed.seed": 42}


def test_an_invalid_workflow_is_refused_before_any_row_is_written(pool: WorkerPool, storage: Storage):
    bad = image_workflow()
    bad["nodes"]["img"]["params"]["width"] = 0
    with pytest.raises(WorkflowInvalid) as invalid:
        pool.submit(request(bad))
    assert invalid.value.issues[0].node == "img"
    assert storage.list_runs() == []


def test_cancelling_a_running_run_marks_it_cancelled_and_stores_nothing(pool: WorkerPool, storage: Storage):
    STEP_REACHED.clear()
    handle = pool.submit(request(slow_workflow()))
    assert STEP_REACHED.wait(30)
    handle.cancel()
    outcome = handle.wait(30)
    assert outcome.status == RunStatus.CANCELLED
    assert storage.get_run(handle.run_id).status == RunStatus.CANCELLED
    assert storage.list_artifacts(handle.run_id) == []
    assert "sink" not in EXECUTIONS
    assert [e.kind for e in handle.events(1)][-1] == "run_cancelled"


def test_a_queued_run_cancelled_before_it_starts_never_executes(pool: WorkerPool, storage: Storage):
    STEP_REACHED.clear()
    first = pool.submit(request(slow_workflow(steps=300, delay=0.005)))
    second = pool.submit(request(image_workflow()))
    assert STEP_REACHED.wait(30)
    second.cancel()
    assert second.wait(30).status == RunStatus.CANCELLED
    assert first.wait(30).status == RunStatus.SUCCEEDED
    assert "seed_sink" not in EXECUTIONS
    assert storage.get_run(second.run_id).started_at is None


def test_a_failing_node_fails_the_run_with_its_id_and_type(pool: WorkerPool, storage: Storage):
    failing = workflow_dict(
        {
            "a": {"type": "TestConst"},
            "boom": {"type": "TestFail", "inputs": {"a": link("a")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("boom")}},
        }
    )
    handle = pool.submit(request(failing))
    outcome = handle.wait(30)
    assert outcome.status == RunStatus.FAILED
    record = storage.get_run(handle.run_id)
    assert record.error["node"] == "boom" and record.error["node_type"] == "TestFail"
    assert record.error["message"] == "this node always fails"
    failed = [e for e in handle.events(1) if e.kind == "run_failed"]
    assert failed[0].node == "boom"


def test_a_run_error_names_paths_relative_to_the_data_folder_and_the_installation(pool: WorkerPool, storage: Storage):
    """A library's message may carry where the server keeps its files; the run's error, which browsers and API
    clients read, does not."""
    installed = INSTALL_ROOT / "models" / "shapes" / "model_index.json"
    message = f"cannot open {storage.home.resolve() / 'uploads' / 'a.png'} or {installed}"
    failing = workflow_dict(
        {
            "a": {"type": "TestConst"},
            "boom": {"type": "TestFail", "params": {"user": False, "message": message}, "inputs": {"a": link("a")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("boom")}},
        }
    )
    handle = pool.submit(request(failing))
    assert handle.wait(30).status == RunStatus.FAILED
    expected = "ZeroDivisionError: cannot open uploads/a.png or models/shapes/model_index.json"
    assert storage.get_run(handle.run_id).error["message"] == expected
    [failed] = [e for e in handle.events(1) if e.kind == "run_failed"]
    assert failed.data["error"]["message"] == expected


def test_runs_execute_in_submission_order(pool: WorkerPool):
    handles = [pool.submit(request(slow_workflow(steps=3, delay=0.001))) for _ in range(3)]
    handles += [pool.submit(request(image_workflow(colour))) for colour in ("#000001", "#000002")]
    finished = [h.wait(30) for h in handles]
    started = [e.time for h in handles for e in h.events(1) if e.kind == "run_started"]
    assert started == sorted(started)
    assert all(o.status == RunStatus.SUCCEEDED for o in finished)


def test_a_late_follower_replays_every_event_from_the_start(pool: WorkerPool):
    handle = pool.submit(request(slow_workflow(steps=5, delay=0)))
    handle.wait(30)
    kinds = [e.kind for e in handle.events(1)]
    assert kinds[0] == "run_queued" and kinds[1] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("node_progress") == 5


def test_the_worker_cache_spans_runs(pool: WorkerPool):
    pool.submit(request(slow_workflow(steps=2, delay=0))).wait(30)
    EXECUTIONS.clear()
    outcome = pool.submit(request(slow_workflow(steps=2, delay=0))).wait(30)
    assert set(outcome.cached) == {"a", "slow"}
    assert dict(EXECUTIONS) == {"sink": 1}


def test_round_trip_file_database_file_png_file_keeps_canonical_json(pool: WorkerPool, storage: Storage, tmp_path):
    document = image_workflow()
    document.update(
        description="ünïcode ✓",
        tags=["b", "a"],
        groups=[{"title": "g", "nodes": ["img"]}],
        view={"x": 1.5, "y": -2, "zoom": 0.75},
    )
    document["nodes"]["img"]["position"] = [10, 20.5]
    document["nodes"]["img"]["title"] = "<b>Colour</b>"
    source = tmp_path / "in.json"
    source.write_text(json.dumps(document))
    from_file = canonical_json(load_workflow(source))

    saved = storage.create_workflow("rt", from_file)
    from_database = storage.get_workflow_version(saved.id).document
    assert from_database == from_file
    exported = tmp_path / "out.json"
    exported.write_text(from_database)
    assert canonical_json(load_workflow(exported)) == from_file

    outcome = pool.submit(request(json.loads(from_database))).wait(30)
    image = next(a for a in outcome.artifacts if a.kind == "image")
    from_png = canonical_json(load_workflow(storage.artifacts.absolute(image.path)))
    assert from_png == from_file
    assert from_file == canonical_json(load_workflow(json.loads(from_file)))  # idempotent


def started_order(storage: Storage, handles: list) -> list[str]:
    """Run ids in the order they started (storage's started_at)."""
    records = [storage.get_run(h.run_id) for h in handles]
    return [r.id for r in sorted(records, key=lambda r: r.started_at)]


def test_a_paused_queue_starts_nothing_until_resumed(pool: WorkerPool, storage: Storage):
    pool.pause()
    first = pool.submit(request(image_workflow("#000001")))
    second = pool.submit(request(image_workflow("#000002")))
    worker = pool.worker("cpu")
    assert worker.paused and pool.paused
    assert [(e.run_id, e.running, e.position) for e in pool.queue()] == [
        (first.run_id, False, 0),
        (second.run_id, False, 1),
    ]
    assert {storage.get_run(h.run_id).status for h in (first, second)} == {RunStatus.QUEUED}
    pool.resume()
    assert first.wait(30).status == RunStatus.SUCCEEDED and second.wait(30).status == RunStatus.SUCCEEDED
    assert started_order(storage, [first, second]) == [first.run_id, second.run_id]
    assert pool.queue() == []


def test_pausing_lets_the_running_run_finish_and_holds_the_next(pool: WorkerPool, storage: Storage):
    STEP_REACHED.clear()
    running = pool.submit(request(slow_workflow(steps=50, delay=0.002)))
    assert STEP_REACHED.wait(30)
    pool.pause()
    held = pool.submit(request(image_workflow()))
    assert [(e.run_id, e.running) for e in pool.queue()] == [(running.run_id, True), (held.run_id, False)]
    assert running.wait(30).status == RunStatus.SUCCEEDED
    assert storage.get_run(held.run_id).status == RunStatus.QUEUED
    assert not held.done and "seed_sink" not in EXECUTIONS
    pool.resume()
    assert held.wait(30).status == RunStatus.SUCCEEDED


def test_a_worker_started_while_the_pool_is_paused_starts_paused(pool: WorkerPool, storage: Storage):
    pool.pause()
    handle = pool.submit(request(image_workflow()))  # the first submission starts the cpu worker
    assert pool.worker("cpu").paused
    assert storage.get_run(handle.run_id).status == RunStatus.QUEUED
    pool.resume()
    assert handle.wait(30).status == RunStatus.SUCCEEDED


def test_moving_a_queued_run_changes_the_order_runs_start_in(pool: WorkerPool, storage: Storage):
    pool.pause()
    handles = [pool.submit(request(image_workflow(f"#00000{i}"))) for i in range(1, 5)]
    a, b, c, d = (h.run_id for h in handles)
    assert pool.move(d, 0)  # to the front
    assert pool.move(a, 99)  # past the end: clamped to the last place
    assert pool.move(c, 1)
    assert [e.run_id for e in pool.queue()] == [d, c, b, a]
    assert not pool.move("not-a-run", 0)
    pool.resume()
    assert all(h.wait(30).status == RunStatus.SUCCEEDED for h in handles)
    assert started_order(storage, handles) == [d, c, b, a]
    assert not pool.move(d, 0)  # ended: no longer waiting


def test_the_running_run_cannot_be_moved(pool: WorkerPool):
    STEP_REACHED.clear()
    running = pool.submit(request(slow_workflow(steps=50, delay=0.002)))
    assert STEP_REACHED.wait(30)
    assert not pool.move(running.run_id, 1)
    assert running.wait(30).status == RunStatus.SUCCEEDED


def test_cancelling_a_run_in_a_paused_queue_records_it_cancelled_at_once(pool: WorkerPool, storage: Storage):
    pool.pause()
    kept = pool.submit(request(image_workflow("#000001")))
    dropped = pool.submit(request(image_workflow("#000002")))
    assert pool.cancel(dropped.run_id)
    assert dropped.done and dropped.wait(0).status == RunStatus.CANCELLED  # while the queue is still paused
    record = storage.get_run(dropped.run_id)
    assert record.status == RunStatus.CANCELLED and record.started_at is None
    assert [e.run_id for e in pool.queue()] == [kept.run_id]
    assert [e.kind for e in dropped.events(1)] == ["run_queued", "run_cancelled"]
    assert not pool.cancel(dropped.run_id)  # already ended
    pool.resume()
    assert kept.wait(30).status == RunStatus.SUCCEEDED


def test_shutting_down_a_paused_pool_cancels_its_queued_runs(storage: Storage):
    workers = WorkerPool(storage)
    workers.pause()
    handle = workers.submit(request(image_workflow()))
    workers.shutdown()
    assert handle.wait(0).status == RunStatus.CANCELLED
    assert storage.get_run(handle.run_id).status == RunStatus.CANCELLED

"""The executor: ancestry-signature cache, wired params, memory budget, progress, cancellation, failures."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from nodes.image import encode_png, to_pil
from nodes.registry import RunCancelled
from pipelines.executor import CancelToken, Executor, NodeFailed, OutputCache, RunEvent
from pipelines.plan import build_plan
from pipelines.workflow import load_workflow
from tests.conftest import link, workflow_dict
from tests.support_nodes import EXECUTIONS


def chain_workflow(offset_b: int = 0, offset_c: int = 0) -> dict:
    """a → b → c → sink, plus an independent branch x → y → sink2."""
    return workflow_dict(
        {
            "a": {"type": "TestConst", "params": {"value": 1}},
            "b": {"type": "TestAdd", "params": {"offset": offset_b}, "inputs": {"a": link("a")}},
            "c": {"type": "TestAdd", "params": {"offset": offset_c}, "inputs": {"a": link("b")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("c")}},
            "x": {"type": "TestConst", "params": {"value": 10}},
            "y": {"type": "TestAdd", "inputs": {"a": link("x")}},
            "sink2": {"type": "TestSink", "inputs": {"value": link("y")}},
        }
    )


def run(executor: Executor, document: dict, **kwargs) -> tuple:
    events: list[RunEvent] = []
    result = executor.execute(
        build_plan(load_workflow(document), kwargs.pop("overrides", None), target=kwargs.pop("target", None)),
        run_id="r",
        sinks=[events.append],
        **kwargs,
    )
    return result, events


def sink_values(result) -> dict[str, int]:
    return {item.node_id: item.meta["value"] for item in result.output_items}


def test_first_run_executes_every_node_in_dependency_order():
    result, events = run(Executor(), chain_workflow())
    assert sink_values(result) == {"sink": 1, "sink2": 10}
    assert sorted(result.executed) == sorted(["a", "b", "c", "sink", "x", "y", "sink2"])
    started = [e.node for e in events if e.kind == "node_started"]
    assert started.index("a") < started.index("b") < started.index("c") < started.index("sink")


def test_changing_one_param_reruns_only_that_node_and_its_descendants():
    executor = Executor()
    run(executor, chain_workflow())
    EXECUTIONS.clear()
    result, events = run(executor, chain_workflow(offset_b=5))
    assert dict(EXECUTIONS) == {"b": 1, "c": 1, "sink": 1, "sink2": 1}  # output nodes always run
    assert sorted(result.cached) == ["a", "x", "y"]
    assert sink_values(result) == {"sink": 6, "sink2": 10}
    assert {e.node for e in events if e.kind == "node_cached"} == {"a", "x", "y"}


def test_unchanged_rerun_is_served_from_cache_and_node_ids_do_not_matter():
    executor = Executor()
    run(executor, chain_workflow())
    EXECUTIONS.clear()
    renamed = chain_workflow()
    renamed["nodes"]["b2"] = renamed["nodes"].pop("b")
    renamed["nodes"]["c"]["inputs"]["a"] = link("b2")
    result, _ = run(executor, renamed)
    assert dict(EXECUTIONS) == {"sink": 1, "sink2": 1}
    assert "b2" in result.cached


def test_default_values_and_explicit_defaults_share_a_cache_key():
    executor = Executor()
    run(executor, chain_workflow())
    EXECUTIONS.clear()
    explicit = chain_workflow()
    explicit["nodes"]["b"]["params"]["mode"] = "plain"
    run(executor, explicit)
    assert "b" not in EXECUTIONS


def test_overrides_rerun_the_overridden_node():
    executor = Executor()
    run(executor, chain_workflow())
    EXECUTIONS.clear()
    result, _ = run(executor, chain_workflow(), overrides={"c.offset": "7"})
    assert dict(EXECUTIONS) == {"c": 1, "sink": 1, "sink2": 1}
    assert sink_values(result)["sink"] == 8


def test_wired_param_takes_the_upstream_value_and_is_part_of_the_key():
    document = workflow_dict(
        {
            "n": {"type": "Int", "params": {"value": 3}},
            "a": {"type": "TestConst", "params": {"value": 1}},
            "add": {"type": "TestAdd", "inputs": {"a": link("a"), "offset": link("n")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("add")}},
        }
    )
    executor = Executor()
    result, _ = run(executor, document)
    assert sink_values(result) == {"sink": 4}
    document["nodes"]["n"]["params"]["value"] = 5
    EXECUTIONS.clear()
    result, _ = run(executor, document)
    assert sink_values(result) == {"sink": 6}
    assert EXECUTIONS["add"] == 1


def test_wired_value_out_of_bounds_fails_the_node_naming_its_source():
    document = workflow_dict(
        {
            "n": {"type": "TestConst", "params": {"value": 5000}},
            "a": {"type": "TestConst", "params": {"value": 1}},
            "add": {"type": "TestAdd", "inputs": {"a": link("a"), "offset": link("n")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("add")}},
        }
    )
    with pytest.raises(NodeFailed) as failure:
        run(Executor(), document)
    assert failure.value.node_id == "add" and failure.value.field == "offset"
    assert "n.value" in failure.value.message


def test_run_up_to_a_target_executes_only_its_ancestors():
    result, _ = run(Executor(), chain_workflow(), target="b")
    assert sorted(result.executed) == ["a", "b"]
    assert result.target_outputs == {"b": {"value": 1}}


def test_cache_evicts_least_recently_used_entries_beyond_its_budget():
    cache = OutputCache(budget_bytes=3000)
    tensor = torch.zeros(256)  # 1024 bytes
    for key in ("k1", "k2", "k3"):
        cache.put(key, {"t": tensor.clone()}, {})
    assert len(cache) == 2 and "k1" not in cache
    cache.get("k2")
    cache.put("k4", {"t": tensor.clone()}, {})
    assert "k2" in cache and "k3" not in cache
    assert cache.nbytes <= 3000
    cache.put("huge", {"t": torch.zeros(10_000)}, {})
    assert "huge" not in cache


def test_a_node_error_names_the_node_its_type_and_field():
    document = workflow_dict(
        {
            "a": {"type": "TestConst"},
            "boom": {"type": "TestFail", "inputs": {"a": link("a")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("boom")}},
        }
    )
    with pytest.raises(NodeFailed) as failure:
        run(Executor(), document)
    assert (failure.value.node_id, failure.value.node_type, failure.value.field) == ("boom", "TestFail", "user")
    assert failure.value.as_dict()["message"] == "this node always fails"


def test_an_unexpected_exception_is_reported_with_its_type_and_traceback():
    document = workflow_dict(
        {
            "a": {"type": "TestConst"},
            "boom": {"type": "TestFail", "params": {"user": False}, "inputs": {"a": link("a")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("boom")}},
        }
    )
    with pytest.raises(NodeFailed) as failure:
        run(Executor(), document)
    assert failure.value.message.startswith("ZeroDivisionError")
    assert "Traceback" in (failure.value.details or "")


def test_progress_events_report_every_step():
    document = workflow_dict(
        {
            "a": {"type": "TestConst"},
            "slow": {"type": "TestSlow", "params": {"steps": 4, "delay": 0}, "inputs": {"a": link("a")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("slow")}},
        }
    )
    _, events = run(Executor(), document)
    steps = [(e.data["step"], e.data["total"]) for e in events if e.kind == "node_progress"]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    finished = [e for e in events if e.kind == "node_finished" and e.node == "slow"]
    assert finished and finished[0].data["seconds"] >= 0


def test_cancel_inside_a_long_node_stops_it_at_the_next_step():
    document = workflow_dict(
        {
            "a": {"type": "TestConst"},
            "slow": {"type": "TestSlow", "params": {"steps": 1000, "delay": 0}, "inputs": {"a": link("a")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("slow")}},
        }
    )
    token = CancelToken()
    seen: list[int] = []

    def cancel_at_step_3(event: RunEvent) -> None:
        if event.kind == "node_progress":
            seen.append(event.data["step"])
            if event.data["step"] == 3:
                token.cancel()

    with pytest.raises(RunCancelled):
        Executor().execute(build_plan(load_workflow(document)), run_id="r", sinks=[cancel_at_step_3], cancel=token)
    assert seen == [1, 2, 3]
    assert "sink" not in EXECUTIONS


def test_cancel_between_nodes_runs_nothing_further():
    token = CancelToken()

    def cancel_after_b(event: RunEvent) -> None:
        if event.kind == "node_finished" and event.node == "b":
            token.cancel()

    with pytest.raises(RunCancelled):
        Executor().execute(
            build_plan(load_workflow(chain_workflow())), run_id="r", sinks=[cancel_after_b], cancel=token
        )
    assert "c" not in EXECUTIONS and "sink" not in EXECUTIONS


def test_a_failing_event_sink_does_not_break_the_run():
    def broken(event: RunEvent) -> None:
        raise RuntimeError("listener bug")

    result = Executor().execute(build_plan(load_workflow(chain_workflow())), run_id="r", sinks=[broken])
    assert sink_values(result)["sink2"] == 10


def _write_png(path: Path, colour: tuple[float, float, float]) -> None:
    image = torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    path.write_bytes(encode_png(to_pil(image)[0]))


def test_load_image_reruns_when_the_file_content_changes_and_only_then(tmp_path: Path):
    picture = tmp_path / "in.png"
    _write_png(picture, (1.0, 0.0, 0.0))
    document = workflow_dict(
        {
            "load": {"type": "LoadImage", "params": {"path": str(picture)}},
            "preview": {"type": "PreviewImage", "inputs": {"images": link("load", "image")}},
        }
    )
    executor = Executor()
    first, _ = run(executor, document)
    again, _ = run(executor, document)
    assert again.cached == ["load"]
    _write_png(picture, (0.0, 0.0, 1.0))
    changed, _ = run(executor, document)
    assert "load" in changed.executed
    assert first.output_items[0].data != changed.output_items[0].data


def test_execution_is_thread_safe_per_executor_instance():
    """Two executors (two devices' workers) share nothing; both complete concurrently."""
    results = {}

    def work(name: str) -> None:
        results[name] = sink_values(run(Executor(), chain_workflow(offset_c=3))[0])

    threads = [threading.Thread(target=work, args=(n,)) for n in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {"one": {"sink": 4, "sink2": 10}, "two": {"sink": 4, "sink2": 10}}

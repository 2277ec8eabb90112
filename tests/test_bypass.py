"""Bypassed nodes: left out of the run, each output passing on the first wired input of its socket type."""

from __future__ import annotations

import json

import pytest

from pipelines.executor import Executor
from pipelines.issues import WorkflowInvalid
from pipelines.plan import build_plan
from pipelines.validate import validate_workflow
from pipelines.workflow import canonical_json, load_workflow, parse_workflow
from tests.conftest import link, workflow_dict
from tests.support_nodes import EXECUTIONS


def chain(bypass_b: bool = False, bypass_c: bool = False, **extra) -> dict:
    """a(1) → b(+10) → c(+100) → sink."""
    return workflow_dict(
        {
            "a": {"type": "TestConst", "params": {"value": 1}},
            "b": {"type": "TestAdd", "params": {"offset": 10}, "inputs": {"a": link("a")}, "bypass": bypass_b},
            "c": {"type": "TestAdd", "params": {"offset": 100}, "inputs": {"a": link("b")}, "bypass": bypass_c},
            "sink": {"type": "TestSink", "inputs": {"value": link("c")}},
        },
        **extra,
    )


def sink_value(document: dict) -> int:
    result = Executor().execute(build_plan(load_workflow(document)), run_id="r")
    [item] = result.output_items
    return item.meta["value"]


@pytest.mark.parametrize(
    "bypass_b,bypass_c,expected", [(False, False, 111), (True, False, 101), (False, True, 11), (True, True, 1)]
)
def test_a_bypassed_node_passes_its_input_on_and_does_not_run(bypass_b: bool, bypass_c: bool, expected: int):
    assert sink_value(chain(bypass_b, bypass_c)) == expected
    ran = {node for node, count in EXECUTIONS.items() if count}
    assert ("b" in ran) is not bypass_b and ("c" in ran) is not bypass_c


def test_a_bypassed_node_is_not_in_the_plan():
    plan = build_plan(load_workflow(chain(bypass_b=True)))
    assert [node.id for node in plan.nodes] == ["a", "c", "sink"]
    assert plan.nodes[1].inputs["a"].node == "a"


def test_a_bypassed_node_with_nothing_to_pass_on_is_reported_at_its_consumer():
    document = workflow_dict(
        {
            "a": {"type": "TestConst", "bypass": True},  # no inputs at all
            "sink": {"type": "TestSink", "inputs": {"value": link("a")}},
        }
    )
    [issue] = validate_workflow(parse_workflow(document))
    assert (issue.node, issue.field, issue.code) == ("sink", "value", "bypassed_input")
    assert "'a' is bypassed" in issue.message and "TestConst" in issue.hint


def test_exposed_fields_and_overrides_of_a_bypassed_node_are_accepted_and_change_nothing():
    document = chain(bypass_b=True, exposed=[{"node": "b", "param": "offset", "label": "Offset"}])
    assert validate_workflow(parse_workflow(document), {"Offset": 5}) == []
    assert sink_value(document) == 101


def test_running_up_to_a_bypassed_node_says_so():
    with pytest.raises(WorkflowInvalid) as caught:
        build_plan(load_workflow(chain(bypass_b=True)), target="b")
    [issue] = caught.value.issues
    assert issue.code == "unknown_target" and "bypassed" in issue.message


def test_a_subgraph_node_cannot_be_bypassed():
    document = workflow_dict(
        {
            "a": {"type": "TestConst"},
            "group": {"type": "Subgraph", "subgraph": "inc", "inputs": {"x": link("a")}, "bypass": True},
            "sink": {"type": "TestSink", "inputs": {"value": link("group", "y")}},
        },
        subgraphs={
            "inc": {
                "nodes": {"add": {"type": "TestAdd", "params": {"offset": 1}}},
                "inputs": [{"name": "x", "type": "INT", "targets": [{"node": "add", "input": "a"}]}],
                "outputs": [{"name": "y", "type": "INT", "source": {"node": "add", "output": "value"}}],
            }
        },
    )
    issues = validate_workflow(parse_workflow(document))
    assert any(i.node == "group" and i.field == "bypass" and "cannot be bypassed" in i.message for i in issues)


def test_bypass_is_saved_only_when_on():
    saved = json.loads(canonical_json(load_workflow(chain(bypass_c=True))))
    assert saved["nodes"]["c"]["bypass"] is True
    assert "bypass" not in saved["nodes"]["b"], "files from before bypass existed must re-save byte-identical"
    assert load_workflow(saved).nodes["c"].bypass and not load_workflow(saved).nodes["b"].bypass

"""Property tests: whatever document arrives, parsing and validation answer with issues, never a traceback;
and what validates cleanly plans in an order that respects every link. Nothing is executed here."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodes.catalogue import all_node_classes
from pipelines.issues import Issue, IssueCode, WorkflowInvalid
from pipelines.plan import Plan, build_plan
from pipelines.validate import validate_workflow
from pipelines.workflow import CURRENT_VERSION, FORMAT, Workflow, canonical_json, parse_workflow

# The example count is the loaded profile's (tests/conftest.py): 300, or 3,000 under -m adversarial.
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

pytestmark = pytest.mark.adversarial

CLASSES = list(all_node_classes())
TYPE_NAMES = sorted(c.type for c in CLASSES)
PARAM_NAMES = sorted({name for c in CLASSES for name in c.Params.model_fields})
INPUT_NAMES = sorted({i.name for c in CLASSES for i in c.inputs})
OUTPUT_NAMES = sorted({o.name for c in CLASSES for o in c.outputs})

# ---------------------------------------------------------------- strategies

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)
odd_text = st.sampled_from(["", "a/b", "/", "ü", "日本", "sub1/add", "n.1", " ", "\x00", "Subgraph"])
node_ids = odd_text | st.sampled_from(["n1", "n2", "n3", "sink", "sub1", "sub2"]) | st.text(max_size=5)
subgraph_names = st.sampled_from(["sg1", "sg2", "sg3", "missing"])
CLASS_BY_TYPE = {c.type: c for c in CLASSES}
OUTPUT_TYPES = sorted(c.type for c in CLASSES if c.output_node)
type_names = (
    st.sampled_from(TYPE_NAMES)
    | st.sampled_from(TYPE_NAMES)
    | st.sampled_from(OUTPUT_TYPES)
    | st.sampled_from(["Subgraph", "Subgraph", "SaveImag", "Nope", "", "int", "Test"])
    | st.text(max_size=6)
)
param_names = st.sampled_from(PARAM_NAMES) | st.sampled_from(INPUT_NAMES) | odd_text | st.text(max_size=5)
param_values = (
    st.integers(min_value=-5, max_value=20)
    | st.integers()
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.none()
    | st.sampled_from(["", "bicubic", "cubic", "crop", "#00ff00", "x.png", "../x", "flowcanvas"])
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)


@st.composite
def links(draw: st.DrawFn, ids: list[str]) -> Any:
    def one() -> dict[str, str]:
        node = draw(st.sampled_from(ids) | node_ids) if ids else draw(node_ids)
        return {"node": node, "output": draw(st.sampled_from(OUTPUT_NAMES) | st.sampled_from(["y", "nope", ""]))}

    return [one() for _ in range(draw(st.integers(0, 3)))] if draw(st.integers(0, 4)) == 0 else one()


@st.composite
def node_entries(draw: st.DrawFn, ids: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": draw(type_names)}
    if entry["type"] == "":
        entry["type"] = "Nope"  # an empty type is only a schema issue; keep the document parseable
    if draw(st.booleans()):
        entry["type_version"] = draw(st.sampled_from([1, 1, 1, 2, 3]))
    cls = CLASS_BY_TYPE.get(entry["type"])
    own_params = list(cls.Params.model_fields) if cls else []
    own_inputs = [i.name for i in cls.inputs] if cls else []
    names = st.sampled_from(own_params) | param_names if own_params else param_names
    sockets = (
        st.sampled_from(own_inputs + own_params) | st.sampled_from(own_inputs or INPUT_NAMES) | param_names
        if own_inputs or own_params
        else param_names
    )
    if draw(st.booleans()):
        entry["params"] = draw(st.dictionaries(names, param_values, max_size=4))
    if own_inputs or draw(st.booleans()):
        entry["inputs"] = draw(st.dictionaries(sockets, links(ids), max_size=4))
    if entry["type"] == "Subgraph" or draw(st.integers(0, 9)) == 0:
        entry["subgraph"] = draw(subgraph_names)
    if draw(st.integers(0, 4)) == 0:
        entry["title"] = draw(st.text(max_size=5))
    return entry


@st.composite
def node_maps(draw: st.DrawFn, extra_ids: tuple[str, ...] = ()) -> dict[str, Any]:
    ids = draw(st.lists(node_ids, max_size=7, unique=True))
    return {node_id: draw(node_entries(ids + list(extra_ids))) for node_id in ids}


@st.composite
def subgraphs(draw: st.DrawFn) -> dict[str, Any]:
    nodes = draw(node_maps())
    inner = list(nodes) or ["x"]
    return {
        "nodes": nodes,
        "inputs": [
            {
                "name": name,
                "type": "INT",
                "targets": [
                    {
                        "node": draw(st.sampled_from(inner) | node_ids),
                        "input": draw(st.sampled_from(INPUT_NAMES + PARAM_NAMES + ["x", "bogus"])),
                    }
                    for _ in range(draw(st.integers(0, 2)))
                ],
            }
            for name in draw(st.lists(st.sampled_from(["x", "y", "a", "value"]), max_size=2, unique=True))
        ],
        "outputs": [
            {
                "name": name,
                "type": "INT",
                "source": {
                    "node": draw(st.sampled_from(inner) | node_ids),
                    "output": draw(st.sampled_from(OUTPUT_NAMES + ["y"])),
                },
            }
            for name in draw(st.lists(st.sampled_from(["y", "value", "image"]), max_size=2, unique=True))
        ],
    }


@st.composite
def plausible_workflows(draw: st.DrawFn) -> dict[str, Any]:
    nodes = draw(node_maps())
    document: dict[str, Any] = {"format": FORMAT, "version": CURRENT_VERSION, "nodes": nodes}
    if draw(st.booleans()):
        document["subgraphs"] = draw(st.dictionaries(subgraph_names, subgraphs(), max_size=3))
    if draw(st.booleans()):
        known = list(nodes) + ["sub1/add", "ghost"]
        labels = st.sampled_from(["A", "B", "a", "Seed"]) | st.text(min_size=1, max_size=4)
        document["exposed"] = [
            {"node": draw(st.sampled_from(known) | node_ids), "param": draw(param_names), "label": draw(labels)}
            for _ in range(draw(st.integers(0, 3)))
        ]
    return document


@st.composite
def overrides_and_targets(draw: st.DrawFn, document: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    ids = list(document["nodes"]) + ["ghost"]
    names = (
        st.sampled_from(ids).flatmap(lambda n: param_names.map(lambda p: f"{n}.{p}"))
        | st.sampled_from(["A", "B", "a", "nope"])
        | st.text(max_size=6)
    )
    values = param_values | st.text(max_size=4)
    overrides = draw(st.sampled_from([None, None]) | st.dictionaries(names, values, max_size=3))
    target = draw(st.sampled_from([None, None, None]) | st.sampled_from(ids) | node_ids)
    return overrides, target


# ---------------------------------------------------------------- checks


def assert_issues(issues: Any) -> None:
    assert isinstance(issues, list)
    for issue in issues:
        assert isinstance(issue, Issue)
        assert isinstance(issue.code, IssueCode), issue.code  # every code is listed in pipelines.issues
        assert issue.message
        str(issue)


def links_of(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def assert_plan_respects_links(plan: Plan) -> None:
    order = [n.id for n in plan.nodes]
    assert len(order) == len(set(order))
    position = {node_id: index for index, node_id in enumerate(order)}
    for planned in plan.nodes:
        for value in [*planned.inputs.values(), *planned.wired_params.values()]:
            for source in links_of(value):
                assert source.node in position, f"{planned.id} reads {source.node}, which is not planned"
                assert position[source.node] < position[planned.id], (source.node, planned.id)
    assert set(plan.output_nodes) <= set(order)


def validate_checked(workflow: Workflow, overrides: dict[str, Any] | None, target: str | None) -> list[Issue]:
    before = canonical_json(workflow)
    issues = validate_workflow(workflow, overrides, target=target)
    assert_issues(issues)
    assert canonical_json(workflow) == before, "validation changed the workflow"
    assert validate_workflow(workflow, overrides, target=target) == issues, "validation is not deterministic"
    return issues


# ---------------------------------------------------------------- (a) arbitrary JSON


@FUZZ
@given(json_values)
def test_parsing_any_json_value_either_succeeds_or_raises_workflow_invalid(data):
    try:
        workflow = parse_workflow(data)
    except WorkflowInvalid as invalid:
        assert invalid.issues
        assert_issues(invalid.issues)
        return
    assert isinstance(workflow, Workflow)
    assert_issues(validate_workflow(workflow))


workflow_keys = st.sampled_from(
    ["name", "description", "tags", "nodes", "exposed", "groups", "subgraphs", "view", "format", "version", "extra"]
)


@FUZZ
@given(
    st.dictionaries(workflow_keys, json_values, max_size=6),
    st.dictionaries(
        node_ids,
        st.dictionaries(
            st.sampled_from(["type", "params", "inputs", "position", "type_version", "subgraph", "title"]),
            json_values | type_names,
            max_size=4,
        ),
        max_size=4,
    ),
)
def test_documents_with_the_right_header_and_arbitrary_json_fields_only_ever_give_issues(fields, nodes):
    document = {**fields, "format": FORMAT, "version": CURRENT_VERSION}
    if "nodes" not in fields:
        document["nodes"] = nodes
    try:
        workflow = parse_workflow(document)
    except WorkflowInvalid as invalid:
        assert invalid.issues
        assert_issues(invalid.issues)
        return
    assert_issues(validate_workflow(workflow))


# ---------------------------------------------------------------- (b) plausible random workflows


@FUZZ
@given(st.data())
def test_validating_a_plausible_random_workflow_returns_issues_and_never_raises(data):
    document = data.draw(plausible_workflows())
    try:
        workflow = parse_workflow(document)
    except WorkflowInvalid as invalid:
        assert_issues(invalid.issues)
        assert all(i.code == "schema" for i in invalid.issues)
        return
    overrides, target = data.draw(overrides_and_targets(document))
    issues = validate_checked(workflow, overrides, target)
    if issues:
        try:
            build_plan(workflow, overrides, target=target)
        except WorkflowInvalid as invalid:
            assert invalid.issues == issues
        else:
            raise AssertionError("build_plan accepted a workflow that validate_workflow rejects")
    else:
        assert_plan_respects_links(build_plan(workflow, overrides, target=target))


# ---------------------------------------------------------------- (c) well-formed DAGs


@st.composite
def dag_workflows(draw: st.DrawFn) -> tuple[dict[str, Any], str | None]:
    """Random DAGs of INT nodes, every link pointing to an earlier node; at least one sink, so they are valid."""
    nodes: dict[str, Any] = {"n0": {"type": "TestConst", "params": {"value": draw(st.integers(-9, 9))}}}
    producers, ints = ["n0"], []
    for index in range(1, draw(st.integers(1, 14))):
        node_id = draw(st.sampled_from([f"n{index}", f"ü{index}", f"N {index}", f"z{index}"]))
        kind = draw(st.sampled_from(["TestConst", "Int", "TestAdd", "TestAdd", "TestSlow", "TestSink"]))
        earlier = st.sampled_from(producers)
        entry: dict[str, Any] = {"type": kind}
        if kind == "TestConst":
            entry["params"] = {"value": draw(st.integers())}
        elif kind == "Int":
            entry["params"] = {"value": draw(st.integers(-1000, 1000))}
        elif kind == "TestAdd":
            entry["inputs"] = {"a": {"node": draw(earlier), "output": "value"}}
            if draw(st.booleans()):
                entry["inputs"]["b"] = {"node": draw(earlier), "output": "value"}
            if ints and draw(st.booleans()):
                entry["inputs"]["offset"] = {"node": draw(st.sampled_from(ints)), "output": "value"}
            else:
                entry["params"] = {"offset": draw(st.integers(-1000, 1000))}
        elif kind == "TestSlow":
            entry["inputs"] = {"a": {"node": draw(earlier), "output": "value"}}
        else:
            entry["inputs"] = {"value": {"node": draw(earlier), "output": "value"}}
        nodes[node_id] = entry
        if kind != "TestSink":
            producers.append(node_id)
        if kind == "Int":
            ints.append(node_id)
    if not any(e["type"] == "TestSink" for e in nodes.values()):
        nodes["sink"] = {
            "type": "TestSink",
            "inputs": {"value": {"node": draw(st.sampled_from(producers)), "output": "value"}},
        }
    # Shuffle the document order: the plan order must come from the links, not from the file.
    items = draw(st.permutations(list(nodes.items())))
    target = draw(st.none() | st.sampled_from(list(nodes)))
    return {"format": FORMAT, "version": CURRENT_VERSION, "nodes": dict(items)}, target


def ancestors(nodes: dict[str, Any], roots: list[str]) -> set[str]:
    seen, stack = set(roots), list(roots)
    while stack:
        for value in nodes[stack.pop()].get("inputs", {}).values():
            for source in links_of(value):
                if source["node"] not in seen:
                    seen.add(source["node"])
                    stack.append(source["node"])
    return seen


@FUZZ
@given(dag_workflows())
def test_a_valid_workflow_plans_every_needed_node_in_an_order_that_respects_every_link(case):
    document, target = case
    workflow = parse_workflow(document)
    assert validate_checked(workflow, None, target) == []
    plan = build_plan(workflow, target=target)
    assert_plan_respects_links(plan)
    nodes = document["nodes"]
    sinks = [target] if target is not None else [nid for nid, e in nodes.items() if e["type"] == "TestSink"]
    assert sorted(plan.output_nodes) == sorted(sinks)
    assert {n.id for n in plan.nodes} == ancestors(nodes, sinks), "pruning kept or dropped the wrong nodes"
    if target is None:
        first_sink = min(i for i, n in enumerate(plan.nodes) if n.cls.output_node)
        assert all(n.cls.output_node for n in plan.nodes[first_sink:]), "output nodes go last"
    for planned in plan.nodes:
        assert plan.consumers[planned.id] == len(
            {
                n.id
                for n in plan.nodes
                for v in [*n.inputs.values(), *n.wired_params.values()]
                for s in links_of(v)
                if s.node == planned.id
            }
        )


@FUZZ
@given(dag_workflows(), st.integers(-1000, 1000))
def test_a_valid_workflow_accepts_in_bounds_overrides_given_as_text(case, offset):
    document, _ = case
    adds = [nid for nid, e in document["nodes"].items() if e["type"] == "TestAdd"]
    workflow = parse_workflow(document)
    overrides = {f"{nid}.offset": str(offset) for nid in adds}
    assert validate_checked(workflow, overrides, None) == []
    plan = build_plan(workflow, overrides)
    for planned in plan.nodes:
        if planned.id in adds:
            assert planned.params["offset"] == offset and "offset" not in planned.wired_params
    assert_plan_respects_links(plan)

"""Validation: one minimal workflow per issue code, all issues at once, pruning, and subgraph flattening."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import Field

from nodes.registry import Node, NodeParams, node, unregister
from pipelines.executor import Executor
from pipelines.issues import Issue, WorkflowInvalid
from pipelines.plan import build_plan
from pipelines.validate import validate_workflow
from pipelines.workflow import Link, Workflow, canonical_json, load_workflow, parse_workflow
from tests.conftest import link, workflow_dict

# ---------------------------------------------------------------- helpers


def issues_of(document: dict[str, Any], overrides: dict[str, Any] | None = None, **kwargs: Any) -> list[Issue]:
    return validate_workflow(parse_workflow(document), overrides, **kwargs)


def only_issue(document: dict[str, Any], overrides: dict[str, Any] | None = None, **kwargs: Any) -> Issue:
    """The single issue a workflow has (fails, listing them, when there are more or none)."""
    found = issues_of(document, overrides, **kwargs)
    assert len(found) == 1, [str(i) for i in found]
    return found[0]


def parse_issues(data: Any) -> list[Issue]:
    with pytest.raises(WorkflowInvalid) as caught:
        parse_workflow(data)
    assert caught.value.issues, "WorkflowInvalid must carry at least one issue"
    return caught.value.issues


def int_chain(add: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """c (TestConst) → a (TestAdd) → sink (TestSink); `add` is merged into a's entry."""
    entry = {"type": "TestAdd", "inputs": {"a": link("c")}}
    for key, value in (add or {}).items():
        entry[key] = {**entry.get(key, {}), **value} if isinstance(value, dict) else value
    return workflow_dict(
        {
            "c": {"type": "TestConst", "params": {"value": 1}},
            "a": entry,
            "sink": {"type": "TestSink", "inputs": {"value": link("a")}},
        },
        **extra,
    )


def image_chain(
    resize_params: dict[str, Any] | None = None,
    resize_inputs: dict[str, Any] | None = None,
    extra_nodes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """e (EmptyImage) → r (ResizeImage) → s (SaveImage)."""
    return workflow_dict(
        {
            "e": {"type": "EmptyImage", "params": {"width": 8, "height": 8}},
            "r": {
                "type": "ResizeImage",
                "params": resize_params or {},
                "inputs": {"image": link("e", "image"), **(resize_inputs or {})},
            },
            "s": {"type": "SaveImage", "inputs": {"images": link("r", "image")}},
            **(extra_nodes or {}),
        }
    )


def plan_ids(document: dict[str, Any], **kwargs: Any) -> list[str]:
    return [n.id for n in build_plan(parse_workflow(document), **kwargs).nodes]


@pytest.fixture
def register() -> Iterator[Callable[..., Callable[[type[Node]], type[Node]]]]:
    """`register(type, **node_kwargs)` works like `@node`, and the type is unregistered after the test."""
    names: list[str] = []

    def decorator(type_name: str, **kwargs: Any) -> Callable[[type[Node]], type[Node]]:
        names.append(type_name)
        kwargs.setdefault("category", "test")
        return node(type_name, **kwargs)

    yield decorator
    for name in names:
        unregister(name)


def test_the_baseline_workflows_are_valid():
    """Every negative test below changes one thing in one of these, so they must be clean to start with."""
    assert issues_of(int_chain()) == []
    assert issues_of(image_chain()) == []


# ---------------------------------------------------------------- schema (parse_workflow)


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ({"position": [0, 0]}, "type", "required"),
        ({"type": ""}, "type", "at least 1 character"),
        ({"type": "EmptyImage", "position": "left"}, "position", "tuple"),
        ({"type": "EmptyImage", "type_version": 0}, "type_version", "greater than or equal to 1"),
        ({"type": "EmptyImage", "colour": "red"}, "colour", "extra"),
    ],
    ids=["node-without-type", "empty-type", "position-not-a-pair", "type-version-zero", "unknown-node-key"],
)
def test_a_malformed_node_entry_is_a_schema_issue_on_that_node_and_field(entry, field, words):
    issues = parse_issues(workflow_dict({"n1": entry}))
    assert [(i.code, i.node, i.field) for i in issues] == [("schema", "n1", field)]
    assert words in issues[0].message.lower() or words in issues[0].message


def test_a_short_position_names_the_missing_coordinate():
    issues = parse_issues(workflow_dict({"n1": {"type": "EmptyImage", "position": [3]}}))
    assert [(i.code, i.node) for i in issues] == [("schema", "n1")]
    assert issues[0].field.startswith("position")


def test_an_input_that_is_not_a_link_is_a_schema_issue_on_that_input():
    issues = parse_issues(workflow_dict({"n1": {"type": "TestAdd", "inputs": {"a": "c"}}}))
    assert {(i.code, i.node, i.field) for i in issues} == {("schema", "n1", "a")}


def test_a_param_that_is_not_json_is_a_schema_issue_on_that_param():
    issues = parse_issues(workflow_dict({"n1": {"type": "EmptyImage", "params": {"width": object()}}}))
    assert {(i.code, i.node, i.field) for i in issues} == {("schema", "n1", "width")}


@pytest.mark.parametrize("data", [[], "workflow", 42, None], ids=["list", "str", "int", "none"])
def test_a_document_that_is_not_an_object_is_a_schema_issue_naming_what_it_is(data):
    issues = parse_issues(data)
    assert [(i.code, i.node, i.field) for i in issues] == [("schema", None, None)]
    assert type(data).__name__ in issues[0].message


def test_a_wrong_format_is_a_schema_issue_on_format_quoting_the_value():
    issues = parse_issues({**workflow_dict({}), "format": "comfy.workflow"})
    assert [(i.code, i.node, i.field) for i in issues] == [("schema", None, "format")]
    assert "'comfy.workflow'" in issues[0].message


def test_a_comfyui_document_gets_a_hint_saying_so():
    issues = parse_issues({"last_node_id": 3, "nodes": [], "links": []})
    assert issues[0].field == "format"
    assert "ComfyUI" in issues[0].hint


def test_a_wrongly_typed_top_level_field_is_a_schema_issue_on_that_field():
    issues = parse_issues(workflow_dict({}, tags="not-a-list"))
    assert [(i.code, i.node, i.field) for i in issues] == [("schema", None, "tags")]


def test_every_schema_problem_is_reported_at_once():
    issues = parse_issues(workflow_dict({"a": {}, "b": {"type": "EmptyImage", "position": "x"}}))
    assert {(i.node, i.field) for i in issues} >= {("a", "type"), ("b", "position")}


def test_text_that_is_not_json_is_a_schema_issue():
    with pytest.raises(WorkflowInvalid) as caught:
        load_workflow('{"format": ')
    assert [i.code for i in caught.value.issues] == ["schema"]
    assert "not valid JSON" in caught.value.issues[0].message


@pytest.mark.parametrize("node_id", ["", "a/b"], ids=["empty", "with-separator"])
def test_an_id_that_is_empty_or_contains_the_separator_is_a_schema_issue(node_id):
    document = int_chain()
    document["nodes"][node_id] = {"type": "TestConst"}
    issue = only_issue(document)
    assert (issue.code, issue.node, issue.field) == ("schema", node_id, "id")
    assert "'/'" in issue.message


# ---------------------------------------------------------------- unsupported_version


@pytest.mark.parametrize("version", [99, 0, "1", True, None], ids=["99", "0", "text", "bool", "missing"])
def test_a_format_version_this_build_cannot_read_is_unsupported_version(version):
    document = workflow_dict({})
    if version is None:
        del document["version"]
    else:
        document["version"] = version
    issues = parse_issues(document)
    assert [(i.code, i.node, i.field) for i in issues] == [("unsupported_version", None, "version")]
    assert repr(version) in issues[0].message


# ---------------------------------------------------------------- node types and versions


def test_an_unknown_type_is_reported_with_a_did_you_mean_hint():
    issue = only_issue(
        workflow_dict(
            {
                "e": {"type": "EmptyImage"},
                "s": {"type": "SaveImag", "inputs": {"images": link("e", "image")}},
                "p": {"type": "PreviewImage", "inputs": {"images": link("e", "image")}},
            }
        )
    )
    assert (issue.code, issue.node, issue.field) == ("unknown_type", "s", "type")
    assert "'SaveImag'" in issue.message
    assert "did you mean" in issue.hint and "SaveImage" in issue.hint


def test_an_unknown_type_with_no_near_miss_points_to_the_catalogue():
    document = int_chain()
    document["nodes"]["z"] = {"type": "Qqqqqqqqqqqq"}
    issue = only_issue(document)
    assert issue.code == "unknown_type"
    assert "did you mean" not in issue.hint and "nodes" in issue.hint


def test_a_type_version_newer_than_the_class_is_unsupported_type_version():
    issue = only_issue(
        image_chain() | {"nodes": {**image_chain()["nodes"], "r": {**image_chain()["nodes"]["r"], "type_version": 2}}}
    )
    assert (issue.code, issue.node, issue.field) == ("unsupported_type_version", "r", "type_version")
    assert "ResizeImage" in issue.message and "2" in issue.message and "(1)" in issue.message


def test_an_older_type_version_without_an_upgrade_is_unsupported_type_version(register):
    @register("TestV2NoUpgrade", version=2, output_node=True)
    class V2(Node):
        class Params(NodeParams):
            width: int = 1

    issue = only_issue(workflow_dict({"n": {"type": "TestV2NoUpgrade", "type_version": 1, "params": {"width": 3}}}))
    assert (issue.code, issue.node, issue.field) == ("unsupported_type_version", "n", "type_version")
    assert "version 1 cannot be upgraded to 2" in issue.message


def _rename_size(params: dict[str, Any]) -> dict[str, Any]:
    return {("width" if k == "size" else k): v for k, v in params.items()}


def test_params_saved_by_an_older_type_version_are_upgraded_before_validation(register):
    @register("TestV2Renamed", version=2, output_node=True)
    class V2(Node):
        upgrades = {1: _rename_size}

        class Params(NodeParams):
            width: int = Field(1, ge=1)

    old = workflow_dict({"n": {"type": "TestV2Renamed", "type_version": 1, "params": {"size": 64}}})
    assert issues_of(old) == []
    assert build_plan(parse_workflow(old)).nodes[0].params == {"width": 64}
    # The same params saved by the current version are not upgraded: 'size' is unknown there.
    current = workflow_dict({"n": {"type": "TestV2Renamed", "type_version": 2, "params": {"size": 64}}})
    assert [(i.code, i.field) for i in issues_of(current)] == [("unknown_param", "size")]
    # The upgraded value is validated: an out-of-bounds old value is reported under its new name.
    bad = workflow_dict({"n": {"type": "TestV2Renamed", "type_version": 1, "params": {"size": 0}}})
    assert [(i.code, i.field) for i in issues_of(bad)] == [("out_of_bounds", "width")]


def test_upgrades_are_chained_in_version_order(register):
    @register("TestV3Chained", version=3, output_node=True)
    class V3(Node):
        upgrades = {1: _rename_size, 2: lambda p: {**p, "width": p["width"] * 2}}

        class Params(NodeParams):
            width: int = 1

    for version, params in [(1, {"size": 8}), (2, {"width": 8}), (3, {"width": 16})]:
        document = workflow_dict({"n": {"type": "TestV3Chained", "type_version": version, "params": params}})
        assert build_plan(parse_workflow(document)).nodes[0].params == {"width": 16}, version


def test_a_gap_in_the_upgrade_chain_names_the_version_that_cannot_be_upgraded(register):
    @register("TestV3Gap", version=3, output_node=True)
    class V3(Node):
        upgrades = {1: _rename_size}

        class Params(NodeParams):
            width: int = 1

    issue = only_issue(workflow_dict({"n": {"type": "TestV3Gap", "type_version": 1, "params": {"size": 8}}}))
    assert issue.code == "unsupported_type_version"
    assert "version 2 cannot be upgraded to 3" in issue.message


# ---------------------------------------------------------------- params


def test_an_unknown_param_is_reported_with_a_did_you_mean_hint():
    issue = only_issue(image_chain({"widht": 64}))
    assert (issue.code, issue.node, issue.field) == ("unknown_param", "r", "widht")
    assert issue.hint == "did you mean 'width'?"


def test_an_unknown_param_with_no_near_miss_lists_the_params():
    issue = only_issue(image_chain({"zzzzzz": 1}))
    assert issue.code == "unknown_param"
    assert "width" in issue.hint and "method" in issue.hint


def test_a_required_param_left_out_is_missing_param():
    issue = only_issue(
        workflow_dict(
            {
                "l": {"type": "LoadImage"},
                "s": {"type": "SaveImage", "inputs": {"images": link("l", "image")}},
            }
        )
    )
    assert (issue.code, issue.node, issue.field) == ("missing_param", "l", "path")
    assert issue.hint  # the param's description


@pytest.mark.parametrize(
    ("params", "field", "value"),
    [
        ({"width": 0}, "width", "0"),
        ({"height": 16385}, "height", "16385"),
    ],
    ids=["below-minimum", "above-maximum"],
)
def test_a_literal_param_outside_its_bounds_is_out_of_bounds(params, field, value):
    issue = only_issue(image_chain(params))
    assert (issue.code, issue.node, issue.field) == ("out_of_bounds", "r", field)
    assert f"(got {value})" in issue.message
    assert issue.hint == f"{field.capitalize()} in pixels."


def test_a_string_that_breaks_its_length_limit_is_out_of_bounds():
    document = image_chain()
    document["nodes"]["s"]["params"] = {"filename_prefix": ""}
    issue = only_issue(document)
    assert (issue.code, issue.node, issue.field) == ("out_of_bounds", "s", "filename_prefix")


def test_a_primitive_wired_into_a_param_is_checked_against_that_params_bounds():
    issue = only_issue(
        image_chain(resize_inputs={"width": link("w")}, extra_nodes={"w": {"type": "Int", "params": {"value": 0}}})
    )
    assert (issue.code, issue.node, issue.field) == ("out_of_bounds", "r", "width")
    assert "(got 0)" in issue.message and "fed by w.value" in issue.message


def test_a_primitive_left_at_its_default_is_checked_too():
    issue = only_issue(image_chain(resize_inputs={"width": link("w")}, extra_nodes={"w": {"type": "Int"}}))
    assert (issue.code, issue.node, issue.field) == ("out_of_bounds", "r", "width")


def test_a_wire_from_a_non_primitive_is_not_checked_before_running():
    document = image_chain(resize_inputs={"width": link("k")}, extra_nodes={"k": {"type": "TestConst"}})
    assert issues_of(document) == []  # TestConst's 0 is only known at run time


def test_a_value_outside_a_params_choices_is_not_in_choices_and_lists_them():
    issue = only_issue(image_chain({"method": "cubic"}))
    assert (issue.code, issue.node, issue.field) == ("not_in_choices", "r", "method")
    assert "'cubic'" in issue.message
    assert issue.hint == "one of: nearest, bilinear, bicubic, area"


def test_a_primitive_string_wired_into_a_choice_param_is_checked_against_the_choices():
    issue = only_issue(
        image_chain(
            resize_inputs={"method": link("m")}, extra_nodes={"m": {"type": "String", "params": {"value": "cubic"}}}
        )
    )
    assert (issue.code, issue.node, issue.field) == ("not_in_choices", "r", "method")
    assert "fed by m.value" in issue.message


@pytest.mark.parametrize(
    ("params", "field", "shown"),
    [
        ({"width": "wide"}, "width", "'wide'"),
        ({"width": 1.5}, "width", "1.5"),
    ],
    ids=["string-for-int", "fraction-for-int"],
)
def test_a_value_of_the_wrong_type_is_invalid_value(params, field, shown):
    issue = only_issue(image_chain(params))
    assert (issue.code, issue.node, issue.field) == ("invalid_value", "r", field)
    assert f"(got {shown})" in issue.message


def test_a_string_breaking_its_pattern_is_invalid_value():
    document = image_chain()
    document["nodes"]["s"]["params"] = {"filename_prefix": "../etc"}
    issue = only_issue(document)
    assert (issue.code, issue.node, issue.field) == ("invalid_value", "s", "filename_prefix")
    assert "'../etc'" in issue.message


@pytest.fixture
def range_node(register) -> str:
    @register("TestRange", output_node=True)
    class Range(Node):
        class Params(NodeParams):
            lo: int = Field(0, ge=0)
            hi: int = 10

        @classmethod
        def check(cls, params: Any) -> list[tuple[str, str]]:
            return [("hi", f"hi ({params.hi}) must not be below lo ({params.lo})")] if params.hi < params.lo else []

    return "TestRange"


def test_a_combination_rejected_by_the_nodes_check_is_invalid_params(range_node):
    issue = only_issue(workflow_dict({"r": {"type": range_node, "params": {"lo": 5, "hi": 2}}}))
    assert (issue.code, issue.node, issue.field) == ("invalid_params", "r", "hi")
    assert issue.message == "hi (2) must not be below lo (5)"
    assert issues_of(workflow_dict({"r": {"type": range_node, "params": {"lo": 2, "hi": 5}}})) == []


def test_check_is_not_run_while_a_single_param_is_invalid(range_node):
    found = issues_of(workflow_dict({"r": {"type": range_node, "params": {"lo": -1, "hi": -5}}}))
    assert [(i.code, i.field) for i in found] == [("out_of_bounds", "lo")]


def test_check_sees_the_constants_of_wired_primitives(range_node):
    issue = only_issue(
        workflow_dict(
            {
                "i": {"type": "Int", "params": {"value": 7}},
                "r": {"type": range_node, "params": {"hi": 2}, "inputs": {"lo": link("i")}},
            }
        )
    )
    assert (issue.code, issue.node, issue.field) == ("invalid_params", "r", "hi")
    assert "lo (7)" in issue.message


def test_check_is_skipped_when_a_wired_value_is_unknown_before_running(range_node):
    assert (
        issues_of(
            workflow_dict(
                {
                    "k": {"type": "TestConst", "params": {"value": 7}},
                    "r": {"type": range_node, "params": {"hi": 2}, "inputs": {"lo": link("k")}},
                }
            )
        )
        == []
    )


# ---------------------------------------------------------------- inputs and links


def test_a_link_into_an_input_the_type_lacks_is_unknown_input_listing_the_inputs():
    issue = only_issue(int_chain({"inputs": {"c": link("c")}}))
    assert (issue.code, issue.node, issue.field) == ("unknown_input", "a", "c")
    assert "TestAdd" in issue.message and "'c'" in issue.message
    assert issue.hint == "inputs: a, b"


def test_a_link_into_a_non_wireable_param_is_unknown_input(register):
    @register("TestJsonParam", output_node=True)
    class J(Node):
        class Params(NodeParams):
            sizes: list[int] = []

    issue = only_issue(
        workflow_dict({"k": {"type": "TestConst"}, "j": {"type": "TestJsonParam", "inputs": {"sizes": link("k")}}})
    )
    assert (issue.code, issue.node, issue.field) == ("unknown_input", "j", "sizes")


def test_a_required_input_left_unconnected_is_missing_input():
    document = int_chain()
    del document["nodes"]["a"]["inputs"]["a"]
    issue = only_issue(document)
    assert (issue.code, issue.node, issue.field) == ("missing_input", "a", "a")
    assert "'a'" in issue.message and "INT" in issue.message


def test_an_optional_input_may_be_left_unconnected():
    assert issues_of(int_chain()) == []  # TestAdd.b is optional and not connected


def test_an_empty_link_list_does_not_connect_a_required_multi_input():
    found = issues_of(
        workflow_dict(
            {
                "g": {"type": "ImageGrid", "inputs": {"images": []}},
                "p": {"type": "PreviewImage", "inputs": {"images": link("g", "image")}},
            }
        )
    )
    assert [(i.code, i.node, i.field) for i in found] == [("missing_input", "g", "images")]


def test_a_list_of_links_into_a_single_input_is_multiple_links():
    document = int_chain({"inputs": {"a": [link("c"), link("c2")]}})
    document["nodes"]["c2"] = {"type": "TestConst"}
    issue = only_issue(document)
    assert (issue.code, issue.node, issue.field) == ("multiple_links", "a", "a")
    assert "a list of 2" in issue.message


def test_a_list_of_links_into_a_wired_param_is_multiple_links():
    document = int_chain({"inputs": {"offset": [link("c"), link("c2")]}})
    document["nodes"]["c2"] = {"type": "TestConst"}
    issue = only_issue(document)
    assert (issue.code, issue.node, issue.field) == ("multiple_links", "a", "offset")
    assert "'offset'" in issue.message and "got 2" in issue.message


def test_a_list_of_links_into_a_multi_input_is_accepted_in_order():
    document = workflow_dict(
        {
            "e1": {"type": "EmptyImage"},
            "e2": {"type": "EmptyImage"},
            "g": {"type": "ImageGrid", "inputs": {"images": [link("e2", "image"), link("e1", "image")]}},
            "p": {"type": "PreviewImage", "inputs": {"images": link("g", "image")}},
        }
    )
    plan = build_plan(parse_workflow(document))
    grid = next(n for n in plan.nodes if n.id == "g")
    assert grid.inputs["images"] == [Link(node="e2", output="image"), Link(node="e1", output="image")]


def test_a_link_from_a_node_that_does_not_exist_is_missing_node():
    issue = only_issue(int_chain({"inputs": {"a": link("ghost")}}))
    assert (issue.code, issue.node, issue.field) == ("missing_node", "a", "a")
    assert "'ghost'" in issue.message


def test_a_link_from_an_output_the_source_lacks_is_missing_output_listing_the_outputs():
    issue = only_issue(int_chain({"inputs": {"a": link("c", "result")}}))
    assert (issue.code, issue.node, issue.field) == ("missing_output", "a", "a")
    assert "'c'" in issue.message and "'result'" in issue.message
    assert issue.hint == "outputs: value"


def test_a_link_from_a_node_of_unknown_type_is_reported_only_on_that_node():
    document = int_chain()
    document["nodes"]["c"]["type"] = "TestKonst"
    issue = only_issue(document)
    assert (issue.code, issue.node) == ("unknown_type", "c")


def test_an_image_into_an_int_input_is_type_mismatch_naming_both_types():
    document = int_chain({"inputs": {"a": link("e", "image")}})
    document["nodes"]["e"] = {"type": "EmptyImage"}
    issue = only_issue(document)
    assert (issue.code, issue.node, issue.field) == ("type_mismatch", "a", "a")
    assert "expects INT" in issue.message and "e.image gives IMAGE" in issue.message


def test_a_float_wired_into_an_int_param_is_type_mismatch():
    document = int_chain({"inputs": {"offset": link("f")}})
    document["nodes"]["f"] = {"type": "Float", "params": {"value": 1.0}}
    issue = only_issue(document)
    assert (issue.code, issue.node, issue.field) == ("type_mismatch", "a", "offset")
    assert "FLOAT" in issue.message


def test_an_int_widens_into_a_float_param_without_an_issue():
    document = workflow_dict(
        {
            "c": {"type": "TestConst", "params": {"value": 1}},
            "i": {"type": "Int", "params": {"value": 2}},
            "t": {"type": "TestSlow", "inputs": {"a": link("c"), "delay": link("i")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("t")}},
        }
    )
    assert issues_of(document) == []
    slow = next(n for n in build_plan(parse_workflow(document)).nodes if n.id == "t")
    assert slow.wired_params == {"delay": Link(node="i", output="value")}


def test_an_int_primitive_widened_into_a_float_param_is_still_bounds_checked():
    document = workflow_dict(
        {
            "c": {"type": "TestConst"},
            "i": {"type": "Int", "params": {"value": 11}},
            "t": {"type": "TestSlow", "inputs": {"a": link("c"), "delay": link("i")}},
            "sink": {"type": "TestSink", "inputs": {"value": link("t")}},
        }
    )
    issue = only_issue(document)
    assert (issue.code, issue.node, issue.field) == ("out_of_bounds", "t", "delay")


# ---------------------------------------------------------------- graph shape


def test_two_nodes_feeding_each_other_are_a_cycle_naming_both():
    issue = only_issue(
        workflow_dict(
            {
                "x": {"type": "TestAdd", "inputs": {"a": link("y")}},
                "y": {"type": "TestAdd", "inputs": {"a": link("x")}},
                "sink": {"type": "TestSink", "inputs": {"value": link("y")}},
            }
        )
    )
    assert (issue.code, issue.node, issue.field) == ("cycle", "x", None)
    assert "x → y" in issue.message


def test_a_node_feeding_itself_is_a_cycle():
    issue = only_issue(
        workflow_dict(
            {
                "x": {"type": "TestAdd", "inputs": {"a": link("x")}},
                "sink": {"type": "TestSink", "inputs": {"value": link("x")}},
            }
        )
    )
    assert (issue.code, issue.node) == ("cycle", "x")
    assert "x" in issue.message


def test_a_cycle_through_a_wired_param_is_a_cycle():
    issue = only_issue(int_chain({"inputs": {"offset": link("a")}}))
    assert (issue.code, issue.node) == ("cycle", "a")


def test_each_separate_cycle_is_reported():
    found = issues_of(
        workflow_dict(
            {
                "x": {"type": "TestAdd", "inputs": {"a": link("y")}},
                "y": {"type": "TestAdd", "inputs": {"a": link("x")}},
                "z": {"type": "TestAdd", "inputs": {"a": link("z")}},
                "sink": {"type": "TestSink", "inputs": {"value": link("y")}},
            }
        )
    )
    assert sorted((i.code, i.node) for i in found) == [("cycle", "x"), ("cycle", "z")]


def test_a_workflow_without_an_output_node_is_no_output():
    issue = only_issue(workflow_dict({"c": {"type": "TestConst"}}))
    assert (issue.code, issue.node, issue.field) == ("no_output", None, None)
    assert "output node" in issue.message
    assert only_issue(workflow_dict({})).code == "no_output"


def test_running_up_to_a_node_that_does_not_exist_is_unknown_target():
    with pytest.raises(WorkflowInvalid) as caught:
        build_plan(parse_workflow(int_chain()), target="nope")
    assert [(i.code, i.node) for i in caught.value.issues] == [("unknown_target", "nope")]
    assert "'nope'" in caught.value.issues[0].message


# ---------------------------------------------------------------- exposed fields and overrides


def test_an_exposed_field_on_a_missing_node_is_unknown_exposed():
    issue = only_issue(int_chain(exposed=[{"node": "ghost", "param": "offset", "label": "Offset"}]))
    assert (issue.code, issue.node, issue.field) == ("unknown_exposed", "ghost", "offset")
    assert "'Offset'" in issue.message and "'ghost'" in issue.message


def test_an_exposed_field_naming_a_param_the_node_lacks_is_unknown_exposed():
    issue = only_issue(int_chain(exposed=[{"node": "a", "param": "ofset", "label": "Offset"}]))
    assert (issue.code, issue.node, issue.field) == ("unknown_exposed", "a", "ofset")
    assert "TestAdd" in issue.message and "'ofset'" in issue.message


def test_two_exposed_fields_with_one_label_are_duplicate_label():
    issue = only_issue(
        int_chain(
            exposed=[{"node": "a", "param": "offset", "label": "X"}, {"node": "c", "param": "value", "label": "X"}]
        )
    )
    assert (issue.code, issue.node, issue.field) == ("duplicate_label", "c", "value")
    assert "'X'" in issue.message


@pytest.mark.parametrize("name", ["Nope", "ghost.offset", "offset"])
def test_an_override_that_names_no_field_is_unknown_field(name):
    issue = only_issue(int_chain(), {name: 3})
    assert (issue.code, issue.node, issue.field) == ("unknown_field", None, name)
    assert repr(name) in issue.message


def test_an_override_of_a_param_the_node_lacks_is_unknown_param():
    issue = only_issue(int_chain(), {"a.ofset": 3})
    assert (issue.code, issue.node, issue.field) == ("unknown_param", "a", "ofset")


def test_one_field_set_under_two_names_is_duplicate_field():
    issue = only_issue(int_chain(exposed=[{"node": "a", "param": "offset", "label": "Off"}]), {"Off": 1, "a.offset": 2})
    assert (issue.code, issue.node, issue.field) == ("duplicate_field", "a", "offset")
    assert "'Off'" in issue.message and "'a.offset'" in issue.message


def test_overrides_are_coerced_from_text_and_validated():
    plan = build_plan(
        parse_workflow(int_chain(exposed=[{"node": "a", "param": "offset", "label": "Offset"}])), {"offset": "7"}
    )  # labels match case-insensitively
    assert next(n for n in plan.nodes if n.id == "a").params["offset"] == 7
    issue = only_issue(int_chain(), {"a.offset": "5000"})
    assert (issue.code, issue.node, issue.field) == ("out_of_bounds", "a", "offset")
    assert "5000" in issue.message


def test_an_override_replaces_a_wire_into_that_param():
    document = int_chain({"inputs": {"offset": link("i")}})
    document["nodes"]["i"] = {"type": "Int", "params": {"value": 5000}}
    assert only_issue(document).code == "out_of_bounds"
    plan = build_plan(parse_workflow(document), {"a.offset": "3"})
    add = next(n for n in plan.nodes if n.id == "a")
    assert add.params["offset"] == 3 and add.wired_params == {}
    assert "i" not in [n.id for n in plan.nodes]  # no longer feeds anything


def test_overrides_do_not_change_the_workflow():
    workflow = parse_workflow(int_chain())
    before = canonical_json(workflow)
    build_plan(workflow, {"a.offset": 9})
    assert canonical_json(workflow) == before


# ---------------------------------------------------------------- all at once, never raising


def test_every_problem_is_reported_at_once():
    found = issues_of(
        workflow_dict(
            {
                "c": {"type": "TestKonst"},
                "a": {"type": "TestAdd", "params": {"offset": 5000}},
                "sink": {"type": "TestSink", "inputs": {"value": link("a")}},
            },
            exposed=[{"node": "ghost", "param": "x", "label": "X"}],
        ),
        {"Nope": 1},
    )
    assert {(i.code, i.node) for i in found} >= {
        ("unknown_type", "c"),
        ("missing_input", "a"),
        ("out_of_bounds", "a"),
        ("unknown_exposed", "ghost"),
        ("unknown_field", None),
    }


BAD_WORKFLOWS = {
    "everything-missing": workflow_dict({"a": {"type": "TestAdd"}, "b": {"type": "Subgraph"}}),
    "links-everywhere": workflow_dict(
        {
            "a": {
                "type": "TestAdd",
                "inputs": {"a": [link("a"), link("zz", "q")], "b": link("a", "nope"), "offset": [], "zz": link("a")},
            },
            "s": {"type": "TestSink", "inputs": {"value": [], "other": link("s")}},
        }
    ),
    "junk-params": workflow_dict(
        {
            "r": {"type": "ResizeImage", "type_version": 7, "params": {"width": {"a": [1]}, "method": None}},
            "e": {"type": "EmptyImage", "params": {"width": [1, 2], "color": 3}},
            "s": {"type": "SaveImage", "params": {"filename_prefix": None}, "inputs": {"images": link("e", "image")}},
        }
    ),
}


@pytest.mark.parametrize("document", BAD_WORKFLOWS.values(), ids=BAD_WORKFLOWS.keys())
def test_validate_workflow_returns_issues_instead_of_raising(document):
    found = validate_workflow(parse_workflow(document), {"nope": 1, "a.offset": "x"}, target="a")
    assert found and all(isinstance(i, Issue) and i.code and i.message for i in found)


@pytest.mark.parametrize("document", BAD_WORKFLOWS.values(), ids=BAD_WORKFLOWS.keys())
def test_build_plan_raises_workflow_invalid_with_the_same_issues(document):
    workflow = parse_workflow(document)
    with pytest.raises(WorkflowInvalid) as caught:
        build_plan(workflow)
    assert caught.value.issues == validate_workflow(workflow)
    assert all(str(i) in str(caught.value) for i in caught.value.issues)


# ---------------------------------------------------------------- pruning and order


def test_nodes_that_feed_no_output_are_not_planned():
    document = int_chain()
    document["nodes"] |= {"dangling": {"type": "TestAdd", "inputs": {"a": link("c")}}, "lonely": {"type": "TestConst"}}
    assert issues_of(document) == []
    assert plan_ids(document) == ["c", "a", "sink"]


def test_a_target_plans_only_that_node_and_its_ancestors():
    document = int_chain()
    document["nodes"] |= {"b": {"type": "TestAdd", "inputs": {"a": link("a")}}, "other": {"type": "TestConst"}}
    plan = build_plan(parse_workflow(document), target="a")
    assert [n.id for n in plan.nodes] == ["c", "a"]
    assert plan.output_nodes == ["a"]


def test_wired_param_sources_are_ancestors():
    document = int_chain({"inputs": {"offset": link("i")}})
    document["nodes"]["i"] = {"type": "Int", "params": {"value": 3}}
    ids = plan_ids(document, target="a")
    assert set(ids) == {"c", "i", "a"} and ids[-1] == "a"


def test_the_plan_is_in_topological_order_with_outputs_last():
    document = workflow_dict(
        {
            "sink2": {"type": "TestSink", "inputs": {"value": link("c")}},
            "join": {"type": "TestAdd", "inputs": {"a": link("left"), "b": link("right")}},
            "right": {"type": "TestAdd", "inputs": {"a": link("c")}},
            "left": {"type": "TestAdd", "inputs": {"a": link("c"), "offset": link("c")}},
            "c": {"type": "TestConst"},
            "sink": {"type": "TestSink", "inputs": {"value": link("join")}},
        }
    )
    plan = build_plan(parse_workflow(document))
    order = [n.id for n in plan.nodes]
    for planned in plan.nodes:
        for value in [*planned.inputs.values(), *planned.wired_params.values()]:
            for source in value if isinstance(value, list) else [value]:
                assert order.index(source.node) < order.index(planned.id), (source.node, planned.id)
    assert order[-2:] == ["sink", "sink2"] and plan.output_nodes == ["sink", "sink2"]
    assert plan.consumers["c"] == 3 and plan.consumers["join"] == 1 and plan.consumers["sink"] == 0


# ---------------------------------------------------------------- subgraphs

ADDONE = {
    "name": "add one",
    "nodes": {"add": {"type": "TestAdd", "params": {"offset": 1}}},
    "inputs": [{"name": "x", "type": "INT", "targets": [{"node": "add", "input": "a"}]}],
    "outputs": [{"name": "y", "type": "INT", "source": {"node": "add", "output": "value"}}],
}


def instance(subgraph: str, **inputs: Any) -> dict[str, Any]:
    return {"type": "Subgraph", "subgraph": subgraph, "inputs": inputs}


def addone_chain(**extra: Any) -> dict[str, Any]:
    """n1 → sub1 → sub2 → sink, both instances of 'addone'."""
    return workflow_dict(
        {
            "n1": {"type": "TestConst", "params": {"value": 5}},
            "sub1": instance("addone", x=link("n1")),
            "sub2": instance("addone", x=link("sub1", "y")),
            "sink": {"type": "TestSink", "inputs": {"value": link("sub2", "y")}},
        },
        subgraphs={"addone": ADDONE, **extra.pop("subgraphs", {})},
        **extra,
    )


def sink_values(document: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, int]:
    result = Executor().execute(build_plan(load_workflow(document), overrides), run_id="r")
    return {item.node_id: item.meta["value"] for item in result.output_items}


def test_subgraph_instances_flatten_to_namespaced_nodes_with_rewired_links():
    plan = build_plan(parse_workflow(addone_chain()))
    nodes = {n.id: n for n in plan.nodes}
    assert [n.id for n in plan.nodes] == ["n1", "sub1/add", "sub2/add", "sink"]
    assert nodes["sub1/add"].inputs == {"a": Link(node="n1", output="value")}
    assert nodes["sub2/add"].inputs == {"a": Link(node="sub1/add", output="value")}
    assert nodes["sink"].inputs == {"value": Link(node="sub2/add", output="value")}
    assert nodes["sub1/add"].params == nodes["sub2/add"].params == {"offset": 1}
    assert sink_values(addone_chain()) == {"sink": 7}


def test_an_override_of_a_namespaced_node_applies_to_that_instance_only():
    workflow = parse_workflow(addone_chain())
    before = canonical_json(workflow)
    nodes = {n.id: n for n in build_plan(workflow, {"sub1/add.offset": "10"}).nodes}
    assert nodes["sub1/add"].params == {"offset": 10}
    assert nodes["sub2/add"].params == {"offset": 1}
    assert canonical_json(workflow) == before
    assert sink_values(addone_chain(), {"sub1/add.offset": "10"}) == {"sink": 16}


def test_an_exposed_field_inside_an_instance_can_be_set_by_its_label():
    document = addone_chain(exposed=[{"node": "sub2/add", "param": "offset", "label": "Boost"}])
    assert issues_of(document) == []
    nodes = {n.id: n for n in build_plan(parse_workflow(document), {"Boost": 4}).nodes}
    assert (nodes["sub1/add"].params, nodes["sub2/add"].params) == ({"offset": 1}, {"offset": 4})


def test_nested_subgraphs_flatten_to_paths():
    document = workflow_dict(
        {
            "n1": {"type": "TestConst", "params": {"value": 5}},
            "outer": instance("wrap", x=link("n1")),
            "sink": {"type": "TestSink", "inputs": {"value": link("outer", "y")}},
        },
        subgraphs={
            "addone": ADDONE,
            "wrap": {
                "nodes": {"mid": instance("addone")},
                "inputs": [{"name": "x", "type": "INT", "targets": [{"node": "mid", "input": "x"}]}],
                "outputs": [{"name": "y", "type": "INT", "source": {"node": "mid", "output": "y"}}],
            },
        },
    )
    plan = build_plan(parse_workflow(document))
    nodes = {n.id: n for n in plan.nodes}
    assert [n.id for n in plan.nodes] == ["n1", "outer/mid/add", "sink"]
    assert nodes["outer/mid/add"].inputs == {"a": Link(node="n1", output="value")}
    assert nodes["sink"].inputs == {"value": Link(node="outer/mid/add", output="value")}
    override = {n.id: n for n in build_plan(parse_workflow(document), {"outer/mid/add.offset": 3}).nodes}
    assert override["outer/mid/add"].params == {"offset": 3}


def test_problems_inside_an_instance_are_reported_on_the_namespaced_node():
    broken = {**ADDONE, "nodes": {"add": {"type": "TestAdd", "params": {"offset": 5000}}}}
    found = issues_of(addone_chain(subgraphs={"addone": broken}))
    assert sorted((i.code, i.node, i.field) for i in found) == [
        ("out_of_bounds", "sub1/add", "offset"),
        ("out_of_bounds", "sub2/add", "offset"),
    ]


def test_an_unconnected_subgraph_input_leaves_its_target_unconnected():
    document = addone_chain()
    document["nodes"]["sub1"]["inputs"] = {}
    issue = only_issue(document)
    assert (issue.code, issue.node, issue.field) == ("missing_input", "sub1/add", "a")


def test_a_link_into_an_undeclared_subgraph_input_is_unknown_input():
    document = addone_chain()
    document["nodes"]["sub1"]["inputs"]["z"] = link("n1")
    issue = only_issue(document)
    assert (issue.code, issue.node, issue.field) == ("unknown_input", "sub1", "z")
    assert issue.hint == "inputs: x"


def test_an_instance_feeding_itself_is_a_cycle_of_its_inner_node():
    document = addone_chain()
    document["nodes"]["sub1"]["inputs"]["x"] = link("sub1", "y")
    issue = only_issue(document)
    assert (issue.code, issue.node) == ("cycle", "sub1/add")


def test_an_instance_of_an_undefined_subgraph_is_unknown_subgraph():
    document = addone_chain()
    document["nodes"]["lost"] = instance("addtwo")
    issue = only_issue(document)
    assert (issue.code, issue.node, issue.field) == ("unknown_subgraph", "lost", "subgraph")
    assert "'addtwo'" in issue.message
    assert issue.hint == "defined: addone"


def test_a_subgraph_input_targeting_a_missing_inner_node_is_missing_node():
    broken = {**ADDONE, "inputs": [{"name": "x", "type": "INT", "targets": [{"node": "ad", "input": "a"}]}]}
    found = issues_of(addone_chain(subgraphs={"addone": broken}))
    assert ("missing_node", "sub1", "x") in {(i.code, i.node, i.field) for i in found}
    assert any("'sub1/ad'" in i.message for i in found if i.code == "missing_node")


def test_a_subgraph_that_contains_an_instance_of_itself_is_subgraph_cycle():
    issue = only_issue(
        int_chain(subgraphs={"loop": {"nodes": {"again": instance("loop")}}})
        | {"nodes": {**int_chain()["nodes"], "l": instance("loop")}}
    )
    assert (issue.code, issue.node, issue.field) == ("subgraph_cycle", "l/again", "subgraph")
    assert "'loop'" in issue.message and "loop → loop" in issue.message


def test_subgraphs_containing_each_other_are_subgraph_cycle():
    document = int_chain(
        subgraphs={"ping": {"nodes": {"p": instance("pong")}}, "pong": {"nodes": {"q": instance("ping")}}}
    )
    document["nodes"]["top"] = instance("ping")
    issue = only_issue(document)
    assert (issue.code, issue.node) == ("subgraph_cycle", "top/p/q")
    assert "ping → pong → ping" in issue.message


def test_a_link_to_an_undeclared_subgraph_output_is_reported_once_as_missing_output():
    document = addone_chain()
    document["nodes"]["sink"]["inputs"]["value"] = link("sub2", "z")
    issue = only_issue(document)
    assert (issue.code, issue.node, issue.field) == ("missing_output", "sink", "value")


def test_an_instance_of_an_undefined_subgraph_is_reported_only_on_the_instance():
    document = addone_chain()
    document["nodes"]["sub2"]["subgraph"] = "addtwo"
    issue = only_issue(document)
    assert (issue.code, issue.node) == ("unknown_subgraph", "sub2")


def test_a_subgraph_input_targeting_an_undeclared_input_of_a_nested_instance_is_reported():
    document = workflow_dict(
        {
            "n1": {"type": "TestConst"},
            "outer": instance("wrap", x=link("n1")),
            "sink": {"type": "TestSink", "inputs": {"value": link("n1")}},
        },
        subgraphs={
            "addone": ADDONE,
            "wrap": {
                "nodes": {"mid": instance("addone", x=link("k")), "k": {"type": "TestConst"}},
                "inputs": [{"name": "x", "type": "INT", "targets": [{"node": "mid", "input": "bogus"}]}],
            },
        },
    )
    found = issues_of(document)
    assert any("bogus" in f"{i.field} {i.message}" for i in found), [str(i) for i in found]


def test_a_workflow_model_built_in_code_validates_like_a_parsed_one():
    workflow = Workflow.model_validate(addone_chain())
    assert validate_workflow(workflow) == []


# ---------------------------------------------------------------- budgets


def nested_bomb(levels: int, fan_out: int) -> dict[str, Any]:
    """Subgraph s_d holds `fan_out` instances of s_{d+1}; s_{levels} holds one node: fan_out**levels nodes."""
    subgraphs = {f"s{levels}": {"nodes": {"c": {"type": "TestConst", "params": {"value": 1}}}}}
    for depth in range(levels - 1, -1, -1):
        subgraphs[f"s{depth}"] = {"nodes": {f"i{k}": instance(f"s{depth + 1}") for k in range(fan_out)}}
    return workflow_dict({"top": instance("s0")}, subgraphs=subgraphs)


def test_a_subgraph_expansion_bomb_is_refused_before_it_is_expanded():
    # 10⁷ nodes from a document of a few kilobytes: one issue, and nothing is built (the measuring visits each
    # subgraph once, so this returns at once).
    issue = only_issue(nested_bomb(levels=7, fan_out=10))
    assert (issue.code, issue.field) == ("too_large", "nodes")
    assert "5000" in issue.message and "FLOWCANVAS_MAX_NODES" in issue.hint


def test_subgraphs_nested_deeper_than_the_limit_are_refused_without_recursing_through_them():
    issue = only_issue(nested_bomb(levels=1000, fan_out=1))
    assert (issue.code, issue.field) == ("too_large", "subgraphs")
    assert "deeper than 16 levels" in issue.message


def test_the_budgets_can_be_raised(monkeypatch: pytest.MonkeyPatch):
    document = nested_bomb(levels=4, fan_out=10)  # 10,000 nodes
    assert only_issue(document).code == "too_large"
    monkeypatch.setenv("FLOWCANVAS_MAX_NODES", "20000")
    assert all(issue.code != "too_large" for issue in issues_of(document))


@pytest.mark.parametrize(
    "change,where",
    [
        ({"name": "n" * 256}, (None, "name")),
        ({"name": "a\x00b"}, (None, "name")),
        ({"description": "a\x00b"}, (None, "description")),
        ({"tags": ["t" * 256]}, (None, "tags.0")),
    ],
)
def test_what_postgresql_would_refuse_is_refused_for_every_backend(change: dict[str, Any], where: tuple):
    issues = parse_issues({**int_chain(), **change})
    assert [(i.node, i.field, i.code) for i in issues] == [(*where, "schema")]


def test_a_node_id_longer_than_the_database_stores_is_refused_even_when_a_subgraph_path_makes_it_so():
    long_id = "s" * 300
    document = int_chain()
    document["nodes"][long_id] = document["nodes"].pop("sink")
    assert [i.code for i in parse_issues(document)] == ["schema"]
    nested = addone_chain()
    nested["nodes"]["i" * 253] = nested["nodes"].pop("sub2")  # "iii…/add": 257 characters
    nested["nodes"]["sink"]["inputs"]["value"]["node"] = "i" * 253
    found = issues_of(nested)
    assert any(i.code == "schema" and i.field == "id" and "at most 255" in i.message for i in found)

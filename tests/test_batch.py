"""Sweeps, zips and CSV jobs: value parsing, grouping and expansion (zip within a group, product across groups)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.batch import (
    MAX_JOBS,
    BatchSpecError,
    SweepGroup,
    build_groups,
    expand,
    parse_assignment,
    parse_values,
    prepare_batch,
    read_jobs_csv,
)


def group(**fields: list) -> SweepGroup:
    built = SweepGroup()
    for name, values in fields.items():
        built.add(name, values)
    return built


# ---------------------------------------------------------------- parse_values: ranges


def test_an_integer_range_is_inclusive_and_gives_ints():
    values = parse_values("1..4")
    assert values == [1, 2, 3, 4]
    assert all(type(v) is int for v in values)


def test_a_descending_range_counts_down():
    assert parse_values("4..1") == [4, 3, 2, 1]


def test_a_range_with_a_fractional_step_gives_exact_floats():
    values = parse_values("0..1:0.25")
    assert values == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(type(v) is float for v in values)


def test_decimal_steps_do_not_accumulate_binary_rounding_error():
    assert parse_values("0.1..0.3:0.1") == [0.1, 0.2, 0.3]


def test_a_step_that_does_not_divide_the_span_stops_before_the_end():
    assert parse_values("1..10:3") == [1, 4, 7, 10]
    assert parse_values("1..9:3") == [1, 4, 7]


def test_a_range_may_be_negative_and_surrounded_by_spaces():
    assert parse_values("  -2..2 ") == [-2, -1, 0, 1, 2]


def test_a_range_of_one_value():
    assert parse_values("5..5") == [5]


@pytest.mark.parametrize("text", ["1..4:0", "1..4:-1", "4..1:0.0"])
def test_a_zero_or_negative_step_is_a_batch_spec_error(text: str):
    with pytest.raises(BatchSpecError, match="step must be positive"):
        parse_values(text)


def test_a_range_with_more_values_than_max_jobs_is_refused():
    with pytest.raises(BatchSpecError, match="more than"):
        parse_values(f"1..{MAX_JOBS + 1}")
    assert len(parse_values(f"1..{MAX_JOBS}")) == MAX_JOBS


@pytest.mark.parametrize("text", ["a cat... sleeping", "1...4", "wait...", "from 1..4 apples"])
def test_text_containing_dots_is_not_a_range(text: str):
    assert parse_values(text) == [text]


# ---------------------------------------------------------------- parse_values: lists


def test_a_json_list_keeps_its_types_and_its_commas():
    assert parse_values('["a, b", "c", 3, 1.5, true]') == ["a, b", "c", 3, 1.5, True]


@pytest.mark.parametrize("text", ["[]", "[1, 2", "[not json]"])
def test_an_empty_or_broken_json_list_is_a_batch_spec_error(text: str):
    with pytest.raises(BatchSpecError):
        parse_values(text)


def test_comma_separated_text_splits_on_commas():
    assert parse_values("#ff0000,#00ff00,#0000ff") == ["#ff0000", "#00ff00", "#0000ff"]


def test_an_escaped_comma_stays_inside_its_value():
    assert parse_values(r"a cat\, sleeping,a dog") == ["a cat, sleeping", "a dog"]


def test_an_escaped_backslash_is_one_backslash():
    assert parse_values("a\\\\b,c") == ["a\\b", "c"]


def test_text_without_commas_is_a_single_value():
    assert parse_values("a photo of a cat") == ["a photo of a cat"]


# ---------------------------------------------------------------- parse_assignment


def test_an_assignment_splits_at_the_first_equals_sign():
    assert parse_assignment("Prompt=a=b") == ("Prompt", "a=b")
    assert parse_assignment(" node.param =5") == ("node.param", "5")


def test_an_assignment_may_have_an_empty_value():
    assert parse_assignment("Prompt=") == ("Prompt", "")


@pytest.mark.parametrize("text", ["no-equals-sign", "=5", "  =5", ""])
def test_an_assignment_without_a_name_or_equals_sign_is_an_error(text: str):
    with pytest.raises(BatchSpecError, match="NAME=VALUE"):
        parse_assignment(text)


# ---------------------------------------------------------------- SweepGroup


def test_zipped_fields_give_one_row_per_index():
    zipped = group(color=["#f00", "#0f0"], width=[64, 96])
    assert len(zipped) == 2
    assert zipped.rows() == [{"color": "#f00", "width": 64}, {"color": "#0f0", "width": 96}]


def test_zipped_fields_of_unequal_length_are_an_error():
    zipped = group(color=["#f00", "#0f0"])
    with pytest.raises(BatchSpecError, match="equal lengths"):
        zipped.add("width", [64, 96, 128])
    assert list(zipped.fields) == ["color"]


def test_a_field_cannot_appear_twice_in_one_group():
    zipped = group(color=["#f00"])
    with pytest.raises(BatchSpecError, match="twice"):
        zipped.add("color", ["#0f0"])


def test_an_empty_group_has_no_rows():
    assert len(SweepGroup()) == 0
    assert SweepGroup().rows() == []


# ---------------------------------------------------------------- expand


def test_no_groups_give_one_job_with_the_base_values():
    assert expand([], {"Seed": "1"}) == [{"Seed": "1"}]
    assert expand([]) == [{}]


def test_groups_combine_as_a_product_with_the_last_group_varying_fastest():
    jobs = expand([group(a=[1, 2]), group(b=["x", "y", "z"])])
    assert len(jobs) == 6
    assert jobs == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 1, "b": "z"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
        {"a": 2, "b": "z"},
    ]


def test_fields_zipped_in_a_group_move_together_across_the_product():
    jobs = expand([group(color=["red", "green"], width=[64, 96]), group(seed=[1, 2, 3])], {"steps": 4})
    assert len(jobs) == 6
    assert [(j["color"], j["width"], j["seed"]) for j in jobs] == [
        ("red", 64, 1),
        ("red", 64, 2),
        ("red", 64, 3),
        ("green", 96, 1),
        ("green", 96, 2),
        ("green", 96, 3),
    ]
    assert all(j["steps"] == 4 for j in jobs)


def test_swept_values_override_base_values_and_the_base_is_not_mutated():
    base = {"a": 0, "b": "base"}
    jobs = expand([group(a=[1, 2])], base)
    assert jobs == [{"a": 1, "b": "base"}, {"a": 2, "b": "base"}]
    assert base == {"a": 0, "b": "base"}
    assert jobs[0] is not jobs[1]


def test_a_field_swept_in_two_groups_is_an_error():
    with pytest.raises(BatchSpecError, match="more than one group: a"):
        expand([group(a=[1, 2]), group(b=[1], a=[3])])


def test_a_batch_larger_than_max_jobs_is_refused_before_expanding():
    side = int(MAX_JOBS**0.5) + 1
    big = [group(a=list(range(side))), group(b=list(range(side)))]
    with pytest.raises(BatchSpecError, match=f"more than {MAX_JOBS}"):
        expand(big)


def test_a_batch_of_exactly_max_jobs_is_allowed():
    jobs = expand([group(a=list(range(MAX_JOBS // 10))), group(b=list(range(10)))])
    assert len(jobs) == MAX_JOBS


# ---------------------------------------------------------------- read_jobs_csv


def test_a_jobs_csv_is_one_zipped_group_with_quoted_commas_kept(tmp_path: Path):
    path = tmp_path / "jobs.csv"
    path.write_text('Prompt,Seed\n"a cat, sleeping",1\n"a dog",2\n', encoding="utf-8")
    jobs = read_jobs_csv(path)
    assert jobs.rows() == [{"Prompt": "a cat, sleeping", "Seed": "1"}, {"Prompt": "a dog", "Seed": "2"}]


def test_a_jobs_csv_with_a_byte_order_mark_reads_a_clean_header(tmp_path: Path):
    path = tmp_path / "jobs.csv"
    path.write_bytes("\ufeffWidth,Height\n8,9\n".encode("utf-8"))
    assert read_jobs_csv(path).rows() == [{"Width": "8", "Height": "9"}]


def test_a_jobs_csv_skips_blank_lines_and_strips_header_names():
    jobs = read_jobs_csv(" a , b \n\n1,2\n\n3,4\n")
    assert jobs.rows() == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_a_jobs_csv_with_a_ragged_row_is_an_error():
    with pytest.raises(BatchSpecError, match="1 cells, the header has 2"):
        read_jobs_csv("a,b\n1,2\n3\n")


def test_the_ragged_row_error_names_the_line_of_the_file():
    with pytest.raises(BatchSpecError, match="line 4 "):
        read_jobs_csv("a,b\n\n1,2\n3\n")  # the short row is on line 4 of the file


@pytest.mark.parametrize("text", ["a,b\n", "a,b\n\n  \n", ""])
def test_a_jobs_csv_without_job_rows_is_an_error(text: str):
    with pytest.raises(BatchSpecError, match="at least one job row"):
        read_jobs_csv(text)


@pytest.mark.parametrize("header", ["a,a", "a,"])
def test_a_jobs_csv_header_must_name_distinct_fields(header: str):
    with pytest.raises(BatchSpecError, match="distinct fields"):
        read_jobs_csv(f"{header}\n1,2\n")


def test_a_missing_jobs_file_is_a_batch_spec_error(tmp_path: Path):
    with pytest.raises(BatchSpecError, match="cannot read jobs file"):
        read_jobs_csv(tmp_path / "missing.csv")


# ---------------------------------------------------------------- build_groups


def test_build_groups_makes_one_group_per_sweep_and_zips_into_the_sweep_before_it(tmp_path: Path):
    csv_path = tmp_path / "jobs.csv"
    csv_path.write_text("seed\n7\n8\n", encoding="utf-8")
    groups = build_groups(["Colour=red,green", "Height=1..3"], [(0, "Width=64,96")], csv_path)
    assert [list(g.fields) for g in groups] == [["Colour", "Width"], ["Height"], ["seed"]]
    assert [len(g) for g in groups] == [2, 3, 2]
    assert len(expand(groups)) == 12


def test_a_zip_before_any_sweep_is_an_error():
    with pytest.raises(BatchSpecError, match="must follow a --sweep"):
        build_groups([], [(-1, "Width=64,96")])


def test_a_zip_whose_length_differs_from_its_sweep_is_an_error():
    with pytest.raises(BatchSpecError, match="equal lengths"):
        build_groups(["Colour=red,green"], [(0, "Width=1..3")])


def test_a_sweep_without_equals_sign_is_an_error():
    with pytest.raises(BatchSpecError, match="NAME=VALUE"):
        build_groups(["Colour"])


# ---------------------------------------------------------------- validation before queueing


def test_a_confined_batch_refuses_a_swept_path_outside_its_folders_before_queueing_any(tmp_path: Path):
    from pipelines.issues import WorkflowInvalid
    from pipelines.jobs import RunRequest
    from pipelines.workflow import load_workflow

    (tmp_path / "inside.png").write_bytes(b"")
    workflow = load_workflow(Path(__file__).resolve().parents[1] / "pipelines" / "templates" / "resize-image.json")
    jobs = expand([group(**{"Source image": [str(tmp_path / "inside.png"), "/etc/passwd"]})])
    confined = RunRequest(workflow=workflow, file_roots=(tmp_path,))
    with pytest.raises(WorkflowInvalid) as refused:
        prepare_batch(confined, jobs)
    [issue] = refused.value.issues
    assert (issue.node, issue.field, issue.code) == ("load", "path", "not_allowed")
    assert issue.message.startswith("job 2: ") and "outside the folders" in issue.message
    assert len(prepare_batch(RunRequest(workflow=workflow), jobs)) == 2, "unconfined (the CLI), both are valid"
    missing = expand([group(**{"Source image": [str(tmp_path / "inside.png"), str(tmp_path / "gone.png")]})])
    with pytest.raises(WorkflowInvalid) as refused:
        prepare_batch(RunRequest(workflow=workflow), missing)
    [issue] = refused.value.issues
    assert (issue.field, issue.code, issue.message) == (
        "path",
        "missing_file",
        f"job 2: no file at '{tmp_path}/gone.png'",
    )

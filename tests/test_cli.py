"""The headless CLI: run (with --set, sweeps, CSV jobs, --out, --grid, --json), validate, nodes, workflows, runs.

Most tests call `app.cli.main` in-process (one torch import for the whole file); the last ones go through
the real entry point `python run.py` in a subprocess. Workflows use built-in nodes only, so they also run
there (the Test* node types exist only in the pytest process).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.cli import main
from app.console import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from nodes.image import MIN_CAPTIONED_CELL
from pipelines.workflow import PNG_RUN_KEY, PNG_WORKFLOW_KEY, canonical_json, load_workflow
from storage import RunStatus, Storage, open_storage
from tests.conftest import link, workflow_dict

REPO = Path(__file__).resolve().parent.parent
ISSUE_KEYS = {"code", "node", "field", "message", "hint"}
RUN_KEYS = {"run_id", "status", "values", "outputs", "timings", "error"}


def swatch(color: str = "#336699") -> dict[str, Any]:
    """An 8 x 6 swatch; its height comes from an Int primitive. Exposed: Colour, Width, Height."""
    return workflow_dict(
        {
            "h": {"type": "Int", "params": {"value": 6}},
            "img": {"type": "EmptyImage", "params": {"width": 8, "color": color}, "inputs": {"height": link("h")}},
            "save": {
                "type": "SaveImage",
                "params": {"filename_prefix": "swatch"},
                "inputs": {"images": link("img", "image")},
            },
        },
        name="Swatch",
        description="a test swatch",
        tags=["test"],
        exposed=[
            {"node": "img", "param": "color", "label": "Colour"},
            {"node": "img", "param": "width", "label": "Width"},
            {"node": "h", "param": "value", "label": "Height"},
        ],
    )


def crop_too_big() -> dict[str, Any]:
    """Valid, but fails when run: the crop is wider than its 8 x 8 image."""
    return workflow_dict(
        {
            "img": {"type": "EmptyImage", "params": {"width": 8, "height": 8}},
            "crop": {
                "type": "CropImage",
                "params": {"width": 16, "height": 4},
                "inputs": {"image": link("img", "image")},
            },
            "save": {"type": "SaveImage", "inputs": {"images": link("crop", "image")}},
        },
        name="Bad crop",
    )


def write(path: Path, document: dict[str, Any] | str) -> Path:
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, Any]:
    code, out, _ = cli(capsys, *argv, "--json")
    return code, json.loads(out)  # the whole of stdout is one JSON document


def png_chunks(path: str | Path) -> tuple[dict[str, str], tuple[int, int]]:
    with Image.open(path) as png:
        png.load()
        return dict(png.text), png.size


@pytest.fixture
def wf(tmp_path: Path) -> Path:
    return write(tmp_path / "swatch.json", swatch())


# ---------------------------------------------------------------- run


def test_run_exits_0_and_prints_a_table_of_runs(home: Path, wf: Path, capsys):
    code, out, _ = cli(capsys, "run", wf, "--device", "cpu")
    assert code == EXIT_OK
    assert "succeeded" in out and "run" in out.splitlines()[0]


def test_run_out_writes_pngs_carrying_the_substituted_workflow_and_the_run_record(
    home: Path, wf: Path, tmp_path: Path, capsys
):
    out_dir = tmp_path / "out"
    code, summary = cli_json(
        capsys, "run", wf, "--set", "Colour=#ff0000", "--set", "Height=7", "--out", out_dir, "--device", "cpu"
    )
    assert code == EXIT_OK and summary["ok"] is True
    [run] = summary["runs"]
    expected = out_dir / f"swatch_{run['run_id']}_save_00.png"
    assert run["outputs"] == [str(expected)]
    assert sorted(os.listdir(out_dir)) == [expected.name]
    text, size = png_chunks(expected)
    assert size == (8, 7)
    embedded = load_workflow(expected.read_bytes())
    assert embedded.nodes["img"].params["color"] == "#ff0000"
    assert embedded.nodes["h"].params["value"] == 7
    assert embedded.exposed == load_workflow(wf).exposed
    record = json.loads(text[PNG_RUN_KEY])
    assert record["run_id"] == run["run_id"]
    assert record["overrides"] == {"Colour": "#ff0000", "Height": 7}
    assert PNG_WORKFLOW_KEY in text
    with Image.open(expected) as png:
        assert png.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_run_json_prints_exactly_one_document_with_the_summary_keys(home: Path, wf: Path, capsys):
    code, summary = cli_json(capsys, "run", wf, "--device", "cpu")
    assert code == EXIT_OK
    assert {"ok", "batch_id", "grid", "runs"} <= set(summary)
    assert summary["ok"] is True and summary["batch_id"] is None and summary["grid"] is None
    [run] = summary["runs"]
    assert RUN_KEYS <= set(run)
    assert run["status"] == "succeeded" and run["error"] is None and run["values"] == {}
    assert set(run["timings"]) == {"h", "img", "save"}
    assert len(run["outputs"]) == 1 and Path(run["outputs"][0]).is_file()  # without --out: the stored artifact


def test_set_by_label_and_by_node_param_coerces_text_to_the_param_type(home: Path, wf: Path, storage: Storage, capsys):
    code, summary = cli_json(
        capsys,
        "run",
        wf,
        "--set",
        "Width=40",
        "--set",
        "h.value=3",
        "--set",
        "save.filename_prefix=x",
        "--device",
        "cpu",
    )
    assert code == EXIT_OK
    [run] = summary["runs"]
    assert run["values"] == {"Width": 40, "h.value": 3, "save.filename_prefix": "x"}
    assert storage.get_run(run["run_id"]).overrides == {"Width": 40, "h.value": 3, "save.filename_prefix": "x"}
    assert png_chunks(run["outputs"][0])[1] == (40, 3)


def test_set_matches_an_exposed_label_case_insensitively(home: Path, wf: Path, capsys):
    code, summary = cli_json(capsys, "run", wf, "--set", "width=12", "--device", "cpu")
    assert code == EXIT_OK
    assert png_chunks(summary["runs"][0]["outputs"][0])[1] == (12, 6)


def test_sweep_zip_and_a_second_sweep_run_the_product_as_one_batch(home: Path, wf: Path, storage: Storage, capsys):
    code, summary = cli_json(
        capsys,
        "run",
        wf,
        "--sweep",
        "Colour=#ff0000,#00ff00",
        "--zip",
        "Width=9..10",
        "--sweep",
        "Height=[1, 2, 3]",
        "--set",
        "save.filename_prefix=sw",
        "--device",
        "cpu",
    )
    assert code == EXIT_OK and summary["ok"] is True
    runs = summary["runs"]
    assert len(runs) == 6
    assert [(r["values"]["Colour"], r["values"]["Width"], r["values"]["Height"]) for r in runs] == [
        ("#ff0000", 9, 1),
        ("#ff0000", 9, 2),
        ("#ff0000", 9, 3),
        ("#00ff00", 10, 1),
        ("#00ff00", 10, 2),
        ("#00ff00", 10, 3),
    ]
    assert all(r["values"]["save.filename_prefix"] == "sw" for r in runs)
    assert [png_chunks(r["outputs"][0])[1] for r in runs] == [(9, 1), (9, 2), (9, 3), (10, 1), (10, 2), (10, 3)]
    batch_id = summary["batch_id"]
    assert batch_id
    recorded = storage.list_runs(batch_id=batch_id)
    assert len(recorded) == 6 and len({r.id for r in recorded}) == 6
    assert sorted(r.batch_index for r in recorded) == list(range(6))
    by_index = {r.batch_index: r for r in recorded}
    assert [by_index[i].id for i in range(6)] == [r["run_id"] for r in runs]


def test_jobs_csv_runs_one_job_per_row_times_the_sweeps(home: Path, wf: Path, tmp_path: Path, capsys):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("Colour,Width\n#0000ff,11\n#ffffff,12\n", encoding="utf-8")
    code, summary = cli_json(capsys, "run", wf, "--jobs", jobs, "--sweep", "Height=1,2", "--device", "cpu")
    assert code == EXIT_OK
    assert [r["values"] for r in summary["runs"]] == [
        {"Height": 1, "Colour": "#0000ff", "Width": 11},
        {"Height": 1, "Colour": "#ffffff", "Width": 12},
        {"Height": 2, "Colour": "#0000ff", "Width": 11},
        {"Height": 2, "Colour": "#ffffff", "Width": 12},
    ]


def test_grid_writes_a_captioned_sheet_of_every_output(home: Path, wf: Path, tmp_path: Path, capsys):
    out_dir = tmp_path / "out"
    code, summary = cli_json(
        capsys, "run", wf, "--sweep", "Colour=#ff0000,#00ff00,#0000ff", "--out", out_dir, "--grid", "--device", "cpu"
    )
    assert code == EXIT_OK
    assert summary["grid"] == str(out_dir / "grid.png")
    assert len([p for p in os.listdir(out_dir) if p.startswith("swatch_")]) == 3
    with Image.open(out_dir / "grid.png") as grid:
        sheet = grid.convert("RGB")
    cell = MIN_CAPTIONED_CELL  # 8 px images get captioned cells this wide, the image centred in it
    assert sheet.width == 2 * (cell + 4) + 4  # a near-square layout: 2 columns for 3 images
    assert sheet.height > 2 * (6 + 4) + 4  # 2 rows of 6 px images, plus caption lines
    centre = (cell - 8) // 2
    assert sheet.getpixel((4 + centre, 4)) == (255, 0, 0)
    assert sheet.getpixel((4 + cell + 4 + centre, 4)) == (0, 255, 0)


def test_grid_is_not_written_for_a_single_run(home: Path, wf: Path, tmp_path: Path, capsys):
    code, summary = cli_json(capsys, "run", wf, "--out", tmp_path / "out", "--grid", "--device", "cpu")
    assert code == EXIT_OK and summary["grid"] is None
    assert not (tmp_path / "out" / "grid.png").exists()


def test_out_keeps_the_images_of_two_save_nodes_apart(home: Path, tmp_path: Path, capsys):
    document = workflow_dict(
        {
            "a": {"type": "EmptyImage", "params": {"width": 4, "height": 4, "color": "#ff0000"}},
            "b": {"type": "EmptyImage", "params": {"width": 4, "height": 4, "color": "#00ff00"}},
            "save_a": {"type": "SaveImage", "inputs": {"images": link("a", "image")}},
            "save_b": {"type": "SaveImage", "inputs": {"images": link("b", "image")}},
        }
    )
    code, summary = cli_json(
        capsys, "run", write(tmp_path / "two.json", document), "--out", tmp_path / "out", "--device", "cpu"
    )
    assert code == EXIT_OK
    outputs = summary["runs"][0]["outputs"]
    assert len(outputs) == 2
    assert len(set(outputs)) == 2
    assert len(os.listdir(tmp_path / "out")) == 2


# ---------------------------------------------------------------- invalid input


def test_an_out_of_bounds_override_exits_2_with_a_structured_issue_and_records_no_run(
    home: Path, wf: Path, storage: Storage, capsys
):
    code, report = cli_json(capsys, "run", wf, "--set", "Width=0", "--device", "cpu")
    assert code == EXIT_INVALID
    assert report["valid"] is False
    [issue] = report["issues"]
    assert set(issue) == ISSUE_KEYS
    assert (issue["code"], issue["node"], issue["field"]) == ("out_of_bounds", "img", "width")
    assert issue["hint"] == "Width in pixels."
    assert storage.list_runs() == []
    code, runs = cli_json(capsys, "runs", "list")
    assert code == EXIT_OK and runs == []


def test_a_starter_runs_from_any_working_directory(
    home: Path, tmp_path: Path, storage: Storage, capsys, monkeypatch: pytest.MonkeyPatch
):
    """Starters name their example images relative to the installation; a user running one from elsewhere
    (the README's `python run.py run pipelines/templates/…` from another folder) still gets them."""
    monkeypatch.chdir(tmp_path)
    code, report = cli_json(capsys, "run", REPO / "pipelines" / "templates" / "resize-image.json", "--out", "out")
    assert (code, report["runs"][0]["status"]) == (EXIT_OK, "succeeded"), report
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


@pytest.mark.adversarial
def test_a_path_that_names_no_file_exits_2_at_validation_and_records_no_run(
    home: Path, tmp_path: Path, storage: Storage, capsys, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    starter = REPO / "pipelines" / "templates" / "resize-image.json"
    code, report = cli_json(capsys, "run", starter, "--set", "Source image=pictures/missing.png")
    assert code == EXIT_INVALID
    [issue] = report["issues"]
    assert (issue["code"], issue["node"], issue["field"]) == ("missing_file", "load", "path")
    assert issue["message"] == "no file at 'pictures/missing.png'"
    assert storage.list_runs() == []


def test_an_invalid_job_in_a_sweep_stops_the_whole_batch_before_any_run(home: Path, wf: Path, storage: Storage, capsys):
    code, report = cli_json(capsys, "run", wf, "--sweep", "Width=8,0,9", "--device", "cpu")
    assert code == EXIT_INVALID
    [issue] = report["issues"]
    assert issue["code"] == "out_of_bounds" and issue["message"].startswith("job 2: ")
    assert storage.list_runs() == []


def test_an_unknown_field_exits_2_naming_the_exposed_labels(home: Path, wf: Path, storage: Storage, capsys):
    code, report = cli_json(capsys, "run", wf, "--set", "Colour=#ff0000", "--set", "Seed=3", "--device", "cpu")
    assert code == EXIT_INVALID
    [issue] = report["issues"]
    assert issue["code"] == "unknown_field" and issue["field"] == "Seed"
    assert "'Colour'" in issue["message"] and "node.param" in issue["message"]
    assert storage.list_runs() == []


@pytest.mark.parametrize(
    "batch",
    [
        ["--zip", "Width=1,2"],
        ["--sweep", "Width=1..4:0"],
        ["--sweep", "Colour=#ff0000,#00ff00", "--zip", "Width=1,2,3"],
        ["--sweep", "Width=1,2", "--sweep", "Width=3,4"],
        ["--set", "no-equals-sign"],
    ],
)
def test_a_malformed_batch_spec_exits_2_with_an_invalid_input_issue(
    home: Path, wf: Path, storage: Storage, capsys, batch: list[str]
):
    code, report = cli_json(capsys, "run", wf, *batch, "--device", "cpu")
    assert code == EXIT_INVALID
    assert report["valid"] is False and report["issues"][0]["code"] == "invalid_input"
    assert storage.list_runs() == []


def test_a_missing_jobs_file_exits_2(home: Path, wf: Path, tmp_path: Path, capsys):
    code, _, err = cli(capsys, "run", wf, "--jobs", tmp_path / "missing.csv", "--device", "cpu")
    assert code == EXIT_INVALID and "cannot read jobs file" in err


@pytest.mark.parametrize("name", ["missing.json", "missing.png", "no-such-workflow"])
def test_a_workflow_that_does_not_exist_exits_2(home: Path, tmp_path: Path, capsys, name: str):
    code, report = cli_json(capsys, "run", tmp_path / name if "." in name else name)
    assert code == EXIT_INVALID
    assert report["issues"][0]["code"] == "unreadable"


def test_a_file_that_is_not_a_workflow_exits_2_with_a_schema_issue(home: Path, tmp_path: Path, capsys):
    code, _, err = cli(capsys, "run", write(tmp_path / "x.json", '{"nodes": {}, "links": []}'))
    assert code == EXIT_INVALID
    assert "[schema]" in err and "ComfyUI" in err


def test_running_an_ambiguous_library_name_exits_2(home: Path, wf: Path, capsys):
    assert cli(capsys, "workflows", "import", wf)[0] == EXIT_OK
    assert cli(capsys, "workflows", "import", wf)[0] == EXIT_OK  # two workflows named "Swatch"
    code, _, err = cli(capsys, "run", "Swatch", "--device", "cpu")
    assert code == EXIT_INVALID
    assert "Swatch" in err


def test_sweeping_one_field_by_label_and_by_node_param_is_an_error(home: Path, wf: Path, storage: Storage, capsys):
    code, _, _ = cli(capsys, "run", wf, "--sweep", "Width=8,9", "--sweep", "img.width=10,11", "--device", "cpu")
    assert code == EXIT_INVALID
    assert storage.list_runs() == []


# ---------------------------------------------------------------- run-time failure


def test_a_run_that_fails_exits_1_naming_the_node_and_is_recorded_as_failed(
    home: Path, tmp_path: Path, storage: Storage, capsys
):
    code, summary = cli_json(capsys, "run", write(tmp_path / "crop.json", crop_too_big()), "--device", "cpu")
    assert code == EXIT_FAILED
    assert summary["ok"] is False
    [run] = summary["runs"]
    assert run["status"] == "failed" and run["outputs"] == []
    assert run["error"]["node"] == "crop" and run["error"]["field"] == "width"
    assert run["error"]["node_type"] == "CropImage" and "exceeds the image width 8" in run["error"]["message"]
    record = storage.get_run(run["run_id"])
    assert record.status == RunStatus.FAILED and record.error["node"] == "crop"


def test_one_failing_job_in_a_batch_makes_the_exit_code_1_but_the_others_run(home: Path, tmp_path: Path, capsys):
    path = write(tmp_path / "crop.json", crop_too_big())
    code, summary = cli_json(capsys, "run", path, "--sweep", "crop.width=4,16,8", "--device", "cpu")
    assert code == EXIT_FAILED
    assert [r["status"] for r in summary["runs"]] == ["succeeded", "failed", "succeeded"]


def test_a_failed_run_shows_its_error_in_the_table(home: Path, tmp_path: Path, capsys):
    code, out, _ = cli(capsys, "run", write(tmp_path / "crop.json", crop_too_big()), "--device", "cpu")
    assert code == EXIT_FAILED
    assert "failed" in out and "exceeds the image width" in out


# ---------------------------------------------------------------- validate


def test_validate_a_valid_workflow_exits_0(home: Path, wf: Path, capsys):
    code, out, _ = cli(capsys, "validate", wf)
    assert code == EXIT_OK and "valid: 'Swatch', 3 nodes" in out
    assert cli_json(capsys, "validate", wf, "--set", "Width=20") == (EXIT_OK, {"valid": True, "issues": []})


def test_validate_reports_every_issue_and_runs_nothing(home: Path, tmp_path: Path, storage: Storage, capsys):
    document = swatch()
    document["nodes"]["img"]["params"]["width"] = 0
    document["nodes"]["save"]["inputs"] = {}
    path = write(tmp_path / "bad.json", document)
    code, report = cli_json(capsys, "validate", path)
    assert code == EXIT_INVALID and report["valid"] is False
    assert all(set(i) == ISSUE_KEYS for i in report["issues"])
    assert {(i["code"], i["node"], i["field"]) for i in report["issues"]} == {
        ("out_of_bounds", "img", "width"),
        ("missing_input", "save", "images"),
    }
    code, _, err = cli(capsys, "validate", path)
    assert code == EXIT_INVALID and "invalid workflow: 2 problems" in err
    assert storage.list_runs() == []


def test_validate_checks_overrides_too(home: Path, wf: Path, capsys):
    code, report = cli_json(capsys, "validate", wf, "--set", "Colour=blue")
    assert code == EXIT_INVALID
    assert [(i["code"], i["node"], i["field"]) for i in report["issues"]] == [("invalid_value", "img", "color")]


def test_validate_a_missing_file_exits_2(home: Path, tmp_path: Path, capsys):
    code, report = cli_json(capsys, "validate", tmp_path / "missing.json")
    assert code == EXIT_INVALID and report["issues"][0]["code"] == "unreadable"


# ---------------------------------------------------------------- nodes


def test_nodes_lists_every_built_in_type(capsys):
    code, out, _ = cli(capsys, "nodes")
    assert code == EXIT_OK
    for type_name in (
        "EmptyImage",
        "LoadImage",
        "SaveImage",
        "PreviewImage",
        "ResizeImage",
        "CropImage",
        "ImageGrid",
        "Int",
    ):
        assert type_name in out


def test_nodes_json_is_the_catalogue_with_param_defaults_and_bounds(capsys):
    code, catalogue = cli_json(capsys, "nodes")
    assert code == EXIT_OK
    specs = {spec["type"]: spec for spec in catalogue["nodes"]}
    save = specs["SaveImage"]
    assert save["output_node"] is True
    assert save["inputs"] == [
        {"name": "images", "type": "IMAGE", "description": "The images to save", "optional": False, "multi": False}
    ]
    [prefix] = save["params"]
    assert prefix["name"] == "filename_prefix" and prefix["default"] == "flowcanvas" and prefix["max_length"] == 80
    assert prefix["type"] == "STRING" and prefix["required"] is False
    width = next(p for p in specs["EmptyImage"]["params"] if p["name"] == "width")
    assert (width["default"], width["minimum"], width["maximum"], width["type"]) == (512, 1, 16384, "INT")
    method = next(p for p in specs["ResizeImage"]["params"] if p["name"] == "method")
    assert method["choices"] == ["nearest", "bilinear", "bicubic", "area"]
    assert catalogue["socket_colours"]["IMAGE"].startswith("#")


# ---------------------------------------------------------------- workflows


def import_swatch(capsys, path: Path) -> str:
    code, out, _ = cli(capsys, "workflows", "import", path)
    assert code == EXIT_OK and out.startswith("imported 'Swatch' as ")
    return out.split(" as ")[1].strip()


def test_workflows_import_list_and_show(home: Path, wf: Path, capsys):
    workflow_id = import_swatch(capsys, wf)
    code, listed = cli_json(capsys, "workflows", "list")
    assert code == EXIT_OK
    assert [(w["id"], w["name"], w["version"], w["tags"]) for w in listed] == [(workflow_id, "Swatch", 1, ["test"])]
    assert cli_json(capsys, "workflows", "list", "--tag", "nope")[1] == []
    assert len(cli_json(capsys, "workflows", "list", "--search", "TEST SWATCH")[1]) == 1
    code, shown = cli_json(capsys, "workflows", "show", "Swatch")
    assert code == EXIT_OK
    assert shown["id"] == workflow_id and shown["shown_version"] == 1
    assert shown["nodes"] == {"h": "Int", "img": "EmptyImage", "save": "SaveImage"}
    assert [e["label"] for e in shown["exposed"]] == ["Colour", "Width", "Height"]
    code, out, _ = cli(capsys, "workflows", "show", workflow_id)
    assert code == EXIT_OK and "Swatch" in out and "img.width" in out


def test_workflows_import_takes_a_name_and_reads_a_flowcanvas_png(home: Path, wf: Path, tmp_path: Path, capsys):
    code, summary = cli_json(capsys, "run", wf, "--set", "Width=20", "--out", tmp_path / "out", "--device", "cpu")
    assert code == EXIT_OK
    png = summary["runs"][0]["outputs"][0]
    code, out, _ = cli(capsys, "workflows", "import", png, "--name", "From PNG")
    assert code == EXIT_OK and "'From PNG'" in out
    code, shown = cli_json(capsys, "workflows", "show", "From PNG")
    assert shown["nodes"]["img"] == "EmptyImage"
    exported = cli(capsys, "workflows", "export", "From PNG")[1]
    assert json.loads(exported)["nodes"]["img"]["params"]["width"] == 20


def test_workflows_import_of_an_invalid_file_exits_2_and_saves_nothing(home: Path, tmp_path: Path, capsys):
    code, _, err = cli(capsys, "workflows", "import", write(tmp_path / "x.json", "not json"))
    assert code == EXIT_INVALID and "not valid JSON" in err
    assert cli_json(capsys, "workflows", "list")[1] == []


def test_workflows_export_is_byte_identical_canonical_json(home: Path, tmp_path: Path, capsys):
    canonical = canonical_json(load_workflow(swatch()))
    path = tmp_path / "swatch.json"
    path.write_text(canonical, encoding="utf-8")
    import_swatch(capsys, path)
    code, out, _ = cli(capsys, "workflows", "export", "Swatch")
    assert code == EXIT_OK and out == canonical
    target = tmp_path / "exported.json"
    code, _, _ = cli(capsys, "workflows", "export", "Swatch", "-o", target)
    assert code == EXIT_OK and target.read_bytes() == path.read_bytes()
    code, _, err = cli(capsys, "workflows", "export", "Swatch", "-o", tmp_path / "no-such-folder" / "x.json")
    assert code == EXIT_INVALID and "cannot write there" in err and "Traceback" not in err


def test_workflows_export_canonicalises_a_hand_written_file(home: Path, tmp_path: Path, capsys):
    path = write(tmp_path / "messy.json", json.dumps(swatch(), indent=None))
    import_swatch(capsys, path)
    code, out, _ = cli(capsys, "workflows", "export", "Swatch")
    assert code == EXIT_OK
    assert out == canonical_json(load_workflow(path)) and out.endswith("}\n")


def test_workflows_restore_makes_an_old_version_current_as_a_new_version(
    home: Path, wf: Path, storage: Storage, capsys
):
    workflow_id = import_swatch(capsys, wf)
    storage.save_workflow_version(workflow_id, canonical_json(load_workflow(swatch("#000000"))), message="darker")
    code, versions = cli_json(capsys, "workflows", "versions", "Swatch")
    assert code == EXIT_OK and [(v["version"], v["message"]) for v in versions] == [(1, "imported"), (2, "darker")]
    code, out, _ = cli(capsys, "workflows", "restore", "Swatch", "1")
    assert code == EXIT_OK and "as version 3" in out
    versions = cli_json(capsys, "workflows", "versions", "Swatch")[1]
    assert [(v["version"], v["message"]) for v in versions][-1] == (3, "restored from version 1")
    assert versions[2]["sha256"] == versions[0]["sha256"] != versions[1]["sha256"]
    current = cli(capsys, "workflows", "export", "Swatch")[1]
    assert current == cli(capsys, "workflows", "export", "Swatch", "--version", "1")[1]
    assert (
        json.loads(cli(capsys, "workflows", "export", "Swatch", "--version", "2")[1])["nodes"]["img"]["params"]["color"]
        == "#000000"
    )


def test_workflows_restore_of_a_missing_version_exits_2_and_adds_no_version(home: Path, wf: Path, capsys):
    import_swatch(capsys, wf)
    code, _, err = cli(capsys, "workflows", "restore", "Swatch", "9")
    assert code == EXIT_INVALID and "no version 9" in err
    assert len(cli_json(capsys, "workflows", "versions", "Swatch")[1]) == 1


def test_workflows_commands_on_a_missing_workflow_exit_2(home: Path, capsys):
    for argv in (["show", "nope"], ["export", "nope"], ["versions", "nope"], ["delete", "nope", "--yes"]):
        code, _, err = cli(capsys, "workflows", *argv)
        assert code == EXIT_INVALID and "no workflow 'nope'" in err


def test_workflows_delete_needs_yes_when_not_interactive(home: Path, wf: Path, capsys, monkeypatch):
    import_swatch(capsys, wf)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # not a terminal, even with an answer waiting
    code, _, err = cli(capsys, "workflows", "delete", "Swatch")
    assert code == EXIT_INVALID and "--yes" in err
    assert len(cli_json(capsys, "workflows", "list")[1]) == 1


def test_workflows_delete_asks_on_a_terminal_and_keeps_on_no(home: Path, wf: Path, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    import_swatch(capsys, wf)
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    code, out, _ = cli(capsys, "workflows", "delete", "Swatch")
    assert code == EXIT_OK and "kept" in out
    assert len(cli_json(capsys, "workflows", "list")[1]) == 1
    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    assert cli(capsys, "workflows", "delete", "Swatch")[0] == EXIT_OK
    assert cli_json(capsys, "workflows", "list")[1] == []


def test_running_a_library_workflow_records_its_id_and_version_and_the_run_survives_its_deletion(
    home: Path, wf: Path, storage: Storage, capsys
):
    workflow_id = import_swatch(capsys, wf)
    storage.save_workflow_version(workflow_id, canonical_json(load_workflow(swatch("#000000"))), message="v2")
    code, summary = cli_json(capsys, "run", "Swatch", "--device", "cpu")
    assert code == EXIT_OK
    run_id = summary["runs"][0]["run_id"]
    with Image.open(summary["runs"][0]["outputs"][0]) as png:
        assert png.convert("RGB").getpixel((0, 0)) == (0, 0, 0)  # the current version ran
    code, shown = cli_json(capsys, "runs", "show", run_id)
    assert (shown["workflow_id"], shown["workflow_version"], shown["workflow"]) == (workflow_id, 2, "Swatch")
    code, out, _ = cli(capsys, "workflows", "delete", "Swatch", "--yes")
    assert code == EXIT_OK and "deleted 'Swatch'" in out
    assert cli_json(capsys, "workflows", "list")[1] == []
    code, runs = cli_json(capsys, "runs", "list")
    assert [(r["id"], r["workflow_id"], r["workflow"]) for r in runs] == [(run_id, None, "Swatch")]


# ---------------------------------------------------------------- runs


def test_runs_list_and_show_describe_recorded_runs(home: Path, wf: Path, tmp_path: Path, capsys):
    ok = cli_json(capsys, "run", wf, "--set", "Width=10", "--device", "cpu")[1]["runs"][0]["run_id"]
    crop = write(tmp_path / "crop.json", crop_too_big())
    failed = cli_json(capsys, "run", crop, "--device", "cpu")[1]["runs"][0]["run_id"]
    code, runs = cli_json(capsys, "runs", "list")
    assert code == EXIT_OK
    assert {r["id"]: r["status"] for r in runs} == {ok: "succeeded", failed: "failed"}
    assert [r["id"] for r in cli_json(capsys, "runs", "list", "--status", "failed")[1]] == [failed]
    assert len(cli_json(capsys, "runs", "list", "--limit", "1")[1]) == 1

    code, shown = cli_json(capsys, "runs", "show", ok[:6])  # a unique id prefix is enough
    assert code == EXIT_OK and shown["id"] == ok
    assert shown["status"] == "succeeded" and shown["device"] == "cpu" and shown["workflow_id"] is None
    assert shown["overrides"] == {"Width": 10}
    assert set(shown["node_timings"]) == {"h", "img", "save"}
    assert shown["environment"]["python"] == sys.version.split()[0]
    assert shown["environment"]["torch"]
    [artifact] = shown["artifacts"]
    assert artifact["node"] == "save" and artifact["kind"] == "image" and len(artifact["sha256"]) == 64
    assert Path(artifact["path"]).stat().st_size == artifact["size"]
    assert cli_json(capsys, "runs", "show", failed)[1]["error"]["node"] == "crop"

    code, out, _ = cli(capsys, "runs", "show", ok)
    assert code == EXIT_OK and f"id: {ok}" in out and "image from save:" in out
    code, out, _ = cli(capsys, "runs", "list")
    assert code == EXIT_OK and ok in out and failed in out


def test_runs_show_of_an_unknown_run_exits_2(home: Path, capsys):
    code, report = cli_json(capsys, "runs", "show", "nonexistent")
    assert code == EXIT_INVALID and "no run 'nonexistent'" in report["issues"][0]["message"]


def test_runs_list_with_an_unknown_status_exits_2(home: Path, capsys):
    code, _, err = cli(capsys, "runs", "list", "--status", "bogus")
    assert code == EXIT_INVALID and "bogus" in err


def test_no_command_starts_the_app_on_this_machine_only(capsys, monkeypatch: pytest.MonkeyPatch):
    from app import commands

    started: list[Any] = []
    monkeypatch.setattr(commands, "serve", lambda args: started.append((args.listen, args.port, args.auth)) or EXIT_OK)
    code, _, _ = cli(capsys)
    assert code == EXIT_OK and started == [("127.0.0.1", 7860, None)]
    code, out, _ = cli(capsys, "--help")
    assert code == EXIT_OK and "COMMAND" in out and "serve" in out
    code, _, _ = cli(capsys, "--port", "8000")
    assert code == EXIT_OK and started[-1] == ("127.0.0.1", 8000, None), "bare options are serve's"
    code, _, err = cli(capsys, "--prot", "8000")
    assert code == EXIT_INVALID and "--prot" in err


# ---------------------------------------------------------------- the real entry point


def run_py(home: Path, *argv: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLOWCANVAS_HOME": str(home)}
    env.pop("FLOWCANVAS_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "run.py", *map(str, argv)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_run_py_exit_codes_and_json_output(tmp_path: Path):
    home = tmp_path / "data"
    wf = write(tmp_path / "swatch.json", swatch())

    ok = run_py(home, "run", wf, "--sweep", "Width=8,9", "--out", tmp_path / "out", "--json", "--device", "cpu")
    assert ok.returncode == EXIT_OK, ok.stderr
    summary = json.loads(ok.stdout)
    assert summary["ok"] is True and len(summary["runs"]) == 2 and summary["batch_id"]
    assert all(Path(p).is_file() for r in summary["runs"] for p in r["outputs"])

    invalid = run_py(home, "run", wf, "--set", "Width=0", "--json", "--device", "cpu")
    assert invalid.returncode == EXIT_INVALID, invalid.stderr
    assert json.loads(invalid.stdout)["issues"][0]["code"] == "out_of_bounds"

    failed = run_py(home, "run", write(tmp_path / "crop.json", crop_too_big()), "--json", "--device", "cpu")
    assert failed.returncode == EXIT_FAILED, failed.stderr
    assert json.loads(failed.stdout)["runs"][0]["error"]["node"] == "crop"

    # Every process used the same database: the two sweep runs and the failed one, none for the invalid input.
    opened = open_storage(home)
    try:
        assert sorted(r.status for r in opened.list_runs()) == ["failed", "succeeded", "succeeded"]
    finally:
        opened.close()


@pytest.mark.adversarial
def test_run_out_names_an_image_saved_inside_a_subgraph_without_a_folder_in_it(home: Path, tmp_path: Path, capsys):
    inner = {
        "nodes": {
            "img": {"type": "EmptyImage", "params": {"width": 8, "height": 8}},
            "save": {
                "type": "SaveImage",
                "params": {"filename_prefix": "sub"},
                "inputs": {"images": link("img", "image")},
            },
        }
    }
    document = workflow_dict({"outer": {"type": "Subgraph", "subgraph": "inner"}}, subgraphs={"inner": inner})
    out_dir = tmp_path / "out"
    code, summary = cli_json(
        capsys, "run", write(tmp_path / "nested.json", document), "--out", out_dir, "--device", "cpu"
    )
    assert code == EXIT_OK, summary
    [run] = summary["runs"]
    assert run["outputs"] == [str(out_dir / f"sub_{run['run_id']}_outer-save_00.png")]
    assert Path(run["outputs"][0]).is_file()


@pytest.mark.adversarial
def test_run_out_that_cannot_be_written_is_an_error_before_anything_runs(home: Path, wf: Path, tmp_path: Path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    before = len(cli_json(capsys, "runs", "list")[1])
    code, error = cli_json(capsys, "run", wf, "--out", blocker / "out", "--device", "cpu")
    assert code != EXIT_OK and "--out" in json.dumps(error) and "cannot write there" in json.dumps(error)
    assert len(cli_json(capsys, "runs", "list")[1]) == before, "nothing ran"

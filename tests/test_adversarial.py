"""The adversarial suite (`-m adversarial`): hostile documents, each replayed through the command line in a
child process with a memory limit, must end in a structured error with the database unchanged.

The child's address space is capped (RLIMIT_AS, CHILD_MEMORY_MB) and it must finish within CHILD_TIMEOUT_S:
a bomb that expands, decodes or recurses before it is refused is killed or fails with MemoryError, and the
test sees the traceback or the timeout. These are bounds, not timings. Under `-m adversarial` the property
tests in test_fuzz.py run at ten times their usual example count (tests/conftest.py). The same marker selects
the adversarial cases kept beside their subjects: the API's argument checks (test_api.py), the SIGKILL tests
(test_interrupted.py) and the storage limits on SQLite and PostgreSQL (test_storage.py).
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from pipelines.workflow import PNG_WORKFLOW_KEY

pytestmark = pytest.mark.adversarial

ROOT = Path(__file__).resolve().parents[1]
CHILD_MEMORY_MB = 2048  # the CLI with torch loaded needs ~1.5 GB of address space; a bomb needs far more
CHILD_TIMEOUT_S = 180


def document(nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"format": "flowcanvas.workflow", "version": 1, "name": "hostile", "nodes": nodes, **extra}


SWATCH = document(
    {
        "img": {"type": "EmptyImage", "params": {"width": 8, "height": 8, "color": "#336699"}},
        "save": {"type": "SaveImage", "inputs": {"images": {"node": "img", "output": "image"}}},
    }
)


def expansion_bomb() -> dict[str, Any]:
    """Ten instances of the next level, seven levels deep: 10⁷ nodes in a few kilobytes."""
    subgraphs: dict[str, Any] = {"s7": {"nodes": {"c": {"type": "Int", "params": {"value": 1}}}}}
    for depth in range(6, -1, -1):
        subgraphs[f"s{depth}"] = {
            "nodes": {f"i{k}": {"type": "Subgraph", "subgraph": f"s{depth + 1}"} for k in range(10)}
        }
    return document({"top": {"type": "Subgraph", "subgraph": "s0"}}, subgraphs=subgraphs)


def nesting_bomb(levels: int = 1000) -> dict[str, Any]:
    subgraphs = {f"s{i}": {"nodes": {"inner": {"type": "Subgraph", "subgraph": f"s{i + 1}"}}} for i in range(levels)}
    subgraphs[f"s{levels}"] = {"nodes": {"c": {"type": "Int", "params": {"value": 1}}}}
    return document({"top": {"type": "Subgraph", "subgraph": "s0"}}, subgraphs=subgraphs)


def load_image(path: str) -> dict[str, Any]:
    return document(
        {
            "load": {"type": "LoadImage", "params": {"path": path}},
            "show": {"type": "PreviewImage", "inputs": {"images": {"node": "load", "output": "image"}}},
        }
    )


def png_carrying(path: Path, size: tuple[int, int], text: str, *, compressed: bool) -> Path:
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_WORKFLOW_KEY, text, zip=compressed)
    Image.new("1", size).save(path, format="PNG", pnginfo=info)
    return path


# Each case writes its hostile file into a folder and returns the CLI arguments that open it.
Case = Callable[[Path], list[str]]


def json_file(folder: Path, content: dict[str, Any] | str) -> str:
    path = folder / "hostile.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


INVALID_CASES: dict[str, tuple[Case, str, str]] = {
    # case: (what the CLI is given, the issue code, words of its message)
    "subgraph expansion bomb": (
        lambda d: ["run", json_file(d, expansion_bomb())],
        "too_large",
        "expands to more than 5000 nodes",
    ),
    "subgraphs nested 1000 deep": (
        lambda d: ["run", json_file(d, nesting_bomb())],
        "too_large",
        "nest deeper than 16 levels",
    ),
    "JSON nested 100,000 deep": (
        lambda d: [
            "run",
            json_file(d, '{"format": "flowcanvas.workflow", "nodes": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        ],
        "schema",
        "nested too deeply",
    ),
    "EmptyImage of 16384² × 64": (
        lambda d: [
            "run",
            json_file(
                d,
                document(
                    {"img": {"type": "EmptyImage", "params": {"width": 16384, "height": 16384, "batch_size": 64}}}
                ),
            ),
        ],
        "invalid_params",
        "over the budget of 67 Mpx",
    ),
    "NUL in a LoadImage path": (
        lambda d: ["run", json_file(d, load_image("a\0b.png"))],
        "invalid_value",
        "contains a NUL character",
    ),
    "5,000-character LoadImage path": (
        lambda d: ["run", json_file(d, load_image("x" * 5000))],
        "out_of_bounds",
        "4096",
    ),
    "a LoadImage path naming nothing": (
        lambda d: ["run", json_file(d, load_image("pipelines/templates/images/none.png"))],
        "missing_file",
        "no file at",
    ),
    "lone surrogate in the name": (
        lambda d: ["run", json_file(d, json.dumps(SWATCH).replace('"hostile"', '"bad \\ud800"'))],
        "schema",
        "unicode",
    ),
    "SaveImage node id of 300 characters": (
        lambda d: ["run", json_file(d, json.dumps(SWATCH).replace('"save"', '"' + "s" * 300 + '"'))],
        "schema",
        "255",
    ),
    "embedded:.. as a model source": (
        lambda d: [
            "run",
            json_file(d, document({"m": {"type": "LoadFlowModel", "params": {"source": "embedded:.."}}})),
        ],
        "invalid_params",
        "installed",
    ),
    "PNG whose workflow text inflates past 16 MB": (
        lambda d: ["run", str(png_carrying(d / "ztxt.png", (8, 8), "{" + " " * (20 * 1024**2), compressed=True))],
        "schema",
        "holds more than 16 MB of text",
    ),
}


def run_child(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """`python run.py ARGS --json` in a child whose address space is capped at CHILD_MEMORY_MB."""

    def cap_memory() -> None:
        limit = CHILD_MEMORY_MB * 1024**2
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "FLOWCANVAS_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    env.pop("FLOWCANVAS_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args, "--json"],
        cwd=ROOT,
        env=env,
        preexec_fn=cap_memory,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )


def database_rows(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables a run writes, and the artifact files, to compare before and after."""
    database = home / "flowcanvas.db"
    if not database.exists():
        return {}
    with sqlite3.connect(database) as connection:
        rows = {
            table: connection.execute(f"select * from {table} order by 1").fetchall()  # noqa: S608 (fixed names)
            for table in ("workflows", "workflow_versions", "runs", "artifacts")
        }
    rows["files"] = sorted((str(p.relative_to(home)),) for p in (home / "artifacts").rglob("*") if p.is_file())
    return rows


@pytest.fixture
def seeded_home(tmp_path: Path) -> Path:
    """A data folder with one finished run in it, so that 'unchanged' has something to keep."""
    home = tmp_path / "data"
    finished = run_child(["run", json_file(tmp_path, SWATCH)], home)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return home


@pytest.mark.parametrize("case", sorted(INVALID_CASES))
def test_a_hostile_document_is_refused_with_an_issue_in_bounded_memory_and_nothing_is_written(
    case: str, seeded_home: Path, tmp_path: Path
):
    make, code, words = INVALID_CASES[case]
    folder = tmp_path / "hostile"
    folder.mkdir()
    args = make(folder)
    before = database_rows(seeded_home)

    answered = run_child(args, seeded_home)

    assert "Traceback" not in answered.stderr, answered.stderr[-3000:]
    assert answered.returncode == 2, (answered.returncode, answered.stdout[-2000:], answered.stderr[-2000:])
    report = json.loads(answered.stdout)
    assert report["valid"] is False
    matching = [issue for issue in report["issues"] if issue["code"] == code]
    assert matching and words.lower() in matching[0]["message"].lower(), report["issues"]
    assert database_rows(seeded_home) == before


def test_a_small_png_of_a_huge_image_fails_its_run_with_the_budget_in_bounded_memory(seeded_home: Path, tmp_path: Path):
    """13000² 1-bit pixels in ~20 KB: read from its header, refused before a pixel is decoded (it once took the
    server to 8.9 GB). The run is recorded as failed, with the node, field and figure, and stores nothing."""
    bomb = tmp_path / "bomb.png"
    Image.new("1", (13000, 13000)).save(bomb, format="PNG")
    before = database_rows(seeded_home)

    answered = run_child(["run", json_file(tmp_path, load_image(str(bomb)))], seeded_home)

    assert "Traceback" not in answered.stderr, answered.stderr[-3000:]
    assert answered.returncode == 1
    [run] = json.loads(answered.stdout)["runs"]
    assert run["status"] == "failed" and run["outputs"] == []
    assert (run["error"]["node"], run["error"]["field"]) == ("load", "path")
    assert "13000×13000 px (169 Mpx), over the budget of 40 Mpx" in run["error"]["message"]
    after = database_rows(seeded_home)
    assert after["artifacts"] == before["artifacts"] and after["files"] == before["files"]
    assert len(after["runs"]) == len(before["runs"]) + 1


def test_a_workflow_inside_a_png_past_pils_bomb_limit_runs_without_decoding_a_pixel(seeded_home: Path, tmp_path: Path):
    """14000² pixels (196 Mpx, past the 179 Mpx at which PIL refuses to open) carrying a workflow: the text
    chunk is read, the pixels never are, and the shared workflow runs."""
    shared = png_carrying(tmp_path / "shared.png", (14000, 14000), json.dumps(SWATCH), compressed=False)

    answered = run_child(["run", str(shared), "--out", str(tmp_path / "out")], seeded_home)

    assert "Traceback" not in answered.stderr, answered.stderr[-3000:]
    assert answered.returncode == 0, answered.stdout[-2000:]
    [run] = json.loads(answered.stdout)["runs"]
    assert run["status"] == "succeeded" and len(list((tmp_path / "out").glob("*.png"))) == 1

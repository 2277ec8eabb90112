"""What the command line prints and returns: exit codes, JSON, plain-text tables, copied output files."""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2  # ran (or was valid); a run failed or was cancelled; invalid input


def print_json(data: Any) -> None:
    """One JSON document on standard output (`--json`): sorted keys, anything else as its text."""
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as left-aligned columns under their headers and a rule; None shows as an empty cell."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def prepare_out(out: Path) -> str | None:
    """Make `run --out`'s folder and check that files can be written there, before any run starts: why not, or
    None (a run's images are kept in the data folder either way)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as error:
        return f"--out {out}: cannot write there ({error.strerror or error})"
    return None


def output_name(prefix: str, run_id: str, node_id: str, index: int) -> str:
    """The file name `run --out` gives an image: a node inside a subgraph ("outer/save") becomes "outer-save"."""
    return re.sub(r"[^\w.-]", "-", f"{prefix}_{run_id}_{node_id}_{index:02d}") + ".png"


def copy_outputs(paths: list[tuple[Path, str]], out: Path) -> list[str]:
    """Copy each (source, file name) into `out` (`run --out`); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for source, name in paths:
        target = out / name
        shutil.copyfile(source, target)
        written.append(str(target))
    return written

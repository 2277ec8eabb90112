"""Stored runs as the Runs and Batch tabs show them: table rows, captions, durations and a results CSV.

Plain Python over storage records (no Gradio, no torch), so both views word runs the same way.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from storage import IMAGE_KINDS, ArtifactRecord, RunRecord, RunStatus

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # UTC, as the CLI prints it
FINISHED = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED})
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&])")


def plain_markdown(text: str) -> str:
    """User text (names, values, error messages) for a gr.Markdown: every character that Markdown or HTML would
    read as markup is backslash-escaped, so it shows as written."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def workflow_name(record: RunRecord) -> str:
    """The name in the run's workflow snapshot (the snapshot is what ran, even if the library entry is gone)."""
    try:
        name = json.loads(record.workflow).get("name")
    except (json.JSONDecodeError, AttributeError):
        return "?"
    return str(name) if name else "?"


def moment(value: datetime | None) -> str:
    return value.strftime(TIME_FORMAT) if value is not None else ""


def duration_seconds(record: RunRecord) -> float | None:
    """Wall-clock seconds from start to end (None until a started run has ended)."""
    if record.started_at is None or record.finished_at is None:
        return None
    return round((record.finished_at - record.started_at).total_seconds(), 3)


def history_row(record: RunRecord) -> list[Any]:
    """One row of the history table; see HISTORY_HEADERS."""
    seconds = duration_seconds(record)
    return [
        record.id,
        str(record.status),
        workflow_name(record),
        "" if record.workflow_version is None else record.workflow_version,
        moment(record.started_at),
        "" if seconds is None else f"{seconds:.2f}",
        record.device,
        record.batch_id or "",
    ]


HISTORY_HEADERS = ["run", "status", "workflow", "version", "started", "seconds", "device", "batch"]


def error_text(record: RunRecord) -> str:
    """The run's error as one line: the node, its type and the message (empty when there is none)."""
    if not record.error:
        return ""
    error = record.error
    where = " ".join(
        part for part in (error.get("node"), f"({error['node_type']})" if error.get("node_type") else None) if part
    )
    message = str(error.get("message", "failed"))
    return f"{where}: {message}" if where else message


def image_artifacts(artifacts: Sequence[ArtifactRecord]) -> list[ArtifactRecord]:
    return [artifact for artifact in artifacts if artifact.kind in IMAGE_KINDS]


RESULT_FIXED_HEADERS = ["index", "run", "status", "seconds", "error", "outputs"]


def result_rows(records: Sequence[RunRecord], outputs: Sequence[Sequence[str]]) -> tuple[list[str], list[list[Any]]]:
    """A batch's results as a table: index, run, status, seconds, one column per swept field, error, outputs
    (the image files, one per line). `outputs[i]` are run i's images as stored paths (relative to the artifact
    folder): the browser's user has no use for where the server keeps them."""
    fields = list(dict.fromkeys(name for record in records for name in record.overrides))
    headers = RESULT_FIXED_HEADERS[:4] + fields + RESULT_FIXED_HEADERS[4:]
    rows = []
    for index, (record, files) in enumerate(zip(records, outputs, strict=True)):
        seconds = duration_seconds(record)
        rows.append(
            [
                index + 1,
                record.id,
                str(record.status),
                "" if seconds is None else f"{seconds:.2f}",
                *(record.overrides.get(name, "") for name in fields),
                error_text(record),
                "\n".join(files),
            ]
        )
    return headers, rows


def results_csv(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue()

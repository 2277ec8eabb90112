"""Batches: sweeps and CSV jobs expanded into runs, validated all at once, queued as one batch on an executor
(this process's job worker, or Ray through pipelines.ray_executor).

Batch semantics follow InvokeAI: values zip within a group, and groups combine as a cartesian product.
On the command line each `--sweep NAME=VALUES` starts a group, `--zip NAME=VALUES` adds a field to the
group before it, and a `--jobs` CSV is one more group whose rows are zipped. VALUES are `A..B` or
`A..B:STEP` (inclusive), a JSON list, or comma-separated text (`\\,` keeps a comma; spaces around
values are dropped).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, Protocol

from pipelines.executor import EventSink
from pipelines.issues import Issue, WorkflowInvalid
from pipelines.jobs import RunHandle, RunRequest, WorkerPool
from pipelines.overrides import coerce_overrides
from pipelines.plan import build_plan
from pipelines.ray_options import RayOptions
from pipelines.workflow import Workflow
from storage import Storage

MAX_JOBS = 100_000
_NUMBER = r"-?\d+(?:\.\d+)?"
_RANGE = re.compile(rf"^{_NUMBER}\.\.{_NUMBER}(?::{_NUMBER})?$")
_RANGE_START = re.compile(rf"^{_NUMBER}\.\.{_NUMBER}:")


class BatchSpecError(ValueError):
    """A sweep, zip or CSV that cannot be expanded (bad range, unequal zipped lengths, …)."""


@dataclass
class SweepGroup:
    """Fields whose values are zipped: job i takes the i-th value of every field."""

    fields: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, name: str, values: list[Any]) -> None:
        if name in self.fields:
            raise BatchSpecError(f"{name!r} appears twice in one group")
        lengths = {len(v) for v in self.fields.values()}
        if lengths and len(values) not in lengths:
            raise BatchSpecError(
                f"zipped fields must have equal lengths: {name!r} has {len(values)} values, the group has {lengths.pop()}"
            )
        self.fields[name] = values

    def __len__(self) -> int:
        return len(next(iter(self.fields.values()), []))

    def rows(self) -> list[dict[str, Any]]:
        return [{name: values[i] for name, values in self.fields.items()} for i in range(len(self))]


def parse_values(text: str) -> list[Any]:
    """`1..4`, `0..1:0.25`, `["a, b", "c"]` or `a,b\\,c`."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            values = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise BatchSpecError(f"not a JSON list: {text!r} ({error.msg})") from None
        if not isinstance(values, list) or not values:
            raise BatchSpecError(f"expected a non-empty JSON list, got {text!r}")
        return values
    if _RANGE.match(stripped):
        return _parse_range(stripped)
    if _RANGE_START.match(stripped):
        raise BatchSpecError(f"not a range: {text!r} (expected A..B or A..B:STEP with a numeric STEP)")
    values, current, escaped = [], "", False
    for char in text:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


def _parse_range(text: str) -> list[Any]:
    span, _, step_text = text.partition(":")
    start_text, _, end_text = span.partition("..")
    try:
        start, end = Decimal(start_text), Decimal(end_text)
        step = Decimal(step_text) if step_text else Decimal(1)
    except InvalidOperation:
        raise BatchSpecError(f"not a range: {text!r} (expected A..B or A..B:STEP)") from None
    if step <= 0:
        raise BatchSpecError(f"range step must be positive: {text!r}")
    count = math.floor((abs(end - start)) / step) + 1
    if count > MAX_JOBS:
        raise BatchSpecError(f"range {text!r} has {count} values, more than {MAX_JOBS}")
    direction = 1 if end >= start else -1
    values = [start + direction * step * i for i in range(count)]
    integral = all(v == v.to_integral_value() for v in (start, end, step))
    return [int(v) if integral else float(v) for v in values]


def parse_assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise BatchSpecError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


def read_jobs_csv(source: Path | str) -> SweepGroup:
    """A CSV whose header names fields and whose rows are jobs (one zipped group)."""
    if isinstance(source, Path):
        try:
            source = source.read_text(encoding="utf-8-sig")
        except OSError as error:
            raise BatchSpecError(f"cannot read jobs file: {error}") from None
    reader = csv.reader(io.StringIO(source))
    rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise BatchSpecError("a jobs CSV needs a header row and at least one job row")
    header = [name.strip() for name in rows[0][1]]
    if len(set(header)) != len(header) or not all(header):
        raise BatchSpecError(f"the CSV header must name distinct fields: {header}")
    for line_no, row in rows[1:]:
        if len(row) != len(header):
            raise BatchSpecError(f"CSV line {line_no} has {len(row)} cells, the header has {len(header)}")
    group = SweepGroup()
    for column, name in enumerate(header):
        group.add(name, [row[column] for _, row in rows[1:]])
    return group


def build_groups(
    sweeps: Sequence[str] = (), zips: Sequence[tuple[int, str]] = (), jobs_csv: Path | None = None
) -> list[SweepGroup]:
    """Groups from CLI arguments; `zips` pairs each --zip with the index of the --sweep it follows."""
    groups = []
    for text in sweeps:
        group = SweepGroup()
        group.add(*_named_values(text))
        groups.append(group)
    for index, text in zips:
        if index < 0 or index >= len(groups):
            raise BatchSpecError(f"--zip {text!r} must follow a --sweep")
        groups[index].add(*_named_values(text))
    if jobs_csv is not None:
        groups.append(read_jobs_csv(jobs_csv))
    return groups


def _named_values(text: str) -> tuple[str, list[Any]]:
    name, values = parse_assignment(text)
    return name, parse_values(values)


def expand(groups: Sequence[SweepGroup], base: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every job's values: the product of the groups' zipped rows, each merged over `base`."""
    total = math.prod(len(g) for g in groups) if groups else 1
    if total > MAX_JOBS:
        raise BatchSpecError(f"this batch expands to {total} runs, more than {MAX_JOBS}")
    names = [n for g in groups for n in g.fields]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise BatchSpecError(f"fields swept in more than one group: {', '.join(sorted(duplicated))}")
    jobs = []
    for combination in itertools.product(*(g.rows() for g in groups)):
        values = dict(base or {})
        for row in combination:
            values.update(row)
        jobs.append(values)
    return jobs


def validate_jobs(
    workflow: Workflow,
    jobs: list[dict[str, Any]],
    target: str | None = None,
    file_roots: tuple[Path, ...] | None = None,
) -> None:
    """Validate every job (file-reading nodes confined to `file_roots` when given) before any is queued; raise
    WorkflowInvalid naming the failing jobs."""
    issues: list[Issue] = []
    seen: set[str] = set()
    for index, values in enumerate(jobs):
        try:
            build_plan(workflow, values, target=target, file_roots=file_roots)
        except WorkflowInvalid as invalid:
            for issue in invalid.issues:
                text = str(issue)
                if text not in seen:  # the same problem in every job is reported once
                    seen.add(text)
                    prefix = f"job {index + 1}: " if len(jobs) > 1 else ""
                    issues.append(issue.model_copy(update={"message": prefix + issue.message}))
    if issues:
        raise WorkflowInvalid(issues)


class RunSubmitter(Protocol):
    """What submit_batch queues runs on: the WorkerPool, or a batch executor."""

    storage: Storage

    def submit(self, request: RunRequest) -> RunHandle: ...


class BatchExecutor(RunSubmitter, Protocol):
    """Where a headless batch runs: `--executor local` (this process's job worker) or `ray` (a Ray cluster)."""

    def start(self) -> None:
        """Get ready to run (Ray: join or start the cluster and its workers); ValueError when it cannot."""

    def add_listener(self, sink: EventSink) -> None:
        """Call `sink` with every event of every run submitted here, as they happen (for one progress bar)."""

    def shutdown(self) -> None: ...


ExecutorKind = Literal["local", "ray"]
EXECUTOR_KINDS: tuple[ExecutorKind, ...] = ("local", "ray")


class ExecutorUnavailable(RuntimeError):
    """The chosen executor cannot be used here (its optional dependency is not installed)."""


class LocalExecutor:
    """The local executor: this process's job worker for the device, runs one at a time in submission order."""

    def __init__(self, storage: Storage, device: str = "auto") -> None:
        self.storage = storage
        self.pool = WorkerPool(storage)
        self._worker = self.pool.worker(device)  # resolves the device now: ValueError before anything is queued

    def start(self) -> None:
        """Nothing to start: the job worker runs from construction."""

    def submit(self, request: RunRequest) -> RunHandle:
        return self._worker.submit(request)

    def add_listener(self, sink: EventSink) -> None:
        self._worker.listeners.append(sink)

    def shutdown(self) -> None:
        self.pool.shutdown()


def open_executor(
    storage: Storage, kind: ExecutorKind = "local", *, device: str = "auto", ray: RayOptions | None = None
) -> BatchExecutor:
    """The batch executor of that kind; Ray is imported only here, only for `ray`."""
    if kind == "local":
        return LocalExecutor(storage, device)
    if kind == "ray":
        try:
            from pipelines.ray_executor import RayExecutor
        except ModuleNotFoundError as missing:
            if missing.name != "ray":
                raise
            raise ExecutorUnavailable(
                "--executor ray needs Ray, an optional dependency: pip install -r requirements-ray.txt"
            ) from None
        return RayExecutor(storage, ray, device=device)
    raise ValueError(f"unknown executor {kind!r}: expected one of {', '.join(EXECUTOR_KINDS)}")


@dataclass
class BatchSubmission:
    batch_id: str | None
    jobs: list[dict[str, Any]]  # each job's values, converted to their params' types
    handles: list[RunHandle]


def submit_batch(pool: RunSubmitter, base: RunRequest, jobs: list[dict[str, Any]]) -> BatchSubmission:
    """Validate all jobs, then queue them as one batch (a batch row groups them when there are several)."""
    return queue_batch(pool, base, prepare_batch(base, jobs))


def prepare_batch(base: RunRequest, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every job's values converted to their params' types, all validated (raises WorkflowInvalid)."""
    jobs = [coerce_overrides(base.workflow, values) for values in jobs]
    validate_jobs(base.workflow, jobs, base.target, base.file_roots)
    return jobs


def queue_batch(pool: RunSubmitter, base: RunRequest, jobs: list[dict[str, Any]]) -> BatchSubmission:
    """Queue jobs that prepare_batch returned, as one batch."""
    batch_id = pool.storage.create_batch({"jobs": jobs}, len(jobs)) if len(jobs) > 1 else None
    handles = [
        pool.submit(base.model_copy(update={"overrides": values, "batch_id": batch_id, "batch_index": index}))
        for index, values in enumerate(jobs)
    ]
    return BatchSubmission(batch_id, jobs, handles)


def values_text(values: dict[str, Any]) -> str:
    """A run's substituted values as one caption: `Seed=1, Prompt=a red star`."""
    return ", ".join(f"{name}={value}" for name, value in values.items())


def sweep_grid(images: list[Path], captions: list[str]) -> bytes:
    """One PNG laying out a sweep's output images, each captioned with its run's substituted values."""
    from PIL import Image

    from nodes.image import encode_png, grid_image

    opened = []
    for path in images:
        with Image.open(path) as img:
            opened.append(img.convert("RGB"))
    return encode_png(grid_image(opened, captions))

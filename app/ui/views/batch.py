"""The Batch tab: run a workflow over swept values (InvokeAI's batch semantics, as the CLI's --sweep/--zip/--jobs).

Load the canvas's workflow or a library workflow, pick exposed fields and give each its values (`a, b`, a range
`1..8` or `0..1:0.25`, a JSON list); fields with the same group number are zipped, groups multiply. A jobs CSV
(header: field names, one row per run) adds one more zipped group. The number of runs shows before anything is
queued; bad input (a bad range, unknown fields or CSV columns, nothing to run) is reported and queues nothing.
Queued runs are followed to the end: progress, a results grid captioned with each run's values, a results
table, and downloads of the grid (PNG) and the results (CSV). A past batch's results reopen by its id.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from app.ui.studio import Studio
from app.ui.views.run_records import (
    FINISHED,
    RESULT_FIXED_HEADERS,
    image_artifacts,
    plain_markdown,
    result_rows,
    results_csv,
)
from pipelines.batch import (
    BatchSpecError,
    SweepGroup,
    expand,
    parse_values,
    read_jobs_csv,
    submit_batch,
    sweep_grid,
    values_text,
)
from pipelines.issues import Issue, WorkflowInvalid
from pipelines.jobs import RunRequest
from pipelines.workflow import Workflow, parse_workflow, resolve_field
from storage import NotFound, RunRecord, RunStatus

BATCH_TAB = "batch"
FROM_CANVAS = "Canvas"
FROM_LIBRARY = "Library"
SWEEP_HEADERS = ["field", "values", "group"]
MAX_STUDIO_RUNS = 1000  # one click queues at most this many (the CLI takes more)
FOLLOW_WAIT = 1.0  # seconds one wait for the next run to end lasts before the progress is read again
PRIVATE = {"api_visibility": "private", "show_progress": "hidden"}


@dataclass(frozen=True)
class Loaded:
    """The workflow a batch runs: a snapshot taken when it was loaded, and where it came from."""

    document: dict[str, Any]
    workflow_id: str | None = None
    version: int | None = None

    @property
    def workflow(self) -> Workflow:
        return parse_workflow(self.document)


def _sweep_table(rows: list[list[Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=SWEEP_HEADERS)


def default_values_text(value: Any) -> str:
    """A field's current value as values text that reads back as exactly that one value."""
    if value is None:
        return ""
    if isinstance(value, str):
        # A prompt with a comma (or that looks like a range or a list) must be quoted as a JSON list.
        return value if value and parse_values(value) == [value] else json.dumps([value])
    return json.dumps(value)


def exposed_values(workflow: Workflow) -> dict[str, str]:
    """Each exposed field's label and its current value as values text."""
    values = {}
    for exposed in workflow.exposed:
        entry = workflow.nodes.get(exposed.node)
        values[exposed.label] = default_values_text(entry.params.get(exposed.param) if entry else None)
    return values


def _check_field(workflow: Workflow, name: str) -> None:
    try:
        resolve_field(workflow, name)
    except KeyError as error:
        raise BatchSpecError(str(error.args[0])) from None


def _group_number(name: str, raw: Any) -> int:
    try:
        number = float(raw)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer() or number < 1:
        raise BatchSpecError(
            f"{name}: the group must be a whole number from 1 (got {raw!r}); fields with the same group are zipped"
        )
    return int(number)


def sweep_groups(workflow: Workflow, rows: Sequence[Sequence[Any]], csv_path: str | None) -> list[SweepGroup]:
    """The batch's groups: the table's rows by group number (ascending), then the jobs CSV's rows (if any).
    Raises BatchSpecError naming the field, value or CSV column at fault."""
    by_number: dict[int, SweepGroup] = {}
    for row in rows:
        name, values, group = (str(cell).strip() if cell is not None else "" for cell in (list(row) + ["", "", ""])[:3])
        if not name and not values:
            continue
        _check_field(workflow, name)
        if not values:
            raise BatchSpecError(f"{name}: enter at least one value (a, b · 1..8 · 0..1:0.25 · a JSON list)")
        by_number.setdefault(_group_number(name, group), SweepGroup()).add(name, parse_values(values))
    groups = [by_number[number] for number in sorted(by_number)]
    if csv_path:
        jobs = read_jobs_csv(Path(csv_path))
        unknown = []
        for column in jobs.fields:
            try:
                resolve_field(workflow, column)
            except KeyError:
                unknown.append(column)
        if unknown:
            labels = ", ".join(e.label for e in workflow.exposed) or "none"
            raise BatchSpecError(
                f"the CSV's column(s) {', '.join(unknown)} are not fields of {workflow.name!r}; "
                f"its exposed fields: {labels}"
            )
        groups.append(jobs)
    if not groups:
        raise BatchSpecError("nothing to run: pick at least one field and give it values, or upload a jobs CSV")
    return groups


def describe(groups: Sequence[SweepGroup], total: int) -> str:
    """`Seed (2) × Prompt + Width (3) = 6 runs`: each group's fields and length, and the product."""
    factors = " × ".join(f"{' + '.join(group.fields)} ({len(group)})" for group in groups)
    return f"{factors} = {total} run{'s' if total != 1 else ''}"


def issues_text(issues: Sequence[Issue]) -> str:
    return "; ".join(str(issue) for issue in issues)


class BatchView:
    """The tab's components and handlers over one studio."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.storage = studio.storage
        self.pool = studio.pool

    # ---------------------------------------------------------------- choosing the workflow and the values

    def library_choices(self) -> Any:
        return gr.Dropdown(choices=[(f"{r.name} ({r.id})", r.id) for r in self.storage.list_workflows()])

    def load(self, source: str, library_id: str | None, canvas_document: Any) -> dict[Any, Any]:
        try:
            if source == FROM_LIBRARY:
                if not library_id:
                    raise BatchSpecError("choose a library workflow to load")
                version = self.storage.get_workflow_version(library_id)
                loaded = Loaded(json.loads(version.document), library_id, version.version)
            else:
                loaded = Loaded(canvas_document)
            workflow = loaded.workflow
        except (BatchSpecError, NotFound) as error:
            return {self.load_message: plain_markdown(str(error))}
        except WorkflowInvalid as invalid:
            return {self.load_message: plain_markdown(f"this workflow cannot be read: {issues_text(invalid.issues)}")}
        fields = exposed_values(workflow)
        origin = f"library, version {loaded.version}" if loaded.workflow_id else "the canvas"
        note = (
            f"**{plain_markdown(workflow.name)}** (from {origin}): {len(fields)} exposed field(s)."
            if fields
            else f"**{plain_markdown(workflow.name)}** exposes no fields: expose params on the canvas "
            "to sweep them (a jobs CSV may still name `node.param`)."
        )
        return {
            self.loaded: loaded,
            self.current_values: fields,
            self.load_message: note,
            self.fields: gr.CheckboxGroup(choices=list(fields), value=[]),
            self.sweep_table: _sweep_table([]),
        }

    def pick(self, picked: list[str], rows: list[list[Any]], current_values: dict[str, str]) -> pd.DataFrame:
        """The table's rows for the picked fields, in pick order; a newly picked field starts with its current
        value in a group of its own (so it multiplies), earlier rows keep what was typed."""
        typed = {str(row[0]): row for row in rows if row and row[0]}
        next_group = max((int(row[2]) for row in typed.values() if _is_number(row[2])), default=0) + 1
        table = []
        for name in picked:
            if name in typed:
                table.append(list(typed[name]))
            else:
                table.append([name, current_values.get(name, ""), next_group])
                next_group += 1
        return _sweep_table(table)

    def plan(
        self, loaded: Loaded | None, rows: list[list[Any]], csv_path: str | None
    ) -> tuple[Workflow, list[dict[str, Any]], str]:
        """The workflow, every run's values and the count line. Raises BatchSpecError or WorkflowInvalid."""
        if loaded is None:
            raise BatchSpecError("load a workflow first")
        workflow = loaded.workflow
        groups = sweep_groups(workflow, rows, csv_path)
        jobs = expand(groups)
        if len(jobs) > MAX_STUDIO_RUNS:
            raise BatchSpecError(
                f"this batch expands to {len(jobs)} runs; the studio queues at most "
                f"{MAX_STUDIO_RUNS} at once (the CLI's `run --sweep` takes more)"
            )
        return workflow, jobs, describe(groups, len(jobs))

    def count(self, loaded: Loaded | None, rows: list[list[Any]], csv_path: str | None) -> tuple[str, Any]:
        """The count line (or what is wrong) and the Queue button, before anything is queued."""
        try:
            _, jobs, description = self.plan(loaded, rows, csv_path)
        except BatchSpecError as error:
            return plain_markdown(str(error)), gr.Button("Queue", interactive=False)
        except WorkflowInvalid as invalid:
            return plain_markdown(issues_text(invalid.issues)), gr.Button("Queue", interactive=False)
        return plain_markdown(description), gr.Button(
            f"Queue {len(jobs)} run{'s' if len(jobs) != 1 else ''}", interactive=True
        )

    # ---------------------------------------------------------------- queueing and following

    def queue_batch(
        self, loaded: Loaded | None, rows: list[list[Any]], csv_path: str | None
    ) -> Iterator[dict[Any, Any]]:
        """Validate every run, queue them all (or none), then follow them to the end."""
        try:
            workflow, jobs, description = self.plan(loaded, rows, csv_path)
            assert loaded is not None
            submission = submit_batch(
                self.pool,
                RunRequest(
                    workflow=workflow,
                    workflow_id=loaded.workflow_id,
                    workflow_version=loaded.version,
                    file_roots=self.studio.readable_roots,
                ),
                jobs,
            )
        except BatchSpecError as error:
            yield {self.message: plain_markdown(f"nothing queued: {error}")}
            return
        except WorkflowInvalid as invalid:
            yield {self.message: plain_markdown(f"nothing queued: {issues_text(invalid.issues)}")}
            return
        run_ids = [handle.run_id for handle in submission.handles]
        name = submission.batch_id or run_ids[0]
        yield {self.message: plain_markdown(f"queued {description}"), self.batch_ref: submission.batch_id or ""}
        yield from self.follow(run_ids, name)

    def show_batch(self, batch_id: str) -> Iterator[dict[Any, Any]]:
        """A batch's results by its id (live while it still runs)."""
        batch_id = batch_id.strip()
        try:
            batch = self.storage.get_batch(batch_id)
        except NotFound as error:
            yield {self.message: plain_markdown(str(error))}
            return
        records = sorted(
            self.storage.list_runs(batch_id=batch.id, limit=batch.total), key=lambda record: record.batch_index or 0
        )
        yield {self.message: ""}
        yield from self.follow([record.id for record in records], batch.id)

    def follow(self, run_ids: list[str], name: str) -> Iterator[dict[Any, Any]]:
        """The progress and results after each change of any run's status, until every run has ended (or a run
        is no longer held by this server: after a restart, the stored state is shown once)."""
        shown: tuple[RunStatus, ...] | None = None
        while True:
            records = [self.storage.get_run(run_id) for run_id in run_ids]
            statuses = tuple(record.status for record in records)
            unfinished = [record for record in records if record.status not in FINISHED]
            if statuses != shown:
                shown = statuses
                yield self.results(records, name, final=not unfinished)
            if not unfinished:
                return
            handle = self.pool.handle(unfinished[0].id)
            if handle is None:
                return
            try:
                handle.wait(FOLLOW_WAIT)
            except TimeoutError:
                pass

    def results(self, records: list[RunRecord], name: str, *, final: bool) -> dict[Any, Any]:
        stored = [[a.path for a in image_artifacts(self.storage.list_artifacts(r.id))] for r in records]
        images = [[self.storage.artifacts.absolute(path) for path in paths] for paths in stored]
        counts = {status: sum(1 for r in records if r.status == status) for status in RunStatus}
        finished = sum(counts[status] for status in FINISHED)
        progress = (
            f"batch {name}: {finished} of {len(records)} finished ({counts[RunStatus.SUCCEEDED]} succeeded, "
            f"{counts[RunStatus.FAILED]} failed, {counts[RunStatus.CANCELLED]} cancelled, "
            f"{counts[RunStatus.INTERRUPTED]} interrupted); {counts[RunStatus.RUNNING]} running, "
            f"{counts[RunStatus.QUEUED]} queued"
        )
        cells = [
            (str(path), f"#{index + 1} {values_text(record.overrides)}")
            for index, (record, files) in enumerate(zip(records, images))
            for path in files
        ]
        headers, rows = result_rows(records, stored)
        updates: dict[Any, Any] = {
            self.progress: plain_markdown(progress),
            # As many columns as the downloadable grid (nodes.image.grid_image): 4 results are 2 × 2.
            self.gallery: gr.Gallery(value=cells, columns=max(1, math.ceil(math.sqrt(len(cells))))),
            self.results_table: pd.DataFrame(rows, columns=headers),
            self.grid_download: gr.DownloadButton(visible=False),
            self.csv_download: gr.DownloadButton(visible=False),
        }
        if final:
            folder = Path(tempfile.mkdtemp(prefix="flowcanvas-batch-"))
            csv_file = folder / f"batch-{name}-results.csv"
            csv_file.write_text(results_csv(headers, rows), encoding="utf-8")
            updates[self.csv_download] = gr.DownloadButton(value=str(csv_file), visible=True)
            if cells:
                grid_file = folder / f"batch-{name}-grid.png"
                grid_file.write_bytes(sweep_grid([Path(path) for path, _ in cells], [caption for _, caption in cells]))
                updates[self.grid_download] = gr.DownloadButton(value=str(grid_file), visible=True)
        return updates

    # ---------------------------------------------------------------- layout and wiring

    def build(self) -> None:
        with gr.Tab("Batch", id=BATCH_TAB) as tab:
            self.loaded = gr.State(None)
            self.current_values = gr.State({})
            gr.Markdown(
                "Run a workflow over swept values. Fields with the same **group** are zipped (run *i* takes "
                "each one's *i*-th value); groups multiply. Values: `a, b, c` (`\\,` keeps a comma), "
                '`1..8`, `0..1:0.25`, or a JSON list such as `["a red star", "a blue, large circle"]`.'
            )
            with gr.Row():
                self.source = gr.Radio(
                    [FROM_CANVAS, FROM_LIBRARY], value=FROM_CANVAS, label="Workflow from", elem_id="batch-source"
                )
                self.library = gr.Dropdown(
                    choices=[], label="Library workflow", elem_id="batch-library", interactive=True
                )
                self.load_button = gr.Button("Load fields", elem_id="batch-load", scale=0)
            self.load_message = gr.Markdown(elem_id="batch-load-message")
            self.fields = gr.CheckboxGroup(choices=[], label="Exposed fields to set or sweep", elem_id="batch-fields")
            self.sweep_table = gr.Dataframe(
                _sweep_table([]),
                headers=SWEEP_HEADERS,
                type="array",
                interactive=True,
                column_count=3,
                static_columns=[0],
                datatype=["str", "str", "number"],
                elem_id="batch-sweeps",
                label="Values per field (edit the values and group cells)",
            )
            self.csv_file = gr.File(
                label="Jobs CSV (header: field names; one row per run)",
                file_types=[".csv"],
                type="filepath",
                elem_id="batch-csv",
                height=120,
            )
            self.count_line = gr.Markdown("load a workflow first", elem_id="batch-count")
            self.queue_button = gr.Button("Queue", variant="primary", interactive=False, elem_id="batch-queue")
            self.message = gr.Markdown(elem_id="batch-message")

            gr.Markdown("### Results")
            with gr.Row():
                self.batch_ref = gr.Textbox(
                    label="Batch id", placeholder="a batch id from the Runs history", elem_id="batch-ref", scale=2
                )
                self.show_button = gr.Button("Show results", elem_id="batch-show", scale=0)
            self.progress = gr.Markdown(elem_id="batch-progress")
            self.gallery = gr.Gallery(
                label="Results, captioned with each run's values",
                columns=2,
                height="auto",
                fit_columns=False,
                object_fit="contain",
                interactive=False,
                elem_id="batch-results",
            )
            with gr.Row():
                self.grid_download = gr.DownloadButton("Download grid (PNG)", visible=False, elem_id="batch-grid")
                self.csv_download = gr.DownloadButton("Download results (CSV)", visible=False, elem_id="batch-csv-out")
            self.results_table = gr.Dataframe(
                pd.DataFrame([], columns=RESULT_FIXED_HEADERS),
                interactive=False,
                label="Results",
                elem_id="batch-results-table",
            )
        self._wire(tab)

    def _wire(self, tab: gr.Tab) -> None:
        tab.select(self.library_choices, None, self.library, **PRIVATE)
        plan_inputs = [self.loaded, self.sweep_table, self.csv_file]
        count_outputs = [self.count_line, self.queue_button]
        # The count follows the load explicitly: an empty table set empty again raises no change event.
        self.load_button.click(
            self.load,
            [self.source, self.library, self.studio.editor],
            [self.loaded, self.current_values, self.load_message, self.fields, self.sweep_table],
            **PRIVATE,
        ).then(self.count, plan_inputs, count_outputs, **PRIVATE)
        self.fields.input(self.pick, [self.fields, self.sweep_table, self.current_values], self.sweep_table, **PRIVATE)
        for trigger in (self.sweep_table.change, self.csv_file.change):
            trigger(self.count, plan_inputs, count_outputs, **PRIVATE)
        results = [
            self.message,
            self.batch_ref,
            self.progress,
            self.gallery,
            self.results_table,
            self.grid_download,
            self.csv_download,
        ]
        # Following waits on the worker, not on other events: outside the default one-at-a-time slot.
        self.queue_button.click(self.queue_batch, plan_inputs, results, concurrency_limit=None, **PRIVATE)
        for trigger in (self.show_button.click, self.batch_ref.submit):
            trigger(self.show_batch, self.batch_ref, results, concurrency_limit=None, **PRIVATE)


def _is_number(value: Any) -> bool:
    try:
        return float(value).is_integer()
    except (TypeError, ValueError):
        return False


def build(studio: Studio) -> None:
    BatchView(studio).build()

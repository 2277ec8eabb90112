"""The Runs tab: the run history, the live queue, and one run's page.

History rows come from the database, so they outlive the server. The queue (what the worker pool holds now)
can be paused and resumed, and a selected run cancelled or moved up, down or to the front. A run's page shows
its outputs, per-node timings, substituted values, seeds, environment (with model hashes) and error, and can
re-run it (same workflow snapshot and values, hence the same seeds) or open it in the canvas with its values
written in. While the tab is open a timer refreshes what changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import gradio as gr
import pandas as pd

from app.ui.studio import Studio
from app.ui.views.run_records import (
    HISTORY_HEADERS,
    duration_seconds,
    error_text,
    history_row,
    image_artifacts,
    moment,
    plain_markdown,
    workflow_name,
)
from pipelines.issues import WorkflowInvalid
from pipelines.jobs import RunRequest
from pipelines.overrides import substitute_overrides
from pipelines.workflow import canonical_json, load_workflow
from storage import Ambiguous, NotFound, RunRecord, RunStatus

RUNS_TAB = "runs"
RUNS_LABEL = "Runs"
HISTORY_LIMIT = 200
REFRESH_SECONDS = 1.0
FOLLOW_WAIT = 1.0  # seconds a wait for a re-run to end lasts before its status is read again
ALL_STATUSES = "all"
QUEUE_HEADERS = ["#", "run", "state", "workflow", "device", "queued at"]
PAIR_HEADERS = ["field", "value"]
PRIVATE = {"api_visibility": "private"}


def _table(rows: list[list[Any]], headers: list[str]) -> pd.DataFrame:
    # A DataFrame keeps the headers when there are no rows (a bare empty list would lose them).
    return pd.DataFrame(rows, columns=headers)


def _pairs(values: dict[str, Any]) -> pd.DataFrame:
    return _table(
        [[name, json.dumps(value) if not isinstance(value, str) else value] for name, value in values.items()],
        PAIR_HEADERS,
    )


class RunsView:
    """The tab's components and handlers over one studio."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.storage = studio.storage
        self.pool = studio.pool

    # ---------------------------------------------------------------- reading

    def history(self, status: str) -> list[list[Any]]:
        chosen = None if status in ("", ALL_STATUSES) else RunStatus(status)
        return [history_row(record) for record in self.storage.list_runs(limit=HISTORY_LIMIT, status=chosen)]

    def queue(self) -> list[list[Any]]:
        rows = []
        for entry in self.pool.queue():
            try:
                record = self.storage.get_run(entry.run_id)
            except NotFound:
                continue
            place = "running" if entry.running else str(entry.position + 1)
            rows.append(
                [
                    place,
                    record.id,
                    "running" if entry.running else "queued",
                    workflow_name(record),
                    entry.device,
                    moment(record.created_at),
                ]
            )
        return rows

    def queue_state(self) -> str:
        waiting = sum(1 for entry in self.pool.queue() if not entry.running)
        if self.pool.paused:
            return f"The queue is **paused**: {waiting} waiting run(s) start when you resume it."
        return f"The queue is running: {waiting} waiting run(s)."

    def record(self, ref: str) -> RunRecord:
        return self.storage.get_run(ref.strip())

    # ---------------------------------------------------------------- the run page

    def page(self, ref: str) -> dict[Any, Any]:
        """Every part of the run page for the run `ref` (id or prefix); cleared with a message when there is none."""
        if not ref.strip():
            return self._page_cleared("")
        try:
            record = self.record(ref)
        except (NotFound, Ambiguous) as error:
            return self._page_cleared(plain_markdown(str(error)))
        artifacts = self.storage.list_artifacts(record.id)
        seconds = duration_seconds(record)
        summary = {
            "run": record.id,
            "status": str(record.status),
            "workflow": workflow_name(record),
            "library workflow": record.workflow_id or "",
            "version": record.workflow_version or "",
            "device": record.device,
            "created": moment(record.created_at),
            "started": moment(record.started_at),
            "finished": moment(record.finished_at),
            "seconds": "" if seconds is None else f"{seconds:.3f}",
            "batch": f"{record.batch_id} #{(record.batch_index or 0) + 1}" if record.batch_id else "",
            "run up to": record.target_node or "",
        }
        outputs = [(str(self.storage.artifacts.absolute(a.path)), a.node_id) for a in image_artifacts(artifacts)]
        timings = [[node, f"{spent:.4f}"] for node, spent in record.node_timings.items()]
        return {
            self.shown_run: record.id,
            self.shown_status: str(record.status),
            self.summary: _pairs(summary),
            self.outputs: outputs,
            self.timings: _table(timings, ["node", "seconds"]),
            self.values: _pairs(record.overrides),
            self.seeds: _pairs(record.seeds),
            self.environment: {"environment": record.environment, "model_hashes": record.model_hashes},
            self.error: gr.update(value=error_text(record), visible=bool(record.error)),
            self.rerun_button: gr.update(interactive=True),
            self.canvas_button: gr.update(interactive=True),
        }

    def show(self, ref: str) -> dict[Any, Any]:
        """The run page for a run the user chose (an earlier action's message goes)."""
        return {self.page_message: "", **self.page(ref)}

    def _page_cleared(self, message: str) -> dict[Any, Any]:
        return {
            self.shown_run: "",
            self.shown_status: "",
            self.summary: _pairs({}),
            self.outputs: [],
            self.timings: _table([], ["node", "seconds"]),
            self.values: _pairs({}),
            self.seeds: _pairs({}),
            self.environment: {},
            self.error: gr.update(value="", visible=False),
            self.page_message: message,
            self.rerun_button: gr.update(interactive=False),
            self.canvas_button: gr.update(interactive=False),
        }

    def refresh(
        self, status: str, shown_run: str, shown_status: str, shown_history: list, shown_queue: list
    ) -> dict[Any, Any]:
        """What changed since the last refresh: the history, the queue, and the open run if its status moved."""
        updates: dict[Any, Any] = {}
        history = self.history(status)
        if history != shown_history:
            updates[self.history_table] = _table(history, HISTORY_HEADERS)
            updates[self.shown_history] = history
        queue = self.queue()
        if queue != shown_queue:
            updates[self.queue_table] = _table(queue, QUEUE_HEADERS)
            updates[self.shown_queue] = queue
        updates[self.queue_message] = self.queue_state()
        paused = self.pool.paused
        updates[self.pause_button] = gr.Button(interactive=not paused)
        updates[self.resume_button] = gr.Button(interactive=paused)
        if shown_run:
            try:
                current = str(self.storage.get_run(shown_run).status)
            except NotFound:
                current = ""
            if current != shown_status:
                updates.update(self.page(shown_run))
        return updates

    # ---------------------------------------------------------------- actions

    def rerun(self, run_id: str) -> dict[Any, Any]:
        """Queue the run again: the same workflow snapshot, values, target and device, so the same seeds."""
        try:
            record = self.record(run_id)
            handle = self.pool.submit(
                RunRequest(
                    workflow=load_workflow(record.workflow),
                    overrides=record.overrides,
                    target=record.target_node,
                    device=record.device,
                    workflow_id=record.workflow_id,
                    workflow_version=record.workflow_version,
                    file_roots=self.studio.readable_roots,
                )
            )
        except (NotFound, Ambiguous, ValueError) as error:  # ValueError: the device is not available here
            return {self.page_message: plain_markdown(f"cannot re-run: {error}"), self.rerun_of: ""}
        except WorkflowInvalid as invalid:
            problems = "; ".join(str(issue) for issue in invalid.issues)
            return {
                self.page_message: plain_markdown(f"cannot re-run: the workflow no longer validates: {problems}"),
                self.rerun_of: "",
            }
        updates = self.page(handle.run_id)
        updates[self.run_ref] = handle.run_id
        updates[self.page_message] = rerun_message(handle.run_id, record.id, "queued")
        updates[self.rerun_of] = record.id
        return updates

    def follow_rerun(self, run_id: str, original: str) -> Iterator[str]:
        """The re-run's message as it starts and ends (its page follows on the timer's refresh)."""
        if not original:  # the re-run was refused: its message stays
            return
        handle = self.pool.handle(run_id)
        said = "queued"
        while handle is not None and not handle.done:
            status = str(self.storage.get_run(run_id).status)
            if status != said:
                said = status
                yield rerun_message(run_id, original, status)
            try:
                handle.wait(FOLLOW_WAIT)
            except TimeoutError:
                pass
        record = self.storage.get_run(run_id)
        seconds = duration_seconds(record)
        ended = str(record.status) + (f" in {seconds:.2f} s" if seconds is not None else "")
        if record.error:
            ended += f": {error_text(record)}"
        yield rerun_message(run_id, original, ended)

    def open_in_canvas(self, run_id: str) -> tuple[Any, ...]:
        """The run's workflow, with its values written into the params, on the canvas (timer off: tab left)."""
        record = self.record(run_id)
        try:
            document = json.loads(
                canonical_json(substitute_overrides(load_workflow(record.workflow), record.overrides))
            )
        except (WorkflowInvalid, KeyError):  # node types changed since: open the snapshot as it was stored
            document = json.loads(record.workflow)
        return (*self.studio.open_in_canvas(document), gr.Timer(active=False))

    def _queued(self, run_id: str) -> Any:
        return next((entry for entry in self.pool.queue() if entry.run_id == run_id.strip()), None)

    def cancel_selected(self, run_id: str) -> str:
        run_id = run_id.strip()
        if not run_id:
            return "Select a run in the queue first."
        if self.pool.cancel(run_id):
            return plain_markdown(f"cancelled {run_id}")
        return plain_markdown(f"{run_id} is not in the queue (it has ended, or another server holds it)")

    def _move(self, run_id: str, where: str) -> str:
        """Move a waiting run `up`, `down` or to the `front` of its device's queue."""
        entry = self._queued(run_id)
        if entry is None or entry.running:
            return plain_markdown(f"{run_id.strip() or 'nothing selected'}: only a waiting run can be moved")
        position = {"up": entry.position - 1, "down": entry.position + 1, "front": 0}[where]
        self.pool.move(entry.run_id, max(0, position))
        return plain_markdown(f"moved {entry.run_id} {where}")

    def move_up(self, run_id: str) -> str:
        return self._move(run_id, "up")

    def move_down(self, run_id: str) -> str:
        return self._move(run_id, "down")

    def move_to_front(self, run_id: str) -> str:
        return self._move(run_id, "front")

    def pause(self) -> str:
        self.pool.pause()
        return self.queue_state()

    def resume(self) -> str:
        self.pool.resume()
        return self.queue_state()

    # ---------------------------------------------------------------- layout and wiring

    def build(self) -> None:
        with gr.Tab(RUNS_LABEL, id=RUNS_TAB) as tab:
            self.timer = gr.Timer(REFRESH_SECONDS, active=False)
            self.shown_history = gr.State([])
            self.shown_queue = gr.State([])
            self.shown_run = gr.State("")
            self.shown_status = gr.State("")
            self.rerun_of = gr.State("")  # the run the latest re-run repeats ("" when it was refused)

            gr.Markdown("### Queue")
            with gr.Row():
                self.queue_message = gr.Markdown(elem_id="runs-queue-state")
                self.pause_button = gr.Button("Pause queue", size="sm", elem_id="runs-pause")
                self.resume_button = gr.Button("Resume queue", size="sm", elem_id="runs-resume")
            self.queue_table = gr.Dataframe(
                _table([], QUEUE_HEADERS),
                interactive=False,
                elem_id="runs-queue",
                max_height=240,
                label="Running and waiting runs (select one)",
            )
            with gr.Row():
                self.queue_selected = gr.Textbox(
                    label="Selected run",
                    placeholder="select a row of the queue",
                    elem_id="runs-queue-selected",
                    scale=2,
                )
                self.cancel_button = gr.Button("Cancel", variant="stop", elem_id="runs-cancel")
                self.front_button = gr.Button("To front", elem_id="runs-front")
                self.up_button = gr.Button("Up", elem_id="runs-up")
                self.down_button = gr.Button("Down", elem_id="runs-down")
            self.action_message = gr.Markdown(elem_id="runs-action-message")

            gr.Markdown("### History")
            with gr.Row():
                self.status_filter = gr.Dropdown(
                    [ALL_STATUSES, *(s.value for s in RunStatus)], value=ALL_STATUSES, label="Status", scale=1
                )
                self.refresh_button = gr.Button("Refresh", scale=0, elem_id="runs-refresh")
            self.history_table = gr.Dataframe(
                _table([], HISTORY_HEADERS),
                interactive=False,
                elem_id="runs-history",
                max_height=360,
                label="Runs, newest first (select one to open it)",
            )

            gr.Markdown("### Run")
            with gr.Row():
                self.run_ref = gr.Textbox(label="Run id", placeholder="an id or id prefix", elem_id="runs-ref", scale=2)
                self.open_button = gr.Button("Show", elem_id="runs-show", scale=0)
                self.rerun_button = gr.Button("Re-run (same seeds)", interactive=False, elem_id="runs-rerun", scale=0)
                self.canvas_button = gr.Button("Open in canvas", interactive=False, elem_id="runs-open-canvas", scale=0)
            self.page_message = gr.Markdown(elem_id="runs-page-message")
            self.error = gr.Textbox(label="Error", interactive=False, visible=False, elem_id="runs-error")
            with gr.Row():
                self.summary = gr.Dataframe(_pairs({}), interactive=False, label="Run", elem_id="runs-summary")
                # Fixed columns, contained: one 64-px output must not be stretched into a cropped strip.
                self.outputs = gr.Gallery(
                    label="Outputs",
                    columns=3,
                    height=300,
                    fit_columns=False,
                    object_fit="contain",
                    elem_id="runs-outputs",
                    interactive=False,
                )
            with gr.Row():
                self.timings = gr.Dataframe(
                    _table([], ["node", "seconds"]),
                    interactive=False,
                    label="Per-node timings (executed nodes; cached ones are absent)",
                    elem_id="runs-timings",
                )
                self.values = gr.Dataframe(
                    _pairs({}), interactive=False, label="Substituted values", elem_id="runs-values"
                )
                self.seeds = gr.Dataframe(_pairs({}), interactive=False, label="Seeds", elem_id="runs-seeds")
            self.environment = gr.JSON(label="Environment and model hashes", elem_id="runs-environment")
        self._wire(tab)

    def _wire(self, tab: gr.Tab) -> None:
        page = [
            self.shown_run,
            self.shown_status,
            self.summary,
            self.outputs,
            self.timings,
            self.values,
            self.seeds,
            self.environment,
            self.error,
            self.page_message,
            self.rerun_button,
            self.canvas_button,
        ]
        refreshed = [
            self.history_table,
            self.shown_history,
            self.queue_table,
            self.shown_queue,
            self.queue_message,
            self.pause_button,
            self.resume_button,
            *page,
        ]
        refresh_inputs = [self.status_filter, self.shown_run, self.shown_status, self.shown_history, self.shown_queue]
        quiet = {"show_progress": "hidden", **PRIVATE}

        self.timer.tick(self.refresh, refresh_inputs, refreshed, **quiet)
        for trigger in (tab.select, self.refresh_button.click, self.status_filter.change):
            trigger(self.refresh, refresh_inputs, refreshed, **quiet)
        tab.select(lambda: gr.Timer(active=True), None, self.timer, **quiet)
        # Any other tab chosen: stop refreshing (the Runs tab's own select turns it back on).
        self.studio.tabs.select(_runs_tab_chosen, None, self.timer, **quiet)

        # Following waits on the worker: outside the default one-at-a-time slot.
        rerun = self.rerun_button.click(self.rerun, self.shown_run, [*page, self.run_ref, self.rerun_of], **quiet)
        follow = rerun.then(
            self.follow_rerun, [self.run_ref, self.rerun_of], self.page_message, concurrency_limit=None, **quiet
        )
        # Another run shown: its page must not get the re-run's message.
        self.history_table.select(_selected_row_cell(0), None, self.run_ref, cancels=[follow], **quiet).then(
            self.show, self.run_ref, page, **quiet
        )
        for trigger in (self.open_button.click, self.run_ref.submit):
            trigger(self.show, self.run_ref, page, cancels=[follow], **quiet)
        self.canvas_button.click(
            self.open_in_canvas, self.shown_run, [*self.studio.canvas_outputs, self.timer], **quiet
        )

        self.queue_table.select(_selected_row_cell(1), None, self.queue_selected, **quiet)
        # Each action changes the queue: show it now rather than at the next tick.
        for button, action in (
            (self.cancel_button, self.cancel_selected),
            (self.front_button, self.move_to_front),
            (self.up_button, self.move_up),
            (self.down_button, self.move_down),
        ):
            button.click(action, self.queue_selected, self.action_message, **quiet).then(
                self.refresh, refresh_inputs, refreshed, **quiet
            )
        for button, action in ((self.pause_button, self.pause), (self.resume_button, self.resume)):
            button.click(action, None, self.queue_message, **quiet).then(
                self.refresh, refresh_inputs, refreshed, **quiet
            )


def rerun_message(run_id: str, original: str, state: str) -> str:
    """The run page's line about a re-run: `re-run <id> of <id>: <state>` (the id is the second word)."""
    return plain_markdown(f"re-run {run_id} of {original}: {state}")


def _selected_row_cell(column: int) -> Any:
    """A select handler giving one cell (a run id) of the table row the user picked."""

    def cell(evt: gr.SelectData) -> str:
        return str(evt.row_value[column])

    return cell


def _runs_tab_chosen(evt: gr.SelectData) -> Any:
    return gr.Timer(active=evt.value == RUNS_LABEL)


def build(studio: Studio) -> None:
    RunsView(studio).build()

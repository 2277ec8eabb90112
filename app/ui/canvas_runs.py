"""Running from the canvas: submit to the shared job worker and relay the run's events to the editor.

The run executes in the worker (pipelines.jobs), never inside a Gradio generator: when a tab closes, Gradio
stops the relay, not the run. A reopened page asks to follow the run again: the worker replays every event
from the start while it still holds the run; after a restart the state is rebuilt from the stored record.

`RunState` is what the editor's `run_state` prop carries (plain JSON, no torch): the run's status, one entry
per node `{state, step, total, seconds, preview, error}` and the output images as URLs. Entries are keyed by
node path at every level: a node inside a Subgraph node `outer` counts for `outer` and for `outer/inner`, so the
canvas shows the state of whichever scope is open.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

from pipelines.executor import RunEvent
from pipelines.issues import WorkflowInvalid
from pipelines.jobs import RunHandle, WorkerPool
from pipelines.plan import build_plan
from pipelines.workflow import ID_SEPARATOR, load_workflow
from storage import IMAGE_KINDS, ArtifactRecord, NotFound, RunRecord, RunStatus, Storage

RELAY_INTERVAL = 0.05  # seconds between two updates sent to the browser (events in between are coalesced)
RELAY_WAIT = 1.0  # how long one wait for new events lasts before the relay checks again

FileUrl = Callable[[str], str]  # an artifact's stored path → the URL the browser loads it from


def canvas_node(node_id: str) -> str:
    """The top-level canvas node an executed node belongs to (flattened subgraph nodes are outer/inner)."""
    return node_id.split(ID_SEPARATOR, 1)[0]


def node_paths(node_id: str) -> list[str]:
    """The node and every Subgraph node it lies inside, outermost first: a/b/c → a, a/b, a/b/c."""
    parts = node_id.split(ID_SEPARATOR)
    return [ID_SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))]


def png_data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


class RunState:
    """The browser's view of one run, built from its events (or its stored record)."""

    def __init__(self, run_id: str, file_url: FileUrl) -> None:
        self.run_id = run_id
        self.status = "queued"
        self.file_url = file_url
        self.nodes: dict[str, dict[str, Any]] = {}
        self.outputs: list[dict[str, Any]] = []
        self.error: dict[str, Any] | None = None
        self.seconds: float | None = None
        # Per node path, its executed nodes still to finish: a Subgraph node is done when all its inner nodes are.
        self._pending: dict[str, set[str]] = {}

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed", "cancelled", "interrupted")

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "nodes": {k: dict(v) for k, v in self.nodes.items()},
            "outputs": list(self.outputs),
            "error": self.error,
            "seconds": self.seconds,
        }

    def _entries(self, node_id: str) -> list[dict[str, Any]]:
        """The entries of an executed node and of each Subgraph node it lies inside."""
        return [self.nodes.setdefault(path, {"state": "queued"}) for path in node_paths(node_id)]

    def _update(self, node_id: str, **values: Any) -> None:
        for entry in self._entries(node_id):
            entry.update(values)

    def _settle(self, node_id: str, seconds: float | None = None) -> None:
        """One executed node is done (ran, with its seconds, or cached). Each node path holding it is once all of
        its executed nodes are: "done" if any of them ran, else "cached"."""
        for path, entry in zip(node_paths(node_id), self._entries(node_id)):
            if seconds is not None:
                entry["seconds"] = round(entry.get("seconds", 0.0) + seconds, 4)
            pending = self._pending.get(path, set())
            pending.discard(node_id)
            if pending:
                entry["state"] = "running"
                continue
            entry["state"] = "done" if "seconds" in entry else "cached"
            entry.pop("step", None)
            entry.pop("total", None)

    def apply(self, event: RunEvent) -> None:
        kind, node = event.kind, event.node
        if kind == "run_queued":
            for node_id in event.data.get("nodes", []):
                for path in node_paths(node_id):
                    self._pending.setdefault(path, set()).add(node_id)
                self._entries(node_id)
        elif kind == "run_started":
            self.status = "running"
        elif kind == "node_started" and node:
            self._update(node, state="running")
        elif kind == "node_progress" and node:
            self._update(node, state="running", step=event.data.get("step"), total=event.data.get("total"))
            if "preview_png" in event.data:
                self._update(node, preview=png_data_url(event.data["preview_png"]))
        elif kind == "node_cached" and node:
            self._settle(node)
        elif kind == "node_finished" and node:
            self._settle(node, float(event.data.get("seconds", 0.0)))
        elif kind == "node_warning" and node:
            self._update(node, warnings=[str(w.get("message", "")) for w in event.data.get("warnings", [])])
        elif kind == "run_finished":
            self.status = "succeeded"
            self.seconds = round(float(event.data.get("seconds", 0.0)), 4)
            self.outputs = [
                self._output(a["node"], a["path"])
                for a in event.data.get("artifacts", [])
                if a.get("kind") in IMAGE_KINDS
            ]
            self._attach_outputs()
        elif kind == "run_failed":
            self.status = "failed"
            self.error = dict(event.data.get("error") or {})
            if node:
                self._update(node, state="failed", error=self.error.get("message", "failed"))
                self.error["canvas_node"] = canvas_node(node)
            self._drop_queued()
        elif kind == "run_cancelled":
            self.status = "cancelled"
            self._drop_queued()

    def _output(self, node_id: str, path: str) -> dict[str, Any]:
        """An output image as the panel lists it (by top-level canvas node) and the node path that made it."""
        return {"node": canvas_node(node_id), "path": node_id, "url": self.file_url(path)}

    def _attach_outputs(self) -> None:
        for output in self.outputs:
            for path in node_paths(output.pop("path")):
                self.nodes.setdefault(path, {"state": "done"}).setdefault("images", []).append(output["url"])

    def _drop_queued(self) -> None:
        """Nodes that never ran show no state once the run has ended; a running one stopped where it was."""
        for outer in [k for k, v in self.nodes.items() if v["state"] == "queued"]:
            del self.nodes[outer]
        for entry in self.nodes.values():
            if entry["state"] == "running":
                entry["state"] = "stopped"

    @classmethod
    def from_record(cls, record: RunRecord, artifacts: list[ArtifactRecord], file_url: FileUrl) -> RunState:
        """Rebuild the view of a run this process no longer holds (after a restart): nodes that ran show their
        seconds, the failed node its message, output nodes their images; per-step progress is not stored."""
        state = cls(record.id, file_url)
        state.status = str(record.status)
        planned: list[str] = []
        try:
            planned = [
                n.id
                for n in build_plan(load_workflow(record.workflow), record.overrides, target=record.target_node).nodes
            ]
        except WorkflowInvalid:
            pass  # the node types changed since: show what the record itself says
        if record.status == RunStatus.SUCCEEDED:
            for node_id in planned:
                state._update(node_id, state="cached")  # the record keeps timings of executed nodes only
        for node_id, seconds in record.node_timings.items():
            for entry in state._entries(node_id):
                entry.update(state="done", seconds=round(entry.get("seconds", 0.0) + seconds, 4))
        if record.status == RunStatus.SUCCEEDED:
            state.seconds = round(sum(record.node_timings.values()), 4)
            state.outputs = [state._output(a.node_id, a.path) for a in artifacts if a.kind in IMAGE_KINDS]
            state._attach_outputs()
        if record.error:
            state.error = dict(record.error)
            failed = record.error.get("node")
            if failed:
                state._update(failed, state="failed", error=record.error.get("message", "failed"))
                state.error["canvas_node"] = canvas_node(failed)
        elif record.status == RunStatus.INTERRUPTED:
            state.error = {"message": "the server stopped while this run was going; run it again"}
        if not state.finished:
            # Queued or running in the record, yet not held by this process: leave it to mark_interrupted_runs.
            state.status = "unknown"
        return state


class CanvasRuns:
    """What the canvas's Run, Cancel and reopen do, on one storage and worker pool."""

    def __init__(self, storage: Storage, pool: WorkerPool, file_url: FileUrl) -> None:
        self.storage = storage
        self.pool = pool
        self.file_url = file_url

    def relay(self, handle: RunHandle) -> Iterator[dict[str, Any]]:
        """The run's state after each batch of events, from its first event to its end."""
        state = RunState(handle.run_id, self.file_url)
        seen = 0
        while not state.finished:
            batch = handle.events_since(seen, timeout=RELAY_WAIT)
            seen += len(batch)
            for event in batch:
                state.apply(event)
            if batch:
                yield state.to_json()
                time.sleep(RELAY_INTERVAL)
            elif handle.done and seen == len(handle.events_since(0, timeout=0)):
                return  # ended without a terminal event we understand; nothing more will come

    def follow(self, run_id: str) -> Iterator[dict[str, Any]]:
        """A run by id: relayed live while this process holds it, else rebuilt once from storage."""
        handle = self.pool.handle(run_id)
        if handle is not None:
            yield from self.relay(handle)
            return
        try:
            record = self.storage.get_run(run_id)
        except NotFound:
            return
        yield RunState.from_record(record, self.storage.list_artifacts(record.id), self.file_url).to_json()

    def cancel(self, run_id: str) -> bool:
        return self.pool.cancel(run_id)

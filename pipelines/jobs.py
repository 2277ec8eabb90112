"""The job worker: one FIFO per device that the UI, the HTTP API and the CLI all submit runs to.

Callers never execute a run themselves: `submit` validates, records a queued run row and returns a
handle; the worker thread executes runs one at a time, stores their artifacts and finishes the row in
one transaction; callers follow the run's events (replayed from the start, so a late follower misses
nothing) or wait for its outcome.

The queue can be paused (the running run goes on; no queued run starts until it is resumed), a queued run
can be moved to another place in it, and a queued run that is cancelled leaves the queue at once (recorded
as cancelled), paused or not. The queue lives in this process: after a restart, its rows read `interrupted`.

The pool also answers what models are in memory and frees them (the Models tab): a model is held by the model
manager (nodes.models.loader) and, as a cached model-loading output, by each device worker's output cache.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nodes.files import INSTALL_ROOT
from nodes.registry import RunCancelled
from nodes.runtime import environment, resolve_device
from pipelines.executor import CancelToken, EventSink, Executor, NodeFailed, OutputCache, RunEvent
from pipelines.overrides import substitute_overrides
from pipelines.plan import Plan, build_plan
from pipelines.workflow import PNG_RUN_KEY, PNG_WORKFLOW_KEY, Workflow, canonical_json
from storage import ArtifactRecord, NewArtifact, RunRecord, RunStatus, Storage

log = logging.getLogger(__name__)

TERMINAL_EVENTS = {"run_finished", "run_failed", "run_cancelled"}
FINISHED_HANDLES_KEPT = 64  # finished runs whose events stay in memory for late followers (a reopened page)
MODEL_HASHES = "model_hashes"  # the record a model-loading node leaves in its cache entry: {source: sha256}
MODEL_MANAGER = "model manager"  # a LoadedModel holder: nodes.models.loader.MANAGER


class RunRequest(BaseModel):
    """What to run: a workflow, the substituted values, and where it may run and read from."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    workflow: Workflow
    overrides: dict[str, Any] = Field(default_factory=dict)
    target: str | None = None  # "run up to here"
    device: str = "auto"
    workflow_id: str | None = None
    workflow_version: int | None = None
    batch_id: str | None = None
    batch_index: int | None = None
    file_roots: tuple[Path, ...] | None = None  # confine file-reading nodes (browser and API submissions)

    def plan(self) -> Plan:
        """The execution plan (raises WorkflowInvalid)."""
        return build_plan(self.workflow, self.overrides, target=self.target, file_roots=self.file_roots)

    def record_queued(self, storage: Storage, device: str) -> tuple[Plan, RunRecord]:
        """Validate (raises WorkflowInvalid, leaving no row behind), then record the run as queued on `device`."""
        plan = self.plan()
        record = storage.create_run(
            workflow=canonical_json(self.workflow),
            overrides=self.overrides,
            device=device,
            workflow_id=self.workflow_id,
            workflow_version=self.workflow_version,
            target_node=self.target,
            batch_id=self.batch_id,
            batch_index=self.batch_index,
        )
        return plan, record


@dataclass
class RunOutcome:
    run_id: str
    status: RunStatus
    error: dict[str, Any] | None = None
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


class EventLog:
    """Every event of one run, in order; followers replay from the start and block for new ones."""

    def __init__(self) -> None:
        self._events: list[RunEvent] = []
        self._changed = threading.Condition()

    def append(self, event: RunEvent) -> None:
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    def _has_events_after(self, index: int) -> bool:
        return index < len(self._events)

    def follow(self, timeout: float | None = None) -> Iterator[RunEvent]:
        index = 0
        while True:
            with self._changed:
                if index >= len(self._events) and not self._changed.wait_for(
                    partial(self._has_events_after, index), timeout
                ):
                    return
                batch = self._events[index:]
            index += len(batch)
            for event in batch:
                yield event
                if event.kind in TERMINAL_EVENTS:
                    return

    def since(self, index: int, timeout: float | None = None) -> list[RunEvent]:
        """The events from `index` on, waiting up to `timeout` seconds for at least one (empty if none came)."""
        with self._changed:
            self._changed.wait_for(lambda: index < len(self._events), timeout)
            return self._events[index:]

    def snapshot(self) -> list[RunEvent]:
        with self._changed:
            return list(self._events)


class RunHandle:
    def __init__(self, run_id: str, events: EventLog, withdraw: Callable[[], None] | None = None) -> None:
        self.run_id = run_id
        self._events = events
        self.cancel_token = CancelToken()
        self._withdraw = withdraw  # takes the run out of its worker's queue if it is still waiting there
        self._done = threading.Event()
        self._outcome: RunOutcome | None = None

    def events(self, timeout: float | None = None) -> Iterator[RunEvent]:
        """Every event of this run from its start, until it ends (or `timeout` seconds pass with nothing new)."""
        return self._events.follow(timeout)

    def events_since(self, index: int, timeout: float | None = None) -> list[RunEvent]:
        """The events from `index` on, as one batch, waiting up to `timeout` seconds for one (for relays that
        coalesce: whatever arrived while the last batch was being shown comes together)."""
        return self._events.since(index, timeout)

    def cancel(self) -> None:
        # The token first: a worker taking the run off the queue meanwhile sees it before the run starts.
        self.cancel_token.cancel()
        if self._withdraw is not None:
            self._withdraw()

    def wait(self, timeout: float | None = None) -> RunOutcome:
        if not self._done.wait(timeout):
            raise TimeoutError(f"run {self.run_id} did not finish within {timeout} s")
        assert self._outcome is not None
        return self._outcome

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def finish(self, outcome: RunOutcome) -> None:
        """Record the run's outcome (its worker does this): `wait` returns it from now on."""
        self._outcome = outcome
        self._done.set()


@dataclass(frozen=True)
class QueueEntry:
    """One run in a device's queue: the running one, or a waiting one at `position` (0: next to start)."""

    run_id: str
    device: str
    running: bool
    position: int


@dataclass
class _Job:
    request: RunRequest
    plan: Plan
    handle: RunHandle
    log: EventLog


class JobWorker:
    """Executes the runs of one device in queue order (submission order unless moved), on its own thread, with
    a persistent cache."""

    def __init__(
        self, storage: Storage, device: str, *, cache_budget_bytes: int = 2 * 1024**3, paused: bool = False
    ) -> None:
        self.storage = storage
        self.device = device
        self.executor = Executor(device=device, cache=OutputCache(cache_budget_bytes))
        self.listeners: list[EventSink] = []
        # The waiting runs, the one running and the paused/stopping flags change together under one condition.
        self._queue_changed = threading.Condition()
        self._waiting: deque[_Job] = deque()
        self._running: _Job | None = None
        self._paused = paused
        self._stopping = False
        self._handles: OrderedDict[str, RunHandle] = OrderedDict()
        self._handles_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=f"flowcanvas-worker-{device}", daemon=True)
        self._thread.start()

    def submit(self, request: RunRequest) -> RunHandle:
        """Validate (raises WorkflowInvalid, leaving no row behind), record a queued run and enqueue it."""
        plan, record = request.record_queued(self.storage, self.device)
        log_ = EventLog()
        handle = RunHandle(record.id, log_, withdraw=lambda: self._withdraw(record.id))
        job = _Job(request, plan, handle, log_)
        with self._handles_lock:
            self._handles[record.id] = handle
        # The plan's node ids (subgraph nodes flattened to outer/inner): what a follower shows as queued.
        self._emit(job, RunEvent("run_queued", record.id, data={"nodes": [node.id for node in plan.nodes]}))
        with self._queue_changed:
            self._waiting.append(job)
            self._queue_changed.notify_all()
        return handle

    # ---------------------------------------------------------------- the queue

    @property
    def paused(self) -> bool:
        with self._queue_changed:
            return self._paused

    def pause(self) -> None:
        """Start no more queued runs (the running one goes on) until `resume`."""
        with self._queue_changed:
            self._paused = True

    def resume(self) -> None:
        with self._queue_changed:
            self._paused = False
            self._queue_changed.notify_all()

    def queue(self) -> list[QueueEntry]:
        """The running run (if any), then the waiting runs in the order they will start."""
        with self._queue_changed:
            running = (
                [QueueEntry(self._running.handle.run_id, self.device, running=True, position=0)]
                if self._running is not None
                else []
            )
            return running + [
                QueueEntry(job.handle.run_id, self.device, running=False, position=index)
                for index, job in enumerate(self._waiting)
            ]

    def move(self, run_id: str, position: int) -> bool:
        """Put a waiting run at `position` of the queue (0: next to start; clamped to the queue's ends). False
        when it is not waiting here (running, ended, or another worker's)."""
        with self._queue_changed:
            job = next((j for j in self._waiting if j.handle.run_id == run_id), None)
            if job is None:
                return False
            self._waiting.remove(job)
            self._waiting.insert(max(0, min(position, len(self._waiting))), job)
            return True

    def _withdraw(self, run_id: str) -> None:
        """A cancelled run that is still waiting leaves the queue now, recorded as cancelled (a paused queue would
        otherwise hold it as queued). A running one stops at its next cancellation point instead."""
        with self._queue_changed:
            job = next((j for j in self._waiting if j.handle.run_id == run_id), None)
            if job is None:
                return
            self._waiting.remove(job)
        job.handle.finish(self._cancelled(job))
        self._forget_finished()

    def _next_job(self) -> _Job | None:
        """Block until a run may start (None: shutting down with nothing left to run)."""
        with self._queue_changed:
            self._running = None
            self._queue_changed.wait_for(lambda: (self._waiting and not self._paused) or self._stopping)
            if not self._waiting or self._paused:
                return None
            self._running = self._waiting.popleft()
            return self._running

    def handle(self, run_id: str) -> RunHandle | None:
        """The handle of a run submitted here that is queued, running or among the last finished; else None."""
        with self._handles_lock:
            return self._handles.get(run_id)

    def _forget_finished(self) -> None:
        with self._handles_lock:
            finished = [run_id for run_id, handle in self._handles.items() if handle.done]
            for run_id in finished[: max(0, len(finished) - FINISHED_HANDLES_KEPT)]:
                del self._handles[run_id]

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop once the queue is empty; a paused queue's waiting runs are cancelled instead of run."""
        with self._queue_changed:
            self._stopping = True
            held = list(self._waiting) if self._paused else []
            self._queue_changed.notify_all()
        for job in held:
            job.handle.cancel()
        self._thread.join(timeout)

    def _emit(self, job: _Job, event: RunEvent) -> None:
        job.log.append(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("run listener failed")

    def _loop(self) -> None:
        while (job := self._next_job()) is not None:
            try:
                outcome = self._run(job)
            except Exception as error:  # storage trouble: report it on the run rather than kill the worker
                log.exception("run %s could not be completed", job.handle.run_id)
                message = {"message": f"internal error: {error}"}
                outcome = RunOutcome(job.handle.run_id, RunStatus.FAILED, self._without_server_folders(message))
                self._emit(job, RunEvent("run_failed", job.handle.run_id, data={"error": outcome.error}))
            job.handle.finish(outcome)
            self._forget_finished()

    def _without_server_folders(self, error: dict[str, Any]) -> dict[str, Any]:
        """`error` with the data folder and the installation cut from its message and hint, so that a path in
        it reads relative to them: errors reach browsers and API clients, which are not told where the server
        keeps its files."""
        folders = {str(folder) for root in (self.storage.home, INSTALL_ROOT) for folder in (root, root.resolve())}
        cleaned = dict(error)
        for key in ("message", "hint"):
            text = cleaned.get(key)
            if isinstance(text, str):
                for folder in sorted(folders, key=len, reverse=True):  # the data folder may sit inside the other
                    text = text.replace(folder + os.sep, "").replace(folder, ".")
                cleaned[key] = text
        return cleaned

    def run_recorded(self, request: RunRequest, plan: Plan, handle: RunHandle) -> RunOutcome:
        """Execute a run recorded as queued elsewhere (the Ray driver's row `handle.run_id`) on the calling thread,
        outside this worker's queue but through the same code, rows and events; `handle` is finished with it."""
        outcome = self._run(_Job(request, plan, handle, handle._events))
        handle.finish(outcome)
        return outcome

    def _run(self, job: _Job) -> RunOutcome:
        run_id = job.handle.run_id
        request = job.request
        if job.handle.cancel_token.cancelled:
            return self._cancelled(job)
        env = environment(self.device)
        self.storage.mark_run_started(run_id, env)
        self._emit(job, RunEvent("run_started", run_id, data={"device": self.device}))
        effective = canonical_json(substitute_overrides(request.workflow, request.overrides))

        def png_text(records: dict[str, dict[str, Any]]) -> dict[str, str]:
            run_record = {
                "run_id": run_id,
                "overrides": request.overrides,
                "seeds": records.get("seeds", {}),
                "model_hashes": records.get(MODEL_HASHES, {}),
                "environment": env,
            }
            return {PNG_WORKFLOW_KEY: effective, PNG_RUN_KEY: json.dumps(run_record, sort_keys=True, default=str)}

        try:
            result = self.executor.execute(
                job.plan,
                run_id=run_id,
                sinks=[lambda e: self._emit(job, e)],
                cancel=job.handle.cancel_token,
                png_text=png_text,
                file_roots=request.file_roots,
            )
        except RunCancelled:
            return self._cancelled(job)
        except NodeFailed as failure:
            if failure.details:
                log.info("node %s failed:\n%s", failure.node_id, failure.details)
            error = self._without_server_folders(failure.as_dict())
            self.storage.finish_run(run_id, RunStatus.FAILED, node_timings={}, error=error)
            self._emit(job, RunEvent("run_failed", run_id, node=failure.node_id, data={"error": error}))
            return RunOutcome(run_id, RunStatus.FAILED, error)
        artifacts = []
        for item in result.output_items:
            stored = self.storage.artifacts.put_bytes(item.data, item.suffix)
            artifacts.append(
                NewArtifact(
                    node_id=item.node_id,
                    kind=item.kind,
                    path=stored.path,
                    sha256=stored.sha256,
                    size=stored.size,
                    meta=item.meta,
                )
            )
        self.storage.finish_run(
            run_id,
            RunStatus.SUCCEEDED,
            node_timings=result.timings,
            seeds=result.seeds,
            model_hashes=result.model_hashes,
            artifacts=artifacts,
        )
        records = self.storage.list_artifacts(run_id)
        self._emit(
            job,
            RunEvent(
                "run_finished",
                run_id,
                data={
                    "seconds": sum(result.timings.values()),
                    "artifacts": [{"id": a.id, "node": a.node_id, "kind": a.kind, "path": a.path} for a in records],
                },
            ),
        )
        return RunOutcome(run_id, RunStatus.SUCCEEDED, None, records, result.timings, result.executed, result.cached)

    def _cancelled(self, job: _Job) -> RunOutcome:
        run_id = job.handle.run_id
        self.storage.finish_run(run_id, RunStatus.CANCELLED, node_timings={})
        self._emit(job, RunEvent("run_cancelled", run_id))
        return RunOutcome(run_id, RunStatus.CANCELLED)


class LoadedModel(BaseModel):
    """A model in memory, and what holds it: the model manager, and each device worker's run cache."""

    source: str
    family: str
    dtype: str
    device: str
    nbytes: int
    sha256: str
    held_by: list[str]  # MODEL_MANAGER, "cpu run cache", …


class WorkerPool:
    """One JobWorker per device, created on first use; the process-wide entry point for running workflows."""

    def __init__(self, storage: Storage, *, cache_budget_bytes: int = 2 * 1024**3) -> None:
        self.storage = storage
        self.cache_budget_bytes = cache_budget_bytes
        self._workers: dict[str, JobWorker] = {}
        self._paused = False  # the whole queue: workers started while paused start paused
        self._lock = threading.Lock()

    def worker(self, device: str = "auto") -> JobWorker:
        resolved = resolve_device(device)
        with self._lock:
            if resolved not in self._workers:
                self._workers[resolved] = JobWorker(
                    self.storage, resolved, cache_budget_bytes=self.cache_budget_bytes, paused=self._paused
                )
            return self._workers[resolved]

    def submit(self, request: RunRequest) -> RunHandle:
        return self.worker(request.device).submit(request)

    def workers(self) -> list[JobWorker]:
        """The workers started so far, one per device."""
        with self._lock:
            return list(self._workers.values())

    def handle(self, run_id: str) -> RunHandle | None:
        """A run's handle, from whichever worker it was submitted to (None: not in this process's memory)."""
        with self._lock:
            workers = list(self._workers.values())
        return next((h for w in workers if (h := w.handle(run_id)) is not None), None)

    def cancel(self, run_id: str) -> bool:
        """Cancel a queued or running run; False when this process does not hold it or it has ended."""
        handle = self.handle(run_id)
        if handle is None or handle.done:
            return False
        handle.cancel()
        return True

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    def pause(self) -> None:
        """Pause every device's queue: running runs go on, queued ones wait (also on workers started later)."""
        with self._lock:  # held throughout, so a concurrent resume cannot interleave worker by worker
            self._paused = True
            for worker in self._workers.values():
                worker.pause()

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            for worker in self._workers.values():
                worker.resume()

    def queue(self) -> list[QueueEntry]:
        """Every device's running run, then its waiting runs in the order they will start."""
        return [entry for worker in self.workers() for entry in worker.queue()]

    def move(self, run_id: str, position: int) -> bool:
        """Put a queued run at `position` of its device's queue (0: next); False when it is not waiting."""
        return any(worker.move(run_id, position) for worker in self.workers())

    def loaded_models(self) -> list[LoadedModel]:
        """Every model in memory: those the model manager holds, and those only a worker's run cache still holds
        (as a cached model-loading output)."""
        from nodes.models import loader  # here, not above: it imports diffusers, which `runs list` has no use for

        rows: dict[tuple[str, str], LoadedModel] = {}
        for described in loader.MANAGER.loaded():
            rows[(described["source"], described["sha256"])] = LoadedModel(
                source=described["source"],
                family=described["family"],
                dtype=described["dtype"],
                device=described["device"],
                nbytes=described["bytes"],
                sha256=described["sha256"],
                held_by=[MODEL_MANAGER],
            )
        for worker in self.workers():
            holder = f"{worker.device} run cache"
            for _, entry in worker.executor.cache.entries():
                for source, sha256 in entry.records.get(MODEL_HASHES, {}).items():
                    row = rows.get((source, sha256))
                    if row is None:
                        model = entry.outputs.get("model")
                        described = model.describe() if callable(getattr(model, "describe", None)) else {}
                        row = rows[(source, sha256)] = LoadedModel(
                            source=source,
                            family=str(described.get("family", "?")),
                            dtype=str(described.get("dtype", "?")),
                            device=str(described.get("device", worker.device)),
                            nbytes=entry.nbytes,
                            sha256=sha256,
                            held_by=[],
                        )
                    if holder not in row.held_by:
                        row.held_by.append(holder)
        return list(rows.values())

    def free_models(self, source: str | None = None) -> int:
        """Free one source's models (all when None) from the model manager and every run cache, so nothing keeps
        them alive; returns how many models (manager entries and cache-only ones) went."""
        from nodes.models import loader  # see loaded_models

        before = {(row.source, row.sha256) for row in self.loaded_models() if source is None or row.source == source}
        loader.MANAGER.free(source)
        for worker in self.workers():
            keys = [
                key
                for key, entry in worker.executor.cache.entries()
                if entry.records.get(MODEL_HASHES) and (source is None or source in entry.records[MODEL_HASHES])
            ]
            worker.executor.cache.drop(keys)
        gc.collect()  # pipelines hold reference cycles (hooks, modules): collect now, not at some later allocation
        return len(before)

    def shutdown(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.shutdown()

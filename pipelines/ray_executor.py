"""Batch runs on a Ray cluster: one model-holding actor per GPU (or per CPU), the same run rows as local runs.

The driver (this process) validates each job and records its queued run row, exactly as the local job
worker does, then hands jobs to the actors one at a time each. Every actor is a `JobWorker` of its own,
with its own storage connection (the same database URL and artifact folder as the driver, passed through
its environment), so a job inside an actor runs through the local executor's code path and stores its
artifacts and final status itself, in one transaction, as a local run does. Models stay loaded in the
actor between jobs. Events stream back to the driver (a Ray streaming generator) and are replayed on the
run's handle and to the executor's listeners (one progress bar for the whole batch).

An actor that dies mid-job: its run is put back to `queued` and retried, preferably on another actor, up
to `max_attempts` times; Ray restarts the dead actor (as often) so the pool keeps its size. Every run ends
`succeeded`, `failed` (with the reason: the node's error, or the workers that died running it) or
`cancelled`.

Only this module imports ray; `pipelines.batch.open_executor` imports it when `--executor ray` is chosen.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch
from pydantic import BaseModel, ConfigDict
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from nodes.runtime import resolve_device
from pipelines.executor import EventSink, RunEvent
from pipelines.issues import WorkflowInvalid
from pipelines.jobs import TERMINAL_EVENTS, EventLog, JobWorker, RunHandle, RunOutcome, RunRequest
from pipelines.ray_options import RayOptions
from storage import RunRecord, RunStatus, Storage, StorageError, open_storage
from storage.records import UNFINISHED_STATUSES

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# What a cluster's workers need of the repository (shipped when joining a running cluster); the rest stays here.
SHIPPED_EXCLUDES = [".git", "data", "out", "docs", "tests/js", "**/__pycache__", ".pytest_cache", ".benchmarks"]
READY_POLL_SECONDS = 0.2
EVENT_WAIT_SECONDS = 0.5  # how long an actor waits for its run's next event before checking that the run lives


class WorkerInfo(BaseModel):
    """Who an actor is: reported once it has started (and again after each restart)."""

    model_config = ConfigDict(frozen=True)

    pid: int
    host: str
    device: str
    threads: int


class ModelWorker:
    """The Ray actor: a JobWorker on one device with its own storage; loaded models stay in its process."""

    def __init__(self, device: str, threads: int, cache_budget_bytes: int) -> None:
        # Ray limits an actor to its reserved CPUs' worth of threads; the batch's thread count decides the bits.
        torch.set_num_threads(threads)
        # FLOWCANVAS_HOME, FLOWCANVAS_DATABASE_URL and FLOWCANVAS_ARTIFACTS come from the driver (runtime_env).
        self.storage = open_storage()
        self.worker = JobWorker(self.storage, resolve_device(device), cache_budget_bytes=cache_budget_bytes)
        self.info = WorkerInfo(
            pid=os.getpid(), host=socket.gethostname(), device=self.worker.device, threads=torch.get_num_threads()
        )
        self._handles: dict[str, RunHandle] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    def ready(self) -> WorkerInfo:
        return self.info

    def run(self, run_id: str, request: RunRequest) -> Iterator[list[RunEvent] | RunOutcome]:
        """Execute the queued run `run_id` through the local job worker's code: its events as they happen (in
        batches), then its outcome."""
        try:
            plan = request.plan()
        except WorkflowInvalid as invalid:  # valid on the driver; a file or model missing on this node
            problems = "; ".join(str(issue) for issue in invalid.issues)
            error = {"message": f"the workflow is invalid on Ray worker host {self.info.host}: {problems}"}
            self.storage.finish_run(run_id, RunStatus.FAILED, node_timings={}, error=error)
            yield [RunEvent("run_failed", run_id, data={"error": error})]
            yield RunOutcome(run_id, RunStatus.FAILED, error)
            return
        events = EventLog()
        handle = RunHandle(run_id, events)
        with self._lock:
            self._handles[run_id] = handle
            if run_id in self._cancelled:  # the cancel overtook the run
                handle.cancel()
        failure: list[Exception] = []

        def execute() -> None:
            try:
                self.worker.run_recorded(request, plan, handle)
            except Exception as error:  # storage trouble: re-raised below, so the driver records it
                failure.append(error)

        runner = threading.Thread(target=execute, name=f"flowcanvas-ray-run-{run_id}", daemon=True)
        runner.start()
        try:
            sent, ended = 0, False
            while not ended:
                alive = runner.is_alive()  # before reading: a run that ended has appended all its events
                # What arrived while the last batch was in flight goes as one message.
                batch = events.since(sent, timeout=EVENT_WAIT_SECONDS)
                sent += len(batch)
                ended = any(event.kind in TERMINAL_EVENTS for event in batch) or not (batch or alive)
                if batch:
                    yield batch
            runner.join()
            if failure:
                raise failure[0]
            yield handle.wait()
        finally:
            with self._lock:
                self._handles.pop(run_id, None)
                self._cancelled.discard(run_id)

    def cancel(self, run_id: str) -> None:
        """Cancel `run_id` now if it runs here, or as soon as it arrives (the actor serves two calls at once)."""
        with self._lock:
            self._cancelled.add(run_id)
            handle = self._handles.get(run_id)
        if handle is not None:
            handle.cancel()


class RayRunHandle(RunHandle):
    """A run's handle on the driver; cancelling it also reaches the actor running it."""

    def __init__(self, run_id: str, events: EventLog, on_cancel: Callable[[str], None]) -> None:
        super().__init__(run_id, events)
        self._on_cancel = on_cancel
        self.workers: list[WorkerInfo] = []  # the actors it was started on, in order (more than one: retried)

    def cancel(self) -> None:
        super().cancel()
        self._on_cancel(self.run_id)


@dataclass(eq=False)
class _BatchJob:
    request: RunRequest
    handle: RayRunHandle
    events: EventLog
    attempts: int = 0
    failed_on: set[int] = field(default_factory=set)  # slots whose actor died running it


@dataclass(eq=False)
class _Slot:
    index: int
    actor: ray.actor.ActorHandle
    info: WorkerInfo | None = None
    thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        where = f" (pid {self.info.pid} on {self.info.host})" if self.info else ""
        return f"worker {self.index}{where}"


class _JobQueue:
    """Jobs waiting for an actor, oldest first; a job retried after a death goes to another slot when one lives."""

    def __init__(self) -> None:
        self._jobs: deque[_BatchJob] = deque()
        self._changed = threading.Condition()
        self._live: set[int] = set()
        self._closed = False

    def open_slot(self, index: int) -> None:
        with self._changed:
            self._live.add(index)

    def put(self, job: _BatchJob, *, first: bool = False) -> bool:
        """Queue `job`; False when no slot is left to run it."""
        with self._changed:
            if not self._live:
                return False
            if first:
                self._jobs.appendleft(job)
            else:
                self._jobs.append(job)
            self._changed.notify_all()
            return True

    def take(self, slot: int) -> _BatchJob | None:
        """The next job for `slot`, waiting for one; None once closed."""
        with self._changed:
            while True:
                for job in self._jobs:
                    if slot not in job.failed_on or job.failed_on >= self._live:
                        self._jobs.remove(job)
                        return job
                if self._closed:
                    return None
                self._changed.wait()

    def remove(self, run_id: str) -> _BatchJob | None:
        with self._changed:
            for job in self._jobs:
                if job.handle.run_id == run_id:
                    self._jobs.remove(job)
                    return job
            return None

    def retire(self, slot: int) -> list[_BatchJob]:
        """Take `slot` out of service; when it was the last one, the jobs nobody can run now are returned."""
        with self._changed:
            self._live.discard(slot)
            self._changed.notify_all()
            if self._live:
                return []
            orphaned = list(self._jobs)
            self._jobs.clear()
            return orphaned

    def close(self) -> list[_BatchJob]:
        """Stop serving: the jobs still waiting are returned."""
        with self._changed:
            self._closed = True
            left = list(self._jobs)
            self._jobs.clear()
            self._changed.notify_all()
            return left


def worker_layout(
    resources: dict[str, float], device: str, options: RayOptions, threads: int
) -> tuple[str, float, int]:
    """(device type, GPUs per actor, number of actors) for a cluster with these total resources, each CPU actor
    running `threads` torch threads."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--executor ray runs on a device type: auto, cpu or cuda, not {device!r}")
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    per_worker = options.gpus_per_worker
    if per_worker is None:
        per_worker = 1.0 if gpus >= 1 and device != "cpu" else 0.0
    if per_worker > 0:
        if device == "cpu":
            raise ValueError(f"--device cpu contradicts --gpus-per-worker {per_worker:g}")
        if gpus < per_worker:
            raise ValueError(f"each Ray worker would take {per_worker:g} GPUs, but the cluster has {gpus:g}")
        count = options.workers or int(gpus // per_worker)
        if count * per_worker > gpus:
            raise ValueError(f"{count} Ray workers × {per_worker:g} GPUs need more than the cluster's {gpus:g} GPUs")
        device_type = "cuda"
    else:
        if device == "cuda":
            raise ValueError(
                f"--device cuda, but the Ray workers get no GPU (the cluster has {gpus:g}; give --gpus-per-worker N)"
            )
        count = options.workers or max(1, int(cpus) // threads)
        device_type = "cpu"
    if count > cpus:  # every actor reserves one CPU
        raise ValueError(f"{count} Ray workers need {count} CPUs, but the cluster has {cpus:g}")
    return device_type, per_worker, count


def worker_environment(storage: Storage) -> dict[str, str]:
    """The driver's FlowCanvas settings for the actors: the same database, artifact folder and data folder, and
    the repository on the import path (a working_dir shipped to a joined cluster comes first)."""
    env = {name: value for name, value in os.environ.items() if name.startswith("FLOWCANVAS_")}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "FLOWCANVAS_HOME": str(storage.home),
            "FLOWCANVAS_DATABASE_URL": storage.engine.url.render_as_string(hide_password=False),
            "FLOWCANVAS_ARTIFACTS": str(storage.artifacts.root),
        }
    )
    return env


class RayExecutor:
    """Runs submitted jobs on Ray actors; the same `submit`/handle interface as the local WorkerPool."""

    def __init__(
        self,
        storage: Storage,
        options: RayOptions | None = None,
        *,
        device: str = "auto",
        cache_budget_bytes: int = 2 * 1024**3,
    ) -> None:
        self.storage = storage
        self.options = options or RayOptions()
        self.requested_device = device
        self.cache_budget_bytes = cache_budget_bytes
        self.device: str | None = None  # the actors' device type, once started
        self.threads = 0  # torch threads per actor, once started
        self.listeners: list[EventSink] = []
        self._listeners_lock = threading.Lock()
        self._queue = _JobQueue()
        self._slots: list[_Slot] = []
        self._running: dict[str, tuple[_Slot, _BatchJob]] = {}
        self._lock = threading.Lock()
        self._owns_ray = False

    # Public interface

    def add_listener(self, sink: EventSink) -> None:
        with self._listeners_lock:
            self.listeners.append(sink)

    def start(self) -> None:
        """Connect to (or start) Ray and start the actors; done by the first submit. Raises ValueError when the
        cluster cannot hold the workers asked for."""
        with self._lock:
            if self._slots:
                return
            if not ray.is_initialized():
                joining = self.options.address or os.environ.get("RAY_ADDRESS")
                # Joining a running cluster: ship the code to its nodes (a local instance runs it from here).
                runtime_env = {"working_dir": str(REPO_ROOT), "excludes": SHIPPED_EXCLUDES} if joining else None
                try:
                    ray.init(
                        address=self.options.address,
                        runtime_env=runtime_env,
                        include_dashboard=False,
                        log_to_driver=False,
                    )
                except ConnectionError as error:
                    raise ValueError(f"cannot reach the Ray cluster at {joining}: {_first_line(error)}") from None
                self._owns_ray = True
            self.threads = self.options.threads_per_worker or torch.get_num_threads()
            self.device, gpus, count = worker_layout(
                ray.cluster_resources(), self.requested_device, self.options, self.threads
            )
            if self.storage.engine.dialect.name == "sqlite" and len(ray.nodes()) > 1:
                log.warning(
                    "the Ray cluster has several nodes but the database is SQLite: only workers on this "
                    "machine can reach it; set FLOWCANVAS_DATABASE_URL to a PostgreSQL database"
                )
            actor_class = ray.remote(ModelWorker).options(
                num_cpus=1,
                num_gpus=gpus,
                max_concurrency=2,
                max_restarts=self.options.max_attempts,
                runtime_env={"env_vars": worker_environment(self.storage)},
            )
            for index in range(count):
                slot = _Slot(index, actor_class.remote(self.device, self.threads, self.cache_budget_bytes))
                self._queue.open_slot(index)
                slot.thread = threading.Thread(
                    target=self._serve, args=(slot,), name=f"flowcanvas-ray-{index}", daemon=True
                )
                self._slots.append(slot)
            for slot in self._slots:
                assert slot.thread is not None
                slot.thread.start()

    def submit(self, request: RunRequest) -> RayRunHandle:
        """Validate (raises WorkflowInvalid, leaving no row behind), record a queued run and queue it for an actor."""
        self.start()
        assert self.device is not None
        plan, record = request.record_queued(self.storage, self.device)
        events = EventLog()
        job = _BatchJob(request, RayRunHandle(record.id, events, self.cancel), events)
        self._emit(job, RunEvent("run_queued", record.id, data={"nodes": [node.id for node in plan.nodes]}))
        if not self._queue.put(job):
            self._fail(job, "no Ray worker is left to run it (every worker died; see the earlier runs' errors)")
        return job.handle

    def workers(self) -> list[WorkerInfo | None]:
        """Each actor's identity (None: not started yet); the current process after a restart."""
        return [slot.info for slot in self._slots]

    def running_on(self, run_id: str) -> WorkerInfo | None:
        """The actor running `run_id` now (None: it is not running)."""
        with self._lock:
            running = self._running.get(run_id)
        return running[0].info if running is not None else None

    def cancel(self, run_id: str) -> bool:
        """Cancel a queued or running run; False when it is not (or no longer) in this executor."""
        with self._lock:
            running = self._running.get(run_id)
        if running is not None:
            running[0].actor.cancel.remote(run_id)
            return True
        job = self._queue.remove(run_id)
        if job is None:
            return False
        self._end_cancelled(job)
        return True

    def shutdown(self) -> None:
        """Cancel what is left, stop the actors, and Ray itself when this executor started it."""
        for job in self._queue.close():
            self._end_cancelled(job)
        with self._lock:
            running = list(self._running.values())
        for slot, job in running:
            slot.actor.cancel.remote(job.handle.run_id)
        for slot in self._slots:
            if slot.thread is not None:
                slot.thread.join()
            ray.kill(slot.actor)
        self._slots.clear()
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    # One thread per actor: take a job, run it there, follow its events

    def _serve(self, slot: _Slot) -> None:
        if not self._await_ready(slot):
            return
        while (job := self._queue.take(slot.index)) is not None:
            if job.handle.cancel_token.cancelled:
                self._end_cancelled(job)
                continue
            if self._attempt(slot, job) and not self._await_ready(slot):
                return

    def _await_ready(self, slot: _Slot) -> bool:
        """Wait for the actor to be up (first start, or Ray's restart after a death); retire it if it never is."""
        deadline = time.monotonic() + self.options.start_timeout_s
        while True:
            try:
                slot.info = ray.get(slot.actor.ready.remote(), timeout=max(0.0, deadline - time.monotonic()))
                return True
            except ActorUnavailableError:  # restarting
                if time.monotonic() >= deadline:
                    reason = f"did not come back within {self.options.start_timeout_s:g} s"
                    break
                time.sleep(READY_POLL_SECONDS)
            except GetTimeoutError:
                reason = (
                    f"did not start within {self.options.start_timeout_s:g} s "
                    "(is a CPU/GPU free for it in the cluster?)"
                )
                break
            except RayActorError as error:
                reason = f"is gone: {_first_line(error)}"
                break
        self._retire(slot, f"Ray {slot.name} {reason}")
        return False

    def _attempt(self, slot: _Slot, job: _BatchJob) -> bool:
        """Run `job` on `slot`'s actor; True when the actor died meanwhile."""
        run_id = job.handle.run_id
        job.attempts += 1
        assert slot.info is not None, "a slot takes jobs once its actor is ready"
        job.handle.workers.append(slot.info)
        with self._lock:
            self._running[run_id] = (slot, job)
        outcome: RunOutcome | None = None
        try:
            if job.handle.cancel_token.cancelled:  # cancelled between taking it and getting here
                slot.actor.cancel.remote(run_id)
            for ref in slot.actor.run.options(num_returns="streaming").remote(run_id, job.request):
                item = ray.get(ref)
                if isinstance(item, RunOutcome):
                    outcome = item
                else:
                    for event in item:
                        self._emit(job, event)
        except RayActorError as error:
            self._worker_lost(slot, job, error)
            return True
        except Exception as error:  # the actor's code raised (storage trouble): the run fails, the actor serves on
            log.exception("run %s failed on Ray %s", run_id, slot.name)
            self._fail(job, f"internal error on Ray {slot.name}: {_first_line(error)}")
            return False
        finally:
            with self._lock:
                self._running.pop(run_id, None)
        if outcome is None:
            self._fail(job, f"Ray {slot.name} ended the run without an outcome")
        else:
            job.handle.finish(outcome)
        return False

    def _worker_lost(self, slot: _Slot, job: _BatchJob, error: Exception) -> None:
        run_id = job.handle.run_id
        reason = f"Ray {slot.name} died running it ({_first_line(error)})"
        log.warning("run %s: %s", run_id, reason)
        record = self.storage.requeue_run(run_id)
        if record.status not in UNFINISHED_STATUSES:  # it was stored before the actor died
            self._finish_from_record(job, record)
        elif job.handle.cancel_token.cancelled:
            self._end_cancelled(job)
        elif job.attempts >= self.options.max_attempts:
            tried_on = ", ".join(f"pid {info.pid} on {info.host}" for info in job.handle.workers)
            self._fail(job, f"{reason}; tried {job.attempts} times ({tried_on})")
        else:
            job.failed_on.add(slot.index)
            if not self._queue.put(job, first=True):
                self._fail(job, f"{reason}, and no Ray worker is left to retry it")

    def _retire(self, slot: _Slot, reason: str) -> None:
        log.error("%s; it takes no more jobs", reason)
        for job in self._queue.retire(slot.index):
            self._fail(job, f"no Ray worker is left to run it: {reason}")

    # Ending runs from the driver (the actor could not)

    def _emit(self, job: _BatchJob, event: RunEvent) -> None:
        job.events.append(event)
        with self._listeners_lock:
            for listener in self.listeners:
                try:
                    listener(event)
                except Exception:  # a broken listener must not break the batch
                    log.exception("run listener failed")

    def _fail(self, job: _BatchJob, message: str) -> None:
        error = {"message": message}
        try:
            self.storage.finish_run(job.handle.run_id, RunStatus.FAILED, node_timings={}, error=error)
        except StorageError:  # it finished meanwhile: report what is stored
            self._finish_from_record(job, self.storage.get_run(job.handle.run_id))
            return
        self._emit(job, RunEvent("run_failed", job.handle.run_id, data={"error": error}))
        job.handle.finish(RunOutcome(job.handle.run_id, RunStatus.FAILED, error))

    def _end_cancelled(self, job: _BatchJob) -> None:
        try:
            self.storage.finish_run(job.handle.run_id, RunStatus.CANCELLED, node_timings={})
        except StorageError:
            self._finish_from_record(job, self.storage.get_run(job.handle.run_id))
            return
        self._emit(job, RunEvent("run_cancelled", job.handle.run_id))
        job.handle.finish(RunOutcome(job.handle.run_id, RunStatus.CANCELLED))

    def _finish_from_record(self, job: _BatchJob, record: RunRecord) -> None:
        artifacts = self.storage.list_artifacts(record.id)
        if not any(event.kind in TERMINAL_EVENTS for event in job.events.snapshot()):
            kind = {RunStatus.SUCCEEDED: "run_finished", RunStatus.CANCELLED: "run_cancelled"}.get(
                record.status, "run_failed"
            )
            self._emit(job, RunEvent(kind, record.id, data={"error": record.error} if record.error else {}))
        job.handle.finish(RunOutcome(record.id, record.status, record.error, artifacts, dict(record.node_timings)))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

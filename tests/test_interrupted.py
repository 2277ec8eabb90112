"""A process killed with SIGKILL mid-run leaves a consistent database; its runs read `interrupted` at next start."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from storage import RunStatus, open_storage

pytestmark = pytest.mark.adversarial

ROOT = Path(__file__).resolve().parents[1]

WORKER_SCRIPT = textwrap.dedent("""
    import sys, time
    import tests.support_nodes
    from pipelines.jobs import RunRequest, WorkerPool
    from pipelines.workflow import load_workflow
    from storage import open_storage

    doc = {"format": "flowcanvas.workflow", "version": 1, "nodes": {
        "a": {"type": "TestConst", "params": {"value": 1}},
        "slow": {"type": "TestSlow", "params": {"steps": 10000, "delay": 0.05}, "inputs": {"a": {"node": "a", "output": "value"}}},
        "sink": {"type": "TestSink", "inputs": {"value": {"node": "slow", "output": "value"}}}}}
    pool = WorkerPool(open_storage())
    running = pool.submit(RunRequest(workflow=load_workflow(doc), device="cpu"))
    queued = pool.submit(RunRequest(workflow=load_workflow(doc), device="cpu"))
    print(running.run_id, queued.run_id, flush=True)
    time.sleep(600)
""")


NEXT_START_SCRIPT = textwrap.dedent("""
    from storage import open_storage
    open_storage().close()
""")

# Containers: the worker as PID 1 of its own PID namespace, or under a hostname the next start will not have.
needs_namespaces = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) to make PID and UTS namespaces",
)
AS_PID_1 = ("unshare", "--pid", "--fork")
UNDER_OLD_HOSTNAME = ("unshare", "--uts", "sh", "-c", 'hostname old-container && exec "$0" "$@"')


def start_worker(
    home: Path, prefix: Sequence[str] = (), lease_seconds: str = "60"
) -> tuple[subprocess.Popen, str, str]:
    """The worker script under `prefix`; returns it with its running and queued run ids, once the first runs."""
    env = {
        **os.environ,
        "FLOWCANVAS_HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "FLOWCANVAS_RUN_LEASE_SECONDS": lease_seconds,
    }
    process = subprocess.Popen(
        [*prefix, sys.executable, "-c", WORKER_SCRIPT], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    running_id, queued_id = process.stdout.readline().split()
    deadline = time.monotonic() + 60
    while True:  # wait until the worker has really started executing
        with sqlite3.connect(home / "flowcanvas.db") as connection:
            status = connection.execute("select status from runs where id = ?", (running_id,)).fetchone()[0]
        if status == "running" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status == "running"
    time.sleep(0.2)
    return process, running_id, queued_id


def sigkill(process: subprocess.Popen, pid: int | None = None) -> None:
    """SIGKILL `pid` (default: the process itself) and wait for `process` to end."""
    try:
        os.kill(pid if pid is not None else process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()


def child_of(process: subprocess.Popen) -> int:
    """The one child of `process` (unshare --fork's, which is PID 1 in the new namespace)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def assert_interrupted_and_consistent(home: Path, *run_ids: str) -> None:
    storage = open_storage(home)
    try:
        for run_id in run_ids:
            run = storage.get_run(run_id)
            assert (run.status, run.finished_at is not None) == (RunStatus.INTERRUPTED, True), run_id
        assert storage.list_artifacts(run_ids[0]) == []
    finally:
        storage.close()
    with sqlite3.connect(home / "flowcanvas.db") as connection:
        assert connection.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert connection.execute("pragma foreign_key_check").fetchall() == []


def test_sigkill_mid_run_leaves_the_database_consistent_and_runs_interrupted(home: Path):
    process, running_id, queued_id = start_worker(home)
    sigkill(process)
    assert_interrupted_and_consistent(home, running_id, queued_id)  # open_storage is the next start


@needs_namespaces
def test_a_killed_pid_1_worker_is_interrupted_when_the_container_restarts(home: Path):
    """PID 1 lives on in every namespace, and the restarted container's process is PID 1 again: pid checks
    alone would keep these runs `running` for ever."""
    process, running_id, queued_id = start_worker(home, AS_PID_1)
    sigkill(process, child_of(process))
    env = {**os.environ, "FLOWCANVAS_HOME": str(home), "PYTHONPATH": str(ROOT)}
    subprocess.run([*AS_PID_1, sys.executable, "-c", NEXT_START_SCRIPT], cwd=ROOT, env=env, check=True, timeout=120)
    assert_interrupted_and_consistent(home, running_id, queued_id)


@needs_namespaces
def test_a_killed_worker_under_another_hostname_is_interrupted_once_its_lease_lapses(
    home: Path, monkeypatch: pytest.MonkeyPatch
):
    """A recreated container has a new hostname: the old owner's pid means nothing here, its heartbeat does."""
    monkeypatch.setenv("FLOWCANVAS_RUN_LEASE_SECONDS", "1")
    process, running_id, queued_id = start_worker(home, UNDER_OLD_HOSTNAME, lease_seconds="1")
    sigkill(process)
    storage = open_storage(home)
    try:
        assert storage.get_run(running_id).owner_host == "old-container"
        deadline = time.monotonic() + 30
        while storage.get_run(running_id).status == RunStatus.RUNNING and time.monotonic() < deadline:
            time.sleep(0.2)  # the lease lapses a second after the last beat; the sweep then marks it
            storage.mark_interrupted_runs()
    finally:
        storage.close()
    assert_interrupted_and_consistent(home, running_id, queued_id)

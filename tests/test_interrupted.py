"""A process killed with SIGKILL mid-run leaves a consistent database; its runs read `interrupted` at next start."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from storage import RunStatus, open_storage

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


def test_sigkill_mid_run_leaves_the_database_consistent_and_runs_interrupted(home: Path):
    env = {**os.environ, "FLOWCANVAS_HOME": str(home), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        running_id, queued_id = process.stdout.readline().split()
        database = home / "flowcanvas.db"
        deadline = time.monotonic() + 60
        while True:  # wait until the worker has really started executing
            with sqlite3.connect(database) as connection:
                status = connection.execute("select status from runs where id = ?", (running_id,)).fetchone()[0]
            if status == "running" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert status == "running"
        time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()

    storage = open_storage(home)  # the next start
    try:
        assert storage.get_run(running_id).status == RunStatus.INTERRUPTED
        assert storage.get_run(queued_id).status == RunStatus.INTERRUPTED
        assert storage.get_run(running_id).finished_at is not None
        assert storage.list_artifacts(running_id) == []
    finally:
        storage.close()
    with sqlite3.connect(home / "flowcanvas.db") as connection:
        assert connection.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert connection.execute("pragma foreign_key_check").fetchall() == []

"""The Ray executor on a real local Ray cluster (two CPU actors): same rows and bits as local runs, retries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="the Ray executor's tests need `pip install -r requirements-ray.txt`")

from app.cli import main
from pipelines.batch import open_executor, submit_batch
from pipelines.executor import RunEvent
from pipelines.jobs import RunOutcome, RunRequest
from pipelines.ray_executor import RayExecutor, worker_layout
from pipelines.ray_options import RayOptions
from pipelines.workflow import load_workflow
from storage import RunStatus, Storage, open_storage

REPO = Path(__file__).resolve().parent.parent
TXT2IMG = REPO / "pipelines" / "templates" / "txt2img-embedded.json"
SWEEP = [{"Seed": seed, "Steps": 6} for seed in range(1, 9)]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray instance with two CPUs, as on this 2-core machine: room for two CPU actors."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def request() -> RunRequest:
    return RunRequest(workflow=load_workflow(TXT2IMG), device="cpu")


def pixels(storage: Storage, outcome: RunOutcome) -> list[np.ndarray]:
    # The PNG files differ (they carry the run's id); their decoded pixels are what must match.
    images = [a for a in outcome.artifacts if a.kind == "image"]
    return [np.asarray(Image.open(storage.artifacts.absolute(a.path))) for a in images]


class KillOnStart:
    """Listener that SIGKILLs the actor running the `nth` run to start (counting from 1), mid-run."""

    def __init__(self, executor: RayExecutor, nth: int) -> None:
        self.executor = executor
        self.nth = nth
        self.started = 0
        self.killed: tuple[str, int] | None = None  # (run id, actor pid)
        self._lock = threading.Lock()

    def __call__(self, event: RunEvent) -> None:
        if event.kind != "run_started":
            return
        with self._lock:
            self.started += 1
            if self.started != self.nth or self.killed is not None:
                return
            worker = self.executor.running_on(event.run_id)
            assert worker is not None
            pid = worker.pid
            self.killed = (event.run_id, pid)
        os.kill(pid, signal.SIGKILL)


def test_worker_layout_follows_the_cluster_and_refuses_what_cannot_fit() -> None:
    options = RayOptions()
    assert worker_layout({"CPU": 16, "GPU": 4}, "auto", options, threads=2) == ("cuda", 1.0, 4)
    assert worker_layout({"CPU": 16, "GPU": 4}, "auto", RayOptions(gpus_per_worker=0.5), threads=2) == ("cuda", 0.5, 8)
    assert worker_layout({"CPU": 16, "GPU": 4}, "cpu", options, threads=4) == ("cpu", 0.0, 4)
    assert worker_layout({"CPU": 2}, "auto", RayOptions(workers=2), threads=2) == ("cpu", 0.0, 2)
    with pytest.raises(ValueError, match="--device cuda, but the Ray workers get no GPU"):
        worker_layout({"CPU": 2}, "cuda", options, threads=2)
    with pytest.raises(ValueError, match="3 Ray workers need 3 CPUs, but the cluster has 2"):
        worker_layout({"CPU": 2}, "cpu", RayOptions(workers=3), threads=1)
    with pytest.raises(ValueError, match="each Ray worker would take 2 GPUs, but the cluster has 1"):
        worker_layout({"CPU": 8, "GPU": 1}, "auto", RayOptions(gpus_per_worker=2), threads=1)


def test_ray_is_imported_only_when_the_ray_executor_is_chosen() -> None:
    check = "import sys, app.commands, pipelines.batch; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "False"


def test_a_sweep_on_two_actors_matches_the_local_executor_and_survives_a_killed_actor(
    ray_cluster: None, storage: Storage
) -> None:
    local = open_executor(storage, "local", device="cpu")
    local_outcomes = [handle.wait() for handle in submit_batch(local, request(), SWEEP).handles]
    local.shutdown()

    executor = RayExecutor(storage, RayOptions(workers=2), device="cpu")
    killer = KillOnStart(executor, nth=3)
    executor.add_listener(killer)
    try:
        submission = submit_batch(executor, request(), SWEEP)
        outcomes = [handle.wait(timeout=600) for handle in submission.handles]
        attempts = {handle.run_id: list(handle.workers) for handle in submission.handles}
    finally:
        executor.shutdown()

    assert [o.status for o in outcomes] == [RunStatus.SUCCEEDED] * 8
    rows = storage.list_runs(batch_id=submission.batch_id)
    assert sorted((r.batch_index, r.status) for r in rows) == [(i, RunStatus.SUCCEEDED) for i in range(8)]
    assert all(r.device == "cpu" and r.environment["device"] == "cpu" for r in rows)
    for index, (ray_outcome, local_outcome) in enumerate(zip(outcomes, local_outcomes)):
        ray_images, local_images = pixels(storage, ray_outcome), pixels(storage, local_outcome)
        assert len(ray_images) == len(local_images) == 1
        assert np.array_equal(ray_images[0], local_images[0]), f"job {index + 1} differs from the local run"

    assert killer.killed is not None
    killed_run, killed_pid = killer.killed
    tried_on = [info.pid for info in attempts[killed_run]]
    assert tried_on[0] == killed_pid and len(tried_on) == 2 and tried_on[1] != killed_pid
    assert len(storage.list_artifacts(killed_run)) == 1  # the lost attempt left no row behind


def test_a_job_whose_worker_dies_on_its_last_attempt_fails_with_the_reason(ray_cluster: None, storage: Storage) -> None:
    executor = RayExecutor(storage, RayOptions(workers=1, max_attempts=1), device="cpu")
    killer = KillOnStart(executor, nth=1)
    executor.add_listener(killer)
    try:
        submission = submit_batch(executor, request(), SWEEP[:2])
        first, second = [handle.wait(timeout=600) for handle in submission.handles]
    finally:
        executor.shutdown()
    assert killer.killed is not None and killer.killed[0] == first.run_id
    assert first.status == RunStatus.FAILED
    message = storage.get_run(first.run_id).error["message"]  # type: ignore[index]
    assert f"Ray worker 0 (pid {killer.killed[1]} on" in message and "died running it" in message
    assert "tried 1 times" in message
    assert second.status == RunStatus.SUCCEEDED  # on the actor Ray restarted
    assert storage.list_artifacts(first.run_id) == []


def test_the_cli_runs_a_sweep_on_ray_against_postgresql(
    ray_cluster: None,
    home: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FLOWCANVAS_DATABASE_URL", postgres_url)
    code = main(
        [
            "run",
            str(TXT2IMG),
            "--sweep",
            "Seed=1,2",
            "--set",
            "Steps=2",
            "--device",
            "cpu",
            "--executor",
            "ray",
            "--ray-workers",
            "2",
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["ok"], summary
    assert [run["status"] for run in summary["runs"]] == ["succeeded", "succeeded"]
    assert all(Path(path).is_file() for run in summary["runs"] for path in run["outputs"])
    assert ray.is_initialized()  # the CLI joined the running instance and left it running
    reopened = open_storage(home, postgres_url)
    try:
        rows = reopened.list_runs(batch_id=summary["batch_id"])
        assert sorted(r.status for r in rows) == [RunStatus.SUCCEEDED] * 2
    finally:
        reopened.close()


def test_ray_flags_need_the_ray_executor(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(TXT2IMG), "--ray-workers", "2", "--device", "cpu"])
    assert code == 2
    assert "--ray-workers only apply with --executor ray" in capsys.readouterr().err

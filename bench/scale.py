"""Throughput of one sweep on the local executor vs the Ray executor with 1 and 2 actors, side by side.

    python bench/scale.py [--jobs 16] [--steps 8] [--cpus N]

Each executor first runs one warm-up job per worker (Ray: actors start and load the model; local: the
model loads), then the timed sweep; throughput is images per second of the timed sweep, and start-up is
reported apart. Ray's actors run as many torch threads as a local run (same bits), unless `--threads`
says otherwise: a second table row per actor count shows one thread per actor (packs actors onto cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray

from pipelines.batch import BatchExecutor, open_executor, submit_batch
from pipelines.jobs import RunRequest
from pipelines.ray_options import RayOptions
from pipelines.workflow import load_workflow
from storage import RunStatus, open_storage

TEMPLATE = Path(__file__).resolve().parent.parent / "pipelines" / "templates" / "txt2img-embedded.json"


def measure(
    executor: BatchExecutor, request: RunRequest, jobs: list[dict[str, int]], warm_up: int
) -> tuple[float, float]:
    """(start-up seconds, images per second of the sweep)."""
    started = time.perf_counter()
    executor.start()
    for handle in submit_batch(executor, request, [{**jobs[0], "Seed": 10_000 + i} for i in range(warm_up)]).handles:
        handle.wait()
    ready = time.perf_counter()
    outcomes = [handle.wait() for handle in submit_batch(executor, request, jobs).handles]
    finished = time.perf_counter()
    if any(outcome.status != RunStatus.SUCCEEDED for outcome in outcomes):
        raise SystemExit(f"a run did not succeed: {[outcome.error for outcome in outcomes if outcome.error]}")
    return ready - started, len(jobs) / (finished - ready)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16, help="sweep size (seeds 1..N)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=None, help="CPUs the local Ray instance offers (default: all)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="flowcanvas-scale-") as folder:
        storage = open_storage(Path(folder))
        request = RunRequest(workflow=load_workflow(TEMPLATE), device="cpu")
        jobs = [{"Seed": seed, "Steps": args.steps} for seed in range(1, args.jobs + 1)]
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        rows: list[tuple[str, float, float]] = []
        local = open_executor(storage, "local", device="cpu")
        rows.append(("local executor", *measure(local, request, jobs, warm_up=1)))
        local.shutdown()
        for workers, threads in ((1, None), (2, None), (2, 1)):
            executor = open_executor(
                storage, "ray", device="cpu", ray=RayOptions(workers=workers, threads_per_worker=threads)
            )
            label = f"ray, {workers} actor{'s' if workers > 1 else ''}" + (
                f", {threads} thread each" if threads else ""
            )
            rows.append((label, *measure(executor, request, jobs, warm_up=workers)))
            executor.shutdown()
        ray.shutdown()
        storage.close()

    base = rows[0][2]
    print(f"{args.jobs}-image sweep, txt2img-embedded at {args.steps} steps, 64x64, CPU:")
    print(f"  {'executor':<34} {'start-up':>9} {'images/s':>9} {'vs local':>9}")
    for label, startup, rate in rows:
        print(f"  {label:<34} {startup:8.1f}s {rate:9.2f} {rate / base:8.2f}x")


if __name__ == "__main__":
    main()

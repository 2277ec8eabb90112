"""How `--executor ray` lays out its workers: the options, importable without Ray installed.

They live apart from pipelines.ray_executor (the only module that imports ray) so the CLI can build them and
pipelines.batch.open_executor can pass them on whether or not Ray is installed, and neither module imports
the other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RayOptions(BaseModel):
    """How `--executor ray` lays out its workers (one model-holding actor per GPU, or per CPU without GPUs)."""

    model_config = ConfigDict(frozen=True)

    address: str | None = None  # None: start a Ray instance on this machine; "auto" or HOST:PORT: join a cluster
    workers: int | None = Field(None, ge=1)  # None: as many as the cluster's GPUs (or CPUs) allow
    gpus_per_worker: float | None = Field(None, ge=0)  # None: 1 when the cluster has GPUs, else 0 (CPU actors)
    # Torch threads per actor. None: as many as a local run here uses, since CPU results depend on the thread
    # count (same bits as the local executor); fewer threads per actor pack more actors onto a node's cores.
    threads_per_worker: int | None = Field(None, ge=1)
    max_attempts: int = Field(3, ge=1)  # tries per job whose worker dies, and restarts per dead worker
    start_timeout_s: float = Field(300.0, gt=0)  # for a worker to start (Ray may be waiting for a free CPU/GPU)

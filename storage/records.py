"""Immutable records the storage layer returns (never ORM objects, so no session leaks out)."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


UNFINISHED_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class WorkflowRecord(Record):
    id: str
    name: str
    description: str
    tags: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    current_version: int


class WorkflowVersionRecord(Record):
    workflow_id: str
    version: int
    document: str
    sha256: str
    message: str
    created_at: datetime


class RunRecord(Record):
    id: str
    workflow_id: str | None
    workflow_version: int | None
    workflow: str
    overrides: dict[str, Any]
    target_node: str | None
    status: RunStatus
    device: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    node_timings: dict[str, float]
    error: dict[str, Any] | None
    environment: dict[str, Any]
    seeds: dict[str, Any]
    model_hashes: dict[str, str]
    owner_pid: int | None
    owner_host: str | None
    owner_token: str | None
    batch_id: str | None
    batch_index: int | None


# Artifact kinds that are pictures: SaveImage's exported images and PreviewImage's previews. Every view that
# shows a run's images (canvas, run page, library thumbnails) shows these; only "image" is exported as a file.
IMAGE_KINDS = ("image", "preview")


class ArtifactRecord(Record):
    id: int
    run_id: str
    node_id: str
    kind: str
    path: str
    sha256: str
    size: int
    meta: dict[str, Any]
    created_at: datetime


class BatchRecord(Record):
    id: str
    spec: dict[str, Any]
    total: int
    created_at: datetime


class NewArtifact(Record):
    """An artifact to index with a finished run; `path`, `sha256`, `size` come from ArtifactStore.put_bytes."""

    node_id: str
    kind: str
    path: str
    sha256: str
    size: int
    meta: dict[str, Any] = {}

"""FlowCanvas storage: the database of workflows, runs and artifacts, and the artifact files.

Everything else imports from here; only dicts, strings and bytes cross this boundary.
"""

from storage.artifacts import ArtifactStore, StoredFile
from storage.errors import Ambiguous, NotFound, StorageError, VersionConflict
from storage.limits import InvalidValue
from storage.records import (
    IMAGE_KINDS,
    ArtifactRecord,
    BatchRecord,
    NewArtifact,
    RunRecord,
    RunStatus,
    WorkflowRecord,
    WorkflowVersionRecord,
)
from storage.repository import Storage, open_storage

__all__ = [
    "IMAGE_KINDS",
    "Ambiguous",
    "ArtifactRecord",
    "ArtifactStore",
    "BatchRecord",
    "InvalidValue",
    "NewArtifact",
    "NotFound",
    "RunRecord",
    "RunStatus",
    "Storage",
    "StorageError",
    "StoredFile",
    "VersionConflict",
    "WorkflowRecord",
    "WorkflowVersionRecord",
    "open_storage",
]

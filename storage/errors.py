"""Errors raised by the storage layer; messages say what was looked for."""


class StorageError(Exception):
    """Base class of every storage error."""


class NotFound(StorageError, LookupError):
    """Nothing matched the id, prefix or name asked for."""


class Ambiguous(StorageError):
    """A prefix or name matched more than one record; `candidates` lists their ids."""

    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


class VersionConflict(StorageError):
    """A save expected a workflow version that is no longer current (someone else saved first)."""

    def __init__(self, message: str, current_version: int) -> None:
        super().__init__(message)
        self.current_version = current_version

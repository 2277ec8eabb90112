"""Content-addressed file store for run outputs (images, previews, grids); the database indexes it."""

import hashlib
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class StoredFile(BaseModel):
    """A file in the store: `path` is relative to the store root, in POSIX form."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    size: int


class ArtifactStore:
    """Files kept at `<root>/<sha[:2]>/<sha>.<suffix>`, written atomically and never rewritten."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def put_bytes(self, data: bytes, suffix: str) -> StoredFile:
        if not (suffix.isascii() and suffix.isalnum()):
            raise ValueError(f"artifact suffix must be ASCII letters and digits, got {suffix!r}")
        sha256 = hashlib.sha256(data).hexdigest()
        relative = f"{sha256[:2]}/{sha256}.{suffix}"
        final_path = self.root / relative
        if not final_path.exists():
            final_path.parent.mkdir(parents=True, exist_ok=True)
            # A temp file in the same folder, then an atomic rename: readers see all of the file or none.
            handle, temp_name = tempfile.mkstemp(dir=final_path.parent, prefix=".tmp-", suffix=f".{suffix}")
            try:
                with os.fdopen(handle, "wb") as temp_file:
                    temp_file.write(data)
                    temp_file.flush()
                    os.fsync(temp_file.fileno())
                os.replace(temp_name, final_path)
            except BaseException:
                Path(temp_name).unlink(missing_ok=True)
                raise
        return StoredFile(path=relative, sha256=sha256, size=len(data))

    def absolute(self, path: str) -> Path:
        """The absolute location of a stored `path`; refuses anything that would leave the root."""
        resolved = (self.root / path).resolve()
        if not resolved.is_relative_to(self.root) or resolved == self.root:
            raise ValueError(f"artifact path {path!r} is outside the artifact root {self.root}")
        return resolved

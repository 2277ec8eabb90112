"""What a run may read: file paths and model sources named by params, confined for browser and API runs.

A param that names something on disk says so in its spec (`json_schema_extra={"reads": ...}`):

- "file" or "folder": a path; confined runs accept it only inside their allowed folders;
- "model": a model source (`embedded:NAME`, a folder, a .safetensors file or a hub id); confined runs accept
  the embedded models, paths inside the allowed folders, and the sources an administrator configured in
  `FLOWCANVAS_MODEL_SOURCES` (comma-separated), so a request cannot make the server read or download others.

The local CLI runs unconfined: it may read any path its user names. A relative path is read from the working
directory or, failing that, from the installation (INSTALL_ROOT), where the starter templates' example images
live: a starter opens and runs from any directory. Validation checks literal values before
anything runs (pipelines.validate); NodeContext.resolve_path checks again at run time, for values that arrive
through links.

Derived, re-computable files (model hashes, BOSS cost matrices, preview fits) go to a cache folder the run
names (NodeContext.cache_root), one sub-folder per kind: `cache_folder`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Literal

Reads = Literal["file", "folder", "model"]
EMBEDDED_PREFIX = "embedded:"
MODEL_SOURCES_VARIABLE = "FLOWCANVAS_MODEL_SOURCES"


# The installation's own folder: starter templates name their example images relative to it
# ("pipelines/templates/images/red-circle-on-blue.png").
INSTALL_ROOT = Path(__file__).resolve().parents[1]


def confined_path(raw: str, roots: Sequence[Path]) -> Path | None:
    """Where `raw` points if that is inside one of `roots`, else None.

    A relative path is tried against each root, then the working directory, then INSTALL_ROOT; the first
    candidate that exists inside a root wins, else the first inside one. Symlinks and `..` are resolved before
    the check, so neither can leave a root."""
    path = Path(raw).expanduser()
    bases = [Path()] if path.is_absolute() else [*roots, Path.cwd(), INSTALL_ROOT]
    resolved_roots = [root.resolve() for root in roots]
    candidates = [(base / path).resolve() for base in bases]
    inside = [candidate for candidate in candidates if any(candidate.is_relative_to(root) for root in resolved_roots)]
    return next((candidate for candidate in inside if candidate.exists()), inside[0] if inside else None)


def unconfined_path(raw: str) -> Path:
    """Where `raw` points for a run that may read anywhere: relative to the working directory if something is
    there, else to INSTALL_ROOT if something is there, else (to be reported missing) the working directory."""
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path.resolve()
    candidates = [(base / path).resolve() for base in (Path.cwd(), INSTALL_ROOT)]
    return next((candidate for candidate in candidates if candidate.exists()), candidates[0])


def model_source_allowed(source: str, roots: Sequence[Path], configured: Collection[str] = ()) -> bool:
    """Whether a confined run may load `source`: an embedded model, a source the administrator configured
    (`configured`, from FLOWCANVAS_MODEL_SOURCES: the caller reads the settings, nodes read no environment), or an
    existing folder or file inside `roots` (a hub id is neither, unless configured: it could make the server
    download)."""
    if source.startswith(EMBEDDED_PREFIX) or source in configured:
        return True
    path = Path(source).expanduser().resolve()  # as the loader reads it: relative to the working directory
    return path.exists() and any(path.is_relative_to(root.resolve()) for root in roots)


def refusal(raw: str, reads: Reads) -> tuple[str, str]:
    """The message and hint for a value a confined run may not read."""
    if reads == "model":
        return (
            f"model source {raw!r} is not one this server offers",
            f"use an embedded model (embedded:shapes), a folder inside the data folder, or ask the administrator "
            f"to add it to {MODEL_SOURCES_VARIABLE}",
        )
    return (
        f"path {raw!r} is outside the folders this run may read",
        "upload the file (it goes into the data folder) and use the name it gets",
    )


def cache_folder(root: Path, name: str) -> Path:
    """`root/name`, created if missing: the folder for one kind of derived, re-computable file."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder

"""Where FlowCanvas keeps its data: the home folder and the database URL, from the environment."""

import os
from pathlib import Path


def data_home() -> Path:
    """The data folder: `FLOWCANVAS_HOME`, or `./data` under the current working directory."""
    return Path(os.environ.get("FLOWCANVAS_HOME", "data")).expanduser().resolve()


def artifact_root(home: Path) -> Path:
    """`FLOWCANVAS_ARTIFACTS` (a shared filesystem, for a cluster), or `artifacts/` inside `home`."""
    configured = os.environ.get("FLOWCANVAS_ARTIFACTS")
    return Path(configured).expanduser().resolve() if configured else home / "artifacts"


def database_url(home: Path) -> str:
    """`FLOWCANVAS_DATABASE_URL`, or a SQLite file inside `home`."""
    configured = os.environ.get("FLOWCANVAS_DATABASE_URL")
    if configured:
        return configured
    return f"sqlite:///{(home / 'flowcanvas.db').as_posix()}"

"""FlowCanvas's settings from the environment (every `FLOWCANVAS_*` variable), and where it keeps its data.

This is the bottom layer, so storage, nodes, pipelines and app may all read settings from here. `read_settings()`
reads the environment each time it is called, never once at import: a changed variable (a test's monkeypatch,
a Ray actor's runtime_env) is seen by the next caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every FLOWCANVAS_* environment variable, typed; unset or empty ones take their defaults."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore")

    # The data folder (database, artifacts, uploads, caches), relative to the working directory.
    home: Path = Field(Path("data"), validation_alias="FLOWCANVAS_HOME")
    # Any SQLAlchemy URL (PostgreSQL for a cluster); None: a SQLite file inside `home`.
    database_url: str | None = Field(None, validation_alias="FLOWCANVAS_DATABASE_URL")
    # The artifact folder (a shared filesystem, for a cluster); None: `artifacts/` inside `home`.
    artifacts: Path | None = Field(None, validation_alias="FLOWCANVAS_ARTIFACTS")
    # Model sources a confined run may load besides the embedded ones (comma-separated: folders, files, hub ids).
    model_sources: Annotated[frozenset[str], NoDecode] = Field(frozenset(), validation_alias="FLOWCANVAS_MODEL_SOURCES")
    # The model manager's memory budget, in GiB, before least recently used models are freed.
    model_memory_gb: float = Field(16.0, validation_alias="FLOWCANVAS_MODEL_MEMORY_GB")
    # The most nodes a workflow may flatten to, and the deepest its subgraphs may nest; checked before expanding.
    max_nodes: int = Field(5000, ge=1, validation_alias="FLOWCANVAS_MAX_NODES")
    max_subgraph_depth: int = Field(16, ge=1, le=200, validation_alias="FLOWCANVAS_MAX_SUBGRAPH_DEPTH")
    # Seconds without a heartbeat after which a process's unfinished runs are marked interrupted.
    run_lease_seconds: float = Field(60.0, ge=1, validation_alias="FLOWCANVAS_RUN_LEASE_SECONDS")

    @field_validator("database_url", "artifacts", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("model_sources", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(source.strip() for source in value.split(",") if source.strip())
        return value


def read_settings() -> Settings:
    """The settings as the environment has them now."""
    return Settings()


def data_home() -> Path:
    """`FLOWCANVAS_HOME`, or `./data` under the current working directory."""
    return read_settings().home.expanduser().resolve()


def artifact_root(home: Path) -> Path:
    """`FLOWCANVAS_ARTIFACTS` (a shared filesystem, for a cluster), or `artifacts/` inside `home`."""
    configured = read_settings().artifacts
    return configured.expanduser().resolve() if configured is not None else home / "artifacts"


def database_url(home: Path) -> str:
    """`FLOWCANVAS_DATABASE_URL`, or a SQLite file inside `home`."""
    configured = read_settings().database_url
    if configured:
        return configured
    return f"sqlite:///{(home / 'flowcanvas.db').as_posix()}"

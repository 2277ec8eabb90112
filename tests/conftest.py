"""Shared fixtures: an isolated data folder per test, storage in it, and the test node types."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

import tests.support_nodes  # noqa: F401  (registers the Test* node types)
from pipelines.jobs import WorkerPool
from storage import Storage, open_storage
from tests.support_nodes import EXECUTIONS

E2E_DIR = Path(__file__).resolve().parent / "e2e"


PROPERTY_EXAMPLES = 300
ADVERSARIAL_EXAMPLES = 10 * PROPERTY_EXAMPLES


def pytest_configure(config: pytest.Config) -> None:
    """Property tests take their example count from the hypothesis profile: ten times more when the adversarial
    suite is what was asked for (`-m adversarial`)."""
    settings.register_profile("flowcanvas", max_examples=PROPERTY_EXAMPLES)
    settings.register_profile("adversarial", max_examples=ADVERSARIAL_EXAMPLES)
    expression = config.option.markexpr or ""
    asked = "adversarial" in expression.split() and "not adversarial" not in expression
    settings.load_profile("adversarial" if asked else "flowcanvas")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/e2e/ drive Chromium against a live app: marked `e2e`, so `-m "not e2e"` runs the fast
    suites alone."""
    for item in items:
        if E2E_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("FLOWCANVAS_HOME", str(data))
    monkeypatch.delenv("FLOWCANVAS_DATABASE_URL", raising=False)
    return data


@pytest.fixture
def storage(home: Path) -> Iterator[Storage]:
    opened = open_storage(home)
    yield opened
    opened.close()


@pytest.fixture
def pool(storage: Storage) -> Iterator[WorkerPool]:
    workers = WorkerPool(storage)
    yield workers
    workers.shutdown()


@pytest.fixture(autouse=True)
def reset_executions() -> None:
    EXECUTIONS.clear()


def workflow_dict(nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A workflow document around `nodes` (node entries as dicts)."""
    return {"format": "flowcanvas.workflow", "version": 1, "name": "test", "nodes": nodes, **extra}


def link(node: str, output: str = "value") -> dict[str, str]:
    return {"node": node, "output": output}


@contextmanager
def running_app(home: Path, **launch: Any) -> Iterator[tuple[str, Storage]]:
    """The browser app (canvas and HTTP API) on its own data folder and worker pool, served on a free loopback
    port: yields (url, storage)."""
    from app.ui.app import build_app
    from app.ui.uploads import upload_limits

    storage = open_storage(home)
    pool = WorkerPool(storage)
    demo = build_app(storage=storage, pool=pool)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = {**upload_limits(), **launch}
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **options)
    try:
        yield f"http://127.0.0.1:{port}/", storage
    finally:
        demo.close()
        pool.shutdown()
        storage.close()


POSTGRES_SERVER_ENV = "FLOWCANVAS_TEST_POSTGRES_URL"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database on the test server (tests/run.sh starts one and sets
    FLOWCANVAS_TEST_POSTGRES_URL), dropped afterwards. Skipped without a server, except in CI."""
    import os
    import secrets

    from sqlalchemy import create_engine, make_url
    from sqlalchemy.pool import NullPool

    server = os.environ.get(POSTGRES_SERVER_ENV)
    if not server:
        if os.environ.get("CI"):
            pytest.fail(f"{POSTGRES_SERVER_ENV} is not set: in CI, tests/run.sh starts PostgreSQL and sets it")
        pytest.skip(f"no PostgreSQL server: run through tests/run.sh, or set {POSTGRES_SERVER_ENV} to a server URL")
    name = f"flowcanvas_test_{secrets.token_hex(6)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_backend_url(request: pytest.FixtureRequest, home: Path) -> str:
    """The database URL of one backend: the SQLite file in `home`, or a fresh PostgreSQL database."""
    from storage.config import database_url

    if request.param == "sqlite":
        return database_url(home)
    return str(request.getfixturevalue("postgres_url"))

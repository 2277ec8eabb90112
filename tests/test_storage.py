"""Specification of the storage layer: migrations, workflows and versions, runs, artifacts, batches.

Tests taking `engine` or `storage` run against SQLite and PostgreSQL alike (`database_backend_url`);
those about SQLite's own set-up (WAL, write locks, file backups) take `sqlite_engine` or `sqlite_storage`."""

import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, event, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from storage import (
    Ambiguous,
    ArtifactStore,
    InvalidValue,
    NewArtifact,
    NotFound,
    RunStatus,
    Storage,
    StorageError,
    VersionConflict,
    open_storage,
)
from storage.config import artifact_root, data_home, database_url
from storage.db import current_revision, downgrade, head_revision, make_engine, migrate, upgrade
from storage.models import Base, RunOwner, utc_now

DOCUMENT_V1 = '{"nodes": {"1": {"type": "Seed", "inputs": {"seed": 1}}}}'
DOCUMENT_V2 = '{"nodes": {"1": {"type": "Seed", "inputs": {"seed": 2}}}}'


@pytest.fixture
def engine(database_backend_url: str) -> Iterator[Engine]:
    made = make_engine(database_backend_url)
    yield made
    made.dispose()


@pytest.fixture
def storage(home: Path, database_backend_url: str) -> Iterator[Storage]:
    opened = open_storage(home, database_backend_url)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_engine(home: Path) -> Iterator[Engine]:
    made = make_engine(database_url(home))
    yield made
    made.dispose()


@pytest.fixture
def sqlite_storage(home: Path) -> Iterator[Storage]:
    opened = open_storage(home)
    yield opened
    opened.close()


def url_of(storage: Storage) -> str:
    return storage.engine.url.render_as_string(hide_password=False)


def insert_version_0001_rows(engine: Engine) -> None:
    """One workflow, version, run and artifact, written the way revision 0001 stores them."""
    now = "2025-01-01 12:00:00.000000"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO workflows (id, name, description, tags, created_at, updated_at, current_version) "
                "VALUES ('aaaa00000001', 'old', '', '[\"legacy\"]', :now, :now, 1)"
            ),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO workflow_versions (workflow_id, version, document, sha256, message, created_at) "
                "VALUES ('aaaa00000001', 1, :document, 'x', '', :now)"
            ),
            {"document": DOCUMENT_V1, "now": now},
        )
        connection.execute(
            text(
                "INSERT INTO runs (id, workflow_id, workflow_version, workflow, overrides, status, device, "
                "created_at, node_timings, environment, seeds, model_hashes) "
                "VALUES ('bbbb00000001', 'aaaa00000001', 1, :document, '{}', 'succeeded', 'cpu', :now, "
                "'{\"1\": 0.5}', '{}', '{}', '{}')"
            ),
            {"document": DOCUMENT_V1, "now": now},
        )
        connection.execute(
            text(
                "INSERT INTO artifacts (run_id, node_id, kind, path, sha256, size, metadata, created_at) "
                "VALUES ('bbbb00000001', '1', 'image', 'ab/abc.png', 'abc', 3, '{}', :now)"
            ),
            {"now": now},
        )


def backups(home: Path) -> list[Path]:
    return sorted((home / "backups").glob("*.db")) if (home / "backups").exists() else []


# Configuration


def test_data_home_defaults_to_data_under_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWCANVAS_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert data_home() == (tmp_path / "data").resolve()


def test_environment_sets_home_and_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWCANVAS_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("FLOWCANVAS_DATABASE_URL", raising=False)
    assert data_home() == (tmp_path / "elsewhere").resolve()
    assert database_url(data_home()) == f"sqlite:///{(tmp_path / 'elsewhere' / 'flowcanvas.db').as_posix()}"
    monkeypatch.setenv("FLOWCANVAS_DATABASE_URL", "postgresql+psycopg://db/flowcanvas")
    assert database_url(data_home()) == "postgresql+psycopg://db/flowcanvas"


def test_the_artifact_store_defaults_to_the_home_and_can_be_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWCANVAS_ARTIFACTS", raising=False)
    assert artifact_root(tmp_path / "home") == tmp_path / "home" / "artifacts"
    monkeypatch.setenv("FLOWCANVAS_ARTIFACTS", str(tmp_path / "shared" / "artifacts"))
    assert artifact_root(tmp_path / "home") == (tmp_path / "shared" / "artifacts").resolve()
    opened = open_storage(tmp_path / "home")
    try:
        stored = opened.artifacts.put_bytes(b"image", "png")
        assert (tmp_path / "shared" / "artifacts" / stored.path).read_bytes() == b"image"
    finally:
        opened.close()


def test_storage_imports_no_tensor_library_nor_the_rest_of_flowcanvas() -> None:
    forbidden = ["torch", "numpy", "nodes", "pipelines", "app"]
    check = f"import sys, storage; print(sorted(set({forbidden!r}) & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# Migrations


def test_migrating_an_empty_database_creates_every_table_at_head(engine: Engine, home: Path) -> None:
    migrate(engine, home / "backups")
    tables = set(inspect(engine).get_table_names())
    assert {"workflows", "workflow_versions", "runs", "artifacts", "batches", "run_owners"} <= tables
    assert current_revision(engine) == head_revision() == "0003"
    assert backups(home) == []


def test_orm_models_match_the_head_schema(engine: Engine, home: Path) -> None:
    migrate(engine, home / "backups")
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_upgrading_from_0001_keeps_data_and_adds_batch_columns(engine: Engine, home: Path) -> None:
    upgrade(engine, "0001")
    assert "batch_id" not in {column["name"] for column in inspect(engine).get_columns("runs")}
    insert_version_0001_rows(engine)

    migrate(engine, home / "backups")

    assert current_revision(engine) == "0003"
    assert {"batch_id", "batch_index", "owner_token"} <= {
        column["name"] for column in inspect(engine).get_columns("runs")
    }
    storage = Storage(engine, ArtifactStore(home / "artifacts"), home)
    assert storage.get_workflow("old").tags == ("legacy",)
    assert storage.get_workflow_version("aaaa00000001").document == DOCUMENT_V1
    run = storage.get_run("bbbb00000001")
    assert (run.workflow_id, run.node_timings, run.batch_id, run.owner_token) == (
        "aaaa00000001",
        {"1": 0.5},
        None,
        None,
    )
    # Rebuilding `runs` on SQLite must not cascade-delete the artifacts that reference it.
    assert [artifact.path for artifact in storage.list_artifacts("bbbb00000001")] == ["ab/abc.png"]


def test_downgrading_to_0001_removes_batches_and_keeps_runs(engine: Engine, home: Path) -> None:
    upgrade(engine, "0001")
    insert_version_0001_rows(engine)
    upgrade(engine, "head")
    downgrade(engine, "0001")
    assert not {"batches", "run_owners"} & set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM artifacts")) == 1
        assert connection.scalar(text("SELECT status FROM runs")) == "succeeded"


def test_migrating_an_old_database_backs_it_up_first(sqlite_engine: Engine, home: Path) -> None:
    upgrade(sqlite_engine, "0001")
    insert_version_0001_rows(sqlite_engine)

    backup = migrate(sqlite_engine, home / "backups")

    assert backup is not None and backups(home) == [backup]
    assert backup.name.startswith("flowcanvas-0001-")
    with sqlite3.connect(backup) as copy:
        assert copy.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)
        assert copy.execute("SELECT name FROM workflows").fetchall() == [("old",)]


def test_migrating_a_database_already_at_head_writes_no_backup(engine: Engine, home: Path) -> None:
    migrate(engine, home / "backups")
    assert migrate(engine, home / "backups") is None
    assert backups(home) == []


def test_sqlite_connections_use_wal_and_enforce_foreign_keys(sqlite_storage: Storage) -> None:
    storage = sqlite_storage
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    with pytest.raises(IntegrityError), storage.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO workflow_versions (workflow_id, version, document, sha256, message, created_at) "
                "VALUES ('no-such-workflow', 1, '{}', 'x', '', '2025-01-01 00:00:00')"
            )
        )


def test_writes_take_the_sqlite_write_lock_up_front_and_reads_do_not(sqlite_storage: Storage) -> None:
    storage = sqlite_storage
    begins: list[str] = []

    def record_begin(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("BEGIN"):
            begins.append(statement)

    event.listen(storage.engine, "before_cursor_execute", record_begin)
    workflow = storage.create_workflow("w", DOCUMENT_V1)
    storage.get_workflow(workflow.id)
    assert begins == ["BEGIN IMMEDIATE", "BEGIN"]


# Workflows


def test_a_new_workflow_starts_at_version_one(storage: Storage) -> None:
    workflow = storage.create_workflow("portrait", DOCUMENT_V1, description="faces", tags=["people"], message="first")
    assert (workflow.name, workflow.description, workflow.tags, workflow.current_version) == (
        "portrait",
        "faces",
        ("people",),
        1,
    )
    assert len(workflow.id) == 12 and int(workflow.id, 16) >= 0
    assert workflow.created_at.tzinfo == UTC
    version = storage.get_workflow_version(workflow.id)
    assert (version.version, version.document, version.message) == (1, DOCUMENT_V1, "first")


def test_saving_appends_a_version_and_keeps_the_old_ones(storage: Storage) -> None:
    workflow = storage.create_workflow("w", DOCUMENT_V1)
    saved = storage.save_workflow_version(workflow.id, DOCUMENT_V2, message="seed 2")
    assert saved.current_version == 2 and saved.updated_at > workflow.updated_at
    versions = storage.list_versions(workflow.id)
    assert [(v.version, v.document, v.message) for v in versions] == [(1, DOCUMENT_V1, ""), (2, DOCUMENT_V2, "seed 2")]
    assert versions[0].sha256 != versions[1].sha256 and len(versions[0].sha256) == 64
    assert storage.get_workflow_version(workflow.id, 1).document == DOCUMENT_V1
    with pytest.raises(NotFound, match="no version 9"):
        storage.get_workflow_version(workflow.id, 9)


def test_saving_with_a_stale_expected_version_conflicts_and_saves_nothing(storage: Storage) -> None:
    workflow = storage.create_workflow("w", DOCUMENT_V1)
    storage.save_workflow_version(workflow.id, DOCUMENT_V2, expected_version=1)
    with pytest.raises(VersionConflict, match="at version 2, not the expected 1") as conflict:
        storage.save_workflow_version(workflow.id, "{}", expected_version=1)
    assert conflict.value.current_version == 2
    assert storage.get_workflow(workflow.id).current_version == 2
    assert [v.version for v in storage.list_versions(workflow.id)] == [1, 2]


def test_of_concurrent_saves_expecting_the_same_version_exactly_one_wins(storage: Storage) -> None:
    workflow = storage.create_workflow("w", DOCUMENT_V1)
    start = threading.Barrier(6)
    outcomes: list[str] = []

    def save(index: int) -> None:
        start.wait()
        try:
            storage.save_workflow_version(workflow.id, f'{{"writer": {index}}}', expected_version=1)
            outcomes.append("saved")
        except VersionConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=save, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 5 + ["saved"]
    assert [v.version for v in storage.list_versions(workflow.id)] == [1, 2]


SAVE_IN_ANOTHER_PROCESS = """
import sys
from pathlib import Path
from storage import VersionConflict, open_storage
storage = open_storage(Path(sys.argv[1]), sys.argv[2])
try:
    storage.save_workflow_version(sys.argv[3], sys.argv[4], expected_version=1)
    print("saved")
except VersionConflict as conflict:
    print(f"conflict: {conflict}")
"""


def test_of_two_processes_saving_over_the_same_version_the_second_gets_a_conflict(storage: Storage, home: Path) -> None:
    workflow = storage.create_workflow("shared", DOCUMENT_V1)
    outputs = []
    for document in (DOCUMENT_V2, '{"writer": "second"}'):
        result = subprocess.run(
            [sys.executable, "-c", SAVE_IN_ANOTHER_PROCESS, str(home), url_of(storage), workflow.id, document],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent.parent,
        )
        outputs.append(result.stdout.strip())
    assert outputs[0] == "saved"
    assert outputs[1].startswith(f"conflict: workflow {workflow.id} is at version 2, not the expected 1")
    assert storage.get_workflow_version(workflow.id).document == DOCUMENT_V2  # not overwritten


OPEN_IN_ANOTHER_PROCESS = (
    "import sys; from pathlib import Path; from storage import open_storage; "
    "open_storage(Path(sys.argv[1]), sys.argv[2]).close()"
)


def test_processes_starting_together_on_a_new_database_migrate_it_once(database_backend_url: str, home: Path) -> None:
    opening = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_IN_ANOTHER_PROCESS, str(home), database_backend_url],
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
        )
        for _ in range(3)
    ]
    errors = [process.communicate()[1] for process in opening]
    assert [process.returncode for process in opening] == [0, 0, 0], errors
    engine = make_engine(database_backend_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_restoring_appends_the_old_document_as_a_new_version(storage: Storage) -> None:
    workflow = storage.create_workflow("w", DOCUMENT_V1)
    storage.save_workflow_version(workflow.id, DOCUMENT_V2)
    restored = storage.restore_version(workflow.id, 1)
    assert restored.current_version == 3
    current = storage.get_workflow_version(workflow.id)
    assert (current.version, current.document, current.message) == (3, DOCUMENT_V1, "restored from version 1")
    with pytest.raises(NotFound):
        storage.restore_version(workflow.id, 7)
    assert storage.get_workflow(workflow.id).current_version == 3


def test_duplicating_copies_the_current_version_under_a_new_id(storage: Storage) -> None:
    workflow = storage.create_workflow("w", DOCUMENT_V1, description="d", tags=["t"])
    storage.save_workflow_version(workflow.id, DOCUMENT_V2)
    copy = storage.duplicate_workflow(workflow.id, "w copy")
    assert copy.id != workflow.id
    assert (copy.name, copy.description, copy.tags, copy.current_version) == ("w copy", "d", ("t",), 1)
    assert storage.get_workflow_version(copy.id).document == DOCUMENT_V2


def test_updating_meta_changes_only_what_is_given(storage: Storage) -> None:
    workflow = storage.create_workflow("w", DOCUMENT_V1, description="keep", tags=["a"])
    updated = storage.update_workflow_meta(workflow.id, name="renamed", tags=["b", "c"])
    assert (updated.name, updated.description, updated.tags, updated.current_version) == (
        "renamed",
        "keep",
        ("b", "c"),
        1,
    )
    with pytest.raises(NotFound):
        storage.update_workflow_meta("000000000000", name="x")


def test_listing_workflows_searches_names_and_descriptions_and_filters_tags(storage: Storage) -> None:
    cat = storage.create_workflow("Cat portrait", "{}", tags=["animals"])
    storage.create_workflow("Landscape", "{}", description="mountains at dusk", tags=["nature"])
    dog = storage.create_workflow("Dog", "{}", description="a PORTRAIT of a dog", tags=["animals"])
    assert [w.id for w in storage.list_workflows(search="portrait")] == [dog.id, cat.id]
    assert [w.name for w in storage.list_workflows(tag="nature")] == ["Landscape"]
    assert [w.id for w in storage.list_workflows(search="portrait", tag="animals")] == [dog.id, cat.id]
    assert storage.list_workflows(search="100%") == []


def test_deleting_a_workflow_removes_its_versions_but_keeps_its_runs(storage: Storage) -> None:
    workflow = storage.create_workflow("w", DOCUMENT_V1)
    run = storage.create_run(
        workflow=DOCUMENT_V1, overrides={}, device="cpu", workflow_id=workflow.id, workflow_version=1
    )
    storage.delete_workflow(workflow.id)
    with pytest.raises(NotFound):
        storage.get_workflow(workflow.id)
    with storage.engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM workflow_versions")) == 0
    kept = storage.get_run(run.id)
    assert (kept.workflow_id, kept.workflow_version, kept.workflow) == (None, 1, DOCUMENT_V1)
    with pytest.raises(NotFound):
        storage.delete_workflow(workflow.id)


def test_workflows_are_found_by_id_prefix_or_name(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = iter(["abcd11111111", "abcd22222222", "ffff00000000"])
    monkeypatch.setattr("storage.repository.new_id", lambda: next(ids))
    first = storage.create_workflow("first", "{}")
    storage.create_workflow("second", "{}")
    storage.create_workflow("first", "{}")

    assert storage.get_workflow("abcd1").id == first.id
    assert storage.get_workflow("second").id == "abcd22222222"
    with pytest.raises(Ambiguous, match="abcd11111111 \\(first\\), abcd22222222 \\(second\\)") as ambiguous:
        storage.get_workflow("abcd")
    assert ambiguous.value.candidates == ["abcd11111111", "abcd22222222"]
    with pytest.raises(Ambiguous):
        storage.get_workflow("first")  # two workflows share that name
    with pytest.raises(NotFound, match="no workflow 'abc' \\(by id, id prefix"):
        storage.get_workflow("abc")  # too short to be a prefix


# Runs


def test_a_run_goes_from_queued_to_running_to_finished_with_its_artifacts(storage: Storage) -> None:
    run = storage.create_run(workflow=DOCUMENT_V1, overrides={"1.seed": 7}, device="cuda:0", target_node="3")
    assert (run.status, run.owner_pid, run.started_at) == (RunStatus.QUEUED, os.getpid(), None)
    storage.mark_run_started(run.id, {"python": "3.11", "torch": "2.5"})
    assert storage.get_run(run.id).status == RunStatus.RUNNING
    stored = storage.artifacts.put_bytes(b"png bytes", "png")
    finished = storage.finish_run(
        run.id,
        RunStatus.SUCCEEDED,
        node_timings={"1": 0.25, "3": 1.5},
        seeds={"1": 7},
        model_hashes={"flux": "abc"},
        artifacts=[NewArtifact(node_id="3", kind="image", **stored.model_dump(), meta={"width": 64})],
    )
    assert (finished.status, finished.error, finished.seeds, finished.environment["torch"]) == (
        RunStatus.SUCCEEDED,
        None,
        {"1": 7},
        "2.5",
    )
    assert finished.finished_at is not None and finished.finished_at >= finished.started_at  # type: ignore[operator]
    [artifact] = storage.list_artifacts(run.id)
    assert (artifact.node_id, artifact.path, artifact.size, artifact.meta) == ("3", stored.path, 9, {"width": 64})
    assert storage.artifacts.absolute(artifact.path).read_bytes() == b"png bytes"
    with pytest.raises(StorageError, match="already finished as succeeded"):
        storage.finish_run(run.id, RunStatus.FAILED, node_timings={})


def test_finishing_a_run_is_all_or_nothing(storage: Storage) -> None:
    run = storage.create_run(workflow="{}", overrides={}, device="cpu")
    storage.mark_run_started(run.id, {})
    good = NewArtifact(node_id="1", kind="image", path="aa/a.png", sha256="a" * 64, size=1)
    # Bypasses validation so the database itself rejects the row (node_id is NOT NULL).
    bad = NewArtifact.model_construct(node_id=None, kind="image", path="bb/b.png", sha256="b" * 64, size=1, meta={})
    with pytest.raises(IntegrityError):
        storage.finish_run(run.id, RunStatus.SUCCEEDED, node_timings={"1": 1.0}, artifacts=[good, bad])
    unchanged = storage.get_run(run.id)
    assert (unchanged.status, unchanged.finished_at, unchanged.node_timings) == (RunStatus.RUNNING, None, {})
    assert storage.list_artifacts(run.id) == []


def test_a_failed_run_keeps_its_error(storage: Storage) -> None:
    run = storage.create_run(workflow="{}", overrides={}, device="cpu")
    error = {"node": "4", "node_type": "VAEDecode", "message": "out of memory"}
    failed = storage.finish_run(run.id, RunStatus.FAILED, node_timings={"1": 0.1}, error=error)
    assert (failed.status, failed.error) == (RunStatus.FAILED, error)
    with pytest.raises(StorageError, match="is failed, so it cannot start"):
        storage.mark_run_started(run.id, {})
    with pytest.raises(ValueError):
        storage.finish_run(run.id, RunStatus.RUNNING, node_timings={})


def test_a_run_whose_worker_died_is_requeued_unless_it_had_finished(storage: Storage) -> None:
    run = storage.create_run(workflow="{}", overrides={}, device="cpu")
    assert storage.requeue_run(run.id).status == RunStatus.QUEUED
    storage.mark_run_started(run.id, {"python": "3.11"})
    requeued = storage.requeue_run(run.id)
    assert (requeued.status, requeued.started_at) == (RunStatus.QUEUED, None)
    storage.mark_run_started(run.id, {})  # another worker starts it afresh
    storage.finish_run(run.id, RunStatus.SUCCEEDED, node_timings={"1": 0.1})
    assert storage.requeue_run(run.id).status == RunStatus.SUCCEEDED
    with pytest.raises(NotFound):
        storage.requeue_run("000000000000")


def test_runs_are_found_by_id_prefix_and_listed_newest_first(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = iter(["beef00000001", "beef00000002", "cafe00000003"])
    monkeypatch.setattr("storage.repository.new_id", lambda: next(ids))
    for _ in range(3):
        storage.create_run(workflow="{}", overrides={}, device="cpu")
    assert storage.get_run("cafe").id == "cafe00000003"
    with pytest.raises(Ambiguous, match="beef00000001, beef00000002"):
        storage.get_run("beef")
    with pytest.raises(NotFound, match="no run 'bee'"):
        storage.get_run("bee")
    assert [run.id for run in storage.list_runs()] == ["cafe00000003", "beef00000002", "beef00000001"]
    assert [run.id for run in storage.list_runs(limit=1)] == ["cafe00000003"]
    storage.finish_run("beef00000001", RunStatus.CANCELLED, node_timings={})
    assert [run.id for run in storage.list_runs(status=RunStatus.CANCELLED)] == ["beef00000001"]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def set_owner(storage: Storage, run_id: str, pid: int | None, host: str | None = None) -> None:
    """Make `run_id` a run from before leases: owned by `pid` on `host` (default: this host), with no token."""
    with storage.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE runs SET owner_pid = :pid, owner_host = coalesce(:host, owner_host), owner_token = NULL "
                "WHERE id = :id"
            ),
            {"pid": pid, "host": host, "id": run_id},
        )


def set_lease(storage: Storage, run_id: str, *, pid: int, host: str, heartbeat_age_s: float) -> str:
    """Give `run_id` to another process's lease: `pid` on `host`, its last heartbeat `heartbeat_age_s` ago."""
    token = f"other{run_id}"[:32]
    beat = utc_now() - timedelta(seconds=heartbeat_age_s)
    with storage.engine.begin() as connection:
        connection.execute(insert(RunOwner).values(token=token, host=host, pid=pid, started_at=beat, heartbeat_at=beat))
        connection.execute(
            text("UPDATE runs SET owner_pid = :pid, owner_host = :host, owner_token = :token WHERE id = :id"),
            {"pid": pid, "host": host, "token": token, "id": run_id},
        )
    return token


def test_runs_from_before_leases_of_a_stopped_process_are_marked_interrupted(storage: Storage) -> None:
    orphan = storage.create_run(workflow="{}", overrides={}, device="cpu")
    storage.mark_run_started(orphan.id, {})
    set_owner(storage, orphan.id, dead_pid())
    ownerless = storage.create_run(workflow="{}", overrides={}, device="cpu")
    set_owner(storage, ownerless.id, None)
    other_host = storage.create_run(workflow="{}", overrides={}, device="cpu")
    set_owner(storage, other_host.id, dead_pid(), host="another-machine")
    mine = storage.create_run(workflow="{}", overrides={}, device="cpu")

    assert storage.mark_interrupted_runs() == sorted([orphan.id, ownerless.id])

    interrupted = storage.get_run(orphan.id)
    assert interrupted.status == RunStatus.INTERRUPTED and interrupted.finished_at is not None
    assert interrupted.error == {"message": "the process running it stopped before it finished"}
    assert storage.get_run(mine.id).status == RunStatus.QUEUED
    assert storage.get_run(other_host.id).status == RunStatus.QUEUED
    assert storage.mark_interrupted_runs() == []


LEASE_CASES = ("lapsed, other host", "lapsed, live pid", "fresh, this pid", "fresh, other host", "mine")


@pytest.mark.adversarial
def test_a_run_whose_owners_lease_lapsed_is_interrupted_whatever_its_pid_or_host(storage: Storage) -> None:
    here, lease = socket.gethostname(), storage.lease_seconds
    runs = {name: storage.create_run(workflow="{}", overrides={}, device="cpu").id for name in LEASE_CASES}
    tokens = {
        # a recreated container: another hostname, and nobody beats for it any more
        "lapsed, other host": set_lease(
            storage, runs["lapsed, other host"], pid=7, host="old-container", heartbeat_age_s=2 * lease
        ),
        # its pid lives (pid 1 always does), yet its lease lapsed
        "lapsed, live pid": set_lease(storage, runs["lapsed, live pid"], pid=1, host=here, heartbeat_age_s=2 * lease),
        # a restarted container's PID 1 is this process's pid, so its previous owner is gone whatever the lease
        "fresh, this pid": set_lease(storage, runs["fresh, this pid"], pid=os.getpid(), host=here, heartbeat_age_s=0),
        # a live worker elsewhere in the cluster
        "fresh, other host": set_lease(
            storage, runs["fresh, other host"], pid=os.getpid(), host="worker-2", heartbeat_age_s=0
        ),
    }
    assert storage.mark_interrupted_runs() == sorted(
        runs[name] for name in ("lapsed, other host", "lapsed, live pid", "fresh, this pid")
    )
    assert storage.get_run(runs["fresh, other host"]).status == RunStatus.QUEUED
    assert storage.get_run(runs["mine"]).owner_token not in tokens.values()
    assert storage.get_run(runs["mine"]).status == RunStatus.QUEUED
    with storage.engine.connect() as connection:  # lapsed leases are forgotten; live ones kept
        owners = set(connection.scalars(select(RunOwner.token)))
    assert tokens["fresh, other host"] in owners and tokens["lapsed, live pid"] not in owners


def test_a_process_with_runs_keeps_its_lease_fresh(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWCANVAS_RUN_LEASE_SECONDS", "1")
    opened = open_storage(home)
    try:
        run = opened.create_run(workflow="{}", overrides={}, device="cpu")
        with opened.engine.connect() as connection:
            first = connection.scalar(select(RunOwner.heartbeat_at).where(RunOwner.token == run.owner_token))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a wait for the beat, not a timing: the test only asserts it came
            time.sleep(0.1)
            with opened.engine.connect() as connection:
                latest = connection.scalar(select(RunOwner.heartbeat_at).where(RunOwner.token == run.owner_token))
            if latest > first:
                break
        assert latest > first
        assert opened.get_run(run.id).status == RunStatus.QUEUED  # its own runs are never lapsed
    finally:
        opened.close()


def test_opening_storage_marks_runs_left_by_a_stopped_process(storage: Storage, home: Path) -> None:
    orphan = storage.create_run(workflow="{}", overrides={}, device="cpu")
    set_owner(storage, orphan.id, dead_pid())
    reopened = open_storage(home, url_of(storage))
    try:
        assert reopened.get_run(orphan.id).status == RunStatus.INTERRUPTED
    finally:
        reopened.close()


# One set of limits for every backend

TOO_LONG = "x" * 256
LIMIT_CASES = {
    "name over 255": ("create", {"name": TOO_LONG}, "name is 256 characters; at most 255 are stored"),
    "NUL in name": ("create", {"name": "a\0b"}, "name contains a NUL character"),
    "lone surrogate in name": ("create", {"name": "a\ud800"}, "name contains a lone surrogate"),
    "description over 100,000": ("create", {"description": "d" * 100_001}, "description is 100,001 characters"),
    "NUL in description": ("create", {"description": "a\0"}, "description contains a NUL character"),
    "tag over 255": ("create", {"tags": ["ok", TOO_LONG]}, "a tag is 256 characters"),
    "lone surrogate in document": ("create", {"document": '{"a": "\udcff"}'}, "the workflow document contains a lone"),
    "NUL in save message": ("save", {"message": "m\0"}, "the save message contains a NUL character"),
    "rename over 255": ("rename", {"name": TOO_LONG}, "name is 256 characters"),
    "target node over 255": ("run", {"target_node": TOO_LONG}, "target node is 256 characters"),
    "device over 64": ("run", {"device": "d" * 65}, "device is 65 characters; at most 64 are stored"),
    "lone surrogate in run workflow": ("run", {"workflow": "\ud83d"}, "the run's workflow contains a lone surrogate"),
}


@pytest.mark.adversarial
@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
def test_text_that_not_every_backend_stores_is_refused_alike_and_nothing_is_written(
    storage: Storage, case: str
) -> None:
    action, values, message = LIMIT_CASES[case]
    existing = storage.create_workflow("kept", DOCUMENT_V1)
    before = (storage.list_workflows(), storage.list_runs(), storage.list_versions(existing.id))
    with pytest.raises(InvalidValue, match=re.escape(message)):
        if action == "create":
            storage.create_workflow(**{"name": "new", "document": DOCUMENT_V1, **values})
        elif action == "save":
            storage.save_workflow_version(existing.id, DOCUMENT_V2, **values)
        elif action == "rename":
            storage.update_workflow_meta(existing.id, **values)
        else:
            storage.create_run(**{"workflow": "{}", "overrides": {}, "device": "cpu", **values})
    assert (storage.list_workflows(), storage.list_runs(), storage.list_versions(existing.id)) == before


def test_text_at_the_limits_is_stored_alike(storage: Storage) -> None:
    kept = storage.create_workflow("n" * 255, DOCUMENT_V1, description="d" * 100_000, tags=["t" * 255, "ünï ✓"])
    assert (len(kept.name), len(kept.description), kept.tags) == (255, 100_000, ("t" * 255, "ünï ✓"))
    run = storage.create_run(workflow="{}", overrides={"Prompt": "a\0b \udcff"}, device="d" * 64, target_node="t" * 255)
    assert storage.get_run(run.id).overrides == {"Prompt": "a\0b \udcff"}, "JSON escapes both, on every backend"


# Batches


def test_batch_runs_are_listed_by_batch(storage: Storage) -> None:
    batch_id = storage.create_batch({"sweep": {"1.seed": [1, 2]}}, total=2)
    runs = [
        storage.create_run(
            workflow="{}", overrides={"1.seed": seed}, device="cpu", batch_id=batch_id, batch_index=index
        )
        for index, seed in enumerate([1, 2])
    ]
    storage.create_run(workflow="{}", overrides={}, device="cpu")
    batch = storage.get_batch(batch_id)
    assert (batch.spec, batch.total) == ({"sweep": {"1.seed": [1, 2]}}, 2)
    listed = storage.list_runs(batch_id=batch_id)
    assert sorted((run.batch_index, run.id) for run in listed) == [(0, runs[0].id), (1, runs[1].id)]
    with pytest.raises(NotFound):
        storage.get_batch("nope")


# Artifact files


def test_artifacts_are_stored_once_by_content_hash(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    first = store.put_bytes(b"image", "png")
    sha = "6105d6cc76af400325e94d588ce511be5bfdbb73b437dc51eca43917d7a43e3d"
    assert (first.path, first.sha256, first.size) == (f"{sha[:2]}/{sha}.png", sha, 5)
    written = store.absolute(first.path).stat().st_mtime_ns
    os.utime(store.absolute(first.path), ns=(1, 1))
    assert store.put_bytes(b"image", "png") == first
    assert store.absolute(first.path).stat().st_mtime_ns == 1 != written  # not rewritten
    assert [p.name for p in (tmp_path / "artifacts" / sha[:2]).iterdir()] == [f"{sha}.png"]


def test_an_interrupted_artifact_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ArtifactStore(tmp_path / "artifacts")

    def crash(_source: object, _destination: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("storage.artifacts.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put_bytes(b"image", "png")
    assert [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()] == []


def test_artifact_paths_cannot_escape_the_root_and_suffixes_are_plain(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    assert store.absolute("ab/abc.png") == (tmp_path / "artifacts" / "ab" / "abc.png").resolve()
    for escaping in ["../secret.txt", "ab/../../secret.txt", "/etc/passwd", ""]:
        with pytest.raises(ValueError, match="outside the artifact root"):
            store.absolute(escaping)
    for suffix in ["", "png/../x", ".png", "tar.gz"]:
        with pytest.raises(ValueError, match="suffix"):
            store.put_bytes(b"x", suffix)

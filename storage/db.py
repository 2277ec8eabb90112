"""Database engine set-up and Alembic migrations (with a SQLite backup before each upgrade)."""

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, make_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Connections carrying this execution option open SQLite transactions with BEGIN IMMEDIATE.
WRITE_OPTION = "flowcanvas_write"
# Key of the PostgreSQL advisory lock that serialises migrations of app processes, CLIs and Ray workers starting together.
MIGRATION_LOCK_KEY = 0x466C6F7743616E76  # "FlowCanv"


def make_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite, with WAL, foreign keys, a busy timeout and real transactions; for a
    server database, with connections checked before use (a restarted server leaves stale ones in the pool)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    engine = create_engine(parsed)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine, "connect")
    def configure_sqlite(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # The sqlite3 module's own transaction handling skips BEGIN before SELECT and DDL;
        # turn it off and emit BEGIN ourselves (begin_sqlite_transaction) so transactions are real.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin_sqlite_transaction(connection: Connection) -> None:
        # A writer takes the write lock up front, so it waits (busy_timeout) instead of failing
        # when another writer commits between its first read and its first write.
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    # Config values go through configparser interpolation, where "%" is special.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration's revision id."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's revision, or None for a database never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    # Batch migrations rebuild a table by DROP + rename; with foreign keys on, dropping `runs`
    # would cascade-delete every artifact. SQLite only honours this pragma outside a transaction,
    # so it goes straight to the driver connection (autocommit) before SQLAlchemy begins one.
    driver_connection = connection.connection.driver_connection
    assert driver_connection is not None
    driver_connection.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        driver_connection.execute("PRAGMA foreign_keys=ON")


def _run_alembic(engine: Engine, action: Callable[[Config, str], None], revision: str) -> None:
    # As a writer: of processes starting together on one SQLite file, the second waits for the first's migration
    # (BEGIN IMMEDIATE), then finds the schema at head, instead of failing halfway through its own.
    with engine.execution_options(**{WRITE_OPTION: True}).connect() as connection:
        is_sqlite = connection.dialect.name == "sqlite"
        with _sqlite_foreign_keys_off(connection) if is_sqlite else nullcontext(), connection.begin():
            if connection.dialect.name == "postgresql":
                # Held until this transaction ends: a second process waits, then finds the schema at head.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            action(_alembic_config(connection), revision)
            if is_sqlite:
                violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if violations:
                    raise RuntimeError(f"migration to {revision} broke foreign keys: {violations}")


def upgrade(engine: Engine, revision: str) -> None:
    """Migrate up to `revision` ("head" for the newest), in one transaction."""
    _run_alembic(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate down to `revision` ("base" for an empty schema), in one transaction."""
    _run_alembic(engine, command.downgrade, revision)


def sqlite_file(engine: Engine) -> Path | None:
    """The database file of a file-backed SQLite engine, else None."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    return Path(database)


def backup_sqlite(engine: Engine, destination: Path) -> None:
    """Copy the database to `destination` with SQLite's backup API (consistent even under WAL)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    raw_connection = engine.raw_connection()
    try:
        source = raw_connection.driver_connection
        assert isinstance(source, sqlite3.Connection)
        target = sqlite3.connect(partial)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        raw_connection.close()
    # Renamed only once complete, so a crash never leaves something that looks like a good backup.
    os.replace(partial, destination)


def migrate(engine: Engine, backup_dir: Path) -> Path | None:
    """Upgrade to head; first back up an existing SQLite database that is behind. Returns the backup."""
    head = head_revision()
    backup: Path | None = None
    database_file = sqlite_file(engine)
    # Checked before connecting, since connecting creates the file.
    if database_file is not None and database_file.exists():
        old_revision = current_revision(engine)
        if old_revision != head:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            backup = backup_dir / f"flowcanvas-{old_revision or 'empty'}-{stamp}.db"
            backup_sqlite(engine, backup)
    upgrade(engine, "head")
    return backup

"""The storage API the rest of FlowCanvas calls: workflows and their versions, runs, artifacts, batches."""

import hashlib
import logging
import os
import socket
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage.artifacts import ArtifactStore
from storage.config import artifact_root, data_home, database_url, read_settings
from storage.db import WRITE_OPTION, make_engine, migrate
from storage.errors import Ambiguous, NotFound, StorageError, VersionConflict
from storage.limits import MAX_DEVICE, MAX_NAME, MAX_TEXT, checked_text
from storage.models import Artifact, Batch, Run, RunOwner, Workflow, WorkflowVersion, new_id, utc_now
from storage.records import (
    IMAGE_KINDS,
    UNFINISHED_STATUSES,
    ArtifactRecord,
    BatchRecord,
    NewArtifact,
    RunRecord,
    RunStatus,
    WorkflowRecord,
    WorkflowVersionRecord,
)

logger = logging.getLogger(__name__)

MIN_PREFIX = 4
INTERRUPTED_MESSAGE = "the process running it stopped before it finished"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _tag_list(tags: Iterable[str]) -> list[str]:
    # A bare string is iterable too; taken as tags it would become one tag per character.
    if isinstance(tags, str):
        raise TypeError(f"tags must be a collection of strings, not the string {tags!r}")
    return [str(tag) for tag in tags]


class _ProcessToken:
    """This process's run-lease token: one per process (every Storage in it shares it), new in a forked child."""

    def __init__(self) -> None:
        self.value = new_id()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.value = new_id()


_PROCESS_TOKEN = _ProcessToken()


def _keep_lease(storage_ref: "weakref.ref[Storage]", closing: threading.Event, interval: float) -> None:
    """Beat every `interval` seconds until the storage is closed or collected."""
    while not closing.wait(interval):
        storage = storage_ref()
        if storage is None:
            return
        try:
            storage._beat()
        except Exception:  # a database briefly away must not end the lease for good: beat again next time
            logger.exception("the run lease heartbeat could not be written; trying again")
        del storage  # hold it only while beating


def _check_workflow_texts(
    *,
    name: str | None = None,
    description: str | None = None,
    tags: list[str] | None = None,
    document: str | None = None,
    message: str | None = None,
) -> None:
    """InvalidValue for the first of a workflow's texts that not every backend would store alike."""
    if name is not None:
        checked_text("name", name, MAX_NAME)
    if description is not None:
        checked_text("description", description, MAX_TEXT)
    for tag in tags or ():
        checked_text("a tag", tag, MAX_NAME)
    if document is not None:
        checked_text("the workflow document", document, None)
    if message is not None:
        checked_text("the save message", message, MAX_TEXT)


def _process_is_alive(pid: int) -> bool:
    if os.name == "nt":
        # os.kill(pid, 0) terminates the process on Windows; without a safe probe, assume it lives.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


class Storage:
    """Database and artifact files of one FlowCanvas home. Methods open and close their own sessions."""

    def __init__(self, engine: Engine, artifacts: ArtifactStore, home: Path) -> None:
        self.engine = engine
        self.artifacts = artifacts
        self.home = home
        self._reading = sessionmaker(engine, expire_on_commit=False)
        self._writing = sessionmaker(engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False)
        self.lease_seconds = read_settings().run_lease_seconds
        self._lease_lock = threading.Lock()
        self._leased_token: str | None = None
        self._heartbeat: threading.Thread | None = None
        self._closing = threading.Event()

    def close(self) -> None:
        self._closing.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join()
        self.engine.dispose()

    # Run leases (docs/architecture.md, "Run leases")

    def _hold_lease(self) -> str:
        """This process's token, registered as a run owner here, with a heartbeat thread keeping it fresh."""
        token = _PROCESS_TOKEN.value
        with self._lease_lock:
            if self._leased_token == token and self._heartbeat is not None and self._heartbeat.is_alive():
                return token
            now = utc_now()
            with self._writing.begin() as session:
                owner = session.get(RunOwner, token)
                if owner is None:
                    host, pid = socket.gethostname(), os.getpid()
                    session.add(RunOwner(token=token, host=host, pid=pid, started_at=now, heartbeat_at=now))
                else:
                    owner.heartbeat_at = now
            self._leased_token = token
            self._closing.clear()
            # The thread holds the storage weakly: one dropped without close() stops beating once it is collected.
            self._heartbeat = threading.Thread(
                target=_keep_lease,
                args=(weakref.ref(self), self._closing, self.lease_seconds / 4),
                name="flowcanvas-run-lease",
                daemon=True,
            )
            self._heartbeat.start()
        return token

    def _beat(self) -> None:
        """Refresh this process's heartbeat, and mark the runs of owners whose lease lapsed meanwhile."""
        with self._writing.begin() as session:
            session.execute(update(RunOwner).where(RunOwner.token == self._leased_token).values(heartbeat_at=utc_now()))
        interrupted = self.mark_interrupted_runs()
        if interrupted:
            logger.warning("marked runs whose owner's lease lapsed as interrupted: %s", ", ".join(interrupted))

    # Workflows

    def create_workflow(
        self,
        name: str,
        document: str,
        *,
        description: str = "",
        tags: Iterable[str] = (),
        message: str = "",
    ) -> WorkflowRecord:
        """A new workflow whose version 1 is `document`."""
        tags = _tag_list(tags)
        _check_workflow_texts(name=name, description=description, tags=tags, document=document, message=message)
        with self._writing.begin() as session:
            workflow = self._insert_workflow(session, name, document, description, tags, message)
            return WorkflowRecord.model_validate(workflow)

    def save_workflow_version(
        self,
        workflow_id: str,
        document: str,
        *,
        message: str = "",
        expected_version: int | None = None,
    ) -> WorkflowRecord:
        """Append `document` as the next version. With `expected_version`, refuse if someone saved since."""
        _check_workflow_texts(document=document, message=message)
        with self._writing.begin() as session:
            version = self._claim_next_version(session, workflow_id, expected_version)
            self._insert_version(session, workflow_id, version, document, message)
            return self._workflow_record(session, workflow_id)

    def update_workflow_meta(
        self,
        workflow_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> WorkflowRecord:
        """Change the given fields (None leaves a field as it is); versions are untouched."""
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if description is not None:
            changes["description"] = description
        if tags is not None:
            changes["tags"] = _tag_list(tags)
        _check_workflow_texts(**changes)
        with self._writing.begin() as session:
            if changes:
                result = session.execute(
                    update(Workflow).where(Workflow.id == workflow_id).values(**changes, updated_at=utc_now())
                )
                if result.rowcount == 0:
                    raise NotFound(f"no workflow with id {workflow_id!r}")
            return self._workflow_record(session, workflow_id)

    def get_workflow(self, ref: str) -> WorkflowRecord:
        """The workflow whose full id, unique id prefix (at least 4 characters) or exact name is `ref`."""
        with self._reading() as session:
            exact = session.get(Workflow, ref)
            if exact is not None:
                return WorkflowRecord.model_validate(exact)
            conditions = [Workflow.name == ref]
            if len(ref) >= MIN_PREFIX:
                conditions.append(Workflow.id.startswith(ref, autoescape=True))
            matches = session.scalars(select(Workflow).where(or_(*conditions)).order_by(Workflow.id)).all()
            if not matches:
                raise NotFound(f"no workflow {ref!r} (by id, id prefix of {MIN_PREFIX}+ characters, or name)")
            if len(matches) > 1:
                candidates = [f"{workflow.id} ({workflow.name})" for workflow in matches]
                raise Ambiguous(
                    f"workflow {ref!r} matches {len(matches)} workflows: {', '.join(candidates)}; give more of the id",
                    [workflow.id for workflow in matches],
                )
            return WorkflowRecord.model_validate(matches[0])

    def get_workflow_version(self, workflow_id: str, version: int | None = None) -> WorkflowVersionRecord:
        """One version of a workflow; None means the current one."""
        with self._reading() as session:
            if version is None:
                version = self._workflow_record(session, workflow_id).current_version
            found = session.scalar(
                select(WorkflowVersion).where(
                    WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.version == version
                )
            )
            if found is None:
                raise NotFound(f"no version {version} of workflow {workflow_id!r}")
            return WorkflowVersionRecord.model_validate(found)

    def list_workflows(self, search: str | None = None, tag: str | None = None) -> list[WorkflowRecord]:
        """Workflows, most recently updated first; `search` is a case-insensitive substring of name or description."""
        statement = select(Workflow).order_by(Workflow.updated_at.desc(), Workflow.id)
        if search:
            statement = statement.where(
                or_(
                    Workflow.name.icontains(search, autoescape=True),
                    Workflow.description.icontains(search, autoescape=True),
                )
            )
        with self._reading() as session:
            records = [WorkflowRecord.model_validate(workflow) for workflow in session.scalars(statement)]
        # Filtered here: JSON containment is spelled differently on every database.
        if tag is not None:
            records = [record for record in records if tag in record.tags]
        return records

    def list_versions(self, workflow_id: str) -> list[WorkflowVersionRecord]:
        """Every version of a workflow, oldest first."""
        with self._reading() as session:
            self._workflow_record(session, workflow_id)
            versions = session.scalars(
                select(WorkflowVersion)
                .where(WorkflowVersion.workflow_id == workflow_id)
                .order_by(WorkflowVersion.version)
            )
            return [WorkflowVersionRecord.model_validate(version) for version in versions]

    def restore_version(self, workflow_id: str, version: int) -> WorkflowRecord:
        """Append a new version whose document is that of `version`; history is never rewritten."""
        with self._writing.begin() as session:
            new_version = self._claim_next_version(session, workflow_id, None)
            document = session.scalar(
                select(WorkflowVersion.document).where(
                    WorkflowVersion.workflow_id == workflow_id, WorkflowVersion.version == version
                )
            )
            if document is None:
                raise NotFound(f"no version {version} of workflow {workflow_id!r}")
            self._insert_version(session, workflow_id, new_version, document, f"restored from version {version}")
            return self._workflow_record(session, workflow_id)

    def delete_workflow(self, workflow_id: str) -> None:
        """Delete a workflow and its versions; its runs stay, with workflow_id set to NULL."""
        with self._writing.begin() as session:
            result = session.execute(delete(Workflow).where(Workflow.id == workflow_id))
            if result.rowcount == 0:
                raise NotFound(f"no workflow with id {workflow_id!r}")

    def duplicate_workflow(self, workflow_id: str, new_name: str) -> WorkflowRecord:
        """A new workflow named `new_name` whose version 1 is the current version of `workflow_id`."""
        with self._writing.begin() as session:
            source = self._workflow_record(session, workflow_id)
            document = session.scalar(
                select(WorkflowVersion.document).where(
                    WorkflowVersion.workflow_id == workflow_id,
                    WorkflowVersion.version == source.current_version,
                )
            )
            assert document is not None, "a workflow's current version always exists"
            copy = self._insert_workflow(
                session,
                new_name,
                document,
                source.description,
                list(source.tags),
                f"duplicated from {source.id} version {source.current_version}",
            )
            return WorkflowRecord.model_validate(copy)

    def latest_images(self, workflow_ids: Iterable[str]) -> dict[str, ArtifactRecord]:
        """Per workflow (of those given): the newest image a run of it produced, for a thumbnail. A run counts when
        it names the workflow or ran one of its versions' documents unchanged (the canvas runs what it shows,
        without a library id)."""
        wanted = list(workflow_ids)
        if not wanted:
            return {}
        statement = (
            select(WorkflowVersion.workflow_id, Artifact)
            .join(Run, Artifact.run_id == Run.id)
            .join(
                WorkflowVersion,
                or_(Run.workflow_id == WorkflowVersion.workflow_id, Run.workflow == WorkflowVersion.document),
            )
            .where(WorkflowVersion.workflow_id.in_(wanted), Artifact.kind.in_(IMAGE_KINDS))
            .order_by(Artifact.created_at.desc(), Artifact.id.desc())
        )
        latest: dict[str, ArtifactRecord] = {}
        with self._reading() as session:
            for workflow_id, artifact in session.execute(statement):
                latest.setdefault(workflow_id, ArtifactRecord.model_validate(artifact))
        return latest

    def count_runs(self, workflow_id: str) -> int:
        """How many runs name this workflow (what its deletion leaves behind, with workflow_id set to NULL)."""
        with self._reading() as session:
            return session.scalar(select(func.count()).select_from(Run).where(Run.workflow_id == workflow_id)) or 0

    # Runs

    def create_run(
        self,
        *,
        workflow: str,
        overrides: Mapping[str, Any],
        device: str,
        workflow_id: str | None = None,
        workflow_version: int | None = None,
        target_node: str | None = None,
        batch_id: str | None = None,
        batch_index: int | None = None,
    ) -> RunRecord:
        """A queued run of the `workflow` snapshot, owned by this process."""
        checked_text("the run's workflow", workflow, None)
        checked_text("device", device, MAX_DEVICE)
        if target_node is not None:
            checked_text("target node", target_node, MAX_NAME)
        run = Run(
            id=new_id(),
            workflow_id=workflow_id,
            workflow_version=workflow_version,
            workflow=workflow,
            overrides=dict(overrides),
            target_node=target_node,
            status=RunStatus.QUEUED,
            device=device,
            created_at=utc_now(),
            node_timings={},
            environment={},
            seeds={},
            model_hashes={},
            owner_pid=os.getpid(),
            owner_host=socket.gethostname(),
            owner_token=self._hold_lease(),
            batch_id=batch_id,
            batch_index=batch_index,
        )
        with self._writing.begin() as session:
            session.add(run)
            session.flush()
            return RunRecord.model_validate(run)

    def mark_run_started(self, run_id: str, environment: Mapping[str, Any]) -> None:
        """Move a queued run to running, recording the package versions etc. it runs with."""
        with self._writing.begin() as session:
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
                .values(status=RunStatus.RUNNING, started_at=utc_now(), environment=dict(environment))
            )
            if result.rowcount == 0:
                status = session.scalar(select(Run.status).where(Run.id == run_id))
                if status is None:
                    raise NotFound(f"no run with id {run_id!r}")
                raise StorageError(f"run {run_id} is {status}, so it cannot start")

    def requeue_run(self, run_id: str) -> RunRecord:
        """Put a run whose worker died back to queued, for another worker to start afresh. A finished run is
        left as it is (it completed before its worker died): the caller reads its outcome from the record."""
        with self._writing.begin() as session:
            session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == RunStatus.RUNNING)
                .values(status=RunStatus.QUEUED, started_at=None)
            )
            run = session.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run with id {run_id!r}")
            return RunRecord.model_validate(run)

    def finish_run(
        self,
        run_id: str,
        status: RunStatus,
        *,
        node_timings: Mapping[str, float],
        error: Mapping[str, Any] | None = None,
        seeds: Mapping[str, Any] | None = None,
        model_hashes: Mapping[str, str] | None = None,
        artifacts: Sequence[NewArtifact] = (),
    ) -> RunRecord:
        """Record a run's outcome and index its artifacts, all in one transaction (all or nothing)."""
        status = RunStatus(status)
        if status in UNFINISHED_STATUSES:
            raise ValueError(f"{status} is not a finished status")
        changes: dict[str, Any] = {
            "status": status,
            "finished_at": utc_now(),
            "node_timings": dict(node_timings),
            "error": dict(error) if error is not None else None,
        }
        if seeds is not None:
            changes["seeds"] = dict(seeds)
        if model_hashes is not None:
            changes["model_hashes"] = dict(model_hashes)
        with self._writing.begin() as session:
            result = session.execute(
                update(Run).where(Run.id == run_id, Run.status.in_(UNFINISHED_STATUSES)).values(**changes)
            )
            if result.rowcount == 0:
                previous = session.scalar(select(Run.status).where(Run.id == run_id))
                if previous is None:
                    raise NotFound(f"no run with id {run_id!r}")
                raise StorageError(f"run {run_id} already finished as {previous}")
            session.add_all(
                Artifact(
                    run_id=run_id,
                    node_id=artifact.node_id,
                    kind=artifact.kind,
                    path=artifact.path,
                    sha256=artifact.sha256,
                    size=artifact.size,
                    meta=dict(artifact.meta),
                    created_at=changes["finished_at"],
                )
                for artifact in artifacts
            )
            session.flush()
            return RunRecord.model_validate(session.get_one(Run, run_id))

    def get_run(self, ref: str) -> RunRecord:
        """The run whose full id or unique id prefix (at least 4 characters) is `ref`."""
        with self._reading() as session:
            exact = session.get(Run, ref)
            if exact is not None:
                return RunRecord.model_validate(exact)
            matches: Sequence[str] = []
            if len(ref) >= MIN_PREFIX:
                matches = session.scalars(
                    select(Run.id).where(Run.id.startswith(ref, autoescape=True)).order_by(Run.id)
                ).all()
            if not matches:
                raise NotFound(f"no run {ref!r} (by id or id prefix of {MIN_PREFIX}+ characters)")
            if len(matches) > 1:
                raise Ambiguous(
                    f"run {ref!r} matches {len(matches)} runs: {', '.join(matches)}; give more of the id",
                    list(matches),
                )
            return RunRecord.model_validate(session.get_one(Run, matches[0]))

    def list_runs(
        self,
        *,
        limit: int = 50,
        status: RunStatus | None = None,
        workflow_id: str | None = None,
        batch_id: str | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first."""
        statement = select(Run).order_by(Run.created_at.desc(), Run.id).limit(limit)
        if status is not None:
            statement = statement.where(Run.status == RunStatus(status))
        if workflow_id is not None:
            statement = statement.where(Run.workflow_id == workflow_id)
        if batch_id is not None:
            statement = statement.where(Run.batch_id == batch_id)
        with self._reading() as session:
            return [RunRecord.model_validate(run) for run in session.scalars(statement)]

    def list_artifacts(self, run_id: str) -> list[ArtifactRecord]:
        """A run's artifacts, in the order they were recorded."""
        with self._reading() as session:
            if session.get(Run, run_id) is None:
                raise NotFound(f"no run with id {run_id!r}")
            artifacts = session.scalars(select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.id))
            return [ArtifactRecord.model_validate(artifact) for artifact in artifacts]

    def mark_interrupted_runs(self) -> list[str]:
        """Mark as interrupted the unfinished runs whose owning process is gone, and forget owners whose lease
        lapsed. Returns the runs' ids.

        An owner is gone when its heartbeat is older than the lease, whatever its pid or host; or at once, when
        it was on this host and its pid is dead or is this process's own (a restarted container's PID 1). Runs
        made before leases existed have no token and are judged by pid and host alone."""
        host, pid, token = socket.gethostname(), os.getpid(), _PROCESS_TOKEN.value
        lapsed_before = utc_now() - timedelta(seconds=self.lease_seconds)

        def gone_from_this_host(owner_host: str | None, owner_pid: int | None) -> bool:
            return (
                owner_host == host and owner_pid is not None and (owner_pid == pid or not _process_is_alive(owner_pid))
            )

        with self._writing.begin() as session:
            unfinished = session.execute(
                select(Run.id, Run.owner_token, Run.owner_pid, Run.owner_host, RunOwner.heartbeat_at)
                .outerjoin(RunOwner, RunOwner.token == Run.owner_token)
                .where(Run.status.in_(UNFINISHED_STATUSES))
            ).all()
            orphaned = []
            for run_id, owner_token, owner_pid, owner_host, heartbeat_at in unfinished:
                if owner_token is None:
                    gone = owner_pid is None or gone_from_this_host(owner_host, owner_pid)
                else:
                    gone = owner_token != token and (
                        heartbeat_at is None
                        or heartbeat_at < lapsed_before
                        or gone_from_this_host(owner_host, owner_pid)
                    )
                if gone:
                    orphaned.append(run_id)
            if orphaned:
                session.execute(
                    update(Run)
                    .where(Run.id.in_(orphaned), Run.status.in_(UNFINISHED_STATUSES))
                    .values(
                        status=RunStatus.INTERRUPTED,
                        finished_at=utc_now(),
                        error={"message": INTERRUPTED_MESSAGE},
                    )
                )
            session.execute(delete(RunOwner).where(RunOwner.heartbeat_at < lapsed_before, RunOwner.token != token))
        return sorted(orphaned)

    # Batches

    def create_batch(self, spec: Mapping[str, Any], total: int) -> str:
        batch = Batch(id=new_id(), spec=dict(spec), total=total, created_at=utc_now())
        with self._writing.begin() as session:
            session.add(batch)
        return batch.id

    def get_batch(self, batch_id: str) -> BatchRecord:
        with self._reading() as session:
            batch = session.get(Batch, batch_id)
            if batch is None:
                raise NotFound(f"no batch with id {batch_id!r}")
            return BatchRecord.model_validate(batch)

    # Helpers, called inside an open session

    def _workflow_record(self, session: Session, workflow_id: str) -> WorkflowRecord:
        workflow = session.get(Workflow, workflow_id)
        if workflow is None:
            raise NotFound(f"no workflow with id {workflow_id!r}")
        return WorkflowRecord.model_validate(workflow)

    def _insert_workflow(
        self, session: Session, name: str, document: str, description: str, tags: list[str], message: str
    ) -> Workflow:
        now = utc_now()
        workflow = Workflow(
            id=new_id(),
            name=name,
            description=description,
            tags=tags,
            created_at=now,
            updated_at=now,
            current_version=1,
        )
        session.add(workflow)
        session.flush()  # the version row references it
        self._insert_version(session, workflow.id, 1, document, message)
        return workflow

    def _insert_version(self, session: Session, workflow_id: str, version: int, document: str, message: str) -> None:
        session.add(
            WorkflowVersion(
                workflow_id=workflow_id,
                version=version,
                document=document,
                sha256=_sha256(document),
                message=message,
                created_at=utc_now(),
            )
        )
        session.flush()

    def _claim_next_version(self, session: Session, workflow_id: str, expected_version: int | None) -> int:
        # One conditional UPDATE both checks and increments, so of two concurrent writers
        # expecting the same version exactly one matches a row; the other gets VersionConflict.
        statement = (
            update(Workflow)
            .where(Workflow.id == workflow_id)
            .values(current_version=Workflow.current_version + 1, updated_at=utc_now())
        )
        if expected_version is not None:
            statement = statement.where(Workflow.current_version == expected_version)
        result = session.execute(statement)
        current = session.scalar(select(Workflow.current_version).where(Workflow.id == workflow_id))
        if current is None:
            raise NotFound(f"no workflow with id {workflow_id!r}")
        if result.rowcount == 0:
            raise VersionConflict(
                f"workflow {workflow_id} is at version {current}, not the expected {expected_version}: "
                "it was saved elsewhere meanwhile; reload it before saving",
                current,
            )
        return current


def open_storage(home: Path | None = None, url: str | None = None) -> Storage:
    """Storage for `home` (default: FLOWCANVAS_HOME): engine made, schema migrated, orphaned runs marked."""
    home = (home if home is not None else data_home()).resolve()
    engine = make_engine(url if url is not None else database_url(home))
    migrate(engine, home / "backups")
    storage = Storage(engine, ArtifactStore(artifact_root(home)), home)
    interrupted = storage.mark_interrupted_runs()
    if interrupted:
        logger.warning("marked runs left unfinished by a stopped process as interrupted: %s", ", ".join(interrupted))
    return storage

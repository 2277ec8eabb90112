"""The HTTP API: named, typed endpoints (gr.api) that gradio_client and plain HTTP clients call.

Endpoints: validate, run, run_status, cancel, workflows_list, workflows_get, workflows_save, workflows_delete,
runs_list, runs_get. Every run goes through the shared job worker (one run at a time per device), and every
workflow that arrives here is confined: it may read files only inside the data folder (and the starter
templates' images) and load only embedded or configured models (nodes.files). Records come back as plain
JSON; output images as files the client downloads.

No torch here: validation comes from pipelines.validate, runs from pipelines.jobs, records from storage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import gradio as gr
from gradio.data_classes import FileData
from pydantic import AfterValidator, Field, StringConstraints, TypeAdapter, ValidationError

from pipelines.issues import Issue, WorkflowInvalid
from pipelines.jobs import RunRequest, WorkerPool
from pipelines.validate import validate_workflow
from pipelines.workflow import Workflow, canonical_json, parse_workflow
from storage import InvalidValue, Storage
from storage.errors import Ambiguous, NotFound, VersionConflict
from storage.records import ArtifactRecord, RunRecord, RunStatus, WorkflowRecord

RUN_WAIT_SECONDS = 3600.0
MAX_REF = 1000  # an id, id prefix, name or node id an argument may be
MAX_TEXT = 10_000  # a search, tag, status or save message
MAX_INT = 2**31 - 1  # every integer argument fits a 32-bit column on every database


def _plain_text(value: str) -> str:
    """Refuse NUL, which PostgreSQL cannot store (pydantic's str already refuses lone surrogates)."""
    if "\0" in value:
        raise ValueError("contains a NUL character")
    return value


Ref = Annotated[str, StringConstraints(max_length=MAX_REF), AfterValidator(_plain_text)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT), AfterValidator(_plain_text)]
Version = Annotated[int, Field(ge=1, le=MAX_INT, strict=True)]
# What each endpoint argument must be, checked before anything is read or queued (pydantic at the boundary).
ARGUMENTS: dict[str, TypeAdapter[Any]] = {
    name: TypeAdapter(kind)
    for name, kind in {
        "overrides": dict[str, Any] | None,
        "target": Ref | None,
        "wait": bool,
        "run_id": Ref,
        "ref": Ref,
        "workflow_id": Ref,
        "workflow": Ref,
        "version": Version | None,
        "expected_version": Version | None,
        "limit": Annotated[int, Field(ge=-MAX_INT, le=MAX_INT, strict=True)],
        "search": Text,
        "tag": Text,
        "status": Text,
        "message": Text,
    }.items()
}


def _check_arguments(**arguments: Any) -> None:
    """gr.Error naming the first argument that is not what its endpoint takes, and why."""
    for name, value in arguments.items():
        try:
            ARGUMENTS[name].validate_python(value)
        except ValidationError as error:
            problem = error.errors()[0]
            raise gr.Error(f"{name}: {problem['msg']}", title="invalid argument") from None


def _issues(issues: list[Issue]) -> list[dict[str, Any]]:
    return [issue.model_dump(mode="json") for issue in issues]


def _workflow_summary(record: WorkflowRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")


def _run_summary(record: RunRecord) -> dict[str, Any]:
    data = record.model_dump(mode="json", exclude={"workflow", "owner_pid", "owner_host", "owner_token"})
    if record.started_at and record.finished_at:
        data["seconds"] = round((record.finished_at - record.started_at).total_seconds(), 3)
    return data


class Api:
    """The endpoint functions over one storage and worker pool; `register` publishes them on a Blocks."""

    def __init__(self, storage: Storage, pool: WorkerPool, file_roots: tuple[Path, ...]) -> None:
        self.storage = storage
        self.pool = pool
        self.file_roots = file_roots

    def register(self) -> None:
        """Publish every endpoint (call inside `with gr.Blocks()`). Runs wait on the worker, not on the queue."""
        for endpoint in (
            self.validate,
            self.run,
            self.run_status,
            self.cancel,
            self.workflows_list,
            self.workflows_get,
            self.workflows_save,
            self.workflows_delete,
            self.runs_list,
            self.runs_get,
        ):
            gr.api(endpoint, api_name=endpoint.__name__, concurrency_limit=None)

    # ---------------------------------------------------------------- runs

    def validate(self, workflow: dict[str, Any], overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every problem with a workflow document (and overrides by exposed label or node.param), as structured
        issues: node, field, code, message, hint. An empty list means it would run."""
        _check_arguments(overrides=overrides)
        try:
            parsed = parse_workflow(workflow)
        except WorkflowInvalid as invalid:
            return _issues(invalid.issues)
        return _issues(validate_workflow(parsed, overrides or {}, file_roots=self.file_roots))

    def run(
        self,
        workflow: dict[str, Any],
        overrides: dict[str, Any] | None = None,
        target: str | None = None,
        wait: bool = True,
    ) -> tuple[str, str, list[FileData], list[dict[str, Any]]]:
        """Queue a workflow (with overrides; `target`: run only up to that node) on the job worker. Returns the
        run id, its status, its output images and the validation issues (an invalid workflow returns no id,
        status "invalid" and the issues, and nothing is queued). With `wait` (default) it returns when the run
        ends; else at once, and run_status follows it."""
        _check_arguments(overrides=overrides, target=target, wait=wait)
        try:
            parsed = parse_workflow(workflow)
            handle = self.pool.submit(
                RunRequest(
                    workflow=parsed, overrides=overrides or {}, target=target or None, file_roots=self.file_roots
                )
            )
        except WorkflowInvalid as invalid:
            return "", "invalid", [], _issues(invalid.issues)
        if wait:
            handle.wait(RUN_WAIT_SECONDS)
        record, outputs = self._run_with_outputs(handle.run_id)
        return record["id"], record["status"], outputs, []

    def run_status(self, run_id: str) -> tuple[dict[str, Any], list[FileData]]:
        """A run's record (status, timings per node, substituted values, seeds, model hashes, environment, error)
        and its output images so far."""
        _check_arguments(run_id=run_id)
        return self._run_with_outputs(run_id)

    def cancel(self, run_id: str) -> bool:
        """Cancel a queued or running run; False when it has already ended (or is not held by this server)."""
        _check_arguments(run_id=run_id)
        return self.pool.cancel(self._run(run_id).id)

    # ---------------------------------------------------------------- library

    def workflows_list(self, search: str = "", tag: str = "") -> list[dict[str, Any]]:
        """Saved workflows (most recently updated first), filtered by a search of name and description, and a tag."""
        _check_arguments(search=search, tag=tag)
        return [_workflow_summary(r) for r in self.storage.list_workflows(search=search or None, tag=tag or None)]

    def workflows_get(self, ref: str, version: int | None = None) -> dict[str, Any]:
        """A saved workflow by id, id prefix or name: its record, the document of `version` (default the latest)
        and the list of versions."""
        _check_arguments(ref=ref, version=version)
        record = self._workflow(ref)
        chosen = self._call(lambda: self.storage.get_workflow_version(record.id, version))
        versions = [
            {"version": v.version, "message": v.message, "created_at": v.created_at.isoformat()}
            for v in self.storage.list_versions(record.id)
        ]
        return {
            **_workflow_summary(record),
            "version": chosen.version,
            "workflow": json.loads(chosen.document),
            "versions": versions,
        }

    def workflows_save(
        self, workflow: dict[str, Any], workflow_id: str = "", message: str = "", expected_version: int | None = None
    ) -> dict[str, Any]:
        """Save a document: a new workflow (named by its `name`) when `workflow_id` is empty, else the next version
        of that workflow. With `expected_version`, refuse when someone saved a newer version first. The document
        is checked as a workflow file (not run); an invalid file is refused with its issues."""
        _check_arguments(workflow_id=workflow_id, message=message, expected_version=expected_version)
        try:
            parsed: Workflow = parse_workflow(workflow)
        except WorkflowInvalid as invalid:
            raise gr.Error("; ".join(str(issue) for issue in invalid.issues), title="invalid workflow") from None
        document = canonical_json(parsed)
        if not workflow_id:
            record = self._call(
                lambda: self.storage.create_workflow(
                    parsed.name, document, description=parsed.description, tags=parsed.tags, message=message
                )
            )
        else:
            existing = self._workflow(workflow_id)
            record = self._call(
                lambda: self.storage.save_workflow_version(
                    existing.id, document, message=message, expected_version=expected_version
                )
            )
        return _workflow_summary(record)

    def workflows_delete(self, ref: str) -> bool:
        """Delete a saved workflow and its versions (its runs keep their records)."""
        _check_arguments(ref=ref)
        self.storage.delete_workflow(self._workflow(ref).id)
        return True

    def runs_list(self, limit: int = 50, status: str = "", workflow: str = "") -> list[dict[str, Any]]:
        """Recent runs, newest first: status, workflow and version, times, device."""
        _check_arguments(limit=limit, status=status, workflow=workflow)
        if status and status not in {s.value for s in RunStatus}:
            raise gr.Error(f"status {status!r} is not one of: {', '.join(s.value for s in RunStatus)}")
        workflow_id = self._workflow(workflow).id if workflow else None
        records = self.storage.list_runs(
            limit=max(1, min(limit, 1000)), status=RunStatus(status) if status else None, workflow_id=workflow_id
        )
        return [_run_summary(r) for r in records]

    def runs_get(self, run_id: str) -> tuple[dict[str, Any], list[FileData]]:
        """A run's full record, with the workflow document it ran, and its output images."""
        _check_arguments(run_id=run_id)
        record, outputs = self._run_with_outputs(run_id)
        record["workflow"] = json.loads(self._run(run_id).workflow)
        return record, outputs

    # ---------------------------------------------------------------- helpers

    def _run_with_outputs(self, run_id: str) -> tuple[dict[str, Any], list[FileData]]:
        record = self._run(run_id)
        artifacts = self.storage.list_artifacts(record.id)
        summary = _run_summary(record)
        summary["outputs"] = [{"node": a.node_id, "kind": a.kind, "sha256": a.sha256} for a in artifacts]
        return summary, [self._file(a) for a in artifacts]

    def _file(self, artifact: ArtifactRecord) -> FileData:
        return FileData(path=str(self.storage.artifacts.absolute(artifact.path)), orig_name=Path(artifact.path).name)

    def _run(self, ref: str) -> RunRecord:
        return self._call(lambda: self.storage.get_run(ref))

    def _workflow(self, ref: str) -> WorkflowRecord:
        return self._call(lambda: self.storage.get_workflow(ref))

    @staticmethod
    def _call(read: Any) -> Any:
        """Storage calls, with not-found, ambiguous, conflicting saves and unstorable values as clear client errors."""
        try:
            return read()
        except (NotFound, Ambiguous, VersionConflict, InvalidValue) as error:
            raise gr.Error(str(error)) from None

"""What each CLI command does (parsing lives in app/cli.py, printing helpers in app/console.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.console import EXIT_FAILED, EXIT_INVALID, EXIT_OK, copy_outputs, output_name, prepare_out, print_json, table
from app.ui.uploads import upload_limits
from nodes.catalogue import all_node_classes, catalogue
from pipelines.batch import (
    BatchSpecError,
    ExecutorUnavailable,
    build_groups,
    expand,
    open_executor,
    parse_assignment,
    prepare_batch,
    queue_batch,
    sweep_grid,
    values_text,
)
from pipelines.executor import RunEvent
from pipelines.issues import Issue, IssueCode, WorkflowInvalid
from pipelines.jobs import TERMINAL_EVENTS, RunHandle, RunOutcome, RunRequest
from pipelines.ray_options import RayOptions
from pipelines.validate import validate_workflow
from pipelines.workflow import Workflow, canonical_json, load_workflow
from storage import NotFound, RunStatus, Storage, StorageError, open_storage


def _report_issues(issues: list[Issue], as_json: bool) -> int:
    if as_json:
        print_json({"valid": False, "issues": [i.model_dump(mode="json") for i in issues]})
    else:
        print(f"invalid workflow: {len(issues)} problem{'s' if len(issues) != 1 else ''}", file=sys.stderr)
        for issue in issues:
            print(f"  {issue}", file=sys.stderr)
    return EXIT_INVALID


def _error(message: str, as_json: bool = False) -> int:
    if as_json:
        print_json({"valid": False, "issues": [{"code": IssueCode.INVALID_INPUT, "message": message}]})
    else:
        print(f"error: {message}", file=sys.stderr)
    return EXIT_INVALID


def load_source(ref: str, storage: Storage | None) -> tuple[Workflow, str | None, int | None]:
    """A workflow file/PNG path, or else a library workflow by id, id prefix or name."""
    path = Path(ref)
    if path.exists() or storage is None or path.suffix.lower() in (".json", ".png"):
        return load_workflow(path), None, None
    try:
        record = storage.get_workflow(ref)
    except NotFound:
        raise WorkflowInvalid(
            [Issue(code=IssueCode.UNREADABLE, message=f"no file {ref!r} and no library workflow by that id or name")]
        ) from None
    version = storage.get_workflow_version(record.id)
    return load_workflow(version.document), record.id, version.version


def _overrides(sets: list[str]) -> dict[str, Any]:
    return dict(parse_assignment(text) for text in sets)


def validate(args: argparse.Namespace) -> int:
    try:
        storage = None if Path(args.workflow).exists() else open_storage()
        workflow, _, _ = load_source(args.workflow, storage)
        overrides = _overrides(args.sets)
    except WorkflowInvalid as invalid:
        return _report_issues(invalid.issues, args.json)
    except (BatchSpecError, StorageError) as error:
        return _error(str(error), args.json)
    issues = validate_workflow(workflow, overrides)
    if issues:
        return _report_issues(issues, args.json)
    if args.json:
        print_json({"valid": True, "issues": []})
    else:
        print(f"valid: {workflow.name!r}, {len(workflow.nodes)} nodes")
    return EXIT_OK


def nodes(args: argparse.Namespace) -> int:
    if args.json:
        print_json(catalogue())
        return EXIT_OK
    rows = [
        (
            cls.category,
            cls.type,
            ", ".join(f"{i.name}:{i.type}" for i in cls.inputs),
            ", ".join(f"{o.name}:{o.type}" for o in cls.outputs),
            cls.description.splitlines()[0] if cls.description else "",
        )
        for cls in all_node_classes()
    ]
    print(table(("category", "type", "inputs", "outputs", "description"), rows))
    return EXIT_OK


class _Progress:
    """One bar over the batch's runs, fed every run's events as they happen (runs on several Ray actors at once
    included), with the latest running node and its step as the postfix (terminals only)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="run", file=sys.stderr, disable=not enabled, dynamic_ncols=True)
        self._index: dict[str, int] = {}  # run id -> its place in the batch (runs are queued in batch order)

    def __call__(self, event: RunEvent) -> None:
        if event.kind == "run_queued":
            self._index.setdefault(event.run_id, len(self._index))
        number = self._index.get(event.run_id, -1) + 1
        if event.kind == "node_started":
            self.bar.set_postfix_str(f"run {number}: {event.node}", refresh=True)
        elif event.kind == "node_progress":
            self.bar.set_postfix_str(f"run {number}: {event.node} {event.data['step']}/{event.data['total']}")
        elif event.kind == "node_warning":
            for warning in event.data.get("warnings", []):
                where = ".".join(part for part in (event.node, warning.get("field")) if part)
                self.bar.write(f"warning: run {number}: {where}: {warning.get('message')}", file=sys.stderr)
        elif event.kind in TERMINAL_EVENTS:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _wait(handles: list[RunHandle]) -> list[RunOutcome]:
    outcomes = []
    try:
        for handle in handles:
            outcomes.append(handle.wait())
    except KeyboardInterrupt:
        for handle in handles:
            handle.cancel()
        print("\ncancelling…", file=sys.stderr)
        outcomes = [handle.wait() for handle in handles]
    return outcomes


def run(args: argparse.Namespace) -> int:
    try:
        storage = open_storage()
    except StorageError as error:
        return _error(str(error), args.json)
    try:
        workflow, workflow_id, version = load_source(args.workflow, storage)
        groups = build_groups(
            [text for kind, text in args.batch or [] if kind == "sweep"], _zip_positions(args.batch or []), args.jobs
        )
        jobs = expand(groups, _overrides(args.sets))
    except WorkflowInvalid as invalid:
        return _report_issues(invalid.issues, args.json)
    except (BatchSpecError, StorageError) as error:
        return _error(str(error), args.json)

    ray_flags = [
        flag
        for flag, value in (
            ("--ray-address", args.ray_address),
            ("--ray-workers", args.ray_workers),
            ("--gpus-per-worker", args.gpus_per_worker),
            ("--threads-per-worker", args.threads_per_worker),
        )
        if value is not None
    ]
    if ray_flags and args.executor != "ray":
        return _error(f"{', '.join(ray_flags)} only apply with --executor ray", args.json)
    if args.out is not None and (unwritable := prepare_out(args.out)) is not None:
        return _error(unwritable, args.json)
    ray_options = RayOptions(
        address=args.ray_address,
        workers=args.ray_workers,
        gpus_per_worker=args.gpus_per_worker,
        threads_per_worker=args.threads_per_worker,
    )
    request = RunRequest(
        workflow=workflow, device=args.device, target=args.target, workflow_id=workflow_id, workflow_version=version
    )
    try:
        jobs = prepare_batch(request, jobs)
    except WorkflowInvalid as invalid:
        return _report_issues(invalid.issues, args.json)
    try:
        executor = open_executor(storage, args.executor, device=args.device, ray=ray_options)
    except (ValueError, ExecutorUnavailable) as error:  # the device, or Ray not installed
        return _error(str(error), args.json)
    try:
        executor.start()
    except ValueError as error:  # a Ray cluster that cannot hold the workers asked for
        executor.shutdown()
        return _error(str(error), args.json)
    progress = _Progress(len(jobs), enabled=sys.stderr.isatty() and not args.json)
    executor.add_listener(progress)
    submission = queue_batch(executor, request, jobs)
    outcomes = _wait(submission.handles)
    progress.close()
    executor.shutdown()

    summaries = [_summarise(storage, outcome, values, args.out) for outcome, values in zip(outcomes, submission.jobs)]
    grid = _write_grid(summaries, args.out) if args.grid and args.out and len(jobs) > 1 else None
    ok = all(o.status == RunStatus.SUCCEEDED for o in outcomes)
    if args.json:
        print_json({"ok": ok, "batch_id": submission.batch_id, "grid": grid, "runs": summaries})
    else:
        rows = [
            (
                i + 1,
                s["run_id"],
                s["status"],
                f"{s['seconds']:.2f}",
                values_text(s["values"]) or "-",
                "\n".join(s["outputs"]) or (s["error"] or {}).get("message", "-"),
            )
            for i, s in enumerate(summaries)
        ]
        print(table(("#", "run", "status", "seconds", "values", "outputs / error"), rows))
        if grid:
            print(f"grid: {grid}")
    return EXIT_OK if ok else EXIT_FAILED


def _zip_positions(batch: list[tuple[str, str]]) -> list[tuple[int, str]]:
    positions, sweeps = [], -1
    for kind, text in batch:
        if kind == "sweep":
            sweeps += 1
        else:
            positions.append((sweeps, text))
    return positions


def _summarise(storage: Storage, outcome: RunOutcome, values: dict[str, Any], out: Path | None) -> dict[str, Any]:
    images = [a for a in outcome.artifacts if a.kind == "image"]
    sources = [
        (
            storage.artifacts.absolute(a.path),
            output_name(a.meta.get("filename_prefix", "flowcanvas"), outcome.run_id, a.node_id, a.meta.get("index", 0)),
        )
        for a in images
    ]
    outputs = copy_outputs(sources, out) if out else [str(path) for path, _ in sources]
    return {
        "run_id": outcome.run_id,
        "status": str(outcome.status),
        "values": values,
        "outputs": outputs,
        "seconds": round(sum(outcome.timings.values()), 4),
        "timings": outcome.timings,
        "cached": outcome.cached,
        "error": outcome.error,
    }


def _write_grid(summaries: list[dict[str, Any]], out: Path) -> str | None:
    cells = [(Path(path), values_text(s["values"])) for s in summaries for path in s["outputs"]]
    if not cells:
        return None
    target = out / "grid.png"
    target.write_bytes(sweep_grid([p for p, _ in cells], [c for _, c in cells]))
    return str(target)


def workflows(args: argparse.Namespace) -> int:
    as_json = getattr(args, "json", False)
    try:
        storage = open_storage()
        return _WORKFLOW_ACTIONS[args.action](storage, args)
    except WorkflowInvalid as invalid:
        return _report_issues(invalid.issues, as_json)
    except StorageError as error:
        return _error(str(error), as_json)


def _workflow_row(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "description": record.description,
        "tags": list(record.tags),
        "version": record.current_version,
        "updated_at": record.updated_at.isoformat(),
    }


def _workflows_list(storage: Storage, args: argparse.Namespace) -> int:
    records = storage.list_workflows(search=args.search, tag=args.tag)
    if args.json:
        print_json([_workflow_row(r) for r in records])
    else:
        print(
            table(
                ("id", "name", "version", "tags", "updated"),
                [
                    (r.id, r.name, r.current_version, ", ".join(r.tags), r.updated_at.strftime("%Y-%m-%d %H:%M"))
                    for r in records
                ],
            )
        )
    return EXIT_OK


def _workflows_show(storage: Storage, args: argparse.Namespace) -> int:
    record = storage.get_workflow(args.ref)
    version = storage.get_workflow_version(record.id, args.version)
    workflow = load_workflow(version.document)
    info = {
        **_workflow_row(record),
        "shown_version": version.version,
        "exposed": [e.model_dump() for e in workflow.exposed],
        "nodes": {nid: n.type for nid, n in workflow.nodes.items()},
    }
    if args.json:
        print_json(info)
        return EXIT_OK
    print(f"{record.name}  ({record.id}, version {version.version} of {record.current_version})")
    if record.description:
        print(record.description)
    print(f"tags: {', '.join(record.tags) or '-'}")
    print(table(("node", "type"), sorted(info["nodes"].items())))
    if workflow.exposed:
        print(table(("field", "node.param"), [(e.label, f"{e.node}.{e.param}") for e in workflow.exposed]))
    return EXIT_OK


def _workflows_export(storage: Storage, args: argparse.Namespace) -> int:
    record = storage.get_workflow(args.ref)
    text = canonical_json(load_workflow(storage.get_workflow_version(record.id, args.version).document))
    if args.output:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as error:
            return _error(f"-o {args.output}: cannot write there ({error.strerror or error})", False)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _workflows_import(storage: Storage, args: argparse.Namespace) -> int:
    workflow = load_workflow(args.file)
    record = storage.create_workflow(
        args.name or workflow.name,
        canonical_json(workflow),
        description=workflow.description,
        tags=workflow.tags,
        message=args.message,
    )
    print(f"imported {record.name!r} as {record.id}")
    for issue in validate_workflow(workflow):
        print(f"  warning: {issue}", file=sys.stderr)
    return EXIT_OK


def _workflows_delete(storage: Storage, args: argparse.Namespace) -> int:
    record = storage.get_workflow(args.ref)
    if not args.yes:
        if not sys.stdin.isatty():
            return _error(f"deleting {record.name!r} needs --yes when not asked interactively")
        answer = input(
            f"delete workflow {record.name!r} ({record.id}) and its {record.current_version} versions? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print("kept")
            return EXIT_OK
    storage.delete_workflow(record.id)
    print(f"deleted {record.name!r} ({record.id}); its runs keep their records")
    return EXIT_OK


def _workflows_versions(storage: Storage, args: argparse.Namespace) -> int:
    record = storage.get_workflow(args.ref)
    versions = storage.list_versions(record.id)
    if args.json:
        print_json(
            [
                {"version": v.version, "sha256": v.sha256, "message": v.message, "created_at": v.created_at.isoformat()}
                for v in versions
            ]
        )
    else:
        print(
            table(
                ("version", "saved", "message", "sha256"),
                [
                    (
                        f"{v.version}{' *' if v.version == record.current_version else ''}",
                        v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                        v.message,
                        v.sha256[:12],
                    )
                    for v in versions
                ],
            )
        )
    return EXIT_OK


def _workflows_restore(storage: Storage, args: argparse.Namespace) -> int:
    record = storage.restore_version(storage.get_workflow(args.ref).id, args.version)
    print(f"restored version {args.version} of {record.name!r} as version {record.current_version}")
    return EXIT_OK


_WORKFLOW_ACTIONS = {
    "list": _workflows_list,
    "show": _workflows_show,
    "export": _workflows_export,
    "import": _workflows_import,
    "delete": _workflows_delete,
    "versions": _workflows_versions,
    "restore": _workflows_restore,
}


def runs(args: argparse.Namespace) -> int:
    as_json = getattr(args, "json", False)
    try:
        storage = open_storage()
        if args.action == "list":
            records = storage.list_runs(limit=args.limit, status=args.status)
            if as_json:
                print_json([_run_row(r) for r in records])
            else:
                print(
                    table(
                        ("run", "status", "workflow", "created", "seconds", "device"),
                        [
                            (
                                r.id,
                                r.status,
                                _run_name(r),
                                r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                                f"{sum(r.node_timings.values()):.2f}",
                                r.device,
                            )
                            for r in records
                        ],
                    )
                )
            return EXIT_OK
        record = storage.get_run(args.ref)
        artifacts = storage.list_artifacts(record.id)
        info = {
            **_run_row(record),
            "overrides": record.overrides,
            "node_timings": record.node_timings,
            "error": record.error,
            "environment": record.environment,
            "seeds": record.seeds,
            "model_hashes": record.model_hashes,
            "artifacts": [
                {
                    "node": a.node_id,
                    "kind": a.kind,
                    "path": str(storage.artifacts.absolute(a.path)),
                    "sha256": a.sha256,
                    "size": a.size,
                }
                for a in artifacts
            ],
        }
        if as_json:
            print_json(info)
        else:
            for key in ("id", "status", "workflow", "device", "created_at", "started_at", "finished_at"):
                print(f"{key}: {info[key]}")
            for key in ("overrides", "seeds", "error", "environment"):
                if info[key]:
                    print(f"{key}: {json.dumps(info[key], sort_keys=True, default=str)}")
            if record.node_timings:
                print(table(("node", "seconds"), [(k, f"{v:.4f}") for k, v in record.node_timings.items()]))
            for artifact in info["artifacts"]:
                print(f"{artifact['kind']} from {artifact['node']}: {artifact['path']}")
        return EXIT_OK
    except StorageError as error:
        return _error(str(error), as_json)


def _run_name(record: Any) -> str:
    try:
        return json.loads(record.workflow).get("name", "?")
    except json.JSONDecodeError:
        return "?"


def _run_row(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "status": str(record.status),
        "workflow": _run_name(record),
        "workflow_id": record.workflow_id,
        "workflow_version": record.workflow_version,
        "device": record.device,
        "created_at": record.created_at.isoformat(),
        "started_at": record.started_at.isoformat() if record.started_at else None,
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "batch_id": record.batch_id,
        "batch_index": record.batch_index,
    }


LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class ServeRefused(ValueError):
    """Serve options that would expose the server unsafely or make no sense."""


def launch_options(listen: str, port: int, auth: str | None, insecure: bool) -> dict[str, Any]:
    """Gradio launch arguments for `serve`: off this machine only with a login (or an explicit --insecure)."""
    import ipaddress

    try:
        loopback = listen in LOOPBACK_NAMES or ipaddress.ip_address(listen).is_loopback
    except ValueError:
        loopback = False  # a host name: it may resolve to any interface
    credentials = None
    if auth is not None:
        user, separator, password = auth.partition(":")
        if not separator or not user or not password:
            raise ServeRefused("--auth expects USER:PASSWORD, both non-empty")
        credentials = (user, password)
    if not loopback and credentials is None and not insecure:
        raise ServeRefused(
            f"--listen {listen} lets other machines reach the server: add --auth USER:PASSWORD "
            f"(or --insecure to serve without a login)"
        )
    return {
        "server_name": listen,
        "server_port": port,
        "auth": credentials,
        "inbrowser": False,
        **upload_limits(),
    }


def serve(args: argparse.Namespace) -> int:
    try:
        options = launch_options(args.listen, args.port, args.auth, args.insecure)
    except ServeRefused as refused:
        return _error(str(refused))
    from app.ui.app import build_app

    print(f"FlowCanvas: http://{args.listen}:{args.port} (Ctrl-C stops)", file=sys.stderr)
    build_app().launch(**options)
    return EXIT_OK


def train_embedded(args: argparse.Namespace) -> int:
    from nodes.embedded.train import TrainConfig, train

    config = TrainConfig(
        device=args.device, minutes=args.minutes, decoder_minutes=args.decoder_minutes, init_from=args.init_from
    )
    if args.out:
        config.out = args.out
    train(config, resume=args.resume)
    return EXIT_OK


def source_axes(args: argparse.Namespace) -> int:
    """Compute a model's data-sparse directions from its data and write them where Pruned Noise finds them."""
    import os

    import torch

    from nodes.models.loader import MANAGER, LoadOptions, ModelLoadError
    from nodes.sampling.pruned_noise import acceptance, image_latents, model_axes_path, source_axes
    from storage.config import data_home

    try:
        loaded = MANAGER.get(args.model, LoadOptions(device=args.device), data_home() / "cache")
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    model, vae = loaded.model, loaded.vae
    if args.images is not None:
        if not args.images.is_dir():
            print(f"error: --images: no folder at {str(args.images)!r}", file=sys.stderr)
            return EXIT_INVALID
        batches, data = image_latents(vae, args.images, args.size), f"images in {args.images.name}/, {args.size} px"
    elif model.defaults_key == "embedded":
        from nodes.embedded.dataset import encoded_training_set

        batches, data = encoded_training_set(vae, args.count), f"{args.count} training scenes"
    else:
        print("error: --images FOLDER is needed: images like the model's training data", file=sys.stderr)
        return EXIT_INVALID
    out = args.out or model_axes_path(model)
    if out is None:
        print(f"error: {args.model} is not a model folder: give --out FILE", file=sys.stderr)
        return EXIT_INVALID
    try:
        axes = source_axes(batches, args.block, model.family, data)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    partial = out.with_name(out.name + ".partial")
    axes.save(partial)
    os.replace(partial, out)  # a reader never sees half a file
    kept = acceptance(axes.axes, axes.reject_threshold, torch.Generator().manual_seed(0))
    print(
        f"{len(axes.axes)} data-sparse directions of {2 * axes.dimension} ({axes.block}×{axes.block} tiles of "
        f"{axes.channels} channels, {axes.samples:,} data tiles from {data}); thresholds τ = "
        f"{axes.sparse_threshold:.4f}, τ_r = {axes.reject_threshold:.4f}, keeping about {kept:.1%} of "
        f"Gaussian draws\nwrote {out}"
    )
    return EXIT_OK

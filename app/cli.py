"""The headless command line: its arguments, and which command (app.commands) each runs.

Commands: serve (the default), run, validate, nodes, workflows, runs, train-embedded, source-axes; exit codes in app.console.
Runs go through the same job worker as the UI and the HTTP API. Only argparse is imported before a command
is chosen, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.console import EXIT_OK


class _Ordered(argparse.Action):
    """Keeps --sweep and --zip in the order given, since a --zip belongs to the --sweep before it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        items = list(getattr(namespace, self.dest) or [])
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python run.py", description="FlowCanvas: node workflows for flow image models."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a workflow (file, PNG or library workflow) headlessly")
    run.add_argument("workflow", help="a .json or .png file, or a library workflow id/name")
    run.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set an exposed field (by label) or node.param",
    )
    run.add_argument(
        "--sweep",
        dest="batch",
        action=_Ordered,
        const="sweep",
        metavar="NAME=VALUES",
        help="start a sweep group: A..B[:STEP], a JSON list, or comma-separated values",
    )
    run.add_argument(
        "--zip",
        dest="batch",
        action=_Ordered,
        const="zip",
        metavar="NAME=VALUES",
        help="add a field to the previous --sweep, zipped with it",
    )
    run.add_argument("--jobs", type=Path, metavar="CSV", help="a CSV of jobs: header = field names, one row per run")
    run.add_argument("--target", metavar="NODE", help="run only up to this node")
    run.add_argument("--out", type=Path, metavar="DIR", help="copy output images into this folder")
    run.add_argument("--grid", action="store_true", help="with a sweep, also write a captioned grid of all outputs")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    run.add_argument("--json", action="store_true", help="print one machine-readable summary")
    run.add_argument(
        "--executor",
        default="local",
        choices=("local", "ray"),
        help="local: this process's job worker (default); ray: one model-holding actor per GPU "
        "on a Ray cluster (pip install -r requirements-ray.txt)",
    )
    run.add_argument(
        "--ray-address",
        metavar="auto|HOST:PORT",
        help="join a running Ray cluster (default: start a Ray instance on this machine)",
    )
    run.add_argument(
        "--ray-workers",
        type=_positive_int,
        metavar="N",
        help="number of Ray actors (default: one per GPU, or per CPUs-worth of threads without GPUs)",
    )
    run.add_argument(
        "--gpus-per-worker",
        type=_non_negative_float,
        metavar="N",
        help="GPUs per Ray actor, fractions allowed (default: 1 when the cluster has GPUs; 0: CPU actors)",
    )
    run.add_argument(
        "--threads-per-worker",
        type=_positive_int,
        metavar="N",
        help="torch threads per Ray actor (default: as many as a local run uses, for the same bits)",
    )

    validate = sub.add_parser("validate", help="check a workflow without running it")
    validate.add_argument("workflow")
    validate.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE")
    validate.add_argument("--json", action="store_true")

    nodes = sub.add_parser("nodes", help="list the node types")
    nodes.add_argument("--json", action="store_true", help="the full catalogue, as the canvas reads it")

    workflows = sub.add_parser("workflows", help="the workflow library")
    wsub = workflows.add_subparsers(dest="action", metavar="ACTION", required=True)
    wl = wsub.add_parser("list", help="list saved workflows")
    wl.add_argument("--search")
    wl.add_argument("--tag")
    wl.add_argument("--json", action="store_true")
    ws = wsub.add_parser("show", help="show a workflow's details")
    ws.add_argument("ref")
    ws.add_argument("--version", type=int)
    ws.add_argument("--json", action="store_true")
    we = wsub.add_parser("export", help="write a workflow's JSON")
    we.add_argument("ref")
    we.add_argument("--version", type=int)
    we.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    wi = wsub.add_parser("import", help="save a workflow file or PNG into the library")
    wi.add_argument("file", type=Path)
    wi.add_argument("--name")
    wi.add_argument("--message", default="imported")
    wd = wsub.add_parser("delete", help="delete a workflow (its runs keep their records)")
    wd.add_argument("ref")
    wd.add_argument("--yes", action="store_true", help="do not ask")
    wv = wsub.add_parser("versions", help="list a workflow's versions")
    wv.add_argument("ref")
    wv.add_argument("--json", action="store_true")
    wr = wsub.add_parser("restore", help="make an older version current again (as a new version)")
    wr.add_argument("ref")
    wr.add_argument("version", type=int)

    runs = sub.add_parser("runs", help="run history")
    rsub = runs.add_subparsers(dest="action", metavar="ACTION", required=True)
    rl = rsub.add_parser("list", help="recent runs")
    rl.add_argument("--limit", type=int, default=20)
    rl.add_argument("--status", choices=("queued", "running", "succeeded", "failed", "cancelled", "interrupted"))
    rl.add_argument("--json", action="store_true")
    rs = rsub.add_parser("show", help="one run's record")
    rs.add_argument("ref")
    rs.add_argument("--json", action="store_true")
    serve = sub.add_parser("serve", help="start the browser canvas and the HTTP API (what `python run.py` alone does)")
    serve.add_argument(
        "--listen",
        default="127.0.0.1",
        metavar="ADDR",
        help="interface to listen on (default: this machine only; 0.0.0.0: every interface)",
    )
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument(
        "--auth", metavar="USER:PASSWORD", help="require this login (needed with --listen off this machine)"
    )
    serve.add_argument("--insecure", action="store_true", help="allow --listen off this machine without --auth")

    train = sub.add_parser("train-embedded", help="train the embedded default model (models/shapes) from scratch")
    train.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    train.add_argument("--minutes", type=float, default=110.0, help="wall-clock budget for all phases")
    train.add_argument(
        "--decoder-minutes",
        type=float,
        default=8.0,
        help="of the budget, minutes for sharpening the decoder at the end (phase 3)",
    )
    train.add_argument("--resume", action="store_true", help="continue phase 2 from the last checkpoint")
    train.add_argument("--out", type=Path, help="where to save the model (default: models/shapes)")
    train.add_argument(
        "--init-from", type=Path, metavar="FOLDER", help="continue from a trained model's weights instead of scratch"
    )

    axes = sub.add_parser(
        "source-axes",
        help="find a model's data-sparse noise directions for the Pruned Noise node (from its data)",
    )
    axes.add_argument("--model", default="embedded:shapes", help="a model source, as the Load Flow Model node takes")
    axes.add_argument(
        "--images",
        type=Path,
        metavar="FOLDER",
        help="images like the model's training data (PNG, JPEG, WebP); the embedded model uses its own training set",
    )
    axes.add_argument("--count", type=_positive_int, default=30_720, help="embedded model: training scenes to encode")
    axes.add_argument(
        "--size", type=_positive_int, default=512, help="--images: the square size each image is cropped to"
    )
    axes.add_argument("--block", type=_positive_int, default=8, help="tile side in latent pixels")
    axes.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    axes.add_argument(
        "--out", type=Path, help="where to write them (default: source_axes.safetensors in the model's folder)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("--") and argv[0] != "--help":
        argv.insert(0, "serve")  # `python run.py --port 8000`: options without a command are the app's own
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # usage errors (2) and --help (0) return instead of leaving the caller's process
        return int(exit_.code or 0)
    from app import commands

    if args.command is None:  # the app, on this machine only, with the embedded txt2img workflow open
        args = parser.parse_args(["serve"])
    handler = {
        "serve": commands.serve,
        "run": commands.run,
        "validate": commands.validate,
        "nodes": commands.nodes,
        "workflows": commands.workflows,
        "runs": commands.runs,
        "train-embedded": commands.train_embedded,
        "source-axes": commands.source_axes,
    }[args.command]
    try:
        return handler(args)
    except BrokenPipeError:
        return EXIT_OK

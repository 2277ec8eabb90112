"""Sharing workflows as files: export as JSON or as a PNG that carries it; recognise what an imported file holds.

Imports are data, never code: a file is read as JSON or as PNG text chunks and nothing in it runs. A FlowCanvas
file (JSON, or a PNG with a `flowcanvas_workflow` chunk) gives back the exact workflow; ComfyUI's `workflow` /
`prompt` and InvokeAI's files are recognised and described (what they are, how many nodes of which types), since
FlowCanvas cannot run their graphs; anything else gets a message that says what is wrong with it.

PIL only (no torch): the UI process shares this with every view.
"""

from __future__ import annotations

import io
import json
import re
import textwrap
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin, UnidentifiedImageError
from pydantic import BaseModel

from pipelines.issues import WorkflowInvalid
from pipelines.png_text import PNG_SIGNATURE, png_text_chunks
from pipelines.workflow import FORMAT, PNG_WORKFLOW_KEY, Workflow, parse_workflow

MAX_IMPORT_BYTES = 32 * 1024**2  # far above any workflow or output image; refuses a stray huge file unread
INVOKEAI_CHUNKS = ("invokeai_workflow", "invokeai_graph", "invokeai_metadata")
TYPES_NAMED = 5  # how many node types a description of a foreign graph names
CARD_SIZE = 256


class ImportKind(StrEnum):
    FLOWCANVAS = "flowcanvas"
    COMFYUI = "comfyui"
    INVOKEAI = "invokeai"
    A1111 = "a1111"
    NO_WORKFLOW = "no_workflow"  # a readable PNG that carries no workflow
    INVALID = "invalid"  # not JSON, not a readable PNG, or a FlowCanvas file that does not validate


class Recognised(BaseModel):
    """What an imported file holds: the workflow when it is a FlowCanvas one, else a description of what was found."""

    kind: ImportKind
    message: str
    workflow: Workflow | None = None


def recognise(data: bytes, filename: str) -> Recognised:
    """Tell what `data` (a file named `filename`, from a drop or an upload) holds; never raises on bad input."""
    if len(data) > MAX_IMPORT_BYTES:
        return Recognised(
            kind=ImportKind.INVALID,
            message=f"{filename}: {len(data):,} bytes is too large to be a workflow "
            f"(the limit is {MAX_IMPORT_BYTES // 1024**2} MB)",
        )
    if data.startswith(PNG_SIGNATURE):
        return _recognise_png(data, filename)
    return _recognise_json(data, filename)


def _recognise_json(data: bytes | str, filename: str) -> Recognised:
    try:
        document = json.loads(data)
    except UnicodeDecodeError:
        return _invalid(f"{filename}: neither a PNG nor JSON text (it is not UTF-8)")
    except json.JSONDecodeError as error:
        return _invalid(f"{filename}: not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})")
    except RecursionError:
        return _invalid(f"{filename}: JSON nested too deeply to be a workflow")
    if isinstance(document, dict) and "format" in document:
        try:
            workflow = parse_workflow(document)
        except WorkflowInvalid as invalid:
            problems = "; ".join(str(issue) for issue in invalid.issues[:3])
            more = f" (and {len(invalid.issues) - 3} more)" if len(invalid.issues) > 3 else ""
            return _invalid(f"{filename}: not a usable FlowCanvas workflow: {problems}{more}")
        return Recognised(
            kind=ImportKind.FLOWCANVAS,
            workflow=workflow,
            message=f"{filename}: FlowCanvas workflow {workflow.name!r} with {len(workflow.nodes)} nodes",
        )
    foreign = _describe_foreign_graph(document)
    if foreign is not None:
        kind, description = foreign
        return Recognised(kind=kind, message=f"{filename}: {description}; FlowCanvas cannot run it")
    return _invalid(f'{filename}: JSON, but not a workflow (a FlowCanvas file has "format": "{FORMAT}")')


def _recognise_png(data: bytes, filename: str) -> Recognised:
    try:
        chunks = png_text_chunks(data)
    except ValueError as error:
        return _invalid(f"{filename}: not a readable PNG ({error})")
    if PNG_WORKFLOW_KEY in chunks:
        found = _recognise_json(chunks[PNG_WORKFLOW_KEY], f"{filename} ({PNG_WORKFLOW_KEY} chunk)")
        if found.kind is not ImportKind.FLOWCANVAS or found.workflow is None:
            return _invalid(found.message)
        return found.model_copy(
            update={
                "message": f"{filename}: an image carrying the FlowCanvas workflow "
                f"{found.workflow.name!r} with {len(found.workflow.nodes)} nodes"
            }
        )
    comfy = [_chunk_description(key, chunks[key]) for key in ("workflow", "prompt") if key in chunks]
    if comfy:
        return Recognised(
            kind=ImportKind.COMFYUI,
            message=f"{filename}: a ComfyUI image carrying {' and '.join(comfy)}; FlowCanvas cannot run it",
        )
    invoke = [key for key in INVOKEAI_CHUNKS if key in chunks]
    if invoke:
        described = [_chunk_description(key, chunks[key]) for key in invoke]
        return Recognised(
            kind=ImportKind.INVOKEAI,
            message=f"{filename}: an InvokeAI image carrying {' and '.join(described)}; FlowCanvas cannot run it",
        )
    if "parameters" in chunks:
        first_line = chunks["parameters"].strip().splitlines()[0][:80] if chunks["parameters"].strip() else ""
        return Recognised(
            kind=ImportKind.A1111,
            message=f"{filename}: AUTOMATIC1111-style generation parameters ({first_line!r}), not a workflow",
        )
    return Recognised(kind=ImportKind.NO_WORKFLOW, message=f"{filename}: a PNG with no workflow in it")


def _chunk_description(key: str, text: str) -> str:
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return f"a {key!r} chunk that is not valid JSON"
    foreign = _describe_foreign_graph(document)
    if foreign is not None:
        return foreign[1]
    return f"a {key!r} chunk ({'metadata' if isinstance(document, dict) else type(document).__name__})"


def _describe_foreign_graph(document: Any) -> tuple[ImportKind, str] | None:
    """ComfyUI's UI workflow or API prompt, InvokeAI's workflow or graph: which, with its node types; else None."""
    if not isinstance(document, dict) or not document:
        return None
    nodes = document.get("nodes")
    if isinstance(nodes, list) and ("links" in document or "last_node_id" in document):
        types = [node.get("type") for node in nodes if isinstance(node, dict)]
        return ImportKind.COMFYUI, f"a ComfyUI UI workflow with {_nodes_phrase(types)}"
    if all(isinstance(entry, dict) and "class_type" in entry for entry in document.values()):
        types = [entry["class_type"] for entry in document.values()]
        return ImportKind.COMFYUI, f"a ComfyUI API prompt with {_nodes_phrase(types)}"
    if "edges" in document and isinstance(nodes, list):  # InvokeAI workflow: React Flow nodes, type under data
        types = [(node.get("data") or {}).get("type") for node in nodes if isinstance(node, dict)]
        return ImportKind.INVOKEAI, f"an InvokeAI workflow with {_nodes_phrase(types)}"
    if "edges" in document and isinstance(nodes, dict):  # InvokeAI graph: invocations by id
        types = [node.get("type") for node in nodes.values() if isinstance(node, dict)]
        return ImportKind.INVOKEAI, f"an InvokeAI graph with {_nodes_phrase(types)}"
    return None


def _nodes_phrase(types: list[Any]) -> str:
    counts = Counter(str(t) for t in types if t)
    named = ", ".join(f"{name} ×{count}" if count > 1 else name for name, count in counts.most_common(TYPES_NAMED))
    rest = len(counts) - TYPES_NAMED
    listing = f" ({named}{f', {rest} more types' if rest > 0 else ''})" if named else ""
    return f"{len(types)} node{'' if len(types) == 1 else 's'}{listing}"


def _invalid(message: str) -> Recognised:
    return Recognised(kind=ImportKind.INVALID, message=message)


# ---------------------------------------------------------------- export


def export_filename(name: str, version: int, suffix: str) -> str:
    """A safe file name for an export: the workflow's name in letters, digits, dashes, then the version."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:60] or "workflow"
    return f"{slug}-v{version}.{suffix}"


def workflow_png(document: str, title: str, image_path: Path | None = None) -> bytes:
    """A PNG carrying `document` (a saved workflow's text) in its `flowcanvas_workflow` chunk: the picture at
    `image_path` (an output of the workflow) when given and readable, else a card with the workflow's title. Any
    text the picture carried before (an older run's workflow) is left out, so the PNG opens exactly `document`."""
    picture = _read_picture(image_path) if image_path is not None else None
    if picture is None:
        picture = title_card(title)
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_WORKFLOW_KEY, document)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _read_picture(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            return image.convert("RGBA")
    except (FileNotFoundError, UnidentifiedImageError, OSError):
        return None


def title_card(title: str) -> Image.Image:
    """A dark square with `title` on it: the picture of a workflow that has no output image."""
    card = Image.new("RGB", (CARD_SIZE, CARD_SIZE), "#1f2937")
    draw = ImageDraw.Draw(card)
    font = ImageFont.load_default(size=18)
    small = ImageFont.load_default(size=12)
    draw.text((16, 16), "FlowCanvas workflow", fill="#9ca3af", font=small)
    draw.multiline_text((16, 44), "\n".join(textwrap.wrap(title, 20)[:8]), fill="#f9fafb", font=font, spacing=6)
    return card

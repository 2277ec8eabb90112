"""The node registry: the `Node` base class, the `@node` decorator, the `NodeContext` a running node is given,
and node specs (typed sockets and pydantic params).

A node is a class with a nested pydantic `Params` model and a `run(ctx, params, **inputs)` method that
returns a dict of outputs by name. Everything about its interface is declared once, with the class, and
the UI, the validator and the CLI read it from the spec. This module imports no node module: defining a
node registers it, and nodes.catalogue imports every module that defines one.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

from nodes.files import cache_folder, confined_path, model_source_allowed, refusal, unconfined_path
from nodes.types import SocketType


class NodeParams(BaseModel):
    """Base for every node's params: unknown names are errors, values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RunCancelled(Exception):
    """Raised inside a run when its cancel token is set; the executor turns it into a cancelled run."""


class NodeError(Exception):
    """A node's own, user-facing failure (bad file, wrong model family, …); `field` names the param at fault."""

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.hint = hint


@dataclass(frozen=True)
class Input:
    name: str
    type: SocketType
    description: str = ""
    optional: bool = False
    multi: bool = False  # accepts several links, in order (e.g. the images of a grid)


@dataclass(frozen=True)
class Output:
    name: str
    type: SocketType
    description: str = ""


@dataclass(frozen=True)
class OutputItem:
    """Something an output node hands to the run for storage (an encoded image, …)."""

    node_id: str
    kind: str
    data: bytes
    suffix: str
    meta: dict[str, Any] = field(default_factory=dict)


class NodeContext:
    """What a running node may ask of the run: progress, cancellation, provenance, outputs, file access, and a
    folder for derived files it may keep between runs.

    The executor creates one per node execution and wires the callbacks; nodes never see the engine.
    `cache_root` is that folder's root; without one (a node run by hand), nothing derived is kept on disk.
    """

    def __init__(
        self,
        *,
        node_id: str,
        node_type: str,
        device: str,
        on_progress: Callable[[int, int, Any], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
        png_text: Callable[[], dict[str, str]] | None = None,
        file_roots: tuple[Path, ...] | None = None,
        cache_root: Path | None = None,
        model_sources: frozenset[str] = frozenset(),
        model_memory_bytes: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.device = device
        self._on_progress = on_progress
        self._is_cancelled = is_cancelled or (lambda: False)
        self._png_text = png_text or dict
        self.file_roots = file_roots
        self.cache_root = cache_root
        self.model_sources = model_sources  # what a confined run may load besides its folders (the settings')
        self.model_memory_bytes = model_memory_bytes  # the model manager's budget (the settings'); None: its own
        self.records: dict[str, dict[str, Any]] = {"seeds": {}, "model_hashes": {}, "warnings": {}}
        self.output_items: list[OutputItem] = []

    def check_cancelled(self) -> None:
        if self._is_cancelled():
            raise RunCancelled()

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        """Report `step` of `total` (and optionally a preview image); also a cancellation point."""
        self.check_cancelled()
        if self._on_progress is not None:
            self._on_progress(step, total, preview)

    def record_seed(self, name: str, seed: int) -> None:
        self.records["seeds"][f"{self.node_id}.{name}"] = seed

    def record_model_hash(self, source: str, sha256: str) -> None:
        self.records["model_hashes"][source] = sha256

    def warn(self, message: str, field: str | None = None) -> None:
        """Something the person should know although the node ran (shown on the node, printed by the CLI). Kept
        with the node's records, so a cached result warns again."""
        self.records["warnings"].setdefault(self.node_id, []).append({"message": message, "field": field})

    def png_text(self) -> dict[str, str]:
        """The text chunks an output PNG carries: the workflow and the run record."""
        return self._png_text()

    def emit_output(self, kind: str, data: bytes, suffix: str, meta: dict[str, Any] | None = None) -> None:
        self.output_items.append(OutputItem(self.node_id, kind, data, suffix, dict(meta or {})))

    def resolve_path(self, raw: str, *, field: str) -> Path:
        """Resolve a user-given file path; when the run is confined to folders, refuse anything outside them."""
        if self.file_roots is None:
            return unconfined_path(raw)
        confined = confined_path(raw, self.file_roots)
        if confined is None:
            message, hint = refusal(raw, "file")
            raise NodeError(message, field=field, hint=hint)
        return confined

    def cache_dir(self, name: str) -> Path | None:
        """The folder for one kind of derived, re-computable file (BOSS cost matrices, …); None: keep none."""
        return None if self.cache_root is None else cache_folder(self.cache_root, name)

    def check_model_source(self, source: str, *, field: str) -> None:
        """Refuse a model source a confined run may not load (see nodes.files)."""
        if self.file_roots is not None and not model_source_allowed(source, self.file_roots, self.model_sources):
            message, hint = refusal(source, "model")
            raise NodeError(message, field=field, hint=hint)


class Node:
    """Base class of all nodes; the `@node` decorator fills the class variables."""

    type: ClassVar[str]
    category: ClassVar[str]
    version: ClassVar[int]
    description: ClassVar[str]
    inputs: ClassVar[tuple[Input, ...]] = ()
    outputs: ClassVar[tuple[Output, ...]] = ()
    output_node: ClassVar[bool] = False
    # A primitive outputs this param's value unchanged, so validation can check it against the params it feeds.
    constant_param: ClassVar[str | None] = None
    # Upgrades params saved by an older type_version: {old_version: function(params) -> params of old_version+1}.
    upgrades: ClassVar[dict[int, Callable[[dict[str, Any]], dict[str, Any]]]] = {}

    class Params(NodeParams):
        pass

    def run(self, ctx: NodeContext, params: Any, **inputs: Any) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def check(cls, params: Any) -> list[tuple[str, str]]:
        """Cross-field checks beyond single-field bounds: a list of (field, message)."""
        return []

    @classmethod
    def fingerprint(cls, params: Any, ctx: NodeContext) -> str | None:
        """Extra cache-key material for nodes whose result depends on more than their params (file content)."""
        return None


_REGISTRY: dict[str, type[Node]] = {}


def node(
    type: str,
    *,
    category: str,
    version: int = 1,
    inputs: tuple[Input, ...] | list[Input] = (),
    outputs: tuple[Output, ...] | list[Output] = (),
    output_node: bool = False,
    description: str | None = None,
) -> Callable[[type[Node]], type[Node]]:
    """Register a node class under a type name. The docstring is the description unless one is given."""

    def register(cls: type[Node]) -> type[Node]:
        if type in _REGISTRY and _REGISTRY[type] is not cls:
            raise ValueError(f"node type {type!r} is registered twice")
        names = [i.name for i in inputs] + list(cls.Params.model_fields)
        if len(names) != len(set(names)):
            raise ValueError(f"node type {type!r}: input and param names must be distinct")
        cls.type = type
        cls.category = category
        cls.version = version
        cls.inputs = tuple(inputs)
        cls.outputs = tuple(outputs)
        cls.output_node = output_node
        cls.description = (description or cls.__doc__ or "").strip()
        _REGISTRY[type] = cls
        return cls

    return register


def registered(type_name: str) -> type[Node] | None:
    """The class registered under a type name, among the modules imported so far (see nodes.catalogue)."""
    return _REGISTRY.get(type_name)


def registered_classes() -> list[type[Node]]:
    """Every class registered so far, by category then type name."""
    return sorted(_REGISTRY.values(), key=lambda c: (c.category, c.type))


def unregister(type_name: str) -> None:
    """Remove a node type (tests register throwaway types)."""
    _REGISTRY.pop(type_name, None)


# ---- param introspection (shared by validation, the catalogue and CLI value coercion) ----

_SCALAR_SOCKETS: dict[Any, SocketType] = {
    int: SocketType.INT,
    float: SocketType.FLOAT,
    str: SocketType.STRING,
    bool: SocketType.BOOLEAN,
}


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def param_socket_type(info: FieldInfo) -> SocketType | None:
    """The socket type a param accepts when wired from another node (None: not wireable)."""
    annotation, _ = _unwrap_optional(info.annotation)
    if get_origin(annotation) is Literal:
        values = get_args(annotation)
        return _SCALAR_SOCKETS.get(builtins_type(values[0])) if values else None
    if get_origin(annotation) is list and get_args(annotation) == (str,):
        return SocketType.PROMPTS
    return _SCALAR_SOCKETS.get(annotation)


def builtins_type(value: Any) -> Any:
    return bool if isinstance(value, bool) else value.__class__


def param_choices(info: FieldInfo) -> list[Any] | None:
    annotation, _ = _unwrap_optional(info.annotation)
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return None


def param_spec(name: str, info: FieldInfo) -> dict[str, Any]:
    """A JSON-ready description of one param: what the UI needs to build its widget."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    # The label a person reads: the Field's title, else the name humanised as the canvas's nodes_view.mjs
    # humanise() does socket names ("negative_prompt" → "Negative prompt", "vae_tiling" → "VAE tiling");
    # `name` stays the key in documents.
    spaced = " ".join(word.upper() if word in {"cfg", "lr", "nfe", "t5", "vae"} else word for word in name.split("_"))
    spec: dict[str, Any] = {
        "name": name,
        "title": info.title or spaced[:1].upper() + spaced[1:],
        "type": str(param_socket_type(info) or "JSON"),
        "required": info.is_required(),
        "default": None if info.is_required() else info.get_default(call_default_factory=True),
        "description": info.description or "",
    }
    for meta in info.metadata:
        if isinstance(meta, annotated_types.Ge):
            spec["minimum"] = meta.ge
        elif isinstance(meta, annotated_types.Gt):
            spec["exclusive_minimum"] = meta.gt
        elif isinstance(meta, annotated_types.Le):
            spec["maximum"] = meta.le
        elif isinstance(meta, annotated_types.Lt):
            spec["exclusive_maximum"] = meta.lt
        elif isinstance(meta, annotated_types.MaxLen):
            spec["max_length"] = meta.max_length
        elif isinstance(meta, annotated_types.MinLen):
            spec["min_length"] = meta.min_length
        elif getattr(meta, "pattern", None) is not None:
            spec["pattern"] = meta.pattern
    choices = param_choices(info)
    if choices is not None:
        spec["choices"] = choices
    for key in ("widget", "step", "label", "reads", "vocabulary_from"):
        if key in extra:
            spec[key] = extra[key]
    return spec


def node_spec(cls: type[Node]) -> dict[str, Any]:
    return {
        "type": cls.type,
        "category": cls.category,
        "version": cls.version,
        "description": cls.description,
        "output_node": cls.output_node,
        "inputs": [
            {
                "name": i.name,
                "type": str(i.type),
                "description": i.description,
                "optional": i.optional,
                "multi": i.multi,
            }
            for i in cls.inputs
        ],
        "outputs": [{"name": o.name, "type": str(o.type), "description": o.description} for o in cls.outputs],
        "params": [param_spec(name, info) for name, info in cls.Params.model_fields.items()],
    }

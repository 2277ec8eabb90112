"""Execute a plan: topological order, ancestry-signature cache, progress events, cancellation, timings.

A node's cache key is the SHA-256 of canonical JSON of its type, type version, validated params, the
keys of the outputs it reads and, for nodes that read files, a fingerprint of their content (ComfyUI's
ancestry signature; never Python `hash()` or pickle). Output nodes always run, reading cached inputs.
The engine knows nothing about torch: values are opaque, sized by `nodes.types.value_nbytes`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nodes.registry import Node, NodeContext, NodeError, OutputItem, RunCancelled
from nodes.types import value_nbytes
from pipelines.plan import Plan
from pipelines.validate import PlanNode
from pipelines.workflow import Link
from storage.config import data_home, read_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunEvent:
    kind: str
    run_id: str
    node: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


EventSink = Callable[[RunEvent], None]


class CancelToken:
    """Set once to cancel; checked between nodes and at every progress step inside nodes."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class NodeFailed(Exception):
    """A node raised; carries its id and type so the error maps back to the canvas."""

    def __init__(
        self,
        node_id: str,
        node_type: str,
        message: str,
        *,
        field: str | None = None,
        hint: str | None = None,
        details: str | None = None,
    ) -> None:
        super().__init__(f"node {node_id!r} ({node_type}) failed: {message}")
        self.node_id = node_id
        self.node_type = node_type
        self.message = message
        self.field = field
        self.hint = hint
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "node_type": self.node_type,
            "field": self.field,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass
class CacheEntry:
    outputs: dict[str, Any]
    records: dict[str, dict[str, Any]]
    nbytes: int


class OutputCache:
    """Node outputs by cache key, least recently used evicted first once over the memory budget."""

    def __init__(self, budget_bytes: int = 2 * 1024**3) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, outputs: dict[str, Any], records: dict[str, dict[str, Any]]) -> None:
        size = value_nbytes(outputs)
        if size > self.budget_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._entries[key] = CacheEntry(outputs, records, size)
            self.nbytes += size
            while self.nbytes > self.budget_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self.nbytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    def entries(self) -> list[tuple[str, CacheEntry]]:
        """A snapshot of (key, entry), least recently used first: what views of loaded models read."""
        with self._lock:
            return list(self._entries.items())

    def drop(self, keys: Iterable[str]) -> int:
        """Remove these entries, and every entry whose outputs include one of their output values (a value passed
        on unchanged, say), so the cache no longer keeps those values alive. Returns how many entries went."""
        with self._lock:
            chosen = [self._entries[key] for key in keys if key in self._entries]
            held = {id(value) for entry in chosen for value in entry.outputs.values()}
            doomed = [
                key
                for key, entry in self._entries.items()
                if any(entry is c for c in chosen) or any(id(value) in held for value in entry.outputs.values())
            ]
            for key in doomed:
                self.nbytes -= self._entries.pop(key).nbytes
            return len(doomed)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries


@dataclass
class RunResult:
    output_items: list[OutputItem]
    timings: dict[str, float]
    executed: list[str]
    cached: list[str]
    seeds: dict[str, Any]
    model_hashes: dict[str, str]
    target_outputs: dict[str, dict[str, Any]]  # the values of the output (or target) nodes


def _defaults(cls: type[Node]) -> dict[str, Any]:
    found = getattr(cls, "_param_defaults", None)
    if found is None or found[0] is not cls:
        found = (
            cls,
            {
                name: info.get_default(call_default_factory=True)
                for name, info in cls.Params.model_fields.items()
                if not info.is_required()
            },
        )
        cls._param_defaults = found  # type: ignore[attr-defined]
    return found[1]


def cache_key(node: PlanNode, params_json: dict[str, Any], input_keys: dict[str, Any], fingerprint: str | None) -> str:
    material = {
        "type": node.cls.type,
        "version": node.cls.version,
        "params": params_json,
        "inputs": input_keys,
        "fingerprint": fingerprint,
    }
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Executor:
    """Runs plans on one device; its output cache persists across runs (the job worker owns one).

    `cache_root` is where nodes keep derived files between runs (model hashes, BOSS cost matrices, preview
    fits); by default `cache/` in the data folder, read when a run starts."""

    def __init__(
        self, *, device: str = "cpu", cache: OutputCache | None = None, cache_root: Path | None = None
    ) -> None:
        self.device = device
        self.cache = cache if cache is not None else OutputCache()
        self.cache_root = cache_root

    def execute(
        self,
        plan: Plan,
        *,
        run_id: str,
        sinks: Iterable[EventSink] = (),
        cancel: CancelToken | None = None,
        png_text: Callable[[dict[str, Any]], dict[str, str]] | None = None,
        file_roots: tuple[Path, ...] | None = None,
    ) -> RunResult:
        """Execute every node of the plan in order. Raises NodeFailed or RunCancelled."""
        sinks = list(sinks)
        cancel = cancel or CancelToken()
        values: dict[str, dict[str, Any]] = {}
        keys: dict[str, str] = {}
        remaining = dict(plan.consumers)
        result = RunResult([], {}, [], [], {}, {}, {})
        records: dict[str, dict[str, Any]] = {"seeds": result.seeds, "model_hashes": result.model_hashes}
        settings = read_settings()
        cache_root = self.cache_root if self.cache_root is not None else data_home() / "cache"

        def emit(kind: str, node: str | None = None, **data: Any) -> None:
            event = RunEvent(kind, run_id, node, data)
            for sink in sinks:
                try:
                    sink(event)
                except Exception:  # a broken listener must not break the run
                    log.exception("event sink failed on %s", kind)

        def current_png_text() -> dict[str, str]:
            return png_text(records) if png_text is not None else {}

        for node in plan.nodes:
            if cancel.cancelled:
                raise RunCancelled()
            inputs = {name: self._read(value, values) for name, value in node.inputs.items()}
            params = self._validated_params(node, values)
            ctx = NodeContext(
                node_id=node.id,
                node_type=node.cls.type,
                device=self.device,
                on_progress=lambda step, total, preview, nid=node.id: emit(
                    "node_progress",
                    nid,
                    step=step,
                    total=total,
                    **({"preview_png": preview} if preview is not None else {}),
                ),
                is_cancelled=lambda: cancel.cancelled,
                png_text=current_png_text,
                file_roots=file_roots,
                cache_root=cache_root,
                model_sources=settings.model_sources,
                model_memory_bytes=int(settings.model_memory_gb * 1024**3),
            )
            input_keys = {name: _link_keys(value, keys) for name, value in node.inputs.items()}
            input_keys.update(
                {f"wired:{name}": [keys[link.node], link.output] for name, link in node.wired_params.items()}
            )
            fingerprint = self._guard(node, partial(node.cls.fingerprint, params, ctx))
            key = cache_key(node, params.model_dump(mode="json"), input_keys, fingerprint)
            keys[node.id] = key

            entry = None if node.cls.output_node else self.cache.get(key)
            if entry is not None:
                outputs = entry.outputs
                _merge(records, entry.records)
                result.cached.append(node.id)
                emit("node_cached", node.id)
                own_records = entry.records
            else:
                emit("node_started", node.id, type=node.cls.type)
                started = time.perf_counter()
                outputs = self._guard(node, partial(node.cls().run, ctx, params, **inputs))
                seconds = time.perf_counter() - started
                self._check_outputs(node, outputs)
                _merge(records, ctx.records)
                result.timings[node.id] = seconds
                result.executed.append(node.id)
                result.output_items.extend(ctx.output_items)
                if not node.cls.output_node:
                    self.cache.put(key, outputs, ctx.records)
                emit("node_finished", node.id, seconds=seconds)
                own_records = ctx.records
            warnings = [w for listed in own_records.get("warnings", {}).values() for w in listed]
            if warnings:
                emit("node_warning", node.id, warnings=warnings)
            values[node.id] = outputs
            if node.id in plan.output_nodes:
                result.target_outputs[node.id] = outputs
            for source in _sources(node):
                remaining[source] -= 1
                if remaining[source] == 0 and source not in plan.output_nodes:
                    values.pop(source, None)  # nothing later reads it: let it go (the cache may still hold it)
        return result

    @staticmethod
    def _read(value: Link | list[Link], values: dict[str, dict[str, Any]]) -> Any:
        if isinstance(value, list):
            return [values[link.node][link.output] for link in value]
        return values[value.node][value.output]

    def _validated_params(self, node: PlanNode, values: dict[str, dict[str, Any]]) -> Any:
        raw = {**_defaults(node.cls), **node.params}
        for name, link in node.wired_params.items():
            raw[name] = values[link.node][link.output]
        try:
            params = node.cls.Params.model_validate(raw)
        except ValidationError as error:
            item = error.errors()[0]
            name = str(item["loc"][0]) if item["loc"] else None
            source = node.wired_params.get(name or "")
            origin = f" (fed by {source.node}.{source.output})" if source else ""
            raise NodeFailed(node.id, node.cls.type, f"param {name!r}{origin}: {item['msg']}", field=name) from None
        problems = node.cls.check(params)
        if problems:
            name, message = problems[0]
            raise NodeFailed(node.id, node.cls.type, message, field=name)
        return params

    @staticmethod
    def _guard(node: PlanNode, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (RunCancelled, NodeFailed):
            raise
        except NodeError as error:
            raise NodeFailed(node.id, node.cls.type, str(error), field=error.field, hint=error.hint) from error
        except Exception as error:
            raise NodeFailed(
                node.id, node.cls.type, f"{type(error).__name__}: {error}", details=traceback.format_exc()
            ) from error

    @staticmethod
    def _check_outputs(node: PlanNode, outputs: Any) -> None:
        declared = {o.name for o in node.cls.outputs}
        if not isinstance(outputs, dict) or not declared <= set(outputs):
            got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
            raise NodeFailed(node.id, node.cls.type, f"returned {got}, expected outputs {sorted(declared)}")


def _link_keys(value: Link | list[Link], keys: dict[str, str]) -> list[Any]:
    links = value if isinstance(value, list) else [value]
    return [[keys[link.node], link.output] for link in links]


def _sources(node: PlanNode) -> set[str]:
    found = {link.node for link in node.wired_params.values()}
    for value in node.inputs.values():
        found.update(link.node for link in (value if isinstance(value, list) else [value]))
    return found


def _merge(into: dict[str, dict[str, Any]], records: dict[str, dict[str, Any]]) -> None:
    for name, entries in records.items():
        into.setdefault(name, {}).update(entries)

"""The Models view: the model sources this server offers, what is loaded (where, how much memory), and freeing.

Sources are the embedded models (models/*) and those an administrator configured in FLOWCANVAS_MODEL_SOURCES
(folders, single .safetensors files, hub ids), each with its family and, on request, its content hash (hashing
reads every weight file once; the loader caches the result). What is loaded, and freeing it, the view asks of
the worker pool (pipelines.jobs.WorkerPool.loaded_models and free_models), which knows where models are held.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from pydantic import BaseModel

from app.ui.studio import Studio
from nodes.files import EMBEDDED_PREFIX
from nodes.models import loader
from storage.config import data_home, read_settings

MODELS_TAB = "models"
SOURCE_HEADERS = ["source", "kind", "family", "location", "sha256"]
LOADED_HEADERS = ["source", "family", "dtype", "device", "memory", "held by"]
PRIVATE: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}


class SourceInfo(BaseModel):
    source: str
    kind: str  # embedded, folder, file or hub
    family: str  # sd3 or flux, or why it cannot be told
    location: str
    sha256: str | None = None


def offered_sources() -> list[str]:
    """The embedded models, then the configured sources, each once."""
    embedded = sorted(
        f"{EMBEDDED_PREFIX}{folder.name}"
        for folder in loader.REPO_MODELS.glob("*")
        if (folder / "model_index.json").is_file()
    )
    return list(dict.fromkeys([*embedded, *sorted(read_settings().model_sources)]))


def describe_source(source: str, *, with_hash: bool = False) -> SourceInfo:
    """Kind, family and location of a source (a problem with it shows in `family`); its hash when asked."""
    kind = "embedded" if source.startswith(EMBEDDED_PREFIX) else "?"
    try:
        resolved = loader.resolve_source(source)
        kind = "embedded" if kind == "embedded" else resolved.kind
        family = loader.source_family(resolved)
        sha256 = loader.content_hash(resolved, data_home() / "cache") if with_hash else None
    except loader.ModelLoadError as problem:
        return SourceInfo(source=source, kind=kind, family=f"unusable: {problem}", location="")
    return SourceInfo(source=source, kind=kind, family=family, location=resolved.location, sha256=sha256)


def _memory(nbytes: int) -> str:
    return f"{nbytes / 1024**2:,.1f} MiB"


def _table(headers: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"headers": headers, "data": rows}


class ModelsView:
    def __init__(self, studio: Studio) -> None:
        self.pool = studio.pool
        self.hashes: dict[str, str] = {}  # computed on request in this process (the loader caches them on disk)

    def build(self) -> None:
        with gr.Tab("Models", id=MODELS_TAB) as tab:
            gr.Markdown(
                "Model sources this server offers: the embedded models and those configured in "
                "`FLOWCANVAS_MODEL_SOURCES`. Computing hashes reads every weight file once."
            )
            self.sources = gr.Dataframe(
                headers=SOURCE_HEADERS, interactive=False, wrap=True, label="Sources", elem_id="models-sources"
            )
            with gr.Row():
                refresh_sources = gr.Button("Refresh sources")
                compute_hashes = gr.Button("Compute hashes", elem_id="models-hash")
            self.loaded = gr.Dataframe(
                headers=LOADED_HEADERS, interactive=False, wrap=True, label="Loaded now", elem_id="models-loaded"
            )
            with gr.Row(equal_height=True):
                self.choice = gr.Dropdown(label="Model", choices=[], value=None, elem_id="models-choice", scale=3)
                free_one = gr.Button("Free", elem_id="models-free", scale=0)
                free_all = gr.Button("Free all", variant="stop", elem_id="models-free-all", scale=0)
                refresh_loaded = gr.Button("Refresh", elem_id="models-refresh", scale=0)
            self.status = gr.Textbox(label="Status", interactive=False, elem_id="models-status")
        everything = [self.sources, self.loaded, self.choice, self.status]
        tab.select(lambda: {**self._sources(False), **self._loaded()}, outputs=everything, **PRIVATE)
        refresh_sources.click(lambda: self._sources(False), outputs=everything, **PRIVATE)
        compute_hashes.click(lambda: self._sources(True), outputs=everything, **PRIVATE)
        refresh_loaded.click(self._loaded, outputs=everything, **PRIVATE)
        free_one.click(self._free_one, inputs=self.choice, outputs=everything, **PRIVATE)
        free_all.click(lambda: self._free(None), outputs=everything, **PRIVATE)

    def _sources(self, with_hash: bool) -> dict[Any, Any]:
        loaded = {row.source: row.sha256 for row in self.pool.loaded_models()}
        rows = []
        for source in offered_sources():
            info = describe_source(source, with_hash=with_hash)
            if info.sha256 is not None:
                self.hashes[source] = info.sha256
            sha256 = info.sha256 or self.hashes.get(source) or loaded.get(source) or "(not computed)"
            rows.append([info.source, info.kind, info.family, info.location, sha256])
        return {self.sources: _table(SOURCE_HEADERS, rows)}

    def _loaded(self) -> dict[Any, Any]:
        rows = self.pool.loaded_models()
        sources = list(dict.fromkeys(row.source for row in rows))
        return {
            self.loaded: _table(
                LOADED_HEADERS,
                [
                    [row.source, row.family, row.dtype, row.device, _memory(row.nbytes), ", ".join(row.held_by)]
                    for row in rows
                ],
            ),
            self.choice: gr.update(choices=sources, value=sources[0] if sources else None),
        }

    def _free_one(self, source: str | None) -> dict[Any, Any]:
        if not source:
            return {self.status: "Pick a loaded model to free first."}
        return self._free(source)

    def _free(self, source: str | None) -> dict[Any, Any]:
        freed = self.pool.free_models(source)
        what = "every loaded model" if source is None else repr(source)
        return {**self._loaded(), self.status: f"Freed {what}: {freed} model(s) released."}


def build(studio: Studio) -> None:
    ModelsView(studio).build()

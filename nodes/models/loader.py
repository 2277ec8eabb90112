"""Loading SD3 / FLUX models through diffusers, and the model manager that keeps them.

Sources: `embedded:<name>` (a folder under the repository's `models/`), a local diffusers folder, a single
`.safetensors` file (`from_single_file`), or a hub id (from the local Hugging Face cache, or downloaded
when a network is there). Weights load through safetensors only. Every failure is a `ModelLoadError`
whose message names the source and says what to do. The manager loads each (source, options) once and
keeps an LRU under a memory budget. Weight hashes and preview fits are kept in the cache folder the caller
names (`cache_root`; a run's comes from its NodeContext), or nowhere when it names none.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nodes.files import cache_folder
from nodes.models.base import FlowModel
from nodes.models.components import VAE, TextEncoder
from nodes.registry import Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.types import SocketType
from nodes.vocabulary import Vocabulary

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
PIPELINE_FAMILIES = {"StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux"}
# Token counts the family's released models were trained with, used when a folder does not say.
DEFAULT_MAX_SEQUENCE_LENGTH = {"sd3": 256, "flux-dev": 512, "flux-schnell": 256}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
METADATA_FILE = "flowcanvas.json"  # written next to the weights: {"max_sequence_length": N, ...}
FAMILY_NAMES = {"sd3": "an SD3", "flux": "a FLUX"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ModelLoadError(Exception):
    """A model could not be loaded; the message names the source and what to do, `field` the param at fault."""

    def __init__(self, message: str, *, field: str = "source") -> None:
        super().__init__(message)
        self.field = field


class LoadOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    family: Literal["auto", "sd3", "flux"] = "auto"
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    device: str = "cpu"
    offload: Literal["none", "model", "group", "sequential"] = "none"
    vae_tiling: bool = False
    vae_slicing: bool = False
    compile: bool = False
    drop_t5: bool = False
    max_sequence_length: int = 0  # 0: the model's own
    config_folder: str = ""  # for single files offline: a diffusers folder with the matching configs


@dataclass
class LoadedModel:
    model: FlowModel
    text_encoder: TextEncoder
    vae: VAE
    nbytes: int


@dataclass(frozen=True)
class Source:
    kind: Literal["folder", "file", "hub"]
    location: str  # a path, or a hub id
    label: str  # what the user wrote


def installed_embedded_models() -> list[str]:
    """The names of the models under the repository's models/ folder (embedded:<name>)."""
    return sorted(p.name for p in REPO_MODELS.iterdir() if (p / "model_index.json").is_file())


def embedded_problem(source: str) -> str | None:
    """Why an `embedded:<name>` source names no installed model (only installed names count, so "", ".." and
    paths never reach the file system), or None."""
    name = source.strip().removeprefix("embedded:")
    installed = installed_embedded_models()
    if name in installed:
        return None
    return f"there is no embedded model {name!r} (installed: {', '.join(installed) or 'none'})"


def resolve_source(source: str) -> Source:
    text = source.strip()
    if not text:
        raise ModelLoadError("no model source given: enter embedded:shapes, a folder, a .safetensors file or a hub id")
    if text.startswith("embedded:"):
        problem = embedded_problem(text)
        if problem is not None:
            raise ModelLoadError(problem)
        return Source("folder", str(REPO_MODELS / text.removeprefix("embedded:")), text)
    try:
        path = Path(text).expanduser()
    except RuntimeError as error:  # "~user" for an unknown user, or no home directory
        raise ModelLoadError(f"cannot resolve {text!r}: {error}") from None
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(f"{text!r} is a folder but not a diffusers model (no model_index.json in it)")
        return Source("folder", str(path.resolve()), text)
    if path.suffix.lower() in (".safetensors", ".sft"):
        if not path.is_file():
            raise ModelLoadError(f"no file at {text!r}")
        return Source("file", str(path.resolve()), text)
    if path.suffix.lower() in (".ckpt", ".pt", ".pth", ".bin"):
        raise ModelLoadError(f"{text!r}: only .safetensors weights are loaded (pickle-based files can run code)")
    if not HUB_ID.match(text):
        raise ModelLoadError(f"no model folder or file at {text!r} (and it is not a hub id of the form owner/name)")
    return Source("hub", text, text)


# Files a model folder may hold beside the model that are derived from it, not part of what it computes (a
# node that reads one records its own hash): the data-sparse directions of pruned source noise.
AXES_FILE = "source_axes.safetensors"


def content_hash(source: Source, cache_root: Path | None = None) -> str:
    """SHA-256 over a model's files (weights, configs, tokenizers, flowcanvas.json: name and content),
    cached under `cache_root` by path, size and modification time, so any change on disk means a new hash
    and a fresh load."""
    if source.kind == "hub":
        return f"hub:{source.location}"
    root = Path(source.location)
    files = (
        [root]
        if root.is_file()
        else sorted(
            f
            for f in root.rglob("*")
            if f.is_file()
            and f.name != AXES_FILE
            and not any(part.startswith(".") for part in f.relative_to(root).parts)
        )
    )
    stamp = [
        (str(f.relative_to(root) if root.is_dir() else f.name), f.stat().st_size, f.stat().st_mtime_ns) for f in files
    ]
    stamp_key = hashlib.sha256(json.dumps([str(root), stamp]).encode()).hexdigest()
    cache_file = None if cache_root is None else cache_folder(cache_root, "model_hashes") / f"{stamp_key}.txt"
    if cache_file is not None and cache_file.is_file():
        return cache_file.read_text().strip()
    digest = hashlib.sha256()
    for file, (name, _, _) in zip(files, stamp):
        digest.update(name.encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    value = digest.hexdigest()
    if cache_file is not None:
        cache_file.write_text(value)
    return value


def _folder_family(folder: Path) -> tuple[str, dict[str, Any]]:
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"cannot read {folder / 'model_index.json'}: {error}") from None
    class_name = index.get("_class_name", "?")
    family = PIPELINE_FAMILIES.get(class_name)
    if family is None:
        raise ModelLoadError(
            f"{folder} holds a {class_name}, not a supported flow model (supported: {', '.join(PIPELINE_FAMILIES)})"
        )
    return family, index


def _file_family(path: Path) -> str:
    """Tell SD3 from FLUX by the tensor names in a single-file checkpoint (reads only the header)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as error:  # safetensors raises its own error types for a damaged header
        raise ModelLoadError(f"{path} is not a readable .safetensors file (corrupted or truncated?): {error}") from None
    if any("joint_blocks" in k for k in keys):
        return "sd3"
    if any("double_blocks" in k or "single_transformer_blocks" in k for k in keys):
        return "flux"
    raise ModelLoadError(f"{path} does not look like an SD3 or FLUX checkpoint")


def _pipeline_class(family: str) -> Any:
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    return StableDiffusion3Pipeline if family == "sd3" else FluxPipeline


def _dtype(options: LoadOptions) -> torch.dtype:
    if options.dtype != "auto":
        return DTYPES[options.dtype]
    return torch.bfloat16 if options.device.startswith("cuda") else torch.float32


def source_family(source: Source) -> str:
    """ "sd3" or "flux": read from model_index.json for a folder, the safetensors header for a file, the name
    for a hub id; ModelLoadError when it cannot be told."""
    if source.kind == "folder":
        return _folder_family(Path(source.location))[0]
    if source.kind == "file":
        return _file_family(Path(source.location))
    return _hub_family(source.location)


def load_model(source_text: str, options: LoadOptions, cache_root: Path | None = None) -> LoadedModel:
    """Load a model as its three wire values; raises ModelLoadError with a clear message."""
    source = resolve_source(source_text)
    if not options.device.startswith("cuda"):  # refuse before reading gigabytes of weights
        if options.offload != "none":
            raise ModelLoadError(
                f"{source.label!r}: offload {options.offload!r} needs a CUDA GPU; on CPU use offload none",
                field="offload",
            )
        if options.compile:
            raise ModelLoadError(
                f"{source.label!r}: torch.compile is offered on CUDA GPUs only (on CPU it costs "
                "minutes and gains nothing)",
                field="compile",
            )
    dtype = _dtype(options)
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True}
    metadata: dict[str, Any] = {}
    saved_without_t5 = False
    if source.kind == "folder":
        family, index = _folder_family(Path(source.location))
        saved_without_t5 = (index.get("text_encoder_3") or [None])[0] is None
        metadata = _read_metadata(Path(source.location) / METADATA_FILE)
    elif source.kind == "hub" and options.family != "auto":
        family = options.family  # a hub id's name need not say its family
    else:
        family = source_family(source)
    if options.family != "auto" and options.family != family:
        raise ModelLoadError(
            f"{source.label!r} is {FAMILY_NAMES[family]} model, but family {options.family!r} was asked for",
            field="family",
        )
    if family == "sd3" and (options.drop_t5 or (source.kind == "folder" and saved_without_t5)):
        # diffusers cannot reload a T5-less SD3 folder unless told, and dropping T5 saves ~9.5 GB in fp16
        kwargs.update(text_encoder_3=None, tokenizer_3=None)
    pipe = _load_pipeline(family, source, options, kwargs)
    return _assemble(pipe, family, source, options, metadata, cache_root)


def _read_metadata(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"cannot read {path}: {error}") from None
    if not isinstance(metadata, dict):
        raise ModelLoadError(f'{path} must hold a JSON object such as {{"max_sequence_length": 77}}')
    return metadata


def _hub_family(hub_id: str) -> str:
    lowered = hub_id.lower()
    if "flux" in lowered:
        return "flux"
    if "stable-diffusion-3" in lowered or "sd3" in lowered:
        return "sd3"
    raise ModelLoadError(f"cannot tell the family of {hub_id!r} from its name: set family to sd3 or flux")


def _load_pipeline(family: str, source: Source, options: LoadOptions, kwargs: dict[str, Any]) -> Any:
    import diffusers
    import transformers

    # The run's own progress events report loading; the libraries' bars would only clutter the terminal.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    pipeline_class = _pipeline_class(family)
    try:
        if source.kind == "folder":
            return pipeline_class.from_pretrained(source.location, local_files_only=True, **kwargs)
        if source.kind == "file":
            if options.config_folder:
                kwargs["config"] = options.config_folder
            return pipeline_class.from_single_file(source.location, **kwargs)
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        return pipeline_class.from_pretrained(source.location, local_files_only=offline, **kwargs)
    except Exception as error:  # diffusers and the hub client raise many types (OS, value, connection, auth…)
        raise ModelLoadError(_explain(source, error)) from None


def _explain(source: Source, error: Exception) -> str:
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if source.kind == "hub":
        hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
        return (
            f"model {source.location!r} is not in the local Hugging Face cache ({hf_home}) and could not be "
            f"downloaded ({detail}). On a machine with a network run `huggingface-cli download "
            f"{source.location}`, copy the cache here, or download the folder and enter its path as the model"
        )
    if source.kind == "file":
        return (
            f"cannot load the single-file checkpoint {source.location!r} ({detail}). Offline, single files "
            f"need the matching diffusers configs: set config_folder to a local diffusers folder of the same model"
        )
    return f"cannot load the model folder {source.location!r} ({detail})"


def _assemble(
    pipe: Any, family: str, source: Source, options: LoadOptions, metadata: dict[str, Any], cache_root: Path | None
) -> LoadedModel:
    from nodes.models.flux import FluxModel
    from nodes.models.sd3 import SD3Model

    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    _place(pipe, options)
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    if options.vae_slicing:
        pipe.vae.enable_slicing()
    sha = content_hash(source, cache_root)
    model = (SD3Model if family == "sd3" else FluxModel)(pipe, source=source.label, sha256=sha, cache_root=cache_root)
    if options.compile:
        if family == "flux":
            pipe.transformer.compile_repeated_blocks(fullgraph=True)
        else:
            pipe.transformer = torch.compile(pipe.transformer)
            model.transformer = pipe.transformer
    # 0 in flowcanvas.json is meaningful: a model trained without T5 tokens (the embedded one) takes none.
    saved_length = metadata.get("max_sequence_length")
    length = options.max_sequence_length or (
        int(saved_length) if saved_length is not None else _default_length(family, pipe)
    )
    encoder = TextEncoder(family, pipe, length, source.label, model.device, read_vocabulary(metadata))
    nbytes = sum(
        p.numel() * p.element_size()
        for c in pipe.components.values()
        if isinstance(c, torch.nn.Module)
        for p in c.parameters()
    )
    return LoadedModel(model, encoder, VAE(family, pipe.vae, source.label), nbytes)


def read_vocabulary(metadata: dict[str, Any]) -> Vocabulary | None:
    """The closed vocabulary a model's flowcanvas.json declares, or None (an open-vocabulary model)."""
    if "vocabulary" not in metadata:
        return None
    try:
        return Vocabulary.model_validate(metadata["vocabulary"])
    except ValidationError as error:
        raise ModelLoadError(f"{METADATA_FILE}: vocabulary: {error.errors()[0]['msg']}") from None


def embedded_vocabularies() -> dict[str, Vocabulary]:
    """Each embedded model's declared vocabulary, by source ("embedded:shapes"), read without loading weights."""
    found = {}
    for folder in sorted(REPO_MODELS.glob("*")):
        try:
            vocabulary = read_vocabulary(_read_metadata(folder / METADATA_FILE))
        except ModelLoadError:
            continue  # loading that model reports it
        if vocabulary is not None:
            found[f"embedded:{folder.name}"] = vocabulary
    return found


def _default_length(family: str, pipe: Any) -> int:
    if family == "flux":
        return DEFAULT_MAX_SEQUENCE_LENGTH["flux-dev" if pipe.transformer.config.guidance_embeds else "flux-schnell"]
    return DEFAULT_MAX_SEQUENCE_LENGTH["sd3"]


def _place(pipe: Any, options: LoadOptions) -> None:
    device = options.device
    if options.offload != "none":
        if options.offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif options.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
                module = getattr(pipe, name, None)
                if module is not None and hasattr(module, "enable_group_offload"):
                    module.enable_group_offload(
                        onload_device=torch.device(device),
                        offload_type="block_level",
                        num_blocks_per_group=1,
                        use_stream=True,
                    )
        return
    pipe.to(device)


# The model manager's budget when the run names none (FLOWCANVAS_MODEL_MEMORY_GB, read by the engine, names it).
DEFAULT_MODEL_MEMORY_BYTES = 16 * 1024**3


class ModelManager:
    """Loads each (source, options) once; least recently used models are freed beyond the memory budget."""

    def __init__(self, budget_bytes: int = DEFAULT_MODEL_MEMORY_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self._models: OrderedDict[tuple[str, LoadOptions, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self, source: str, options: LoadOptions, cache_root: Path | None = None, budget_bytes: int | None = None
    ) -> LoadedModel:
        """The model loaded from `source` with `options`; loaded now unless it is kept already (then it keeps
        the cache folder it was loaded with). `budget_bytes`, when given, becomes the budget from now on (a run
        brings the configured one)."""
        if budget_bytes is not None:
            self.budget_bytes = budget_bytes
        # The weights' hash is part of the key: changed files on disk mean a fresh load, never a stale model.
        sha = content_hash(resolve_source(source), cache_root)
        key = (source, options, sha)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            for stale in [k for k in self._models if k[:2] == key[:2]]:
                self._free(stale)
            loaded = load_model(source, options, cache_root)
            self._models[key] = loaded
            while len(self._models) > 1 and sum(m.nbytes for m in self._models.values()) > self.budget_bytes:
                self._free(next(iter(self._models)))
            return loaded

    def loaded(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {**m.model.describe(), "options": k[1].model_dump(), "bytes": m.nbytes} for k, m in self._models.items()
            ]

    def free(self, source: str | None = None) -> int:
        """Free one source's models (all when None); returns how many were freed."""
        with self._lock:
            keys = [k for k in self._models if source is None or k[0] == source]
            for key in keys:
                self._free(key)
            return len(keys)

    def _free(self, key: tuple[str, LoadOptions, str]) -> None:
        self._models.pop(key)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


MANAGER = ModelManager()


@node(
    "LoadFlowModel",
    category="loaders",
    outputs=[
        Output("model", SocketType.FLOW_MODEL, "The flow transformer"),
        Output("text_encoder", SocketType.TEXT_ENCODER, "The prompt encoders"),
        Output("vae", SocketType.VAE, "The image autoencoder"),
    ],
)
class LoadFlowModel(Node):
    """Load an SD3/SD3.5 or FLUX.1 model (or the embedded one) from a folder, a .safetensors file or a hub id."""

    class Params(NodeParams):
        source: str = Field(
            "embedded:shapes",
            min_length=1,
            description=(
                "embedded:shapes, a diffusers folder, a .safetensors file, or a hub id such as "
                "stabilityai/stable-diffusion-3-medium-diffusers."
            ),
            json_schema_extra={"widget": "model", "reads": "model"},
        )
        family: Literal["auto", "sd3", "flux"] = Field(
            "auto", description="Model family; auto reads it from the files."
        )
        dtype: Literal["auto", "fp32", "fp16", "bf16"] = Field(
            "auto", description="Weight precision; auto is fp32 on CPU and bf16 on a GPU."
        )
        offload: Literal["none", "model", "group", "sequential"] = Field(
            "none",
            description="GPU only: keep parts of the model in CPU memory (model: small cost; sequential: "
            "least memory, slowest).",
        )
        vae_tiling: bool = Field(False, description="Decode large images tile by tile to save memory.")
        vae_slicing: bool = Field(False, description="Decode a batch one image at a time to save memory.")
        compile: bool = Field(False, description="GPU only: torch.compile the transformer (slow first run).")
        drop_t5: bool = Field(False, description="SD3 only: leave out the T5 encoder (saves ~9.5 GB, weaker text).")
        max_sequence_length: int = Field(0, ge=0, le=512, description="Text tokens per prompt; 0 uses the model's own.")
        config_folder: str = Field(
            "",
            description="For a single .safetensors file offline: a diffusers folder of the "
            "same model to take the configs from.",
            json_schema_extra={"reads": "model"},
        )

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        source = params.source.strip()
        problem = embedded_problem(source) if source.startswith("embedded:") else None
        return [] if problem is None else [("source", problem)]

    @classmethod
    def fingerprint(cls, params: Params, ctx: NodeContext) -> str:
        ctx.check_model_source(params.source, field="source")  # before hashing reads the weights
        try:
            return content_hash(resolve_source(params.source), ctx.cache_root)
        except ModelLoadError as error:
            raise NodeError(str(error), field=error.field) from None

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        ctx.check_model_source(params.source, field="source")
        if params.config_folder:
            ctx.check_model_source(params.config_folder, field="config_folder")
        options = LoadOptions(device=ctx.device, **params.model_dump(exclude={"source"}))
        try:
            loaded = MANAGER.get(params.source, options, ctx.cache_root, ctx.model_memory_bytes)
        except ModelLoadError as error:
            raise NodeError(str(error), field=error.field) from None
        ctx.record_model_hash(params.source, loaded.model.sha256)
        return {"model": loaded.model, "text_encoder": loaded.text_encoder, "vae": loaded.vae}

"""The model loader, the model manager and the LoadFlowModel node.

Every bad source fails with a one-line `ModelLoadError` that names the source and says what to do, and
through a workflow run with a structured error on the LoadFlowModel node (field "source"), found at run
time, not by validation. Good sources (tiny SD3 / FLUX folders saved with `save_pretrained`) load with
the right family, dtype and text length; weights are hashed (cached) and the hash is recorded with the run;
the manager loads each (source, options) once and frees least recently used models beyond its budget.

No network: HF_HUB_OFFLINE=1 (and huggingface_hub's flag), an empty Hugging Face home in tmp.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file

from nodes.models import loader
from nodes.models.flux import FluxModel
from nodes.models.loader import (
    METADATA_FILE,
    LoadFlowModel,
    LoadOptions,
    ModelLoadError,
    ModelManager,
    content_hash,
    load_model,
    resolve_source,
)
from nodes.models.sd3 import SD3Model
from nodes.registry import NodeContext, NodeError
from pipelines.jobs import RunRequest, WorkerPool
from pipelines.validate import validate_workflow
from pipelines.workflow import load_workflow
from storage import RunStatus, Storage
from tests.tiny_models import CLIP_MAX_LENGTH, save_tiny, tiny_flux_pipeline, tiny_sd3_pipeline

TEMPLATES = Path(__file__).resolve().parents[1] / "pipelines" / "templates"
HUB_ID = "stabilityai/stable-diffusion-3-medium-diffusers"
METADATA_LENGTH = 16  # written to the SD3-without-T5 folder's flowcanvas.json
TRANSFORMER_WEIGHTS = Path("transformer") / "diffusion_pytorch_model.safetensors"
VAE_WEIGHTS = Path("vae") / "diffusion_pytorch_model.safetensors"


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each tiny variant saved once; tests that change a folder work on a copy (`copy_model`)."""
    root = tmp_path_factory.mktemp("tiny-models")
    folders = {
        "sd3": save_tiny(tiny_sd3_pipeline(with_t5=True), root / "sd3"),
        "sd3-no-t5": save_tiny(tiny_sd3_pipeline(with_t5=False), root / "sd3-no-t5"),
        "flux-dev": save_tiny(tiny_flux_pipeline(guidance_embeds=True), root / "flux-dev"),
        "flux-schnell": save_tiny(tiny_flux_pipeline(guidance_embeds=False), root / "flux-schnell"),
    }
    (folders["sd3-no-t5"] / METADATA_FILE).write_text(json.dumps({"max_sequence_length": METADATA_LENGTH}))
    return folders


@pytest.fixture(autouse=True)
def isolated(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A data folder per test (hash cache), no network, an empty HF home, and a fresh model manager."""
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    manager = ModelManager()
    monkeypatch.setattr(loader, "MANAGER", manager)  # what LoadFlowModel.run uses
    yield manager
    manager.free()


def copy_model(folder: Path, tmp_path: Path, name: str = "model") -> Path:
    return Path(shutil.copytree(folder, tmp_path / name))


def load_error(source: str, **options: Any) -> str:
    with pytest.raises(ModelLoadError) as caught:
        load_model(source, LoadOptions(**options))
    return str(caught.value)


def assert_clear(message: str, *fragments: str) -> None:
    """One line, no traceback, and every fragment (the source, what is wrong, what to do) in it."""
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def flip_last_byte(file: Path) -> None:
    """Change a weight value in place: same size, still a valid .safetensors file."""
    data = bytearray(file.read_bytes())
    data[-1] ^= 0x01
    file.write_bytes(bytes(data))


def txt2img(source: str, **model_params: Any) -> dict[str, Any]:
    """The SD3 starter workflow at 32 px and 2 steps, its LoadFlowModel node ("model") set as given."""
    document = json.loads((TEMPLATES / "txt2img-sd3.json").read_text())
    nodes = document["nodes"]
    nodes["model"]["params"] = {"source": source, **model_params}
    nodes["width"]["params"]["value"] = nodes["height"]["params"]["value"] = 32
    nodes["schedule"]["params"]["steps"] = 2
    return document


def submit(pool: WorkerPool, document: dict[str, Any]):
    handle = pool.submit(RunRequest(workflow=load_workflow(document), device="cpu"))
    return handle, handle.wait(60)


# ---------------------------------------------------------------- bad sources, straight to the loader


def test_a_missing_folder_is_named(tmp_path: Path):
    missing = tmp_path / "no-such-model"
    assert_clear(load_error(str(missing)), "no model folder or file at", str(missing))


def test_a_missing_safetensors_file_is_named(tmp_path: Path):
    missing = tmp_path / "no-such-model.safetensors"
    assert_clear(load_error(str(missing)), "no file at", str(missing))


def test_a_folder_without_model_index_is_not_a_model(tmp_path: Path):
    folder = tmp_path / "just-a-folder"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(b"")
    assert_clear(load_error(str(folder)), str(folder), "not a diffusers model", "model_index.json")


def test_a_folder_of_another_pipeline_class_is_not_a_supported_flow_model(tiny, tmp_path: Path):
    folder = copy_model(tiny["sd3"], tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionPipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    assert_clear(
        load_error(str(folder)),
        str(folder),
        "StableDiffusionPipeline",
        "not a supported flow model",
        "StableDiffusion3Pipeline",
        "FluxPipeline",
    )


def test_an_unreadable_model_index_is_named(tmp_path: Path):
    folder = tmp_path / "broken-index"
    folder.mkdir()
    (folder / "model_index.json").write_text("{not json")
    assert_clear(load_error(str(folder)), "cannot read", str(folder / "model_index.json"))


@pytest.mark.parametrize("variant,asked,found", [("sd3", "flux", "sd3"), ("flux-dev", "sd3", "flux")])
def test_the_wrong_family_asked_for_is_refused(tiny, variant: str, asked: str, found: str):
    folder = str(tiny[variant])
    article = {"sd3": "an SD3", "flux": "a FLUX"}[found]
    assert_clear(load_error(folder, family=asked), repr(folder), f"is {article} model", f"family {asked!r}")


def test_a_corrupted_single_file_is_named_and_called_corrupted(tmp_path: Path):
    file = tmp_path / "random.safetensors"
    file.write_bytes(os.urandom(4096))
    assert_clear(load_error(str(file)), str(file), "not a readable .safetensors file", "corrupted")


def test_a_single_file_of_another_model_is_refused(tmp_path: Path):
    file = tmp_path / "unet.safetensors"
    save_file({"down_blocks.0.weight": torch.zeros(2)}, str(file))
    assert_clear(load_error(str(file)), str(file), "does not look like an SD3 or FLUX checkpoint")


def test_an_sd3_single_file_offline_without_configs_says_to_set_config_folder(tmp_path: Path):
    file = tmp_path / "sd3.safetensors"
    save_file({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(2)}, str(file))
    started = time.perf_counter()
    message = load_error(str(file))
    assert time.perf_counter() - started < 10
    assert_clear(message, str(file), "single-file checkpoint", "config_folder")


def test_a_truncated_weight_file_inside_a_folder_names_the_folder(tiny, tmp_path: Path):
    folder = copy_model(tiny["sd3"], tmp_path)
    weights = folder / TRANSFORMER_WEIGHTS
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert_clear(load_error(str(folder)), "cannot load the model folder", str(folder))


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth"])
def test_pickle_based_weights_are_refused(tmp_path: Path, suffix: str):
    file = tmp_path / f"model{suffix}"
    file.write_bytes(b"not looked at")
    assert_clear(load_error(str(file)), str(file), "only .safetensors weights are loaded")


def test_an_uncached_hub_id_offline_says_where_to_put_the_files_at_once(tmp_path: Path):
    started = time.perf_counter()
    message = load_error(HUB_ID)
    assert time.perf_counter() - started < 10  # no network wait, no retries
    assert_clear(
        message,
        repr(HUB_ID),
        "not in the local Hugging Face cache",
        str(tmp_path / "hf-home"),
        f"huggingface-cli download {HUB_ID}",
        "enter its path",
    )


def test_a_hub_id_whose_family_cannot_be_told_asks_for_the_family():
    assert_clear(load_error("someone/some-model"), "'someone/some-model'", "set family to sd3 or flux")


@pytest.mark.parametrize("text", ["not a model!!", "some/nested/missing/path", "models\\sd3 medium"])
def test_a_string_that_is_neither_path_nor_hub_id(text: str):
    assert_clear(load_error(text), repr(text), "no model folder or file at", "not a hub id of the form owner/name")


def test_a_tilde_path_of_an_unknown_user_is_a_model_load_error():
    assert_clear(load_error("~no-such-user-xyz/models/sd3"), "'~no-such-user-xyz/models/sd3'")


def test_an_empty_source_says_what_to_enter():
    assert_clear(load_error("   "), "no model source given", "embedded:", "hub id")


def test_an_unknown_embedded_model_lists_the_available_ones(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    models = tmp_path / "repo-models"
    models.mkdir()
    monkeypatch.setattr(loader, "REPO_MODELS", models)
    assert_clear(load_error("embedded:doesnotexist"), "no embedded model 'doesnotexist'", "installed: none")

    (models / "tiny").symlink_to(tiny["sd3"], target_is_directory=True)
    (models / "not-a-model").mkdir()
    for name in ("doesnotexist", "", "..", "../tiny", "not-a-model"):
        error = load_error(f"embedded:{name}")
        assert_clear(error, f"no embedded model {name!r}", "(installed: tiny)")
        assert str(models) not in str(error), "errors name no server paths"
    loaded = load_model("embedded:tiny", LoadOptions())
    assert loaded.model.source == "embedded:tiny" and loaded.model.family == "sd3"


@pytest.mark.parametrize("source", ["embedded:", "embedded:..", "embedded:nope"])
def test_an_embedded_name_that_is_not_installed_is_refused_at_validation(source: str):
    workflow = load_workflow(
        {
            "format": "flowcanvas.workflow",
            "version": 1,
            "nodes": {
                "model": {"type": "LoadFlowModel", "params": {"source": source}},
                "latent": {"type": "EmptyLatent", "inputs": {"model": {"node": "model", "output": "model"}}},
            },
        }
    )
    found = [i for i in validate_workflow(workflow) if i.node == "model"]
    assert [(i.field, i.code) for i in found] == [("source", "invalid_params")]
    assert "installed: shapes" in found[0].message


def test_offload_on_cpu_is_a_clear_error(tiny):
    assert_clear(load_error(str(tiny["sd3"]), offload="model"), "offload 'model' needs a CUDA GPU", "offload none")


def test_compile_on_cpu_is_a_clear_error(tiny):
    assert_clear(load_error(str(tiny["sd3"]), compile=True), "torch.compile", "CUDA GPUs only")


@pytest.mark.parametrize("option", [{"offload": "model"}, {"compile": True}])
def test_gpu_only_option_errors_name_the_source(tiny, option: dict[str, Any]):
    folder = str(tiny["sd3"])
    assert folder in load_error(folder, **option)


def test_a_malformed_flowcanvas_json_is_a_model_load_error_naming_the_file(tiny, tmp_path: Path):
    # Regression: at 7d361c6 a bare json.loads let JSONDecodeError escape (no source, field None through the node).
    folder = copy_model(tiny["sd3"], tmp_path)
    (folder / METADATA_FILE).write_text("{max_sequence_length: 16")
    assert_clear(load_error(str(folder)), "cannot read", str(folder / METADATA_FILE))
    (folder / METADATA_FILE).write_text("[16]")
    assert_clear(load_error(str(folder)), str(folder / METADATA_FILE), "JSON object")


# ---------------------------------------------------------------- bad sources through the engine


def _missing(tiny, tmp_path):
    return str(tmp_path / "no-such-model"), {}, ["no model folder or file at"]


def _no_index(tiny, tmp_path):
    (tmp_path / "plain").mkdir()
    return str(tmp_path / "plain"), {}, ["no model_index.json"]


def _other_class(tiny, tmp_path):
    folder = copy_model(tiny["sd3"], tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    return str(folder), {}, ["not a supported flow model"]


def _wrong_family(tiny, tmp_path):
    return str(tiny["sd3"]), {"family": "flux"}, ["is an SD3 model", "family 'flux'"]


def _corrupted_file(tiny, tmp_path):
    (tmp_path / "random.safetensors").write_bytes(os.urandom(2048))
    return str(tmp_path / "random.safetensors"), {}, ["corrupted"]


def _truncated_weights(tiny, tmp_path):
    folder = copy_model(tiny["sd3"], tmp_path)
    data = (folder / TRANSFORMER_WEIGHTS).read_bytes()
    (folder / TRANSFORMER_WEIGHTS).write_bytes(data[:100])
    return str(folder), {}, ["cannot load the model folder"]


def _pickle(tiny, tmp_path):
    (tmp_path / "model.ckpt").write_bytes(b"x")
    return str(tmp_path / "model.ckpt"), {}, ["only .safetensors"]


def _hub_offline(tiny, tmp_path):
    return HUB_ID, {}, ["not in the local Hugging Face cache", "huggingface-cli download"]


def _neither(tiny, tmp_path):
    return "not a model!!", {}, ["not a hub id"]


def _offload(tiny, tmp_path):
    return str(tiny["sd3"]), {"offload": "sequential"}, ["needs a CUDA GPU"]


def _compile(tiny, tmp_path):
    return str(tiny["sd3"]), {"compile": True}, ["CUDA GPUs only"]


BAD_SOURCES = [
    _missing,
    _no_index,
    _other_class,
    _wrong_family,
    _corrupted_file,
    _truncated_weights,
    _pickle,
    _hub_offline,
    _neither,
    _offload,
    _compile,
]
FIELD = {_wrong_family: "family", _offload: "offload", _compile: "compile"}  # the param at fault; else "source"


@pytest.mark.parametrize("case", BAD_SOURCES, ids=[c.__name__.strip("_") for c in BAD_SOURCES])
def test_a_bad_source_validates_then_fails_the_run_on_the_load_node(
    tiny, tmp_path: Path, pool: WorkerPool, storage: Storage, isolated: ModelManager, case
):
    source, params, fragments = case(tiny, tmp_path)
    document = txt2img(source, **params)
    assert validate_workflow(load_workflow(document)) == []  # validation does not touch the model

    handle, outcome = submit(pool, document)
    assert outcome.status == RunStatus.FAILED
    error = outcome.error
    assert error["node"] == "model" and error["node_type"] == "LoadFlowModel"
    assert error["field"] == FIELD.get(case, "source")
    assert_clear(error["message"], *fragments)
    assert source.removeprefix("embedded:") in error["message"]
    assert storage.get_run(handle.run_id).error == error
    events = list(handle.events(5))
    assert events[-1].kind == "run_failed" and events[-1].node == "model"
    downstream = {"prompt", "latent", "schedule", "sampler", "decode", "save"}  # everything fed by the loader
    assert not any(e.kind == "node_started" and e.node in downstream for e in events)
    assert isolated.loaded() == []


# ---------------------------------------------------------------- good sources


@pytest.mark.parametrize(
    "variant,family,length",
    [
        ("sd3", "sd3", 256),  # no flowcanvas.json: the family default
        ("sd3-no-t5", "sd3", METADATA_LENGTH),  # saved without T5, with flowcanvas.json
        ("flux-dev", "flux", 512),
        ("flux-schnell", "flux", 256),
    ],
)
def test_a_saved_model_loads_with_its_family_and_text_length(tiny, variant: str, family: str, length: int):
    folder = tiny[variant]
    loaded = load_model(str(folder), LoadOptions())
    model = loaded.model
    assert isinstance(model, SD3Model if family == "sd3" else FluxModel)
    assert model.describe() == {
        "family": family,
        "source": str(folder),
        "sha256": content_hash(resolve_source(str(folder))),
        "dtype": "float32",
        "device": "cpu",
    }
    assert model.dtype == torch.float32 and model.device == torch.device("cpu")
    assert loaded.text_encoder.family == loaded.vae.family == family
    assert loaded.text_encoder.max_sequence_length == length
    assert loaded.nbytes == sum(
        p.numel() * p.element_size()
        for c in model.pipe.components.values()
        if isinstance(c, torch.nn.Module)
        for p in c.parameters()
    )
    assert not any(c.training for c in model.pipe.components.values() if isinstance(c, torch.nn.Module))
    if variant == "sd3-no-t5":
        assert model.pipe.text_encoder_3 is None and model.pipe.tokenizer_3 is None
    if variant == "flux-dev":
        assert model.guidance_embeds

    cond = loaded.text_encoder.encode(["a red circle on a blue background"])
    expected_tokens = CLIP_MAX_LENGTH + length if family == "sd3" else length
    assert cond.prompt_embeds.shape[:2] == (1, expected_tokens)  # the length really reaches the encoder


def test_flowcanvas_json_sets_the_length_and_the_option_overrides_it(tiny, tmp_path: Path):
    folder = copy_model(tiny["sd3"], tmp_path)
    (folder / METADATA_FILE).write_text(json.dumps({"max_sequence_length": 24}))
    assert load_model(str(folder), LoadOptions()).text_encoder.max_sequence_length == 24
    assert load_model(str(folder), LoadOptions(max_sequence_length=40)).text_encoder.max_sequence_length == 40


def test_drop_t5_leaves_the_t5_encoder_out(tiny):
    full = load_model(str(tiny["sd3"]), LoadOptions())
    dropped = load_model(str(tiny["sd3"]), LoadOptions(drop_t5=True))
    assert full.model.pipe.text_encoder_3 is not None
    assert dropped.model.pipe.text_encoder_3 is None and dropped.model.pipe.tokenizer_3 is None
    assert dropped.nbytes < full.nbytes
    assert dropped.model.sha256 == full.model.sha256  # the same files on disk
    assert dropped.text_encoder.encode(["a red circle"]).prompt_embeds.shape[0] == 1


def test_the_fp16_option_gives_fp16_weights(tiny):
    loaded = load_model(str(tiny["sd3"]), LoadOptions(dtype="fp16"))
    assert loaded.model.dtype == torch.float16
    assert all(p.dtype == torch.float16 for p in loaded.model.transformer.parameters())
    assert loaded.vae.vae.dtype == torch.float16
    assert loaded.model.describe()["dtype"] == "float16"
    assert loaded.nbytes < load_model(str(tiny["sd3"]), LoadOptions()).nbytes


# ---------------------------------------------------------------- content hashes


def test_content_hash_is_stable_and_follows_the_weights(tiny, tmp_path: Path):
    folder = copy_model(tiny["sd3"], tmp_path)
    first = content_hash(resolve_source(str(folder)))
    assert len(first) == 64 and int(first, 16) >= 0
    assert content_hash(resolve_source(str(folder))) == first
    assert content_hash(resolve_source(str(tiny["sd3"]))) == first  # same files, same hash, wherever they lie
    assert content_hash(resolve_source(str(tiny["sd3-no-t5"]))) != first

    flip_last_byte(folder / VAE_WEIGHTS)
    changed = content_hash(resolve_source(str(folder)))
    assert changed != first
    assert content_hash(resolve_source(str(folder))) == changed


def test_content_hash_of_a_single_file(tmp_path: Path):
    file = tmp_path / "weights.safetensors"
    save_file({"double_blocks.0.weight": torch.arange(4.0)}, str(file))
    first = content_hash(resolve_source(str(file)))
    assert content_hash(resolve_source(str(file))) == first
    save_file({"double_blocks.0.weight": torch.arange(4.0) + 1}, str(file))
    assert content_hash(resolve_source(str(file))) != first
    assert content_hash(resolve_source(HUB_ID)) == f"hub:{HUB_ID}"


def test_content_hash_is_cached_and_not_recomputed(tiny, home: Path, monkeypatch: pytest.MonkeyPatch):
    source = resolve_source(str(tiny["flux-dev"]))
    cache = home / "cache" / "model_hashes"
    value = content_hash(source, home / "cache")
    cached = list(cache.glob("*.txt"))
    assert len(cached) == 1 and cached[0].read_text().strip() == value

    opened: list[Path] = []
    original_open = Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any):
        if self.suffix == ".safetensors":
            opened.append(self)
        return original_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    assert content_hash(source, home / "cache") == value
    assert opened == []  # answered from the cache, no weight file read
    cached[0].unlink()
    assert content_hash(source, home / "cache") == value
    assert len(opened) == len(list(tiny["flux-dev"].rglob("*.safetensors")))  # recomputed once the cache is gone


# ---------------------------------------------------------------- the model manager


def test_the_manager_loads_each_source_and_options_once(tiny):
    manager = ModelManager()
    source = str(tiny["sd3"])
    first = manager.get(source, LoadOptions())
    assert manager.get(source, LoadOptions()) is first
    assert manager.get(source, LoadOptions(vae_tiling=True)) is not first
    assert len(manager.loaded()) == 2
    manager.free()


def test_the_manager_evicts_the_least_recently_used_beyond_its_budget(tiny):
    source = str(tiny["sd3"])
    size = load_model(source, LoadOptions()).nbytes
    manager = ModelManager(budget_bytes=int(size * 2.5))  # room for two
    a, b, c = LoadOptions(), LoadOptions(vae_tiling=True), LoadOptions(vae_slicing=True)
    first = manager.get(source, a)
    manager.get(source, b)
    assert manager.get(source, a) is first  # touched: b is now the least recently used
    manager.get(source, c)
    kept = [entry["options"] for entry in manager.loaded()]
    assert kept == [a.model_dump(), c.model_dump()]
    assert manager.get(source, a) is first
    assert manager.free() == 2


def test_a_small_budget_keeps_only_the_newest_model(tiny):
    manager = ModelManager(budget_bytes=1)
    sd3 = manager.get(str(tiny["sd3"]), LoadOptions())
    assert [m["source"] for m in manager.loaded()] == [str(tiny["sd3"])]  # the newest stays, even over budget
    manager.get(str(tiny["flux-schnell"]), LoadOptions())
    assert [m["source"] for m in manager.loaded()] == [str(tiny["flux-schnell"])]
    assert manager.get(str(tiny["sd3"]), LoadOptions()) is not sd3  # evicted, so loaded again
    assert manager.free() == 1


def test_a_run_brings_the_configured_model_memory_budget(home: Path, monkeypatch: pytest.MonkeyPatch):
    from nodes.models.loader import MANAGER
    from pipelines.executor import Executor
    from pipelines.plan import build_plan
    from pipelines.workflow import load_workflow

    template = Path(__file__).resolve().parents[1] / "pipelines" / "templates" / "txt2img-embedded.json"
    monkeypatch.setenv("FLOWCANVAS_MODEL_MEMORY_GB", "3")
    monkeypatch.setattr(MANAGER, "budget_bytes", MANAGER.budget_bytes)  # restored after the test
    Executor(device="cpu").execute(build_plan(load_workflow(template), {"Steps": 1}, target="model"), run_id="m")
    assert MANAGER.budget_bytes == 3 * 1024**3


def test_free_returns_counts_and_loaded_describes(tiny, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FLOWCANVAS_MODEL_MEMORY_GB", raising=False)
    manager = ModelManager()
    assert manager.budget_bytes == 16 * 1024**3
    sd3, flux = str(tiny["sd3"]), str(tiny["flux-dev"])
    loaded_sd3 = manager.get(sd3, LoadOptions())
    manager.get(sd3, LoadOptions(drop_t5=True))
    manager.get(flux, LoadOptions())
    described = manager.loaded()
    assert [(d["family"], d["source"], d["options"]["drop_t5"]) for d in described] == [
        ("sd3", sd3, False),
        ("sd3", sd3, True),
        ("flux", flux, False),
    ]
    assert described[0]["sha256"] == loaded_sd3.model.sha256 and described[0]["bytes"] == loaded_sd3.nbytes
    assert described[0]["dtype"] == "float32" and described[0]["device"] == "cpu"
    assert manager.free("nothing-loaded") == 0
    assert manager.free(sd3) == 2
    assert [d["source"] for d in manager.loaded()] == [flux]
    assert manager.free() == 1 and manager.loaded() == [] and manager.free() == 0


def test_a_failed_load_leaves_nothing_in_the_manager(tiny, tmp_path: Path):
    manager = ModelManager()
    with pytest.raises(ModelLoadError):
        manager.get(str(tiny["sd3"]), LoadOptions(compile=True))
    with pytest.raises(ModelLoadError):
        manager.get(str(tmp_path / "missing"), LoadOptions())
    assert manager.loaded() == []


# ---------------------------------------------------------------- the LoadFlowModel node


def _context() -> NodeContext:
    return NodeContext(node_id="model", node_type="LoadFlowModel", device="cpu")


def test_the_node_fingerprint_is_the_content_hash_and_names_the_field_on_failure(tiny, tmp_path: Path):
    folder = copy_model(tiny["sd3"], tmp_path)
    params = LoadFlowModel.Params(source=str(folder))
    before = LoadFlowModel.fingerprint(params, _context())
    assert before == content_hash(resolve_source(str(folder)))
    flip_last_byte(folder / TRANSFORMER_WEIGHTS)
    assert LoadFlowModel.fingerprint(params, _context()) != before

    with pytest.raises(NodeError) as caught:
        LoadFlowModel.fingerprint(LoadFlowModel.Params(source=str(tmp_path / "gone")), _context())
    assert caught.value.field == "source" and str(tmp_path / "gone") in str(caught.value)


def test_the_node_records_the_model_hash_and_reloads_when_the_weights_change(
    tiny, tmp_path: Path, pool: WorkerPool, storage: Storage, isolated: ModelManager
):
    folder = copy_model(tiny["sd3"], tmp_path)
    document = txt2img(str(folder))
    handle, outcome = submit(pool, document)
    assert outcome.status == RunStatus.SUCCEEDED, outcome.error
    first = content_hash(resolve_source(str(folder)))
    assert storage.get_run(handle.run_id).model_hashes == {str(folder): first}
    assert [m["source"] for m in isolated.loaded()] == [str(folder)]

    handle, outcome = submit(pool, document)  # unchanged: the loader comes from the executor's cache
    assert "model" in outcome.cached and "model" not in outcome.executed
    assert storage.get_run(handle.run_id).model_hashes == {str(folder): first}  # recorded from the cache too

    flip_last_byte(folder / TRANSFORMER_WEIGHTS)
    handle, outcome = submit(pool, document)
    assert outcome.status == RunStatus.SUCCEEDED, outcome.error
    assert "model" in outcome.executed  # the fingerprint changed, so the node ran again


def test_changed_weights_are_loaded_and_recorded_on_the_next_run(
    tiny, tmp_path: Path, pool: WorkerPool, storage: Storage, isolated: ModelManager
):
    # Regression: at 7d361c6 the manager keyed models by (source, options) only, so the re-run node got the
    # stale model back and recorded the old hash.
    folder = copy_model(tiny["sd3"], tmp_path)
    document = txt2img(str(folder))
    assert submit(pool, document)[1].status == RunStatus.SUCCEEDED
    flip_last_byte(folder / TRANSFORMER_WEIGHTS)
    changed = content_hash(resolve_source(str(folder)))
    handle, outcome = submit(pool, document)
    assert outcome.status == RunStatus.SUCCEEDED and "model" in outcome.executed
    assert storage.get_run(handle.run_id).model_hashes == {str(folder): changed}  # not the stale model's hash
    assert [(m["source"], m["sha256"]) for m in isolated.loaded()] == [(str(folder), changed)]  # the old one freed

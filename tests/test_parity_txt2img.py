"""The txt2img starter workflows equal diffusers' own pipelines bit for bit (fp32, CPU, tiny models).

Each tiny model is saved with `save_pretrained` and loaded through LoadFlowModel, the path users take;
the reference is diffusers' pipeline run on the same loaded components with the same prompt, seed,
steps and guidance. A second check compares with the freshly built (never saved) pipeline: FLUX is
exact; SD3 differs by a few 1e-6 because reloaded CLIP weights land at differently aligned addresses
and the CPU matmul rounds the pooled projection differently (found by the tiny-model tests).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.models.loader import MANAGER, LoadOptions
from pipelines.executor import Executor
from pipelines.plan import build_plan
from pipelines.workflow import load_workflow
from tests.tiny_models import save_tiny, tiny_flux_pipeline, tiny_sd3_pipeline

TEMPLATES = Path(__file__).resolve().parents[1] / "pipelines" / "templates"
SEQUENCE_LENGTH = 16
VARIANTS = {
    "sd3": (lambda: tiny_sd3_pipeline(with_t5=True), "txt2img-sd3.json", 5.0),
    "sd3-no-t5": (lambda: tiny_sd3_pipeline(with_t5=False), "txt2img-sd3.json", 5.0),
    "flux-dev": (lambda: tiny_flux_pipeline(guidance_embeds=True), "txt2img-flux.json", 3.5),
    "flux-schnell": (lambda: tiny_flux_pipeline(guidance_embeds=False), "txt2img-flux.json", 0.0),
}


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[object, Path]]:
    models = {}
    for name, (build, _, _) in VARIANTS.items():
        pipe = build()
        models[name] = (pipe, save_tiny(pipe, tmp_path_factory.mktemp(name) / "model", SEQUENCE_LENGTH))
    yield models
    MANAGER.free()


def run_template(
    template: str, folder: Path, prompt: str, seed: int, steps: int, guidance: float, size: int
) -> tuple[torch.Tensor, bytes]:
    """The workflow's sampled latent and saved PNG (one executor: the second plan reuses the first's cache)."""
    workflow = load_workflow(TEMPLATES / template)
    overrides = {
        "Model": str(folder),
        "Prompt": prompt,
        "Seed": seed,
        "Steps": steps,
        "Guidance": guidance,
        "Width": size,
        "Height": size,
    }
    executor = Executor(device="cpu")
    full = executor.execute(build_plan(workflow, overrides), run_id="parity")
    image_png = next(item for item in full.output_items if item.kind == "image").data
    upto = executor.execute(build_plan(workflow, overrides, target="sampler"), run_id="parity")
    assert upto.executed == []  # everything came from the cache
    return upto.target_outputs["sampler"]["latent"].samples, image_png


def reference(pipe, prompt: str, seed: int, steps: int, guidance: float, size: int, output_type: str):
    return pipe(
        prompt=prompt,
        negative_prompt="",
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=size,
        width=size,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type=output_type,
        max_sequence_length=SEQUENCE_LENGTH,
    ).images


def as_unpacked(pipe, latents: torch.Tensor, size: int) -> torch.Tensor:
    if latents.ndim == 3:  # FluxPipeline returns packed latents
        return pipe._unpack_latents(latents, size, size, pipe.vae_scale_factor)
    return latents


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("seed,steps,size", [(0, 8, 64), (7, 4, 32)])
def test_txt2img_workflow_equals_the_diffusers_pipeline(saved_models, variant: str, seed: int, steps: int, size: int):
    _, template, guidance = VARIANTS[variant]
    _, folder = saved_models[variant]
    prompt = "a red circle on a blue background"
    ours, image_png = run_template(template, folder, prompt, seed, steps, guidance, size)
    pipe = MANAGER.get(str(folder), LoadOptions(device="cpu")).model.pipe  # the very components the workflow used

    theirs = as_unpacked(pipe, reference(pipe, prompt, seed, steps, guidance, size, "latent"), size)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= 1e-6

    reference_image = reference(pipe, prompt, seed, steps, guidance, size, "pil")[0]
    with Image.open(io.BytesIO(image_png)) as ours_image:
        assert np.array_equal(np.asarray(ours_image.convert("RGB")), np.asarray(reference_image))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_saved_and_reloaded_model_matches_the_freshly_built_pipeline(saved_models, variant: str):
    _, template, guidance = VARIANTS[variant]
    fresh, folder = saved_models[variant]
    ours = run_template(template, folder, "a green star on a white background", 3, 6, guidance, 64)[0]
    theirs = as_unpacked(
        fresh, reference(fresh, "a green star on a white background", 3, 6, guidance, 64, "latent"), 64
    )
    tolerance = 0.0 if variant.startswith("flux") else 1e-5
    assert (ours - theirs).abs().max().item() <= tolerance


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_changing_the_seed_or_prompt_changes_the_latent(saved_models, variant: str):
    _, template, guidance = VARIANTS[variant]
    _, folder = saved_models[variant]
    base = run_template(template, folder, "a red circle on a blue background", 0, 4, guidance, 32)[0]
    other_seed = run_template(template, folder, "a red circle on a blue background", 1, 4, guidance, 32)[0]
    other_prompt = run_template(template, folder, "a blue square on a red background", 0, 4, guidance, 32)[0]
    assert (base - other_seed).abs().max() > 1e-2
    assert (base - other_prompt).abs().max() > 1e-4


@pytest.mark.parametrize(
    "variant,true_cfg", [("sd3", 1.0), ("sd3-no-t5", 1.0), ("flux-dev", 2.5), ("flux-schnell", 3.0)]
)
def test_negative_prompts_and_true_cfg_match_the_pipeline(saved_models, variant: str, true_cfg: float):
    _, template, guidance = VARIANTS[variant]
    _, folder = saved_models[variant]
    prompt, negative = "a yellow heart on a black background", "a blue square"
    workflow = load_workflow(TEMPLATES / template)
    overrides = {
        "Model": str(folder),
        "Prompt": prompt,
        "Negative prompt": negative,
        "Seed": 5,
        "Steps": 5,
        "Guidance": guidance,
        "Width": 32,
        "Height": 32,
        "sampler.true_cfg": true_cfg,
    }
    result = Executor(device="cpu").execute(build_plan(workflow, overrides, target="sampler"), run_id="parity")
    ours = result.target_outputs["sampler"]["latent"].samples
    pipe = MANAGER.get(str(folder), LoadOptions(device="cpu")).model.pipe
    extra = {"true_cfg_scale": true_cfg} if variant.startswith("flux") else {}
    theirs = pipe(
        prompt=prompt,
        negative_prompt=negative,
        num_inference_steps=5,
        guidance_scale=guidance,
        height=32,
        width=32,
        generator=torch.Generator("cpu").manual_seed(5),
        output_type="latent",
        max_sequence_length=SEQUENCE_LENGTH,
        **extra,
    ).images
    theirs = as_unpacked(pipe, theirs, 32)
    assert (ours - theirs).abs().max().item() <= 1e-6
    without_negative = run_template(template, folder, prompt, 5, 5, guidance, 32)[0]
    if variant.startswith("sd3") or true_cfg > 1:
        assert (ours - without_negative).abs().max() > 1e-5  # the negative prompt really took part

"""The tiny offline SD3/FLUX pipelines and their tokenizers: they run, are not degenerate, are deterministic,
and survive save_pretrained/from_pretrained with no network."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from transformers import CLIPTokenizer, T5Tokenizer

from nodes.models.tokenizers import build_clip_tokenizer, build_t5_tokenizer
from tests.tiny_models import (
    CAPTION_CORPUS,
    save_tiny,
    tiny_flux_components,
    tiny_flux_pipeline,
    tiny_sd3_components,
    tiny_sd3_pipeline,
)

PROMPT = "a red circle on a blue background"
OTHER_PROMPT = "a green triangle on a white background"
MAX_SEQUENCE_LENGTH = 16
STEPS = 3

BUILDERS: dict[str, Callable[[int], DiffusionPipeline]] = {
    "sd3": lambda seed: tiny_sd3_pipeline(with_t5=True, seed=seed),
    "sd3-no-t5": lambda seed: tiny_sd3_pipeline(with_t5=False, seed=seed),
    "flux-dev": lambda seed: tiny_flux_pipeline(guidance_embeds=True, seed=seed),
    "flux-schnell": lambda seed: tiny_flux_pipeline(guidance_embeds=False, seed=seed),
}
COMPONENTS: dict[str, Callable[[int], dict]] = {
    "sd3": lambda seed: tiny_sd3_components(with_t5=True, seed=seed),
    "sd3-no-t5": lambda seed: tiny_sd3_components(with_t5=False, seed=seed),
    "flux-dev": lambda seed: tiny_flux_components(guidance_embeds=True, seed=seed),
    "flux-schnell": lambda seed: tiny_flux_components(guidance_embeds=False, seed=seed),
}
VARIANTS = list(BUILDERS)


def build(variant: str, seed: int = 0) -> DiffusionPipeline:
    pipe = BUILDERS[variant](seed)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(
    pipe: DiffusionPipeline, *, prompt: str = PROMPT, seed: int = 0, size: int = 32, output_type: str = "latent"
) -> np.ndarray | torch.Tensor:
    return pipe(
        prompt,
        height=size,
        width=size,
        num_inference_steps=STEPS,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type=output_type,
    ).images


def load(variant: str, folder: Path) -> DiffusionPipeline:
    """Load a saved variant back the way tiny_models' docstring says."""
    if variant == "sd3":
        pipe = StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)
    elif variant == "sd3-no-t5":
        pipe = StableDiffusion3Pipeline.from_pretrained(
            folder, text_encoder_3=None, tokenizer_3=None, local_files_only=True
        )
    else:
        pipe = FluxPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def public_config(config: dict) -> dict:
    """A config without the bookkeeping keys (`_use_default_values`, ...) that from_pretrained adds."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


def modules(components: dict) -> dict[str, torch.nn.Module]:
    return {name: c for name, c in components.items() if isinstance(c, torch.nn.Module)}


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1; huggingface_hub reads the variable at import, so set its flag too: any HTTP raises."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [32, 64])
def test_pipeline_gives_finite_outputs_of_the_right_shape(variant: str, size: int) -> None:
    pipe = build(variant)
    latents = generate(pipe, size=size)
    latent_side = size // 8
    if variant.startswith("flux"):  # FluxPipeline returns packed latents: 2×2 patches of 16 channels
        assert tuple(latents.shape) == (1, (latent_side // 2) ** 2, 64)
    else:
        assert tuple(latents.shape) == (1, 16, latent_side, latent_side)
    assert latents.dtype == torch.float32 and torch.isfinite(latents).all()

    image = generate(pipe, size=size, output_type="np")
    assert image.shape == (1, size, size, 3)
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0


@pytest.mark.parametrize("variant", VARIANTS)
def test_outputs_change_with_seed_and_prompt(variant: str) -> None:
    pipe = build(variant)
    reference = generate(pipe)
    assert torch.equal(generate(pipe), reference)  # the same call is reproducible
    assert (generate(pipe, seed=1) - reference).abs().max() > 0.1
    assert (generate(pipe, prompt=OTHER_PROMPT) - reference).abs().max() > 1e-3


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_and_offline_reload_reproduces_latents(variant: str, tmp_path: Path, offline: None) -> None:
    pipe = build(variant)
    folder = save_tiny(pipe, tmp_path / variant)
    assert folder == tmp_path / variant and (folder / "model_index.json").is_file()
    reloaded = load(variant, folder)
    assert type(reloaded) is type(pipe)
    assert public_config(reloaded.scheduler.config) == public_config(pipe.scheduler.config)
    for name, module in modules(pipe.components).items():
        loaded = modules(reloaded.components)[name]
        assert not loaded.training
        assert all(torch.equal(value, loaded.state_dict()[key]) for key, value in module.state_dict().items()), name

    for size in (32, 64):
        expected = generate(pipe, size=size)
        # The last bits of SD3's pooled CLIP projection move with where the weights lie in memory (below);
        # guidance 7 makes that up to about 4e-6 on latents of magnitude 4.
        assert (generate(reloaded, size=size) - expected).abs().max() <= 1e-5
        realign(reloaded)
        difference = (generate(reloaded, size=size) - expected).abs().max()
        assert difference <= 1e-6, f"{variant} at {size}px: {difference}"


def realign(pipe: DiffusionPipeline) -> None:
    """Copy every weight into freshly allocated memory.

    transformers' from_pretrained leaves weights at addresses that are not 64-byte aligned, where the CPU
    matmul kernels round differently from those for weights allocated by torch, so otherwise identical
    weights give outputs that differ in the last bit.
    """
    for module in modules(pipe.components).values():
        for parameter in module.parameters():
            parameter.data = parameter.data.clone()


def test_sd3_without_t5_needs_the_empty_slots_named_on_load(tmp_path: Path, offline: None) -> None:
    """The pitfall tiny_models documents: the saved null T5 slots are not enough for from_pretrained."""
    folder = save_tiny(build("sd3-no-t5"), tmp_path / "sd3-no-t5")
    with pytest.raises(ValueError):
        StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_gives_identical_weights(variant: str) -> None:
    first, second, other = (modules(COMPONENTS[variant](seed)) for seed in (0, 0, 1))
    for name, module in first.items():
        assert not module.training, f"{name} is in train mode"
        state, same, different = module.state_dict(), second[name].state_dict(), other[name].state_dict()
        assert all(t.dtype == torch.float32 for t in state.values()), name
        assert all(torch.equal(state[key], same[key]) for key in state), name
        assert any(not torch.equal(state[key], different[key]) for key in state), name


def test_building_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    tiny_sd3_components()
    tiny_flux_components()
    assert torch.equal(torch.rand(4), expected)


def test_sd3_variants_share_all_weights_but_t5() -> None:
    with_t5, without_t5 = tiny_sd3_components(with_t5=True), tiny_sd3_components(with_t5=False)
    assert without_t5["text_encoder_3"] is None and without_t5["tokenizer_3"] is None
    for name, module in modules(without_t5).items():
        state = with_t5[name].state_dict()
        assert all(torch.equal(state[key], value) for key, value in module.state_dict().items()), name


# Tokenizers

CORPUS_WORDS = sorted({word for caption in CAPTION_CORPUS for word in caption.split()})
# CLIP decodes to its normal form: lower case, a space after each word, digit and punctuation run.
UNSEEN_FOR_CLIP = ("zebra quokka xylophones", "café ☃ naïve")
UNSEEN_ASCII = "Zebra quokka, 42 xylophones!"


@pytest.fixture(scope="module")
def clip() -> CLIPTokenizer:
    return build_clip_tokenizer(CAPTION_CORPUS)


@pytest.fixture(scope="module")
def t5() -> T5Tokenizer:
    return build_t5_tokenizer(CAPTION_CORPUS)


def test_clip_tokenizer_has_one_token_per_caption_word(clip: CLIPTokenizer) -> None:
    for word in CORPUS_WORDS:
        assert clip.tokenize(word) == [word + "</w>"], word
    ids = clip(PROMPT)["input_ids"]
    assert ids[0] == clip.bos_token_id and ids[-1] == clip.eos_token_id and len(ids) == len(PROMPT.split()) + 2


def test_clip_tokenizer_vocabulary_is_laid_out_like_openai_clip(clip: CLIPTokenizer) -> None:
    vocab = clip.get_vocab()
    # end-of-text last, so argmax pooling and first-eos pooling both pick it; start-of-text just before
    assert clip.eos_token_id == len(vocab) - 1 == max(vocab.values())
    assert clip.bos_token_id == len(vocab) - 2
    assert clip.pad_token == "<|endoftext|>" and clip.model_max_length == 77
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert vocab["!"] == 0 and vocab["!</w>"] == 256  # 256 byte characters, then the same with </w>


@pytest.mark.parametrize("text", [*UNSEEN_FOR_CLIP, PROMPT])
def test_clip_tokenizer_falls_back_to_bytes_and_decodes_unchanged(clip: CLIPTokenizer, text: str) -> None:
    ids = clip(text)["input_ids"]
    assert clip.unk_token_id not in ids[1:-1]
    assert clip.decode(ids, skip_special_tokens=True) == text
    if text != PROMPT:
        assert len(ids) - 2 > len(text.split())  # unseen words take several tokens


def test_clip_tokenizer_options(clip: CLIPTokenizer) -> None:
    clip_g = build_clip_tokenizer(CAPTION_CORPUS, merges=20, model_max_length=16, pad_token="!")
    assert clip_g.pad_token == "!" and clip_g.pad_token_id == 0 and clip_g.model_max_length == 16
    assert len(clip_g) == 2 * 256 + 20 + 2 < len(clip)  # bytes, bytes + </w>, one per merge, two specials
    padded = clip_g("a", padding="max_length", truncation=True)["input_ids"]
    assert len(padded) == 16 and padded[-1] == 0


def test_t5_tokenizer_has_one_piece_per_caption_word(t5: T5Tokenizer) -> None:
    assert [t5.convert_ids_to_tokens(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert (t5.pad_token_id, t5.eos_token_id, t5.unk_token_id) == (0, 1, 2)
    for word in CORPUS_WORDS:
        assert t5.tokenize(word) == ["▁" + word], word
    assert t5.tokenize("a red circle") == ["▁a", "▁red", "▁circle"]
    assert t5("a red circle")["input_ids"][-1] == t5.eos_token_id
    assert not any(re.fullmatch(r"<extra_id_\d+>", token) for token in t5.get_vocab())


def test_t5_tokenizer_spells_out_unseen_ascii_and_decodes_unchanged(t5: T5Tokenizer) -> None:
    ids = t5(UNSEEN_ASCII)["input_ids"]
    assert t5.unk_token_id not in ids
    assert t5.decode(ids, skip_special_tokens=True) == UNSEEN_ASCII
    assert t5.unk_token_id in t5("☃")["input_ids"]  # outside printable ASCII there is no fallback


def test_t5_tokenizer_pads_to_max_sequence_length(t5: T5Tokenizer) -> None:
    padded = t5(PROMPT, padding="max_length", max_length=MAX_SEQUENCE_LENGTH, truncation=True)["input_ids"]
    assert len(padded) == MAX_SEQUENCE_LENGTH and padded[-1] == t5.pad_token_id


def test_tokenizers_are_deterministic() -> None:
    """The same corpus, however it is passed, gives the same tokenizer (tokenizers' BpeTrainer did not)."""
    for builder in (build_clip_tokenizer, build_t5_tokenizer):
        first, second = builder(CAPTION_CORPUS), builder(iter(list(CAPTION_CORPUS)))
        assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str(), builder.__name__


TOKENIZER_BUILDERS: dict[str, Callable[[], CLIPTokenizer | T5Tokenizer]] = {
    "clip": lambda: build_clip_tokenizer(CAPTION_CORPUS),
    "clip-g": lambda: build_clip_tokenizer(CAPTION_CORPUS, pad_token="!"),
    "t5": lambda: build_t5_tokenizer(CAPTION_CORPUS),
}


@pytest.mark.parametrize("kind", list(TOKENIZER_BUILDERS))
def test_tokenizers_round_trip_through_save_pretrained(kind: str, tmp_path: Path, offline: None) -> None:
    tokenizer = TOKENIZER_BUILDERS[kind]()
    tokenizer.save_pretrained(tmp_path)
    loaded = type(tokenizer).from_pretrained(tmp_path, local_files_only=True)
    assert type(loaded) is type(tokenizer)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.pad_token, loaded.model_max_length) == (tokenizer.pad_token, tokenizer.model_max_length)
    for text in (PROMPT, UNSEEN_FOR_CLIP[0]):
        expected = tokenizer(text, padding="max_length", max_length=32, truncation=True)["input_ids"]
        assert loaded(text, padding="max_length", max_length=32, truncation=True)["input_ids"] == expected
        assert loaded.decode(expected, skip_special_tokens=True) == text

"""Tiny SD3 and FLUX pipelines built from configs, with no download, for parity and adapter tests.

They have the real pipelines' classes and shape math (VAE ×8 with 16 latent channels, SD3 patch 2, FLUX
2×2 packing, two CLIPs + T5 for SD3, CLIP + T5 for FLUX) but a few hundred thousand random weights, so a
whole pipeline call takes milliseconds on CPU (docs/algorithms.md, "The embedded model"). Their tokenizers are
trained on `CAPTION_CORPUS`, so caption words are single tokens, as in a real tokenizer.

Variants: SD3 with and without T5, FLUX dev-like (guidance embedding, dynamic shift) and schnell-like (no
guidance embedding, static shift 1.0). The text sides take `max_sequence_length` up to 512 (the pipelines'
limit); tests use 16. Building is deterministic: the same seed gives the same weights.

Loading a saved variant back (`save_tiny`), offline (`HF_HUB_OFFLINE=1`, `local_files_only=True`):
- SD3 with T5: `StableDiffusion3Pipeline.from_pretrained(folder)`.
- SD3 without T5: `StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)`;
  `save_pretrained` records those slots as null, but a plain `from_pretrained(folder)` raises ValueError.
- FLUX, both variants: `FluxPipeline.from_pretrained(folder)`; the scheduler config tells them apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from nodes.models.tokenizers import build_clip_tokenizer, build_t5_tokenizer

COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
GENERIC_CAPTIONS = (
    "a photo of a cat sitting on a chair",
    "a painting of a dog in a field",
    "a small house near the sea at night",
    "a large tree and a mountain under the sky",
    "a portrait of a person with a hat",
)
CAPTION_CORPUS: tuple[str, ...] = (
    *(
        f"a {colour} {shape} on a {background} background"
        for shape in SHAPES
        for colour in COLOURS
        for background in COLOURS
        if background != colour
    ),
    *GENERIC_CAPTIONS,
)

CLIP_MAX_LENGTH = 77  # as the real CLIP tokenizers; the CLIPs get as many positions
CLIP_HIDDEN = 32
T5_DIM = 64  # = the transformers' joint_attention_dim
SD3_VAE_SHIFT, SD3_VAE_SCALE = 0.0609, 1.5305
FLUX_VAE_SHIFT, FLUX_VAE_SCALE = 0.1159, 0.3611

SD3_SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0}
# The FLUX.1-dev and FLUX.1-schnell scheduler configs: dev shifts by image size, schnell not at all.
FLUX_DEV_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
FLUX_SCHNELL_SCHEDULER_CONFIG: dict[str, Any] = {
    **FLUX_DEV_SCHEDULER_CONFIG,
    "shift": 1.0,
    "use_dynamic_shifting": False,
}


def _vae(shift_factor: float, scaling_factor: float) -> AutoencoderKL:
    # Four blocks give the real ×8 downsampling; 16 latent channels as SD3 and FLUX.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=8,
        sample_size=64,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=shift_factor,
        scaling_factor=scaling_factor,
    )


def _clip_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=CLIP_HIDDEN,
        intermediate_size=64,
        projection_dim=CLIP_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _t5(tokenizer: T5Tokenizer) -> T5EncoderModel:
    # dropout 0 on top of .eval(): a config-built module starts in train mode, and T5's default dropout
    # would make it nondeterministic.
    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=T5_DIM,
            d_kv=8,
            d_ff=128,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=0,
        )
    )


def _finish(components: dict[str, Any]) -> dict[str, Any]:
    """Put every module in eval mode, as `from_pretrained` returns them (config-built ones start in train)."""
    for component in components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return components


def tiny_sd3_components(with_t5: bool = True, seed: int = 0) -> dict[str, Any]:
    """Keyword arguments for `StableDiffusion3Pipeline`; without T5 its two slots are None.

    The T5 is drawn last, so both variants share every other weight for the same seed.
    """
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=T5_DIM,
            caption_projection_dim=32,
            pooled_projection_dim=2 * CLIP_HIDDEN,  # the two CLIP projections, concatenated
            pos_embed_max_size=32,
        )
        vae = _vae(SD3_VAE_SHIFT, SD3_VAE_SCALE)
        tokenizer = build_clip_tokenizer(CAPTION_CORPUS, model_max_length=CLIP_MAX_LENGTH)
        tokenizer_2 = build_clip_tokenizer(CAPTION_CORPUS, model_max_length=CLIP_MAX_LENGTH, pad_token="!")
        text_encoder = CLIPTextModelWithProjection(_clip_config(tokenizer))
        text_encoder_2 = CLIPTextModelWithProjection(_clip_config(tokenizer_2))
        tokenizer_3 = build_t5_tokenizer(CAPTION_CORPUS) if with_t5 else None
        text_encoder_3 = _t5(tokenizer_3) if tokenizer_3 is not None else None
    return _finish(
        {
            "transformer": transformer,
            "scheduler": FlowMatchEulerDiscreteScheduler(**SD3_SCHEDULER_CONFIG),
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "text_encoder_2": text_encoder_2,
            "tokenizer_2": tokenizer_2,
            "text_encoder_3": text_encoder_3,
            "tokenizer_3": tokenizer_3,
            "image_encoder": None,
            "feature_extractor": None,
        }
    )


def tiny_sd3_pipeline(with_t5: bool = True, seed: int = 0) -> StableDiffusion3Pipeline:
    return StableDiffusion3Pipeline(**tiny_sd3_components(with_t5=with_t5, seed=seed))


def tiny_flux_components(guidance_embeds: bool = True, seed: int = 0) -> dict[str, Any]:
    """Keyword arguments for `FluxPipeline`: dev-like with `guidance_embeds`, schnell-like without."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,  # 16 latent channels packed 2×2
            num_layers=1,
            num_single_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=T5_DIM,
            pooled_projection_dim=CLIP_HIDDEN,  # pooled CLIP output, no projection
            guidance_embeds=guidance_embeds,
            axes_dims_rope=(4, 6, 6),  # must add up to attention_head_dim
        )
        vae = _vae(FLUX_VAE_SHIFT, FLUX_VAE_SCALE)
        tokenizer = build_clip_tokenizer(CAPTION_CORPUS, model_max_length=CLIP_MAX_LENGTH)
        text_encoder = CLIPTextModel(_clip_config(tokenizer))
        tokenizer_2 = build_t5_tokenizer(CAPTION_CORPUS)
        text_encoder_2 = _t5(tokenizer_2)
    scheduler_config = FLUX_DEV_SCHEDULER_CONFIG if guidance_embeds else FLUX_SCHNELL_SCHEDULER_CONFIG
    return _finish(
        {
            "scheduler": FlowMatchEulerDiscreteScheduler(**scheduler_config),
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "text_encoder_2": text_encoder_2,
            "tokenizer_2": tokenizer_2,
            "transformer": transformer,
            "image_encoder": None,
            "feature_extractor": None,
        }
    )


def tiny_flux_pipeline(guidance_embeds: bool = True, seed: int = 0) -> FluxPipeline:
    return FluxPipeline(**tiny_flux_components(guidance_embeds=guidance_embeds, seed=seed))


def save_tiny(pipe: DiffusionPipeline, folder: str | Path, max_sequence_length: int | None = None) -> Path:
    """Save `pipe` with `save_pretrained` and return the folder (see the module docstring to load it).

    With `max_sequence_length`, also write the flowcanvas.json that LoadFlowModel reads it from."""
    pipe.save_pretrained(folder)
    if max_sequence_length is not None:
        (Path(folder) / "flowcanvas.json").write_text(json.dumps({"max_sequence_length": max_sequence_length}))
    return Path(folder)


def saved_tiny_model(family: str, folder: str | Path, max_sequence_length: int = 16) -> Path:
    """A tiny SD3 (with T5) or FLUX-dev-like model saved for LoadFlowModel: the stand-in for real weights, with
    the source axes Pruned Noise reads beside it, as `python run.py source-axes` leaves them."""
    pipe = tiny_sd3_pipeline(with_t5=True) if family == "sd3" else tiny_flux_pipeline(guidance_embeds=True)
    saved = save_tiny(pipe, folder, max_sequence_length)
    save_tiny_axes(saved, family)
    return saved


def save_tiny_axes(folder: Path, family: str, block: int = 2) -> None:
    """Source axes for a tiny model's 16-channel latents, from data spanning 8 of a tile's 64 dimensions (so
    the other directions, in both signs, are data-sparse)."""
    from nodes.models.loader import AXES_FILE
    from nodes.sampling.pruned_noise import from_tiles, source_axes

    generator = torch.Generator().manual_seed(0)
    tiles = torch.randn(400, 8, generator=generator) @ torch.randn(8, 16 * block * block, generator=generator)
    latents = from_tiles(tiles, (100, 16, 2 * block, 2 * block), block)
    source_axes([latents], block, family, "low-rank test latents").save(folder / AXES_FILE)


def saved_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """A tiny CLIP (text and vision towers, 32-pixel images) and its tokenizer, saved as a CLIP Score verifier
    loads one from a local folder (safetensors weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = build_clip_tokenizer(CAPTION_CORPUS, model_max_length=CLIP_MAX_LENGTH)
        vision = CLIPVisionConfig(
            hidden_size=CLIP_HIDDEN,
            intermediate_size=64,
            projection_dim=CLIP_HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
        config = CLIPConfig(
            text_config=_clip_config(tokenizer).to_dict(), vision_config=vision.to_dict(), projection_dim=CLIP_HIDDEN
        )
        model = CLIPModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return Path(folder)

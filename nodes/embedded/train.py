"""Train the embedded default model: a small Stable Diffusion 3 on captioned shapes, from scratch.

    python run.py train-embedded [--device cpu|cuda] [--minutes N] [--resume] [--init-from FOLDER]
                                 [--out models/shapes]

Read it top to bottom: data, tokenizers, models, phase 1 (the autoencoder), phase 3 (decoder sharpening,
run last), phase 2 (the flow
transformer and its two CLIP text encoders, jointly), sampling, saving. The result is an ordinary
diffusers `StableDiffusion3Pipeline` folder (no T5), loaded by LoadFlowModel as `embedded:shapes`
through exactly the same classes and adapter as real SD3.

The recipe is SD3's (Esser et al. 2024): logit-normal σ, x_σ = (1−σ)·z + σ·ε, velocity target ε − z,
timestep σ·1000, captions dropped to "" 10% of the time so classifier-free guidance works, AdamW with
warm-up and cosine decay, gradient clipping, an EMA of the weights. Lessons from the first experiment
(docs/algorithms.md, "The embedded model"): clip gradients and watch a held-out reconstruction (an
unclipped VAE broke late), and store the model's own max_sequence_length (0: no T5 tokens at all).

Captions are drawn afresh for every batch from `nodes.embedded.captions` (varied phrasings, synonyms, unsaid
attributes), in its training phrasings only. `--init-from` starts from a trained model instead of from
scratch: its autoencoder is kept as it is (captions do not touch it), and the flow transformer and text
encoders continue from its weights, token embeddings carried over word piece by word piece.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from nodes.embedded import captions, dataset
from nodes.image import grid_image, to_pil
from nodes.models.tokenizers import build_clip_tokenizer


@dataclass
class TrainConfig:
    """Every knob in one place; the defaults are the shipped model's."""

    out: Path = Path(__file__).resolve().parents[2] / "models" / "shapes"
    work: Path = Path("data") / "train-embedded"  # checkpoints and sample grids (for --resume)
    device: str = "cpu"
    minutes: float = 110.0  # wall-clock budget for all three phases
    vae_share: float = 0.3  # most of the budget phase 1 may take (it stops early once reconstructions read right)
    vae_target_accuracy: float = 0.99  # analyzer's accuracy on held-out reconstructions that ends phase 1
    decoder_minutes: float = 8.0  # phase 3, taken from the budget's end
    seed: int = 0
    # data
    image_size: int = dataset.CANVAS
    caption_dropout: float = 0.1
    # autoencoder: ×8 down (64×64×3 → 8×8×latent_channels)
    vae_channels: tuple[int, ...] = (32, 64, 64, 64)
    latent_channels: int = 8
    vae_batch: int = 16  # on 2 CPU cores, more small steps beat fewer large ones in a fixed time
    vae_lr: float = 5e-4
    vae_kl_weight: float = 1e-6
    object_weight: float = 4.0  # extra weight of object pixels in the reconstruction loss (see reconstruction_loss)
    # text encoders: two small CLIPs, as SD3 has (no T5)
    clip_hidden: int = 64
    clip_layers: int = 2
    clip_heads: int = 4
    text_tokens: int = 16
    # flow transformer
    dit_layers: int = 4
    dit_heads: int = 4
    dit_head_dim: int = 32
    dit_batch: int = 64
    latent_pool: int = 30_000  # scenes encoded once for phase 2 (~3 min at 155 images/s on 2 CPU cores)
    dit_lr: float = 6e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    # monitoring
    log_every: int = 100
    sample_every_minutes: float = 10.0
    checkpoint_every_minutes: float = 5.0
    init_from: Path | None = None  # a trained model folder to continue from (see the module docstring)


# ---------------------------------------------------------------------------------------------- data


def vae_images(rng: np.random.Generator, n: int, held_out: bool = False) -> torch.Tensor:
    """A fresh batch of scene images in [−1, 1] (what the VAE sees)."""
    images, _, _ = dataset.batch(rng, n, held_out=held_out)
    return images * 2 - 1


CORPUS_CAPTIONS = 50_000


def caption_corpus() -> list[str]:
    """Training captions from a fixed seed, for learning the tokenizers' merges (without made-up words, and
    held-out phrasings' own words are never in it: both fall back to byte pieces, as any unseen word does)."""
    rng = np.random.default_rng(40_000)
    return [
        captions.describe(dataset.sample_training_scene(rng), rng, nonsense=False).text for _ in range(CORPUS_CAPTIONS)
    ]


# ---------------------------------------------------------------------------------------------- models


def build_pipeline(config: TrainConfig):  # -> StableDiffusion3Pipeline
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(config.seed)
    corpus = caption_corpus()
    tokenizer = build_clip_tokenizer(corpus, model_max_length=config.text_tokens)
    tokenizer_2 = build_clip_tokenizer(corpus, model_max_length=config.text_tokens, pad_token="!")
    clip = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.clip_hidden,
        intermediate_size=4 * config.clip_hidden,
        num_hidden_layers=config.clip_layers,
        num_attention_heads=config.clip_heads,
        projection_dim=config.clip_hidden,
        max_position_embeddings=config.text_tokens,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    blocks = len(config.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=config.vae_channels,
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=16,
        sample_size=config.image_size,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    latent_size = config.image_size // 2 ** (blocks - 1)
    joint = 2 * config.clip_hidden  # the two CLIPs' hidden states, concatenated
    transformer = SD3Transformer2DModel(
        sample_size=latent_size,
        patch_size=2,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        num_layers=config.dit_layers,
        attention_head_dim=config.dit_head_dim,
        num_attention_heads=config.dit_heads,
        joint_attention_dim=joint,
        caption_projection_dim=joint,
        pooled_projection_dim=joint,
        pos_embed_max_size=latent_size,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
        vae=vae,
        text_encoder=CLIPTextModelWithProjection(clip),
        tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(clip),
        tokenizer_2=tokenizer_2,
        text_encoder_3=None,
        tokenizer_3=None,
    )


@torch.no_grad()
def warm_start(pipe, source: Path) -> None:
    """Continue from the model in `source`: every weight whose name and shape match is copied, and each text
    encoder's token embeddings row by row for the word pieces both vocabularies hold (new pieces keep their
    fresh initialisation). The VAE's shift and scale factors come along with its weights."""
    from diffusers import StableDiffusion3Pipeline

    trained = StableDiffusion3Pipeline.from_pretrained(
        source, text_encoder_3=None, tokenizer_3=None, dtype=torch.float32, local_files_only=True
    )
    for name in ("vae", "transformer", "text_encoder", "text_encoder_2"):
        target, weights = getattr(pipe, name), getattr(trained, name).state_dict()
        own = target.state_dict()
        for key, value in weights.items():
            if key in own and own[key].shape == value.shape:
                own[key].copy_(value)
    for encoder, tokenizer in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        old_vocab, new_vocab = getattr(trained, tokenizer).get_vocab(), getattr(pipe, tokenizer).get_vocab()
        old_rows = getattr(trained, encoder).get_input_embeddings().weight
        new_rows = getattr(pipe, encoder).get_input_embeddings().weight
        for piece, row in new_vocab.items():
            if piece in old_vocab:
                new_rows[row] = old_rows[old_vocab[piece]]
    pipe.vae.register_to_config(
        shift_factor=trained.vae.config.shift_factor, scaling_factor=trained.vae.config.scaling_factor
    )


def parameters(pipe, names: tuple[str, ...]) -> list[torch.nn.Parameter]:
    return [p for name in names for p in getattr(pipe, name).parameters()]


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def projected_steps(step: int, started: float, seconds: float) -> int:
    """How many steps a time-limited phase will take at its pace so far (its learning-rate schedule's length)."""
    elapsed = time.monotonic() - started
    return max(step + 1, round(step * seconds / elapsed)) if step else 10**6


def optimise(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    params: Iterable[torch.nn.Parameter],
    lr: float,
    grad_clip: float,
) -> None:
    """One update at learning rate `lr`, gradients clipped to norm `grad_clip` (every phase trains this way)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


# ---------------------------------------------------------------------------------------------- phase 1: VAE


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor, object_weight: float) -> torch.Tensor:
    """MSE in which object pixels count 1 + object_weight times: a small shape is a few percent of the
    pixels, and plain MSE is content to blur it into the flat background that makes up the rest."""
    background = images[:, :, :1, :1]  # the corner pixel: the dataset keeps the border clear of the object
    weights = 1 + object_weight * ((images - background).abs().amax(dim=1, keepdim=True) > 0.02)
    return (weights * (reconstruction - images) ** 2).mean() / weights.mean()


def train_vae(pipe, config: TrainConfig, seconds: float, log: "Log") -> None:
    """Object-weighted reconstruction with a tiny KL term, until the analyzer reads held-out reconstructions
    right or the phase's time is up."""
    vae = pipe.vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    rng = np.random.default_rng(config.seed + 1)
    held_out_images = vae_images(np.random.default_rng(10_000), 64, held_out=True)
    held_out_scenes = dataset.batch(np.random.default_rng(10_001), 128, held_out=True)
    started, step = time.monotonic(), 0
    with tqdm(desc="phase 1: autoencoder", unit="step", dynamic_ncols=True) as bar:
        while time.monotonic() < started + seconds:
            images = vae_images(rng, config.vae_batch)
            images = images.to(config.device)
            posterior = vae.encode(images).latent_dist
            reconstruction = vae.decode(posterior.sample()).sample
            loss = (
                reconstruction_loss(reconstruction, images, config.object_weight)
                + config.vae_kl_weight * posterior.kl().mean()
            )
            lr = lr_at(step, projected_steps(step, started, seconds), config.vae_lr, 50)
            optimise(optimizer, loss, vae.parameters(), lr, config.grad_clip)
            step += 1
            bar.update(1)
            if step % config.log_every == 0:
                held_out = reconstruction_error(vae, held_out_images, config.device)
                read_back = reconstruction_fidelity(vae, held_out_scenes, config.device)
                bar.set_postfix(
                    loss=f"{loss.item():.4f}", held_out=f"{held_out:.4f}", shape=f"{read_back['shape']:.3f}"
                )
                log.write(phase="vae", step=step, loss=loss.item(), held_out_mse=held_out, **read_back)
                vae.train()
                if min(read_back.values()) >= config.vae_target_accuracy:
                    break
    vae.eval()
    set_latent_statistics(pipe, config)
    log.write(
        phase="vae",
        step=step,
        held_out_mse=reconstruction_error(vae, held_out_images, config.device),
        **reconstruction_fidelity(vae, held_out_scenes, config.device),
        scaling_factor=vae.config.scaling_factor,
        shift_factor=vae.config.shift_factor,
    )


@torch.no_grad()
def reconstruction_error(vae, images: torch.Tensor, device: str) -> float:
    images = images.to(device)
    return F.mse_loss(vae.decode(vae.encode(images).latent_dist.mode()).sample, images).item()


@torch.no_grad()
def reconstruction_fidelity(
    vae, scenes: tuple[torch.Tensor, list[str], list[dataset.Scene]], device: str
) -> dict[str, float]:
    """The analyzer's accuracy on reconstructions (colour, shape, size): what the flow model can at best reach."""
    from nodes.embedded.analyzer import analyze

    images, _, expected = scenes
    vae.eval()
    decoded = vae.decode(vae.encode(images.to(device) * 2 - 1).latent_dist.mode()).sample
    found = [analyze(((image + 1) / 2).clamp(0, 1).cpu()) for image in decoded]
    return {
        name: float(np.mean([getattr(f, name) == getattr(e, name) for f, e in zip(found, expected)]))
        for name in ("colour", "shape", "size")
    }


@torch.no_grad()
def set_latent_statistics(pipe, config: TrainConfig) -> None:
    """Write the latents' mean and 1/std into the VAE config, as SD3's shift and scale factors are."""
    images = vae_images(np.random.default_rng(20_000), 512)
    latents = torch.cat([pipe.vae.encode(chunk.to(config.device)).latent_dist.mode() for chunk in images.split(64)])
    pipe.vae.register_to_config(
        shift_factor=round(latents.mean().item(), 4), scaling_factor=round(1.0 / latents.std().item(), 4)
    )


# ---------------------------------------------------------------------------------------------- phase 3: decoder


def finetune_decoder(pipe, config: TrainConfig, seconds: float, log: "Log") -> None:
    """Sharpen the decoder on the latents the flow model was trained on (the encoder stays frozen, so the latent
    space, and with it the flow model, is unchanged): shapes come out crisper than phase 1 alone leaves them."""
    vae = pipe.vae
    vae.requires_grad_(False)
    trained = [*vae.decoder.parameters(), *(vae.post_quant_conv.parameters() if vae.post_quant_conv else ())]
    for parameter in trained:
        parameter.requires_grad_(True)
    vae.decoder.train()
    optimizer = torch.optim.AdamW(trained, lr=config.vae_lr / 2, weight_decay=0.0)
    rng = np.random.default_rng(config.seed + 5)
    held_out_images = vae_images(np.random.default_rng(10_000), 64, held_out=True)
    held_out_scenes = dataset.batch(np.random.default_rng(10_001), 128, held_out=True)
    started, step = time.monotonic(), 0
    with tqdm(desc="phase 3: decoder", unit="step", dynamic_ncols=True) as bar:
        while time.monotonic() < started + seconds:
            images = vae_images(rng, config.vae_batch)
            images = images.to(config.device)
            with torch.no_grad():
                latents = vae.encode(images).latent_dist.mode()
            loss = reconstruction_loss(vae.decode(latents).sample, images, config.object_weight)
            lr = lr_at(step, projected_steps(step, started, seconds), config.vae_lr / 2, 20)
            optimise(optimizer, loss, trained, lr, config.grad_clip)
            step += 1
            bar.update(1)
            if step % config.log_every == 0:
                held_out = reconstruction_error(vae, held_out_images, config.device)
                bar.set_postfix(loss=f"{loss.item():.4f}", held_out=f"{held_out:.4f}")
                log.write(phase="decoder", step=step, loss=loss.item(), held_out_mse=held_out)
    vae.eval().requires_grad_(False)
    log.write(
        phase="decoder",
        step=step,
        held_out_mse=reconstruction_error(vae, held_out_images, config.device),
        **reconstruction_fidelity(vae, held_out_scenes, config.device),
    )


# ---------------------------------------------------------------------------------------------- phase 2: flow


def encode_latents(pipe, images: torch.Tensor) -> torch.Tensor:
    vae = pipe.vae
    with torch.no_grad():
        mode = vae.encode(images).latent_dist.mode()
    return (mode - vae.config.shift_factor) * vae.config.scaling_factor


@torch.no_grad()
def encode_pool(
    pipe, config: TrainConfig, count: int, seed: int, held_out: bool = False
) -> tuple[torch.Tensor, list[dataset.Scene]]:
    """Latents and scenes of `count` fresh scenes, encoded once (captions are drawn per use)."""
    rng = np.random.default_rng(seed)
    latents, scenes = [], []
    for start in tqdm(range(0, count, 256), desc="encoding scenes", unit="batch", dynamic_ncols=True):
        images, _, batch_scenes = dataset.batch(rng, min(256, count - start), held_out=held_out)
        latents.append(encode_latents(pipe, (images * 2 - 1).to(config.device)))
        scenes += batch_scenes
    return torch.cat(latents), scenes


def flow_loss(pipe, z: torch.Tensor, captions: list[str], generator: torch.Generator, device: str) -> torch.Tensor:
    """SD3's rectified-flow loss on one batch of latents; prompts go through the pipeline's own encode_prompt."""
    noise = torch.randn(z.shape, generator=generator, device="cpu").to(device)
    sigma = torch.sigmoid(torch.randn(z.shape[0], generator=generator)).to(device)  # logit-normal
    s = sigma.view(-1, 1, 1, 1)
    noisy = (1 - s) * z + s * noise
    embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=captions,
        prompt_2=None,
        prompt_3=None,
        device=device,
        do_classifier_free_guidance=False,
        max_sequence_length=0,
    )
    predicted = pipe.transformer(
        hidden_states=noisy,
        timestep=sigma * 1000,
        encoder_hidden_states=embeds,
        pooled_projections=pooled,
        return_dict=False,
    )[0]
    return F.mse_loss(predicted, noise - z)


def train_flow(pipe, ema, config: TrainConfig, seconds: float, log: "Log", state: dict) -> None:
    trained = ("transformer", "text_encoder", "text_encoder_2")
    for name in trained:
        getattr(pipe, name).train()
    params = parameters(pipe, trained)
    optimizer = torch.optim.AdamW(params, lr=config.dit_lr, weight_decay=0.01)
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    rng = np.random.default_rng(config.seed + 2 + state.get("step", 0))
    generator = torch.Generator().manual_seed(config.seed + 3 + state.get("step", 0))
    pool, pool_scenes = encode_pool(pipe, config, config.latent_pool, config.seed + 4)
    # Watched for generalisation: held-out combinations, worded in held-out phrasings.
    held_out_latents, held_out_scenes = encode_pool(pipe, config, 128, 30_000, held_out=True)
    wording = np.random.default_rng(30_001)
    held_out_captions = [captions.describe(scene, wording, held_out=True).text for scene in held_out_scenes]
    step = state.get("step", 0)
    estimated_total = state.get("estimated_total") or max(1000, int(seconds * 5))
    started = time.monotonic()
    deadline = started + seconds
    next_sample = started + config.sample_every_minutes * 60
    next_checkpoint = started + config.checkpoint_every_minutes * 60
    with tqdm(desc="phase 2: flow", unit="step", initial=step, dynamic_ncols=True) as bar:
        while time.monotonic() < deadline:
            picked = rng.integers(0, len(pool), config.dit_batch)
            batch_captions = [
                "" if rng.random() < config.caption_dropout else captions.describe(pool_scenes[i], rng).text
                for i in picked
            ]
            latents = pool[torch.from_numpy(picked).to(pool.device)]
            loss = flow_loss(pipe, latents, batch_captions, generator, config.device)
            optimise(
                optimizer,
                loss,
                params,
                lr_at(step, estimated_total, config.dit_lr, config.warmup_steps),
                config.grad_clip,
            )
            update_ema(ema, pipe, trained, config.ema_decay)
            step += 1
            bar.update(1)
            if step % config.log_every == 0:
                with torch.no_grad():
                    evaluation = flow_loss(
                        ema, held_out_latents, held_out_captions, torch.Generator().manual_seed(0), config.device
                    ).item()
                bar.set_postfix(loss=f"{loss.item():.3f}", held_out=f"{evaluation:.3f}")
                log.write(phase="flow", step=step, loss=loss.item(), held_out_loss=evaluation)
            now = time.monotonic()
            if now >= next_sample:
                save_samples(ema, config, step)
                next_sample = now + config.sample_every_minutes * 60
            if now >= next_checkpoint:
                save_checkpoint(pipe, ema, optimizer, config, step, estimated_total)
                next_checkpoint = now + config.checkpoint_every_minutes * 60
    save_checkpoint(pipe, ema, optimizer, config, step, estimated_total)
    log.write(phase="flow", step=step, done=True)


@torch.no_grad()
def update_ema(ema, pipe, names: tuple[str, ...], decay: float) -> None:
    for name in names:
        for averaged, current in zip(getattr(ema, name).parameters(), getattr(pipe, name).parameters()):
            averaged.lerp_(current, 1 - decay)


# ---------------------------------------------------------------------------------------------- sampling

SAMPLE_PROMPTS = (
    "a red circle on a blue background",
    "small yellow star, black background",
    "a white background with a big green triangle",
    "A PURPLE HEART ON ORANGE.",
    "cross in cyan on grey",
    "a white ring",
    "blue diamond against a yellow background",
    "a tiny orange square over violet",
)


@torch.no_grad()
def save_samples(pipe, config: TrainConfig, step: int) -> Path:
    """A captioned grid of the EMA model's samples (28 Euler steps, guidance 4) for watching progress."""
    for module in (pipe.transformer, pipe.text_encoder, pipe.text_encoder_2):
        module.eval()
    images = pipe(
        prompt=list(SAMPLE_PROMPTS),
        num_inference_steps=28,
        guidance_scale=4.0,
        height=config.image_size,
        width=config.image_size,
        max_sequence_length=0,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="pt",
    ).images
    sheet = grid_image(to_pil(images), list(SAMPLE_PROMPTS), columns=4)
    path = config.work / f"samples-{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


# ---------------------------------------------------------------------------------------------- saving


class Log:
    """Training metrics as JSON lines next to the checkpoints."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def write(self, **values: object) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"time": time.time(), **values}) + "\n")


def save_checkpoint(pipe, ema, optimizer, config: TrainConfig, step: int, estimated_total: int) -> None:
    folder = config.work / "checkpoint"
    tmp = config.work / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp / "pipe")
    ema.save_pretrained(tmp / "ema")
    torch.save(
        {"optimizer": optimizer.state_dict(), "step": step, "estimated_total": estimated_total}, tmp / "state.pt"
    )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # a crash mid-save leaves the previous checkpoint intact


def save_model(ema, config: TrainConfig, stats: dict[str, object]) -> Path:
    """The EMA weights in fp16 safetensors, plus flowcanvas.json (max_sequence_length 0: no T5 tokens; the
    vocabulary the canvas hints at and TextEncode warns against)."""
    shipped = copy.deepcopy(ema).to(torch.float16)
    tmp = config.out.with_name(config.out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shipped.save_pretrained(tmp, safe_serialization=True)
    metadata = {"max_sequence_length": 0, "vocabulary": captions.vocabulary().model_dump(), "training": stats}
    (tmp / "flowcanvas.json").write_text(json.dumps(metadata, indent=2) + "\n")
    shutil.rmtree(config.out, ignore_errors=True)
    tmp.rename(config.out)
    return config.out


# ---------------------------------------------------------------------------------------------- main


def train(config: TrainConfig, resume: bool = False) -> Path:
    from diffusers import StableDiffusion3Pipeline

    started = time.monotonic()
    torch.manual_seed(config.seed)
    log = Log(config.work / "log.jsonl")
    checkpoint = config.work / "checkpoint"
    state: dict = {}
    decoder_seconds = min(config.decoder_minutes, config.minutes) * 60
    warm = config.init_from is not None
    if resume and checkpoint.is_dir():
        load = dict(text_encoder_3=None, tokenizer_3=None, local_files_only=True)
        pipe = StableDiffusion3Pipeline.from_pretrained(checkpoint / "pipe", **load).to(config.device)
        ema = StableDiffusion3Pipeline.from_pretrained(checkpoint / "ema", **load).to(config.device)
        state = torch.load(checkpoint / "state.pt", map_location=config.device, weights_only=True)
        flow_seconds = config.minutes * 60 - (0 if warm else decoder_seconds)
    elif warm:
        pipe = build_pipeline(config)
        warm_start(pipe, config.init_from)
        pipe.to(config.device)
        ema = copy.deepcopy(pipe)
        flow_seconds = config.minutes * 60
        log.write(phase="warm start", source=str(config.init_from))
    else:
        pipe = build_pipeline(config).to(config.device)
        vae_seconds = config.minutes * 60 * config.vae_share
        train_vae(pipe, config, vae_seconds, log)
        ema = copy.deepcopy(pipe)
        flow_seconds = config.minutes * 60 - decoder_seconds - (time.monotonic() - started)
    pipe.vae.requires_grad_(False)
    if flow_seconds > 0:
        train_flow(pipe, ema, config, flow_seconds, log, state)
    if not warm:  # a warm start keeps its source's decoder, already sharpened
        # The shipped model is the EMA one: its decoder is the one sharpened.
        finetune_decoder(ema, config, decoder_seconds, log)
    for module in ema.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    samples = save_samples(ema, config, step=10**6 - 1)
    stats = {
        "minutes": round((time.monotonic() - started) / 60, 1),
        "device": config.device,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
    }
    out = save_model(ema, config, stats)
    print(
        f"saved {out} ({sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 1e6:.1f} MB); "
        f"last samples: {samples}"
    )
    return out

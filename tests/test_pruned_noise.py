"""Pruned source noise (docs/algorithms.md, "Pruned source noise"): the data-sparse directions against data built
to have them, the rejection rule and its determinism, the axes file, the committed embedded axes, and the node
feeding the Sampler and the Particle Sampler on tiny SD3 and FLUX models, with the CLI that computes the axes."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from nodes.models.components import Latent
from nodes.models.loader import AXES_FILE, MANAGER, LoadOptions, content_hash, resolve_source
from nodes.registry import NodeContext, NodeError
from nodes.sampling.pruned_noise import (
    DRAW_CHUNK,
    PrunedNoise,
    PrunedNoiseSource,
    PruningTooStrict,
    SourceAxes,
    acceptance,
    from_tiles,
    image_latents,
    pruned_gaussian,
    scaled_threshold,
    source_axes,
    sparse_axes,
    to_tiles,
)
from nodes.sampling.sampler import NoiseSource, Sampler
from nodes.sampling.solvers import EULER
from nodes.scaling.particles import ParticleSampler
from tests.tiny_models import saved_tiny_model

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------- the statistics


def test_directions_the_data_never_takes_are_sparse_and_those_it_spans_are_not():
    """Data in a 3-dimensional subspace of R⁸: the 5 directions orthogonal to it, in both signs, are the 10
    data-sparse axes; the 3 it spans are not, in either sign."""
    generator = torch.Generator().manual_seed(0)
    data = torch.zeros(500, 8)
    data[:, :3] = torch.randn(500, 3, generator=generator)
    axes = sparse_axes(data, sparse_threshold=0.01)
    assert axes.shape == (10, 8)
    torch.testing.assert_close(axes.norm(dim=1), torch.ones(10))
    assert axes[:, :3].abs().max() < 1e-6, "every kept axis is orthogonal to the data"
    unit = data / data.norm(dim=1, keepdim=True)
    assert (unit @ axes.T).max() <= 0.01


def test_a_direction_counts_as_sparse_by_its_best_cosine_with_any_data_point():
    """All data on the positive side of the first coordinate: −e₁ is data-sparse (no point comes near it), +e₁
    is not; the rule looks at each sign on its own, as the paper's 2d candidate axes do."""
    generator = torch.Generator().manual_seed(1)
    data = torch.randn(400, 6, generator=generator)
    data[:, 0] = data[:, 0].abs() + 0.5
    axes = sparse_axes(data, sparse_threshold=0.0)
    unit = data / data.norm(dim=1, keepdim=True)
    assert (unit @ axes.T).max() <= 0.0 and len(axes) >= 1
    closest_to_minus_e1 = max(float(axis @ -torch.eye(6)[0]) for axis in axes)
    assert closest_to_minus_e1 > 0.5, "a direction near −e₁ is kept"
    assert all(float(axis @ torch.eye(6)[0]) < 0 for axis in axes)


def test_tiles_cut_every_block_of_every_image_and_put_them_back():
    latents = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    tiles = to_tiles(latents, 2)
    assert tiles.shape == (2 * 2 * 3, 3 * 2 * 2)
    torch.testing.assert_close(tiles[1], latents[0, :, 0:2, 2:4].reshape(-1))  # image 0, row 0, column 1
    torch.testing.assert_close(tiles[3], latents[0, :, 2:4, 0:2].reshape(-1))  # image 0, row 1, column 0
    torch.testing.assert_close(from_tiles(tiles, tuple(latents.shape), 2), latents)


def test_thresholds_carry_over_as_one_over_root_d():
    assert scaled_threshold(0.048, 3072) == pytest.approx(0.048)
    assert scaled_threshold(0.048, 512) == pytest.approx(0.048 * math.sqrt(6))


# ---------------------------------------------------------------------------------------------- the rejection rule


def random_axes(count: int, dimension: int, seed: int = 0) -> torch.Tensor:
    axes = torch.randn(count, dimension, generator=torch.Generator().manual_seed(seed))
    return axes / axes.norm(dim=1, keepdim=True)


def test_every_kept_draw_passes_and_a_seed_gives_the_same_draws():
    axes = random_axes(40, 64)
    kept, drawn = pruned_gaussian(50, axes, 0.2, torch.Generator().manual_seed(3))
    assert kept.shape == (50, 64) and drawn >= 50 and drawn % DRAW_CHUNK == 0
    cosines = (kept / kept.norm(dim=1, keepdim=True)) @ axes.T
    assert cosines.max() <= 0.2
    again, _ = pruned_gaussian(50, axes, 0.2, torch.Generator().manual_seed(3))
    other, _ = pruned_gaussian(50, axes, 0.2, torch.Generator().manual_seed(4))
    assert torch.equal(again, kept) and not torch.equal(other, kept)
    plain = torch.randn((DRAW_CHUNK, 64), generator=torch.Generator().manual_seed(3))
    rejected = ((plain / plain.norm(dim=1, keepdim=True)) @ axes.T).max(dim=1).values > 0.2
    assert rejected.any(), "the threshold does prune"
    torch.testing.assert_close(kept[: int((~rejected).sum())], plain[~rejected][:50])


def test_without_axes_the_draws_are_plain_gaussian():
    kept, _ = pruned_gaussian(10, torch.empty(0, 16), 0.1, torch.Generator().manual_seed(5))
    torch.testing.assert_close(kept, torch.randn((DRAW_CHUNK, 16), generator=torch.Generator().manual_seed(5))[:10])


def test_a_threshold_that_keeps_nothing_is_refused_with_its_numbers():
    """Every vector has a positive cosine with some axis of a full basis in both signs: nothing passes 0."""
    full = torch.cat([torch.eye(8), -torch.eye(8)])
    with pytest.raises(PruningTooStrict, match=r"0 of 40,960 Gaussian draws passed the threshold 0 "):
        pruned_gaussian(1, full, 0.0, torch.Generator().manual_seed(0))
    assert acceptance(full, 0.0, torch.Generator().manual_seed(0)) == 0.0


# ---------------------------------------------------------------------------------------------- the axes file


def test_an_axes_file_round_trips_and_a_foreign_file_is_refused(tmp_path):
    axes = SourceAxes(random_axes(5, 16), 4, 2, 0.02, 0.1, 300, "sd3", "unit test")
    axes.save(tmp_path / "a.safetensors")
    loaded = SourceAxes.load(tmp_path / "a.safetensors")
    assert loaded == SourceAxes(loaded.axes, 4, 2, 0.02, 0.1, 300, "sd3", "unit test")
    torch.testing.assert_close(loaded.axes, axes.axes)
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(ValueError, match="not a source-axes file"):
        SourceAxes.load(tmp_path / "weights.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a source-axes file"):
        SourceAxes.load(tmp_path / "junk.safetensors")


def test_the_axes_file_is_not_part_of_the_models_hash(tmp_path):
    folder = saved_tiny_model("sd3", tmp_path / "sd3")
    before = content_hash(resolve_source(str(folder)))
    SourceAxes(random_axes(3, 64), 16, 2, 0.02, 0.1, 10, "sd3", "t").save(folder / AXES_FILE)
    assert content_hash(resolve_source(str(folder))) == before


def test_the_committed_embedded_axes_come_from_its_training_set_at_the_papers_thresholds():
    axes = SourceAxes.load(REPO / "models" / "shapes" / AXES_FILE)
    assert (axes.channels, axes.block, axes.family) == (8, 8, "sd3") and "training scenes" in axes.data
    assert axes.sparse_threshold == pytest.approx(scaled_threshold(0.01, 512))
    assert axes.reject_threshold == pytest.approx(scaled_threshold(0.048, 512))
    assert 0 < len(axes.axes) < 1024
    torch.testing.assert_close(axes.axes.norm(dim=1), torch.ones(len(axes.axes)))
    noise = PrunedNoiseSource(7, axes, axes.reject_threshold).draw((2, 8, 8, 8), torch.float32, torch.device("cpu"))
    flat = noise.reshape(2, -1)
    assert ((flat / flat.norm(dim=1, keepdim=True)) @ axes.axes.T).max() <= axes.reject_threshold
    again = PrunedNoiseSource(7, axes, axes.reject_threshold).draw((2, 8, 8, 8), torch.float32, torch.device("cpu"))
    assert torch.equal(noise, again) and not torch.equal(noise[0], noise[1])


# ---------------------------------------------------------------------------------------------- tiny SD3 and FLUX


def write_images(folder: Path, count: int) -> Path:
    """Flat-coloured squares on flat backgrounds, a small data set with plenty of empty directions."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = np.full((32, 32, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        top, left = rng.integers(0, 16, 2)
        pixels[top : top + 12, left : left + 12] = rng.integers(0, 256, 3)
        Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return folder


@pytest.fixture(scope="module", params=["sd3", "flux"])
def tiny_with_axes(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    folder = saved_tiny_model(request.param, root / "model")
    loaded = MANAGER.get(str(folder), LoadOptions(device="cpu"))
    images = write_images(root / "images", 40)
    source_axes(image_latents(loaded.vae, images, 32), 2, loaded.model.family, "test images").save(folder / AXES_FILE)
    yield loaded
    MANAGER.free()


def pruned_noise(loaded, seed: int = 0, **params) -> PrunedNoiseSource:
    ctx = NodeContext(node_id="n", node_type="PrunedNoise", device="cpu")
    noise = PrunedNoise().run(ctx, PrunedNoise.Params(seed=seed, **params), model=loaded.model)["noise"]
    assert ctx.records["seeds"] == {"n.seed": seed}
    [(name, sha)] = ctx.records["model_hashes"].items()
    assert name == params.get("axes", f"{loaded.model.source} ({AXES_FILE})") and len(sha) == 64
    return noise


def sample(loaded, noise, size: tuple[int, int] = (32, 32)) -> torch.Tensor:
    return (
        Sampler()
        .run(
            NodeContext(node_id="s", node_type="Sampler", device="cpu"),
            Sampler.Params(guidance=1.0),
            model=loaded.model,
            positive=loaded.text_encoder.encode(["a red square"]),
            latent=Latent(torch.zeros(loaded.model.latent_shape(1, *size)), loaded.model.family),
            sigmas=loaded.model.default_sigmas(4, *size),
            solver=EULER,
            noise=noise,
        )["latent"]
        .samples
    )


def test_the_sampler_starts_from_pruned_noise_per_seed(tiny_with_axes):
    loaded = tiny_with_axes
    noise = pruned_noise(loaded, seed=3)
    assert noise.axes.block == 2 and len(noise.axes.axes) > 0
    shape = loaded.model.latent_shape(1, 32, 32)
    start = noise.draw(shape, torch.float32, torch.device("cpu"))
    tiles = to_tiles(start, 2)
    assert ((tiles / tiles.norm(dim=1, keepdim=True)) @ noise.axes.axes.T).max() <= noise.reject_threshold
    assert not torch.equal(start, NoiseSource(3).draw(shape, torch.float32, torch.device("cpu")))
    image = sample(loaded, noise)
    assert image.shape == shape and torch.isfinite(image).all()
    assert torch.equal(sample(loaded, pruned_noise(loaded, seed=3)), image)
    assert not torch.equal(sample(loaded, pruned_noise(loaded, seed=4)), image)
    assert not torch.equal(sample(loaded, NoiseSource(3)), image)


class MeanBrightness:
    description = "mean brightness"

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3))


def test_the_particle_sampler_draws_its_starting_noises_pruned(tiny_with_axes):
    loaded = tiny_with_axes
    drawn: list[torch.Tensor] = []
    noise = pruned_noise(loaded, seed=1)

    class Recording(PrunedNoiseSource):
        def sample(self, shape, generator):
            drawn.append(super().sample(shape, generator))
            return drawn[-1]

    recording = Recording(noise.seed, noise.axes, noise.reject_threshold)
    out = ParticleSampler().run(
        NodeContext(node_id="p", node_type="ParticleSampler", device="cpu"),
        ParticleSampler.Params(method="best_of_n", process="ode", path="linear", nfe_budget=12, guidance=1.0),
        model=loaded.model,
        positive=loaded.text_encoder.encode(["a red square"]),
        latent=Latent(torch.zeros(loaded.model.latent_shape(1, 32, 32)), loaded.model.family),
        sigmas=loaded.model.default_sigmas(4, 32, 32),
        noise=recording,
        vae=loaded.vae,
        verifier=MeanBrightness(),
    )["latent"]
    assert out.samples.shape == loaded.model.latent_shape(1, 32, 32)
    [starts] = drawn
    assert starts.shape == (3, *loaded.model.latent_shape(1, 32, 32)[1:])
    tiles = to_tiles(starts, 2)
    assert ((tiles / tiles.norm(dim=1, keepdim=True)) @ noise.axes.axes.T).max() <= noise.reject_threshold


def test_pruned_noise_says_what_is_missing_or_mismatched(tiny_with_axes, tmp_path):
    loaded = tiny_with_axes
    with pytest.raises(NodeError, match="no file at 'missing.safetensors'") as missing:
        pruned_noise(loaded, axes="missing.safetensors")
    assert missing.value.field == "axes" and "python run.py source-axes" in (missing.value.hint or "")
    other = "flux" if loaded.model.family == "sd3" else "sd3"
    SourceAxes(random_axes(3, 64), 16, 2, 0.02, 0.1, 10, other, "t").save(tmp_path / "other.safetensors")
    with pytest.raises(NodeError, match=f"axes for a {other} model") as foreign:
        pruned_noise(loaded, axes=str(tmp_path / "other.safetensors"))
    assert foreign.value.field == "axes"
    coarse = SourceAxes(random_axes(3, 16 * 9), 16, 3, 0.02, 0.1, 10, loaded.model.family, "t")
    coarse.save(tmp_path / "coarse.safetensors")
    with pytest.raises(NodeError, match="not a whole number of the axes' 3×3 tiles") as untiled:
        sample(loaded, pruned_noise(loaded, axes=str(tmp_path / "coarse.safetensors")))
    assert untiled.value.field == "noise"
    full_basis = torch.cat([torch.eye(64), -torch.eye(64)])  # every draw has a positive cosine with one of them
    SourceAxes(full_basis, 16, 2, 0.02, 0.1, 10, loaded.model.family, "t").save(tmp_path / "full.safetensors")
    with pytest.raises(NodeError, match="Gaussian draws passed the threshold") as strict:
        sample(loaded, pruned_noise(loaded, axes=str(tmp_path / "full.safetensors"), threshold=1e-4))
    assert strict.value.field == "noise" and strict.value.hint == "raise the noise's threshold"
    confined = NodeContext(node_id="n", node_type="PrunedNoise", device="cpu", file_roots=(tmp_path / "data",))
    with pytest.raises(NodeError, match="outside the folders this run may read"):
        PrunedNoise().run(confined, PrunedNoise.Params(axes=str(tmp_path / "other.safetensors")), model=loaded.model)


def test_the_cli_computes_axes_beside_a_model_from_a_folder_of_images(tmp_path):
    folder = saved_tiny_model("flux", tmp_path / "flux")
    images = write_images(tmp_path / "images", 12)
    command = [sys.executable, "run.py", "source-axes", "--model", str(folder)]
    done = subprocess.run(
        [*command, "--images", str(images), "--size", "32", "--block", "2"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {folder / AXES_FILE}" in done.stdout and "data-sparse directions of 128" in done.stdout
    axes = SourceAxes.load(folder / AXES_FILE)
    assert (axes.channels, axes.block, axes.family, axes.samples) == (16, 2, "flux", 12 * 4)
    assert not list(folder.glob("*.partial"))
    no_images = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert no_images.returncode == 2 and "--images FOLDER is needed" in no_images.stderr
    wrong = subprocess.run([*command, "--images", str(tmp_path / "nowhere")], cwd=REPO, capture_output=True, text=True)
    assert wrong.returncode == 2 and "no folder at" in wrong.stderr

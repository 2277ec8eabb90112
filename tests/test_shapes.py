"""The embedded model's shape dataset and the analyzer that reads scenes back from pixels.

Accuracy thresholds sit a little below what was measured (1000 scenes each, seeds below):
clean images 100% on every attribute with mean mask IoU 0.996; blurred (Gaussian, radius 1) and noisy
(σ 0.03) images 100% on every attribute with mean mask IoU 0.974.
"""

from __future__ import annotations

import hashlib
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from nodes.embedded import dataset
from nodes.embedded.analyzer import analyze
from nodes.embedded.dataset import (
    CANVAS,
    COLOURS,
    EXTENT_RANGES,
    HELD_OUT_COMBINATIONS,
    MARGIN,
    SHAPES,
    Scene,
    batch,
    coverage,
    is_held_out,
    object_mask,
    random_scene,
    render,
    sample_held_out_scene,
    sample_training_scene,
)

ATTRIBUTES = ("background", "colour", "shape", "size")
ACCURACY_SCENES = 1000


def _degrade(image: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """What a slightly soft generator might produce: Gaussian blur of radius 1, then noise of σ 0.03."""
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(1)), dtype=np.float32) / 255.0
    return np.clip(blurred + rng.normal(0.0, 0.03, blurred.shape).astype(np.float32), 0.0, 1.0)


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


def _report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Print past pytest's capture: these measurements are meant to be read on every run."""
    with capsys.disabled():
        print(f"\n{line}")


@pytest.fixture(scope="module")
def accuracy_scenes() -> list[Scene]:
    rng = np.random.default_rng(20260101)
    return [random_scene(rng) for _ in range(ACCURACY_SCENES)]


def test_same_seed_same_scenes_and_pixels() -> None:
    images_a, captions_a, scenes_a = batch(np.random.default_rng(7), 64)
    images_b, captions_b, scenes_b = batch(np.random.default_rng(7), 64)
    assert scenes_a == scenes_b and captions_a == captions_b
    assert torch.equal(images_a, images_b)
    images_c, _, scenes_c = batch(np.random.default_rng(8), 64)
    assert scenes_c != scenes_a and not torch.equal(images_c, images_a)


def test_batch_is_float_images_equal_to_render() -> None:
    images, captions, scenes = batch(np.random.default_rng(1), 16)
    assert images.shape == (16, 3, CANVAS, CANVAS) and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert captions == [scene.caption for scene in scenes]
    for image, scene in zip(images, scenes):
        rendered = np.asarray(render(scene), dtype=np.float32) / 255.0
        assert np.array_equal(image.permute(1, 2, 0).numpy(), rendered)


def test_render_is_anti_aliased_and_mask_is_the_half_covered_pixels() -> None:
    scene = Scene("circle", "red", "blue", "large", (32, 32), 20)
    pixels = np.asarray(render(scene))
    assert pixels.shape == (CANVAS, CANVAS, 3)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2  # edge pixels blend the two colours
    mask = object_mask(scene)
    assert mask.dtype == bool and abs(int(mask.sum()) - np.pi * 20**2) < 20
    assert np.all(pixels[_interior(mask)] == dataset.PALETTE["red"])


def _interior(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return inner


def test_the_canonical_caption_names_every_attribute_once() -> None:
    rng = np.random.default_rng(3)
    for _ in range(500):
        scene = random_scene(rng)
        words = re.findall(r"[a-z]+", scene.caption)
        assert f"{scene.size} {scene.colour} {scene.shape}" in scene.caption, scene.caption
        assert f"{scene.background} background" in scene.caption, scene.caption
        assert words.count(scene.colour) == 1 and words.count(scene.background) == 1
    assert Scene("star", "red", "orange", "large", (32, 32), 20).caption == "a large red star on an orange background"


def test_scenes_are_valid_and_wholly_inside_the_frame() -> None:
    rng = np.random.default_rng(4)
    for _ in range(1000):
        scene = random_scene(rng)
        assert scene.background != scene.colour
        low, high = EXTENT_RANGES[scene.size]
        assert low <= scene.extent <= high
        x, y = scene.centre
        assert MARGIN <= x - scene.extent and x + scene.extent <= CANVAS - MARGIN
        assert MARGIN <= y - scene.extent and y + scene.extent <= CANVAS - MARGIN
    # Nothing is clipped: the same shape drawn into a larger frame covers exactly as much.
    for shape in SHAPES:
        framed = coverage(shape, (25, 38), 24, (CANVAS, CANVAS))
        padded = coverage(shape, (25 + 16, 38 + 16), 24, (CANVAS + 32, CANVAS + 32))
        assert framed.sum() == padded.sum()
        assert not framed[[0, -1]].any() and not framed[:, [0, -1]].any()


def test_scene_rejects_an_object_the_colour_of_its_background() -> None:
    with pytest.raises(ValueError, match="both red"):
        Scene("circle", "red", "red", "small", (32, 32), 8)
    with pytest.raises(ValueError, match="unknown shape"):
        Scene("hexagon", "red", "blue", "small", (32, 32), 8)


def test_held_out_split() -> None:
    held_out = set(HELD_OUT_COMBINATIONS)
    # The set is fixed: changing it silently would invalidate every model trained on the other side.
    assert len(held_out) == 81
    assert hashlib.sha256(repr(HELD_OUT_COMBINATIONS).encode()).hexdigest() == (
        "adbb2a0913752ddaf1e8817f1d1457884f44572edb370a92b3086f885ff2d4a3"
    )
    assert {shape for _, shape, _ in held_out} == set(SHAPES)
    assert {colour for colour, _, _ in held_out} == set(COLOURS)
    assert all(is_held_out(*combination) for combination in held_out)
    # Every colour still meets every shape, and every background, in training.
    training = set(dataset.TRAINING_COMBINATIONS)
    assert {(c, s) for c, s, _ in training} == {(c, s) for c in COLOURS for s in SHAPES}
    assert {(c, b) for c, _, b in training} == {(c, b) for c in COLOURS for b in COLOURS if b != c}

    rng = np.random.default_rng(5)
    assert not any(is_held_out(*sample_training_scene(rng).combination) for _ in range(3000))
    assert all(is_held_out(*sample_held_out_scene(rng).combination) for _ in range(500))
    _, _, scenes = batch(rng, 500)
    assert not any(is_held_out(*scene.combination) for scene in scenes)
    _, _, scenes = batch(rng, 200, held_out=True)
    assert all(is_held_out(*scene.combination) for scene in scenes)
    assert len({scene.combination for scene in scenes}) > 40


def test_analyzer_reads_clean_images(accuracy_scenes: list[Scene], capsys: pytest.CaptureFixture[str]) -> None:
    correct = dict.fromkeys(ATTRIBUTES, 0)
    ious = []
    for scene in accuracy_scenes:
        analysis = analyze(render(scene))
        for attribute in ATTRIBUTES:
            correct[attribute] += getattr(analysis, attribute) == getattr(scene, attribute)
        ious.append(_mask_iou(analysis.mask, object_mask(scene)))
    accuracy = {attribute: count / len(accuracy_scenes) for attribute, count in correct.items()}
    _report(capsys, f"analyzer, clean: {accuracy}, mean mask IoU {np.mean(ious):.4f}")
    assert all(value >= 0.99 for value in accuracy.values()), accuracy
    assert np.mean(ious) >= 0.98


def test_analyzer_reads_blurred_noisy_images(accuracy_scenes: list[Scene], capsys: pytest.CaptureFixture[str]) -> None:
    noise = np.random.default_rng(6)
    correct = dict.fromkeys(ATTRIBUTES, 0)
    ious = []
    for scene in accuracy_scenes:
        analysis = analyze(_degrade(render(scene), noise))
        for attribute in ATTRIBUTES:
            correct[attribute] += getattr(analysis, attribute) == getattr(scene, attribute)
        ious.append(_mask_iou(analysis.mask, object_mask(scene)))
    accuracy = {attribute: count / len(accuracy_scenes) for attribute, count in correct.items()}
    _report(capsys, f"analyzer, blurred + noisy: {accuracy}, mean mask IoU {np.mean(ious):.4f}")
    assert accuracy["background"] >= 0.99 and accuracy["colour"] >= 0.99, accuracy
    assert accuracy["shape"] >= 0.98 and accuracy["size"] >= 0.99, accuracy
    assert np.mean(ious) >= 0.95


def test_analyzer_fits_geometry_and_accepts_every_image_form() -> None:
    scene = Scene("heart", "purple", "yellow", "large", (30, 34), 18)
    image = render(scene)
    array = np.asarray(image)
    forms = [
        image,
        array,
        array.astype(np.float32) / 255.0,
        torch.tensor(array).permute(2, 0, 1) / 255.0,
        array.transpose(2, 0, 1),
    ]
    for form in forms:
        analysis = analyze(form)
        assert (analysis.shape, analysis.colour, analysis.background, analysis.size) == (
            "heart",
            "purple",
            "yellow",
            "large",
        )
        assert analysis.centre == pytest.approx((30, 34), abs=0.3)
        assert analysis.extent == pytest.approx(18, abs=0.3)
        assert analysis.shape_confidence > 0.95 and analysis.colour_confidence > 0.9
        assert analysis.shape_scores[0] == ("heart", analysis.shape_confidence)
    # Other resolutions are read in canvas units.
    large = analyze(render(scene, size=128))
    assert large.shape == "heart" and large.extent == pytest.approx(18, abs=0.3)


def test_analyzer_reports_no_object_without_raising() -> None:
    for image in (
        np.full((64, 64, 3), 0.5, np.float32),
        torch.zeros(3, 64, 64),
        np.clip(0.5 + np.random.default_rng(9).normal(0, 0.03, (64, 64, 3)), 0, 1),
    ):
        analysis = analyze(image)
        assert not analysis.has_object
        assert analysis.shape is None and analysis.colour is None and analysis.size is None
        assert analysis.shape_confidence == 0.0 and not analysis.mask.any()
    assert analyze(np.full((64, 64, 3), 0.5, np.float32)).background == "grey"
    with pytest.raises(ValueError, match="RGB image"):
        analyze(np.zeros((64, 64)))


def test_batch_throughput(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(10)
    batch(rng, 256)  # fills the stamp cache, as the first steps of training would
    count = 4096
    start = time.perf_counter()
    for _ in range(count // 256):
        batch(rng, 256)
    rate = count / (time.perf_counter() - start)
    _report(capsys, f"shapes.batch: {rate:,.0f} images/s at {CANVAS}² (batches of 256)")

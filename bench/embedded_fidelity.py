"""Embedded-model fidelity: does the image show what the caption says? Scored by the shapes analyzer.

    python bench/embedded_fidelity.py [--model embedded:shapes] [--count 256] [--steps 28] [--guidance 7.0]
                                      [--batch 32] [--grid out/embedded-samples.png]

For `--count` captions of seen colour × shape × background combinations and as many held-out ones, the
model draws each image (28 Euler steps on its own schedule, CFG with an empty negative prompt, one seed
per image) through the same adapter, encoder, solver and VAE code the Sampler node runs; the analyzer
reads back background colour, object colour, shape and size. Prints accuracies side by side for seen and
held-out captions, seconds per image (batched, and one image through the whole workflow engine), and
writes a captioned sample grid.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nodes.embedded import dataset  # noqa: E402
from nodes.embedded.analyzer import analyze  # noqa: E402
from nodes.image import grid_image, to_pil  # noqa: E402
from nodes.models.loader import MANAGER, LoadOptions  # noqa: E402
from nodes.sampling.sampler import NoiseSource  # noqa: E402
from nodes.sampling.solvers import EULER  # noqa: E402
from storage.config import data_home  # noqa: E402

ATTRIBUTES = ("background", "colour", "shape", "size")


def scenes(count: int, held_out: bool, seed: int) -> list[dataset.Scene]:
    rng = np.random.default_rng(seed)
    draw = dataset.sample_held_out_scene if held_out else dataset.sample_training_scene
    return [draw(rng) for _ in range(count)]


@torch.no_grad()
def generate(loaded, prompts: list[str], seeds: list[int], steps: int, guidance: float, size: int) -> torch.Tensor:
    """Images [B, 3, H, W] in [0, 1], exactly as the txt2img workflow makes them (one seed per image)."""
    model, encoder, vae = loaded.model, loaded.text_encoder, loaded.vae
    positive = encoder.encode(prompts)
    negative = encoder.encode([""]).repeat_to(len(prompts))
    shape = model.latent_shape(1, size, size)
    noise = torch.cat([NoiseSource(seed).draw(shape, model.dtype, model.device) for seed in seeds])
    sigmas = model.default_sigmas(steps, size, size)
    latents = EULER.sample(lambda x, s: model.velocity(x, s, positive, negative, guidance), noise, sigmas)
    return vae.decode(latents)


def score(images: torch.Tensor, expected: list[dataset.Scene]) -> dict[str, list[bool]]:
    hits: dict[str, list[bool]] = {name: [] for name in ATTRIBUTES}
    for image, scene in zip(images, expected):
        found = analyze(image)
        hits["background"].append(found.background == scene.background)
        hits["colour"].append(found.colour == scene.colour)
        hits["shape"].append(found.shape == scene.shape)
        hits["size"].append(found.size == scene.size)
    return hits


def workflow_seconds(source: str, prompt: str, steps: int, guidance: float, size: int) -> float:
    """One image through the whole engine (the txt2img-embedded template), model loaded, text not cached."""
    from pipelines.executor import Executor
    from pipelines.plan import build_plan
    from pipelines.workflow import load_workflow

    template = load_workflow(Path(__file__).resolve().parents[1] / "pipelines" / "templates" / "txt2img-embedded.json")
    executor = Executor(device="cpu")
    overrides = {"Model": source, "Steps": steps, "Guidance": guidance, "width.value": size, "height.value": size}
    executor.execute(build_plan(template, {**overrides, "Prompt": "warm-up"}), run_id="warm-up")
    started = time.perf_counter()
    executor.execute(build_plan(template, {**overrides, "Prompt": prompt, "Seed": 1}), run_id="timed")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:shapes")
    parser.add_argument("--count", type=int, default=256, help="captions per group (seen, held-out)")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--guidance", type=float, default=7.0, help="the starter workflow's default")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--grid", type=Path, default=None, help="write a captioned sample grid here")
    args = parser.parse_args()

    size = dataset.CANVAS
    loaded = MANAGER.get(args.model, LoadOptions(device="cpu"), data_home() / "cache")
    print(
        f"model {args.model} ({loaded.model.sha256[:12]}), {args.steps} Euler steps, guidance {args.guidance}, "
        f"{size}×{size}, {args.count} seen + {args.count} held-out captions, batches of {args.batch}"
    )
    results: dict[str, dict[str, list[bool]]] = {}
    samples: list[tuple[torch.Tensor, str]] = []
    generation_seconds = 0.0
    for group, held_out, seed in (("seen", False, 1), ("held-out", True, 2)):
        expected = scenes(args.count, held_out, seed)
        hits: dict[str, list[bool]] = {name: [] for name in ATTRIBUTES}
        for start in range(0, len(expected), args.batch):
            chunk = expected[start : start + args.batch]
            started = time.perf_counter()
            images = generate(
                loaded,
                [s.caption for s in chunk],
                list(range(start, start + len(chunk))),
                args.steps,
                args.guidance,
                size,
            )
            generation_seconds += time.perf_counter() - started
            for name, values in score(images, chunk).items():
                hits[name] += values
            if start == 0:
                samples += [(image, scene.caption) for image, scene in zip(images[:8], chunk[:8])]
        results[group] = hits

    goals = {"background": "≥ 98%", "colour": "≥ 95%", "shape": "≥ 90% (seen)", "size": "(report)"}
    print(f"\n  {'attribute':<12}{'seen':>8}{'held-out':>10}   goal")
    for name in ATTRIBUTES:
        seen, held = (100 * float(np.mean(results[g][name])) for g in ("seen", "held-out"))
        print(f"  {name:<12}{seen:>7.1f}%{held:>9.1f}%   {goals[name]}")
    per_image = generation_seconds / (2 * args.count)
    single = workflow_seconds(args.model, "a large red circle on a blue background", args.steps, args.guidance, size)
    print(
        f"\n  seconds per image: {per_image:.3f} batched ({args.batch}), {single:.3f} one image through the "
        f"workflow engine (goal ≤ 0.3)"
    )
    if args.grid:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        grid_image([to_pil(image[None])[0] for image, _ in samples], [c for _, c in samples], columns=8).save(args.grid)
        print(f"  sample grid: {args.grid}")


if __name__ == "__main__":
    main()

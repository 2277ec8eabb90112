"""Embedded-model fidelity: does the image show what the caption says? Scored by the shapes analyzer.

    python bench/embedded_fidelity.py [--model embedded:shapes] [--count 256] [--steps 28] [--guidance 7.0]
                                      [--batch 32] [--grid docs/img/embedded-held-out-phrasings.png]

Three rows of `--count` captions each, as people write them (`nodes/embedded/captions.py`: any phrasing,
synonyms, unsaid attributes):
- training templates: seen colour × shape × background combinations, in the phrasings training used;
- held-out phrasings: seen combinations, in phrasings training never used;
- held-out combinations: combinations training never showed, in the training phrasings.
The model draws each image (28 Euler steps on its own schedule, CFG with an empty negative prompt, one seed
per image) through the same adapter, encoder, solver and VAE code the Sampler node runs; the analyzer reads
back background colour, object colour, shape and size. An attribute is scored only where its caption names
it (an unsaid size or background is the model's free choice); "object present" counts every image. Prints
the rows with their goals, seconds per image (batched, and one image through the whole workflow engine),
and writes a captioned grid of held-out phrasings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nodes.embedded import captions, dataset  # noqa: E402
from nodes.embedded.analyzer import analyze  # noqa: E402
from nodes.image import grid_image, to_pil  # noqa: E402
from nodes.models.loader import MANAGER, LoadOptions  # noqa: E402
from nodes.sampling.sampler import NoiseSource  # noqa: E402
from nodes.sampling.solvers import EULER  # noqa: E402
from storage.config import data_home  # noqa: E402

ATTRIBUTES = ("background", "colour", "shape", "size")
GRID_IMAGES = 16  # held-out phrasings on the contact sheet
# row: (held-out combinations, held-out phrasings, seed)
ROWS: dict[str, tuple[bool, bool, int]] = {
    "training templates": (False, False, 1),
    "held-out phrasings": (False, True, 2),
    "held-out combinations": (True, False, 3),
}
GOALS: dict[str, dict[str, float]] = {  # percent, from issue 17
    "training templates": {"background": 99, "colour": 99, "shape": 95, "present": 99.5},
    "held-out phrasings": {"background": 98, "colour": 97, "shape": 92, "present": 99},
    "held-out combinations": {"background": 98, "colour": 97, "shape": 90, "present": 99},
}


def prompts(count: int, held_out_combinations: bool, held_out_phrasings: bool, seed: int):
    """`count` scenes and their captions, all from one seed."""
    rng = np.random.default_rng(seed)
    draw = dataset.sample_held_out_scene if held_out_combinations else dataset.sample_training_scene
    scenes = [draw(rng) for _ in range(count)]
    return scenes, [captions.describe(scene, rng, held_out=held_out_phrasings) for scene in scenes]


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


def score(images: torch.Tensor, expected: list[dataset.Scene], said: list[captions.Caption]) -> dict[str, list[bool]]:
    """Per attribute, a hit or miss for every image whose caption names it; "present" for every image."""
    hits: dict[str, list[bool]] = {name: [] for name in (*ATTRIBUTES, "present")}
    for image, scene, caption in zip(images, expected, said):
        found = analyze(image)
        hits["present"].append(found.has_object)
        for name in ATTRIBUTES:
            if name in caption.named:
                hits[name].append(getattr(found, name) == getattr(scene, name))
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
    parser.add_argument("--count", type=int, default=256, help="captions per row")
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--guidance", type=float, default=7.0, help="the starter workflow's default")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--grid", type=Path, default=None, help="write a captioned sample grid here")
    args = parser.parse_args()

    size = dataset.CANVAS
    loaded = MANAGER.get(args.model, LoadOptions(device="cpu"), data_home() / "cache")
    print(
        f"model {args.model} ({loaded.model.sha256[:12]}), {args.steps} Euler steps, guidance {args.guidance}, "
        f"{size}×{size}, {args.count} captions per row, batches of {args.batch}"
    )
    results: dict[str, dict[str, list[bool]]] = {}
    samples: list[tuple[torch.Tensor, str]] = []
    generation_seconds = 0.0
    for row, (held_out_combinations, held_out_phrasings, seed) in ROWS.items():
        expected, said = prompts(args.count, held_out_combinations, held_out_phrasings, seed)
        hits: dict[str, list[bool]] = {name: [] for name in (*ATTRIBUTES, "present")}
        for start in range(0, len(expected), args.batch):
            chunk = slice(start, start + args.batch)
            started = time.perf_counter()
            images = generate(
                loaded,
                [c.text for c in said[chunk]],
                list(range(start, start + len(expected[chunk]))),
                args.steps,
                args.guidance,
                size,
            )
            generation_seconds += time.perf_counter() - started
            for name, values in score(images, expected[chunk], said[chunk]).items():
                hits[name] += values
            if held_out_phrasings:
                samples += [(image, caption.text.strip()) for image, caption in zip(images, said[chunk])]
        results[row] = hits

    columns = (*ATTRIBUTES, "present")
    print(f"\n  {'row':<24}" + "".join(f"{name:>16}" for name in columns))
    for row, hits in results.items():
        cells = []
        for name in columns:
            if not hits[name]:
                cells.append(f"{'—':>16}")
                continue
            rate = 100 * float(np.mean(hits[name]))
            goal = GOALS[row].get(name)
            mark = "" if goal is None else (" ok" if rate >= goal else " <")
            cells.append(f"{rate:>9.1f}% ({len(hits[name])}){mark:<3}"[-16:].rjust(16))
        print(f"  {row:<24}" + "".join(cells))
    print("  (percent, captions that name the attribute in brackets; ok / < against the issue-17 goal)")
    per_image = generation_seconds / (len(ROWS) * args.count)
    single = workflow_seconds(args.model, "a red circle on a blue background", args.steps, args.guidance, size)
    print(
        f"\n  seconds per image: {per_image:.3f} batched ({args.batch}), {single:.3f} one image through the "
        f"workflow engine (goal ≤ 0.3)"
    )
    if args.grid:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        shown = samples[:GRID_IMAGES]
        grid_image([to_pil(image[None])[0] for image, _ in shown], [c for _, c in shown], columns=8).save(args.grid)
        print(f"  held-out phrasings grid: {args.grid}")


if __name__ == "__main__":
    main()

"""Pipeline parity benchmark: the txt2img workflow against diffusers' own pipeline on the same loaded model.

    python bench/pipeline_parity.py [--model PATH_OR_embedded:shapes] [--family sd3|flux] [--steps 28]
                                    [--size 64] [--repeat 5]

Without --model a tiny random SD3 (or FLUX with --family flux) is built from tests/tiny_models.py and saved
to a temporary folder with flowcanvas.json {"max_sequence_length": 16}. The model is loaded once through the
model manager; every measurement runs on those same components, interleaved (a, b, c, a, b, c, …):

(a) `pipe(prompt, negative_prompt="", …, output_type="pil")`, the diffusers pipeline;
(b) the txt2img template through one Executor whose cache is warm for the model (the first execution is a
    warm-up), with a new prompt every round, so text encoding is redone: the same work as (a).
    Timed from build_plan to the PNG. Goal: (b)/(a) ≤ 1.02;
(c) the workflow re-run with only the seed changed (text encoding and model from the cache). Goal: (c)/(a) ≤ 0.9.

The image of (b) must equal the image of (a) bit for bit (same prompt and seed). A stage breakdown over
--repeat more rounds follows the table (text encoding, transformer, VAE decode, image output, latent previews,
the two device look-ups that walk every submodule, the rest; and the workflow's time by node), to show where
any difference goes. --threads 1 makes the timings less sensitive to other load on a small machine.
Files (the tiny model, model-hash cache) go to a temporary folder unless FLOWCANVAS_HOME is set.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

TEMPLATES = ROOT / "pipelines" / "templates"
TINY_SEQUENCE_LENGTH = 16
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")


def prompts() -> Iterator[str]:
    """Distinct captions (words the tiny tokenizers know), so no two rounds share a text encoding."""
    for shape in SHAPES:
        for colour in COLOURS:
            for background in COLOURS:
                if background != colour:
                    yield f"a {colour} {shape} on a {background} background"


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def png_array(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


class StageClock:
    """Seconds spent in each stage, by wrapping the shared components and the nodes' helpers for a while.

    Besides the big stages it times two properties that walk every submodule of the model on each access
    (diffusers looks for group-offload hooks there): the adapter's `model.device` (read in every predict)
    and `pipe._execution_device` (read once by pipe(), once per prompt by the TextEncoder)."""

    STAGES = (
        "text encoding",
        "transformer",
        "VAE decode",
        "image out (PIL / PNG)",
        "latent previews",
        "model.device (adapter)",
        "pipe._execution_device",
    )

    def __init__(self, model: Any) -> None:
        import nodes.image
        import nodes.sampling.sampler

        pipe = model.pipe
        self.targets = [
            (pipe, "encode_prompt", "text encoding"),
            (pipe.transformer, "forward", "transformer"),
            (pipe.vae, "decode", "VAE decode"),
            (pipe.image_processor, "postprocess", "image out (PIL / PNG)"),  # pipe(): to PIL
            (nodes.image, "_emit_images", "image out (PIL / PNG)"),  # SaveImage: to PIL, PNG
            (nodes.sampling.sampler, "latent_preview", "latent previews"),
        ]  # Sampler: preview PNGs
        self.properties = [
            (type(model), "device", "model.device (adapter)"),
            (type(pipe), "_execution_device", "pipe._execution_device"),
        ]
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _timed(self, original: Callable[..., Any], stage: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - started
                self.calls[stage] += 1

        return wrapper

    @contextmanager
    def installed(self) -> Iterator[StageClock]:
        saved = []
        for owner, name, stage in self.targets:
            saved.append((owner, name, name in vars(owner), vars(owner).get(name)))
            object.__setattr__(owner, name, self._timed(getattr(owner, name), stage))
        classes = []
        for cls, name, stage in self.properties:
            prop = inspect.getattr_static(cls, name)
            classes.append((cls, name, name in vars(cls), vars(cls).get(name)))
            setattr(cls, name, property(self._timed(prop.fget, stage)))
        try:
            yield self
        finally:
            for owner, name, had_own, value in reversed(saved):
                if had_own:
                    object.__setattr__(owner, name, value)
                else:
                    object.__delattr__(owner, name)
            for cls, name, had_own, value in reversed(classes):
                if had_own:
                    setattr(cls, name, value)
                else:
                    delattr(cls, name)

    def take(self) -> tuple[dict[str, float], dict[str, int]]:
        taken = dict(self.seconds), dict(self.calls)
        self.seconds.clear()
        self.calls.clear()
        return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default="",
        help="a diffusers folder, a .safetensors file, a hub id or embedded:NAME (default: a tiny random model)",
    )
    parser.add_argument(
        "--family",
        choices=("sd3", "flux"),
        default="sd3",
        help="family of the tiny model built when --model is not given",
    )
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--size", type=int, default=64, help="image width and height in pixels")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (the median is reported)")
    parser.add_argument("--guidance", type=float, default=None, help="default: the template's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    scratch = Path(tempfile.mkdtemp(prefix="flowcanvas-parity-"))
    os.environ.setdefault("FLOWCANVAS_HOME", str(scratch / "data"))
    try:
        run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, scratch: Path) -> None:
    from nodes.models.loader import MANAGER, LoadOptions, ModelLoadError
    from pipelines.executor import Executor
    from pipelines.plan import build_plan
    from pipelines.workflow import load_workflow
    from storage.config import data_home
    from tests.tiny_models import saved_tiny_model

    if args.model:
        source = args.model
        print(f"model: {source}")
    else:
        source = str(saved_tiny_model(args.family, scratch / "model", TINY_SEQUENCE_LENGTH))
        print(
            f"model: tiny random {args.family.upper()} saved to {source} "
            f"(tiny random model; use --model for the embedded or a real one)"
        )

    started = time.perf_counter()
    try:
        loaded = MANAGER.get(source, LoadOptions(device="cpu"), data_home() / "cache")
    except ModelLoadError as error:
        raise SystemExit(f"cannot load the model: {error}") from None
    load_seconds = time.perf_counter() - started
    model = loaded.model
    pipe = model.pipe
    pipe.set_progress_bar_config(disable=True)
    family = model.family
    length = loaded.text_encoder.max_sequence_length
    workflow = load_workflow(TEMPLATES / f"txt2img-{family}.json")
    guidance = args.guidance if args.guidance is not None else float(workflow.nodes["sampler"].params["guidance"])
    print(
        f"family {family}, dtype {str(model.dtype).removeprefix('torch.')}, {args.size}×{args.size} px, "
        f"{args.steps} steps, guidance {guidance}, max_sequence_length {length}, "
        f"{torch.get_num_threads()} torch threads; loaded once in {load_seconds:.2f} s"
    )
    if family == "flux":
        print(
            "note: FluxPipeline skips the negative prompt unless true_cfg_scale > 1; the TextEncode node "
            "always encodes it, so (b) encodes two prompts where (a) encodes one"
        )

    def pipe_image(prompt: str, seed: int) -> Image.Image:
        return pipe(
            prompt=prompt,
            negative_prompt="",
            num_inference_steps=args.steps,
            guidance_scale=guidance,
            height=args.size,
            width=args.size,
            generator=torch.Generator("cpu").manual_seed(seed),
            max_sequence_length=length,
            output_type="pil",
        ).images[0]

    executor = Executor(device="cpu")

    def overrides(prompt: str, seed: int) -> dict[str, Any]:
        return {
            "Model": source,
            "Prompt": prompt,
            "Negative prompt": "",
            "Seed": seed,
            "Steps": args.steps,
            "Guidance": guidance,
            "Width": args.size,
            "Height": args.size,
        }

    def workflow_run(prompt: str, seed: int) -> Any:
        return executor.execute(build_plan(workflow, overrides(prompt, seed)), run_id="bench")

    def image_of(result: Any) -> bytes:
        return next(item for item in result.output_items if item.kind == "image").data

    captions = prompts()
    # Warm-up (excluded): the executor's first execution fills its cache with the model; one pipe() call.
    warm_prompt = next(captions)
    pipe_image(warm_prompt, args.seed)
    workflow_run(warm_prompt, args.seed)
    workflow_run(warm_prompt, args.seed + 1)

    times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    identical = 0
    max_difference = 0
    reseeded_cached: set[str] | None = None
    for index in range(args.repeat):
        prompt = next(captions)
        seconds, reference = timed(lambda prompt=prompt: pipe_image(prompt, args.seed))
        times["a"].append(seconds)
        seconds, result = timed(lambda prompt=prompt: workflow_run(prompt, args.seed))
        times["b"].append(seconds)
        assert "prompt" in result.executed, "the new prompt must be encoded again"
        seconds, reseeded = timed(lambda prompt=prompt, index=index: workflow_run(prompt, args.seed + 1 + index))
        times["c"].append(seconds)
        cached = set(reseeded.cached)
        reseeded_cached = cached if reseeded_cached is None else reseeded_cached & cached
        ours, theirs = png_array(image_of(result)), np.asarray(reference.convert("RGB"))
        if ours.shape == theirs.shape and np.array_equal(ours, theirs):
            identical += 1
        elif ours.shape == theirs.shape:
            max_difference = max(max_difference, int(np.abs(ours.astype(int) - theirs.astype(int)).max()))
        else:
            max_difference = 255

    a, b, c = (statistics.median(times[key]) for key in "abc")
    rows = [
        ("(a) pipe(), output_type=pil", "a", None),
        ("(b) workflow, new prompt", "b", 1.02),
        ("(c) workflow, only the seed changed", "c", 0.9),
    ]
    print()
    print(
        f"{args.repeat} interleaved rounds (a, b, c, a, b, c, …), seconds; ratios are of medians (the goal) "
        f"and, as a check against noise, of minimums:"
    )
    print(f"  {'':38s} {'median':>9s} {'min':>9s} {'max':>9s} {'ratio':>7s} {'min ratio':>10s}  goal")
    noisy = [key for key in "abc" if statistics.median(times[key]) > 1.15 * min(times[key])]
    caveat = " (unreliable: see WARNING)" if noisy else ""
    for label, key, goal in rows:
        values = times[key]
        ratio = statistics.median(values) / a
        verdict = "" if goal is None else f"≤ {goal:.2f} {'met' if ratio <= goal else 'NOT met'}{caveat}"
        print(
            f"  {label:38s} {statistics.median(values):9.4f} {min(values):9.4f} {max(values):9.4f} "
            f"{ratio:7.3f} {min(values) / min(times['a']):10.3f}  {verdict}"
        )
    print()
    print(
        f"ratio (b)/(a) workflow vs pipe(), same work : {b / a:.3f}  (goal ≤ 1.02: "
        f"{'met' if b / a <= 1.02 else 'NOT met'}{caveat})"
    )
    print(
        f"ratio (c)/(a) seed-only re-run vs pipe()    : {c / a:.3f}  (goal ≤ 0.90: "
        f"{'met' if c / a <= 0.9 else 'NOT met'}{caveat})"
    )
    print(f"seed-only re-runs took from the cache       : {', '.join(sorted(reseeded_cached or ())) or 'nothing'}")
    verdict = "bit-identical" if identical == args.repeat else f"DIFFERENT (max |Δ| {max_difference}/255)"
    print(f"sanity: workflow image vs pipe() image, same prompt and seed: {identical}/{args.repeat} {verdict}")
    if noisy:
        print(
            f"WARNING: rows {', '.join(noisy)} vary by more than 15% between rounds (load average now "
            f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs): other processes disturbed the timings; "
            f"re-run on a quiet machine, with more --repeat, or with --threads 1"
        )

    breakdown(model, workflow_run, pipe_image, captions, args.seed, args.repeat)


def breakdown(
    model: Any,
    workflow_run: Callable[[str, int], Any],
    pipe_image: Callable[[str, int], Any],
    captions: Iterator[str],
    seed: int,
    rounds: int,
) -> None:
    """More interleaved rounds of (a) and (b) with every stage timed (medians), and where the workflow's
    remaining time goes (its node timings, and the engine outside the nodes)."""
    clock = StageClock(model)
    samples: dict[str, dict[str, list[float]]] = {"a": defaultdict(list), "b": defaultdict(list)}
    calls: dict[str, dict[str, int]] = {}
    nodes: dict[str, list[float]] = defaultdict(list)
    with clock.installed():
        for _ in range(rounds):
            prompt = next(captions)
            for key, call in (
                ("a", lambda prompt=prompt: pipe_image(prompt, seed)),
                ("b", lambda prompt=prompt: workflow_run(prompt, seed)),
            ):
                total, result = timed(call)
                seconds, calls[key] = clock.take()
                for stage in StageClock.STAGES:
                    samples[key][stage].append(seconds.get(stage, 0.0))
                samples[key]["everything else"].append(total - sum(seconds.values()))
                samples[key]["total"].append(total)
                if key == "b":
                    for node_id, node_seconds in result.timings.items():
                        nodes[node_id].append(node_seconds)
                    nodes["(engine, outside the nodes)"].append(total - sum(result.timings.values()))
    median = statistics.median
    print()
    print(
        f"where the time goes (median of {rounds} more interleaved rounds with every stage timed; ms, calls per run):"
    )
    print(f"  {'stage':24s} {'(a) pipe()':>15s} {'(b) workflow':>15s} {'b − a':>9s}")
    for stage in (*StageClock.STAGES, "everything else", "total"):
        left, right = median(samples["a"][stage]) * 1e3, median(samples["b"][stage]) * 1e3
        count_a = f"×{calls['a'].get(stage, 0)}" if stage in StageClock.STAGES else ""
        count_b = f"×{calls['b'].get(stage, 0)}" if stage in StageClock.STAGES else ""
        print(f"  {stage:24s} {left:9.2f} {count_a:<5s} {right:9.2f} {count_b:<5s} {right - left:+9.2f}")
    per_node = ", ".join(
        f"{node_id} {median(values) * 1e3:.2f}"
        for node_id, values in sorted(nodes.items(), key=lambda item: -median(item[1]))
    )
    print(f"  workflow time by node (ms; nodes not listed came from the cache): {per_node}")


if __name__ == "__main__":
    main()

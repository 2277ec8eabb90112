"""Solver × schedule accuracy benchmark: final-latent error against a fine reference at equal model evaluations.

    python bench/solvers.py [--model PATH_OR_embedded:shapes] [--family sd3|flux] [--size 64] [--seeds 4]
                            [--out /tmp/solvers.png] [--nfe 4,8,16,32] [--reference-steps 200]

Without --model a tiny random SD3 (or FLUX with --family flux) is built from tests/tiny_models.py and saved
to a temporary folder with flowcanvas.json {"max_sequence_length": 16}.

For every solver in `nodes.sampling.solvers.SOLVERS` (euler, heun, midpoint and the one-call multistep solver) and
every schedule (the model's default, linear, shifted 3.0, BOSS), at each budget of model evaluations (NFE),
the steps are the most whose cost fits the budget (`Solver.evaluations`: Euler N, Heun 2N−1, midpoint 2N,
multistep N), so Heun runs one evaluation under an even budget (its actual NFE is shown and plotted).
The error is the RMS over latent elements of (final latent − reference), averaged over the seeds; the
reference is Euler with --reference-steps steps on the model's default schedule, from the same noise and
prompt. Velocities are `model.velocity` with the model's guidance (the txt2img template's value). BOSS
uses one cost matrix (k_max, num_samples, drawn from seeds disjoint from the evaluated ones) for every
budget. Prints a table (rows solver × schedule, columns NFE) and draws a log-log plot with PIL to --out.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import plotting  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

TEMPLATES = ROOT / "pipelines" / "templates"
TINY_SEQUENCE_LENGTH = 16
BOSS_SEED = 1_000_000  # BOSS's own noise samples: never one of the evaluated seeds
SOLVER_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75)]
SCHEDULE_DASHES = [None, (10, 5), (3, 4), (12, 4, 3, 4)]  # solid, dashed, dotted, dash-dot
MARKERS = ["circle", "square", "triangle", "diamond"]


@dataclass
class Series:
    solver: str
    schedule: str
    nfe: list[int]  # actual evaluations, one per budget
    steps: list[int]
    error: list[float]

    @property
    def label(self) -> str:
        return f"{self.solver} / {self.schedule}"


def steps_for(solver: Any, budget: int) -> int:
    """The most steps whose evaluations fit the budget (at least 1)."""
    steps = 1
    while solver.evaluations(steps + 1) <= budget:
        steps += 1
    return steps


def rms_per_seed(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    difference = (x.to(torch.float64) - reference.to(torch.float64)).flatten(1)
    return difference.square().mean(dim=1).sqrt()


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
    parser.add_argument("--size", type=int, default=64, help="image width and height in pixels")
    parser.add_argument("--seeds", type=int, default=4, help="noise seeds 0..N−1 the error is averaged over")
    parser.add_argument("--out", default="/tmp/solvers.png", help="where to write the plot (PNG)")
    parser.add_argument("--nfe", default="4,8,16,32", help="budgets of model evaluations, comma-separated")
    parser.add_argument("--reference-steps", type=int, default=200)
    parser.add_argument("--prompt", default="a red circle on a blue background")
    parser.add_argument("--guidance", type=float, default=None, help="default: the txt2img template's")
    parser.add_argument("--shift", type=float, default=3.0, help="shift of the 'shifted' schedule")
    parser.add_argument("--boss-k-max", type=int, default=100)
    parser.add_argument("--boss-samples", type=int, default=8)
    parser.add_argument("--boss-grid", choices=("uniform", "shifted"), default="uniform")
    parser.add_argument("--solvers", default="", help="comma-separated solver names (default: all)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="flowcanvas-solvers-"))
    os.environ.setdefault("FLOWCANVAS_HOME", str(scratch / "data"))
    try:
        run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, scratch: Path) -> None:
    from nodes.models.loader import MANAGER, LoadOptions, ModelLoadError
    from nodes.sampling.boss import boss_cost_matrix, boss_grid, boss_noise_batches, boss_path
    from nodes.sampling.sampler import NoiseSource
    from nodes.sampling.schedules import linear_sigmas, shifted_sigmas
    from nodes.sampling.solvers import EULER, SOLVERS
    from pipelines.workflow import load_workflow
    from storage.config import data_home
    from tests.tiny_models import saved_tiny_model

    budgets = sorted({int(part) for part in args.nfe.split(",") if part.strip()})
    if not budgets or budgets[0] < 1:
        raise SystemExit("--nfe needs positive budgets")
    names = [name.strip() for name in args.solvers.split(",") if name.strip()] or list(SOLVERS)
    unknown = [name for name in names if name not in SOLVERS]
    if unknown:
        raise SystemExit(f"unknown solvers {unknown}; available: {', '.join(SOLVERS)}")
    started_all = time.perf_counter()

    if args.model:
        source = args.model
        print(f"model: {source}")
    else:
        source = str(saved_tiny_model(args.family, scratch / "model", TINY_SEQUENCE_LENGTH))
        print(
            f"model: tiny random {args.family.upper()} saved to {source} "
            f"(tiny random model; use --model for the embedded or a real one)"
        )
    try:
        loaded = MANAGER.get(source, LoadOptions(device="cpu"), data_home() / "cache")
    except ModelLoadError as error:
        raise SystemExit(f"cannot load the model: {error}") from None
    model = loaded.model
    template = load_workflow(TEMPLATES / f"txt2img-{model.family}.json")
    guidance = args.guidance if args.guidance is not None else float(template.nodes["sampler"].params["guidance"])

    with torch.inference_mode():
        positive = loaded.text_encoder.encode([args.prompt])
        negative = loaded.text_encoder.encode([""])
    evaluations = 0

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        return model.velocity(x, sigma.to(model.device), positive, negative, guidance)

    shape = model.latent_shape(1, args.size, args.size)
    noise = torch.cat([NoiseSource(seed).draw(shape, model.dtype, model.device) for seed in range(args.seeds)])
    print(
        f"family {model.family}, {args.size}×{args.size} px (latent {tuple(shape[1:])}), guidance {guidance}, "
        f"prompt {args.prompt!r}, seeds 0..{args.seeds - 1} batched, {torch.get_num_threads()} torch threads"
    )

    def sample(solver: Any, sigmas: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return solver.sample(velocity, noise.clone(), sigmas)

    started = time.perf_counter()
    reference = sample(EULER, model.default_sigmas(args.reference_steps, args.size, args.size))
    reference_seconds = time.perf_counter() - started
    half = sample(EULER, model.default_sigmas(args.reference_steps // 2, args.size, args.size))
    reference_error = rms_per_seed(half, reference).mean().item()
    reference_rms = reference.to(torch.float64).flatten(1).square().mean(dim=1).sqrt().mean().item()
    print(
        f"reference: Euler, {args.reference_steps} steps, model default schedule ({reference_seconds:.1f} s); "
        f"latent RMS {reference_rms:.3f}; Euler {args.reference_steps // 2} steps differs from it by "
        f"{reference_error:.2e} (≈ the reference's own error: smaller errors below are not resolved)"
    )

    started = time.perf_counter()
    if args.boss_grid == "shifted":
        grid = model.default_sigmas(args.boss_k_max, args.size, args.size).to(torch.float32)
    else:
        grid = boss_grid(args.boss_k_max)
    with torch.inference_mode():
        cost = boss_cost_matrix(
            velocity,
            boss_noise_batches(
                shape[1:], args.boss_samples, args.boss_samples, BOSS_SEED, dtype=model.dtype, device=model.device
            ),
            args.boss_k_max,
            grid=grid,
        )
    print(
        f"BOSS: {args.boss_grid} grid, k_max {args.boss_k_max}, {args.boss_samples} samples "
        f"(seed {BOSS_SEED}); cost matrix in {time.perf_counter() - started:.1f} s"
    )

    def boss(steps: int) -> torch.Tensor:
        return grid if steps >= args.boss_k_max else grid[boss_path(cost, steps)]

    schedules: dict[str, Callable[[int], torch.Tensor]] = {
        "default": lambda steps: model.default_sigmas(steps, args.size, args.size).to(torch.float32),
        "linear": linear_sigmas,
        f"shifted {args.shift:g}": lambda steps: shifted_sigmas(steps, args.shift),
        "boss": boss,
    }

    notes = []
    names_of_schedules = list(schedules)
    for i, first in enumerate(names_of_schedules):
        for second in names_of_schedules[i + 1 :]:
            if all(torch.equal(schedules[first](b), schedules[second](b)) for b in budgets):
                notes.append(f"'{first}' and '{second}' are the same schedule for this model (their lines coincide)")
    if any(SOLVERS[name].evaluations(steps_for(SOLVERS[name], b)) != b for name in names for b in budgets):
        notes.append(
            "heun costs 2N-1 evaluations: at an even budget it runs one evaluation under it (plotted at its actual NFE)"
        )
    for note in notes:
        print(f"note: {note}")

    series: list[Series] = []
    started = time.perf_counter()
    for name in names:
        solver = SOLVERS[name]
        for schedule_name, schedule in schedules.items():
            row = Series(name, schedule_name, [], [], [])
            for budget in budgets:
                steps = steps_for(solver, budget)
                sigmas = schedule(steps)
                before = evaluations
                x = sample(solver, sigmas)
                used = evaluations - before
                if used != solver.evaluations(steps):
                    raise AssertionError(
                        f"{name}: {used} evaluations for {steps} steps, expected {solver.evaluations(steps)}"
                    )
                row.nfe.append(used)
                row.steps.append(steps)
                row.error.append(rms_per_seed(x, reference).mean().item())
            series.append(row)
    sweep_seconds = time.perf_counter() - started

    print_table(series, budgets)
    cfg = " ×2 for CFG" if model.family == "sd3" and guidance > 1 else ""
    print(
        f"\n{evaluations} model evaluations (batch of {args.seeds}{cfg}); "
        f"sweep {sweep_seconds:.1f} s, whole run {time.perf_counter() - started_all:.1f} s"
    )
    best = min(series, key=lambda s: s.error[-1] if math.isfinite(s.error[-1]) else math.inf)
    print(f"lowest error at {budgets[-1]} NFE: {best.label} ({best.error[-1]:.2e})")
    title = (
        f"{model.family} {'tiny random' if not args.model else source}, {args.size}px, "
        f"{args.seeds} seeds, guidance {guidance:g}: RMS error vs Euler {args.reference_steps}"
    )
    plot(series, Path(args.out), title, reference_error, budgets, notes)
    print(f"plot: {args.out}")


def print_table(series: list[Series], budgets: list[int]) -> None:
    print()
    print(
        "RMS error of the final latent vs the reference (mean over seeds); "
        "(n) = actual NFE where it is under the budget"
    )
    width = 17
    print(f"  {'solver / schedule':30s}" + "".join(f"{f'NFE {b}':>{width}s}" for b in budgets))
    for row in series:
        cells = []
        for budget, nfe, error in zip(budgets, row.nfe, row.error):
            text = f"{error:.3e}" if math.isfinite(error) else "diverged"
            if nfe != budget:
                text += f" ({nfe})"
            cells.append(f"{text:>{width}s}")
        print(f"  {row.label:30s}" + "".join(cells))


# ---- plot (PIL) --------------------------------------------------------------------------------------------


def _number(value: float) -> str:
    exponent = math.floor(math.log10(value))
    mantissa = value / 10**exponent
    return f"1e{exponent}" if abs(mantissa - 1) < 1e-6 else f"{mantissa:.0f}e{exponent}"


def plot(
    series: list[Series], out: Path, title: str, reference_error: float, budgets: list[int], notes: list[str]
) -> None:
    """Error against NFE on log-log axes, one line per solver × schedule pair, with a legend beside the plot."""
    points = [(n, e) for s in series for n, e in zip(s.nfe, s.error) if math.isfinite(e) and e > 0]
    if not points:
        raise SystemExit("nothing finite to plot")
    x_lo, x_hi = math.log10(min(n for n, _ in points)), math.log10(max(n for n, _ in points))
    y_values = [e for _, e in points] + ([reference_error] if reference_error > 0 else [])
    y_lo, y_hi = math.floor(math.log10(min(y_values))), math.ceil(math.log10(max(y_values)))
    if y_hi == y_lo:
        y_hi += 1
    pad_x = 0.06 * max(x_hi - x_lo, 0.1)
    x_lo, x_hi = x_lo - pad_x, x_hi + pad_x

    width, height = 1200, 740
    left, right, top, bottom = 90, 860, 50, 640  # the plot area; the legend goes right of it
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small, big = plotting.font(14), plotting.font(12), plotting.font(16)

    def px(nfe: float, error: float) -> tuple[float, float]:
        fx = (math.log10(nfe) - x_lo) / (x_hi - x_lo)
        fy = (math.log10(error) - y_lo) / (y_hi - y_lo)
        return left + fx * (right - left), bottom - fy * (bottom - top)

    # grid and ticks: decades (labelled) and 2..9 (light) on y; the NFE values used on x
    for decade in range(y_lo, y_hi + 1):
        for factor in range(1, 10):
            value = factor * 10.0**decade
            if value > 10.0**y_hi * 1.0001:
                break
            _, y = px(10 ** ((x_lo + x_hi) / 2), value)
            draw.line([(left, y), (right, y)], fill=(225, 225, 225) if factor == 1 else (243, 243, 243))
            if factor == 1 or (y_hi - y_lo <= 2 and factor in (2, 5)):
                label = _number(value)
                tw = draw.textlength(label, font=small)
                draw.text((left - 8 - tw, y - 7), label, fill="black", font=small)
    for nfe in sorted({n for n, _ in points} | set(budgets)):
        x, _ = px(nfe, 10.0**y_lo)
        draw.line([(x, top), (x, bottom)], fill=(225, 225, 225) if nfe in budgets else (243, 243, 243))
        if nfe in budgets:  # label the budgets only (Heun's points, one under each, would overlap them)
            label = str(nfe)
            draw.text((x - draw.textlength(label, font=small) / 2, bottom + 6), label, fill="black", font=small)
    draw.rectangle([left, top, right, bottom], outline="black")

    if reference_error > 0:  # the reference's own error: a floor under which differences are not resolved
        _, y = px(1, reference_error)
        plotting.dashed_line(draw, [(left, y), (right, y)], (150, 150, 150), (4, 4), 1)
        draw.text((left + 6, y - 16), "~ the reference's own error (Euler N/2 vs N)", fill=(120, 120, 120), font=small)

    solvers = list(dict.fromkeys(s.solver for s in series))
    schedules = list(dict.fromkeys(s.schedule for s in series))
    for row in series:
        colour = SOLVER_COLOURS[solvers.index(row.solver) % len(SOLVER_COLOURS)]
        style = schedules.index(row.schedule)
        coords = [px(n, e) for n, e in zip(row.nfe, row.error) if math.isfinite(e) and e > 0]
        if len(coords) > 1:
            plotting.dashed_line(draw, coords, colour, SCHEDULE_DASHES[style % len(SCHEDULE_DASHES)], 2)
        for x, y in coords:
            plotting.marker(draw, x, y, MARKERS[style % len(MARKERS)], colour)

    draw.text((left, 14), title, fill="black", font=big)
    x_label = "model evaluations (NFE), log scale"
    draw.text(
        ((left + right) / 2 - draw.textlength(x_label, font=font) / 2, bottom + 28), x_label, fill="black", font=font
    )
    for number, note in enumerate(notes):
        draw.text((left, bottom + 52 + 16 * number), note, fill=(90, 90, 90), font=small)
    y_label = "RMS error of final latent vs reference, log scale"
    label_image = Image.new("RGB", (int(draw.textlength(y_label, font=font)) + 4, 20), "white")
    ImageDraw.Draw(label_image).text((2, 2), y_label, fill="black", font=font)
    rotated = label_image.rotate(90, expand=True)
    image.paste(rotated, (8, int((top + bottom) / 2 - rotated.height / 2)))

    # legend: one entry per pair, grouped by solver
    lx, ly = right + 24, top
    draw.text((lx, ly), "solver / schedule", fill="black", font=font)
    ly += 24
    for row in series:
        colour = SOLVER_COLOURS[solvers.index(row.solver) % len(SOLVER_COLOURS)]
        style = schedules.index(row.schedule)
        plotting.dashed_line(
            draw, [(lx, ly + 7), (lx + 40, ly + 7)], colour, SCHEDULE_DASHES[style % len(SCHEDULE_DASHES)], 2
        )
        plotting.marker(draw, lx + 20, ly + 7, MARKERS[style % len(MARKERS)], colour)
        draw.text((lx + 50, ly), row.label, fill="black", font=small)
        ly += 19 if row.schedule != schedules[-1] else 27
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)


if __name__ == "__main__":
    main()

"""The sweeps behind the embedded model's editor defaults: FlowChef (edit, inpaint, restore) and SplitFlow's n_dec.

    python bench/editor_defaults.py [--model embedded:shapes] [--only flowchef-edit,flowchef-inpaint,flowchef-restore,splitflow]

Every sweep runs on tuning inputs the benches never use: scenes of seen colour × shape × background combinations
from other seeds than bench/editing.py's, and for inpainting and restoring seen-combination scenes where
bench/inverse_problems.py measures held-out ones. Each prints its whole grid and the row it chooses by the rule
stated beside it; nodes/editors/flowchef.py and splitflow.py carry the chosen rows (docs/algorithms.md says which).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import editing  # noqa: E402
import inverse_problems  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from nodes.editors.flowchef import DEFAULTS, FlowChefDefaults  # noqa: E402
from nodes.editors.flowedit import DEFAULTS as FLOWEDIT_DEFAULTS  # noqa: E402
from nodes.embedded import dataset  # noqa: E402
from nodes.models.loader import MANAGER, LoadOptions  # noqa: E402
from storage.config import data_home  # noqa: E402

TUNING_EDIT_SEEDS = range(100, 105)  # bench/editing.py uses 0–4
TUNING_SCENE_SEED = 12  # bench/inverse_problems.py uses 11 (held-out combinations)


def flowchef_edit(loaded, pairs: int) -> None:
    """Rule: the highest success among rows whose IoU (shape kept) is at least 0.6, the issue's 0.5 with a margin for
    the spread between pair sets (a first choice at 0.55 on 8 pairs per kind read 0.588 here and 0.452 on the
    bench's pairs); ties: the higher IoU."""
    batches = [editing.make_batch(loaded, kind, pairs, seed) for seed, kind in zip(TUNING_EDIT_SEEDS, editing.KINDS)]
    base = DEFAULTS["edit"]["embedded"]
    rows = []
    print("FlowChef edit (28 steps, masks from Edit Mask):")
    print(f"  {'lr':>5}{'iters':>6}{'src steps':>10}{'true_cfg':>9}{'guidance':>9}{'success':>9}{'kept':>7}{'IoU':>7}")
    for lr, iters, source_steps, true_cfg in itertools.product((2.0, 4.0, 6.0, 8.0), (1,), (0, 7, 14), (1.0, 2.0)):
        settings = FlowChefDefaults(
            lr=lr,
            opt_iters=iters,
            optimizer="sgd",
            guidance=base.guidance,
            source_steps=source_steps,
            true_cfg=true_cfg,
        )
        scores: dict[str, list[float]] = {"success": [], "kept": [], "iou": []}
        for batch in batches:
            edited = loaded.vae.decode(editing.flowchef_edit(loaded, batch, settings))
            for key, values in editing.score(batch, edited).items():
                scores.setdefault(key, []).extend(values)
        success, kept, iou = (float(np.mean(scores[k])) for k in ("success", "kept", "iou"))
        rows.append((success, iou, settings))
        print(
            f"  {lr:>5g}{iters:>6}{source_steps:>10}{true_cfg:>9g}{base.guidance:>9g}"
            f"{100 * success:>8.1f}%{100 * kept:>6.1f}%{iou:>7.3f}"
        )
    eligible = [row for row in rows if row[1] >= 0.6] or rows
    success, iou, chosen = max(eligible, key=lambda row: (row[0], row[1]))
    print(f"  chosen: {chosen} (success {100 * success:.1f}%, IoU {iou:.3f})\n")


def tuning_scenes(count: int) -> tuple[torch.Tensor, list[str]]:
    images, captions, _ = dataset.batch(np.random.default_rng(TUNING_SCENE_SEED), count, held_out=False)
    return images, captions


def flowchef_inverse(loaded, count: int, problems: tuple[str, ...], grid: list[FlowChefDefaults], rule: str) -> None:
    """Prints PSNR per problem for each row; chooses the row with the largest summed gain over the degraded input
    (inpainting: the whole image and inside the box, each counted)."""
    images, captions = tuning_scenes(count)
    box = inverse_problems.centre_box(64, 64, inverse_problems.BOX)
    print(f"FlowChef {rule} ({count} tuning scenes, 28 steps): PSNR gain over the degraded input, dB")
    print(f"  {'optimizer':>9}{'lr':>6}{'iters':>6}{'guidance':>9}" + "".join(f"{name:>22}" for name in problems))
    rows = []
    for settings in grid:
        gains = []
        for name in problems:
            degradation = inverse_problems.PROBLEMS[name]
            measurement = inverse_problems.measure(degradation, images)
            restored = inverse_problems.restore(loaded, degradation, measurement, captions, settings)
            view = measurement if degradation.operator == "box_inpaint" else degradation.view(measurement)
            gains.append(inverse_problems.psnr(restored, images) - inverse_problems.psnr(view, images))
            if degradation.operator == "box_inpaint":
                gains.append(inverse_problems.psnr(restored, images, box) - inverse_problems.psnr(view, images, box))
        rows.append((sum(gains), settings))
        print(
            f"  {settings.optimizer:>9}{settings.lr:>6g}{settings.opt_iters:>6}{settings.guidance:>9g}"
            + "".join(f"{gain:>+11.2f}" for gain in gains)
        )
    total, chosen = max(rows, key=lambda row: row[0])
    print(f"  chosen: {chosen} (summed gain {total:+.2f} dB)\n")


def splitflow_n_dec(loaded, pairs: int) -> None:
    """Rule: among n_dec that split (n_dec ≤ n_max), the highest multi-attribute success; ties: the higher PSNR
    outside the object. n_dec = n_max + 2 is plain FlowEdit, printed for comparison."""
    n_max = FLOWEDIT_DEFAULTS["embedded"].n_max
    kinds = ("colour+shape", "all three")
    batches = [
        editing.make_batch(loaded, kind, pairs, seed)
        for seed, kind in zip(TUNING_EDIT_SEEDS, editing.KINDS)
        if kind in kinds
    ]
    print(f"SplitFlow n_dec (n_max {n_max}, {pairs} tuning pairs of each multi-attribute kind):")
    print(f"  {'n_dec':>6}{'split steps':>12}{'multi ok':>10}{'PSNR out':>10}")
    rows = []
    for n_dec in (n_max + 2, n_max, n_max - 2, n_max - 4, n_max - 6, n_max - 9, n_max - 12):
        scores: dict[str, list[float]] = {"success": [], "psnr_out": []}
        for batch in batches:
            edited = loaded.vae.decode(editing.method_splitflow(n_dec=n_dec)(loaded, batch))
            for key, values in editing.score(batch, edited).items():
                scores.setdefault(key, []).extend(values)
        success, psnr = (float(np.mean(scores[k])) for k in ("success", "psnr_out"))
        if n_dec <= n_max:
            rows.append((success, psnr, n_dec))
        split = max(0, n_max - n_dec + 1)
        label = " (FlowEdit)" if n_dec > n_max + 1 else ""
        print(f"  {n_dec:>6}{split:>12}{100 * success:>9.1f}%{psnr:>8.2f}dB{label}")
    success, psnr, chosen = max(rows, key=lambda row: (row[0], row[1]))
    print(f"  chosen: n_dec {chosen} (multi-attribute success {100 * success:.1f}%, PSNR out {psnr:.2f} dB)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:shapes")
    parser.add_argument("--pairs", type=int, default=16, help="tuning edit pairs per kind")
    parser.add_argument("--scenes", type=int, default=16, help="tuning scenes for inpainting and restoring")
    parser.add_argument("--only", default="flowchef-edit,flowchef-inpaint,flowchef-restore,splitflow")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    loaded = MANAGER.get(args.model, LoadOptions(device="cpu"), data_home() / "cache")
    print(f"model {args.model} ({loaded.model.sha256[:12]})\n")
    sweeps = set(args.only.split(","))
    if "flowchef-edit" in sweeps:
        flowchef_edit(loaded, args.pairs)
    if "flowchef-inpaint" in sweeps:
        grid = [
            FlowChefDefaults(lr=lr, opt_iters=iters, optimizer="sgd", guidance=guidance)
            for guidance, lr, iters in itertools.product((1.0, 4.0), (2.0, 5.0, 10.0, 20.0, 40.0, 80.0), (1, 2))
        ] + [
            FlowChefDefaults(lr=lr, opt_iters=1, optimizer="adam", guidance=guidance)
            for guidance, lr in itertools.product((1.0, 4.0), (0.02, 0.05, 0.1))
        ]
        flowchef_inverse(loaded, args.scenes, ("inpaint (box 24)",), grid, "inpaint")
    if "flowchef-restore" in sweeps:
        grid = [
            FlowChefDefaults(lr=lr, opt_iters=iters, optimizer="adam", guidance=guidance)
            for guidance, lr, iters in itertools.product((1.0, 2.0, 4.0), (0.02, 0.05, 0.1), (1, 3, 5))
        ]
        flowchef_inverse(loaded, args.scenes, ("super-res ×4", "deblur (k11, σ1)"), grid, "restore")
    if "splitflow" in sweeps:
        splitflow_n_dec(loaded, args.pairs)


if __name__ == "__main__":
    main()

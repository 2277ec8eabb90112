"""Editing benchmark on the embedded model: text edits of rendered shape scenes, scored by the analyzer.

    python bench/editing.py [--model embedded:shapes] [--pairs 20] [--grid out/editing.png]

Edit pairs come from the shapes testbed: a rendered source scene (a seen colour × shape × background
combination) and a target caption that changes one attribute (object colour, shape or background), two
(colour and shape) or three (all of them). `--pairs` pairs per kind, five kinds. Every method edits the
same encoded sources with the same prompts; the analyzer reads the edited images back:

- success: every attribute the caption changed now shows its target value;
- kept: every attribute it did not change (including size) still shows the source value;
- IoU: the edited object's mask against the source's, on pairs that keep the shape;
- PSNR out: PSNR against the source outside the object (source and edited masks, grown 2 px), on pairs that
  keep the background;
- evals: transformer rows per edit (a CFG pair counts two), the cost the methods are compared at;
- s/edit: wall-clock seconds per edit, batched by kind.

Methods: FlowEdit; SplitFlow (sub-prompts from Decompose Prompt) with its ablations (no projection, mean or
"distinct" aggregation); FlowChef edit, masked by Edit Mask (the prompts' difference, as the starter does; its IoU
against the region the edit must change is printed); FlowOpt; and SDEdit (image to image) at three strengths, with
step counts chosen so the evaluations are near FlowEdit's. Every method runs at its node's defaults for the
embedded model.

`--sheet PATH` writes a contact sheet: two edits of each kind on held-out scenes (colour × shape × background
combinations never trained on), one row each: the source, then each method's edit.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nodes.editors.common import EditPrompts  # noqa: E402
from nodes.editors.decompose import decompose_prompt  # noqa: E402
from nodes.editors.edit_mask import EditMaskNode, pixel_edit_mask  # noqa: E402
from nodes.editors.flowchef import DEFAULTS as FLOWCHEF_DEFAULTS  # noqa: E402
from nodes.editors.flowchef import FlowChefDefaults, flowchef  # noqa: E402
from nodes.editors.flowedit import DEFAULTS as FLOWEDIT_DEFAULTS  # noqa: E402
from nodes.editors.flowedit import flowedit  # noqa: E402
from nodes.editors.flowopt import DEFAULTS as FLOWOPT_DEFAULTS  # noqa: E402
from nodes.editors.flowopt import flowopt  # noqa: E402
from nodes.editors.splitflow import N_DEC_DEFAULTS, splitflow  # noqa: E402
from nodes.embedded import dataset  # noqa: E402
from nodes.embedded.analyzer import analyze, dilate  # noqa: E402
from nodes.image import grid_image, to_pil  # noqa: E402
from nodes.models.loader import MANAGER, LoadOptions  # noqa: E402
from nodes.sampling.sampler import NoiseSource, start_index  # noqa: E402
from nodes.sampling.solvers import EULER  # noqa: E402
from storage.config import data_home  # noqa: E402

KINDS: dict[str, tuple[str, ...]] = {
    "colour": ("colour",),
    "shape": ("shape",),
    "background": ("background",),
    "colour+shape": ("colour", "shape"),
    "all three": ("colour", "shape", "background"),
}
ATTRIBUTES = ("colour", "shape", "background", "size")
STEPS = 28  # the embedded model's default schedule length


@dataclass
class Batch:
    """One kind's pairs, encoded: what every method gets."""

    kind: str
    sources: list[dataset.Scene]
    targets: list[dataset.Scene]
    images: torch.Tensor  # [B, 3, 64, 64] source renders in [0, 1]
    latents: torch.Tensor
    prompts: EditPrompts
    sub_prompts: list  # SplitFlow: one conditioning of B rows per sub-prompt
    edit_masks: torch.Tensor  # [B, 64, 64] FlowChef's region to edit, from Edit Mask
    mask_iou: list[float]  # each edit mask's IoU against the region the edit must change


def changed(scene: dataset.Scene, attributes: tuple[str, ...], rng: np.random.Generator) -> dataset.Scene:
    """The scene with each named attribute set to a new value, keeping a seen combination."""
    while True:
        values = {"colour": scene.colour, "shape": scene.shape, "background": scene.background}
        for name in attributes:
            pool = dataset.SHAPES if name == "shape" else dataset.COLOURS
            values[name] = str(rng.choice([v for v in pool if v != values[name]]))
        if values["colour"] != values["background"] and not dataset.is_held_out(
            values["colour"], values["shape"], values["background"]
        ):
            return replace(scene, **values)


def must_change(kind: str, source: dataset.Scene, target: dataset.Scene) -> np.ndarray:
    """[64, 64] the pixels an edit of this kind changes: both objects, the background, or everything."""
    objects = dataset.object_mask(source) | dataset.object_mask(target)
    if KINDS[kind] == ("background",):
        return ~(dataset.object_mask(source) & dataset.object_mask(target))
    return np.ones_like(objects) if "background" in KINDS[kind] else objects


def make_batch(loaded, kind: str, count: int, seed: int, held_out: bool = False) -> Batch:
    rng = np.random.default_rng(seed)
    sample = dataset.sample_held_out_scene if held_out else dataset.sample_training_scene
    sources = [sample(rng) for _ in range(count)]
    targets = [changed(scene, KINDS[kind], rng) for scene in sources]
    images = torch.stack(
        [torch.from_numpy(np.asarray(dataset.render(s), dtype=np.float32) / 255).permute(2, 0, 1) for s in sources]
    )
    encoder = loaded.text_encoder
    prompts = EditPrompts(
        encoder.encode([s.caption for s in sources]),
        encoder.encode([t.caption for t in targets]),
        encoder.encode([""]).repeat_to(count),
    )
    split = [decompose_prompt(s.caption, t.caption) for s, t in zip(sources, targets)]
    parts = len(split[0])
    assert all(len(p) == parts for p in split), "one kind changes the same number of words in every pair"
    sub_prompts = [encoder.encode([p[k] for p in split]) for k in range(parts)]
    latents = loaded.vae.encode(images).to(loaded.model.dtype)
    masks = pixel_edit_mask(loaded.model, latents, prompts, **EditMaskNode.Params().model_dump())
    mask_iou = []
    for mask, source, target in zip(masks.bool().numpy(), sources, targets):
        truth = must_change(kind, source, target)
        mask_iou.append(float((mask & truth).sum() / max((mask | truth).sum(), 1)))
    return Batch(kind, sources, targets, images, latents, prompts, sub_prompts, masks, mask_iou)


# ---- methods: each maps a batch to edited latents ---------------------------------------------------------------


def method_flowedit(loaded, batch: Batch, n_max: int | None = None, steps: int = STEPS) -> torch.Tensor:
    model = loaded.model
    defaults = FLOWEDIT_DEFAULTS["embedded"]
    return flowedit(
        model,
        batch.latents,
        model.default_sigmas(steps, 64, 64),
        batch.prompts,
        n_max=n_max or defaults.n_max,
        src_guidance=defaults.src_guidance,
        tar_guidance=defaults.tar_guidance,
        generator=torch.Generator().manual_seed(42),
    )


def method_splitflow(projection: bool = True, aggregation: str = "vfa", n_dec: int | None = None) -> Callable:
    def run(loaded, batch: Batch) -> torch.Tensor:
        model = loaded.model
        defaults = FLOWEDIT_DEFAULTS["embedded"]
        return splitflow(
            model,
            batch.latents,
            model.default_sigmas(STEPS, 64, 64),
            batch.prompts,
            batch.sub_prompts,
            n_max=defaults.n_max,
            n_dec=N_DEC_DEFAULTS["embedded"] if n_dec is None else n_dec,
            projection=projection,
            aggregation=aggregation,
            src_guidance=defaults.src_guidance,
            tar_guidance=defaults.tar_guidance,
            generator=torch.Generator().manual_seed(42),
        )

    return run


def flowchef_edit(loaded, batch: Batch, settings: FlowChefDefaults) -> torch.Tensor:
    """FlowChef edit of a batch at the starter's 28 steps, masked by Edit Mask."""
    model = loaded.model
    return flowchef(
        model,
        model.default_sigmas(STEPS, 64, 64),
        batch.prompts.target,
        task="edit",
        source=batch.prompts.source,
        negative=batch.prompts.negative,
        source_latent=batch.latents,
        mask=batch.edit_masks,
        max_steps=STEPS,
        source_steps=settings.source_steps,
        opt_iters=settings.opt_iters,
        lr=settings.lr,
        optimizer=settings.optimizer,
        loss_weight=1000.0,
        guidance=settings.guidance,
        true_cfg=settings.true_cfg,
        generator=torch.Generator().manual_seed(42),
    )


def method_flowchef(loaded, batch: Batch) -> torch.Tensor:
    return flowchef_edit(loaded, batch, FLOWCHEF_DEFAULTS["edit"]["embedded"])


def method_flowopt(loaded, batch: Batch) -> torch.Tensor:
    model = loaded.model
    defaults = FLOWOPT_DEFAULTS["embedded"]
    steps = 15
    return flowopt(
        model,
        batch.latents,
        model.default_sigmas(steps, 64, 64),
        batch.prompts,
        mode="edit",
        n_max=defaults.n_max,
        iterations=2,
        eta=defaults.eta,
        src_guidance=defaults.src_guidance,
        tar_guidance=defaults.tar_guidance,
    )[-1]


def method_sdedit(strength: float, evaluations: int) -> Callable:
    def run(loaded, batch: Batch) -> torch.Tensor:
        model = loaded.model
        steps = math.ceil(evaluations / (2 * strength))  # CFG: two rows per step
        sigmas = model.default_sigmas(steps, 64, 64)[start_index(steps, strength) :]
        x0 = batch.latents
        noise = torch.cat([NoiseSource(k).draw((1, *x0.shape[1:]), x0.dtype, x0.device) for k in range(len(x0))])
        x = sigmas[0] * noise + (1 - sigmas[0]) * x0
        guidance = FLOWEDIT_DEFAULTS["embedded"].tar_guidance
        return EULER.sample(
            lambda x, s: model.velocity(x, s, batch.prompts.target, batch.prompts.negative, guidance), x, sigmas
        )

    return run


# ---- scoring ----------------------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean()) if a.size else 0.0
    return 100.0 if mse == 0 else 10 * math.log10(1.0 / mse)


def score(batch: Batch, edited: torch.Tensor) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {"success": [], "kept": [], "iou": [], "psnr_out": []}
    changes = KINDS[batch.kind]
    for source, target, before, after in zip(batch.sources, batch.targets, batch.images, edited):
        found = analyze(after)
        values = {"colour": found.colour, "shape": found.shape, "background": found.background, "size": found.size}
        rows["success"].append(float(all(values[a] == getattr(target, a) for a in changes)))
        rows["kept"].append(float(all(values[a] == getattr(source, a) for a in ATTRIBUTES if a not in changes)))
        source_mask = dataset.object_mask(source)
        if "shape" not in changes:
            union = (source_mask | found.mask).sum()
            rows["iou"].append(float((source_mask & found.mask).sum() / union) if union else 0.0)
        if "background" not in changes:
            outside = ~dilate(source_mask | found.mask, 2)
            rows["psnr_out"].append(
                psnr(before.permute(1, 2, 0).numpy()[outside], after.permute(1, 2, 0).numpy()[outside])
            )
    return rows


def count_rows(model) -> tuple[list[int], Callable[[], None]]:
    rows = [0]
    hook = model.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: rows.__setitem__(0, rows[0] + kwargs["hidden_states"].shape[0]), with_kwargs=True
    )
    return rows, hook.remove


METHODS: dict[str, Callable] = {
    "FlowEdit": method_flowedit,
    "SplitFlow": method_splitflow(),
    "FlowChef edit": method_flowchef,
    "FlowOpt (K=2)": method_flowopt,
    **{f"SDEdit {s:.2f}": method_sdedit(s, 2 * 2 * FLOWEDIT_DEFAULTS["embedded"].n_max) for s in (0.5, 0.65, 0.8)},
}
# SplitFlow's ablation rows (the paper's AVG and +LTP, and the abstract's "distinct directions" reading).
ABLATIONS: dict[str, Callable] = {
    "SF no LTP, mean": method_splitflow(projection=False, aggregation="mean"),
    "SF LTP, mean": method_splitflow(aggregation="mean"),
    "SF LTP, distinct": method_splitflow(aggregation="distinct"),
}
SHEET_METHODS = ("FlowEdit", "SplitFlow", "FlowChef edit", "FlowOpt (K=2)", "SDEdit 0.65")


def contact_sheet(loaded, path: Path) -> None:
    """Two held-out edits of each kind, one row each: the source, then each of SHEET_METHODS' edits."""
    tiles: list[tuple[torch.Tensor, str]] = []
    for seed, kind in enumerate(KINDS):
        batch = make_batch(loaded, kind, 2, 1000 + seed, held_out=True)
        edits = {name: loaded.vae.decode(METHODS[name](loaded, batch)) for name in SHEET_METHODS}
        for k in range(2):
            tiles.append((batch.images[k], f"{batch.sources[k].caption} -> {batch.targets[k].caption}"))
            tiles += [(edits[name][k], name) for name in SHEET_METHODS]
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [to_pil(t[None])[0] for t, _ in tiles]
    grid_image(images, [c for _, c in tiles], columns=1 + len(SHEET_METHODS)).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:shapes")
    parser.add_argument("--pairs", type=int, default=20, help="edit pairs per kind (five kinds)")
    parser.add_argument("--sheet", type=Path, default=None, help="write the contact sheet of held-out edits here")
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    loaded = MANAGER.get(args.model, LoadOptions(device="cpu"), data_home() / "cache")
    methods = {**METHODS, **ABLATIONS}
    batches = [make_batch(loaded, kind, args.pairs, seed) for seed, kind in enumerate(KINDS)]
    print(
        f"model {args.model} ({loaded.model.sha256[:12]}), {args.pairs} pairs × {len(KINDS)} kinds = "
        f"{args.pairs * len(KINDS)} edits per method, 64×64, CPU ({torch.get_num_threads()} threads)\n"
    )
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    costs: dict[str, tuple[float, float]] = {}
    for name, method in methods.items():
        rows, remove = count_rows(loaded.model)
        seconds = 0.0
        table[name] = {}
        try:
            for batch in batches:
                started = time.perf_counter()
                latents = method(loaded, batch)
                seconds += time.perf_counter() - started
                table[name][batch.kind] = score(batch, loaded.vae.decode(latents))
        finally:
            remove()
        edits = args.pairs * len(KINDS)
        costs[name] = (rows[0] / edits, seconds / edits)

    def mean(values: list[float]) -> str:
        return f"{100 * np.mean(values):5.1f}%" if values else "    –"

    print(f"{'method':<17}{'evals':>6}{'s/edit':>8}  " + "".join(f"{kind + ' ok':>18}" for kind in KINDS))
    for name in methods:
        row = "".join(f"{mean(table[name][kind]['success']):>18}" for kind in KINDS)
        print(f"{name:<17}{costs[name][0]:>6.0f}{costs[name][1]:>8.3f}  {row}")
    print(f"\n{'method':<17}{'success':>9}{'multi ok':>10}{'kept':>8}{'IoU':>8}{'PSNR out':>10}")
    summary: dict[str, dict[str, float]] = {}
    for name in methods:
        merged = {
            key: sum((table[name][kind][key] for kind in KINDS), []) for key in ("success", "kept", "iou", "psnr_out")
        }
        multi = table[name]["colour+shape"]["success"] + table[name]["all three"]["success"]
        summary[name] = {
            "success": float(np.mean(merged["success"])),
            "multi": float(np.mean(multi)),
            "kept": float(np.mean(merged["kept"])),
            "iou": float(np.mean(merged["iou"])),
            "psnr": float(np.mean(merged["psnr_out"])),
        }
        s = summary[name]
        print(
            f"{name:<17}{100 * s['success']:>8.1f}%{100 * s['multi']:>9.1f}%{100 * s['kept']:>7.1f}%"
            f"{s['iou']:>8.3f}{s['psnr']:>9.2f}dB"
        )
    mask_iou = {batch.kind: float(np.mean(batch.mask_iou)) for batch in batches}
    print(
        "\nEdit Mask IoU against the region each edit must change: "
        + ", ".join(f"{kind} {value:.2f}" for kind, value in mask_iou.items())
        + f"; mean {np.mean(list(mask_iou.values())):.2f}"
    )

    fe = summary["FlowEdit"]
    sdedits = [n for n in methods if n.startswith("SDEdit")]
    comparable = [n for n in sdedits if summary[n]["success"] <= fe["success"]]
    print("\ngoals:")
    if comparable:
        best = max(comparable, key=lambda n: summary[n]["success"])
        met = fe["iou"] > summary[best]["iou"] and fe["psnr"] > summary[best]["psnr"]
        print(
            f"  FlowEdit preserves more than SDEdit at equal or lower success ({best}: success "
            f"{100 * summary[best]['success']:.1f}% vs {100 * fe['success']:.1f}%): IoU {fe['iou']:.3f} vs "
            f"{summary[best]['iou']:.3f}, PSNR out {fe['psnr']:.2f} vs {summary[best]['psnr']:.2f} dB → "
            f"{'met' if met else 'NOT met'}"
        )
    else:
        print("  FlowEdit vs SDEdit: every SDEdit strength has higher success than FlowEdit; compare by hand")
    for name in ("SplitFlow", *ABLATIONS):
        sf = summary[name]
        met = sf["multi"] >= fe["multi"] and sf["iou"] >= fe["iou"] and sf["psnr"] >= fe["psnr"]
        print(
            f"  {name} ≥ FlowEdit on multi-attribute success at equal or better preservation: "
            f"{100 * sf['multi']:.1f}% vs {100 * fe['multi']:.1f}%, IoU {sf['iou']:.3f} vs {fe['iou']:.3f}, "
            f"PSNR out {sf['psnr']:.2f} vs {fe['psnr']:.2f} dB → {'met' if met else 'NOT met'}"
        )
    fc = summary["FlowChef edit"]
    met = fc["success"] >= 0.6 and fc["iou"] >= 0.5
    print(
        f"  FlowChef edit success ≥ 60% with IoU ≥ 0.5: {100 * fc['success']:.1f}%, IoU {fc['iou']:.3f} → "
        f"{'met' if met else 'NOT met'}"
    )
    if args.sheet:
        contact_sheet(loaded, args.sheet)
        print(f"  contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()

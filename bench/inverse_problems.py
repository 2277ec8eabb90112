"""FlowChef inverse problems on the embedded model: inpainting, ×4 super-resolution and deblurring.

    python bench/inverse_problems.py [--model embedded:shapes] [--count 32] [--grid out/inverse.png]

Ground truths are rendered testbed scenes of held-out colour × shape × background combinations (never seen
in training). Each is degraded (a grey 24 px centre box; 4×4 average pooling to 16×16; an 11-tap Gaussian
blur of σ 1), and restored three ways: the degraded input itself (nearest-upscaled for super-resolution),
unguided sampling with the scene's caption (the model's prior alone), and FlowChef steered by the
measurement (same caption, seed and 28 Euler steps) at the FlowChef node's defaults for the embedded model.
Prints mean PSNR against the ground truth (for inpainting also inside the box), measurement consistency (the
restored image degraded again against the observation) and seconds per image.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nodes.degrade import Degradation, centre_box  # noqa: E402
from nodes.editors.flowchef import DEFAULTS, FlowChefDefaults, defaults_kind, flowchef  # noqa: E402
from nodes.embedded import dataset  # noqa: E402
from nodes.image import grid_image, to_pil  # noqa: E402
from nodes.models.loader import MANAGER, LoadOptions  # noqa: E402
from nodes.sampling.solvers import EULER  # noqa: E402
from storage.config import data_home  # noqa: E402

STEPS = 28
BOX = 24
UNGUIDED_GUIDANCE = 4.0  # the prior's baseline, at the guidance earlier reports used
PROBLEMS: dict[str, Degradation] = {
    "inpaint (box 24)": Degradation("box_inpaint", box_size=BOX),
    "super-res ×4": Degradation("super_resolution", factor=4),
    "deblur (k11, σ1)": Degradation("gaussian_deblur", blur_kernel=11, blur_sigma=1.0),
}


def psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """Mean over images of PSNR (peak 1) between [B, 3, H, W] batches, optionally only where `where` [H, W] is 1."""
    values = []
    for x, y in zip(a, b):
        error = (x - y).square()
        mse = float(error[:, where.bool()].mean() if where is not None else error.mean())
        values.append(100.0 if mse == 0 else 10 * math.log10(1.0 / mse))
    return float(np.mean(values))


def measure(degradation: Degradation, images: torch.Tensor) -> torch.Tensor:
    """The observation: the degraded images (for box inpainting, with the hole shown grey)."""
    if degradation.operator == "box_inpaint":
        box = centre_box(*images.shape[-2:], degradation.box_size)
        return images * (1 - box) + 0.5 * box
    return degradation.apply(images)


def restore(
    loaded, degradation: Degradation, measurement: torch.Tensor, captions: list[str], settings: FlowChefDefaults
) -> torch.Tensor:
    """FlowChef's restoration of `measurement` (images in [0, 1]) with the scenes' captions, 28 Euler steps, seed 0."""
    model, vae, encoder = loaded.model, loaded.vae, loaded.text_encoder
    count = len(captions)
    if degradation.operator == "box_inpaint":
        box = centre_box(*measurement.shape[-2:], degradation.box_size)
        inputs = dict(
            task="inpaint", source_latent=vae.encode(measurement).to(model.dtype), mask=box[None].expand(count, -1, -1)
        )
    else:
        inputs = dict(task="inverse_problem", degradation=degradation, vae=vae, measurement=measurement)
    size = measurement.shape[-1] * (1 if degradation.operator == "box_inpaint" else degradation.scale)
    latents = flowchef(
        model,
        model.default_sigmas(STEPS, size, size),
        encoder.encode(captions),
        negative=encoder.encode([""]).repeat_to(count),
        max_steps=STEPS,
        source_steps=0,
        opt_iters=settings.opt_iters,
        lr=settings.lr,
        optimizer=settings.optimizer,
        loss_weight=1000.0,
        guidance=settings.guidance,
        true_cfg=1.0,
        generator=torch.Generator().manual_seed(0),
        **inputs,
    )
    return vae.decode(latents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded:shapes")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--grid", type=Path, default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    loaded = MANAGER.get(args.model, LoadOptions(device="cpu"), data_home() / "cache")
    model, vae, encoder = loaded.model, loaded.vae, loaded.text_encoder
    images, captions, _ = dataset.batch(np.random.default_rng(11), args.count, held_out=True)
    target, negative = encoder.encode(captions), encoder.encode([""]).repeat_to(args.count)
    sigmas = model.default_sigmas(STEPS, 64, 64)
    unguided_guidance = UNGUIDED_GUIDANCE

    started = time.perf_counter()
    noise = model.noise_like(torch.empty(model.latent_shape(args.count, 64, 64)), torch.Generator().manual_seed(0))
    prior = vae.decode(
        EULER.sample(lambda x, s: model.velocity(x, s, target, negative, unguided_guidance), noise, sigmas)
    )
    prior_seconds = (time.perf_counter() - started) / args.count
    print(
        f"model {args.model} ({model.sha256[:12]}), {args.count} held-out scenes, 64×64, {STEPS} Euler steps, "
        f"FlowChef at its node's defaults for the embedded model; unguided: guidance {unguided_guidance}\n"
    )
    print(
        f"{'problem':<20}{'degraded':>10}{'unguided':>10}{'FlowChef':>10}{'consistency':>13}{'s/image':>9}   settings"
    )
    tiles: list[tuple[torch.Tensor, str]] = [(images[0], "ground truth")]
    goals: list[tuple[str, bool]] = []
    for name, degradation in PROBLEMS.items():
        kind = defaults_kind("inverse_problem", degradation.operator)
        settings = DEFAULTS[kind]["embedded"]
        measurement = measure(degradation, images)
        started = time.perf_counter()
        restored = restore(loaded, degradation, measurement, captions, settings)
        seconds = (time.perf_counter() - started) / args.count
        inpainting = degradation.operator == "box_inpaint"
        degraded_view = measurement if inpainting else degradation.view(measurement)
        scores = [psnr(view, images) for view in (degraded_view, prior, restored)]
        # Measurement consistency: the restored image degraded again, against the observation (outside the box
        # for inpainting, where the observation is known).
        box = centre_box(64, 64, degradation.box_size)
        consistency = (
            psnr(restored, measurement, 1 - box) if inpainting else psnr(degradation.apply(restored), measurement)
        )
        print(
            f"{name:<20}"
            + "".join(f"{s:>8.2f}dB" for s in scores)
            + f"{consistency:>11.2f}dB{seconds:>9.3f}   {settings.optimizer} lr {settings.lr:g}, "
            f"{settings.opt_iters} iters, guidance {settings.guidance:g}"
        )
        goals.append((name, scores[2] > max(scores[0], scores[1])))
        if inpainting:
            inside = [psnr(view, images, box) for view in (degraded_view, prior, restored)]
            print(f"{'  inside the box':<20}" + "".join(f"{s:>8.2f}dB" for s in inside))
            goals.append((f"{name}, inside the box", inside[2] > max(inside[0], inside[1])))
        tiles += [(degraded_view[0], f"{name}: degraded"), (restored[0], f"{name}: FlowChef")]
    print(f"\nunguided sampling: {prior_seconds:.3f} s/image")
    print("goals (FlowChef above both the degraded input and unguided sampling):")
    for name, met in goals:
        print(f"  {name}: {'met' if met else 'NOT met'}")
    if args.grid:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        grid_image([to_pil(t[None])[0] for t, _ in tiles], [c for _, c in tiles], columns=len(tiles)).save(args.grid)
        print(f"grid: {args.grid}")


if __name__ == "__main__":
    main()

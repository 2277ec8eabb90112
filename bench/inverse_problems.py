"""FlowChef inverse problems on the embedded model: inpainting, ×4 super-resolution and deblurring.

    python bench/inverse_problems.py [--model embedded:shapes] [--count 32] [--grid out/inverse.png]

Ground truths are rendered testbed scenes of held-out colour × shape × background combinations (never seen
in training). Each is degraded (a grey 24 px centre box; 4×4 average pooling to 16×16; an 11-tap Gaussian
blur of σ 1), and restored three ways: the degraded input itself (nearest-upscaled for super-resolution),
unguided sampling with the scene's caption (the model's prior alone), and FlowChef steered by the
measurement (same caption, seed and 28 Euler steps). Prints mean PSNR against the ground truth (for
inpainting also inside the box) and seconds per image.
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
from nodes.editors.flowchef import DEFAULTS, flowchef  # noqa: E402
from nodes.embedded import dataset  # noqa: E402
from nodes.image import grid_image, to_pil  # noqa: E402
from nodes.models.loader import MANAGER, LoadOptions  # noqa: E402
from nodes.sampling.solvers import EULER  # noqa: E402
from storage.config import data_home  # noqa: E402

STEPS = 28
BOX = 24


def psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """Mean over images of PSNR (peak 1) between [B, 3, H, W] batches, optionally only where `where` [H, W] is 1."""
    values = []
    for x, y in zip(a, b):
        error = (x - y).square()
        mse = float(error[:, where.bool()].mean() if where is not None else error.mean())
        values.append(100.0 if mse == 0 else 10 * math.log10(1.0 / mse))
    return float(np.mean(values))


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
    defaults = DEFAULTS["embedded"]
    box = centre_box(64, 64, BOX)

    def unguided() -> torch.Tensor:
        noise = model.noise_like(torch.empty(model.latent_shape(args.count, 64, 64)), torch.Generator().manual_seed(0))
        return vae.decode(
            EULER.sample(lambda x, s: model.velocity(x, s, target, negative, defaults.guidance), noise, sigmas)
        )

    started = time.perf_counter()
    prior = unguided()
    prior_seconds = (time.perf_counter() - started) / args.count
    print(
        f"model {args.model} ({model.sha256[:12]}), {args.count} held-out scenes, 64×64, {STEPS} Euler steps, "
        f"guidance {defaults.guidance}\n"
    )
    print(f"{'problem':<20}{'degraded':>10}{'unguided':>10}{'FlowChef':>10}{'s/image':>9}   settings")
    tiles: list[tuple[torch.Tensor, str]] = [(images[0], "ground truth")]
    problems = {
        "inpaint (box 24)": (Degradation("box_inpaint", box_size=BOX), dict(optimizer="sgd", lr=defaults.lr)),
        "super-res ×4": (Degradation("super_resolution", factor=4), dict(optimizer="adam", lr=0.05)),
        "deblur (k11, σ1)": (
            Degradation("gaussian_deblur", blur_kernel=11, blur_sigma=1.0),
            dict(optimizer="adam", lr=0.05),
        ),
    }
    for name, (degradation, optimiser) in problems.items():
        measurement = degradation.apply(images)
        if degradation.operator == "box_inpaint":
            measurement = images * (1 - box) + 0.5 * box  # the hole shown grey
            task_inputs = dict(
                task="inpaint",
                source_latent=vae.encode(measurement).to(model.dtype),
                mask=box[None].expand(args.count, 64, 64),
            )
        else:
            task_inputs = dict(task="inverse_problem", degradation=degradation, vae=vae, measurement=measurement)
        started = time.perf_counter()
        # The loss is a mean over the whole batch; scaling by the batch size gives each image the SGD step it
        # would get alone (Adam is scale-free).
        latents = flowchef(
            model,
            sigmas,
            target,
            negative=negative,
            max_steps=STEPS,
            source_steps=0,
            opt_iters=defaults.opt_iters,
            loss_weight=1000.0 * args.count,
            guidance=defaults.guidance,
            true_cfg=1.0,
            generator=torch.Generator().manual_seed(0),
            **optimiser,
            **task_inputs,
        )
        seconds = (time.perf_counter() - started) / args.count
        restored = vae.decode(latents)
        degraded_view = degradation.view(measurement) if degradation.operator != "box_inpaint" else measurement
        scores = [psnr(view, images) for view in (degraded_view, prior, restored)]
        print(
            f"{name:<20}"
            + "".join(f"{s:>8.2f}dB" for s in scores)
            + f"{seconds:>9.3f}   {optimiser['optimizer']} lr {optimiser['lr']}"
        )
        if degradation.operator == "box_inpaint":
            inside = [psnr(view, images, box) for view in (degraded_view, prior, restored)]
            print(f"{'  inside the box':<20}" + "".join(f"{s:>8.2f}dB" for s in inside))
        tiles += [(degraded_view[0], f"{name}: degraded"), (restored[0], f"{name}: FlowChef")]
    print(f"\nunguided sampling: {prior_seconds:.3f} s/image")
    if args.grid:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        grid_image([to_pil(t[None])[0] for t, _ in tiles], [c for _, c in tiles], columns=len(tiles)).save(args.grid)
        print(f"grid: {args.grid}")


if __name__ == "__main__":
    main()

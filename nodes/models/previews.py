"""Cheap latent → RGB previews (docs/algorithms.md, "Live previews"): what every live preview shows while a node runs.

An SD3 or FLUX decoder is too slow to run every few steps (the embedded model's small one is not, and its
adapter decodes), so those models preview through a linear map from their latent channels to RGB (plus a
bias), fitted by least squares on their own VAE: a fixed, seeded set of procedural images is encoded, and
the images, averaged down to the latent grid, are regressed onto the model-space latents. The map is a few
dozen numbers, cached in the run's cache folder under a hash of the VAE's weights, so each VAE is fitted once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from nodes.files import cache_folder
from nodes.models.components import VAE

FIT_SEED = 0
FIT_IMAGES = 32
FIT_SIZE = 64  # pixels; 8×8 latent cells per image at the usual ×8, so 2,048 samples for ~50 unknowns
SHAPES_PER_IMAGE = 3
FIT_VERSION = 1  # part of the cache key: raise it when the procedure or the image set changes
CACHE_FOLDER = "latent_previews"


@dataclass(frozen=True)
class LinearPreview:
    """rgb = weights · latent + bias per latent cell: weights [C, 3], bias [3], both float32 on the CPU."""

    weights: torch.Tensor
    bias: torch.Tensor

    def apply(self, latent: torch.Tensor) -> torch.Tensor:
        """Model-space latents [B, C, h, w] → [B, 3, h, w] float32 in [0, 1] on the CPU."""
        rgb = torch.einsum("bchw,cr->brhw", latent.detach().to("cpu", torch.float32), self.weights)
        return (rgb + self.bias[None, :, None, None]).clamp(0, 1)

    def to_json(self) -> dict[str, list[float] | list[list[float]]]:
        return {"weights": self.weights.tolist(), "bias": self.bias.tolist()}

    @staticmethod
    def from_json(data: dict[str, list]) -> LinearPreview:
        return LinearPreview(
            torch.tensor(data["weights"], dtype=torch.float32), torch.tensor(data["bias"], dtype=torch.float32)
        )


def channel_stretch(latent: torch.Tensor) -> torch.Tensor:
    """The first three latent channels, each stretched to [0, 1]: all a model without an autoencoder can show."""
    channels = latent[:, :3].detach().to("cpu", torch.float32)
    low = channels.amin(dim=(2, 3), keepdim=True)
    high = channels.amax(dim=(2, 3), keepdim=True)
    return (channels - low) / (high - low).clamp_min(1e-6)


def synthetic_images(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Procedural images [count, 3, size, size] in [0, 1]: a gradient between four random corner colours with
    flat discs and rectangles of random colours on it, so the fit sees smooth fields, edges and the colour cube."""
    ramp = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(ramp, ramp, indexing="ij")
    images = []
    for _ in range(count):
        corners = torch.rand(4, 3, 1, 1, generator=generator)
        image = (
            corners[0] * (1 - x) * (1 - y) + corners[1] * x * (1 - y) + corners[2] * (1 - x) * y + corners[3] * x * y
        )
        for _ in range(SHAPES_PER_IMAGE):
            colour = torch.rand(3, 1, 1, generator=generator)
            cx, cy, radius, kind = torch.rand(4, generator=generator).tolist()
            radius = 0.1 + 0.25 * radius
            if kind < 0.5:
                inside = (x - cx) ** 2 + (y - cy) ** 2 < radius**2
            else:
                inside = ((x - cx).abs() < radius) & ((y - cy).abs() < radius)
            image = torch.where(inside, colour, image)
        images.append(image)
    return torch.stack(images)


def regression_pairs(vae: VAE, images: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents [N·h·w, C], colours [N·h·w, 3]): each latent cell and the mean colour of the pixels it covers."""
    latents = vae.encode(images).to("cpu", torch.float32)
    colours = F.avg_pool2d(images, factor)
    return (latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]), colours.permute(0, 2, 3, 1).reshape(-1, 3))


def fit_linear_preview(vae: VAE, factor: int, images: torch.Tensor) -> LinearPreview:
    """Least squares (float64) of the images' latent-grid colours onto their latents plus a constant."""
    latents, colours = regression_pairs(vae, images, factor)
    design = torch.cat([latents, torch.ones(len(latents), 1)], dim=1).double()
    # gelsd copes with a rank-deficient design (channels a VAE leaves nearly constant)
    solution = torch.linalg.lstsq(design, colours.double(), driver="gelsd").solution.float()
    return LinearPreview(solution[:-1].contiguous(), solution[-1].contiguous())


def vae_fingerprint(vae: VAE, fallback: str) -> str:
    """SHA-256 of the VAE's weights and config, so the same VAE shares one fit whatever model it came with.
    Sequential offload leaves only meta tensors on the module; the loader's hash of the files (`fallback`)
    then stands in for their bytes."""
    config = {k: v for k, v in vae.vae.config.items() if not k.startswith("_")}  # not paths or versions
    digest = hashlib.sha256(json.dumps([FIT_VERSION, FIT_SEED, config], sort_keys=True, default=str).encode())
    for name, tensor in vae.vae.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if tensor.is_meta:
            digest.update(fallback.encode())
        else:
            digest.update(tensor.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy())
    return digest.hexdigest()


def cache_path(cache_root: Path, key: str) -> Path:
    return cache_folder(cache_root, CACHE_FOLDER) / f"{key}.json"


def cached_linear_preview(vae: VAE, factor: int, key: str, cache_root: Path | None) -> LinearPreview:
    """The VAE's linear preview, read from the cache or fitted on the seeded image set and stored (fitted
    afresh, and kept nowhere, without a cache folder)."""
    path = None if cache_root is None else cache_path(cache_root, key)
    if path is not None and path.is_file():
        return LinearPreview.from_json(json.loads(path.read_text(encoding="utf-8")))
    images = synthetic_images(FIT_IMAGES, FIT_SIZE, torch.Generator("cpu").manual_seed(FIT_SEED))
    fitted = fit_linear_preview(vae, factor, images)
    if path is None:
        return fitted
    # Written aside and renamed, so a worker on another device never reads half a file.
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(fitted.to_json()), encoding="utf-8")
    partial.replace(path)
    return fitted  # float32 survives the JSON round trip exactly: a later read gives these very numbers

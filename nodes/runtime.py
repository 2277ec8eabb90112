"""Devices and the software environment: what a run records so it can be repeated."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> str:
    """Map auto/cpu/cuda[:N] to a concrete torch device string; a clear error when CUDA is asked for but absent."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for, but no CUDA GPU is available (use --device cpu or auto)")
        return name
    raise ValueError(f"unknown device {name!r}: expected one of {', '.join(DEVICE_CHOICES)}")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(device: str) -> dict[str, Any]:
    """Package versions and the device, recorded with every run."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "diffusers": _version("diffusers"),
        "transformers": _version("transformers"),
        "device": device,
    }
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info

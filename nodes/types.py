"""Socket types: the names that typed node inputs and outputs carry, and which ones may be wired together.

Values that flow along wires are plain torch tensors for IMAGE and MASK (IMAGE: float32 [B, 3, H, W]
in [0, 1]; MASK: float32 [B, H, W] in [0, 1], 1 = selected) and richer value classes for model-side
types, which carry what makes mismatches detectable (a LATENT knows its model family).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any


class SocketType(StrEnum):
    FLOW_MODEL = "FLOW_MODEL"
    TEXT_ENCODER = "TEXT_ENCODER"
    VAE = "VAE"
    CONDITIONING = "CONDITIONING"
    LATENT = "LATENT"
    IMAGE = "IMAGE"
    MASK = "MASK"
    SIGMAS = "SIGMAS"
    SOLVER = "SOLVER"
    NOISE = "NOISE"
    INT = "INT"
    FLOAT = "FLOAT"
    STRING = "STRING"
    BOOLEAN = "BOOLEAN"
    PROMPTS = "PROMPTS"  # a list of prompts (SplitFlow's sub-prompts)
    VERIFIER = "VERIFIER"  # a scorer of images against a prompt (nodes/scaling/verifiers.py)


# Socket colours for the canvas (ComfyUI-like palette, tuned for a dark background).
SOCKET_COLOURS: dict[SocketType, str] = {
    SocketType.FLOW_MODEL: "#b39ddb",
    SocketType.TEXT_ENCODER: "#ffd54f",
    SocketType.VAE: "#ef5350",
    SocketType.CONDITIONING: "#ffa931",
    SocketType.LATENT: "#ff80ab",
    SocketType.IMAGE: "#64b5f6",
    SocketType.MASK: "#81c784",
    SocketType.SIGMAS: "#4dd0e1",
    SocketType.SOLVER: "#9575cd",
    SocketType.NOISE: "#b0bec5",
    SocketType.INT: "#aed581",
    SocketType.FLOAT: "#dce775",
    SocketType.STRING: "#e0e0e0",
    SocketType.BOOLEAN: "#90a4ae",
    SocketType.PROMPTS: "#fff59d",
    SocketType.VERIFIER: "#f48fb1",
}


def can_connect(source: SocketType, target: SocketType) -> bool:
    """Whether an output of type `source` may feed an input of type `target` (an INT widens to a FLOAT)."""
    return source == target or (source == SocketType.INT and target == SocketType.FLOAT)


def value_nbytes(value: Any) -> int:
    """Approximate memory held by a node output, for the executor's memory-bounded cache.

    Tensors report their storage; value classes may define `nbytes`; containers are summed; anything
    else counts as a small constant.
    """
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if callable(nbytes):
        return int(nbytes())
    element_size = getattr(value, "element_size", None)
    if callable(element_size) and hasattr(value, "numel"):
        return int(element_size() * value.numel())
    if isinstance(value, Mapping):
        return sum(value_nbytes(v) for v in value.values())
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return sum(value_nbytes(v) for v in value)
    if isinstance(value, (str, bytes)):
        return len(value)
    return 64

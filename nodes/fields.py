"""Param fields that several nodes share, declared once so their bounds and wording cannot drift apart.

Each is a factory returning a fresh pydantic `Field`: a node's `Params` writes `seed: int = seed_field(42, "…")`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

MAX_SEED = 2**63 - 1  # fits every database's signed 64-bit integer
MAX_SIDE = 16384  # the largest image side, in pixels, any size param accepts


def seed_field(default: int, description: str) -> Any:
    """A seed: any non-negative 64-bit value, shown with the canvas's dice widget."""
    return Field(default, ge=0, le=MAX_SEED, description=description, json_schema_extra={"widget": "seed"})


def preview_every_field(description: str = "Show a preview every N steps, at most four a second (0: never).") -> Any:
    """How often a long-running node streams a live preview: every N steps, 0 for never (nodes.sampling.sampler
    step_progress also keeps previews at least PREVIEW_INTERVAL apart)."""
    return Field(4, ge=0, le=1000, description=description)


def guidance_field(default: float = 7.0) -> Any:
    """The guidance a sampler applies: SD3's classifier-free scale, FLUX-dev's embedded guidance."""
    return Field(
        default,
        ge=0.0,
        le=100.0,
        json_schema_extra={"step": 0.1},
        description="SD3: classifier-free guidance scale (on above 1); FLUX-dev: the embedded guidance.",
    )


def true_cfg_field() -> Any:
    """FLUX's true CFG, which runs the negative prompt as a second pass."""
    return Field(
        1.0,
        ge=1.0,
        le=100.0,
        json_schema_extra={"step": 0.1},
        description="FLUX only: true CFG with the negative prompt when above 1 (two passes).",
    )

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

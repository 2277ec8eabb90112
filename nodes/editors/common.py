"""What the editor nodes share: the prompts an edit compares, their common inputs and checks, and the
per-model defaults that a blank param takes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

from nodes.models.base import FlowModel
from nodes.models.components import Conditioning, Latent
from nodes.registry import Input, NodeParams, Output
from nodes.sampling.sampler import require_family, require_negative_for_cfg
from nodes.types import SocketType

Defaults = TypeVar("Defaults")


@dataclass(frozen=True)
class EditPrompts:
    """The conditionings an edit compares; `negative` is SD3's CFG negative (unused by FLUX)."""

    source: Conditioning
    target: Conditioning
    negative: Conditioning | None = None


EDIT_INPUTS = (
    Input("model", SocketType.FLOW_MODEL),
    Input("source_latent", SocketType.LATENT, "The image to edit, encoded (VAE Encode)"),
    Input("source", SocketType.CONDITIONING, "A prompt that describes the source image"),
    Input("target", SocketType.CONDITIONING, "The same prompt with the edit made"),
    Input("negative", SocketType.CONDITIONING, "SD3's CFG negative (TextEncode's negative output)", optional=True),
    Input("sigmas", SocketType.SIGMAS, "The schedule: its step count is T"),
)
EDITED_OUT = Output("latent", SocketType.LATENT, "The edited latent")


def per_model(values: Mapping[str, Any]) -> str:
    """'SD3 a, FLUX b, embedded c': the defaults a blank field takes, for a param's description."""
    return ", ".join(
        f"{'embedded' if key == 'embedded' else key.upper()} {value if isinstance(value, str) else format(value, 'g')}"
        for key, value in values.items()
    )


def per_model_defaults(table: Mapping[str, Any], attribute: str) -> str:
    """`per_model` of one attribute across an editor's table of per-model default rows."""
    return per_model({key: getattr(row, attribute) for key, row in table.items()})


def model_defaults(table: Mapping[str, Defaults], model: FlowModel, params: NodeParams) -> Defaults:
    """The model's row of an editor's defaults, with every field the params set (not blank) in its place.

    A row's fields are named as the params they fill in, so one lookup serves every editor."""
    row = table[model.defaults_key]
    given = {
        f.name: getattr(params, f.name)
        for f in fields(row)  # type: ignore[arg-type]
        if getattr(params, f.name, None) is not None
    }
    return replace(row, **given)  # type: ignore[type-var]


def check_edit_inputs(
    model: FlowModel, source_latent: Latent, prompts: EditPrompts, src_guidance: float, tar_guidance: float
) -> None:
    """Family agreement, and SD3's CFG needing a negative (without one the guidance would silently do nothing)."""
    require_family(
        model, source_latent=source_latent, source=prompts.source, target=prompts.target, negative=prompts.negative
    )
    require_negative_for_cfg(model, prompts.negative, max(src_guidance, tar_guidance))

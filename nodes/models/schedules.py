"""Noise levels from diffusers' own `FlowMatchEulerDiscreteScheduler`: the one place σ values are computed
(exact by construction), for a model's default schedule and for the schedule nodes of nodes.sampling."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler


def flux_mu(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """The resolution-dependent shift of FluxPipeline (its `calculate_shift`): linear in the packed token count.

    Written out rather than imported: importing it would load the whole FLUX pipeline module and its
    transformers dependencies just to list the nodes."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    intercept = base_shift - slope * base_seq_len
    return image_seq_len * slope + intercept


def euler_scheduler_sigmas(
    config: Mapping[str, Any], steps: int, *, mu: float | None = None, spaced_by_pipeline: bool = False
) -> torch.Tensor:
    """`FlowMatchEulerDiscreteScheduler.from_config(config).set_timesteps(...).sigmas`: T+1 float32 values on the CPU.

    `spaced_by_pipeline`: pass sigmas=linspace(1, 1/T, T) as FluxPipeline does, instead of letting the
    scheduler space T steps over its own training range."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(dict(config))
    if spaced_by_pipeline:
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    else:
        scheduler.set_timesteps(steps, mu=mu)
    return scheduler.sigmas.to(torch.float32).cpu()


def _config_mu(config: Mapping[str, Any], image_seq_len: int) -> float:
    return flux_mu(
        image_seq_len,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )


def pipeline_sigmas(config: Mapping[str, Any], steps: int, image_seq_len: int, *, flux_style: bool) -> torch.Tensor:
    """T+1 sigmas as the family pipeline sets them: SD3 lets the scheduler space them (mu only when the
    config shifts dynamically); FLUX passes linspace(1, 1/T, T) and always a resolution-dependent mu."""
    if flux_style:
        return euler_scheduler_sigmas(config, steps, mu=_config_mu(config, image_seq_len), spaced_by_pipeline=True)
    if config.get("use_dynamic_shifting"):
        return euler_scheduler_sigmas(config, steps, mu=_config_mu(config, image_seq_len))
    return euler_scheduler_sigmas(config, steps)

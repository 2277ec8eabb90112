"""A model's default schedule, computed by the model's own diffusers scheduler config (exact by construction)."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift


def _mu(config: dict, image_seq_len: int) -> float:
    return calculate_shift(image_seq_len, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                           config.get("base_shift", 0.5), config.get("max_shift", 1.15))


def pipeline_sigmas(config: dict, steps: int, image_seq_len: int, *, flux_style: bool) -> torch.Tensor:
    """T+1 sigmas as the family pipeline sets them: SD3 lets the scheduler space them (mu only when the
    config shifts dynamically); FLUX passes linspace(1, 1/T, T) and always a resolution-dependent mu."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    if flux_style:
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=_mu(config, image_seq_len))
    elif config.get("use_dynamic_shifting"):
        scheduler.set_timesteps(steps, mu=_mu(config, image_seq_len))
    else:
        scheduler.set_timesteps(steps)
    return scheduler.sigmas.to(torch.float32).cpu()

"""Stable Diffusion 3 / 3.5 family adapter (also the embedded model, which is a small SD3).

Mirrors `StableDiffusion3Pipeline` exactly: timestep = σ·1000 (float32), CFG as `[uncond, cond]` in one
forward call and v = v_u + g·(v_c − v_u) only when g > 1, prompts through the pipeline's own
`encode_prompt` with the model's own `max_sequence_length`.
"""

from __future__ import annotations

import torch

from nodes.models.base import Conditioning, PipelineFlowModel
from nodes.models.schedules import pipeline_sigmas


class SD3Model(PipelineFlowModel):
    family = "sd3"

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning,
                guidance: float | None = None) -> torch.Tensor:
        timestep = (sigma * 1000).to(self.device).expand(x.shape[0])
        return self.transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=cond.prompt_embeds,
                                pooled_projections=cond.pooled, return_dict=False)[0]

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, positive: Conditioning,
                 negative: Conditioning | None = None, guidance: float = 1.0, true_cfg: float = 1.0) -> torch.Tensor:
        batch = x.shape[0]
        positive = positive.repeat_to(batch)
        if guidance <= 1 or negative is None:
            return self.predict(x, sigma, positive)
        both = Conditioning.cat([negative.repeat_to(batch), positive])
        v_uncond, v_cond = self.predict(torch.cat([x, x]), sigma, both).chunk(2)
        return v_uncond + guidance * (v_cond - v_uncond)

    def default_sigmas(self, steps: int, height: int, width: int) -> torch.Tensor:
        patch = int(self.transformer.config.patch_size)
        _, _, h, w = self.latent_shape(1, height, width)
        return pipeline_sigmas(self.scheduler_config, steps, (h // patch) * (w // patch), flux_style=False)

"""Stable Diffusion 3 / 3.5 family adapter (also the embedded model, which is a small SD3).

Mirrors `StableDiffusion3Pipeline` exactly: timestep = σ·1000 (float32), CFG as `[uncond, cond]` in one
forward call and v = v_u + g·(v_c − v_u) only when g > 1, prompts through the pipeline's own
`encode_prompt` with the model's own `max_sequence_length`.
"""

from __future__ import annotations

import torch

from nodes.models.base import PipelineFlowModel, VelocityQuery
from nodes.models.components import Conditioning
from nodes.models.schedules import pipeline_sigmas


class SD3Model(PipelineFlowModel):
    family = "sd3"

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    def predict(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning, guidance: float | None = None
    ) -> torch.Tensor:
        timestep = (sigma * 1000).to(self.device).expand(x.shape[0])
        return self.transformer(
            hidden_states=x,
            timestep=timestep,
            encoder_hidden_states=cond.prompt_embeds,
            pooled_projections=cond.pooled,
            return_dict=False,
        )[0]

    def velocity(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        positive: Conditioning,
        negative: Conditioning | None = None,
        guidance: float = 1.0,
        true_cfg: float = 1.0,
    ) -> torch.Tensor:
        return self.batched_velocities(sigma, [VelocityQuery(x, positive, negative, guidance)])[0]

    def batched_velocities(self, sigma: torch.Tensor, queries: list[VelocityQuery]) -> list[torch.Tensor]:
        rows: list[torch.Tensor] = []
        conds: list[Conditioning] = []
        for query in queries:
            batch = query.x.shape[0]
            if query.guidance > 1 and query.negative is not None:
                rows += [query.x, query.x]
                conds += [query.negative.repeat_to(batch), query.positive.repeat_to(batch)]
            else:
                rows.append(query.x)
                conds.append(query.positive.repeat_to(batch))
        predicted = self.predict(torch.cat(rows), sigma, Conditioning.cat(conds))
        results, start = [], 0
        for query in queries:
            batch = query.x.shape[0]
            if query.guidance > 1 and query.negative is not None:
                v_uncond, v_cond = predicted[start : start + batch], predicted[start + batch : start + 2 * batch]
                results.append(v_uncond + query.guidance * (v_cond - v_uncond))
                start += 2 * batch
            else:
                results.append(predicted[start : start + batch])
                start += batch
        return results

    def default_sigmas(self, steps: int, height: int, width: int) -> torch.Tensor:
        patch = int(self.transformer.config.patch_size)
        _, _, h, w = self.latent_shape(1, height, width)
        return pipeline_sigmas(self.scheduler_config, steps, (h // patch) * (w // patch), flux_style=False)

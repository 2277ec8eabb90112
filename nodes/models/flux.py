"""FLUX.1 family adapter (dev: guidance embedding; schnell: none), latents packed inside.

Mirrors `FluxPipeline` exactly: the unpacked [B, 16, h, w] latent is packed into 2×2 patches with
diffusers' own helpers, image ids index the (h/2)×(w/2) grid, the transformer takes σ (as
`(σ·1000).to(dtype)/1000`) and the guidance embedding; true CFG is a second call when asked for.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor

from nodes.models.base import PipelineFlowModel, VelocityQuery
from nodes.models.components import Conditioning
from nodes.models.schedules import pipeline_sigmas


class FluxModel(PipelineFlowModel):
    family = "flux"

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels) // 4

    @property
    def guidance_embeds(self) -> bool:
        return bool(self.transformer.config.guidance_embeds)

    def latent_shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        factor = self.vae_scale_factor * 2  # packing needs an even latent grid
        return (batch, self.latent_channels, 2 * (height // factor), 2 * (width // factor))

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, h, w = x.shape
        return self.pipe._pack_latents(x, batch, channels, h, w)  # type: ignore[attr-defined]

    def unpack(self, packed: torch.Tensor, h: int, w: int) -> torch.Tensor:
        factor = self.vae_scale_factor
        return self.pipe._unpack_latents(packed, h * factor, w * factor, factor)  # type: ignore[attr-defined]

    def predict(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Conditioning, guidance: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """As `FlowModel.predict`; `guidance` may also be one value per row (a batch mixing several)."""
        batch, _, h, w = x.shape
        img_ids = self.pipe._prepare_latent_image_ids(batch, h // 2, w // 2, self.device, x.dtype)  # type: ignore[attr-defined]
        timestep = (sigma * 1000).to(self.device).expand(batch).to(x.dtype)
        embedded = None
        if self.guidance_embeds:
            if isinstance(guidance, torch.Tensor):
                embedded = guidance.to(device=self.device, dtype=torch.float32)
            else:
                embedded = torch.full(
                    [1], 3.5 if guidance is None else guidance, device=self.device, dtype=torch.float32
                ).expand(batch)
        packed = self.transformer(
            hidden_states=self.pack(x),
            timestep=timestep / 1000,
            guidance=embedded,
            pooled_projections=cond.pooled,
            encoder_hidden_states=cond.prompt_embeds,
            txt_ids=cond.extra["txt_ids"],
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return self.unpack(packed, h, w)

    def velocity(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        positive: Conditioning,
        negative: Conditioning | None = None,
        guidance: float = 3.5,
        true_cfg: float = 1.0,
    ) -> torch.Tensor:
        batch = x.shape[0]
        v = self.predict(x, sigma, positive.repeat_to(batch), guidance)
        if true_cfg > 1 and negative is not None:
            v_negative = self.predict(x, sigma, negative.repeat_to(batch), guidance)
            v = v_negative + true_cfg * (v - v_negative)
        return v

    def batched_velocities(self, sigma: torch.Tensor, queries: list[VelocityQuery]) -> list[torch.Tensor]:
        rows: list[torch.Tensor] = []
        conds: list[Conditioning] = []
        guidance: list[float] = []
        for query in queries:
            batch = query.x.shape[0]
            parts = [query.positive]
            if query.true_cfg > 1 and query.negative is not None:
                parts.append(query.negative)
            for cond in parts:
                rows.append(query.x)
                conds.append(cond.repeat_to(batch))
                guidance += [query.guidance] * batch
        predicted = self.predict(torch.cat(rows), sigma, Conditioning.cat(conds), torch.tensor(guidance))
        results, start = [], 0
        for query in queries:
            batch = query.x.shape[0]
            v = predicted[start : start + batch]
            start += batch
            if query.true_cfg > 1 and query.negative is not None:
                v_negative = predicted[start : start + batch]
                start += batch
                v = v_negative + query.true_cfg * (v - v_negative)
            results.append(v)
        return results

    def noise_like(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        _, _, h, w = x.shape
        packed = self.pack(x)
        noise = randn_tensor(tuple(packed.shape), generator=generator, device=x.device, dtype=x.dtype)
        return self.unpack(noise, h, w)

    def default_sigmas(self, steps: int, height: int, width: int) -> torch.Tensor:
        _, _, h, w = self.latent_shape(1, height, width)
        return pipeline_sigmas(self.scheduler_config, steps, (h // 2) * (w // 2), flux_style=True)

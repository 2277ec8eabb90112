"""Mask nodes: boxes, masks from an image's channels or from the shape it shows, inverting, growing and feathering.

MASK values are float32 [B, H, W] in [0, 1] at pixel resolution, 1 = selected (e.g. the region an editor
changes or fills).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from nodes.degrade import gaussian_blur
from nodes.embedded.segment import segment
from nodes.fields import MAX_SIDE
from nodes.limits import pixel_problems
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.types import SocketType

MASK_OUT = Output("mask", SocketType.MASK)
# Luminance weights of ITU-R BT.601, as PIL's convert("L") (the reference editors read masks that way).
LUMA = (0.299, 0.587, 0.114)


def box_mask(height: int, width: int, x: int, y: int, box_width: int, box_height: int) -> torch.Tensor:
    """[height, width]: 1 inside the box whose top-left corner is (x, y), 0 elsewhere."""
    mask = torch.zeros(height, width)
    mask[y : y + box_height, x : x + box_width] = 1.0
    return mask


@node(
    "BoxMask",
    category="masks",
    inputs=[Input("image", SocketType.IMAGE, "Take the mask's size and batch from this image", optional=True)],
    outputs=[MASK_OUT],
)
class BoxMask(Node):
    """A rectangle: 1 inside, 0 outside, on an image's canvas or one of a given size."""

    class Params(NodeParams):
        x: int = Field(16, ge=0, le=MAX_SIDE, description="The box's left edge in pixels.")
        y: int = Field(16, ge=0, le=MAX_SIDE, description="The box's top edge in pixels.")
        width: int = Field(32, ge=1, le=MAX_SIDE, description="The box's width in pixels.")
        height: int = Field(32, ge=1, le=MAX_SIDE, description="The box's height in pixels.")
        image_width: int = Field(
            64, ge=1, le=MAX_SIDE, description="The mask's width in pixels when no image is wired."
        )
        image_height: int = Field(
            64, ge=1, le=MAX_SIDE, description="The mask's height in pixels when no image is wired."
        )

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        return pixel_problems(params.image_width, params.image_height, 1, "image_width")

    def run(self, ctx: NodeContext, params: Params, image: torch.Tensor | None = None) -> dict[str, Any]:
        batch, (height, width) = (
            (1, (params.image_height, params.image_width))
            if image is None
            else (image.shape[0], tuple(image.shape[-2:]))
        )
        if params.x + params.width > width:
            raise NodeError(f"x + width = {params.x + params.width} exceeds the image width {width}", field="width")
        if params.y + params.height > height:
            raise NodeError(
                f"y + height = {params.y + params.height} exceeds the image height {height}", field="height"
            )
        mask = box_mask(height, width, params.x, params.y, params.width, params.height)
        return {"mask": mask.expand(batch, height, width).contiguous()}


def channel_mask(images: torch.Tensor, channel: str, threshold: float | None) -> torch.Tensor:
    """[B, 3, H, W] → [B, H, W]: one channel (or the luminance), then 1 where it exceeds the threshold, if any."""
    if channel == "luminance":
        values = torch.einsum("bchw,c->bhw", images.to(torch.float32), torch.tensor(LUMA))
    else:
        values = images[:, ("red", "green", "blue").index(channel)].to(torch.float32)
    return values.clamp(0, 1) if threshold is None else (values > threshold).to(torch.float32)


@node("MaskFromImage", category="masks", inputs=[Input("image", SocketType.IMAGE)], outputs=[MASK_OUT])
class MaskFromImage(Node):
    """A mask from an image's brightness or one colour channel (e.g. a mask painted white on black)."""

    class Params(NodeParams):
        channel: Literal["luminance", "red", "green", "blue"] = Field(
            "luminance", description="What selects: the brightness, or one colour channel."
        )
        threshold: float | None = Field(
            0.5,
            ge=0.0,
            le=1.0,
            json_schema_extra={"step": 0.05},
            description=(
                "Pixels above this are selected (1), the rest not (0). Blank: keep the values as a soft mask."
            ),
        )

    def run(self, ctx: NodeContext, params: Params, image: torch.Tensor) -> dict[str, Any]:
        return {"mask": channel_mask(image, params.channel, params.threshold)}


@node("ObjectMask", category="masks", inputs=[Input("image", SocketType.IMAGE, "A shape scene")], outputs=[MASK_OUT])
class ObjectMask(Node):
    """The drawn object of a shape scene (one shape on a plain background), found by the shape analyzer;
    empty where no object is found."""

    class Params(NodeParams):
        pass

    def run(self, ctx: NodeContext, params: Params, image: torch.Tensor) -> dict[str, Any]:
        masks = np.stack([segment(picture).mask for picture in image])
        return {"mask": torch.from_numpy(masks).to(torch.float32)}


@node("InvertMask", category="masks", inputs=[Input("mask", SocketType.MASK)], outputs=[MASK_OUT])
class InvertMask(Node):
    """Swap selected and unselected: 1 − mask."""

    class Params(NodeParams):
        pass

    def run(self, ctx: NodeContext, params: Params, mask: torch.Tensor) -> dict[str, Any]:
        return {"mask": 1.0 - mask}


def grow(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate [B, H, W] by `pixels` (a square neighbourhood; soft values take their neighbourhood's maximum),
    or erode when negative."""
    if pixels == 0:
        return mask
    size = 2 * abs(pixels) + 1
    flipped = mask if pixels > 0 else 1.0 - mask
    dilated = F.max_pool2d(flipped[:, None], size, stride=1, padding=abs(pixels))[:, 0]
    return dilated if pixels > 0 else 1.0 - dilated


def feather(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Soften [B, H, W]'s edges over `radius` pixels: a Gaussian with σ = radius/2, cut off at the radius."""
    if radius == 0:
        return mask
    return gaussian_blur(mask[:, None], 2 * radius + 1, radius / 2)[:, 0].clamp(0, 1)


@node("GrowMask", category="masks", inputs=[Input("mask", SocketType.MASK)], outputs=[MASK_OUT])
class GrowMask(Node):
    """Grow or shrink a mask by some pixels, then optionally feather its edge."""

    class Params(NodeParams):
        grow: int = Field(
            2,
            ge=-256,
            le=256,
            description=(
                "Pixels to grow the selection by on every side (negative shrinks it): growing covers soft edges."
            ),
        )
        blur: int = Field(0, ge=0, le=256, description="Feather the edge over this many pixels (0: a hard edge).")

    def run(self, ctx: NodeContext, params: Params, mask: torch.Tensor) -> dict[str, Any]:
        if mask.ndim != 3:
            raise NodeError(f"expected a mask [batch, height, width], got shape {tuple(mask.shape)}", field="mask")
        return {"mask": feather(grow(mask.to(torch.float32), params.grow), params.blur)}

"""Degradation operators A for inverse problems (downscaling, Gaussian blur, a blanked box), their params,
and the DegradeImage node that makes an observation y = A(x) from a clean image.

FlowChef restores such observations (nodes.editors.flowchef); the blur also feathers masks (nodes.masks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from nodes.fields import MAX_SIDE
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.types import SocketType

OperatorName = Literal["super_resolution", "gaussian_deblur", "box_inpaint"]


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """The 1-D Gaussian taps of an odd-sized kernel, normalised to sum to 1 (the 2-D kernel is their outer product)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"the kernel size must be odd and positive, got {size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    taps = torch.exp(-offsets.square() / (2 * sigma**2))
    return taps / taps.sum()


def gaussian_blur(images: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Blur [B, C, H, W] with a separable Gaussian; edges repeat the border pixels, so a flat image stays flat."""
    taps = gaussian_kernel(size, sigma).to(images.device, images.dtype)
    channels, pad = images.shape[1], size // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    rows = F.conv2d(padded, taps.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)
    return F.conv2d(rows, taps.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)


def downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """The super-resolution operator: average each factor × factor block (a remainder at the edge is dropped)."""
    return F.avg_pool2d(images, factor)


def upsample_nearest(images: torch.Tensor, factor: int) -> torch.Tensor:
    """A low-resolution image blown up by repeating pixels: how the measurement looks at the clean size."""
    return F.interpolate(images, scale_factor=factor, mode="nearest")


def centre_box(height: int, width: int, size: int) -> torch.Tensor:
    """[height, width] float: 1 in the centred size × size square (clipped to the image), 0 elsewhere."""
    box = torch.zeros(height, width)
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    box[top : top + size, left : left + size] = 1.0
    return box


@dataclass(frozen=True)
class Degradation:
    """A measurement operator A: what an observation y = A(x) keeps of a clean image x ([B, 3, H, W] in [0, 1])."""

    operator: OperatorName
    factor: int = 4
    blur_kernel: int = 11
    blur_sigma: float = 1.0
    box_size: int = 24

    @property
    def scale(self) -> int:
        """Clean pixels per measured pixel along each side."""
        return self.factor if self.operator == "super_resolution" else 1

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        if self.operator == "super_resolution":
            return downsample(images, self.factor)
        if self.operator == "gaussian_deblur":
            return gaussian_blur(images, self.blur_kernel, self.blur_sigma)
        box = centre_box(images.shape[-2], images.shape[-1], self.box_size).to(images.device, images.dtype)
        return images * (1.0 - box)

    def view(self, measurement: torch.Tensor) -> torch.Tensor:
        """The measurement at the clean image's scale, to look at beside it."""
        return upsample_nearest(measurement, self.factor) if self.operator == "super_resolution" else measurement


# ---- params and the node ------------------------------------------------------------------------------------


def operator_field() -> Any:
    return Field(
        "super_resolution",
        description=(
            "The degradation: super_resolution (a downscaled image), gaussian_deblur (a blurred one) or box_inpaint "
            "(a centre box blanked out)."
        ),
    )


def factor_field() -> Any:
    return Field(4, description="Super-resolution: how many times smaller the low-resolution image is per side.")


def blur_kernel_field() -> Any:
    return Field(
        11,
        ge=1,
        le=101,
        json_schema_extra={"step": 2},
        description="Deblur: the blur's kernel width in pixels (odd); wider reaches further.",
    )


def blur_sigma_field() -> Any:
    return Field(
        1.0,
        gt=0.0,
        le=50.0,
        json_schema_extra={"step": 0.1},
        description="Deblur: the blur's strength (Gaussian σ in pixels); higher is blurrier.",
    )


def box_size_field() -> Any:
    return Field(
        24,
        ge=1,
        le=MAX_SIDE,
        description=(
            "Box inpainting: the side in pixels of the centred square that is missing (unless a mask is wired)."
        ),
    )


def blur_kernel_problems(operator: str, blur_kernel: int) -> list[tuple[str, str]]:
    if operator == "gaussian_deblur" and blur_kernel % 2 == 0:
        return [("blur_kernel", f"the blur kernel must be odd, got {blur_kernel}")]
    return []


@node(
    "DegradeImage",
    category="image",
    inputs=[Input("image", SocketType.IMAGE, "The clean image")],
    outputs=[
        Output("image", SocketType.IMAGE, "The measurement (super-resolution: the low-resolution image)"),
        Output("view", SocketType.IMAGE, "The measurement at the clean image's scale, to compare by eye"),
    ],
)
class DegradeImage(Node):
    """Degrade a clean image as FlowChef's inverse problems model it (downscale, blur, or blank a box): the
    observation to restore."""

    class Params(NodeParams):
        operator: OperatorName = operator_field()
        factor: Literal[2, 4] = factor_field()
        blur_kernel: int = blur_kernel_field()
        blur_sigma: float = blur_sigma_field()
        box_size: int = box_size_field()

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        return blur_kernel_problems(params.operator, params.blur_kernel)

    def run(self, ctx: NodeContext, params: Params, image: torch.Tensor) -> dict[str, Any]:
        for field, message in self.check(params):
            raise NodeError(message, field=field)
        height, width = image.shape[-2:]
        if params.operator == "super_resolution" and min(height, width) < params.factor:
            raise NodeError(
                f"the image is {width}×{height} px, too small to shrink {params.factor} times", field="factor"
            )
        degradation = Degradation(
            params.operator, params.factor, params.blur_kernel, params.blur_sigma, params.box_size
        )
        measurement = degradation.apply(image)
        return {"image": measurement, "view": degradation.view(measurement)}

"""Image nodes: load, save, preview, resize, crop, and a captioned grid; plus tensor <-> PNG helpers.

IMAGE values are float32 tensors [B, 3, H, W] in [0, 1]; MASK values are float32 [B, H, W] in [0, 1].
Conversion to 8 bits rounds exactly as diffusers' `numpy_to_pil`, so images match the reference pipelines.
"""

from __future__ import annotations

import hashlib
import io
import math
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, ImageOps, PngImagePlugin, UnidentifiedImageError
from pydantic import AfterValidator, Field

from nodes.fields import MAX_SIDE
from nodes.limits import image_size_problem, open_image_header, pixel_problems
from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.types import SocketType

MIN_CAPTIONED_CELL = 112


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [0, 1] → 8-bit RGB PIL images (round half to even, as diffusers does)."""
    array = images.detach().to("cpu", torch.float32).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray((a * 255).round().astype("uint8")) for a in array]


def from_pil(images: list[Image.Image]) -> torch.Tensor:
    """PIL images of one size → [B, 3, H, W] float32 in [0, 1]."""
    arrays = [np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0 for img in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def encode_png(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=4)
    return buffer.getvalue()


def preview_png(images: torch.Tensor, max_side: int = 256) -> bytes:
    """A PNG of the first image of a batch for live previews, at its own size unless its longer side exceeds
    `max_side` (then shrunk). Never enlarged here: the browser scales it for display, and a PNG of a few dozen
    pixels encodes in a tenth of a millisecond where a 256-px one takes ~5 ms, which a small model's whole
    sampling step costs."""
    first = to_pil(images[:1])[0]
    if max(first.size) > max_side:
        first.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return encode_png(first)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def grid_image(
    images: list[Image.Image], captions: list[str], columns: int = 0, padding: int = 4, font_size: int = 12
) -> Image.Image:
    """Lay images out row by row on a dark sheet, each with its caption underneath (wrapped to its width)."""
    if not images:
        raise ValueError("a grid needs at least one image")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    # Captions need room: tiny images (64 px) get a wider cell, with the image centred in it.
    cell_w = max(max(img.width for img in images), MIN_CAPTIONED_CELL if any(captions) else 0)
    cell_h = max(img.height for img in images)
    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(caption, font, cell_w, measure) for caption in captions]
    line_h = font_size + 3
    caption_h = max((len(lines) for lines in wrapped), default=0) * line_h
    sheet = Image.new(
        "RGB", (columns * (cell_w + padding) + padding, rows * (cell_h + caption_h + padding) + padding), (24, 24, 27)
    )
    draw = ImageDraw.Draw(sheet)
    for index, img in enumerate(images):
        row, col = divmod(index, columns)
        x = padding + col * (cell_w + padding)
        y = padding + row * (cell_h + caption_h + padding)
        sheet.paste(img.convert("RGB"), (x + (cell_w - img.width) // 2, y))
        for line_no, line in enumerate(wrapped[index] if index < len(wrapped) else []):
            draw.text((x, y + cell_h + 1 + line_no * line_h), line, fill=(230, 230, 230), font=font)
    return sheet


def _wrap(text: str, font: Any, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """Greedy word wrap to `width` pixels; a word longer than a line is broken between characters."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if draw.textlength(candidate, font=font) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = ""
        for char in word:
            if line and draw.textlength(line + char, font=font) > width:
                lines.append(line)
                line = ""
            line += char
    if line:
        lines.append(line)
    return lines


@node("EmptyImage", category="image", outputs=[Output("image", SocketType.IMAGE)])
class EmptyImage(Node):
    """A batch of images filled with one colour (a canvas to start from, or a test input)."""

    class Params(NodeParams):
        width: int = Field(512, ge=1, le=MAX_SIDE, description="Width in pixels.")
        height: int = Field(512, ge=1, le=MAX_SIDE, description="Height in pixels.")
        batch_size: int = Field(1, ge=1, le=64, description="How many images.")
        color: str = Field(
            "#000000",
            pattern=r"^#[0-9a-fA-F]{6}$",
            description="Fill colour as #rrggbb.",
            json_schema_extra={"widget": "color"},
        )

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        return pixel_problems(params.width, params.height, params.batch_size, "batch_size")

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        rgb = torch.tensor([int(params.color[i : i + 2], 16) / 255.0 for i in (1, 3, 5)], dtype=torch.float32)
        image = rgb.view(1, 3, 1, 1).expand(params.batch_size, 3, params.height, params.width).contiguous()
        return {"image": image}


def _without_nul(path: str) -> str:
    if "\0" in path:
        raise ValueError("contains a NUL character, which no file path can hold")
    return path


@node(
    "LoadImage",
    category="image",
    outputs=[Output("image", SocketType.IMAGE), Output("mask", SocketType.MASK, "1 where the image is transparent")],
)
class LoadImage(Node):
    """Load a PNG, JPEG or WebP file. Re-runs whenever the file's content changes."""

    class Params(NodeParams):
        path: Annotated[str, AfterValidator(_without_nul)] = Field(
            ...,
            min_length=1,
            max_length=4096,
            description="The image file to load.",
            json_schema_extra={"widget": "image_upload", "reads": "file"},
        )

    @classmethod
    def fingerprint(cls, params: Params, ctx: NodeContext) -> str:
        return hashlib.sha256(_read_file(ctx, params.path)).hexdigest()

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        data = _read_file(ctx, params.path)
        try:
            with open_image_header(data) as opened:
                # The header gives the size before anything is decoded: a small file can hold a huge image.
                too_large = image_size_problem(*opened.size)
                if too_large is not None:
                    raise NodeError(f"{params.path!r}: {too_large}", field="path", hint="downscale it first")
                rgba = _rgba_array(ImageOps.exif_transpose(opened))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
            raise NodeError(f"{params.path!r} is not an image this can read ({error})", field="path") from None
        tensor = torch.from_numpy(rgba)
        image = tensor[..., :3].permute(2, 0, 1).unsqueeze(0).contiguous()
        mask = (1.0 - tensor[..., 3]).unsqueeze(0)
        return {"image": image, "mask": mask}


def _rgba_array(img: Image.Image) -> np.ndarray:
    """[H, W, 4] float32 in [0, 1]; 16-bit and 32-bit greyscale (depth maps, masks) are scaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.asarray(img, dtype=np.float32) / (65535.0 if img.mode.startswith("I;16") else 4294967295.0)
        grey = np.clip(grey, 0.0, 1.0)
        return np.stack([grey, grey, grey, np.ones_like(grey)], axis=-1)
    if img.mode == "F":
        grey = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.stack([grey, grey, grey, np.ones_like(grey)], axis=-1)
    return np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0


def _read_file(ctx: NodeContext, raw: str) -> bytes:
    path = ctx.resolve_path(raw, field="path")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NodeError(f"no file at {raw!r}", field="path", hint="check the path, or upload the image") from None
    except IsADirectoryError:
        raise NodeError(f"{raw!r} is a folder, not an image file", field="path") from None
    except OSError as error:
        raise NodeError(f"cannot read {raw!r}: {error.strerror or error}", field="path") from None


def _emit_images(ctx: NodeContext, images: torch.Tensor, kind: str, prefix: str) -> None:
    text = ctx.png_text()
    for index, pil in enumerate(to_pil(images)):
        ctx.emit_output(
            kind,
            encode_png(pil, text),
            "png",
            {"width": pil.width, "height": pil.height, "index": index, "filename_prefix": prefix},
        )


@node("SaveImage", category="image", output_node=True, inputs=[Input("images", SocketType.IMAGE, "The images to save")])
class SaveImage(Node):
    """Save images as PNG files that carry the workflow and the run record (drop one back to reopen it)."""

    class Params(NodeParams):
        filename_prefix: str = Field(
            "flowcanvas",
            min_length=1,
            max_length=80,
            pattern=r"^[\w\-. ]+$",
            description="Start of the saved files' names.",
        )

    def run(self, ctx: NodeContext, params: Params, images: torch.Tensor) -> dict[str, Any]:
        _emit_images(ctx, images, "image", params.filename_prefix)
        return {}


@node(
    "PreviewImage", category="image", output_node=True, inputs=[Input("images", SocketType.IMAGE, "The images to show")]
)
class PreviewImage(Node):
    """Show images on the canvas and in the run's outputs without exporting them as files."""

    class Params(NodeParams):
        pass

    def run(self, ctx: NodeContext, params: Params, images: torch.Tensor) -> dict[str, Any]:
        _emit_images(ctx, images, "preview", "preview")
        return {}


@node(
    "ResizeImage",
    category="image",
    inputs=[Input("image", SocketType.IMAGE)],
    outputs=[Output("image", SocketType.IMAGE)],
)
class ResizeImage(Node):
    """Resize images to a width and height, stretching or cropping to keep the aspect ratio."""

    class Params(NodeParams):
        width: int = Field(512, ge=1, le=MAX_SIDE, description="Width in pixels.")
        height: int = Field(512, ge=1, le=MAX_SIDE, description="Height in pixels.")
        method: Literal["nearest", "bilinear", "bicubic", "area"] = Field(
            "bicubic", description="How pixels are interpolated."
        )
        fit: Literal["stretch", "crop"] = Field(
            "stretch", description="stretch: change the aspect ratio; crop: scale to cover, then cut the centre."
        )

    @classmethod
    def check(cls, params: Params) -> list[tuple[str, str]]:
        return pixel_problems(params.width, params.height, 1, "width")

    def run(self, ctx: NodeContext, params: Params, image: torch.Tensor) -> dict[str, Any]:
        # The batch is known only now: checked again before anything of the new size is made.
        for field, message in pixel_problems(params.width, params.height, image.shape[0], "width"):
            raise NodeError(message, field=field)
        return {"image": resize(image, params.width, params.height, params.method, params.fit)}


def resize(image: torch.Tensor, width: int, height: int, method: str = "bicubic", fit: str = "stretch") -> torch.Tensor:
    if fit == "crop":
        _, _, h, w = image.shape
        scale = max(width / w, height / h)
        scaled_w, scaled_h = max(width, round(w * scale)), max(height, round(h * scale))
        image = resize(image, scaled_w, scaled_h, method, "stretch")
        top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
        return image[:, :, top : top + height, left : left + width].contiguous()
    smooth = method in ("bilinear", "bicubic")
    out = F.interpolate(
        image, size=(height, width), mode=method, **({"align_corners": False, "antialias": True} if smooth else {})
    )
    return out.clamp(0, 1)


@node(
    "CropImage",
    category="image",
    inputs=[Input("image", SocketType.IMAGE)],
    outputs=[Output("image", SocketType.IMAGE)],
)
class CropImage(Node):
    """Cut a rectangle out of images (the rectangle must lie inside them)."""

    class Params(NodeParams):
        x: int = Field(0, ge=0, le=MAX_SIDE, description="Left edge in pixels.")
        y: int = Field(0, ge=0, le=MAX_SIDE, description="Top edge in pixels.")
        width: int = Field(512, ge=1, le=MAX_SIDE, description="Width in pixels.")
        height: int = Field(512, ge=1, le=MAX_SIDE, description="Height in pixels.")

    def run(self, ctx: NodeContext, params: Params, image: torch.Tensor) -> dict[str, Any]:
        _, _, h, w = image.shape
        if params.x + params.width > w:
            raise NodeError(f"x + width = {params.x + params.width} exceeds the image width {w}", field="width")
        if params.y + params.height > h:
            raise NodeError(f"y + height = {params.y + params.height} exceeds the image height {h}", field="height")
        return {
            "image": image[:, :, params.y : params.y + params.height, params.x : params.x + params.width].contiguous()
        }


@node(
    "ImageGrid",
    category="image",
    inputs=[Input("images", SocketType.IMAGE, "Images to lay out, in link order (batches are unrolled)", multi=True)],
    outputs=[Output("image", SocketType.IMAGE)],
)
class ImageGrid(Node):
    """Lay several images out in a grid with a caption under each, e.g. to compare solvers or a sweep."""

    class Params(NodeParams):
        captions: str = Field(
            "", description="One caption per line, in image order.", json_schema_extra={"widget": "multiline"}
        )
        columns: int = Field(0, ge=0, le=64, description="Images per row; 0 picks a near-square layout.")
        padding: int = Field(4, ge=0, le=256, description="Gap between cells in pixels.")

    def run(self, ctx: NodeContext, params: Params, images: list[torch.Tensor]) -> dict[str, Any]:
        pil = [img for batch in images for img in to_pil(batch)]
        captions = params.captions.splitlines()
        sheet = grid_image(pil, captions, params.columns, params.padding)
        return {"image": from_pil([sheet])}

"""Image nodes and the tensor <-> PNG helpers: exact 8-bit round trips, file loading, resizing, cropping, grids."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.image import (
    MIN_CAPTIONED_CELL,
    CropImage,
    EmptyImage,
    ImageGrid,
    LoadImage,
    ResizeImage,
    encode_png,
    from_pil,
    grid_image,
    to_pil,
)
from nodes.registry import NodeContext, NodeError
from pipelines.executor import Executor
from pipelines.plan import build_plan
from pipelines.workflow import load_workflow
from tests.conftest import link, workflow_dict


def ctx(node_type: str = "Test", file_roots: tuple[Path, ...] | None = None) -> NodeContext:
    return NodeContext(node_id="n", node_type=node_type, device="cpu", file_roots=file_roots)


def columns_image(colours: list[tuple[int, int, int]], column_width: int, height: int) -> torch.Tensor:
    """[1, 3, height, len(colours) * column_width]: vertical bands of the given 8-bit colours."""
    bands = [
        torch.tensor(c, dtype=torch.float32).div(255).view(3, 1, 1).expand(3, height, column_width) for c in colours
    ]
    return torch.cat(bands, dim=2).unsqueeze(0).contiguous()


def pixel_set(image: torch.Tensor) -> set[tuple[int, ...]]:
    """The distinct 8-bit colours of the first image of a batch."""
    return {tuple(int(v) for v in p) for p in np.asarray(to_pil(image)[0]).reshape(-1, 3)}


RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# ---------------------------------------------------------------- tensor <-> PIL


def test_every_8_bit_value_survives_from_pil_then_to_pil_exactly():
    values = np.arange(256, dtype=np.uint8)
    array = np.stack([values.reshape(16, 16), values[::-1].reshape(16, 16), (values * 7).reshape(16, 16)], axis=-1)
    tensor = from_pil([Image.fromarray(array)])
    assert tensor.shape == (1, 3, 16, 16) and tensor.dtype == torch.float32
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    assert np.array_equal(np.asarray(to_pil(tensor)[0]), array)


def test_to_pil_rounds_like_diffusers_numpy_to_pil():
    samples = torch.tensor([0.0, 0.5, 0.999, 0.001, 2.5 / 255, 3.5 / 255, 1 / 3, 1.0], dtype=torch.float32)
    image = samples.view(1, 1, 1, -1).expand(1, 3, 1, samples.numel())
    got = np.asarray(to_pil(image)[0])[0, :, 0]
    reference = (samples.numpy() * 255).round().astype("uint8")  # diffusers' numpy_to_pil
    assert got.tolist() == reference.tolist()
    assert got[1] == 128 and got[2] == 255  # rounds half to even and does not truncate


def test_to_pil_clamps_out_of_range_values():
    image = torch.tensor([-0.5, 1.5, 0.0]).view(1, 3, 1, 1)
    assert to_pil(image)[0].getpixel((0, 0)) == (0, 255, 0)


def test_to_pil_gives_one_image_per_batch_item():
    batch = torch.zeros(3, 3, 4, 5)
    batch[1] = 1.0
    images = to_pil(batch)
    assert [img.size for img in images] == [(5, 4)] * 3
    assert images[1].getpixel((0, 0)) == (255, 255, 255) and images[2].getpixel((0, 0)) == (0, 0, 0)


def test_encode_png_keeps_text_chunks_and_pixels():
    image = Image.new("RGB", (3, 2), (10, 20, 30))
    data = encode_png(image, {"flowcanvas_workflow": '{"a": "é"}', "other": "x"})
    assert data.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(data)) as png:
        png.load()
        assert png.text == {"flowcanvas_workflow": '{"a": "é"}', "other": "x"}
        assert png.convert("RGB").getpixel((2, 1)) == (10, 20, 30)


# ---------------------------------------------------------------- EmptyImage


def test_empty_image_fills_the_batch_with_the_colour():
    image = EmptyImage().run(ctx(), EmptyImage.Params(width=5, height=3, batch_size=2, color="#336699"))["image"]
    assert image.shape == (2, 3, 3, 5)
    assert torch.allclose(image[1, :, 2, 4], torch.tensor([0x33, 0x66, 0x99]) / 255.0)
    assert to_pil(image)[0].getpixel((0, 0)) == (0x33, 0x66, 0x99)


@pytest.mark.parametrize("color", ["336699", "#33669", "#gg0000", "red"])
def test_empty_image_refuses_malformed_colours(color: str):
    with pytest.raises(ValueError):
        EmptyImage.Params(color=color)


# ---------------------------------------------------------------- LoadImage


def write_rgba_png(path: Path) -> None:
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red
    rgba[..., 3] = [[255, 0, 51], [255, 255, 255]]  # alpha: opaque, transparent, 20 %
    Image.fromarray(rgba, "RGBA").save(path)


def test_load_image_gives_an_image_batch_of_one_and_a_mask_of_one_minus_alpha(tmp_path: Path):
    write_rgba_png(tmp_path / "in.png")
    out = LoadImage().run(ctx("LoadImage"), LoadImage.Params(path=str(tmp_path / "in.png")))
    image, mask = out["image"], out["mask"]
    assert image.shape == (1, 3, 2, 3) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert torch.equal(image[0, 0], torch.ones(2, 3)) and torch.equal(image[0, 1:], torch.zeros(2, 2, 3))
    assert mask.shape == (1, 2, 3)
    assert torch.allclose(mask[0], torch.tensor([[0.0, 1.0, 0.8], [0.0, 0.0, 0.0]]))


def test_load_image_of_an_opaque_image_gives_an_empty_mask(tmp_path: Path):
    Image.new("RGB", (4, 2), (0, 128, 255)).save(tmp_path / "in.jpg", quality=100)
    out = LoadImage().run(ctx("LoadImage"), LoadImage.Params(path=str(tmp_path / "in.jpg")))
    assert out["image"].shape == (1, 3, 2, 4)
    assert torch.equal(out["mask"], torch.zeros(1, 2, 4))


def test_load_image_through_the_executor_reads_relative_to_its_file_root(tmp_path: Path):
    write_rgba_png(tmp_path / "in.png")
    document = workflow_dict(
        {
            "load": {"type": "LoadImage", "params": {"path": "in.png"}},
            "save": {"type": "SaveImage", "inputs": {"images": link("load", "image")}},
        }
    )
    result = Executor().execute(
        build_plan(load_workflow(document), file_roots=(tmp_path,)), run_id="r", file_roots=(tmp_path,)
    )
    assert result.target_outputs == {"save": {}}
    [item] = result.output_items
    assert (item.meta["width"], item.meta["height"]) == (3, 2)
    with Image.open(io.BytesIO(item.data)) as png:
        assert png.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_load_image_of_a_missing_file_names_the_path_field(tmp_path: Path):
    with pytest.raises(NodeError, match="no file") as failure:
        LoadImage().run(ctx("LoadImage"), LoadImage.Params(path=str(tmp_path / "missing.png")))
    assert failure.value.field == "path"
    assert failure.value.hint


def test_load_image_of_a_folder_or_a_non_image_names_the_path_field(tmp_path: Path):
    (tmp_path / "notes.png").write_text("not an image")
    for raw in (str(tmp_path), str(tmp_path / "notes.png")):
        with pytest.raises(NodeError) as failure:
            LoadImage().run(ctx("LoadImage"), LoadImage.Params(path=raw))
        assert failure.value.field == "path"


def test_load_image_scales_a_16_bit_greyscale_png_to_0_1(tmp_path: Path):
    Image.fromarray(np.full((2, 2), 32768, dtype=np.uint16)).save(tmp_path / "depth.png")
    image = LoadImage().run(ctx("LoadImage"), LoadImage.Params(path=str(tmp_path / "depth.png")))["image"]
    assert torch.allclose(image, torch.full((1, 3, 2, 2), 0.5), atol=0.01)


@pytest.mark.parametrize("raw", ["../secret.png", "sub/../../secret.png"])
def test_a_confined_run_refuses_relative_paths_that_leave_the_root(tmp_path: Path, raw: str):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    write_rgba_png(tmp_path / "secret.png")
    with pytest.raises(NodeError, match="outside the folders") as failure:
        LoadImage().run(ctx("LoadImage", (root,)), LoadImage.Params(path=raw))
    assert failure.value.field == "path"


def test_a_confined_run_refuses_absolute_paths_outside_the_root(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    write_rgba_png(tmp_path / "secret.png")
    with pytest.raises(NodeError, match="outside the folders") as failure:
        LoadImage().run(ctx("LoadImage", (root,)), LoadImage.Params(path=str(tmp_path / "secret.png")))
    assert failure.value.field == "path"


def test_a_confined_run_refuses_a_symlink_that_points_outside_the_root(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    write_rgba_png(tmp_path / "secret.png")
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(NodeError, match="outside the folders"):
        LoadImage().run(ctx("LoadImage", (root,)), LoadImage.Params(path="link.png"))


def test_a_confined_run_reads_files_inside_the_root_by_relative_or_absolute_path(tmp_path: Path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    write_rgba_png(root / "sub" / "in.png")
    for raw in ("sub/in.png", str(root / "sub" / "in.png")):
        out = LoadImage().run(ctx("LoadImage", (root,)), LoadImage.Params(path=raw))
        assert out["image"].shape == (1, 3, 2, 3)


# ---------------------------------------------------------------- ResizeImage


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic", "area"])
def test_stretch_resize_gives_exactly_the_requested_size(method: str):
    image = torch.rand(2, 3, 7, 5)
    out = ResizeImage().run(ctx(), ResizeImage.Params(width=11, height=4, method=method, fit="stretch"), image=image)
    assert out["image"].shape == (2, 3, 4, 11)
    assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0


@pytest.mark.parametrize(
    ("source", "target"), [((7, 5), (3, 4)), ((5, 7), (8, 3)), ((12, 4), (4, 4)), ((3, 3), (10, 6))]
)
def test_crop_resize_gives_exactly_the_requested_size(source: tuple[int, int], target: tuple[int, int]):
    image = torch.rand(1, 3, source[1], source[0])
    params = ResizeImage.Params(width=target[0], height=target[1], method="bicubic", fit="crop")
    assert ResizeImage().run(ctx(), params, image=image)["image"].shape == (1, 3, target[1], target[0])


def test_crop_resize_keeps_the_centre_of_a_wider_image():
    image = columns_image([RED, GREEN, BLUE], column_width=8, height=8)  # 24 x 8: red | green | blue
    params = ResizeImage.Params(width=4, height=4, method="nearest", fit="crop")
    out = ResizeImage().run(ctx(), params, image=image)["image"]
    assert out.shape == (1, 3, 4, 4)
    assert pixel_set(out) == {GREEN}


def test_crop_resize_keeps_the_centre_of_a_taller_image():
    wide = columns_image([RED, GREEN, BLUE], column_width=4, height=4)
    tall = wide.transpose(2, 3).contiguous()  # 4 x 12: red over green over blue
    params = ResizeImage.Params(width=4, height=4, method="nearest", fit="crop")
    out = ResizeImage().run(ctx(), params, image=tall)["image"]
    assert pixel_set(out) == {GREEN}


def test_stretch_resize_keeps_every_band():
    image = columns_image([RED, GREEN, BLUE], column_width=8, height=8)
    out = ResizeImage().run(ctx(), ResizeImage.Params(width=6, height=2, method="nearest"), image=image)["image"]
    assert [to_pil(out)[0].getpixel((x, 0)) for x in range(6)] == [RED, RED, GREEN, GREEN, BLUE, BLUE]


# ---------------------------------------------------------------- CropImage


def test_crop_cuts_the_given_rectangle():
    image = torch.arange(6 * 8, dtype=torch.float32).div(100).view(1, 1, 6, 8).expand(2, 3, 6, 8)
    out = CropImage().run(ctx(), CropImage.Params(x=2, y=1, width=3, height=4), image=image)["image"]
    assert out.shape == (2, 3, 4, 3)
    assert torch.equal(out, image[:, :, 1:5, 2:5])
    assert out.is_contiguous()


def test_crop_to_the_whole_image_is_allowed():
    image = torch.rand(1, 3, 4, 5)
    out = CropImage().run(ctx(), CropImage.Params(x=0, y=0, width=5, height=4), image=image)["image"]
    assert torch.equal(out, image)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"x": 0, "y": 0, "width": 6, "height": 4}, "width"),
        ({"x": 3, "y": 0, "width": 3, "height": 4}, "width"),
        ({"x": 0, "y": 0, "width": 5, "height": 5}, "height"),
        ({"x": 0, "y": 2, "width": 5, "height": 3}, "height"),
    ],
)
def test_crop_outside_the_image_is_a_node_error_naming_the_field(params: dict, field: str):
    with pytest.raises(NodeError, match="exceeds the image") as failure:
        CropImage().run(ctx(), CropImage.Params(**params), image=torch.rand(1, 3, 4, 5))
    assert failure.value.field == field


# ---------------------------------------------------------------- ImageGrid and grid_image


def test_image_grid_lays_out_images_in_the_given_columns():
    images = [torch.rand(1, 3, 8, 10) for _ in range(5)]
    sheet = ImageGrid().run(ctx(), ImageGrid.Params(columns=2, padding=4), images=images)["image"]
    # 2 columns x 3 rows of 10 x 8 cells, 4 px gaps and borders, no captions
    assert sheet.shape == (1, 3, 3 * (8 + 4) + 4, 2 * (10 + 4) + 4)


def test_image_grid_picks_a_near_square_layout_by_default():
    images = [torch.rand(1, 3, 8, 10) for _ in range(5)]
    sheet = ImageGrid().run(ctx(), ImageGrid.Params(padding=0), images=images)["image"]
    assert sheet.shape == (1, 3, 2 * 8, 3 * 10)  # ceil(sqrt(5)) = 3 columns, 2 rows


def test_image_grid_unrolls_batches_in_link_order():
    first = torch.zeros(3, 3, 2, 2)
    second = torch.ones(2, 3, 2, 2)
    sheet = ImageGrid().run(ctx(), ImageGrid.Params(columns=5, padding=0), images=[first, second])["image"]
    assert sheet.shape == (1, 3, 2, 10)
    row = to_pil(sheet)[0]
    assert [row.getpixel((x, 0)) for x in range(0, 10, 2)] == [(0, 0, 0)] * 3 + [(255, 255, 255)] * 2


def test_image_grid_places_each_image_in_its_cell():
    colours = [RED, GREEN, BLUE, (255, 255, 255)]
    images = [columns_image([c], 4, 4) for c in colours]
    sheet = to_pil(ImageGrid().run(ctx(), ImageGrid.Params(columns=2, padding=2), images=images)["image"])[0]
    assert sheet.size == (2 * 6 + 2, 2 * 6 + 2)
    assert [sheet.getpixel((x, y)) for y in (3, 9) for x in (3, 9)] == colours
    assert sheet.getpixel((0, 0)) == (24, 24, 27)  # the sheet's background shows in the gaps


def test_captions_widen_small_cells_and_add_a_caption_row():
    images = [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), GREEN)]
    plain = grid_image(images, [], columns=2, padding=4)
    captioned = grid_image(images, ["a", "b"], columns=2, padding=4)
    assert plain.size == (2 * 20 + 4, 16 + 8)
    assert captioned.width == 2 * (MIN_CAPTIONED_CELL + 4) + 4
    assert captioned.height > plain.height


def test_long_captions_wrap_onto_more_lines_and_make_the_sheet_taller():
    images = [Image.new("RGB", (128, 32)) for _ in range(2)]
    short = grid_image(images, ["seed=1", "seed=2"], columns=2)
    long_caption = "prompt=a very long prompt about a cat sleeping on a windowsill in the afternoon sun, seed=1"
    long = grid_image(images, [long_caption, "seed=2"], columns=2)
    assert long.width == short.width  # wrapped, not widened
    assert long.height >= short.height + 2 * 15  # at least two more caption lines (font 12 + 3 px leading)


def test_an_unbreakable_caption_is_broken_between_characters():
    images = [Image.new("RGB", (128, 32))]
    short = grid_image(images, ["x"])
    long = grid_image(images, ["x" * 200])
    assert long.width == short.width and long.height > short.height


def test_a_grid_needs_at_least_one_image():
    with pytest.raises(ValueError, match="at least one image"):
        grid_image([], [])


def test_load_image_refuses_a_huge_image_from_its_header_before_decoding(tmp_path: Path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(path, format="PNG")  # 81 Mpx in a few kilobytes
    with pytest.raises(NodeError) as error:
        LoadImage().run(ctx("LoadImage"), LoadImage.Params(path=str(path)))
    assert error.value.field == "path" and "9000×9000 px (81 Mpx), over the budget of 40 Mpx" in str(error.value)
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(small, format="PNG")
    monkeypatch.setenv("FLOWCANVAS_MAX_IMAGE_PIXELS", "5000")
    with pytest.raises(NodeError, match="over the budget of 5,000 px"):
        LoadImage().run(ctx("LoadImage"), LoadImage.Params(path=str(small)))
    monkeypatch.setenv("FLOWCANVAS_MAX_IMAGE_PIXELS", "10000")
    assert LoadImage().run(ctx("LoadImage"), LoadImage.Params(path=str(small)))["image"].shape == (1, 3, 100, 100)


@pytest.mark.parametrize(
    "node_type,size,field",
    [
        ("EmptyImage", {"width": 8192, "height": 8192, "batch_size": 2}, "batch_size"),
        ("EmptyLatent", {"width": 8192, "height": 8192, "batch_size": 2}, "batch_size"),
        ("ResizeImage", {"width": 16384, "height": 8192}, "width"),
        ("BoxMask", {"image_width": 16384, "image_height": 8192}, "image_width"),
    ],
)
def test_a_node_asking_for_more_pixels_than_the_budget_is_refused_at_validation(node_type: str, size: dict, field: str):
    from pipelines.validate import validate_workflow

    nodes = {"n": {"type": node_type, "params": size}}  # 134 Mpx each: the budget is 67
    if node_type == "EmptyLatent":
        nodes["m"] = {"type": "LoadFlowModel", "params": {"source": "embedded:shapes"}}
        nodes["n"]["inputs"] = {"model": link("m", "model")}
    if node_type == "ResizeImage":
        nodes["i"] = {"type": "EmptyImage", "params": {"width": 8, "height": 8}}
        nodes["n"]["inputs"] = {"image": link("i", "image")}
    issues = validate_workflow(load_workflow(workflow_dict(nodes)))
    found = [i for i in issues if i.node == "n"]
    assert [(i.field, i.code) for i in found] == [(field, "invalid_params")]
    assert "134 Mpx, over the budget of 67 Mpx" in found[0].message


def test_resize_checks_the_budget_again_with_the_batch_it_is_given(monkeypatch):
    monkeypatch.setenv("FLOWCANVAS_MAX_PIXELS", str(3 * 64 * 64))
    params = ResizeImage.Params(width=64, height=64)
    assert ResizeImage.check(params) == []
    assert ResizeImage().run(ctx("ResizeImage"), params, image=torch.zeros(3, 3, 8, 8))["image"].shape == (3, 3, 64, 64)
    with pytest.raises(NodeError, match=r"64×64 px × 4 is 16,384 px, over the budget of 12,288 px") as error:
        ResizeImage().run(ctx("ResizeImage"), params, image=torch.zeros(4, 3, 8, 8))
    assert error.value.field == "width"


@pytest.mark.parametrize("path", ["a\x00b.png", "x" * 5000])
def test_load_image_refuses_a_nul_or_overlong_path_at_validation(path: str):
    from pipelines.validate import validate_workflow

    issues = validate_workflow(load_workflow(workflow_dict({"load": {"type": "LoadImage", "params": {"path": path}}})))
    assert [(i.node, i.field) for i in issues if i.node == "load"] == [("load", "path")]

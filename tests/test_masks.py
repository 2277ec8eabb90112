"""Mask nodes: boxes, channel thresholds, the shape analyzer's object mask, inverting, growing and feathering."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from nodes.catalogue import get_node_class
from nodes.embedded import dataset
from nodes.embedded.dataset import Scene
from nodes.image import from_pil
from nodes.masks import BoxMask, GrowMask, InvertMask, MaskFromImage, ObjectMask
from nodes.registry import Node, NodeContext, NodeError


def run(cls: type[Node], params: dict[str, Any] | None = None, **inputs: Any) -> torch.Tensor:
    ctx = NodeContext(node_id="m", node_type=cls.type, device="cpu")
    return cls().run(ctx, cls.Params(**(params or {})), **inputs)["mask"]


def test_mask_nodes_are_registered_under_masks():
    for name in ("BoxMask", "MaskFromImage", "ObjectMask", "InvertMask", "GrowMask"):
        assert get_node_class(name).category == "masks"


def test_box_mask_on_a_canvas_of_a_given_size():
    mask = run(BoxMask, {"x": 2, "y": 1, "width": 3, "height": 2, "image_width": 6, "image_height": 4})
    expected = torch.zeros(1, 4, 6)
    expected[0, 1:3, 2:5] = 1.0
    assert mask.dtype == torch.float32 and torch.equal(mask, expected)


def test_box_mask_takes_size_and_batch_from_an_image():
    mask = run(BoxMask, {"x": 0, "y": 0, "width": 5, "height": 5}, image=torch.rand(3, 3, 10, 7))
    assert mask.shape == (3, 10, 7) and mask.sum() == 3 * 25


@pytest.mark.parametrize(
    "params,field",
    [
        ({"x": 4, "width": 3}, "width"),
        ({"x": 0, "width": 6, "y": 60, "height": 8}, "height"),
    ],
)
def test_a_box_outside_the_image_is_refused(params: dict[str, int], field: str):
    with pytest.raises(NodeError) as error:
        run(BoxMask, {"image_width": 6, "image_height": 64, **params})
    assert error.value.field == field and "exceeds" in str(error.value)


def test_mask_from_luminance_or_a_channel():
    image = torch.zeros(1, 3, 2, 2)
    image[0, :, 0, 0] = 1.0  # white
    image[0, 0, 0, 1] = 1.0  # red: luminance 0.299
    image[0, 1, 1, 0] = 1.0  # green: luminance 0.587
    assert torch.equal(
        run(MaskFromImage, {"channel": "luminance", "threshold": 0.5}, image=image),
        torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]),
    )
    assert torch.equal(
        run(MaskFromImage, {"channel": "red", "threshold": 0.5}, image=image), torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    )
    soft = run(MaskFromImage, {"channel": "luminance", "threshold": None}, image=image)
    torch.testing.assert_close(soft, torch.tensor([[[1.0, 0.299], [0.587, 0.0]]]))


@pytest.mark.parametrize(
    "scene",
    [
        Scene("circle", "red", "blue", "large", (32.0, 32.0), 20.0),
        Scene("star", "yellow", "purple", "large", (30.0, 34.0), 22.0),
        Scene("square", "green", "white", "small", (20.0, 40.0), 10.0),
    ],
    ids=lambda s: s.shape,
)
def test_object_mask_finds_the_drawn_shape(scene: Scene):
    image = from_pil([dataset.render(scene)])
    mask = run(ObjectMask, image=image)
    truth = torch.from_numpy(dataset.object_mask(scene))
    assert mask.shape == (1, 64, 64) and mask.dtype == torch.float32
    found = mask[0].bool()
    iou = (found & truth).sum() / (found | truth).sum()
    assert iou > 0.9


def test_object_mask_of_a_plain_image_is_empty():
    mask = run(ObjectMask, image=torch.full((2, 3, 32, 32), 0.5))
    assert mask.shape == (2, 32, 32) and mask.sum() == 0


def test_invert_mask():
    mask = torch.tensor([[[0.0, 0.25], [1.0, 0.5]]])
    assert torch.equal(run(InvertMask, mask=mask), torch.tensor([[[1.0, 0.75], [0.0, 0.5]]]))


def test_grow_and_shrink_by_pixels():
    point = torch.zeros(1, 9, 9)
    point[0, 4, 4] = 1.0
    grown = run(GrowMask, {"grow": 2, "blur": 0}, mask=point)
    expected = torch.zeros(1, 9, 9)
    expected[0, 2:7, 2:7] = 1.0
    assert torch.equal(grown, expected)
    assert torch.equal(run(GrowMask, {"grow": -2, "blur": 0}, mask=grown), point)
    assert torch.equal(run(GrowMask, {"grow": -3, "blur": 0}, mask=grown), torch.zeros(1, 9, 9))


def test_blur_feathers_the_edge_and_stays_in_range():
    mask = torch.zeros(1, 16, 16)
    mask[:, :, 8:] = 1.0
    soft = run(GrowMask, {"grow": 0, "blur": 3}, mask=mask)
    assert soft.min() >= 0 and soft.max() <= 1
    row = soft[0, 5]
    assert torch.all(row[1:] >= row[:-1])  # rises monotonically across the edge
    assert row[0] == 0 and row[-1] == 1 and 0 < row[7] < 0.5 < row[8] < 1
    np.testing.assert_allclose(soft.sum().item(), mask.sum().item(), rtol=1e-5)  # mass is kept


def test_grow_mask_refuses_a_tensor_that_is_not_a_mask():
    with pytest.raises(NodeError) as error:
        run(GrowMask, mask=torch.zeros(1, 1, 8, 8))
    assert error.value.field == "mask"

"""What each starter workflow must make, read back by the shapes analyzer: shared by the browser journeys
(tests/e2e) and the embedded-model tests, so a starter's promise is written once."""

from __future__ import annotations

# What the analyzer must read from each embedded starter's saved image: (background, object colour, shape); a
# background of None where the starter's prompt leaves it unsaid (the model's free choice).
# None: the output is not one shape scene (a grid, a swatch, a resized picture) or comes from a random tiny model.
PROMISES: dict[str, tuple[str | None, str, str] | None] = {
    "txt2img-embedded": ("blue", "red", "circle"),
    "edit-flowedit": ("blue", "red", "star"),
    "edit-flowopt": ("blue", "red", "star"),
    "edit-sdedit": ("blue", "red", "star"),
    "edit-splitflow": ("purple", "yellow", "star"),
    "edit-flowchef": ("blue", "yellow", "circle"),
    "inpaint-flowchef": ("blue", "yellow", "star"),
    "superres-flowchef": ("blue", "red", "circle"),
    "deblur-flowchef": ("blue", "red", "circle"),
    "scaling-embedded": (None, "blue", "square"),
    "pruned-noise-embedded": ("blue", "red", "circle"),
    "solver-comparison": None,
    "swatch": None,
    "resize-image": None,
    "txt2img-sd3": None,
    "scaling-sd3": None,
    "txt2img-flux": None,
    "img2img-sd3": None,
}


def keeps(promise: tuple[str | None, str, str], read: tuple[str | None, str | None, str | None]) -> bool:
    """Whether what the analyzer read keeps the promise (an unsaid background matches any)."""
    return all(promised is None or promised == found for promised, found in zip(promise, read, strict=True))

"""Every starter's journey in Chromium, as a newcomer takes it: first load → Library → the starter's card →
Open → Run with its bundled inputs → the output images appear on their nodes and in the outputs panel, every
wire is drawn, nothing overlaps, no page error; on the embedded model the shapes analyzer reads what the
starter promises. One test per template file: a new starter is covered by adding it (and its promise below).

Starters on SD3 or FLUX weights run on tiny stand-in models saved in the data folder (no downloads here): the
user's step is typing the model folder into the Model field, which the journey does too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.ui.screenshots import (
    EDITOR,
    VIEWPORT,
    model_sources,
    node_outputs,
    open_starter,
    run_and_wait,
    runs_here,
    starter,
    starter_names,
)
from nodes.embedded.analyzer import analyze
from tests.conftest import running_app
from tests.starter_promises import PROMISES, keeps
from tests.studio_e2e import chromium

# The tiny stand-ins run at this size and step count (a CPU would take minutes at 1024 px).
TINY_SIZE = 64
TINY_STEPS = 4
TINY_NFE_BUDGET = 40  # a search of ten 4-step samples

pytestmark = pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium")


def test_every_starter_has_a_promise():
    assert sorted(PROMISES) == starter_names(), "add the new starter's promise to PROMISES"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Path]]]:
    """One app for the module (models stay loaded between journeys), with tiny SD3 and FLUX folders in its data
    folder, where a browser workflow may load models from."""
    from tests.tiny_models import saved_tiny_clip, saved_tiny_model

    home = tmp_path_factory.mktemp("journeys") / "data"
    models = {family: saved_tiny_model(family, home / "models" / family) for family in ("sd3", "flux")}
    models["clip"] = saved_tiny_clip(home / "models" / "clip")
    with running_app(home) as (url, _storage):
        yield url, models


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as opened:
        yield opened


def type_into(page: Any, node: str, param: str, value: object) -> None:
    """Type a value into a node's widget and leave the field, as a user does."""
    field = page.locator(f'.fc-node[data-node="{node}"] .fc-param[data-name="{param}"] input').first
    field.fill(str(value))
    field.press("Enter")


def use_tiny_models(page: Any, document: dict[str, Any], models: dict[str, Path]) -> None:
    family = "flux" if any("flux" in source.lower() for source in model_sources(document)) else "sd3"
    for node, entry in document["nodes"].items():
        params = entry.get("params", {})
        if entry["type"] == "LoadFlowModel":
            type_into(page, node, "source", models[family])
        elif entry["type"] == "Int" and entry.get("title") in ("Width", "Height"):
            type_into(page, node, "value", TINY_SIZE)
        elif entry["type"] == "ClipVerifier":
            type_into(page, node, "source", models["clip"])
        elif "steps" in params:
            type_into(page, node, "steps", TINY_STEPS)
        if "nfe_budget" in params:
            type_into(page, node, "nfe_budget", TINY_NFE_BUDGET)


def wire_lengths(page: Any) -> list[float]:
    return page.evaluate(
        "() => [...document.querySelectorAll('.fc-root .fc-wires path.fc-wire:not(.fc-pending)')]"
        ".map((path) => path.getTotalLength())"
    )


def node_boxes(page: Any) -> dict[str, dict[str, float]]:
    return page.evaluate(f"() => Object.fromEntries([...{EDITOR}.nodesView.boxes()])")


def overlapping(boxes: dict[str, dict[str, float]]) -> list[tuple[str, str]]:
    items = sorted(boxes.items())
    return [
        (a, b)
        for i, (a, one) in enumerate(items)
        for b, two in items[i + 1 :]
        if one["left"] < two["right"]
        and two["left"] < one["right"]
        and one["top"] < two["bottom"]
        and two["top"] < one["bottom"]
    ]


@pytest.mark.parametrize("name", starter_names())
def test_starter_journey(name: str, app: tuple[str, dict[str, Path]], browser: Any):
    url, models = app
    document = starter(name)
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        open_starter(page, url, name)
        titles = page.locator(".fc-root .fc-node .fc-title").all_inner_texts()
        assert len(titles) == len(document["nodes"]) and len(set(titles)) == len(titles), (
            f"titles say the role: {titles}"
        )
        assert overlapping(node_boxes(page)) == []
        links = sum(
            len(value) if isinstance(value, list) else 1
            for entry in document["nodes"].values()
            for value in entry.get("inputs", {}).values()
        )
        lengths = wire_lengths(page)
        assert len(lengths) == links and min(lengths, default=100) > 5, f"wires drawn: {lengths}"

        if not runs_here(document):
            use_tiny_models(page, document, models)
        status = run_and_wait(page)
        assert status == "succeeded", page.inner_text(".fc-status")

        shown = [node for node, entry in document["nodes"].items() if entry["type"] in ("SaveImage", "PreviewImage")]
        for node in shown:
            assert page.locator(f'.fc-node[data-node="{node}"] img.fc-output-image').count() >= 1, (
                f"{node} shows its image"
            )
            panel = page.locator(f'.fc-outputs-panel figure[data-node="{node}"] img')
            assert panel.count() >= 1 and panel.first.evaluate("(image) => image.naturalWidth") > 0
        assert errors == []

        promise = PROMISES[name]
        if promise is not None:
            [saved] = [
                path
                for node in shown
                if document["nodes"][node]["type"] == "SaveImage"
                for path in node_outputs(page, node)
            ]
            with Image.open(saved) as picture:
                reading = analyze(picture)
            read = (reading.background, reading.colour, reading.shape)
            assert keeps(promise, read), (read, promise)
    finally:
        page.close()

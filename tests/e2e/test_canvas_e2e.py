"""The canvas in a real browser: Playwright driving Debian's Chromium against the Gradio app.

One app (on its own data folder and worker pool) and one browser page for the module; tests that close and
reopen pages use more pages of the same browser context (same localStorage, as one user's browser). Editing
tests start from an empty canvas (the toolbar's New) and build what they need by dragging from the palette;
running tests run on the committed embedded model. The graph is read back through the debug hook that
bridge.mjs documents: `document.querySelector('.fc-root').flowcanvas` is the Editor, its `graph.toWorkflow()`
the document it edits, `runView.state` the run state Python last sent.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from tests.conftest import running_app
from tests.studio_e2e import CHROMIUM, EDITOR, chromium, drop_file_at, wire_ends_apart
from tests.studio_e2e import open_page as open_editor_page

pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-test.txt")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (tests/run.sh installs it)", allow_module_level=True)

HOSTILE_TITLE = "<img src=x onerror=alert(1)>"
DIALOGS: list[str] = []  # alert/confirm/prompt messages the page opened


TEMPLATES = Path(__file__).resolve().parents[2] / "pipelines" / "templates"
STARTER = TEMPLATES / "txt2img-embedded.json"
MIN_FIT_ZOOM = 0.8  # app/ui/editor/static/viewport.mjs: 12 px labels stay about 10 px on screen
RUN_TIMEOUT_MS = 180_000  # the first run loads the embedded model


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The app on its own data folder and worker pool: (url, storage)."""
    with running_app(tmp_path_factory.mktemp("canvas-data")) as running:
        yield running


@pytest.fixture(scope="module")
def app_url(server) -> str:
    return server[0]


@pytest.fixture(scope="module")
def context(app_url):
    with chromium() as browser:
        yield browser.new_context(viewport={"width": 1366, "height": 768})


def open_page(context, url: str):
    return open_editor_page(context, url, DIALOGS)


@pytest.fixture(scope="module")
def page(context, app_url):
    started = time.perf_counter()
    page = open_page(context, app_url)
    page.wait_for_function("document.querySelector('.fc-root')?.flowcanvas?.graph.nodeIds().length > 0")
    print(
        f"\neditor first load: {time.perf_counter() - started:.3f} s (page request to the starter workflow on the canvas)"
    )
    yield page


# ---------------------------------------------------------------- helpers


def workflow(page) -> dict:
    return page.evaluate(f"{EDITOR}.graph.toWorkflow()")


def nodes(page) -> dict:
    return workflow(page)["nodes"]


def new_canvas(page) -> None:
    page.click(".fc-cmd-new")
    assert nodes(page) == {}
    page.wait_for_function(f"{EDITOR}.viewport.zoom === 1")  # the empty canvas's view: world (0, 0) at (40, 40)


def add_from_palette(page, node_type: str, x: float, y: float) -> None:
    """Drag a palette item to canvas point (x, y) (relative to the canvas's top-left)."""
    page.locator(f'.fc-palette .fc-item[data-type="{node_type}"]').drag_to(
        page.locator(".fc-canvas"), target_position={"x": x, "y": y}
    )


def socket_dot(page, node: str, side: str, name: str):
    return page.locator(f'.fc-socket.fc-{side}[data-node="{node}"][data-name="{name}"]')


def centre(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def drag_wire(page, source, target, *, inspect=None) -> None:
    """Press on `source`, move onto `target`, call `inspect()` while hovering, release."""
    page.mouse.move(*centre(source))
    page.mouse.down()
    page.mouse.move(*centre(target), steps=6)
    if inspect is not None:
        inspect()
    page.mouse.up()


def click_background(page) -> None:
    """Give the canvas the keyboard focus (and clear the selection) with a click on empty space."""
    box = page.locator(".fc-canvas").bounding_box()
    page.mouse.click(box["x"] + box["width"] - 20, box["y"] + box["height"] - 20)


def add_at_world(page, node_type: str, x: float, y: float) -> None:
    """Drag a palette item so that the node's top-left lands at world point (x, y), whatever the view."""
    view = page.evaluate(f"(({{x, y, zoom}}) => ({{x, y, zoom}}))({EDITOR}.viewport)")
    add_from_palette(page, node_type, view["x"] + x * view["zoom"], view["y"] + y * view["zoom"])


def open_starter(page, **params: dict[str, object]) -> None:
    """Open the embedded txt2img starter, with `node={param: value}` changes, as the document being edited."""
    document = json.loads(STARTER.read_text(encoding="utf-8"))
    for node, values in params.items():
        document["nodes"][node]["params"].update(values)
    page.evaluate(f"(w) => {{ {EDITOR}.load(w); {EDITOR}.commit(); }}", document)
    page.wait_for_function(f"{EDITOR}.graph.nodeIds().length === {len(document['nodes'])}")


def run_status(page) -> str | None:
    return page.evaluate(f"{EDITOR}.runView.state.status")


def wait_for_run(page, *statuses: str) -> dict:
    page.wait_for_function(
        f"{json.dumps(list(statuses))}.includes({EDITOR}.runView.state.status)", timeout=RUN_TIMEOUT_MS
    )
    return page.evaluate(f"{EDITOR}.runView.state")


def wait_until_stepping(page, node: str) -> None:
    """Until `node` runs and has reported a step (its progress bar is up); fails at once if the run ends first."""
    state = f"{EDITOR}.runView.state"
    page.wait_for_function(
        f"{state}.nodes?.[{json.dumps(node)}]?.step > 0 || ['invalid', 'failed', 'succeeded', 'cancelled'].includes({state}.status)",
        timeout=RUN_TIMEOUT_MS,
    )
    assert run_status(page) == "running", page.evaluate(f"JSON.stringify({state})")[:500]


def image_at(page, src: str):
    from PIL import Image

    response = page.request.get(src)
    assert response.status == 200
    return Image.open(io.BytesIO(response.body()))


def build_pair(page) -> None:
    """LoadFlowModel → TextEncode, wired by dragging from the text_encoder output."""
    add_from_palette(page, "LoadFlowModel", 100, 60)
    add_from_palette(page, "TextEncode", 420, 60)
    drag_wire(
        page,
        socket_dot(page, "load_flow_model", "out", "text_encoder"),
        socket_dot(page, "text_encode", "in", "encoder"),
    )


# ---------------------------------------------------------------- tests


def test_build_wire_edit_and_validate_from_an_empty_canvas(page):
    new_canvas(page)
    add_from_palette(page, "LoadFlowModel", 100, 60)
    add_from_palette(page, "TextEncode", 420, 60)
    add_from_palette(page, "EmptyLatent", 420, 300)
    graph = nodes(page)
    assert {nid: entry["type"] for nid, entry in graph.items()} == {
        "load_flow_model": "LoadFlowModel",
        "text_encode": "TextEncode",
        "empty_latent": "EmptyLatent",
    }
    assert graph["load_flow_model"]["position"] == [60, 20]  # dropped at canvas (100, 60), world origin at (40, 40)
    assert graph["text_encode"]["params"] == {"text": "", "negative_text": ""}

    drag_wire(
        page,
        socket_dot(page, "load_flow_model", "out", "text_encoder"),
        socket_dot(page, "text_encode", "in", "encoder"),
    )
    assert nodes(page)["text_encode"]["inputs"] == {"encoder": {"node": "load_flow_model", "output": "text_encoder"}}
    assert page.locator(".fc-wires path.fc-wire[data-to='text_encode']").count() == 1

    # An incompatible wire (VAE into a TEXT_ENCODER input): marked while dragging, refused on drop.
    encoder = socket_dot(page, "text_encode", "in", "encoder")
    model_input = socket_dot(page, "empty_latent", "in", "model")

    def while_dragging():
        assert "fc-unfit" in encoder.get_attribute("class")
        assert "fc-fit" not in model_input.get_attribute("class")  # FLOW_MODEL: not for a VAE either

    drag_wire(page, socket_dot(page, "load_flow_model", "out", "vae"), encoder, inspect=while_dragging)
    assert nodes(page)["text_encode"]["inputs"] == {"encoder": {"node": "load_flow_model", "output": "text_encoder"}}
    assert "Refused" in page.locator(".fc-status").text_content()
    assert "expects TEXT_ENCODER" in page.locator(".fc-status").text_content()

    # A param changed in its widget; an out-of-bounds value is refused and the widget shows the old one.
    text = page.locator('.fc-node[data-node="text_encode"] .fc-param[data-name="text"] textarea')
    text.fill("a small green square")
    text.press("Tab")
    assert nodes(page)["text_encode"]["params"]["text"] == "a small green square"
    batch = page.locator('.fc-node[data-node="empty_latent"] .fc-param[data-name="batch_size"] input')
    batch.fill("999")
    batch.press("Tab")
    assert nodes(page)["empty_latent"]["params"]["batch_size"] == 1
    assert batch.input_value() == "1"
    assert "at most 64" in page.locator(".fc-status").text_content()

    # Validate (in Python, on the workflow the editor sends): EmptyLatent's unwired model is marked.
    page.click(".fc-cmd-validate")
    latent = page.locator('.fc-node[data-node="empty_latent"]')
    page.wait_for_selector('.fc-node[data-node="empty_latent"].fc-has-error')
    assert "fc-field-error" in latent.locator('.fc-field[data-name="model"]').get_attribute("class")
    assert "not connected" in latent.locator(".fc-errors").text_content()
    assert page.locator(".fc-node.fc-has-error").count() == 1
    assert "no output node" in page.locator(".fc-status").text_content()


def test_undo_and_redo_restore_exact_graphs(page):
    new_canvas(page)
    states = [workflow(page)]
    add_from_palette(page, "LoadFlowModel", 100, 60)
    states.append(workflow(page))
    add_from_palette(page, "TextEncode", 420, 60)
    states.append(workflow(page))
    drag_wire(
        page,
        socket_dot(page, "load_flow_model", "out", "text_encoder"),
        socket_dot(page, "text_encode", "in", "encoder"),
    )
    states.append(workflow(page))
    text = page.locator('.fc-node[data-node="text_encode"] .fc-param[data-name="text"] textarea')
    text.fill("a blue star")
    text.press("Tab")
    states.append(workflow(page))
    header = page.locator('.fc-node[data-node="text_encode"] .fc-header')
    x, y = centre(header)
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 6):  # one drag of many moves is one step
        page.mouse.move(x + 20 * step, y + 10 * step)
    page.mouse.up()
    states.append(workflow(page))
    assert states[-1]["nodes"]["text_encode"]["position"] == [
        states[-2]["nodes"]["text_encode"]["position"][0] + 100,
        states[-2]["nodes"]["text_encode"]["position"][1] + 50,
    ]
    assert len({repr(s) for s in states}) == len(states)

    click_background(page)
    for expected in reversed(states[:-1]):
        page.keyboard.press("Control+z")
        assert workflow(page) == expected
    for i, expected in enumerate(states[1:]):
        page.keyboard.press("Control+Shift+z" if i % 2 == 0 else "Control+y")  # both redo shortcuts
        assert workflow(page) == expected


def test_copy_and_paste_duplicate_nodes_through_the_clipboard(page):
    new_canvas(page)
    build_pair(page)
    click_background(page)
    page.keyboard.press("Control+a")
    page.keyboard.press("Control+c")
    box = page.locator(".fc-canvas").bounding_box()
    page.mouse.move(box["x"] + 140, box["y"] + 360)
    page.keyboard.press("Control+v")
    graph = nodes(page)
    assert sorted(graph) == ["load_flow_model", "load_flow_model_2", "text_encode", "text_encode_2"]
    assert graph["text_encode_2"]["inputs"] == {"encoder": {"node": "load_flow_model_2", "output": "text_encoder"}}
    assert graph["load_flow_model_2"]["position"] == [100, 320]  # the pasted block's top-left at the pointer
    assert page.evaluate(f"[...{EDITOR}.selection].sort()") == ["load_flow_model_2", "text_encode_2"]
    page.keyboard.press("Delete")
    assert sorted(nodes(page)) == ["load_flow_model", "text_encode"]


def test_a_title_with_markup_is_shown_as_text(page):
    new_canvas(page)
    add_from_palette(page, "TextEncode", 300, 100)
    page.locator('.fc-node[data-node="text_encode"] .fc-title').dblclick()
    rename = page.locator(".fc-node .fc-rename")
    rename.fill(HOSTILE_TITLE)
    rename.press("Enter")
    assert nodes(page)["text_encode"]["title"] == HOSTILE_TITLE
    assert page.locator('.fc-node[data-node="text_encode"] .fc-title').text_content() == HOSTILE_TITLE
    assert page.locator('.fc-node[data-node="text_encode"] img').count() == 0
    page.wait_for_timeout(200)
    assert DIALOGS == []


def test_pan_zoom_marquee_and_quick_add(page):
    new_canvas(page)
    build_pair(page)
    canvas = page.locator(".fc-canvas").bounding_box()
    # Wheel zoom keeps the world point under the cursor in place.
    px, py = canvas["x"] + 700, canvas["y"] + 400  # empty canvas
    before = page.evaluate(f"{EDITOR}.viewport.toWorld({px}, {py})")
    page.mouse.move(px, py)
    page.mouse.wheel(0, -240)
    page.wait_for_function(f"{EDITOR}.viewport.zoom > 1")
    after = page.evaluate(f"{EDITOR}.viewport.toWorld({px}, {py})")
    assert after == pytest.approx(before, abs=0.5)
    # Background drag pans; it is not an edit.
    edits_before = workflow(page)
    x0 = page.evaluate(f"{EDITOR}.viewport.x")
    page.mouse.move(canvas["x"] + 600, canvas["y"] + 420)
    page.mouse.down()
    page.mouse.move(canvas["x"] + 650, canvas["y"] + 420, steps=4)
    page.mouse.up()
    assert page.evaluate(f"{EDITOR}.viewport.x") == pytest.approx(x0 + 50)
    assert workflow(page) == edits_before
    # Ctrl+drag draws a marquee that selects the nodes it touches.
    page.click(".fc-cmd-fit")
    page.keyboard.down("Control")
    page.mouse.move(canvas["x"] + 5, canvas["y"] + 5)
    page.mouse.down()
    page.mouse.move(canvas["x"] + canvas["width"] - 5, canvas["y"] + canvas["height"] - 5, steps=4)
    page.mouse.up()
    page.keyboard.up("Control")
    assert page.evaluate(f"[...{EDITOR}.selection].sort()") == ["load_flow_model", "text_encode"]
    # Double-click on empty canvas: search and add.
    page.mouse.dblclick(canvas["x"] + canvas["width"] - 60, canvas["y"] + canvas["height"] - 60)
    page.keyboard.type("savei")
    page.keyboard.press("Enter")
    assert nodes(page)["save_image"]["type"] == "SaveImage"


def test_help_overlay_lists_the_shortcuts(page):
    click_background(page)
    page.keyboard.press("?")
    help_box = page.locator(".fc-help")
    assert help_box.is_visible()
    assert "Ctrl+Enter" in help_box.text_content() and "Undo / redo" in help_box.text_content()
    page.keyboard.press("Escape")
    assert not help_box.is_visible()
    page.click(".fc-cmd-help")
    assert help_box.is_visible()
    page.click(".fc-help-close")
    assert not help_box.is_visible()


def test_an_invalid_workflow_is_marked_and_nothing_runs(page, server):
    _, storage = server
    runs_before = len(storage.list_runs())
    new_canvas(page)
    add_from_palette(page, "VAEDecode", 300, 100)
    add_from_palette(page, "SaveImage", 620, 100)
    drag_wire(page, socket_dot(page, "vae_decode", "out", "image"), socket_dot(page, "save_image", "in", "images"))
    page.click(".fc-cmd-run")
    page.wait_for_selector('.fc-node[data-node="vae_decode"].fc-has-error')
    assert "fc-field-error" in page.locator(
        '.fc-node[data-node="vae_decode"] .fc-field[data-name="vae"]'
    ).get_attribute("class")
    assert run_status(page) == "invalid"
    assert page.locator(".fc-node.fc-state-running, .fc-node.fc-state-done").count() == 0
    assert len(storage.list_runs()) == runs_before, "an invalid workflow leaves no run row"


TXT2IMG_NODES = {  # type → world position: the embedded txt2img graph, laid out at zoom 0.5
    "LoadFlowModel": (0, 0),
    "TextEncode": (320, 0),
    "EmptyLatent": (320, 200),
    "ModelSchedule": (320, 360),
    "Noise": (320, 540),
    "EulerSolver": (320, 660),
    "Sampler": (640, 120),
    "VAEDecode": (960, 120),
    "SaveImage": (1260, 120),
}
TXT2IMG_WIRES = [
    ("load_flow_model", "text_encoder", "text_encode", "encoder"),
    ("load_flow_model", "model", "empty_latent", "model"),
    ("load_flow_model", "model", "model_schedule", "model"),
    ("load_flow_model", "model", "sampler", "model"),
    ("text_encode", "positive", "sampler", "positive"),
    ("text_encode", "negative", "sampler", "negative"),
    ("empty_latent", "latent", "sampler", "latent"),
    ("model_schedule", "sigmas", "sampler", "sigmas"),
    ("euler_solver", "solver", "sampler", "solver"),
    ("noise", "noise", "sampler", "noise"),
    ("sampler", "latent", "vae_decode", "latent"),
    ("load_flow_model", "vae", "vae_decode", "vae"),
    ("vae_decode", "image", "save_image", "images"),
]


def set_widget(page, node: str, param: str, value: str) -> None:
    widget = page.locator(f'.fc-node[data-node="{node}"] .fc-param[data-name="{param}"] .fc-widget')
    widget.fill(value)
    widget.press("Tab")


def test_build_txt2img_from_the_palette_and_run_it_on_the_embedded_model(page, server):
    import numpy as np
    import torch

    from nodes.embedded.analyzer import analyze

    _, storage = server
    new_canvas(page)
    canvas = page.locator(".fc-canvas").bounding_box()
    page.mouse.move(canvas["x"] + 1, canvas["y"] + 1)
    page.mouse.wheel(0, 462)  # zoom to about 0.5, so the whole graph fits
    page.wait_for_function(f"{EDITOR}.viewport.zoom < 0.6")
    for node_type, (x, y) in TXT2IMG_NODES.items():
        add_at_world(page, node_type, x, y)
    assert len(nodes(page)) == len(TXT2IMG_NODES)
    for source, output, target, name in TXT2IMG_WIRES:
        drag_wire(page, socket_dot(page, source, "out", output), socket_dot(page, target, "in", name))
    links = page.evaluate(f"{EDITOR}.graph.links().map((l) => [l.from, l.output, l.to, l.input])")
    assert sorted(map(tuple, links)) == sorted(TXT2IMG_WIRES)
    assert page.locator(".fc-wires path.fc-wire[data-to]").count() == len(TXT2IMG_WIRES)
    set_widget(page, "text_encode", "text", "a large yellow square on a purple background")
    set_widget(page, "empty_latent", "width", "64")
    set_widget(page, "empty_latent", "height", "64")
    graph = nodes(page)
    assert (
        graph["empty_latent"]["params"]["width"] == 64
        and graph["load_flow_model"]["params"]["source"] == "embedded:shapes"
    )

    page.click(".fc-cmd-run")
    state = wait_for_run(page, "succeeded", "failed")
    assert state["status"] == "succeeded", state.get("error")
    assert {node: entry["state"] for node, entry in state["nodes"].items()} == {node: "done" for node in graph}
    # The image is on the output node and in the outputs panel, served from the run's stored artifact.
    on_node = page.locator('.fc-node[data-node="save_image"] img.fc-output-image')
    assert on_node.count() == 1
    assert page.locator(".fc-output-list img").count() == 1
    picture = image_at(page, on_node.get_attribute("src"))
    assert picture.size == (64, 64)
    pixels = torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    found = analyze(pixels)
    assert (found.background, found.colour) == ("purple", "yellow")
    [record] = storage.list_runs(limit=1)
    assert record.id == state["run_id"] and str(record.status) == "succeeded"
    assert "Done in" in page.locator(".fc-status").text_content()


def test_the_prompt_says_what_the_embedded_model_knows_and_warns_about_a_word_it_lacks(page):
    open_starter(page)
    hint = page.locator('.fc-node[data-node="prompt"] .fc-hint')
    assert hint.is_visible()
    assert hint.text_content().startswith("Knows red, orange") and "circle" in hint.text_content()
    set_widget(page, "prompt", "text", "a pink hexagon on a blue background")
    page.click(".fc-cmd-run")
    state = wait_for_run(page, "succeeded", "failed")
    assert state["status"] == "succeeded", state.get("error")
    warning = page.locator('.fc-node[data-node="prompt"] .fc-run-warning')
    assert warning.count() == 1
    assert '"pink" (colour)' in warning.text_content() and '"hexagon" (shape)' in warning.text_content()
    set_widget(page, "model", "source", "stabilityai/stable-diffusion-3.5-medium")
    page.wait_for_function("document.querySelector('.fc-node[data-node=\"prompt\"] .fc-hint').hidden")
    assert not hint.is_visible()


def test_a_run_goes_on_after_the_page_is_closed_and_a_reopened_page_shows_it(context, app_url, server):
    _, storage = server
    first = open_page(context, app_url)
    open_starter(first, schedule={"steps": 600}, prompt={"text": "a small red ring on a green background"})
    first.click(".fc-cmd-run")
    wait_until_stepping(first, "sampler")
    first.wait_for_selector('.fc-node[data-node="sampler"] .fc-progress .fc-bar')
    run_id = first.evaluate(f"{EDITOR}.runView.state.run_id")
    first.close()  # the browser stops following; the worker does not stop running
    assert str(storage.get_run(run_id).status) in ("running", "queued")

    second = open_page(context, app_url)
    assert second.evaluate(f"{EDITOR}.graph.node('schedule').params.steps") == 600, "the draft is restored"
    state = wait_for_run(second, "succeeded", "failed")
    assert state["run_id"] == run_id and state["status"] == "succeeded", state.get("error")
    assert second.locator('.fc-node[data-node="save"] img.fc-output-image').count() == 1
    assert str(storage.get_run(run_id).status) == "succeeded"
    second.close()


def test_cancel_stops_a_running_run(page, server):
    _, storage = server
    open_starter(page, schedule={"steps": 1000}, noise={"seed": 11})
    page.click(".fc-cmd-run")
    wait_until_stepping(page, "sampler")
    assert page.locator(".fc-cmd-run").is_disabled()
    # The live preview shows on the node and, until there are outputs, in the outputs panel.
    panel = page.wait_for_selector('.fc-outputs-panel figure.fc-output-preview[data-node="sampler"] img')
    page.wait_for_function("(image) => image.complete && image.naturalWidth > 0", arg=panel)
    assert "preview" in page.inner_text('.fc-outputs-panel figure[data-node="sampler"] figcaption')
    assert page.locator('.fc-node[data-node="sampler"] img.fc-preview').count() == 1
    page.click(".fc-cmd-cancel")
    state = wait_for_run(page, "cancelled", "succeeded", "failed")
    assert state["status"] == "cancelled"
    assert "fc-state-stopped" in page.locator('.fc-node[data-node="sampler"]').get_attribute("class")
    assert str(storage.get_run(state["run_id"]).status) == "cancelled"
    assert not page.locator(".fc-cmd-run").is_disabled()


def test_run_up_to_a_node_from_its_menu(page):
    open_starter(page, noise={"seed": 5})
    page.locator('.fc-node[data-node="decode"] .fc-header').click(button="right")
    page.click('.fc-menu [data-action="run-to"]')
    state = wait_for_run(page, "succeeded", "failed")
    assert state["status"] == "succeeded", state.get("error")
    assert state["nodes"]["decode"]["state"] == "done"
    assert "save" not in state["nodes"], "the output node is past the target: not run"
    assert state["outputs"] == []


def test_an_uploaded_image_is_kept_in_the_data_folder_and_shown(page, server, tmp_path):
    from PIL import Image

    _, storage = server
    new_canvas(page)
    add_from_palette(page, "LoadImage", 200, 100)
    picture = tmp_path / "picture.png"
    Image.new("RGB", (16, 12), "orange").save(picture)
    page.locator('.fc-node[data-node="load_image"] input[type=file]').set_input_files(str(picture))
    page.wait_for_function(f"!!{EDITOR}.graph.node('load_image').params.path")
    kept = Path(nodes(page)["load_image"]["params"]["path"])
    assert kept.parent == storage.home / "uploads" and kept.read_bytes() == picture.read_bytes()
    page.wait_for_selector('.fc-node[data-node="load_image"] img.fc-thumb:not([hidden])')


def test_open_a_subgraph_edit_inside_and_come_back(page):
    open_starter(page, noise={"seed": 9}, schedule={"steps": 6})
    page.locator('.fc-node[data-node="schedule"] .fc-header').click()
    page.locator('.fc-node[data-node="solver"] .fc-header').click(modifiers=["Shift"])
    page.locator('.fc-node[data-node="schedule"] .fc-header').click(button="right")
    page.click('.fc-menu [data-action="group"]')
    page.wait_for_function(f"!{EDITOR}.graph.hasNode('schedule')")
    [outer] = [node for node, entry in nodes(page).items() if entry["type"] == "Subgraph"]
    definition = nodes(page)[outer]["subgraph"]

    page.locator(f'.fc-node[data-node="{outer}"] .fc-ports').dblclick()
    page.wait_for_selector(".fc-scope:not([hidden])")
    assert sorted(page.evaluate(f"{EDITOR}.graph.nodeIds()")) == ["schedule", "solver"]
    crumbs = page.locator(".fc-scope .fc-crumb").all_text_contents()
    assert crumbs[0] == "Workflow" and len(crumbs) == 2
    assert page.locator('.fc-node[data-node="schedule"] .fc-port-in').count() >= 1, (
        "the ports show where values come in"
    )
    assert page.locator('.fc-node[data-node="schedule"] .fc-port-out').count() == 1

    set_widget(page, "schedule", "steps", "4")
    page.wait_for_function(f"{EDITOR}.graph.node('schedule').params.steps === 4")
    document = workflow(page)
    assert document["subgraphs"][definition]["nodes"]["schedule"]["params"]["steps"] == 4, (
        "the edit lands in the definition"
    )
    assert {"label": "Steps", "node": f"{outer}/schedule", "param": "steps"} in document["exposed"]

    page.click('.fc-scope button[data-depth="0"]')
    page.wait_for_selector(".fc-scope", state="hidden")
    assert page.evaluate(f"{EDITOR}.graph.hasNode({json.dumps(outer)})")
    page.click(".fc-cmd-validate")
    page.wait_for_function(f"{EDITOR}.statusLine.textContent.startsWith('Valid')")

    page.click(".fc-cmd-run")
    state = wait_for_run(page, "succeeded", "failed")
    assert state["status"] == "succeeded", state.get("error")
    assert state["nodes"][f"{outer}/schedule"]["state"] == "done"
    page.locator(f'.fc-node[data-node="{outer}"] .fc-header').click()
    page.keyboard.press("Tab")
    page.wait_for_selector('.fc-node[data-node="schedule"].fc-state-done')
    page.keyboard.press("Shift+Tab")
    page.wait_for_selector(".fc-scope", state="hidden")


# ---------------------------------------------------------------- starters, drops, overlays, read-only


def template(name: str) -> dict:
    return json.loads((TEMPLATES / name).read_text(encoding="utf-8"))


def open_from_python(page, document: dict) -> None:
    """Show `document` as a studio view does (setting the editor's value from Python reaches Editor.open)."""
    page.evaluate(f"(w) => {EDITOR}.open(w)", document)
    page.wait_for_function(f"{EDITOR}.graph.nodeIds().length === {len(document['nodes'])}")


def canvas_point(page, dx: float, dy: float) -> tuple[float, float]:
    """A page point at (dx, dy) from the canvas's top-left (negative: from its bottom-right)."""
    box = page.locator(".fc-canvas").bounding_box()
    return (box["x"] + (dx if dx >= 0 else box["width"] + dx), box["y"] + (dy if dy >= 0 else box["height"] + dy))


def png_bytes(colour: str = "orange", text: dict[str, str] | None = None) -> bytes:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_a_starter_opened_while_another_tab_is_shown_has_its_wires_once_the_canvas_shows(page):
    document = template("solver-comparison.json")
    page.get_by_role("tab", name="Runs").click()
    open_from_python(page, document)  # laid out while the canvas is display:none
    page.get_by_role("tab", name="Canvas").click()
    page.wait_for_function(f"{EDITOR}.viewport.zoom < 1")  # the fit waited for the canvas to have a size
    ends = wire_ends_apart(page)
    links = page.evaluate(f"{EDITOR}.graph.links().length")
    assert len(ends) == links > 20
    assert min(ends) > 5, "every wire runs from its output to its input, none collapsed at the origin"
    assert page.evaluate(f"{EDITOR}.viewport.zoom") >= MIN_FIT_ZOOM, (
        "labels stay readable: the view is not zoomed out further"
    )
    canvas = page.locator(".fc-canvas").bounding_box()
    first = page.locator('.fc-node[data-node="model"]').bounding_box()
    assert canvas["x"] <= first["x"] < canvas["x"] + 80 and canvas["y"] <= first["y"] < canvas["y"] + 80, (
        "the top-left of the graph"
    )


def test_every_starter_shows_its_labels_whole_with_titles(page):
    from nodes.catalogue import catalogue

    titles = {
        (spec["type"], param["name"]): param["title"] for spec in catalogue()["nodes"] for param in spec["params"]
    }
    for path in sorted(TEMPLATES.glob("*.json")):
        document = template(path.name)
        open_from_python(page, document)
        cut = page.evaluate(
            "[...document.querySelectorAll('.fc-root .fc-node .fc-label')]"
            ".filter((l) => l.scrollWidth > l.clientWidth).map((l) => l.textContent)"
        )
        assert cut == [], f"{path.name}: labels cut short: {cut}"
        node, entry = next(
            (n, e) for n, e in document["nodes"].items() if e["type"] == "TextEncode" or e["type"] == "SaveImage"
        )
        name = "negative_text" if entry["type"] == "TextEncode" else "filename_prefix"
        row = page.locator(f'.fc-node[data-node="{node}"] .fc-param[data-name="{name}"]')
        assert row.locator(".fc-label").text_content() == titles[(entry["type"], name)] != name
        assert row.get_attribute("title").startswith(f"{titles[(entry['type'], name)]} ({name})")
    assert page.locator('.fc-node[data-node="save"] .fc-row .fc-label').first.text_content() == "Images *"


def test_a_run_stays_with_the_document_it_started_from(page, server):
    _, storage = server
    decorations = ".fc-node .fc-badge, .fc-node[class*='fc-state-'], .fc-node img.fc-output-image, .fc-output-list img"
    open_starter(page, noise={"seed": 21}, schedule={"steps": 4})
    page.click(".fc-cmd-run")
    assert wait_for_run(page, "succeeded", "failed")["status"] == "succeeded"
    assert page.locator(".fc-output-list img").count() == 1 and page.locator(".fc-node .fc-badge").count() > 0
    page.click(".fc-cmd-new")
    assert page.locator(decorations).count() == 0, "New shows an empty document with nothing of the last run"
    assert "Done" not in page.locator(".fc-status").text_content()
    assert page.evaluate("localStorage.getItem('flowcanvas:last-run')") is None, "a reload does not bring it back"
    page.click(".fc-cmd-undo")
    assert sorted(nodes(page)) == sorted(template("txt2img-embedded.json")["nodes"])

    # A run still going when another document (with the same node ids) is shown: its later states stay off it.
    open_starter(page, schedule={"steps": 600}, noise={"seed": 22})
    page.click(".fc-cmd-run")
    wait_until_stepping(page, "sampler")
    run_id = page.evaluate(f"{EDITOR}.runView.state.run_id")
    open_from_python(page, template("txt2img-embedded.json"))
    assert page.locator(decorations).count() == 0
    step = storage.get_run(run_id)
    page.wait_for_timeout(1500)  # progress of that run keeps arriving meanwhile
    assert page.locator(decorations).count() == 0
    assert page.evaluate(f"{EDITOR}.runView.state.status") is None and not page.locator(".fc-cmd-run").is_disabled()
    assert not page.locator(".fc-status").text_content().startswith("Running")
    assert str(step.status) == "running", "the run goes on in the server"
    page.evaluate(f"{EDITOR}.backend.trigger('cancel_run', {{ run_id: {json.dumps(run_id)} }})")
    deadline = time.monotonic() + 60
    while str(storage.get_run(run_id).status) == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert str(storage.get_run(run_id).status) == "cancelled"
    assert page.locator(decorations).count() == 0


def test_the_help_overlay_fits_a_768_px_screen_and_scrolls(page):
    assert page.viewport_size == {"width": 1366, "height": 768}
    click_background(page)
    page.keyboard.press("?")
    help_box = page.locator(".fc-help")
    box = help_box.bounding_box()
    root = page.locator(".fc-root").bounding_box()
    assert box["y"] + box["height"] <= min(root["y"] + root["height"], 768), (
        "nothing of it is cut off by the editor or the screen"
    )
    assert page.evaluate(
        "document.querySelector('.fc-help').scrollHeight > document.querySelector('.fc-help').clientHeight"
    )
    page.click(".fc-help-close")  # scrolled to within the overlay
    assert not help_box.is_visible()


def test_quick_add_opened_near_the_bottom_shows_its_results(page):
    new_canvas(page)
    x, y = canvas_point(page, 300, -30)
    page.mouse.dblclick(x, y)
    quick = page.locator(".fc-quickadd")
    assert quick.is_visible()
    canvas = page.locator(".fc-canvas").bounding_box()
    box = quick.bounding_box()
    assert canvas["y"] <= box["y"] and box["y"] + box["height"] <= canvas["y"] + canvas["height"], "inside the canvas"
    shown = page.evaluate("""() => {
      const list = document.querySelector('.fc-quick-results').getBoundingClientRect();
      return [...document.querySelectorAll('.fc-quick-results .fc-item')].filter((row) => {
        const r = row.getBoundingClientRect();
        return r.top >= list.top - 1 && r.bottom <= list.bottom + 1;
      }).length;
    }""")
    assert shown >= 8
    page.keyboard.type("savei")
    page.keyboard.press("Enter")
    [added] = nodes(page).values()
    assert added["type"] == "SaveImage"


def test_an_image_dropped_on_a_load_image_node_becomes_its_path(page, server):
    _, storage = server
    new_canvas(page)
    add_from_palette(page, "LoadImage", 120, 80)
    add_from_palette(page, "SaveImage", 520, 80)
    before = nodes(page)
    x, y = centre(page.locator('.fc-node[data-node="load_image"] .fc-header'))
    picture = png_bytes("orange")
    assert drop_file_at(page, x, y, "orange.png", "image/png", picture), "the canvas takes the drop"
    page.wait_for_function(f"!!{EDITOR}.graph.node('load_image').params.path")
    after = nodes(page)
    kept = Path(after["load_image"]["params"]["path"])
    assert kept.parent == storage.home / "uploads" and kept.read_bytes() == picture
    assert sorted(after) == sorted(before) and after["save_image"] == before["save_image"], "the other nodes stay"
    page.wait_for_selector('.fc-node[data-node="load_image"] img.fc-thumb:not([hidden])')

    # On empty canvas: a new LoadImage node there, holding it; one undo step takes it away.
    x, y = canvas_point(page, 200, 380)
    assert drop_file_at(page, x, y, "blue.png", "image/png", png_bytes("blue"))
    page.wait_for_function(f"{EDITOR}.graph.nodeIds().length === 3")
    added = nodes(page)["load_image_2"]
    assert added["type"] == "LoadImage" and Path(added["params"]["path"]).parent == storage.home / "uploads"
    world = page.evaluate(f"{EDITOR}.viewport.toWorld({x}, {y})")
    assert added["position"] == [round(world[0]), round(world[1])]
    click_background(page)
    page.keyboard.press("Control+z")
    assert sorted(nodes(page)) == ["load_image", "save_image"]


def test_a_png_carrying_a_workflow_asks_and_opening_it_is_one_undo_step(page):
    from pipelines.workflow import PNG_WORKFLOW_KEY

    carried = template("swatch.json")
    picture = png_bytes("green", {PNG_WORKFLOW_KEY: json.dumps(carried)})
    new_canvas(page)
    add_from_palette(page, "LoadImage", 120, 80)
    add_from_palette(page, "TextEncode", 520, 80)
    before = workflow(page)

    # Use the image: the picture goes on the node, the workflow is not opened (nor by the page's importer).
    x, y = centre(page.locator('.fc-node[data-node="load_image"] .fc-header'))
    assert drop_file_at(page, x, y, "swatch.png", "image/png", picture)
    dialog = page.locator(".fc-dialog")
    dialog.wait_for(state="visible")
    assert "swatch.png carries a workflow" in dialog.text_content() and "2 nodes" in dialog.text_content()
    dialog.get_by_role("button", name="Use the image").click()
    page.wait_for_function(f"!!{EDITOR}.graph.node('load_image').params.path")
    page.wait_for_timeout(1000)
    assert sorted(nodes(page)) == ["load_image", "text_encode"]

    # Escape cancels: nothing changes.
    with_image = workflow(page)
    assert drop_file_at(page, *canvas_point(page, 300, 400), "swatch.png", "image/png", picture)
    dialog.wait_for(state="visible")
    page.keyboard.press("Escape")
    assert dialog.is_hidden() and workflow(page) == with_image

    # Open: the carried workflow replaces the canvas; one Undo brings the previous document back, Redo again.
    assert drop_file_at(page, *canvas_point(page, 300, 400), "swatch.png", "image/png", picture)
    dialog.get_by_role("button", name="Open the workflow").click()
    page.wait_for_function(f"{EDITOR}.graph.toWorkflow().name === {json.dumps(carried['name'])}")
    assert nodes(page) == carried["nodes"]
    click_background(page)
    page.keyboard.press("Control+z")
    assert workflow(page) == with_image != before
    page.keyboard.press("Control+Shift+z")
    assert nodes(page) == carried["nodes"]


def test_opening_a_workflow_from_python_is_one_undo_step(page):
    new_canvas(page)
    add_from_palette(page, "TextEncode", 300, 100)
    edited = workflow(page)
    open_from_python(page, template("swatch.json"))
    click_background(page)
    page.keyboard.press("Control+z")
    assert workflow(page) == edited


READONLY_HTML = "#shared-canvas .fc-root"


@pytest.fixture(scope="module")
def readonly_app(tmp_path_factory):
    """A page with the canvas and, below it, a read-only canvas whose document is set later (as the share view does)."""
    import socket

    import gradio as gr

    from app.ui.editor import flow_editor
    from nodes.catalogue import catalogue

    shared = template("txt2img-embedded.json")
    with gr.Blocks() as demo:
        flow_editor(template("swatch.json"), catalogue(), elem_id="flow-editor")
        show = gr.Button("Show the shared workflow", elem_id="show-shared")
        canvas = flow_editor(None, catalogue(), readonly=True, elem_id="shared-canvas")
        show.click(lambda: gr.update(value=shared), outputs=canvas)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", shared
    finally:
        demo.close()


def test_a_read_only_canvas_shows_a_workflow_and_refuses_edits(context, readonly_app):
    url, shared = readonly_app
    page = context.new_page()
    page.goto(url)
    page.wait_for_function(
        "document.querySelectorAll('.fc-root').length === 2 && "
        "[...document.querySelectorAll('.fc-root')].every((root) => root.flowcanvas)"
    )
    assert page.evaluate(f"{EDITOR}.readonly") is False, "the debug hook is the first editor"
    draft = page.evaluate("localStorage.getItem('flowcanvas:draft')")
    page.click("#show-shared")
    shown = f"document.querySelector('{READONLY_HTML}').flowcanvas"
    page.wait_for_function(f"{shown}.graph.nodeIds().length === {len(shared['nodes'])}")
    page.locator(READONLY_HTML).scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    assert min(wire_ends_apart(page, READONLY_HTML)) > 5
    assert len(wire_ends_apart(page, READONLY_HTML)) == page.evaluate(f"{shown}.graph.links().length")
    for hidden in (
        ".fc-palette",
        ".fc-outputs-panel",
        ".fc-cmd-run",
        ".fc-cmd-new",
        ".fc-cmd-undo",
        ".fc-cmd-validate",
    ):
        assert page.locator(f"{READONLY_HTML} {hidden}").is_hidden(), hidden
    assert page.locator(f"{READONLY_HTML} .fc-cmd-fit").is_visible()
    widgets = page.locator(f"{READONLY_HTML} .fc-node :is(input, select, textarea)")
    assert widgets.count() > 5 and all(widgets.nth(i).is_disabled() for i in range(widgets.count()))

    # Dragging a node pans instead; Delete, Undo and a right-click change nothing.
    header = page.locator(f'{READONLY_HTML} .fc-node[data-node="prompt"] .fc-header')
    x0 = page.evaluate(f"{shown}.viewport.x")
    x, y = centre(header)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 20, steps=4)
    page.mouse.up()
    assert page.evaluate(f"{shown}.viewport.x") == pytest.approx(x0 + 60)
    header.click()
    page.keyboard.press("Delete")
    page.keyboard.press("Control+z")
    header.click(button="right")
    assert page.locator(f"{READONLY_HTML} .fc-menu").is_hidden()
    assert page.evaluate(f"{shown}.graph.toWorkflow()") == shared
    page.click(f"{READONLY_HTML} .fc-cmd-fit")
    assert page.evaluate("localStorage.getItem('flowcanvas:draft')") == draft, (
        "the browser's draft is the canvas's alone"
    )
    page.close()

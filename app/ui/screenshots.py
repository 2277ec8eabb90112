"""The starter journeys in a real browser, and the README's screenshots and the start gallery's thumbnails.

    python -m app.ui.screenshots [--out docs/img] [--chromium /usr/bin/chromium] [--only NAME ...] [--arrange]

Starts the app on a temporary data folder and, in headless Chromium at 1366×768 (the smallest screen the canvas
is designed for), takes each starter's journey the way a newcomer does: Library → the starter's card → Open →
Run with its bundled inputs. It saves `docs/img/starter-<name>.png` (the canvas after the run) and the
starter's output as its gallery thumbnail, `pipelines/templates/thumbnails/<name>.png`; plus the canvas mid-run
and after a run of the embedded txt2img starter (`canvas-running.png`, `canvas-done.png`).

`--arrange` instead lays each starter out anew from its nodes' sizes as drawn (layout.mjs `arrange`: columns
follow the data, nothing overlaps) and saves the positions into the template files; capture again after it.

Starters on SD3 or FLUX weights cannot run here (no downloads): they are captured opened, not run, and keep no
thumbnail. The journey steps (`open_starter`, `run_and_wait`) are the ones tests/e2e/test_journeys_e2e.py takes.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "pipelines" / "templates"
THUMBNAILS = TEMPLATES / "thumbnails"
EDITOR = "document.querySelector('.fc-root').flowcanvas"
VIEWPORT = {"width": 1366, "height": 768}
RUN_TIMEOUT_MS = 300_000  # a first run loads its model
THUMBNAIL_SIDE = 192
EMBEDDED_SOURCE = "embedded:shapes"


def starter_names() -> list[str]:
    return sorted(path.stem for path in TEMPLATES.glob("*.json"))


def starter(name: str) -> dict[str, Any]:
    return json.loads((TEMPLATES / f"{name}.json").read_text(encoding="utf-8"))


def model_sources(document: dict[str, Any]) -> list[str]:
    """The model sources a workflow loads (its LoadFlowModel nodes' `source`)."""
    return [
        str(entry.get("params", {}).get("source", EMBEDDED_SOURCE))
        for entry in document["nodes"].values()
        if entry["type"] == "LoadFlowModel"
    ]


def runs_here(document: dict[str, Any]) -> bool:
    """Whether a workflow runs without weights from elsewhere: every model it loads is the embedded one."""
    return all(source.startswith("embedded:") for source in model_sources(document))


def open_starter(page: Any, url: str, name: str) -> None:
    """First load → Library → the starter's card → Open: the canvas shows it."""
    page.goto(url)
    page.wait_for_function("document.querySelector('.fc-root')?.flowcanvas?.graph.nodeIds().length > 0")
    page.get_by_role("tab", name="Library").click()
    page.click(f"#starter-open-{name}")
    page.wait_for_function(
        f"([name]) => {EDITOR}.graph.toWorkflow().name === name && "
        "document.querySelector('.fc-canvas').getBoundingClientRect().width > 0",
        arg=[starter(name)["name"]],
    )
    page.wait_for_timeout(300)  # wires and fit follow the canvas becoming visible


def run_and_wait(page: Any) -> str:
    """Press Run; the run's final status."""
    page.click(".fc-cmd-run")
    page.wait_for_function(
        f"['succeeded', 'failed', 'cancelled', 'interrupted', 'invalid'].includes({EDITOR}.runView.state.status)",
        timeout=RUN_TIMEOUT_MS,
    )
    page.wait_for_timeout(300)  # output images decode
    return str(page.evaluate(f"{EDITOR}.runView.state.status"))


def served_path(url: str) -> Path:
    """The file behind an output URL of this app (`…/gradio_api/file=<absolute path>`)."""
    return Path(url.split("/gradio_api/file=", 1)[1])


def node_outputs(page: Any, node: str) -> list[Path]:
    """The files of the images a run shows on `node`."""
    urls = page.evaluate(f"([node]) => {EDITOR}.runView.state.nodes?.[node]?.images ?? []", [node])
    return [served_path(url) for url in urls]


def arrange_starter(page: Any, name: str) -> None:
    """Lay the open starter out from its nodes' drawn sizes and save the positions into its template file."""
    from app.ui.editor import STATIC_DIR
    from pipelines.workflow import canonical_json, load_workflow

    positions = page.evaluate(
        """async ([url]) => {
          const { arrange } = await import(url);
          const editor = document.querySelector('.fc-root').flowcanvas;
          const graph = editor.graph;
          const nodes = graph.nodeIds().map((id) => ({ id, position: graph.node(id).position }));
          const links = graph.links().map((link) => ({ from: link.from, to: link.to }));
          const sizes = new Map([...editor.nodesView.boxes()].map(([id, box]) =>
            [id, { width: box.right - box.left, height: box.bottom - box.top }]));
          return Object.fromEntries(arrange(nodes, links, sizes));
        }""",
        [f"/gradio_api/file={STATIC_DIR / 'layout.mjs'}"],
    )
    path = TEMPLATES / f"{name}.json"
    document = starter(name)
    for node, position in positions.items():
        document["nodes"][node]["position"] = [float(value) for value in position]
    path.write_text(canonical_json(load_workflow(document)), encoding="utf-8")


def save_thumbnail(image: Path, target: Path) -> None:
    with Image.open(image) as picture:
        picture = picture.convert("RGB")
        scale = THUMBNAIL_SIDE / max(picture.size)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        # Upscaled 64-px outputs stay crisp; a wide grid is shrunk smoothly.
        picture.resize(size, Image.NEAREST if scale >= 1 else Image.LANCZOS).save(target, optimize=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def capture(out: Path, chromium: Path, only: list[str] | None = None, arrange: bool = False) -> list[Path]:
    from playwright.sync_api import sync_playwright

    from app.ui.app import build_app
    from pipelines.jobs import WorkerPool
    from storage import open_storage

    out.mkdir(parents=True, exist_ok=True)
    THUMBNAILS.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as home:
        storage = open_storage(Path(home))
        pool = WorkerPool(storage)
        demo = build_app(storage=storage, pool=pool)
        port = _free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        url = f"http://127.0.0.1:{port}/"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(chromium))
                for name in only or starter_names():
                    page = browser.new_page(viewport=VIEWPORT)
                    open_starter(page, url, name)
                    if arrange:
                        arrange_starter(page, name)
                        written.append(TEMPLATES / f"{name}.json")
                        page.close()
                        continue
                    document = starter(name)
                    if runs_here(document):
                        status = run_and_wait(page)
                        if status != "succeeded":
                            raise RuntimeError(f"{name}: the run ended {status}: {page.inner_text('.fc-status')}")
                        saved = [
                            path
                            for node, entry in document["nodes"].items()
                            if entry["type"] == "SaveImage"
                            for path in node_outputs(page, node)
                        ]
                        if saved:
                            save_thumbnail(saved[0], THUMBNAILS / f"{name}.png")
                            written.append(THUMBNAILS / f"{name}.png")
                    shot = out / f"starter-{name}.png"
                    page.screenshot(path=str(shot))
                    written.append(shot)
                    page.close()
                if not arrange and (only is None or "txt2img-embedded" in only):
                    written += _capture_mid_run(browser, url, out)
                browser.close()
        finally:
            demo.close()
            pool.shutdown()
            storage.close()
    return written


def _capture_mid_run(browser: Any, url: str, out: Path) -> list[Path]:
    """The embedded txt2img starter with many steps, caught mid-way (progress and live preview) and done."""
    page = browser.new_page(viewport=VIEWPORT)
    open_starter(page, url, "txt2img-embedded")
    document = starter("txt2img-embedded")
    document["nodes"]["schedule"]["params"]["steps"] = 400
    document["nodes"]["noise"]["params"]["seed"] = 7
    document["nodes"]["prompt"]["params"]["text"] = "a large yellow star on a purple background"
    page.evaluate(f"(w) => {{ {EDITOR}.open(w); {EDITOR}.commit(); }}", document)
    page.click(".fc-cmd-run")
    page.wait_for_function(
        f"{EDITOR}.runView.state.nodes?.sampler?.step >= 120 && !!{EDITOR}.runView.state.nodes?.sampler?.preview",
        timeout=RUN_TIMEOUT_MS,
    )
    running = out / "canvas-running.png"
    page.screenshot(path=str(running))
    page.wait_for_function(f"{EDITOR}.runView.state.status === 'succeeded'", timeout=RUN_TIMEOUT_MS)
    page.wait_for_selector('.fc-node[data-node="save"] img.fc-output-image')
    page.wait_for_timeout(300)  # the image decodes
    done = out / "canvas-done.png"
    page.screenshot(path=str(done))
    page.close()
    return [running, done]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--chromium", type=Path, default=Path("/usr/bin/chromium"))
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=starter_names(),
        help="only these starters (template file names without .json)",
    )
    parser.add_argument(
        "--arrange", action="store_true", help="lay the starters out anew and save them (no screenshots)"
    )
    args = parser.parse_args()
    for path in capture(args.out, args.chromium, args.only, args.arrange):
        print(path)


if __name__ == "__main__":
    main()

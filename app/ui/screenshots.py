"""Regenerate the README's screenshots of the canvas: mid-run and after a run, on the embedded model.

    python -m app.ui.screenshots [--out docs/img] [--chromium /usr/bin/chromium]

Starts the app on a temporary data folder, opens the embedded txt2img starter in headless Chromium at
1366×768 (the smallest screen the canvas is designed for), runs it with enough steps to catch the sampler
mid-way, and saves `canvas-running.png` (progress bar and live preview on the sampler) and `canvas-done.png`
(every node done, the image on the output node and in the outputs panel).
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
from pathlib import Path

EDITOR = "document.querySelector('.fc-root').flowcanvas"
STARTER = Path(__file__).resolve().parents[2] / "pipelines" / "templates" / "txt2img-embedded.json"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def capture(out: Path, chromium: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    from app.ui.app import build_app
    from pipelines.jobs import WorkerPool
    from storage import open_storage

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        storage = open_storage(Path(home))
        pool = WorkerPool(storage)
        demo = build_app(storage=storage, pool=pool)
        port = _free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(chromium))
                page = browser.new_page(viewport={"width": 1366, "height": 768})
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_function("document.querySelector('.fc-root')?.flowcanvas?.graph.nodeIds().length > 0")
                # Warm up (loads the model), so the captured run is all sampling.
                page.click(".fc-cmd-run")
                page.wait_for_function(f"{EDITOR}.runView.state.status === 'succeeded'", timeout=180_000)
                document = json.loads(STARTER.read_text(encoding="utf-8"))
                document["nodes"]["schedule"]["params"]["steps"] = 400
                document["nodes"]["noise"]["params"]["seed"] = 7
                document["nodes"]["prompt"]["params"]["text"] = "a large yellow star on a purple background"
                page.evaluate(f"(w) => {{ {EDITOR}.load(w); {EDITOR}.commit(); }}", document)
                page.click(".fc-cmd-run")
                page.wait_for_function(f"{EDITOR}.runView.state.nodes?.sampler?.step >= 120 && "
                                       f"!!{EDITOR}.runView.state.nodes?.sampler?.preview", timeout=180_000)
                running = out / "canvas-running.png"
                page.screenshot(path=str(running))
                page.wait_for_function(f"{EDITOR}.runView.state.status === 'succeeded'", timeout=180_000)
                page.wait_for_selector('.fc-node[data-node="save"] img.fc-output-image')
                page.wait_for_timeout(300)  # the image decodes
                done = out / "canvas-done.png"
                page.screenshot(path=str(done))
                browser.close()
        finally:
            demo.close()
            pool.shutdown()
            storage.close()
    return [running, done]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "docs" / "img")
    parser.add_argument("--chromium", type=Path, default=Path("/usr/bin/chromium"))
    args = parser.parse_args()
    for path in capture(args.out, args.chromium):
        print(path)


if __name__ == "__main__":
    main()

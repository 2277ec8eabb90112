"""Helpers for the browser tests (canvas, library, runs, batch): Chromium under Playwright, pages on the app,
Gradio widgets by id. `EDITOR` is the debug hook bridge.mjs documents: the mounted Editor.

The views give their components `elem_id`s (runs-…, batch-…); Gradio's Dataframe names each body cell
`[data-testid="cell-ROW-COL"]` and edits it in a textarea after a double-click.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.ui.screenshots import EDITOR  # noqa: F401  (the debug hook, one definition for the app's tools and tests)

CHROMIUM = Path("/usr/bin/chromium")
STARTER = json.loads(
    (Path(__file__).resolve().parents[1] / "pipelines" / "templates" / "txt2img-embedded.json").read_text(
        encoding="utf-8"
    )
)
RUN_TIMEOUT_MS = 180_000  # the first run loads the embedded model


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright (one per test module: Playwright's sync API runs one at a time)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield browser
        finally:
            browser.close()


def open_page(context: Any, url: str, dialogs: list[str]) -> Any:
    """A new page of `context` on `url`, up to the editor being mounted; alert/confirm/prompt messages are
    appended to `dialogs` and dismissed."""
    page = context.new_page()
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(url)
    page.wait_for_function("document.querySelector('.fc-root')?.flowcanvas !== undefined")
    return page


def open_app(browser: Any, url: str) -> Any:
    """A new page on the app, loaded up to the canvas's starter workflow."""
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    page.goto(url)
    page.wait_for_function("document.querySelector('.fc-root')?.flowcanvas?.graph.nodeIds().length > 0")
    return page


def open_tab(page: Any, label: str) -> None:
    page.get_by_role("tab", name=label).click()


def set_cell(page: Any, table: str, row: int, column: int, text: str) -> None:
    """Type `text` into one cell of the editable Dataframe `#table` (Enter commits the edit)."""
    page.locator(f'#{table} [data-testid="cell-{row}-{column}"]').dblclick()
    editor = page.locator(f'#{table} [data-testid="cell-{row}-{column}"] textarea')
    editor.fill(text)
    editor.press("Enter")


def cell_texts(page: Any, table: str, column: int) -> list[str]:
    """The texts of one column of a Dataframe's body, top to bottom."""
    return page.locator(f'#{table} [role="gridcell"][data-col="{column}"]').all_inner_texts()


def markdown(page: Any, element_id: str) -> str:
    """The rendered text of the gr.Markdown `#element_id` (without its progress overlay)."""
    return page.inner_text(f'#{element_id} [data-testid="markdown"]').strip()


def wait_for_text(page: Any, selector: str, text: str, timeout: float = RUN_TIMEOUT_MS) -> None:
    page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.innerText.includes(text)",
        arg=[selector, text],
        timeout=timeout,
    )


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def broken_header_words(page: Any, table: str) -> list[str]:
    """The words of the Dataframe `#table`'s visible headers that wrap inside themselves ("ve rs io n"): a word whose
    text lies on more than one line."""
    return page.evaluate(
        """(table) => {
             const broken = [];
             for (const header of document.querySelectorAll(`#${table} thead th`)) {
               const walker = document.createTreeWalker(header, NodeFilter.SHOW_TEXT);
               for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                 for (const word of node.textContent.matchAll(/\\S+/g)) {
                   const range = document.createRange();
                   range.setStart(node, word.index);
                   range.setEnd(node, word.index + word[0].length);
                   const lines = new Set([...range.getClientRects()].map((rect) => Math.round(rect.top)));
                   if (lines.size > 1) broken.push(word[0]);
                 }
               }
             }
             return broken;
           }""",
        table,
    )


# Dispatches a file drop at a client point as a browser would (dragenter, dragover, drop, with a DataTransfer
# holding the file); returns whether a handler took the drop (preventDefault).
DROP_FILE = """([x, y, name, type, base64]) => {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const target = document.elementFromPoint(x, y);
  const init = { bubbles: true, cancelable: true, composed: true, clientX: x, clientY: y, dataTransfer: data };
  target.dispatchEvent(new DragEvent("dragenter", init));
  target.dispatchEvent(new DragEvent("dragover", init));
  return !target.dispatchEvent(new DragEvent("drop", init));
}"""


def drop_file_at(page: Any, x: float, y: float, name: str, mime: str, data: bytes) -> bool:
    """Drop a file named `name` (`mime`, content `data`) at page point (x, y); True when the page took the drop."""
    import base64

    return page.evaluate(DROP_FILE, [x, y, name, mime, base64.b64encode(data).decode("ascii")])


def wire_ends_apart(page: Any, root: str = ".fc-root") -> list[float]:
    """How far apart each drawn wire's two ends are (world px) in the editor `root`: 0 for a wire collapsed to a
    point, as wires drawn while the canvas had no size were."""
    return page.evaluate(
        """(root) => [...document.querySelector(root).querySelectorAll('path.fc-wire[data-to]')].map((path) => {
      const numbers = path.getAttribute('d').match(/-?[0-9.]+/g).map(Number);
      return Math.hypot(numbers.at(-2) - numbers[0], numbers.at(-1) - numbers[1]);
    })""",
        root,
    )

// The node palette (categories and search, drag to the canvas) and the canvas's double-click search-and-add.

import { el } from "./nodes_view.mjs";

const DRAG_TYPE = "application/x-flowcanvas-node";
const QUICK_LIMIT = 12;
const RESULTS_HEIGHT = 260; // px: the quick-add list's height at most, where the canvas has room for it
const EDGE = 6; // px kept between the quick-add box and the canvas's edges

/**
 * Node specs matching a search: every word must appear in the type, category or description; type matches first.
 * @param {{type: string, category: string, description?: string}[]} specs @param {string} query
 */
export function searchNodes(specs, query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  const scored = [];
  for (const spec of specs) {
    const name = spec.type.toLowerCase();
    const haystack = `${name} ${spec.category} ${(spec.description ?? "").toLowerCase()}`;
    if (!words.every((word) => haystack.includes(word))) continue;
    scored.push([words.every((word) => name.includes(word)) ? (name.startsWith(words[0] ?? "") ? 0 : 1) : 2, spec]);
  }
  return scored.sort((a, b) => a[0] - b[0] || a[1].type.localeCompare(b[1].type)).map(([, spec]) => spec);
}

function item(spec) {
  const row = el("div", "fc-item", spec.type);
  row.dataset.type = spec.type;
  if (spec.description) row.title = spec.description;
  return row;
}

/**
 * Fill the palette from the editor's catalogue and handle adding nodes from it.
 * @param {import("./bridge.mjs").Editor} editor
 */
export function installPalette(editor) {
  const { root, viewport } = editor;
  const specs = editor.catalogue.nodes;
  const list = root.querySelector(".fc-palette-list");
  const search = root.querySelector(".fc-search");
  const canvas = viewport.canvas;
  const centre = () => {
    const box = canvas.getBoundingClientRect();
    return viewport.toWorld(box.left + box.width / 2 - 110, box.top + box.height / 2 - 60);
  };

  const categories = [...new Set(specs.map((spec) => spec.category))].sort();
  for (const category of categories) {
    const group = el("details", "fc-category");
    group.open = true;
    group.dataset.category = category;
    group.append(el("summary", "", category), ...specs.filter((s) => s.category === category).sort((a, b) => a.type.localeCompare(b.type)).map(item));
    list.append(group);
  }
  for (const row of list.querySelectorAll(".fc-item")) row.draggable = true;

  search.addEventListener("input", () => {
    const shown = new Set(searchNodes(specs, search.value).map((spec) => spec.type));
    for (const group of list.querySelectorAll(".fc-category")) {
      let any = false;
      for (const row of group.querySelectorAll(".fc-item")) {
        row.hidden = !shown.has(row.dataset.type);
        any ||= !row.hidden;
      }
      group.hidden = !any;
    }
  });
  search.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    const first = searchNodes(specs, search.value)[0];
    if (first) editor.addNode(first.type, centre());
  });

  list.addEventListener("dragstart", (event) => {
    const row = event.target.closest(".fc-item");
    if (!row) return;
    event.dataTransfer.setData(DRAG_TYPE, row.dataset.type);
    event.dataTransfer.effectAllowed = "copy";
  });
  list.addEventListener("dblclick", (event) => {
    const row = event.target.closest(".fc-item");
    if (row) editor.addNode(row.dataset.type, centre());
  });
  canvas.addEventListener("dragover", (event) => {
    if (!event.dataTransfer.types.includes(DRAG_TYPE)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  canvas.addEventListener("drop", (event) => {
    const type = event.dataTransfer.getData(DRAG_TYPE);
    if (!type) return;
    event.preventDefault();
    editor.addNode(type, viewport.toWorld(event.clientX, event.clientY));
  });

  installQuickAdd(editor, specs);
}

/** Double-click on the empty canvas: a search box there; Enter or a click adds the node at that point. */
function installQuickAdd(editor, specs) {
  const { root, viewport } = editor;
  const canvas = viewport.canvas;
  const box = root.querySelector(".fc-quickadd");
  const input = box.querySelector("input");
  const results = box.querySelector(".fc-quick-results");
  let at = [0, 0];
  let active = 0;
  let matches = [];

  const show = () => {
    matches = searchNodes(specs, input.value).slice(0, QUICK_LIMIT);
    active = Math.min(active, Math.max(0, matches.length - 1));
    results.replaceChildren(...matches.map((spec, i) => {
      const row = item(spec);
      row.append(el("span", "fc-item-category", spec.category));
      row.classList.toggle("fc-active", i === active);
      return row;
    }));
  };
  /**
   * Put the box at a client point, inside the canvas: it opens downwards where its results fit below the point,
   * else upwards from it (growing and shrinking from the bottom as the results change), and never past an edge.
   */
  const place = (clientX, clientY) => {
    const frame = canvas.getBoundingClientRect();
    const x = clientX - frame.left;
    const y = clientY - frame.top;
    const around = box.offsetHeight - results.offsetHeight; // the input with its margins, the list's padding
    results.style.maxHeight = `${Math.min(RESULTS_HEIGHT, frame.height - 2 * EDGE - around)}px`;
    const height = box.offsetHeight;
    box.style.left = `${Math.max(EDGE, Math.min(x, frame.width - box.offsetWidth - EDGE))}px`;
    const below = y + height <= frame.height - EDGE;
    box.style.top = below ? `${y}px` : "";
    box.style.bottom = below ? "" : `${Math.max(EDGE, Math.min(frame.height - y, frame.height - height - EDGE))}px`;
  };
  const close = () => {
    box.hidden = true;
    root.focus({ preventScroll: true });
  };
  const add = (type) => {
    close();
    editor.addNode(type, at);
  };

  canvas.addEventListener("dblclick", (event) => {
    if (event.target.closest(".fc-node, .fc-quickadd, .fc-scope")) return;
    at = viewport.toWorld(event.clientX, event.clientY);
    input.value = "";
    active = 0;
    show();
    box.hidden = false;
    place(event.clientX, event.clientY);
    input.focus();
  });
  input.addEventListener("input", () => {
    active = 0;
    show();
  });
  input.addEventListener("keydown", (event) => {
    event.stopPropagation(); // the canvas's shortcuts (Delete, Ctrl+Z) are not for this box
    if (event.key === "Escape") close();
    else if (event.key === "Enter" && matches[active]) add(matches[active].type);
    else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      active = (active + (event.key === "ArrowDown" ? 1 : -1) + matches.length) % Math.max(1, matches.length);
      show();
    }
  });
  input.addEventListener("blur", () => setTimeout(() => {
    if (!box.contains(document.activeElement)) box.hidden = true;
  }, 150));
  results.addEventListener("pointerdown", (event) => {
    const row = event.target.closest(".fc-item");
    if (row) {
      event.preventDefault();
      add(row.dataset.type);
    }
  });
}

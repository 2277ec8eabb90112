// The nodes on the canvas: one keyed DOM element per node, widgets generated from the catalogue's param specs.
//
// Every string from a workflow or the catalogue goes in as text (textContent, attributes), never as markup.
// A node's element is rebuilt only when its structure changes (type, title, which inputs are wired); param
// values are written into the existing widgets, so a widget being typed in keeps its focus. Inside an opened
// subgraph, the definition's ports are shown as read-only pills beside the inputs they feed and outputs they give.

import { SUBGRAPH_TYPE } from "./graph.mjs";

// Params of these types have an input socket too (graph.mjs WIREABLE_PARAM_TYPES, the server's param_socket_type).
const WIREABLE = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "PROMPTS"]);
// Seeds are drawn from the integers a JavaScript number holds exactly, so the seed shown is the seed run.
const SEED_LIMIT = Number.MAX_SAFE_INTEGER;

/**
 * @typedef {{name: string, title?: string, type: string, required?: boolean, default?: unknown, description?: string, choices?: unknown[],
 *   minimum?: number, maximum?: number, step?: number, widget?: string}} ParamSpec
 * @typedef {{node: string|null, field: string|null, code: string, message: string, hint?: string|null}} Issue
 * @typedef {{state: string, step?: number, total?: number, seconds?: number, preview?: string, images?: string[], error?: string, warnings?: string[]}} NodeRun
 * @typedef {{onParam(node: string, name: string, value: unknown): void, onTitle(node: string, title: string): void,
 *   onUpload(file: File): Promise<{path?: string, thumbnail?: string|null, error?: string}>,
 *   thumbnail(path: string): Promise<string|null>, fileUrl(url: string): string, onOpen(node: string): void}} NodeCallbacks
 * @typedef {{inputs: {name: string, targets?: {node: string, input: string}[]}[], outputs: {name: string, source?: {node: string, output: string}}[]}} ScopePorts
 * @typedef {{inputs: Record<string, string[]>, outputs: Record<string, string[]>}} NodePorts the port names at each socket of one node
 */

const STATE_LABELS = { queued: "queued", running: "running", cached: "cached", done: "done", failed: "failed", stopped: "stopped" };

/** @param {string} tag @param {string} [className] @param {string} [text] @returns {HTMLElement} */
export function el(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

// Words of names shown in capitals (nodes/registry.py param_spec titles params the same way).
const ACRONYMS = new Set(["cfg", "lr", "nfe", "t5", "vae"]);

/** A snake_case name as a label: "negative_prompt" → "Negative prompt", "vae" → "VAE". @param {string} name */
export function humanise(name) {
  const spaced = name.split("_").map((word) => (ACRONYMS.has(word) ? word.toUpperCase() : word)).join(" ");
  return spaced.charAt(0).toUpperCase() + spaced.slice(1);
}

/** What hovering a socket or param says: its label in full, the name documents and the command line use, what it is. */
function hoverText(title, name, description) {
  return `${title} (${name})${description ? `: ${description}` : ""}`;
}

function socketDot(node, name, side, type, colours) {
  const dot = el("span", `fc-socket fc-${side}`);
  Object.assign(dot.dataset, { node, name, side, type });
  dot.style.setProperty("--socket", colours[type] ?? "#9e9e9e");
  dot.title = type;
  return dot;
}

/** The ports at one node's sockets. @param {ScopePorts | null} ports @param {string} id @returns {NodePorts} */
function portsAt(ports, id) {
  const at = { inputs: {}, outputs: {} };
  for (const port of ports?.inputs ?? []) {
    for (const target of port.targets ?? []) if (target.node === id) (at.inputs[target.input] ??= []).push(port.name);
  }
  for (const port of ports?.outputs ?? []) {
    if (port.source?.node === id) (at.outputs[port.source.output] ??= []).push(port.name);
  }
  return at;
}

/** A read-only pill naming the subgraph ports at a socket. @param {string[]} names @param {"in"|"out"} side */
function portPill(names, side) {
  const pill = el("span", `fc-port fc-port-${side}`, side === "in" ? `${names.join(", ")} ▸` : `▸ ${names.join(", ")}`);
  pill.title = side === "in"
    ? `Subgraph input ${names.join(", ")}: the value wired into the Subgraph node's socket comes in here`
    : `Subgraph output ${names.join(", ")}: the Subgraph node's socket gives this value`;
  return pill;
}

function toText(param, value) {
  if (value === null || value === undefined) return "";
  if (param.type === "PROMPTS" && Array.isArray(value)) return value.join("\n");
  if (typeof value === "string" || typeof value === "number") return String(value);
  return JSON.stringify(value);
}

/** The value a widget's text stands for; a blank number is null (the server says whether that is allowed). */
function fromText(param, text) {
  switch (param.type) {
    case "INT":
    case "FLOAT":
      return text.trim() === "" ? null : Number(text);
    case "PROMPTS":
      return text.split("\n").filter((line) => line.trim() !== "");
    case "STRING":
      return text;
    default:
      try {
        return JSON.parse(text);
      } catch {
        return text; // the graph refuses it with a message saying what was expected
      }
  }
}

/** The widget for one param, and how to write a value into it. */
function buildWidget(id, param, callbacks) {
  const send = (value) => callbacks.onParam(id, param.name, value);
  if (Array.isArray(param.choices)) {
    const select = el("select", "fc-widget");
    param.choices.forEach((choice, i) => {
      const option = el("option", "", typeof choice === "string" ? choice : JSON.stringify(choice));
      option.value = String(i); // the index maps back to the choice, whatever its JSON type
      select.append(option);
    });
    select.addEventListener("change", () => send(structuredClone(param.choices[Number(select.value)])));
    const set = (value) => {
      const i = param.choices.findIndex((choice) => JSON.stringify(choice) === JSON.stringify(value));
      select.value = String(i);
    };
    return { element: select, set };
  }
  if (param.type === "BOOLEAN") {
    const box = el("input", "fc-widget fc-check");
    box.type = "checkbox";
    box.addEventListener("change", () => send(box.checked));
    return { element: box, set: (value) => { box.checked = value === true; } };
  }
  if (param.widget === "image_upload") return buildImageWidget(param, send, callbacks);
  if (param.widget === "color") {
    const picker = el("input", "fc-widget fc-colour");
    picker.type = "color";
    picker.addEventListener("change", () => send(picker.value));
    return { element: picker, set: (value) => { if (typeof value === "string") picker.value = value; } };
  }
  const multiline = param.widget === "multiline" || param.type === "PROMPTS" || !["INT", "FLOAT", "STRING"].includes(param.type);
  const input = el(multiline ? "textarea" : "input", "fc-widget");
  if (multiline) input.rows = 2;
  if (param.type === "INT" || param.type === "FLOAT") {
    input.type = "number";
    if (param.minimum != null) input.min = String(param.minimum);
    if (param.maximum != null) input.max = String(param.maximum);
    input.step = param.step != null ? String(param.step) : param.type === "INT" ? "1" : "any";
  } else if (!multiline) {
    input.type = "text";
  }
  input.spellcheck = false;
  // "change", not "input": one edit per finished value (blur or Enter), not one per keystroke.
  input.addEventListener("change", () => send(fromText(param, input.value)));
  const set = (value) => {
    if (document.activeElement !== input) input.value = toText(param, value);
  };
  if (param.widget !== "seed") return { element: input, set };
  const wrap = el("div", "fc-seed");
  const dice = el("button", "fc-dice", "⚄");
  dice.type = "button";
  dice.title = "Random seed";
  const upper = Math.min(param.maximum ?? SEED_LIMIT, SEED_LIMIT);
  const lower = param.minimum ?? 0;
  dice.addEventListener("click", () => send(lower + Math.floor(Math.random() * (upper - lower + 1))));
  wrap.append(input, dice);
  return { element: wrap, set };
}

/**
 * A file path with an Upload button and a thumbnail. The upload goes to Gradio's upload route, then into the
 * data folder (the server keeps it by content); the param becomes the kept file's path.
 */
function buildImageWidget(param, send, callbacks) {
  const wrap = el("div", "fc-image-widget");
  const line = el("div", "fc-image-line");
  const input = el("input", "fc-widget");
  input.type = "text";
  input.spellcheck = false;
  input.placeholder = "a file path, or upload";
  input.addEventListener("change", () => send(input.value));
  const file = el("input");
  file.type = "file";
  file.accept = "image/png,image/jpeg,image/webp";
  file.hidden = true;
  const button = el("button", "fc-upload", "Upload");
  button.type = "button";
  button.title = "Upload a PNG, JPEG or WebP image";
  button.addEventListener("click", () => file.click());
  const thumb = el("img", "fc-thumb");
  thumb.alt = "";
  thumb.hidden = true;
  let shown = null;
  const showThumbnail = (path, url) => {
    shown = path;
    if (url) thumb.src = url;
    thumb.hidden = !url;
  };
  file.addEventListener("change", async () => {
    const chosen = file.files?.[0];
    file.value = "";
    if (!chosen) return;
    button.disabled = true;
    try {
      const kept = await callbacks.onUpload(chosen);
      if (kept.path) {
        showThumbnail(kept.path, kept.thumbnail);
        send(kept.path);
      }
    } finally {
      button.disabled = false;
    }
  });
  line.append(input, button, file);
  wrap.append(line, thumb);
  const set = (value) => {
    const path = typeof value === "string" ? value : "";
    if (document.activeElement !== input) input.value = path;
    if (path === shown) return;
    showThumbnail(path, null);
    if (path) callbacks.thumbnail(path).then((url) => { if (shown === path) showThumbnail(path, url); });
  };
  return { element: wrap, set };
}

/** Keyed DOM of the graph's nodes inside a world-coordinates layer. */
export class NodesView {
  /** @type {Map<string, {element: HTMLElement, signature: string, widgets: Map<string, {set(value: unknown): void, fallback: unknown}>, hints: Map<string, HTMLElement>}>} */
  #nodes = new Map();

  /**
   * @param {HTMLElement} layer
   * @param {Record<string, string>} colours socket type → CSS colour
   * @param {NodeCallbacks} callbacks
   * @param {{readonly?: boolean}} [options] `readonly`: widgets disabled, titles not renamed (a shared workflow)
   */
  constructor(layer, colours, callbacks, { readonly = false } = {}) {
    this.layer = layer;
    this.colours = colours;
    this.callbacks = callbacks;
    this.readonly = readonly;
  }

  /**
   * Bring the DOM in line with the graph.
   * @param {import("./graph.mjs").Graph} graph
   * @param {{selected: Set<string>, issues: Issue[], run?: Record<string, NodeRun>, ports?: ScopePorts | null}} state
   *   `issues` and `run` by the ids of the graph's open scope; `ports` those of the open subgraph (null at the top level)
   */
  render(graph, { selected, issues, run = {}, ports = null }) {
    const ids = new Set(graph.nodeIds());
    for (const [id, view] of this.#nodes) {
      if (!ids.has(id)) {
        view.element.remove();
        this.#nodes.delete(id);
      }
    }
    for (const id of ids) {
      const entry = graph.node(id);
      const spec = graph.specOf(id);
      const at = portsAt(ports, id);
      const signature = JSON.stringify([entry.type, entry.title ?? null, entry.subgraph ?? null, Object.keys(entry.inputs ?? {}).sort(), spec !== null, at]);
      let view = this.#nodes.get(id);
      if (view === undefined || view.signature !== signature) {
        const built = this.#build(id, entry, spec, at);
        if (view === undefined) this.layer.append(built.element);
        else view.element.replaceWith(built.element);
        view = { ...built, signature };
        this.#nodes.set(id, view);
      }
      const [x, y] = entry.position ?? [0, 0];
      view.element.style.left = `${x}px`;
      view.element.style.top = `${y}px`;
      view.element.classList.toggle("fc-selected", selected.has(id));
      view.element.classList.toggle("fc-bypassed", entry.bypass === true);
      // A param the document leaves out runs with its default, so the widget shows that.
      for (const [name, widget] of view.widgets) widget.set(Object.hasOwn(entry.params ?? {}, name) ? entry.params[name] : widget.fallback);
      for (const [name, hint] of view.hints) {
        const text = graph.vocabularyHint(id, name);
        hint.textContent = text ?? "";
        hint.hidden = text === null;
      }
      this.#markIssues(view.element, issues.filter((issue) => issue.node === id));
      this.#markRun(view, run[id] ?? null);
    }
  }

  /** The node element of an id, or null. @param {string} id @returns {HTMLElement | null} */
  element(id) {
    return this.#nodes.get(id)?.element ?? null;
  }

  /** @returns {string[]} the ids shown */
  ids() {
    return [...this.#nodes.keys()];
  }

  /** A socket's centre in world coordinates (layout offsets are untransformed, so zoom does not enter). */
  socketCenter(node, side, name) {
    const view = this.#nodes.get(node);
    const dot = view?.element.querySelector(`.fc-socket.fc-${side}[data-name="${CSS.escape(name)}"]`);
    if (!dot) return null;
    let x = dot.offsetWidth / 2;
    let y = dot.offsetHeight / 2;
    for (let at = dot; at !== null && at !== this.layer; at = at.offsetParent) {
      x += at.offsetLeft;
      y += at.offsetTop;
    }
    return [x, y];
  }

  /** The world rectangle each node covers. @returns {Map<string, {left: number, top: number, right: number, bottom: number}>} */
  boxes() {
    const boxes = new Map();
    for (const [id, { element }] of this.#nodes) {
      const left = element.offsetLeft;
      const top = element.offsetTop;
      boxes.set(id, { left, top, right: left + element.offsetWidth, bottom: top + element.offsetHeight });
    }
    return boxes;
  }

  /** @param {string} id @param {object} entry @param {import("./graph.mjs").NodeSpec | null} spec @param {NodePorts} ports */
  #build(id, entry, spec, ports) {
    const node = el("div", "fc-node");
    node.dataset.node = id;
    const header = el("div", "fc-header");
    const title = el("span", "fc-title", entry.title || entry.type);
    header.append(title);
    if (entry.title) header.append(el("span", "fc-type", entry.type));
    node.append(header);
    if (!this.readonly) {
      title.title = "Double-click to rename";
      title.addEventListener("dblclick", (event) => {
        event.stopPropagation();
        this.#rename(id, title, entry.title ?? "");
      });
    }
    const widgets = new Map();
    const hints = new Map();
    if (spec === null) {
      node.classList.add("fc-unknown");
      node.append(el("div", "fc-note", `unknown node type ${entry.type}`));
      return { element: node, widgets, hints };
    }
    if (spec.description) node.title = spec.description;
    const columns = el("div", "fc-ports");
    const inputs = el("div", "fc-inputs");
    const outputs = el("div", "fc-outputs");
    for (const input of spec.inputs) {
      const row = el("div", "fc-row fc-field");
      row.dataset.name = input.name;
      row.append(socketDot(id, input.name, "in", input.type, this.colours), el("span", "fc-label", humanise(input.name) + (input.optional ? "" : " *")));
      if (ports.inputs[input.name]) row.append(portPill(ports.inputs[input.name], "in"));
      row.title = hoverText(humanise(input.name), input.name, input.description);
      inputs.append(row);
    }
    for (const output of spec.outputs) {
      const row = el("div", "fc-row");
      row.append(el("span", "fc-label", humanise(output.name)), socketDot(id, output.name, "out", output.type, this.colours));
      if (ports.outputs[output.name]) row.append(portPill(ports.outputs[output.name], "out"));
      row.title = hoverText(humanise(output.name), output.name, output.description);
      outputs.append(row);
    }
    columns.append(inputs, outputs);
    node.append(columns);
    if (entry.type === SUBGRAPH_TYPE) {
      const open = el("button", "fc-open", "Open ›");
      open.type = "button";
      open.title = "Edit the nodes inside (double-click the node, or Tab)";
      open.addEventListener("click", () => this.callbacks.onOpen(id));
      node.append(open);
    }
    for (const param of spec.params) {
      const row = el("div", "fc-param fc-field");
      row.dataset.name = param.name;
      const title = param.title ?? humanise(param.name);
      row.title = hoverText(title, param.name, param.description);
      if (WIREABLE.has(param.type)) row.append(socketDot(id, param.name, "in", param.type, this.colours));
      if (ports.inputs[param.name]) row.append(portPill(ports.inputs[param.name], "in"));
      row.append(el("span", "fc-label", title));
      if (Object.hasOwn(entry.inputs ?? {}, param.name)) {
        row.append(el("span", "fc-linked", "← wired"));
      } else {
        const widget = buildWidget(id, param, this.callbacks);
        row.append(widget.element);
        widgets.set(param.name, { ...widget, fallback: param.default ?? null });
      }
      node.append(row);
      if (param.vocabulary_from) {
        const hint = el("div", "fc-hint");
        hint.hidden = true;
        hints.set(param.name, hint);
        node.append(hint);
      }
    }
    node.append(el("div", "fc-errors"));
    node.append(el("div", "fc-run"));
    if (this.readonly) {
      for (const control of node.querySelectorAll("input, select, textarea, button:not(.fc-open)")) control.disabled = true;
    }
    return { element: node, widgets, hints };
  }

  /** The node's part of the run: state badge, progress bar, latest preview, output images. Rebuilt only when it changes. */
  #markRun(view, entry) {
    const key = JSON.stringify(entry);
    if (view.runKey === key) return;
    view.runKey = key;
    const node = view.element;
    for (const state of Object.keys(STATE_LABELS)) node.classList.toggle(`fc-state-${state}`, entry?.state === state);
    const box = node.querySelector(".fc-run");
    if (box === null) return;
    if (entry === null) {
      box.replaceChildren();
      return;
    }
    const parts = [];
    let label = STATE_LABELS[entry.state] ?? entry.state;
    if (entry.state === "running" && entry.total) label += ` ${entry.step}/${entry.total}`;
    if (entry.seconds != null && entry.state === "done") label += ` ${entry.seconds < 10 ? entry.seconds.toFixed(2) : entry.seconds.toFixed(1)} s`;
    const badge = el("div", "fc-badge", label);
    badge.dataset.state = entry.state;
    parts.push(badge);
    if (entry.state === "running" && entry.total) {
      const bar = el("div", "fc-progress");
      const fill = el("div", "fc-bar");
      fill.style.width = `${Math.round((100 * (entry.step ?? 0)) / entry.total)}%`;
      bar.append(fill);
      parts.push(bar);
    }
    if (entry.error) parts.push(el("div", "fc-run-error", entry.error));
    for (const warning of entry.warnings ?? []) parts.push(el("div", "fc-run-warning", `⚠ ${warning}`));
    const images = entry.images?.length ? entry.images : entry.preview && entry.state !== "done" && entry.state !== "cached" ? [entry.preview] : [];
    if (images.length > 0) {
      const strip = el("div", "fc-images");
      for (const url of images) {
        const image = el("img", entry.images?.length ? "fc-output-image" : "fc-preview");
        image.alt = entry.images?.length ? "output" : "preview";
        image.src = this.callbacks.fileUrl(url);
        strip.append(image);
      }
      parts.push(strip);
    }
    box.replaceChildren(...parts);
  }

  /** Put the node's title in edit mode (as double-clicking it does). @param {string} id */
  startRename(id) {
    const title = this.#nodes.get(id)?.element.querySelector(".fc-title");
    if (title) title.dispatchEvent(new MouseEvent("dblclick", { bubbles: true }));
  }

  #rename(id, title, current) {
    const input = el("input", "fc-rename");
    input.value = current;
    let done = false;
    const finish = (save) => {
      if (done) return;
      done = true;
      input.replaceWith(title);
      if (save && input.value !== current) this.callbacks.onTitle(id, input.value);
    };
    input.addEventListener("keydown", (event) => {
      event.stopPropagation();
      if (event.key === "Enter") finish(true);
      if (event.key === "Escape") finish(false);
    });
    input.addEventListener("blur", () => finish(true));
    title.replaceWith(input);
    input.focus();
    input.select();
  }

  #markIssues(node, issues) {
    node.classList.toggle("fc-has-error", issues.length > 0);
    const fields = new Set(issues.map((issue) => issue.field));
    for (const row of node.querySelectorAll(".fc-field")) {
      row.classList.toggle("fc-field-error", fields.has(row.dataset.name));
    }
    const list = node.querySelector(".fc-errors");
    if (list === null) return;
    list.replaceChildren(...issues.map((issue) => el("div", "fc-error", (issue.field ? `${issue.field}: ` : "") + issue.message)));
  }
}

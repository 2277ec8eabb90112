// A run on the canvas: what the toolbar, the status line and the outputs panel show of the `run_state` prop.
//
// The state comes from Python (app/ui/canvas_runs.py RunState): {run_id, status, nodes: {id: NodeRun}, outputs:
// [{node, url}], error, seconds}. Node decorations are drawn by NodesView from `nodes`; this module keeps the
// last state, the run buttons and the outputs panel. Images are built with src attributes only, captions as text.
// Run entries are keyed by the server's node ids (flattened: outer/inner); the canvas shows those of its open scope.

import { splitFlatId } from "./graph.mjs";
import { el } from "./nodes_view.mjs";

const ACTIVE = new Set(["submitting", "queued", "running"]);

/** A URL from the server, under the app's root path when it is an absolute path (a sub-path mount). */
export function serverUrl(url) {
  if (typeof url !== "string" || !url.startsWith("/")) return url;
  const root = (globalThis.gradio_config?.root ?? "").replace(/\/$/, "");
  return root + url;
}

/** @typedef {{run_id: string|null, status: string|null, nodes?: Record<string, object>, outputs?: {node: string, url: string}[], error?: {message?: string, node?: string, canvas_node?: string}|null, seconds?: number|null}} RunStateValue */

export class RunView {
  /** @type {RunStateValue} */
  state = { run_id: null, status: null };

  /** @param {import("./bridge.mjs").Editor} editor */
  constructor(editor) {
    this.editor = editor;
    this.runButton = editor.root.querySelector(".fc-cmd-run");
    this.cancelButton = editor.root.querySelector(".fc-cmd-cancel");
    this.list = editor.root.querySelector(".fc-output-list");
  }

  get active() {
    return ACTIVE.has(this.state.status);
  }

  /** Per-node run entries, by the server's node ids. */
  get nodes() {
    return this.state.nodes ?? {};
  }

  /**
   * The run entries of the nodes of a scope, by their ids there, for NodesView.
   * @param {string} prefix the graph's scope prefix ("" for the top level)
   */
  nodesIn(prefix) {
    const entries = {};
    for (const [id, entry] of Object.entries(this.nodes)) {
      const at = splitFlatId(id, prefix);
      if (at !== null && at.inside.length === 0) entries[at.node] = entry;
    }
    return entries;
  }

  /** @param {RunStateValue | null | undefined} state */
  show(state) {
    this.state = state && typeof state === "object" ? state : { run_id: null, status: null };
    this.runButton.disabled = this.active;
    this.cancelButton.disabled = !this.active || this.state.run_id === null;
    this.editor.root.dataset.run = this.state.status ?? "";
    this.#panel();
    this.#status();
    this.editor.render();
  }

  clear() {
    this.show(null);
  }

  #status() {
    const { status, nodes = {}, error, seconds } = this.state;
    const entries = Object.values(nodes);
    const settled = entries.filter((n) => ["done", "cached"].includes(n.state)).length;
    const editor = this.editor;
    switch (status) {
      case "submitting":
        editor.notify("Submitting…");
        break;
      case "queued":
        editor.notify("Queued: waiting for the worker.");
        break;
      case "running":
        editor.notify(`Running: ${settled} of ${entries.length} nodes done.`);
        break;
      case "succeeded":
        editor.notify(`Done in ${(seconds ?? 0).toFixed(2)} s (${entries.filter((n) => n.state === "cached").length} cached).`);
        break;
      case "failed": {
        const where = error?.canvas_node ? `${this.#title(error.canvas_node)}: ` : "";
        editor.notify(`Failed: ${where}${error?.message ?? "the run failed"}`, "error");
        break;
      }
      case "cancelled":
        editor.notify("Cancelled.");
        break;
      case "interrupted":
        editor.notify(`Interrupted: ${error?.message ?? "the server stopped during the run"}`, "error");
        break;
      default:
        break; // "invalid" is reported by the validation issues; no run: leave the line alone
    }
  }

  /** A node's title where the canvas shows it (its scope is open), else its server id. @param {string} id */
  #title(id) {
    const graph = this.editor.graph;
    const at = splitFlatId(id, graph.scopePrefix);
    if (at === null || at.inside.length > 0 || !graph.hasNode(at.node)) return id;
    return graph.node(at.node).title || id;
  }

  /** The outputs panel: the run's output images once it has them; while it runs, the live previews so far. */
  #panel() {
    const outputs = this.state.outputs ?? [];
    if (outputs.length > 0) {
      this.list.replaceChildren(...outputs.map((output) => this.#figure(output.node, output.url, this.#title(output.node), true)));
      return;
    }
    // Node entries are keyed at every subgraph level; the top-level ones (no "/") are what the canvas shows.
    const previews = this.active
      ? Object.entries(this.nodes).filter(([id, entry]) => !id.includes("/") && entry.state === "running" && entry.preview)
      : [];
    if (previews.length === 0) {
      this.list.replaceChildren(el("div", "fc-output-empty", this.active ? "Waiting for outputs…" : "Run the workflow to see its images here."));
      return;
    }
    this.list.replaceChildren(...previews.map(([id, entry]) =>
      this.#figure(id, entry.preview, `${this.#title(id)} · preview ${entry.step ?? 0}/${entry.total ?? "?"}`, false)));
  }

  /** One image in the panel, captioned as text; outputs link to the full file, previews (data URLs) do not. */
  #figure(node, url, caption, linked) {
    const figure = el("figure", linked ? "fc-output" : "fc-output fc-output-preview");
    figure.dataset.node = node;
    const image = el("img");
    image.src = serverUrl(url);
    image.alt = `${linked ? "output" : "live preview"} of ${this.#title(node)}`;
    if (linked) {
      const link = el("a");
      link.href = serverUrl(url);
      link.target = "_blank";
      link.rel = "noopener";
      link.append(image);
      figure.append(link);
    } else {
      figure.append(image);
    }
    figure.append(el("figcaption", "", caption));
    return figure;
  }
}

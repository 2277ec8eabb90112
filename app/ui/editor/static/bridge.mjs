// The editor inside Gradio: `mount()` is what the gr.HTML's js_on_load calls (see app/ui/editor/__init__.py).
//
// The gr.HTML value IS the workflow document. Edits are applied to a Graph through History (one undo step
// each) and committed to `props.value` when they finish (pointerup, a widget's change, a key), never per
// pointermove, so Python's `.change` sees whole edits. Python sends validation issues in the `validation` prop
// and a run's progress in `run_state`. Commands go to Python as events with the workflow in their payload
// (validate_graph, run_graph, cancel_run, follow_run). The browser only follows a run: it executes in the
// server's job worker, so closing the tab does not stop it; the page keeps the last run's id and the draft in
// localStorage and, reopened, shows the draft and follows (or replays) that run.
//
// The canvas shows one scope of the document: the top level, or the inside of an opened Subgraph node (the
// graph's scope; a breadcrumb bar leads back). Python names nodes by flattened ids (outer/inner), so issues and
// run entries are mapped onto the open scope's nodes with the graph's scope prefix.
//
// A read-only canvas (the skeleton's root has `data-readonly`, app/ui/editor flow_editor) shows its value for
// looking only: every edit is refused, nothing runs, and the browser's draft and last run are not touched.

import { Graph, GraphError, emptyWorkflow, sameJson, splitFlatId } from "./graph.mjs";
import { History } from "./history.mjs";
import { copySelection, pasteClipboard } from "./clipboard.mjs";
import { Viewport } from "./viewport.mjs";
import { NodesView } from "./nodes_view.mjs";
import { WiresView } from "./wires_view.mjs";
import { installInteraction } from "./interaction.mjs";
import { installPalette } from "./palette.mjs";
import { RunView, serverUrl } from "./run_view.mjs";
import { installOverlays } from "./overlays.mjs";
import { installDrops } from "./drops.mjs";
import { el } from "./nodes_view.mjs";

const DRAFT_KEY = "flowcanvas:draft";
const LAST_RUN_KEY = "flowcanvas:last-run";

/**
 * The workflow as JSON text for an event payload. Gradio checks every object with a string `path` in an event's
 * data as an uploaded file, and refuses the event when it is not in its cache: a LoadImage's params
 * (`{path: "…"}`) would be refused, so the document travels as text.
 * @param {Graph} graph
 */
function workflowText(graph) {
  return JSON.stringify(graph.toWorkflow());
}

/** The document a gr.HTML value stands for: an empty one for no value (None arrives as null or ""). */
function documentOf(value) {
  return value === null || value === undefined || value === "" ? emptyWorkflow() : value;
}

/** localStorage that may be missing or full: the editor works without it. */
const store = {
  get(key) {
    try {
      return globalThis.localStorage?.getItem(key) ?? null;
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      globalThis.localStorage?.setItem(key, value);
    } catch {
      // quota or privacy mode: nothing is kept, nothing breaks
    }
  },
  remove(key) {
    try {
      globalThis.localStorage?.removeItem(key);
    } catch {
      // as for set
    }
  },
};

/** The editor of one canvas: the graph, its history, the selection and the views. */
export class Editor {
  /** @type {Set<string>} */
  selection = new Set();
  /** @type {import("./nodes_view.mjs").Issue[]} the last validation's issues, by flattened node ids */
  issues = [];
  /** The scope prefix the canvas shows, to notice a change of scope (an open, a leave, an undo that trims it). */
  #shownScope = "";
  /** What the breadcrumb bar shows, to rebuild it only when that changes. */
  #shownLevels = "[]";
  /** A fit asked for while the canvas had no size, done when it gets one. */
  #fitWaiting = false;
  /**
   * The run the shown document started (or, after a reload, the one this browser last followed): `id` is null
   * while it is being submitted. Null when it started none: run states of other runs are not shown on it.
   * @type {{id: string|null} | null}
   */
  #ownRun = null;

  /**
   * @param {HTMLElement} root the skeleton's `.fc-root`
   * @param {{nodes: object[], socket_colours: Record<string, string>}} catalogue
   * @param {(workflow: object) => void} commit called with the workflow after each finished edit
   * @param {{trigger(name: string, data: object): void, upload(file: File): Promise<{path: string}>,
   *   server: {keep_upload(path: string): Promise<object>, image_thumbnail(path: string): Promise<string|null>}}} [backend]
   *   the Gradio side (events, uploads, server functions); without it the editor edits but cannot run
   */
  constructor(root, catalogue, commit, backend = null) {
    this.root = root;
    this.readonly = root.hasAttribute("data-readonly");
    this.catalogue = catalogue;
    this.commitWorkflow = commit;
    this.backend = backend;
    this.history = new History();
    this.graph = new Graph(emptyWorkflow(), catalogue);
    const canvas = root.querySelector(".fc-canvas");
    const world = root.querySelector(".fc-world");
    this.viewport = new Viewport(canvas, world);
    this.nodesView = new NodesView(world, catalogue.socket_colours, {
      onParam: (id, name, value) => this.edit((g) => g.setParam(id, name, value)),
      onTitle: (id, title) => this.edit((g) => g.setTitle(id, title)),
      onUpload: (file) => this.uploadImage(file),
      thumbnail: (path) => (backend?.server?.image_thumbnail ? backend.server.image_thumbnail(path).catch(() => null) : Promise.resolve(null)),
      fileUrl: serverUrl,
      onOpen: (id) => this.openSubgraph(id),
    }, { readonly: this.readonly });
    this.wiresView = new WiresView(root.querySelector(".fc-wires"), catalogue.socket_colours);
    this.statusLine = root.querySelector(".fc-status");
    this.scopeBar = root.querySelector(".fc-scope");
    this.scopeBar.addEventListener("click", (event) => {
      const crumb = event.target.closest("button[data-depth]");
      if (crumb) this.leaveTo(Number(crumb.dataset.depth));
    });
    this.runView = new RunView(this);
    // A document opened while the canvas is hidden (another tab shown) is laid out with no size: its sockets sit
    // at 0, 0 and a fit has nothing to fit into. Once the canvas has a size the wires are drawn again, and the
    // fit that had to wait is done.
    new ResizeObserver(() => {
      if (!this.viewport.shown) return;
      this.wiresView.render(this.graph, this.nodesView);
      if (this.#fitWaiting) this.fitView();
    }).observe(canvas);
  }

  /**
   * Apply an edit as one undoable step, redraw, and commit unless `commit` is false (a drag commits at its end).
   * A refused edit (GraphError) changes nothing and is shown in the status line.
   * @template T
   * @param {(graph: Graph) => T} apply
   * @param {{coalesce?: string|null, commit?: boolean}} [options]
   * @returns {T | undefined}
   */
  edit(apply, { coalesce = null, commit = true } = {}) {
    if (this.readonly) {
      this.notify("Read-only: copy the workflow to your library to change it.", "error");
      return undefined;
    }
    let result;
    try {
      result = this.history.edit(this.graph, apply, { coalesce });
    } catch (error) {
      if (!(error instanceof GraphError)) throw error;
      this.notify(error.message, "error");
      this.render(); // puts a refused widget value back
      return undefined;
    }
    this.render();
    if (commit) this.commit();
    return result;
  }

  commit() {
    if (this.readonly) return;
    const workflow = this.graph.toWorkflow();
    store.set(DRAFT_KEY, JSON.stringify(workflow));
    this.commitWorkflow(workflow);
  }

  render() {
    const scopeChanged = this.graph.scopePrefix !== this.#shownScope;
    if (scopeChanged) {
      this.#shownScope = this.graph.scopePrefix;
      this.selection.clear();
    }
    const ids = new Set(this.graph.nodeIds());
    for (const id of this.selection) if (!ids.has(id)) this.selection.delete(id);
    this.nodesView.render(this.graph, {
      selected: this.selection, issues: this.#scopedIssues().marked, run: this.runView?.nodesIn(this.#shownScope), ports: this.graph.scopePorts(),
    });
    this.wiresView.render(this.graph, this.nodesView);
    this.root.querySelector(".fc-empty").hidden = ids.size > 0;
    this.#renderScopeBar();
    if (scopeChanged) this.fitView();
  }

  /** Open a Subgraph node of the scope shown: the canvas shows and edits its definition's nodes. @param {string} id */
  openSubgraph(id) {
    try {
      this.graph.enterSubgraph(id);
    } catch (error) {
      if (!(error instanceof GraphError)) throw error;
      this.notify(error.message, "error");
      return;
    }
    this.render();
  }

  /** Go up to the scope `depth` levels down from the top (0: the workflow itself). @param {number} depth */
  leaveTo(depth) {
    while (this.graph.scope.length > depth) this.graph.leaveSubgraph();
    this.render();
  }

  /** Go one level up; false at the top level. */
  leaveSubgraph() {
    if (this.graph.scope.length === 0) return false;
    this.leaveTo(this.graph.scope.length - 1);
    return true;
  }

  /** The breadcrumb bar: Workflow › each opened Subgraph node, the outer ones clickable; hidden at the top level. */
  #renderScopeBar() {
    const levels = this.graph.scopeLevels();
    const key = JSON.stringify(levels);
    if (key === this.#shownLevels) return;
    this.#shownLevels = key;
    this.viewport.canvas.classList.toggle("fc-inside", levels.length > 0);
    this.scopeBar.hidden = levels.length === 0;
    const crumb = (label, depth) => {
      const button = el("button", "fc-crumb", label);
      button.type = "button";
      button.dataset.depth = String(depth);
      button.title = depth === 0 ? "Back to the workflow (Shift+Tab goes up one level)" : `Back to ${label}`;
      return button;
    };
    const parts = [crumb("Workflow", 0)];
    levels.forEach((level, i) => {
      const label = level.title || level.name || level.node;
      parts.push(el("span", "fc-crumb-sep", "›"), i === levels.length - 1 ? el("span", "fc-crumb fc-current", label) : crumb(label, i + 1));
    });
    const open = levels.at(-1);
    if (open !== undefined) {
      const uses = el("span", "fc-scope-uses", `subgraph ${open.subgraph} · used by ${open.uses} node${open.uses === 1 ? "" : "s"}`);
      uses.classList.toggle("fc-shared", open.uses > 1);
      uses.title = open.uses > 1 ? "Edits here change every Subgraph node that uses this definition" : "Only this Subgraph node uses this definition";
      parts.push(uses);
    }
    this.scopeBar.replaceChildren(...parts);
  }

  /**
   * The issues marked on the scope's nodes and the others. An issue inside a Subgraph node of the scope is marked
   * on it, its message saying where inside.
   * @returns {{marked: import("./nodes_view.mjs").Issue[], general: import("./nodes_view.mjs").Issue[]}}
   */
  #scopedIssues() {
    const marked = [];
    const general = [];
    for (const issue of this.issues) {
      const at = issue.node ? splitFlatId(issue.node, this.graph.scopePrefix) : null;
      if (at === null || !this.graph.hasNode(at.node)) general.push(issue);
      else if (at.inside.length === 0) marked.push(issue);
      else marked.push({ ...issue, node: at.node, field: null, message: `${[...at.inside, ...(issue.field ? [issue.field] : [])].join(".")}: ${issue.message}` });
    }
    return { marked, general };
  }

  /** @param {string} message @param {"info"|"error"} [kind] */
  notify(message, kind = "info") {
    this.statusLine.textContent = message;
    this.statusLine.dataset.kind = kind;
  }

  /** Start on a workflow (the draft or the page's value, when mounted): history starts empty. @param {object | null} workflow */
  load(workflow) {
    try {
      this.graph.replaceWorkflow(documentOf(workflow));
    } catch (error) {
      if (!(error instanceof GraphError)) throw error;
      this.notify(`cannot open this workflow: ${error.message}`, "error");
    }
    this.graph.leaveToTop(); // a different document: its subgraphs are not the ones that were open
    this.history.clear();
    this.selection.clear();
    this.issues = [];
    this.render();
    requestAnimationFrame(() => this.fitView()); // after the canvas has its size
  }

  /**
   * Show a document set from Python (opened from the Library, imported, a run reopened) as one undoable step,
   * and keep it as this browser's draft, so a reload shows it rather than what was open before.
   * @param {object|null} workflow
   */
  open(workflow) {
    if (this.readonly) this.load(workflow);
    else this.replaceDocument(documentOf(workflow));
  }

  /** Replace the document with an empty one, as one undoable step (toolbar "New"). */
  clear() {
    this.replaceDocument(emptyWorkflow(this.graph.toWorkflow().name));
  }

  /**
   * Put another document in place of the one shown, as one undoable step (opened from Python, dropped, New).
   * The run shown, its issues and its images belonged to the document before: they go, and that run's later
   * states are not shown (it goes on in the server).
   * @param {object} workflow
   * @returns {boolean} whether it opened (a workflow that does not fit the catalogue leaves everything as it was)
   */
  replaceDocument(workflow) {
    try {
      new Graph(workflow, this.catalogue);
    } catch (error) {
      if (!(error instanceof GraphError)) throw error;
      this.notify(`cannot open this workflow: ${error.message}`, "error");
      return false;
    }
    this.graph.leaveToTop(); // a different document: its subgraphs are not the ones that were open
    this.#ownRun = null;
    store.remove(LAST_RUN_KEY);
    this.issues = [];
    this.selection.clear();
    this.runView.clear();
    this.notify(""); // what it said was about the document before
    this.edit((g) => g.replaceWorkflow(workflow));
    this.fitView();
    return true;
  }

  /** Check the workflow in Python without running it; the issues come back in the `validation` prop. */
  validate() {
    if (!this.readonly) this.backend?.trigger("validate_graph", { workflow: workflowText(this.graph) });
  }

  /**
   * Run the workflow (or only what `target` needs: "run up to here"). Python validates first; issues come back
   * marked on the nodes, a valid run streams its state into `run_state`.
   * @param {string | null} [target] a node of the scope shown
   */
  run(target = null) {
    if (this.backend === null || this.readonly || this.runView.active) return;
    this.#ownRun = { id: null };
    this.runView.show({ run_id: null, status: "submitting" });
    // `up_to`, not `target`: Python reads the payload as attributes of gr.EventData, whose `target` is the component.
    this.backend.trigger("run_graph", { workflow: workflowText(this.graph), up_to: target === null ? null : this.graph.scopePrefix + target });
  }

  cancelRun() {
    const { run_id: runId } = this.runView.state;
    if (this.backend === null || !this.runView.active || !runId) return;
    this.notify("Cancelling…");
    this.backend.trigger("cancel_run", { run_id: runId });
  }

  /**
   * Show a run's state (from the `run_state` prop) when it is the shown document's run, and remember the run, to
   * follow it again after a reload. States of a run started from a document since replaced are left out.
   * @param {import("./run_view.mjs").RunStateValue | null} state
   */
  showRun(state) {
    const runId = state?.run_id ?? null;
    if (this.#ownRun === null) return;
    if (this.#ownRun.id === null && runId !== null) this.#ownRun.id = runId; // the submitted run got its id
    else if (this.#ownRun.id !== runId) return;
    if (runId !== null) store.set(LAST_RUN_KEY, runId);
    this.runView.show(state);
  }

  /** Follow the run this browser last started (after a reload or a restart: replayed, or rebuilt from storage). */
  followLastRun() {
    const runId = store.get(LAST_RUN_KEY);
    if (this.backend === null || !runId) return;
    this.#ownRun = { id: runId };
    this.backend.trigger("follow_run", { run_id: runId });
  }

  /** Upload an image file and keep it in the data folder; resolves to {path, thumbnail} or {error}. */
  async uploadImage(file) {
    if (this.backend === null) return { error: "uploads need the server" };
    this.notify(`Uploading ${file.name}…`);
    try {
      const sent = await this.backend.upload(file);
      const kept = await this.backend.server.keep_upload(sent.path);
      if (kept.error) this.notify(`Upload refused: ${kept.error}`, "error");
      else this.notify(`Uploaded ${file.name}.`);
      return kept;
    } catch (error) {
      this.notify(`Upload failed: ${error?.message ?? error}`, "error");
      return { error: String(error) };
    }
  }

  /** Bypass the selected nodes, or stop bypassing them when all of them already are (one undoable step). */
  toggleBypass() {
    const ids = [...this.selection];
    if (ids.length === 0) return;
    const on = !ids.every((id) => this.graph.node(id).bypass === true);
    this.edit((g) => g.setBypass(ids, on));
  }

  /** Move the selection into a new subgraph node, as one undoable step; the new node becomes the selection. */
  groupSelection() {
    if (this.selection.size < 2) return;
    const made = this.edit((g) => g.groupIntoSubgraph([...this.selection]));
    if (made !== undefined) this.select([made.node]);
  }

  /** Add a node of a catalogue type at a world point and select it. @param {string} type @param {[number, number]} at */
  addNode(type, [x, y]) {
    const id = this.edit((g) => g.addNode(type, { position: [Math.round(x), Math.round(y)] }));
    if (id !== undefined) this.select([id]);
    return id;
  }

  /** @param {string[]} ids @param {{add?: boolean}} [options] */
  select(ids, { add = false } = {}) {
    if (!add) this.selection.clear();
    ids.forEach((id) => this.selection.add(id));
    this.render();
  }

  deleteSelection() {
    if (this.selection.size === 0) return;
    this.edit((g) => g.removeNodes([...this.selection]));
  }

  undo() {
    if (!this.readonly && this.history.undo(this.graph)) this.#afterHistory();
  }

  redo() {
    if (!this.readonly && this.history.redo(this.graph)) this.#afterHistory();
  }

  #afterHistory() {
    this.render();
    this.commit();
  }

  /** The selection as clipboard text, or null when nothing is selected. @returns {string | null} */
  copyText() {
    return this.selection.size === 0 ? null : copySelection(this.graph, [...this.selection]);
  }

  /** Paste clipboard text with its top-left at a world point; the pasted nodes become the selection. */
  paste(text, at) {
    const renamed = this.edit((g) => pasteClipboard(g, text, { at: [Math.round(at[0]), Math.round(at[1])] }));
    if (renamed !== undefined) this.select(Object.values(renamed));
  }

  /** Show validation issues on their nodes and fields; issues about no node go in the status line. */
  showIssues(issues) {
    this.issues = Array.isArray(issues) ? issues : [];
    this.render();
    const { general } = this.#scopedIssues();
    if (this.issues.length === 0) this.notify("Valid: ready to run.");
    else {
      const where = this.issues.length - general.length;
      const parts = [`${this.issues.length} problem${this.issues.length === 1 ? "" : "s"}`];
      if (where > 0) parts.push(`${where} marked on nodes`);
      const described = general.map((issue) => (issue.node ? `${issue.node}: ` : "") + issue.message + (issue.hint ? ` (${issue.hint})` : ""));
      this.notify([parts.join(", "), ...described].join(" · "), "error");
    }
  }

  /** Fit the view to the nodes (or the origin, for an empty graph); while the canvas is hidden, once it shows. */
  fitView() {
    this.#fitWaiting = !this.viewport.shown;
    if (this.#fitWaiting) return;
    const boxes = [...this.nodesView.boxes().values()];
    this.viewport.fit(boxes.length === 0 ? null : {
      left: Math.min(...boxes.map((b) => b.left)), top: Math.min(...boxes.map((b) => b.top)),
      right: Math.max(...boxes.map((b) => b.right)), bottom: Math.max(...boxes.map((b) => b.bottom)),
    });
  }
}

/** Load editor.css once per page; resolves when it applies, since node layout (socket positions) depends on it. */
function ensureStylesheet() {
  const href = new URL("./editor.css", import.meta.url).href;
  let link = document.querySelector(`link[href="${CSS.escape(href)}"]`);
  if (link === null) {
    link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = href;
    link.loaded = new Promise((resolve) => {
      link.addEventListener("load", resolve, { once: true });
      link.addEventListener("error", resolve, { once: true }); // unstyled beats not at all
    });
    document.head.append(link);
  }
  return link.loaded;
}

/**
 * Start the editor in a gr.HTML. `props.value` is the workflow, `props.catalogue` the node catalogue
 * (nodes.catalogue.catalogue()), `props.validation.issues` the issues to mark. For tests and debugging the Editor is
 * reachable as `root.flowcanvas` on the `.fc-root` element once mounted (`document.querySelector('.fc-root')` is
 * the page's first editor, the Canvas tab's).
 * @param {{element: HTMLElement, props: {value: object|null, catalogue: object, validation?: {issues: object[]}}, watch(name: string, callback: () => void): void}} context
 * @returns {Promise<Editor>}
 */
export async function mount({ element, props, watch, trigger, upload, server }) {
  const root = element.querySelector(".fc-root");
  if (root.mounting) return root.mounting; // js_on_load ran again on the same DOM
  root.mounting = ensureStylesheet().then(() => {
    const editor = new Editor(root, props.catalogue, (workflow) => {
      props.value = workflow;
    }, { trigger, upload, server });
    const overlays = installOverlays(editor, { run: (target) => editor.run(target), rename: (id) => editor.nodesView.startRename(id) });
    installInteraction(editor, overlays);
    root.querySelector(".fc-cmd-fit").addEventListener("click", () => editor.fitView());
    // Only values set from Python arrive here: the editor's own commits do not echo back.
    watch("value", () => editor.open(props.value));
    if (editor.readonly) {
      editor.load(props.value);
      root.flowcanvas = editor;
      return editor;
    }
    installPalette(editor);
    installDrops(editor);
    for (const [selector, action] of [[".fc-cmd-new", () => editor.clear()],
      [".fc-cmd-undo", () => editor.undo()], [".fc-cmd-redo", () => editor.redo()],
      [".fc-cmd-validate", () => editor.validate()], [".fc-cmd-run", () => editor.run()],
      [".fc-cmd-cancel", () => editor.cancelRun()]]) {
      root.querySelector(selector).addEventListener("click", action);
    }
    editor.load(restoredDraft(props.catalogue) ?? props.value);
    if (!sameJson(editor.graph.toWorkflow(), props.value)) editor.commit(); // Python should hold what is shown
    watch("validation", () => editor.showIssues(props.validation?.issues));
    watch("run_state", () => editor.showRun(props.run_state));
    root.flowcanvas = editor;
    editor.followLastRun();
    return editor;
  });
  return root.mounting;
}

/** The workflow this browser was last editing, when it still opens against this catalogue; else null. */
function restoredDraft(catalogue) {
  const text = store.get(DRAFT_KEY);
  if (text === null) return null;
  try {
    const workflow = JSON.parse(text);
    new Graph(workflow, catalogue); // throws GraphError when the draft no longer fits
    return workflow;
  } catch {
    return null;
  }
}

// Copy and paste of a selection as JSON text, so it travels through the system clipboard between tabs.
//
// The text holds the selected node entries, the links among them (links from outside are dropped on copy)
// and the subgraph definitions their Subgraph nodes use. Pasting gives fresh ids (the copied ones where
// free), remaps the links and offsets the positions. Exposed fields and groups are not copied.

import { GraphError, SUBGRAPH_TYPE, WORKFLOW_FORMAT, WORKFLOW_VERSION, checkWorkflow, freshId, sameJson } from "./graph.mjs";

export const CLIPBOARD_FORMAT = "flowcanvas.clipboard";
export const CLIPBOARD_VERSION = 1;

const NOT_OURS = "the clipboard does not hold FlowCanvas nodes";

function linksOf(value) {
  return Array.isArray(value) ? value : [value];
}

/** Keep only the links whose source `rename` maps, renamed; an input left with no link is dropped. */
function remapInputs(entry, rename) {
  for (const [input, value] of Object.entries(entry.inputs ?? {})) {
    const kept = linksOf(value).flatMap((link) => (rename.has(link.node) ? [{ node: rename.get(link.node), output: link.output }] : []));
    if (kept.length === 0) delete entry.inputs[input];
    else entry.inputs[input] = Array.isArray(value) ? kept : kept[0];
  }
}

/** The subgraph ids used by Subgraph nodes among `entries`. */
function subgraphsUsed(entries) {
  return entries.filter((entry) => entry.type === SUBGRAPH_TYPE && typeof entry.subgraph === "string").map((entry) => entry.subgraph);
}

/**
 * The selected nodes as clipboard text: their entries, the links among them and the subgraphs they use.
 * @param {import("./graph.mjs").Graph} graph
 * @param {string[]} ids
 * @returns {string}
 */
export function copySelection(graph, ids) {
  const selected = [...new Set(ids)];
  if (selected.length === 0) throw new GraphError("nothing is selected to copy", { code: "empty_selection" });
  const nodes = Object.fromEntries(selected.map((id) => [id, graph.node(id)]));
  const unchanged = new Map(selected.map((id) => [id, id]));
  for (const entry of Object.values(nodes)) remapInputs(entry, unchanged);
  const definitions = graph.toWorkflow().subgraphs ?? {};
  const subgraphs = {};
  const pending = subgraphsUsed(Object.values(nodes));
  while (pending.length > 0) {
    const id = pending.pop();
    if (Object.hasOwn(subgraphs, id) || !Object.hasOwn(definitions, id)) continue;
    subgraphs[id] = definitions[id];
    pending.push(...subgraphsUsed(Object.values(definitions[id].nodes ?? {})));
  }
  return JSON.stringify({ format: CLIPBOARD_FORMAT, version: CLIPBOARD_VERSION, nodes, subgraphs });
}

/**
 * Read clipboard text written by `copySelection`; throws a GraphError (code "not_clipboard") for anything else.
 * @param {string} text
 * @returns {{nodes: Record<string, object>, subgraphs: Record<string, object>}}
 */
export function parseClipboard(text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    throw new GraphError(`${NOT_OURS} (it is not JSON)`, { code: "not_clipboard" });
  }
  if (data === null || typeof data !== "object" || data.format !== CLIPBOARD_FORMAT) {
    const hint = data?.format === WORKFLOW_FORMAT ? " (it holds a whole workflow: open it instead)" : "";
    throw new GraphError(`${NOT_OURS}${hint}`, { code: "not_clipboard" });
  }
  if (data.version !== CLIPBOARD_VERSION) {
    throw new GraphError(`clipboard format version ${JSON.stringify(data.version)} is not supported (this editor reads ${CLIPBOARD_VERSION})`,
      { code: "not_clipboard" });
  }
  const unknown = Object.keys(data).filter((key) => !["format", "version", "nodes", "subgraphs"].includes(key));
  const nodes = data.nodes ?? {};
  const subgraphs = data.subgraphs ?? {};
  try {
    if (unknown.length > 0) throw new GraphError(`unknown field ${unknown[0]}`);
    // The same shape rules as a workflow's nodes and subgraphs.
    checkWorkflow({ format: WORKFLOW_FORMAT, version: WORKFLOW_VERSION, nodes, subgraphs });
  } catch (error) {
    if (!(error instanceof GraphError)) throw error;
    throw new GraphError(`the clipboard's nodes are malformed: ${error.message}`, { node: error.node, field: error.field, code: "not_clipboard" });
  }
  return { nodes, subgraphs };
}

/**
 * Which pasted subgraph definitions can be the graph's own (same id, same content, and so are all they use),
 * and fresh ids for the others.
 */
function subgraphIds(pasted, existing) {
  const reused = new Set(Object.keys(pasted).filter((id) => Object.hasOwn(existing, id) && sameJson(existing[id], pasted[id])));
  let changed = true;
  while (changed) {
    changed = false;
    for (const id of reused) {
      if (subgraphsUsed(Object.values(pasted[id].nodes ?? {})).some((used) => Object.hasOwn(pasted, used) && !reused.has(used))) {
        reused.delete(id);
        changed = true;
      }
    }
  }
  const taken = new Set(Object.keys(existing));
  const ids = new Map();
  for (const id of Object.keys(pasted)) {
    const newId = reused.has(id) ? id : freshId(id, taken);
    taken.add(newId);
    ids.set(id, newId);
  }
  return { ids, reused };
}

/**
 * Paste clipboard text into `graph`: fresh node ids (the copied ones where free), links among the pasted nodes
 * remapped, positions offset by `offset` or, with `at`, the pasted block's top-left corner put there. Text that is
 * not ours throws a GraphError and changes nothing.
 * @param {import("./graph.mjs").Graph} graph
 * @param {string} text
 * @param {{offset?: [number, number], at?: [number, number] | null}} [options]
 * @returns {Record<string, string>} each copied node id → its pasted id
 */
export function pasteClipboard(graph, text, { offset = [40, 40], at = null } = {}) {
  const { nodes, subgraphs } = parseClipboard(text);
  const existing = graph.toWorkflow().subgraphs ?? {};
  const { ids: subgraphRename, reused } = subgraphIds(subgraphs, existing);
  const renameSubgraph = (entry) => {
    if (entry.type === SUBGRAPH_TYPE && subgraphRename.has(entry.subgraph)) entry.subgraph = subgraphRename.get(entry.subgraph);
  };
  const newSubgraphs = {};
  for (const [id, definition] of Object.entries(subgraphs)) {
    if (reused.has(id)) continue;
    const copy = structuredClone(definition);
    Object.values(copy.nodes ?? {}).forEach(renameSubgraph);
    newSubgraphs[subgraphRename.get(id)] = copy;
  }

  const taken = new Set(graph.nodeIds());
  const rename = new Map();
  for (const id of Object.keys(nodes)) {
    rename.set(id, freshId(id, taken));
    taken.add(rename.get(id));
  }
  const positions = Object.values(nodes).map((entry) => entry.position ?? [0, 0]);
  const [dx, dy] = at === null || positions.length === 0
    ? offset
    : [at[0] - Math.min(...positions.map((p) => p[0])), at[1] - Math.min(...positions.map((p) => p[1]))];
  const pasted = {};
  for (const [id, entry] of Object.entries(nodes)) {
    const copy = structuredClone(entry);
    remapInputs(copy, rename);
    renameSubgraph(copy);
    const [x, y] = copy.position ?? [0, 0];
    copy.position = [x + dx, y + dy];
    pasted[rename.get(id)] = copy;
  }
  graph.insertNodes(pasted, newSubgraphs);
  return Object.fromEntries(rename);
}

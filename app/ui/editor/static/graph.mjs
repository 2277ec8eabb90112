// The editor's graph model: a FlowCanvas workflow document (docs/architecture.md, "The workflow file") edited against the node catalogue.
//
// The state IS the workflow document (plain JSON, the shape pipelines/workflow.py accepts), so saving is
// `toWorkflow()` and undo is a snapshot of it. Every edit checks everything first and throws a GraphError
// without changing anything when it refuses. Workflows are data: nothing in them is ever evaluated.

export const WORKFLOW_FORMAT = "flowcanvas.workflow";
export const WORKFLOW_VERSION = 1;
export const SUBGRAPH_TYPE = "Subgraph";
/** Flattened subgraph nodes are named outer/inner, so node ids may not contain it. */
export const ID_SEPARATOR = "/";

// Param types another node's output may feed (the server's `param_socket_type`); "JSON" params are not wireable.
const WIREABLE_PARAM_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "PROMPTS"]);

/** A refused edit or a malformed document; `node` and `field` say where, `code` follows the server's issue codes. */
export class GraphError extends Error {
  /**
   * @param {string} message
   * @param {{node?: string|null, field?: string|null, code?: string}} [where]
   */
  constructor(message, { node = null, field = null, code = "invalid" } = {}) {
    super(message);
    this.name = "GraphError";
    this.node = node;
    this.field = field;
    this.code = code;
  }
}

/**
 * Whether an output of socket type `source` may feed an input of type `target` (nodes/types.py `can_connect`).
 * @param {string} source @param {string} target @returns {boolean}
 */
export function canConnect(source, target) {
  return source === target || (source === "INT" && target === "FLOAT");
}

/**
 * Equality of JSON values, ignoring object key order.
 * @param {unknown} a @param {unknown} b @returns {boolean}
 */
export function sameJson(a, b) {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((item, i) => sameJson(item, b[i]));
  }
  if (!isPlainObject(a) || !isPlainObject(b)) return false;
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => Object.hasOwn(b, key) && sameJson(a[key], b[key]));
}

/**
 * The first id of the form `stem`, `stem_2`, `stem_3`… not in `taken`; `base` itself when free.
 * @param {string} base @param {{has(id: string): boolean}} taken @returns {string}
 */
export function freshId(base, taken) {
  const cleaned = base.replaceAll(ID_SEPARATOR, "_").trim() || "node";
  if (!taken.has(cleaned)) return cleaned;
  const stem = cleaned.replace(/_\d+$/, "") || "node";
  for (let n = 2; ; n += 1) {
    if (!taken.has(`${stem}_${n}`)) return `${stem}_${n}`;
  }
}

/**
 * Where a flattened id (outer/inner/…, as the server names nodes) lies under a scope's `prefix` ("" for the top
 * level, else "outer/…/"): the node of that scope it is or is inside, and the path below that node; null when the
 * id lies outside the scope.
 * @param {string} flatId @param {string} prefix @returns {{node: string, inside: string[]} | null}
 */
export function splitFlatId(flatId, prefix) {
  if (typeof flatId !== "string" || !flatId.startsWith(prefix) || flatId.length === prefix.length) return null;
  const [node, ...inside] = flatId.slice(prefix.length).split(ID_SEPARATOR);
  return { node, inside };
}

/**
 * A readable id stem for a node type: `LoadFlowModel` → `load_flow_model`, `VAEDecode` → `vae_decode`.
 * @param {string} type @returns {string}
 */
export function idStemForType(type) {
  const snake = type
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1_$2")
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .toLowerCase()
    .replace(/[^a-z0-9_]+/g, "_")
    .replace(/^_+|_+$/g, "");
  return snake || "node";
}

/** A new, empty workflow document with every field present (the canonical shape). @param {string} [name] */
export function emptyWorkflow(name = "Untitled") {
  return {
    format: WORKFLOW_FORMAT, version: WORKFLOW_VERSION, name, description: "", tags: [],
    nodes: {}, exposed: [], groups: [], subgraphs: {}, view: { x: 0, y: 0, zoom: 1 },
  };
}

// ---------------------------------------------------------------- document shape (pipelines/workflow.py)

function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function isJsonValue(value) {
  if (value === null || typeof value === "string" || typeof value === "boolean") return true;
  if (typeof value === "number") return Number.isFinite(value);
  if (Array.isArray(value)) return value.every(isJsonValue);
  return isPlainObject(value) && Object.getPrototypeOf(value) === Object.prototype && Object.values(value).every(isJsonValue);
}

function describe(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  return typeof value === "object" ? "an object" : JSON.stringify(value) ?? String(value);
}

/**
 * Checks parts of a document; `at` is the dotted path of the part in messages. For a node's entry, `node` is its
 * id and the error's `field` is the path inside the entry (as the server reports it).
 */
class ShapeChecker {
  constructor(node = null, entryPath = null) {
    this.node = node;
    this.entryPath = entryPath;
  }

  fail(at, message) {
    const field = this.entryPath !== null && at.startsWith(`${this.entryPath}.`) ? at.slice(this.entryPath.length + 1) : at || null;
    throw new GraphError(`${at || "workflow"}: ${message}`, { node: this.node, field, code: "schema" });
  }

  object(value, at, fields) {
    if (!isPlainObject(value)) this.fail(at, `expected an object, got ${describe(value)}`);
    const child = (key) => (at ? `${at}.${key}` : key);
    for (const key of Object.keys(value)) {
      if (!Object.hasOwn(fields, key)) this.fail(child(key), "unknown field");
    }
    for (const [key, check] of Object.entries(fields)) {
      if (value[key] !== undefined) check(value[key], child(key));
    }
  }

  string(value, at, { nullable = false, nonEmpty = false } = {}) {
    if (nullable && value === null) return;
    if (typeof value !== "string") this.fail(at, `expected text, got ${describe(value)}`);
    if (nonEmpty && value.length === 0) this.fail(at, "may not be empty");
  }

  number(value, at) {
    if (typeof value !== "number" || !Number.isFinite(value)) this.fail(at, `expected a number, got ${describe(value)}`);
  }

  list(value, at, checkItem) {
    if (!Array.isArray(value)) this.fail(at, `expected a list, got ${describe(value)}`);
    value.forEach((item, i) => checkItem(item, `${at}[${i}]`));
  }

  link(value, at) {
    this.object(value, at, { node: (v, a) => this.string(v, a), output: (v, a) => this.string(v, a) });
    if (value.node === undefined || value.output === undefined) this.fail(at, "a link needs `node` and `output`");
  }
}

function checkNodeEntry(id, entry, at) {
  const check = new ShapeChecker(id, at);
  check.object(entry, at, {
    type: (v, a) => check.string(v, a, { nonEmpty: true }),
    type_version: (v, a) => {
      if (!Number.isInteger(v) || v < 1) check.fail(a, `expected a whole number ≥ 1, got ${describe(v)}`);
    },
    title: (v, a) => check.string(v, a, { nullable: true }),
    params: (v, a) => {
      if (!isPlainObject(v)) check.fail(a, `expected an object, got ${describe(v)}`);
      for (const [name, value] of Object.entries(v)) {
        if (!isJsonValue(value)) check.fail(`${a}.${name}`, "expected a JSON value");
      }
    },
    inputs: (v, a) => {
      if (!isPlainObject(v)) check.fail(a, `expected an object, got ${describe(v)}`);
      for (const [name, value] of Object.entries(v)) {
        if (Array.isArray(value)) check.list(value, `${a}.${name}`, (link, b) => check.link(link, b));
        else check.link(value, `${a}.${name}`);
      }
    },
    position: (v, a) => {
      if (!Array.isArray(v) || v.length !== 2) check.fail(a, `expected [x, y], got ${describe(v)}`);
      v.forEach((n, i) => check.number(n, `${a}[${i}]`));
    },
    subgraph: (v, a) => check.string(v, a, { nullable: true }),
    bypass: (v, a) => {
      if (typeof v !== "boolean") check.fail(a, `expected true or false, got ${describe(v)}`);
    },
  });
  if (entry.type === undefined) check.fail(at, "a node needs a `type`");
}

function checkNodes(nodes, at) {
  if (!isPlainObject(nodes)) new ShapeChecker().fail(at, `expected an object of nodes by id, got ${describe(nodes)}`);
  for (const [id, entry] of Object.entries(nodes)) checkNodeEntry(id, entry, `${at}.${id}`);
}

function checkSubgraph(definition, at) {
  const check = new ShapeChecker();
  const port = (fields) => (v, a) => {
    check.object(v, a, { name: (n, b) => check.string(n, b, { nonEmpty: true }), type: (t, b) => check.string(t, b), ...fields });
    for (const key of ["name", "type", ...Object.keys(fields).filter((k) => k === "source")]) {
      if (v[key] === undefined) check.fail(a, `a port needs \`${key}\``);
    }
  };
  const target = (v, a) => {
    check.object(v, a, { node: (n, b) => check.string(n, b), input: (n, b) => check.string(n, b) });
    if (v.node === undefined || v.input === undefined) check.fail(a, "a target needs `node` and `input`");
  };
  check.object(definition, at, {
    name: (v, a) => check.string(v, a),
    description: (v, a) => check.string(v, a),
    nodes: (v, a) => checkNodes(v, a),
    inputs: (v, a) => check.list(v, a, port({ targets: (t, b) => check.list(t, b, target) })),
    outputs: (v, a) => check.list(v, a, port({ source: (s, b) => check.link(s, b) })),
  });
}

/**
 * Check that `data` has the shape of a workflow document the server accepts (pipelines/workflow.py); throws a
 * GraphError (code "schema" or "unsupported_version") naming the first problem. Graph validity (links, types,
 * cycles) is the server's to report: a well-formed but invalid graph still loads, so it can be fixed.
 * @param {unknown} data
 */
export function checkWorkflow(data) {
  const check = new ShapeChecker();
  if (!isPlainObject(data)) check.fail("", `a workflow is a JSON object, got ${describe(data)}`);
  if (data.format !== WORKFLOW_FORMAT) {
    throw new GraphError(`not a FlowCanvas workflow: format is ${describe(data.format)}, expected "${WORKFLOW_FORMAT}"`,
      { field: "format", code: "schema" });
  }
  if (!Number.isInteger(data.version) || data.version < 1 || data.version > WORKFLOW_VERSION) {
    throw new GraphError(`workflow format version ${describe(data.version)} is not supported (this editor reads 1..${WORKFLOW_VERSION})`,
      { field: "version", code: "unsupported_version" });
  }
  check.object(data, "", {
    format: () => {},
    version: () => {},
    name: (v, a) => check.string(v, a),
    description: (v, a) => check.string(v, a),
    tags: (v, a) => check.list(v, a, (t, b) => check.string(t, b)),
    nodes: (v, a) => checkNodes(v, a),
    exposed: (v, a) => check.list(v, a, (e, b) => {
      check.object(e, b, {
        node: (n, c) => check.string(n, c), param: (n, c) => check.string(n, c),
        label: (n, c) => check.string(n, c, { nonEmpty: true }),
      });
      if (e.node === undefined || e.param === undefined || e.label === undefined) check.fail(b, "an exposed field needs `node`, `param` and `label`");
    }),
    groups: (v, a) => check.list(v, a, (g, b) => check.object(g, b, {
      title: (t, c) => check.string(t, c),
      nodes: (n, c) => check.list(n, c, (id, d) => check.string(id, d)),
      color: (t, c) => check.string(t, c, { nullable: true }),
    })),
    subgraphs: (v, a) => {
      if (!isPlainObject(v)) check.fail(a, `expected an object of subgraphs by id, got ${describe(v)}`);
      for (const [id, definition] of Object.entries(v)) checkSubgraph(definition, `${a}.${id}`);
    },
    view: (v, a) => check.object(v, a, { x: (n, b) => check.number(n, b), y: (n, b) => check.number(n, b), zoom: (n, b) => check.number(n, b) }),
  });
}

// ---------------------------------------------------------------- params

const patternCache = new Map();

// Pydantic checks patterns with Rust's regex, where \w is Unicode-aware; JavaScript's \w is ASCII-only.
function patternRegExp(pattern) {
  if (patternCache.has(pattern)) return patternCache.get(pattern);
  const word = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}";
  let translated = "";
  let inClass = false;
  for (let i = 0; i < pattern.length; i += 1) {
    const char = pattern[i];
    if (char === "\\" && i + 1 < pattern.length) {
      const next = pattern[i + 1];
      translated += next === "w" ? (inClass ? word : `[${word}]`) : char + next;
      i += 1;
    } else {
      if (char === "[") inClass = true;
      else if (char === "]") inClass = false;
      translated += char;
    }
  }
  let compiled = null;
  for (const [source, flags] of [[translated, "u"], [pattern, ""]]) {
    try {
      compiled = new RegExp(source, flags);
      break;
    } catch {
      // not expressible in JavaScript: try the next form, else leave the check to the server
    }
  }
  patternCache.set(pattern, compiled);
  return compiled;
}

/**
 * Why `value` is not acceptable for a param, or null when it is. Mirrors the server's checks of one field:
 * type, null for optional params, choices, bounds, lengths and pattern.
 * @param {{type: string, required?: boolean, default?: unknown, choices?: unknown[], minimum?: number,
 *   maximum?: number, exclusive_minimum?: number, exclusive_maximum?: number, min_length?: number,
 *   max_length?: number, pattern?: string}} param
 * @param {unknown} value
 * @returns {{code: string, message: string} | null}
 */
export function checkParamValue(param, value) {
  const invalid = (message) => ({ code: "invalid_value", message });
  if (value === null) {
    return !param.required && param.default === null ? null : invalid("may not be empty");
  }
  switch (param.type) {
    case "INT":
      if (typeof value !== "number" || !Number.isInteger(value)) return invalid(`expects a whole number, got ${describe(value)}`);
      break;
    case "FLOAT":
      if (typeof value !== "number" || !Number.isFinite(value)) return invalid(`expects a number, got ${describe(value)}`);
      break;
    case "STRING":
      if (typeof value !== "string") return invalid(`expects text, got ${describe(value)}`);
      break;
    case "BOOLEAN":
      if (typeof value !== "boolean") return invalid(`expects true or false, got ${describe(value)}`);
      break;
    case "PROMPTS":
      if (!Array.isArray(value) || !value.every((item) => typeof item === "string")) return invalid(`expects a list of texts, got ${describe(value)}`);
      break;
    default:
      if (!isJsonValue(value)) return invalid("expects a JSON value");
  }
  if (Array.isArray(param.choices) && !param.choices.some((choice) => sameJson(choice, value))) {
    return { code: "not_in_choices", message: `must be one of ${param.choices.map(describe).join(", ")}, got ${describe(value)}` };
  }
  const outOfBounds = (message) => ({ code: "out_of_bounds", message: `${message}, got ${describe(value)}` });
  if (typeof value === "number") {
    if (param.minimum != null && value < param.minimum) return outOfBounds(`must be at least ${param.minimum}`);
    if (param.exclusive_minimum != null && value <= param.exclusive_minimum) return outOfBounds(`must be greater than ${param.exclusive_minimum}`);
    if (param.maximum != null && value > param.maximum) return outOfBounds(`must be at most ${param.maximum}`);
    if (param.exclusive_maximum != null && value >= param.exclusive_maximum) return outOfBounds(`must be less than ${param.exclusive_maximum}`);
  }
  // Python counts characters (code points), and a list's length is its item count.
  const length = typeof value === "string" ? [...value].length : Array.isArray(value) ? value.length : null;
  if (length !== null) {
    const unit = typeof value === "string" ? "characters" : "items";
    if (param.min_length != null && length < param.min_length) return outOfBounds(`needs at least ${param.min_length} ${unit}`);
    if (param.max_length != null && length > param.max_length) return outOfBounds(`takes at most ${param.max_length} ${unit}`);
  }
  if (typeof value === "string" && typeof param.pattern === "string") {
    const pattern = patternRegExp(param.pattern);
    if (pattern !== null && !pattern.test(value)) return invalid(`must match the pattern ${param.pattern}, got ${describe(value)}`);
  }
  return null;
}

// ---------------------------------------------------------------- the graph

/** @typedef {{node: string, output: string}} Link */
/** @typedef {{from: string, output: string, to: string, input: string, index: number|null}} Wire */
/** @typedef {{name: string, type: string, optional?: boolean, multi?: boolean}} InputSpec */
/** @typedef {{type: string, inputs: InputSpec[], outputs: {name: string, type: string}[], params: object[]}} NodeSpec */

function linksOf(value) {
  return Array.isArray(value) ? value : [value];
}

function checkedPosition(id, position) {
  if (!Array.isArray(position) || position.length !== 2 || !position.every((n) => typeof n === "number" && Number.isFinite(n))) {
    throw new GraphError(`${id}.position: expected [x, y], got ${describe(position)}`, { node: id, field: "position", code: "schema" });
  }
  return [position[0], position[1]];
}

function slug(text) {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "");
}

function uniqueName(base, used) {
  const name = freshId(base, used);
  used.add(name);
  return name;
}

/**
 * A workflow being edited, with the catalogue (`run.py nodes --json`) that gives its node types' sockets and params.
 *
 * Edits apply to the nodes of the open scope: the top level, or the definition of the Subgraph node entered last
 * (`enterSubgraph`). Inside a definition, its ports are kept consistent with its nodes; a definition used by
 * several Subgraph nodes changes for all of them.
 */
export class Graph {
  #workflow;
  #types;
  /** @type {Record<string, string>} model source → what it knows (closed-vocabulary models only) */
  #vocabularies;
  /** The Subgraph node ids entered, outermost first; each is a node of the previous one's definition. */
  #scope = [];

  /**
   * @param {object} workflow a workflow document (it is copied; see `checkWorkflow`)
   * @param {{nodes: NodeSpec[]}} catalogue
   */
  constructor(workflow, catalogue) {
    this.#types = new Map(catalogue.nodes.map((spec) => [spec.type, spec]));
    this.#vocabularies = catalogue.vocabularies ?? {};
    this.replaceWorkflow(workflow);
  }

  /**
   * Replace the whole document (a load, an undo). The open scope stays as far down as it still leads to a
   * Subgraph node with a definition.
   * @param {object} workflow
   */
  replaceWorkflow(workflow) {
    checkWorkflow(workflow);
    this.#workflow = structuredClone(workflow);
    this.#scope = this.#levels().map((level) => level.node);
  }

  // ---------------------------------------------------------------- scope

  /** The Subgraph node ids entered, outermost first (a copy); empty at the top level. @returns {string[]} */
  get scope() {
    return [...this.#scope];
  }

  /** What the server's flattened ids of the open scope's nodes start with: "" at the top level, else `outer/…/`. */
  get scopePrefix() {
    return this.#scope.map((id) => id + ID_SEPARATOR).join("");
  }

  /**
   * Open a Subgraph node of the current scope: from now on edits apply to its definition's nodes.
   * @param {string} id
   */
  enterSubgraph(id) {
    const { entry } = this.#definitionOf(id);
    const open = this.#levels().map((level) => level.subgraph);
    if (open.includes(entry.subgraph)) {
      throw new GraphError(`${id}: subgraph ${describe(entry.subgraph)} contains itself (${[...open, entry.subgraph].join(" → ")}); it cannot be opened`,
        { node: id, field: "subgraph", code: "subgraph_cycle" });
    }
    this.#scope.push(id);
  }

  /** Go one level up. @returns {string | null} the Subgraph node left, or null at the top level */
  leaveSubgraph() {
    return this.#scope.pop() ?? null;
  }

  /** Go back to the top level. */
  leaveToTop() {
    this.#scope = [];
  }

  /**
   * Each level of the open scope, outermost first: the Subgraph node entered, its title, its definition's id and
   * name, and how many Subgraph nodes in the whole document use that definition (editing inside changes them all).
   * @returns {{node: string, title: string|null, subgraph: string, name: string, uses: number}[]}
   */
  scopeLevels() {
    return this.#levels().map(({ node, entry, subgraph, definition }) => ({
      node, title: entry.title ?? null, subgraph, name: definition.name ?? "", uses: this.#usesOf(subgraph, this.#workflow),
    }));
  }

  /**
   * The ports of the open definition (a copy): where values come in (`targets`) and go out (`source`); null at the top level.
   * @returns {{inputs: {name: string, type: string, targets: {node: string, input: string}[]}[],
   *   outputs: {name: string, type: string, source: Link}[]} | null}
   */
  scopePorts() {
    const definition = this.#levels().at(-1)?.definition;
    return definition === undefined ? null : structuredClone({ inputs: definition.inputs ?? [], outputs: definition.outputs ?? [] });
  }

  /** The workflow document, a copy: exactly what the server accepts. @returns {object} */
  toWorkflow() {
    return structuredClone(this.#workflow);
  }

  /** @returns {string[]} */
  nodeIds() {
    return Object.keys(this.#nodes);
  }

  /** @param {string} id @returns {boolean} */
  hasNode(id) {
    return Object.hasOwn(this.#nodes, id);
  }

  /** A copy of one node's entry. @param {string} id @returns {object} */
  node(id) {
    return structuredClone(this.#entry(id));
  }

  /** The catalogue's spec of a node type, or null when the catalogue does not know it. @param {string} type */
  typeSpec(type) {
    return this.#types.get(type) ?? null;
  }

  /**
   * A node's sockets and params: the catalogue spec, or for a Subgraph node the ports of its definition.
   * Null when the type (or the subgraph) is unknown.
   * @param {string} id @returns {NodeSpec | null}
   */
  specOf(id) {
    return this.#specOfEntry(this.#entry(id));
  }

  /**
   * What the model behind a param knows, for params that declare `vocabulary_from` (an input socket): the
   * catalogue's line for the `source` of the node wired into that socket, or null (nothing wired, or a model
   * that takes any words). @param {string} id @param {string} param @returns {string | null}
   */
  vocabularyHint(id, param) {
    const from = this.specOf(id)?.params.find((p) => p.name === param)?.vocabulary_from;
    const value = from === undefined ? undefined : this.#entry(id).inputs?.[from];
    if (value === undefined) return null;
    const upstream = this.#nodes[linksOf(value)[0].node];
    if (upstream === undefined) return null;
    const sourceSpec = this.#specOfEntry(upstream)?.params.find((p) => p.name === "source");
    const source = upstream.params?.source ?? sourceSpec?.default;
    return typeof source === "string" ? this.#vocabularies[source] ?? null : null;
  }

  /** Every link, in node and input order; `index` is the position in a multi input's list (else null). @returns {Wire[]} */
  links() {
    const wires = [];
    for (const [to, entry] of Object.entries(this.#nodes)) {
      for (const [input, value] of Object.entries(entry.inputs ?? {})) {
        linksOf(value).forEach((link, i) => {
          wires.push({ from: link.node, output: link.output, to, input, index: Array.isArray(value) ? i : null });
        });
      }
    }
    return wires;
  }

  /**
   * Add a node of a catalogue type (or a Subgraph node for an existing definition), with params at their defaults.
   * @param {string} type
   * @param {{id?: string, position?: [number, number], title?: string, params?: object, subgraph?: string}} [options]
   * @returns {string} the new node's id (`sampler`, then `sampler_2`, …, unless `id` is given)
   */
  addNode(type, { id, position = [0, 0], title, params = {}, subgraph } = {}) {
    const entry = { type, type_version: 1, params: {}, inputs: {}, position: [0, 0] };
    if (type === SUBGRAPH_TYPE) {
      if (subgraph === undefined || !Object.hasOwn(this.#workflow.subgraphs ?? {}, subgraph)) {
        throw new GraphError(`no subgraph ${describe(subgraph ?? null)} is defined in this workflow`, { field: "subgraph", code: "unknown_subgraph" });
      }
      entry.subgraph = subgraph;
    } else {
      const spec = this.#types.get(type);
      if (spec === undefined) throw new GraphError(`unknown node type ${describe(type)}`, { field: "type", code: "unknown_type" });
      entry.type_version = spec.version ?? 1;
      for (const param of spec.params) {
        if (param.default !== null && param.default !== undefined) entry.params[param.name] = structuredClone(param.default);
      }
    }
    const nodeId = id ?? freshId(type === SUBGRAPH_TYPE ? slug(subgraph) || "subgraph" : idStemForType(type), new Set(this.nodeIds()));
    this.#checkNewId(nodeId);
    entry.position = checkedPosition(nodeId, position);
    if (title) entry.title = title;
    for (const [name, value] of Object.entries(params)) entry.params[name] = this.#checkedParam(nodeId, entry, name, value);
    this.#checkNotInsideItself({ [nodeId]: entry });
    this.#mutableNodes()[nodeId] = entry;
    return nodeId;
  }

  /**
   * Add complete node entries (and subgraph definitions they use) as they are: what a paste inserts.
   * Ids must be free; links are kept as given.
   * @param {Record<string, object>} nodes @param {Record<string, object>} [subgraphs]
   * @returns {string[]} the added node ids
   */
  insertNodes(nodes, subgraphs = {}) {
    checkNodes(nodes, "nodes");
    for (const [id, definition] of Object.entries(subgraphs)) {
      checkSubgraph(definition, `subgraphs.${id}`);
      if (Object.hasOwn(this.#workflow.subgraphs ?? {}, id)) {
        throw new GraphError(`a subgraph ${describe(id)} already exists`, { field: "subgraphs", code: "duplicate_id" });
      }
    }
    for (const id of Object.keys(nodes)) this.#checkNewId(id);
    this.#checkNotInsideItself(nodes, subgraphs);
    if (Object.keys(subgraphs).length > 0) this.#workflow.subgraphs = { ...this.#workflow.subgraphs, ...structuredClone(subgraphs) };
    Object.assign(this.#mutableNodes(), structuredClone(nodes));
    return Object.keys(nodes);
  }

  /**
   * Remove nodes, every link from them, and the exposed fields and group memberships that name them. Inside a
   * subgraph, they leave its input ports' targets too; a node an output port comes from cannot be removed.
   * @param {string[]} ids
   */
  removeNodes(ids) {
    ids.forEach((id) => this.#entry(id));
    const removed = new Set(ids);
    const open = this.#levels().at(-1);
    const source = (open?.definition.outputs ?? []).find((port) => removed.has(port.source?.node));
    if (source !== undefined) {
      throw new GraphError(`cannot delete ${source.source.node}: the output ${describe(source.name)} of subgraph ${describe(open.subgraph)} `
        + `comes from its ${describe(source.source.output)}; ungroup the Subgraph node to delete it`,
      { node: source.source.node, field: source.source.output, code: "subgraph_port" });
    }
    const nodes = this.#mutableNodes();
    for (const id of removed) delete nodes[id];
    for (const entry of Object.values(nodes)) {
      for (const [input, value] of Object.entries(entry.inputs ?? {})) {
        const kept = linksOf(value).filter((link) => !removed.has(link.node));
        if (kept.length === 0) delete entry.inputs[input];
        else if (Array.isArray(value)) entry.inputs[input] = kept;
      }
    }
    for (const port of open?.definition.inputs ?? []) {
      if (port.targets) port.targets = port.targets.filter((target) => !removed.has(target.node));
    }
    const prefixes = this.#prefixesOf(this.#workflow);
    const names = (node) => prefixes.some((prefix) => removed.has(splitFlatId(node, prefix)?.node));
    if (this.#workflow.exposed) this.#workflow.exposed = this.#workflow.exposed.filter((field) => !names(field.node));
    if (open !== undefined) return; // visual groups hold top-level nodes only
    for (const group of this.#workflow.groups ?? []) {
      if (group.nodes) group.nodes = group.nodes.filter((id) => !removed.has(id));
    }
  }

  /** Move nodes to new positions. @param {Record<string, [number, number]>} positions */
  moveNodes(positions) {
    const checked = Object.entries(positions).map(([id, position]) => {
      this.#entry(id);
      return [id, checkedPosition(id, position)];
    });
    for (const [id, position] of checked) this.#nodes[id].position = position;
  }

  /**
   * Bypass nodes (they do not run; each output passes on the node's first wired input of its type) or stop
   * bypassing them. Subgraph nodes cannot be bypassed (bypass the nodes inside).
   * @param {string[]} ids @param {boolean} on
   */
  setBypass(ids, on) {
    const entries = ids.map((id) => [id, this.#entry(id)]);
    for (const [id, entry] of entries) {
      if (on && entry.type === SUBGRAPH_TYPE) throw new GraphError(`${id}: a Subgraph node cannot be bypassed`, { node: id, field: "bypass", code: "invalid_value" });
    }
    for (const [, entry] of entries) {
      if (on) entry.bypass = true;
      else delete entry.bypass;
    }
  }

  /** Set a node's title; an empty title or null removes it. @param {string} id @param {string|null} title */
  setTitle(id, title) {
    const entry = this.#entry(id);
    if (title !== null && typeof title !== "string") {
      throw new GraphError(`${id}.title: expected text, got ${describe(title)}`, { node: id, field: "title", code: "schema" });
    }
    if (title) entry.title = title;
    else delete entry.title;
  }

  /**
   * Set a param's literal value, checked against the param's spec. A wire into the param stays (and wins at run time).
   * @param {string} id @param {string} name @param {unknown} value
   */
  setParam(id, name, value) {
    const entry = this.#entry(id);
    const checked = this.#checkedParam(id, entry, name, value);
    (entry.params ??= {})[name] = checked;
  }

  /**
   * Wire `from.output` into `to.input`, where the input is an input socket or a wireable param. A non-multi
   * input holds one link, so an existing link is replaced (and returned); a multi input appends in order (the
   * same output may come twice: a grid may show one image twice). Inside a subgraph, an input an input port fed
   * is fed by the new link instead (a port's value would replace it).
   * @param {string} from @param {string} output @param {string} to @param {string} input
   * @returns {{replaced: Link | null, index: number | null}} the link replaced, and the new link's place in a multi input
   */
  connect(from, output, to, input) {
    const reason = this.connectionProblem(from, output, to, input);
    if (reason !== null) throw reason;
    const entry = this.#nodes[to];
    const link = { node: from, output };
    const inputs = (entry.inputs ??= {});
    const previous = inputs[input];
    for (const port of this.#levels().at(-1)?.definition.inputs ?? []) {
      if (port.targets?.some((target) => target.node === to && target.input === input)) {
        port.targets = port.targets.filter((target) => target.node !== to || target.input !== input);
      }
    }
    if (this.#socketOf(entry, input).multi) {
      const list = previous === undefined ? [] : linksOf(previous);
      inputs[input] = [...list, link];
      return { replaced: null, index: list.length };
    }
    inputs[input] = link;
    return { replaced: previous === undefined ? null : structuredClone(previous), index: null };
  }

  /**
   * Why `from.output → to.input` cannot be wired (a GraphError to show or throw), or null when it can.
   * @param {string} from @param {string} output @param {string} to @param {string} input
   * @returns {GraphError | null}
   */
  connectionProblem(from, output, to, input) {
    for (const id of [from, to]) {
      if (!this.hasNode(id)) return new GraphError(`no node ${describe(id)}`, { node: id, code: "missing_node" });
    }
    const sourceSpec = this.#specOfEntry(this.#nodes[from]);
    const targetEntry = this.#nodes[to];
    if (sourceSpec === null) return this.#unknownType(from);
    if (this.#specOfEntry(targetEntry) === null) return this.#unknownType(to);
    const produced = sourceSpec.outputs.find((o) => o.name === output);
    if (produced === undefined) {
      return new GraphError(`${from} has no output ${describe(output)} (outputs: ${sourceSpec.outputs.map((o) => o.name).join(", ") || "none"})`,
        { node: from, field: output, code: "missing_output" });
    }
    const socket = this.#socketOf(targetEntry, input);
    if (socket === null) {
      return new GraphError(`${to} (${targetEntry.type}) has no input or wireable param ${describe(input)}`,
        { node: to, field: input, code: "unknown_input" });
    }
    if (!canConnect(produced.type, socket.type)) {
      return new GraphError(`${to}.${input} expects ${socket.type}, but ${from}.${output} gives ${produced.type}`,
        { node: to, field: input, code: "type_mismatch" });
    }
    const path = from === to ? [to] : this.#path(to, from);
    if (path !== null) {
      return new GraphError(`wiring ${from}.${output} into ${to}.${input} would make a cycle: ${[...path, to].join(" → ")}`,
        { node: to, field: input, code: "cycle" });
    }
    return null;
  }

  /**
   * Remove links into `to.input`: the one at `index` of a multi input, else all of them.
   * @param {string} to @param {string} input @param {number|null} [index]
   * @returns {Link[]} the links removed
   */
  disconnect(to, input, index = null) {
    const entry = this.#entry(to);
    const value = entry.inputs?.[input];
    if (value === undefined) return [];
    const links = linksOf(value);
    if (index === null) {
      delete entry.inputs[input];
      return structuredClone(links);
    }
    if (!Number.isInteger(index) || index < 0 || index >= links.length) {
      throw new GraphError(`${to}.${input} has no link at ${index}`, { node: to, field: input, code: "missing_link" });
    }
    const removed = links[index];
    const kept = links.filter((_, i) => i !== index);
    if (kept.length === 0) delete entry.inputs[input];
    else entry.inputs[input] = kept;
    return [structuredClone(removed)];
  }

  /**
   * Every input and wireable param that `node.output` could be wired into now (type fits, no cycle).
   * @param {string} node @param {string} output
   * @returns {{node: string, input: string, kind: "input"|"param"}[]}
   */
  compatibleTargets(node, output) {
    const produced = this.#specOfEntry(this.#entry(node))?.outputs.find((o) => o.name === output);
    if (produced === undefined) return [];
    const excluded = this.#reachable(node, "upstream");
    const targets = [];
    for (const [id, entry] of Object.entries(this.#nodes)) {
      if (excluded.has(id)) continue;
      for (const socket of this.#socketsOf(entry)) {
        if (canConnect(produced.type, socket.type)) targets.push({ node: id, input: socket.name, kind: socket.kind });
      }
    }
    return targets;
  }

  /**
   * Every node output that could be wired into `node.input` now (type fits, no cycle).
   * @param {string} node @param {string} input
   * @returns {{node: string, output: string}[]}
   */
  compatibleSources(node, input) {
    const socket = this.#socketOf(this.#entry(node), input);
    if (socket === null) return [];
    const excluded = this.#reachable(node, "downstream");
    const sources = [];
    for (const [id, entry] of Object.entries(this.#nodes)) {
      if (excluded.has(id)) continue;
      for (const produced of this.#specOfEntry(entry)?.outputs ?? []) {
        if (canConnect(produced.type, socket.type)) sources.push({ node: id, output: produced.name });
      }
    }
    return sources;
  }

  /**
   * Move the selected nodes into a new subgraph definition and put one Subgraph node in their place. Links
   * among them move inside; a link from outside becomes an input port (one port per outside output, shared
   * by the inputs it fed); a link to outside becomes an output port. Exposed fields and groups follow. Inside a
   * subgraph, nodes its own ports feed or come from stay out (ungroup it first).
   * @param {string[]} ids @param {{name?: string}} [options]
   * @returns {{node: string, subgraph: string}} the new Subgraph node's id and its definition's id
   */
  groupIntoSubgraph(ids, { name = "Group" } = {}) {
    const selected = new Set(ids);
    if (selected.size === 0) throw new GraphError("select nodes to group", { code: "cannot_group" });
    for (const id of selected) {
      if (this.#specOfEntry(this.#entry(id)) === null) {
        throw new GraphError(`cannot group ${id}: its type ${describe(this.#nodes[id].type)} is unknown`, { node: id, code: "cannot_group" });
      }
    }
    this.#checkNotPortEndpoint(selected, "group");
    this.#checkClosed(selected);
    const prefixes = this.#prefixesOf();
    const workflow = structuredClone(this.#workflow);
    const nodes = this.#scopeNodes(workflow);
    const order = Object.keys(nodes).filter((id) => selected.has(id));
    const nodeId = freshId(slug(name) || "subgraph", new Set(Object.keys(nodes)));
    const subgraphId = freshId(slug(name) || "subgraph", new Set(Object.keys(workflow.subgraphs ?? {})));

    const inner = Object.fromEntries(order.map((id) => [id, nodes[id]]));
    const inputPorts = [];
    const portTypes = new Map(); // port → [types of the inputs it feeds, type of the output feeding it]
    const portsBySource = new Map();
    const instanceInputs = {};
    const usedInputNames = new Set();
    for (const [id, entry] of Object.entries(inner)) {
      for (const [input, value] of Object.entries(entry.inputs ?? {})) {
        const links = linksOf(value);
        const outside = links.filter((link) => !selected.has(link.node));
        if (outside.length === 0) continue;
        if (outside.length < links.length) {
          throw new GraphError(`cannot group: ${id}.${input} takes links from both inside and outside the selection`,
            { node: id, field: input, code: "cannot_group" });
        }
        const targetType = this.#socketOf(entry, input)?.type ?? null;
        // A multi input's list becomes a port of its own; single links from one output share a port.
        const sourceKey = Array.isArray(value) ? null : JSON.stringify([value.node, value.output]);
        let port = sourceKey === null ? undefined : portsBySource.get(sourceKey);
        if (port === undefined) {
          port = { name: uniqueName(input, usedInputNames), type: null, targets: [] };
          inputPorts.push(port);
          portTypes.set(port, { targets: [], source: sourceKey === null ? null : this.#outputType(value) });
          instanceInputs[port.name] = structuredClone(value);
          if (sourceKey !== null) portsBySource.set(sourceKey, port);
        }
        port.targets.push({ node: id, input });
        portTypes.get(port).targets.push(targetType);
        delete entry.inputs[input];
      }
    }
    for (const port of inputPorts) {
      // The port accepts what all its targets accept; when they differ, what fed them all.
      const { targets, source } = portTypes.get(port);
      port.type = targets.every((type) => type !== null && type === targets[0]) ? targets[0] : source ?? targets.find((t) => t !== null) ?? "JSON";
    }

    const outputPorts = [];
    const portsByOutput = new Map();
    const usedOutputNames = new Set();
    for (const [id, entry] of Object.entries(nodes)) {
      if (selected.has(id)) continue;
      for (const [input, value] of Object.entries(entry.inputs ?? {})) {
        const rerouted = linksOf(value).map((link) => {
          if (!selected.has(link.node)) return link;
          const key = JSON.stringify([link.node, link.output]);
          let port = portsByOutput.get(key);
          if (port === undefined) {
            port = { name: uniqueName(link.output, usedOutputNames), type: this.#outputType(link) ?? this.#socketOf(entry, input)?.type ?? "JSON", source: { ...link } };
            portsByOutput.set(key, port);
            outputPorts.push(port);
          }
          return { node: nodeId, output: port.name };
        });
        entry.inputs[input] = Array.isArray(value) ? rerouted : rerouted[0];
      }
    }

    const positions = order.map((id) => nodes[id].position ?? [0, 0]);
    for (const id of order) delete nodes[id];
    nodes[nodeId] = {
      type: SUBGRAPH_TYPE, type_version: 1, ...(name ? { title: name } : {}), params: {}, inputs: instanceInputs,
      position: [Math.min(...positions.map((p) => p[0])), Math.min(...positions.map((p) => p[1]))], subgraph: subgraphId,
    };
    workflow.subgraphs = { ...workflow.subgraphs, [subgraphId]: { name, description: "", nodes: inner, inputs: inputPorts, outputs: outputPorts } };
    for (const field of workflow.exposed ?? []) {
      const prefix = prefixes.find((p) => selected.has(splitFlatId(field.node, p)?.node));
      if (prefix !== undefined) field.node = prefix + nodeId + ID_SEPARATOR + field.node.slice(prefix.length);
    }
    for (const group of this.#scope.length === 0 ? workflow.groups ?? [] : []) {
      if (group.nodes?.some((id) => selected.has(id))) {
        const kept = group.nodes.filter((id) => !selected.has(id));
        kept.splice(group.nodes.findIndex((id) => selected.has(id)), 0, nodeId);
        group.nodes = kept;
      }
    }
    this.#workflow = workflow;
    return { node: nodeId, subgraph: subgraphId };
  }

  /**
   * Replace a Subgraph node by its definition's nodes (keeping their ids where free), rewiring its ports.
   * The definition is removed when nothing else uses it. Inside a subgraph, a Subgraph node that its ports feed
   * or come from stays (ungroup the outer one first).
   * @param {string} id
   * @returns {Record<string, string>} each inner node's id → its id in the graph now
   */
  ungroup(id) {
    const { entry: instance, definition } = this.#definitionOf(id);
    this.#checkNotPortEndpoint([id], "ungroup");
    const prefixes = this.#prefixesOf();
    const workflow = structuredClone(this.#workflow);
    const nodes = this.#scopeNodes(workflow);
    const innerNodes = structuredClone(definition.nodes ?? {});
    const taken = new Set(Object.keys(nodes).filter((other) => other !== id));
    const renamed = {};
    for (const innerId of Object.keys(innerNodes)) {
      renamed[innerId] = freshId(innerId, taken);
      taken.add(renamed[innerId]);
    }
    const positions = Object.values(innerNodes).map((entry) => entry.position ?? [0, 0]);
    const [x, y] = instance.position ?? [0, 0];
    const dx = positions.length ? x - Math.min(...positions.map((p) => p[0])) : 0;
    const dy = positions.length ? y - Math.min(...positions.map((p) => p[1])) : 0;
    const remapLinks = (value, map) => {
      const mapped = linksOf(value).map(map).filter((link) => link !== null);
      return Array.isArray(value) ? mapped : mapped[0];
    };
    for (const entry of Object.values(innerNodes)) {
      const [px, py] = entry.position ?? [0, 0];
      entry.position = [px + dx, py + dy];
      for (const [input, value] of Object.entries(entry.inputs ?? {})) {
        // A link to a node the definition lacks was already broken; it must not latch onto an outer node.
        const mapped = remapLinks(value, (link) => (Object.hasOwn(renamed, link.node) ? { node: renamed[link.node], output: link.output } : null));
        if (mapped === undefined || mapped.length === 0) delete entry.inputs[input];
        else entry.inputs[input] = mapped;
      }
    }
    for (const port of definition.inputs ?? []) {
      const value = instance.inputs?.[port.name];
      if (value === undefined) continue;
      for (const target of port.targets ?? []) {
        if (Object.hasOwn(innerNodes, target.node)) (innerNodes[target.node].inputs ??= {})[target.input] = structuredClone(value);
      }
    }
    const outputs = new Map((definition.outputs ?? []).map((port) => [port.name, port.source]));
    delete nodes[id];
    for (const entry of Object.values(nodes)) {
      for (const [input, value] of Object.entries(entry.inputs ?? {})) {
        const mapped = remapLinks(value, (link) => {
          if (link.node !== id) return link;
          const source = outputs.get(link.output);
          return source !== undefined && Object.hasOwn(renamed, source.node) ? { node: renamed[source.node], output: source.output } : null;
        });
        if (mapped === undefined || mapped.length === 0) delete entry.inputs[input];
        else entry.inputs[input] = mapped;
      }
    }
    for (const [innerId, entry] of Object.entries(innerNodes)) nodes[renamed[innerId]] = entry;
    if (workflow.exposed) {
      workflow.exposed = workflow.exposed.flatMap((field) => {
        for (const prefix of prefixes) {
          const at = splitFlatId(field.node, prefix);
          if (at?.node !== id || at.inside.length === 0) continue;
          const [innerId, ...rest] = at.inside;
          return Object.hasOwn(renamed, innerId) ? [{ ...field, node: prefix + [renamed[innerId], ...rest].join(ID_SEPARATOR) }] : [];
        }
        return [field];
      });
    }
    for (const group of this.#scope.length === 0 ? workflow.groups ?? [] : []) {
      if (group.nodes?.includes(id)) group.nodes = group.nodes.flatMap((member) => (member === id ? Object.values(renamed) : [member]));
    }
    if (this.#usesOf(instance.subgraph, workflow) === 0) delete workflow.subgraphs[instance.subgraph];
    this.#workflow = workflow;
    return renamed;
  }

  // ---------------------------------------------------------------- internals

  get #nodes() {
    const open = this.#levels().at(-1);
    return (open === undefined ? this.#workflow.nodes : open.definition.nodes) ?? {};
  }

  #mutableNodes() {
    return this.#scopeNodes(this.#workflow);
  }

  /** The open scope's nodes in `workflow` (this document, or a copy of it being rebuilt), created if absent. */
  #scopeNodes(workflow) {
    const open = this.#levels(workflow).at(-1);
    return open === undefined ? (workflow.nodes ??= {}) : (open.definition.nodes ??= {});
  }

  /**
   * The levels of the scope in `workflow`, outermost first, as far as each leads to a Subgraph node with a
   * definition (and no definition twice: one containing itself cannot be opened).
   * @returns {{node: string, entry: object, subgraph: string, definition: object}[]}
   */
  #levels(workflow = this.#workflow) {
    const levels = [];
    let nodes = workflow.nodes ?? {};
    for (const node of this.#scope) {
      const entry = Object.hasOwn(nodes, node) ? nodes[node] : null;
      const subgraph = entry?.type === SUBGRAPH_TYPE ? entry.subgraph : null;
      if (typeof subgraph !== "string" || !Object.hasOwn(workflow.subgraphs ?? {}, subgraph) || levels.some((l) => l.subgraph === subgraph)) break;
      const definition = workflow.subgraphs[subgraph];
      levels.push({ node, entry, subgraph, definition });
      nodes = definition.nodes ?? {};
    }
    return levels;
  }

  /** A Subgraph node of the open scope and its definition; refuses other nodes and missing definitions. */
  #definitionOf(id) {
    const entry = this.#entry(id);
    if (entry.type !== SUBGRAPH_TYPE) {
      throw new GraphError(`${id} is a ${entry.type}, not a Subgraph node`, { node: id, code: "not_subgraph" });
    }
    if (typeof entry.subgraph !== "string" || !Object.hasOwn(this.#workflow.subgraphs ?? {}, entry.subgraph)) {
      throw new GraphError(`${id}: subgraph ${describe(entry.subgraph ?? null)} is not defined`, { node: id, field: "subgraph", code: "unknown_subgraph" });
    }
    return { entry, definition: this.#workflow.subgraphs[entry.subgraph] };
  }

  /** How many Subgraph nodes of `workflow`, at the top level or inside definitions, use definition `subgraph`. */
  #usesOf(subgraph, workflow) {
    const scopes = [workflow.nodes ?? {}, ...Object.values(workflow.subgraphs ?? {}).map((definition) => definition.nodes ?? {})];
    return scopes.reduce((count, nodes) => count + Object.values(nodes).filter((entry) => entry.type === SUBGRAPH_TYPE && entry.subgraph === subgraph).length, 0);
  }

  /**
   * Every prefix the open scope's nodes have in flattened ids (what exposed fields name): [""] at the top level;
   * a definition has one per path of Subgraph nodes down to a use of it.
   */
  #prefixesOf(workflow = this.#workflow) {
    const open = this.#levels(workflow).at(-1)?.subgraph;
    if (open === undefined) return [""];
    const prefixes = [];
    const walk = (nodes, prefix, visiting) => {
      for (const [id, entry] of Object.entries(nodes ?? {})) {
        const subgraph = entry.type === SUBGRAPH_TYPE ? entry.subgraph : null;
        if (typeof subgraph !== "string" || !Object.hasOwn(workflow.subgraphs ?? {}, subgraph) || visiting.has(subgraph)) continue;
        const inner = prefix + id + ID_SEPARATOR;
        if (subgraph === open) prefixes.push(inner);
        else walk(workflow.subgraphs[subgraph].nodes, inner, new Set(visiting).add(subgraph));
      }
    };
    walk(workflow.nodes, "", new Set());
    return prefixes;
  }

  /**
   * Refuse Subgraph nodes (being added to the open scope) whose definition is, or contains, one the scope is
   * inside: the definition would contain itself. `added` are definitions being added with them.
   */
  #checkNotInsideItself(entries, added = {}) {
    const open = new Set(this.#levels().map((level) => level.subgraph));
    if (open.size === 0) return;
    const definitions = { ...this.#workflow.subgraphs, ...added };
    for (const [id, entry] of Object.entries(entries)) {
      if (entry.type !== SUBGRAPH_TYPE || typeof entry.subgraph !== "string") continue;
      const seen = new Set();
      const pending = [entry.subgraph];
      while (pending.length > 0) {
        const subgraph = pending.pop();
        if (open.has(subgraph)) {
          throw new GraphError(`${id}: subgraph ${describe(entry.subgraph)} cannot go inside subgraph ${describe(this.#levels().at(-1).subgraph)}: `
            + `it would contain itself (through ${describe(subgraph)})`, { node: id, field: "subgraph", code: "subgraph_cycle" });
        }
        if (seen.has(subgraph) || !Object.hasOwn(definitions, subgraph)) continue;
        seen.add(subgraph);
        for (const inner of Object.values(definitions[subgraph].nodes ?? {})) {
          if (inner.type === SUBGRAPH_TYPE && typeof inner.subgraph === "string") pending.push(inner.subgraph);
        }
      }
    }
  }

  /** Refuse grouping or ungrouping nodes that the open definition's ports feed or come from. */
  #checkNotPortEndpoint(ids, action) {
    const open = this.#levels().at(-1);
    if (open === undefined) return;
    const selected = new Set(ids);
    const fed = (open.definition.inputs ?? []).map((port) => [port, port.targets?.find((t) => selected.has(t.node))]).find(([, t]) => t !== undefined);
    const source = (open.definition.outputs ?? []).find((port) => selected.has(port.source?.node));
    if (fed === undefined && source === undefined) return;
    const [node, why] = fed !== undefined
      ? [fed[1].node, `the subgraph's input ${describe(fed[0].name)} feeds its ${describe(fed[1].input)}`]
      : [source.source.node, `the subgraph's output ${describe(source.name)} comes from its ${describe(source.source.output)}`];
    const code = action === "group" ? "cannot_group" : "cannot_ungroup";
    throw new GraphError(`cannot ${action} ${node} inside subgraph ${describe(open.subgraph)}: ${why}; `
      + `${action === "group" ? "leave it out of the selection, or " : ""}ungroup the outer Subgraph node first`, { node, code });
  }

  #entry(id) {
    if (!this.hasNode(id)) throw new GraphError(`no node ${describe(id)}`, { node: id, code: "missing_node" });
    return this.#nodes[id];
  }

  #checkNewId(id) {
    if (typeof id !== "string" || id.length === 0 || id.includes(ID_SEPARATOR)) {
      throw new GraphError(`node ids must be non-empty and may not contain "${ID_SEPARATOR}": ${describe(id)}`, { node: id, code: "invalid_id" });
    }
    if (this.hasNode(id)) throw new GraphError(`a node ${describe(id)} already exists`, { node: id, code: "duplicate_id" });
  }

  #unknownType(id) {
    const entry = this.#nodes[id];
    const what = entry.type === SUBGRAPH_TYPE ? `subgraph ${describe(entry.subgraph ?? null)}` : `node type ${describe(entry.type)}`;
    return new GraphError(`${id}: unknown ${what}`, { node: id, field: "type", code: entry.type === SUBGRAPH_TYPE ? "unknown_subgraph" : "unknown_type" });
  }

  #checkedParam(id, entry, name, value) {
    if (entry.type === SUBGRAPH_TYPE) {
      throw new GraphError(`${id}: a Subgraph node has no params of its own`, { node: id, field: name, code: "unknown_param" });
    }
    const spec = this.#types.get(entry.type);
    if (spec === undefined) throw this.#unknownType(id);
    const param = spec.params.find((p) => p.name === name);
    if (param === undefined) {
      throw new GraphError(`${id}.${name}: ${entry.type} has no param ${describe(name)} (params: ${spec.params.map((p) => p.name).join(", ") || "none"})`,
        { node: id, field: name, code: "unknown_param" });
    }
    const problem = checkParamValue(param, value);
    if (problem !== null) throw new GraphError(`${id}.${name}: ${problem.message}`, { node: id, field: name, code: problem.code });
    return structuredClone(value);
  }

  #specOfEntry(entry, visiting = new Set()) {
    if (entry.type !== SUBGRAPH_TYPE) return this.#types.get(entry.type) ?? null;
    const definition = entry.subgraph == null ? undefined : this.#workflow.subgraphs?.[entry.subgraph];
    if (definition === undefined || visiting.has(entry.subgraph)) return null;
    const inside = new Set(visiting).add(entry.subgraph);
    const targetSocket = (target) => {
      const inner = definition.nodes?.[target.node];
      const spec = inner === undefined ? null : this.#specOfEntry(inner, inside);
      return spec?.inputs.find((i) => i.name === target.input) ?? null;
    };
    return {
      type: SUBGRAPH_TYPE,
      subgraph: entry.subgraph,
      description: definition.description ?? "",
      inputs: (definition.inputs ?? []).map((port) => {
        const targets = (port.targets ?? []).map(targetSocket);
        // A port's value replaces its targets' inputs, so it takes a list only if every target does.
        return { name: port.name, type: port.type, optional: !targets.some((t) => t !== null && !t.optional), multi: targets.length > 0 && targets.every((t) => t?.multi === true) };
      }),
      outputs: (definition.outputs ?? []).map((port) => ({ name: port.name, type: port.type })),
      params: [],
    };
  }

  /** The input sockets and wireable params of an entry, as {name, type, multi, kind}. */
  #socketsOf(entry) {
    const spec = this.#specOfEntry(entry);
    if (spec === null) return [];
    return [
      ...spec.inputs.map((i) => ({ name: i.name, type: i.type, multi: i.multi === true, kind: "input" })),
      ...spec.params.filter((p) => WIREABLE_PARAM_TYPES.has(p.type)).map((p) => ({ name: p.name, type: p.type, multi: false, kind: "param" })),
    ];
  }

  #socketOf(entry, name) {
    return this.#socketsOf(entry).find((socket) => socket.name === name) ?? null;
  }

  #outputType(link) {
    const entry = this.#nodes[link.node];
    const spec = entry === undefined ? null : this.#specOfEntry(entry);
    return spec?.outputs.find((o) => o.name === link.output)?.type ?? null;
  }

  /** Node → the nodes it feeds (or, upstream, node → the nodes feeding it), over links between existing nodes. */
  #edges(direction = "downstream") {
    const edges = new Map(this.nodeIds().map((id) => [id, new Set()]));
    for (const { from, to } of this.links()) {
      if (!edges.has(from)) continue;
      if (direction === "downstream") edges.get(from).add(to);
      else edges.get(to).add(from);
    }
    return edges;
  }

  /** The node itself and every node upstream (its ancestors) or downstream (its descendants). */
  #reachable(start, direction) {
    const edges = this.#edges(direction);
    const seen = new Set([start]);
    const queue = [start];
    while (queue.length > 0) {
      for (const id of edges.get(queue.shift()) ?? []) {
        if (!seen.has(id)) {
          seen.add(id);
          queue.push(id);
        }
      }
    }
    return seen;
  }

  /** A path of links start → … → goal, or null. */
  #path(start, goal) {
    const edges = this.#edges();
    const previous = new Map([[start, null]]);
    const queue = [start];
    while (queue.length > 0) {
      const id = queue.shift();
      if (id === goal) {
        const path = [];
        for (let at = goal; at !== null; at = previous.get(at)) path.unshift(at);
        return path;
      }
      for (const to of edges.get(id) ?? []) {
        if (!previous.has(to)) {
          previous.set(to, id);
          queue.push(to);
        }
      }
    }
    return null;
  }

  /** Refuse a selection that an outside node both reads from and feeds: the Subgraph node would feed itself. */
  #checkClosed(selected) {
    const edges = this.#edges();
    for (const id of selected) {
      for (const outside of edges.get(id) ?? []) {
        if (selected.has(outside)) continue;
        for (const back of selected) {
          const path = this.#path(outside, back);
          if (path !== null) {
            throw new GraphError(`cannot group: ${outside} is fed by the selection and feeds it back (${[id, ...path].join(" → ")}); add it to the selection`,
              { node: outside, code: "cannot_group" });
          }
        }
      }
    }
  }
}

// The editor's graph model against the real node catalogue and starter workflows.

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { describe, test } from "node:test";

import {
  Graph, GraphError, SUBGRAPH_TYPE, canConnect, checkParamValue, checkWorkflow, emptyWorkflow, freshId, idStemForType, sameJson, splitFlatId,
} from "../../app/ui/editor/static/graph.mjs";
import { History } from "../../app/ui/editor/static/history.mjs";

const catalogue = JSON.parse(readFileSync(new URL("./catalogue.json", import.meta.url), "utf-8"));
const templatesDir = new URL("../../pipelines/templates/", import.meta.url);
const templateNames = readdirSync(templatesDir).filter((name) => name.endsWith(".json")).sort();
const template = (name) => JSON.parse(readFileSync(new URL(name, templatesDir), "utf-8"));

function paramSpec(type, name) {
  return catalogue.nodes.find((n) => n.type === type).params.find((p) => p.name === name);
}

/** Assert that `fn` throws a GraphError with this code whose message contains every fragment. */
function assertRefused(fn, code, ...fragments) {
  assert.throws(fn, (error) => {
    assert.ok(error instanceof GraphError, `expected a GraphError, got ${error}`);
    assert.equal(error.code, code, error.message);
    for (const fragment of fragments) assert.ok(error.message.includes(fragment), `${JSON.stringify(error.message)} lacks ${JSON.stringify(fragment)}`);
    return true;
  });
}

/** Assert that `fn` is refused and leaves the graph's workflow exactly as it was. */
function assertRefusedUnchanged(graph, fn, code, ...fragments) {
  const before = graph.toWorkflow();
  assertRefused(fn, code, ...fragments);
  assert.deepEqual(graph.toWorkflow(), before);
}

/** Equal workflows, up to key order and the order of a group's members (which ungrouping cannot know). */
function assertSameWorkflow(actual, expected) {
  const normal = (workflow) => ({ ...workflow, groups: (workflow.groups ?? []).map((g) => ({ ...g, nodes: [...(g.nodes ?? [])].sort() })) });
  assert.ok(sameJson(normal(actual), normal(expected)), "the workflows differ");
  assert.deepEqual(normal(actual), normal(expected));
}

/** A complete text-to-image graph built through the editor's API. */
function buildTxt2img() {
  const graph = new Graph(emptyWorkflow("built"), catalogue);
  const model = graph.addNode("LoadFlowModel", { position: [0, 0] });
  const text = graph.addNode("TextEncode", { position: [300, 0], params: { text: "a red circle" } });
  const latent = graph.addNode("EmptyLatent", { position: [300, 200] });
  const noise = graph.addNode("Noise", { position: [300, 400] });
  const schedule = graph.addNode("ModelSchedule", { position: [300, 600] });
  const solver = graph.addNode("EulerSolver", { position: [300, 800] });
  const sampler = graph.addNode("Sampler", { position: [600, 0] });
  const decode = graph.addNode("VAEDecode", { position: [900, 0] });
  const save = graph.addNode("SaveImage", { position: [1200, 0] });
  graph.connect(model, "text_encoder", text, "encoder");
  graph.connect(model, "model", latent, "model");
  graph.connect(model, "model", schedule, "model");
  graph.connect(model, "model", sampler, "model");
  graph.connect(text, "positive", sampler, "positive");
  graph.connect(text, "negative", sampler, "negative");
  graph.connect(latent, "latent", sampler, "latent");
  graph.connect(schedule, "sigmas", sampler, "sigmas");
  graph.connect(solver, "solver", sampler, "solver");
  graph.connect(noise, "noise", sampler, "noise");
  graph.connect(model, "vae", decode, "vae");
  graph.connect(sampler, "latent", decode, "latent");
  graph.connect(decode, "image", save, "images");
  return graph;
}

describe("loading and saving", () => {
  for (const name of templateNames) {
    test(`starter workflow ${name} round-trips unchanged`, () => {
      const document = template(name);
      const graph = new Graph(document, catalogue);
      assert.deepEqual(graph.toWorkflow(), document);
    });
  }

  test("a minimal document keeps exactly its fields", () => {
    const document = { format: "flowcanvas.workflow", version: 1, nodes: { n: { type: "Int" } } };
    assert.deepEqual(new Graph(document, catalogue).toWorkflow(), document);
  });

  test("the graph holds its own copy: neither the input nor toWorkflow's result alias it", () => {
    const document = template("txt2img-sd3.json");
    const graph = new Graph(document, catalogue);
    document.nodes.sampler.params.guidance = 99;
    const saved = graph.toWorkflow();
    saved.nodes.sampler.position[0] = -1;
    assert.notEqual(graph.node("sampler").params.guidance, 99);
    assert.notEqual(graph.toWorkflow().nodes.sampler.position[0], -1);
  });

  test("the catalogue's specs are at hand by type", () => {
    const graph = new Graph(emptyWorkflow(), catalogue);
    assert.deepEqual(graph.typeSpec("Sampler"), catalogue.nodes.find((n) => n.type === "Sampler"));
    assert.equal(graph.typeSpec("KSampler"), null);
    graph.addNode("Sampler");
    assert.equal(graph.specOf("sampler"), graph.typeSpec("Sampler"));
    assert.ok(graph.hasNode("sampler") && !graph.hasNode("ghost"));
  });

  test("nodes of types the catalogue does not know still load and save", () => {
    const document = { ...emptyWorkflow(), nodes: { future: { type: "FromTheFuture", params: { x: [1, { y: 2 }] }, position: [1, 2] } } };
    const graph = new Graph(document, catalogue);
    assert.equal(graph.specOf("future"), null);
    assert.deepEqual(graph.toWorkflow(), document);
  });

  test("emptyWorkflow is the canonical empty document", () => {
    assert.deepEqual(emptyWorkflow("x"), {
      format: "flowcanvas.workflow", version: 1, name: "x", description: "", tags: [],
      nodes: {}, exposed: [], groups: [], subgraphs: {}, view: { x: 0, y: 0, zoom: 1 },
    });
  });
});

describe("checkWorkflow mirrors what the server accepts", () => {
  const base = () => template("txt2img-sd3.json");
  const cases = [
    ["not an object", () => [1, 2], "schema", "a workflow is a JSON object"],
    ["a ComfyUI graph", () => ({ last_node_id: 3, nodes: [], links: [] }), "schema", "not a FlowCanvas workflow"],
    ["a newer version", () => ({ ...base(), version: 2 }), "unsupported_version", "version 2"],
    ["an unknown top-level field", () => ({ ...base(), extra: 1 }), "schema", "extra: unknown field"],
    ["an unknown node field", () => {
      const doc = base();
      doc.nodes.sampler.muted = true;
      return doc;
    }, "schema", "nodes.sampler.muted"],
    ["a node without type", () => ({ ...base(), nodes: { a: { params: {} } } }), "schema", "needs a `type`"],
    ["an empty type", () => ({ ...base(), nodes: { a: { type: "" } } }), "schema", "nodes.a.type"],
    ["type_version 0", () => ({ ...base(), nodes: { a: { type: "Int", type_version: 0 } } }), "schema", "type_version"],
    ["a position of three numbers", () => ({ ...base(), nodes: { a: { type: "Int", position: [1, 2, 3] } } }), "schema", "nodes.a.position"],
    ["a link without output", () => ({ ...base(), nodes: { a: { type: "SaveImage", inputs: { images: { node: "b" } } } } }), "schema", "nodes.a.inputs.images"],
    ["a link with an extra field", () => ({ ...base(), nodes: { a: { type: "SaveImage", inputs: { images: { node: "b", output: "image", slot: 0 } } } } }), "schema", "slot"],
    ["a non-JSON param", () => ({ ...base(), nodes: { a: { type: "Int", params: { value: NaN } } } }), "schema", "nodes.a.params.value"],
    ["an exposed field without label", () => ({ ...base(), exposed: [{ node: "sampler", param: "guidance" }] }), "schema", "label"],
    ["a group with a bad node list", () => ({ ...base(), groups: [{ title: "g", nodes: "sampler" }] }), "schema", "groups[0].nodes"],
    ["a subgraph port without type", () => ({ ...base(), subgraphs: { s: { inputs: [{ name: "x" }] } } }), "schema", "subgraphs.s.inputs[0]"],
    ["a subgraph output without source", () => ({ ...base(), subgraphs: { s: { outputs: [{ name: "y", type: "INT" }] } } }), "schema", "source"],
    ["a view with text", () => ({ ...base(), view: { x: "0" } }), "schema", "view.x"],
  ];
  for (const [what, make, code, fragment] of cases) {
    test(`refuses ${what}`, () => {
      assertRefused(() => checkWorkflow(make()), code, fragment);
      assertRefused(() => new Graph(make(), catalogue), code, fragment);
    });
  }

  test("names the node a problem belongs to", () => {
    const doc = base();
    doc.nodes.noise.position = "here";
    assert.throws(() => checkWorkflow(doc), (error) => error.node === "noise" && error.field === "position" && error.message.startsWith("nodes.noise.position:"));
  });

  test("accepts null titles, subgraphs and colours, as the server does", () => {
    const doc = { ...base(), groups: [{ title: "g", nodes: [], color: null }] };
    doc.nodes.noise.title = null;
    doc.nodes.noise.subgraph = null;
    checkWorkflow(doc);
  });
});

describe("small helpers", () => {
  test("canConnect is exact, except that an INT widens to a FLOAT", () => {
    assert.ok(canConnect("LATENT", "LATENT"));
    assert.ok(canConnect("INT", "FLOAT"));
    assert.ok(!canConnect("FLOAT", "INT"));
    assert.ok(!canConnect("IMAGE", "MASK"));
  });

  test("freshId counts up from a stem", () => {
    assert.equal(freshId("sampler", new Set()), "sampler");
    assert.equal(freshId("sampler", new Set(["sampler"])), "sampler_2");
    assert.equal(freshId("sampler_2", new Set(["sampler", "sampler_2"])), "sampler_3");
    assert.equal(freshId("a/b", new Set()), "a_b");
  });

  test("idStemForType makes readable snake-case stems", () => {
    assert.equal(idStemForType("Sampler"), "sampler");
    assert.equal(idStemForType("LoadFlowModel"), "load_flow_model");
    assert.equal(idStemForType("VAEDecode"), "vae_decode");
  });

  test("sameJson ignores key order but not list order", () => {
    assert.ok(sameJson({ a: 1, b: [1, { c: 2 }] }, { b: [1, { c: 2 }], a: 1 }));
    assert.ok(!sameJson([1, 2], [2, 1]));
    assert.ok(!sameJson({ a: 1 }, { a: 1, b: undefined }));
  });
});

describe("adding nodes", () => {
  test("ids are readable and fresh", () => {
    const graph = new Graph(emptyWorkflow(), catalogue);
    assert.equal(graph.addNode("Sampler"), "sampler");
    assert.equal(graph.addNode("Sampler"), "sampler_2");
    assert.equal(graph.addNode("LoadFlowModel"), "load_flow_model");
    assert.equal(graph.addNode("VAEDecode"), "vae_decode");
    assert.deepEqual(graph.nodeIds(), ["sampler", "sampler_2", "load_flow_model", "vae_decode"]);
  });

  test("a new node's params are the catalogue defaults, and null defaults stay unset", () => {
    const graph = new Graph(emptyWorkflow(), catalogue);
    const id = graph.addNode("FlowEdit", { position: [10, 20], title: "Edit" });
    assert.deepEqual(graph.node(id), {
      type: "FlowEdit", type_version: 1, title: "Edit", position: [10, 20], inputs: {},
      params: { n_min: 0, n_avg: 1, seed: 42, preview_every: 4 },
    });
    assert.deepEqual(graph.node(graph.addNode("Sampler")).params, { guidance: 7, true_cfg: 1, denoise: 1, preview_every: 4 });
    assert.deepEqual(graph.node(graph.addNode("EulerSolver")).params, {});
  });

  test("given params are checked", () => {
    const graph = new Graph(emptyWorkflow(), catalogue);
    const id = graph.addNode("EmptyLatent", { params: { width: 512 } });
    assert.equal(graph.node(id).params.width, 512);
    assertRefusedUnchanged(graph, () => graph.addNode("EmptyLatent", { params: { width: 8 } }), "out_of_bounds", "empty_latent_2.width", "at least 16");
    assertRefusedUnchanged(graph, () => graph.addNode("EmptyLatent", { params: { depth: 3 } }), "unknown_param", "depth");
  });

  test("unknown types, taken ids and ids with a slash are refused", () => {
    const graph = new Graph(emptyWorkflow(), catalogue);
    graph.addNode("Noise", { id: "noise" });
    assertRefusedUnchanged(graph, () => graph.addNode("KSampler"), "unknown_type", "KSampler");
    assertRefusedUnchanged(graph, () => graph.addNode("Noise", { id: "noise" }), "duplicate_id", "noise");
    assertRefusedUnchanged(graph, () => graph.addNode("Noise", { id: "a/b" }), "invalid_id");
    assertRefusedUnchanged(graph, () => graph.addNode("Noise", { position: [1] }), "schema", "position");
    assertRefusedUnchanged(graph, () => graph.addNode(SUBGRAPH_TYPE, { subgraph: "nope" }), "unknown_subgraph");
  });

  test("a built graph is a complete workflow", () => {
    const saved = buildTxt2img().toWorkflow();
    assert.equal(Object.keys(saved.nodes).length, 9);
    assert.deepEqual(saved.nodes.sampler.inputs.latent, { node: "empty_latent", output: "latent" });
  });
});

describe("editing nodes", () => {
  test("moveNodes moves several nodes at once and checks positions first", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    graph.moveNodes({ sampler: [1, 2], noise: [3.5, -4] });
    assert.deepEqual(graph.node("sampler").position, [1, 2]);
    assert.deepEqual(graph.node("noise").position, [3.5, -4]);
    assertRefusedUnchanged(graph, () => graph.moveNodes({ sampler: [9, 9], noise: [NaN, 0] }), "schema", "noise.position");
    assertRefusedUnchanged(graph, () => graph.moveNodes({ ghost: [0, 0] }), "missing_node", "ghost");
  });

  test("setTitle sets and clears a title", () => {
    const graph = new Graph(template("edit-flowedit.json"), catalogue);
    graph.setTitle("edit", "My edit");
    assert.equal(graph.node("edit").title, "My edit");
    graph.setTitle("edit", "");
    assert.ok(!("title" in graph.node("edit")));
    graph.setTitle("edit", "again");
    graph.setTitle("edit", null);
    assert.ok(!("title" in graph.node("edit")));
  });

  test("removeNodes removes their links, exposed fields and group memberships", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const before = graph.toWorkflow();
    graph.removeNodes(["sampler", "noise"]);
    const saved = graph.toWorkflow();
    assert.ok(!("sampler" in saved.nodes) && !("noise" in saved.nodes));
    assert.ok(!("latent" in saved.nodes.decode.inputs));
    assert.ok(graph.links().every((wire) => !["sampler", "noise"].includes(wire.from) && !["sampler", "noise"].includes(wire.to)));
    assert.ok(saved.exposed.every((field) => !["sampler", "noise"].includes(field.node)));
    assert.ok(before.exposed.some((field) => ["sampler", "noise"].includes(field.node)), "the template exposes one of them");
    assert.deepEqual(saved.groups[0].nodes, before.groups[0].nodes.filter((id) => !["sampler", "noise"].includes(id)));
  });

  test("removing one source of a multi input keeps the others in order", () => {
    const graph = new Graph(emptyWorkflow(), catalogue);
    const [a, b, c] = ["EmptyImage", "EmptyImage", "EmptyImage"].map((type) => graph.addNode(type));
    const grid = graph.addNode("ImageGrid");
    for (const source of [a, b, c]) graph.connect(source, "image", grid, "images");
    graph.removeNodes([b]);
    assert.deepEqual(graph.node(grid).inputs.images, [{ node: a, output: "image" }, { node: c, output: "image" }]);
    graph.removeNodes([a, c]);
    assert.deepEqual(graph.node(grid).inputs, {});
  });

  test("setBypass marks and unmarks nodes, refuses Subgraph nodes, and the result still loads", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    graph.setBypass(["sampler", "decode"], true);
    assert.equal(graph.node("sampler").bypass, true);
    assert.equal(graph.node("decode").bypass, true);
    checkWorkflow(graph.toWorkflow());
    graph.setBypass(["decode"], false);
    assert.ok(!("bypass" in graph.node("decode")), "not bypassed: the field is left out, as the server saves it");
    const grouped = new Graph(template("txt2img-sd3.json"), catalogue);
    const { node } = grouped.groupIntoSubgraph(["noise", "schedule"]);
    assertRefusedUnchanged(grouped, () => grouped.setBypass(["sampler", node], true), "invalid_value", "cannot be bypassed");
    assertRefused(() => checkWorkflow({ ...emptyWorkflow(), nodes: { a: { type: "Int", bypass: "yes" } } }), "schema", "nodes.a.bypass");
  });

  test("removing an unknown node changes nothing", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    assertRefusedUnchanged(graph, () => graph.removeNodes(["sampler", "ghost"]), "missing_node", "ghost");
  });
});

describe("setting params", () => {
  const graph = () => new Graph(template("txt2img-sd3.json"), catalogue);

  test("a valid value is stored", () => {
    const g = graph();
    g.setParam("sampler", "guidance", 4.5);
    g.setParam("sampler", "guidance", 5); // an INT-looking value is a fine FLOAT
    g.setParam("model", "family", "flux");
    g.setParam("model", "vae_tiling", true);
    assert.deepEqual([g.node("sampler").params.guidance, g.node("model").params.family, g.node("model").params.vae_tiling], [5, "flux", true]);
  });

  test("out-of-bounds values name the node and the field", () => {
    const g = graph();
    assertRefusedUnchanged(g, () => g.setParam("sampler", "guidance", 150), "out_of_bounds", "sampler.guidance", "at most 100", "150");
    assertRefusedUnchanged(g, () => g.setParam("sampler", "true_cfg", 0.5), "out_of_bounds", "sampler.true_cfg", "at least 1");
    assert.throws(() => g.setParam("sampler", "guidance", -1), (error) => error.node === "sampler" && error.field === "guidance");
  });

  test("wrong types are refused", () => {
    const g = graph();
    assertRefusedUnchanged(g, () => g.setParam("schedule", "steps", 2.5), "invalid_value", "schedule.steps", "whole number");
    assertRefusedUnchanged(g, () => g.setParam("schedule", "steps", true), "invalid_value", "whole number");
    assertRefusedUnchanged(g, () => g.setParam("schedule", "steps", "20"), "invalid_value", "whole number");
    assertRefusedUnchanged(g, () => g.setParam("sampler", "guidance", "7"), "invalid_value", "a number");
    assertRefusedUnchanged(g, () => g.setParam("model", "vae_tiling", 1), "invalid_value", "true or false");
    assertRefusedUnchanged(g, () => g.setParam("model", "source", 3), "invalid_value", "text");
  });

  test("choices are enforced", () => {
    const g = graph();
    assertRefusedUnchanged(g, () => g.setParam("model", "family", "sdxl"), "not_in_choices", "model.family", '"auto", "sd3", "flux"');
  });

  test("null is accepted only where the default is null", () => {
    const g = new Graph(template("edit-flowedit.json"), catalogue);
    g.setParam("edit", "n_max", 12);
    g.setParam("edit", "n_max", null);
    assert.equal(g.node("edit").params.n_max, null);
    assertRefusedUnchanged(g, () => g.setParam("edit", "seed", null), "invalid_value", "edit.seed", "empty");
  });

  test("unknown params and Subgraph nodes are refused", () => {
    const g = graph();
    assertRefusedUnchanged(g, () => g.setParam("sampler", "cfg", 7), "unknown_param", "sampler.cfg", "guidance");
    assertRefusedUnchanged(g, () => g.setParam("ghost", "cfg", 7), "missing_node");
    const group = g.groupIntoSubgraph(["noise"]).node;
    assertRefusedUnchanged(g, () => g.setParam(group, "seed", 1), "unknown_param", "no params of its own");
  });

  test("nodes of unknown types cannot have their params checked", () => {
    const g = new Graph({ ...emptyWorkflow(), nodes: { x: { type: "Mystery" } } }, catalogue);
    assertRefusedUnchanged(g, () => g.setParam("x", "a", 1), "unknown_type", "Mystery");
  });
});

describe("checkParamValue", () => {
  test("exclusive bounds", () => {
    const shift = paramSpec("ShiftedSchedule", "shift");
    assert.equal(checkParamValue(shift, 0).code, "out_of_bounds");
    assert.equal(checkParamValue(shift, 0.01), null);
  });

  test("string lengths count characters, not UTF-16 units", () => {
    const spec = { type: "STRING", required: false, default: "", max_length: 2 };
    assert.equal(checkParamValue(spec, "😀😀"), null);
    assert.equal(checkParamValue(spec, "😀😀😀").code, "out_of_bounds");
    assert.equal(checkParamValue(paramSpec("LoadImage", "path"), "").code, "out_of_bounds");
  });

  test("patterns, with Unicode word characters as the server's regex has them", () => {
    const prefix = paramSpec("SaveImage", "filename_prefix");
    assert.equal(checkParamValue(prefix, "run-1.a b_c"), null);
    assert.equal(checkParamValue(prefix, "café"), null);
    assert.equal(checkParamValue(prefix, "a/b").code, "invalid_value");
    const colour = paramSpec("EmptyImage", "color");
    assert.equal(checkParamValue(colour, "#00ff7F"), null);
    assert.match(checkParamValue(colour, "red").message, /pattern/);
  });

  test("lists of prompts", () => {
    const prompts = paramSpec("SplitFlow", "sub_prompts");
    assert.equal(checkParamValue(prompts, ["a cat", "a hat"]), null);
    assert.equal(checkParamValue(prompts, []).code, "out_of_bounds");
    assert.equal(checkParamValue(prompts, Array(9).fill("x")).code, "out_of_bounds");
    assert.equal(checkParamValue(prompts, ["a", 1]).code, "invalid_value");
    assert.equal(checkParamValue(prompts, null).code, "invalid_value", "required");
  });

  test("integer choices compare by value", () => {
    const factor = paramSpec("FlowChef", "factor");
    assert.equal(checkParamValue(factor, 4), null);
    assert.equal(checkParamValue(factor, 3).code, "not_in_choices");
  });

  test("params of no scalar type take any JSON value", () => {
    const spec = { type: "JSON", required: false, default: null };
    assert.equal(checkParamValue(spec, { a: [1, "b", null] }), null);
    assert.equal(checkParamValue(spec, { a: () => 1 }).code, "invalid_value");
  });
});

describe("connecting", () => {
  test("links are typed: a matching output connects, a wrong one is refused with both types", () => {
    const graph = new Graph(emptyWorkflow(), catalogue);
    const model = graph.addNode("LoadFlowModel");
    const sampler = graph.addNode("Sampler");
    const noise = graph.addNode("Noise");
    assert.deepEqual(graph.connect(model, "model", sampler, "model"), { replaced: null, index: null });
    assertRefusedUnchanged(graph, () => graph.connect(noise, "noise", sampler, "model"), "type_mismatch", "sampler.model expects FLOW_MODEL", "noise.noise gives NOISE");
  });

  test("a second link into a single input replaces the first and returns it", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const old = graph.node("sampler").inputs.noise;
    const other = graph.addNode("Noise");
    const result = graph.connect(other, "noise", "sampler", "noise");
    assert.deepEqual(result, { replaced: old, index: null });
    assert.deepEqual(graph.node("sampler").inputs.noise, { node: other, output: "noise" });
    assert.equal(graph.links().filter((w) => w.to === "sampler" && w.input === "noise").length, 1);
  });

  test("multi inputs append links in order", () => {
    const graph = new Graph(emptyWorkflow(), catalogue);
    const grid = graph.addNode("ImageGrid");
    const images = ["EmptyImage", "EmptyImage", "EmptyImage"].map((type) => graph.addNode(type));
    images.forEach((image, i) => assert.deepEqual(graph.connect(image, "image", grid, "images"), { replaced: null, index: i }));
    assert.deepEqual(graph.node(grid).inputs.images, images.map((node) => ({ node, output: "image" })));
    assert.deepEqual(graph.links().filter((w) => w.to === grid).map((w) => [w.from, w.index]), images.map((node, i) => [node, i]));
  });

  test("a multi input saved as a single link grows into a list", () => {
    const document = { ...emptyWorkflow(), nodes: { a: { type: "EmptyImage" }, b: { type: "EmptyImage" }, grid: { type: "ImageGrid", inputs: { images: { node: "a", output: "image" } } } } };
    const graph = new Graph(document, catalogue);
    graph.connect("b", "image", "grid", "images");
    assert.deepEqual(graph.node("grid").inputs.images, [{ node: "a", output: "image" }, { node: "b", output: "image" }]);
  });

  test("params can be wired from scalar outputs, with INT widening to FLOAT", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const integer = graph.addNode("Int");
    const float = graph.addNode("Float");
    const text = graph.addNode("String");
    graph.connect(integer, "value", "sampler", "guidance");
    graph.connect(integer, "value", "latent", "width");
    graph.connect(text, "value", "prompt", "text");
    assertRefusedUnchanged(graph, () => graph.connect(float, "value", "latent", "height"), "type_mismatch", "latent.height expects INT", "gives FLOAT");
    assertRefusedUnchanged(graph, () => graph.connect(text, "value", "sampler", "denoise"), "type_mismatch");
    const seed = graph.addNode("Seed");
    graph.connect(seed, "seed", "noise", "seed");
    assert.deepEqual(graph.node("noise").inputs.seed, { node: seed, output: "seed" });
    assert.equal(graph.node("noise").params.seed, template("txt2img-sd3.json").nodes.noise.params.seed, "the literal value stays for when the wire goes");
  });

  test("unknown outputs, inputs and nodes are refused", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    assertRefusedUnchanged(graph, () => graph.connect("model", "clip", "sampler", "model"), "missing_output", "model has no output \"clip\"", "text_encoder");
    assertRefusedUnchanged(graph, () => graph.connect("model", "model", "sampler", "unet"), "unknown_input", "unet");
    assertRefusedUnchanged(graph, () => graph.connect("ghost", "model", "sampler", "model"), "missing_node", "ghost");
    const withUnknown = new Graph({ ...emptyWorkflow(), nodes: { x: { type: "Mystery" }, s: { type: "SaveImage" } } }, catalogue);
    assertRefusedUnchanged(withUnknown, () => withUnknown.connect("x", "image", "s", "images"), "unknown_type", "Mystery");
  });

  test("cycles are refused, with the path they would close", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const grow = graph.addNode("GrowMask");
    const invert = graph.addNode("InvertMask");
    graph.connect(grow, "mask", invert, "mask");
    assertRefusedUnchanged(graph, () => graph.connect(invert, "mask", grow, "mask"), "cycle", `${grow} → ${invert} → ${grow}`);
    assertRefusedUnchanged(graph, () => graph.connect(grow, "mask", grow, "mask"), "cycle", `${grow} → ${grow}`);
    const encode = graph.addNode("VAEEncode");
    graph.connect("decode", "image", encode, "image");
    assertRefusedUnchanged(graph, () => graph.connect(encode, "latent", "sampler", "latent"), "cycle", `sampler → decode → ${encode} → sampler`);
  });

  test("connectionProblem answers without changing anything", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const before = graph.toWorkflow();
    assert.equal(graph.connectionProblem("model", "model", "latent", "model"), null);
    assert.equal(graph.connectionProblem("decode", "image", "sampler", "latent").code, "type_mismatch");
    assert.equal(graph.connectionProblem("sampler", "latent", "latent", "model").code, "type_mismatch");
    assert.deepEqual(graph.toWorkflow(), before);
  });

  test("disconnect removes one link of a multi input, or all links of an input", () => {
    const graph = new Graph(emptyWorkflow(), catalogue);
    const grid = graph.addNode("ImageGrid");
    const [a, b, c] = ["EmptyImage", "EmptyImage", "EmptyImage"].map((type) => graph.addNode(type));
    for (const image of [a, b, c]) graph.connect(image, "image", grid, "images");
    assert.deepEqual(graph.disconnect(grid, "images", 1), [{ node: b, output: "image" }]);
    assert.deepEqual(graph.node(grid).inputs.images, [{ node: a, output: "image" }, { node: c, output: "image" }]);
    assertRefusedUnchanged(graph, () => graph.disconnect(grid, "images", 5), "missing_link");
    assert.deepEqual(graph.disconnect(grid, "images"), [{ node: a, output: "image" }, { node: c, output: "image" }]);
    assert.deepEqual(graph.node(grid).inputs, {});
    assert.deepEqual(graph.disconnect(grid, "images"), []);
  });

  test("disconnecting a single input", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const link = graph.node("sampler").inputs.noise;
    assert.deepEqual(graph.disconnect("sampler", "noise"), [link]);
    assert.ok(!("noise" in graph.node("sampler").inputs));
  });
});

describe("socket highlighting", () => {
  test("compatibleTargets lists every input and wireable param that fits, never closing a cycle", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const integer = graph.addNode("Int");
    const targets = graph.compatibleTargets(integer, "value");
    const has = (node, input, kind) => targets.some((t) => t.node === node && t.input === input && t.kind === kind);
    assert.ok(has("latent", "width", "param"));
    assert.ok(has("sampler", "guidance", "param"), "INT widens to FLOAT");
    assert.ok(!targets.some((t) => t.kind === "input"), "no node has an INT input socket");
    assert.ok(!targets.some((t) => t.node === "model" && t.input === "vae_tiling"));

    const latentTargets = graph.compatibleTargets("sampler", "latent");
    assert.ok(latentTargets.some((t) => t.node === "decode" && t.input === "latent"));
    assert.ok(!latentTargets.some((t) => t.node === "sampler"), "the sampler itself would be a cycle");
  });

  test("compatibleSources lists every output that fits, never from downstream", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const other = graph.addNode("Sampler");
    const sources = graph.compatibleSources("sampler", "latent");
    assert.ok(sources.some((s) => s.node === "latent" && s.output === "latent"));
    assert.ok(sources.some((s) => s.node === other && s.output === "latent"));
    assert.ok(!sources.some((s) => s.node === "sampler"));
    graph.connect("sampler", "latent", other, "latent");
    assert.ok(!graph.compatibleSources("sampler", "latent").some((s) => s.node === other), "other is downstream now");
    assert.deepEqual(graph.compatibleSources("sampler", "nothing"), []);
    assert.deepEqual(graph.compatibleTargets("sampler", "nothing"), []);
  });

  test("every highlighted pair connects", () => {
    const graph = new Graph(template("edit-flowchef.json"), catalogue);
    for (const node of graph.nodeIds()) {
      for (const output of graph.specOf(node).outputs) {
        for (const target of graph.compatibleTargets(node, output.name)) {
          assert.equal(graph.connectionProblem(node, output.name, target.node, target.input), null);
        }
      }
    }
  });
});

describe("subgraphs", () => {
  const sampling = ["latent", "noise", "schedule", "solver", "sampler"];

  test("grouping moves the nodes and inner links into a definition and reroutes boundary links", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const before = graph.toWorkflow();
    const { node, subgraph } = graph.groupIntoSubgraph(sampling, { name: "Sampling" });
    assert.deepEqual([node, subgraph], ["sampling", "sampling"]);
    const saved = graph.toWorkflow();
    for (const id of sampling) assert.ok(!(id in saved.nodes));
    const instance = saved.nodes.sampling;
    assert.equal(instance.type, SUBGRAPH_TYPE);
    assert.equal(instance.subgraph, "sampling");
    assert.equal(instance.title, "Sampling");
    assert.deepEqual(instance.params, {});
    assert.deepEqual(instance.position, [
      Math.min(...sampling.map((id) => before.nodes[id].position[0])), Math.min(...sampling.map((id) => before.nodes[id].position[1]))]);

    const definition = saved.subgraphs.sampling;
    assert.deepEqual(Object.keys(definition.nodes).sort(), [...sampling].sort());
    assert.deepEqual(definition.nodes.sampler.inputs.latent, { node: "latent", output: "latent" }, "an inner link stays inside");
    assert.ok(!("model" in definition.nodes.sampler.inputs), "a boundary link leaves the inner node");

    // One port per outside output, shared by every inner input it fed.
    const modelPort = definition.inputs.find((port) => port.targets.some((t) => t.node === "sampler" && t.input === "model"));
    assert.equal(modelPort.type, "FLOW_MODEL");
    assert.deepEqual(instance.inputs[modelPort.name], before.nodes.sampler.inputs.model);
    const modelTargets = Object.keys(before.nodes).filter((id) => sampling.includes(id) && before.nodes[id].inputs.model !== undefined)
      .map((id) => ({ node: id, input: "model" }));
    assert.deepEqual(modelPort.targets, modelTargets);
    assert.equal(definition.inputs.length, new Set(sampling.flatMap((id) => Object.values(before.nodes[id].inputs))
      .filter((link) => !sampling.includes(link.node)).map((link) => `${link.node}.${link.output}`)).size);

    assert.deepEqual(definition.outputs, [{ name: "latent", type: "LATENT", source: { node: "sampler", output: "latent" } }]);
    assert.deepEqual(saved.nodes.decode.inputs.latent, { node: "sampling", output: "latent" });

    // Exposed fields now address the inner node through the Subgraph node; the visual group holds it.
    for (const [i, field] of before.exposed.entries()) {
      assert.equal(saved.exposed[i].node, sampling.includes(field.node) ? `sampling/${field.node}` : field.node);
    }
    assert.deepEqual(saved.groups[0].nodes, ["sampling"]);
  });

  for (const name of templateNames) {
    test(`grouping then ungrouping ${name} restores it (each node alone, then all of them)`, () => {
      const document = template(name);
      const graph = new Graph(document, catalogue);
      for (const id of graph.nodeIds()) {
        const { node } = graph.groupIntoSubgraph([id]);
        assert.deepEqual(graph.ungroup(node), { [id]: id });
        assertSameWorkflow(graph.toWorkflow(), document);
      }
      const all = graph.nodeIds();
      const { node } = graph.groupIntoSubgraph(all);
      assert.deepEqual(graph.ungroup(node), Object.fromEntries(all.map((id) => [id, id])));
      // A visual group that held some of the selection held the Subgraph node, so it gets back all its nodes.
      const saved = graph.toWorkflow();
      assertSameWorkflow({ ...saved, groups: [] }, { ...document, groups: [] });
      saved.groups.forEach((group, i) => assert.deepEqual(group.nodes, document.groups[i].nodes.length ? all : []));
    });
  }

  test("a Subgraph node's sockets come from its definition and are type-checked", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const { node } = graph.groupIntoSubgraph(sampling, { name: "Sampling" });
    const spec = graph.specOf(node);
    assert.deepEqual(spec.outputs, [{ name: "latent", type: "LATENT" }]);
    const modelPort = spec.inputs.find((port) => port.type === "FLOW_MODEL");
    assert.equal(modelPort.optional, false);
    assert.equal(modelPort.multi, false);
    const other = graph.addNode("LoadFlowModel");
    assert.deepEqual(graph.connect(other, "model", node, modelPort.name).replaced, { node: "model", output: "model" });
    assertRefusedUnchanged(graph, () => graph.connect(other, "vae", node, modelPort.name), "type_mismatch");
    assert.ok(graph.compatibleSources(node, modelPort.name).some((s) => s.node === "model"));
    assert.ok(graph.compatibleTargets(node, "latent").some((t) => t.node === "decode"));
    assertRefusedUnchanged(graph, () => graph.connect("decode", "image", node, modelPort.name), "type_mismatch");
  });

  test("a wired param becomes a port of the param's type", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const steps = graph.addNode("Int", { params: { value: 8 } });
    graph.connect(steps, "value", "schedule", "steps");
    const { node, subgraph } = graph.groupIntoSubgraph(["schedule"]);
    const port = graph.toWorkflow().subgraphs[subgraph].inputs.find((p) => p.targets[0].input === "steps");
    assert.equal(port.type, "INT");
    assert.deepEqual(graph.node(node).inputs[port.name], { node: steps, output: "value" });
  });

  test("an INT feeding INT and FLOAT inputs makes an INT port; a FLOAT-only port stays FLOAT", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const integer = graph.addNode("Int");
    graph.connect(integer, "value", "sampler", "guidance");
    graph.connect(integer, "value", "latent", "width");
    const { subgraph } = graph.groupIntoSubgraph(["sampler", "latent"]);
    const ports = graph.toWorkflow().subgraphs[subgraph].inputs;
    const shared = ports.find((p) => p.targets.some((t) => t.input === "guidance"));
    assert.deepEqual(shared.targets, [{ node: "latent", input: "width" }, { node: "sampler", input: "guidance" }]);
    assert.equal(shared.type, "INT");
    const only = new Graph(template("txt2img-sd3.json"), catalogue);
    only.connect(only.addNode("Int"), "value", "sampler", "guidance");
    const { subgraph: id } = only.groupIntoSubgraph(["sampler"]);
    assert.equal(only.toWorkflow().subgraphs[id].inputs.find((p) => p.name === "guidance").type, "FLOAT");
  });

  test("a multi input fed from outside becomes a multi port that keeps the list", () => {
    const graph = new Graph(emptyWorkflow(), catalogue);
    const [a, b] = ["EmptyImage", "EmptyImage"].map((type) => graph.addNode(type));
    const grid = graph.addNode("ImageGrid");
    const save = graph.addNode("SaveImage");
    graph.connect(a, "image", grid, "images");
    graph.connect(b, "image", grid, "images");
    graph.connect(grid, "image", save, "images");
    const before = graph.toWorkflow();
    const { node } = graph.groupIntoSubgraph([grid, save]);
    assert.deepEqual(graph.node(node).inputs.images, [{ node: a, output: "image" }, { node: b, output: "image" }]);
    assert.deepEqual(graph.specOf(node).inputs, [{ name: "images", type: "IMAGE", optional: false, multi: true }]);
    const c = graph.addNode("EmptyImage");
    assert.deepEqual(graph.connect(c, "image", node, "images"), { replaced: null, index: 2 });
    graph.disconnect(node, "images", 2);
    graph.removeNodes([c]);
    graph.ungroup(node);
    assertSameWorkflow(graph.toWorkflow(), before);
  });

  test("a multi input with links from both sides cannot be grouped", () => {
    const graph = new Graph(emptyWorkflow(), catalogue);
    const [a, b] = ["EmptyImage", "EmptyImage"].map((type) => graph.addNode(type));
    const grid = graph.addNode("ImageGrid");
    graph.connect(a, "image", grid, "images");
    graph.connect(b, "image", grid, "images");
    assertRefusedUnchanged(graph, () => graph.groupIntoSubgraph([a, grid]), "cannot_group", `${grid}.images`, "inside and outside");
  });

  test("a selection that an outside node both reads and feeds cannot be grouped", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    // model → latent → sampler: grouping model and sampler without latent would loop through it.
    assertRefusedUnchanged(graph, () => graph.groupIntoSubgraph(["model", "sampler"]), "cannot_group", "model → latent → sampler", "add it to the selection");
  });

  test("grouping refuses empty selections, missing nodes and unknown types", () => {
    const graph = new Graph({ ...template("txt2img-sd3.json"), nodes: { ...template("txt2img-sd3.json").nodes, odd: { type: "Mystery" } } }, catalogue);
    assertRefusedUnchanged(graph, () => graph.groupIntoSubgraph([]), "cannot_group");
    assertRefusedUnchanged(graph, () => graph.groupIntoSubgraph(["noise", "ghost"]), "missing_node", "ghost");
    assertRefusedUnchanged(graph, () => graph.groupIntoSubgraph(["odd"]), "cannot_group", "Mystery");
  });

  test("an unnamed group gets a plain id and no title", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    assert.deepEqual(graph.groupIntoSubgraph(["noise"], { name: "" }), { node: "subgraph", subgraph: "subgraph" });
    assert.ok(!("title" in graph.node("subgraph")));
  });

  test("groups nest, ids stay fresh, and ungrouping the inner one later works", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const first = graph.groupIntoSubgraph(["noise", "solver"], { name: "Sampling" });
    const second = graph.groupIntoSubgraph([first.node, "sampler", "schedule", "latent"], { name: "Sampling" });
    assert.deepEqual(second, { node: "sampling_2", subgraph: "sampling_2" });
    const saved = graph.toWorkflow();
    assert.equal(saved.subgraphs.sampling_2.nodes.sampling.subgraph, "sampling");
    assert.ok(saved.exposed.some((field) => field.node === "sampling_2/sampling/noise"), "the exposed seed is addressed through both levels");
    assert.deepEqual(saved.nodes.decode.inputs.latent, { node: "sampling_2", output: "latent" });
    graph.ungroup(second.node);
    assert.ok(graph.toWorkflow().subgraphs.sampling, "the inner definition is still in use");
    assert.ok(!graph.toWorkflow().subgraphs.sampling_2, "an unused definition goes away");
    graph.ungroup(first.node);
    assertSameWorkflow(graph.toWorkflow(), template("txt2img-sd3.json"));
  });

  test("a definition used twice stays after one ungroup, and inner ids are renamed where taken", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const { node, subgraph } = graph.groupIntoSubgraph(["noise"], { name: "Seeded noise" });
    const copy = graph.addNode(SUBGRAPH_TYPE, { subgraph, position: [0, 900] });
    assert.equal(copy, "seeded_noise_2");
    assert.equal(graph.node(copy).subgraph, subgraph);
    graph.ungroup(node);
    assert.ok(graph.hasNode("noise"));
    assert.ok(graph.toWorkflow().subgraphs[subgraph]);
    assert.deepEqual(graph.ungroup(copy), { noise: "noise_2" });
    assert.deepEqual(graph.node("noise_2").position, [0, 900], "the inner nodes land where the Subgraph node was");
    assert.ok(!graph.toWorkflow().subgraphs[subgraph]);
  });

  test("ungrouping feeds port values to every target, as flattening does", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const { node } = graph.groupIntoSubgraph(sampling);
    const other = graph.addNode("LoadFlowModel");
    const port = graph.specOf(node).inputs.find((p) => p.type === "FLOW_MODEL").name;
    graph.connect(other, "model", node, port);
    graph.ungroup(node);
    for (const id of ["latent", "schedule", "sampler"]) assert.deepEqual(graph.node(id).inputs.model, { node: other, output: "model" });
  });

  test("ungrouping a node that is not a Subgraph, or whose definition is missing, is refused", () => {
    const graph = new Graph({ ...emptyWorkflow(), nodes: { n: { type: "Noise" }, s: { type: SUBGRAPH_TYPE, subgraph: "gone" } } }, catalogue);
    assertRefusedUnchanged(graph, () => graph.ungroup("n"), "not_subgraph");
    assertRefusedUnchanged(graph, () => graph.ungroup("s"), "unknown_subgraph", "gone");
    assert.equal(graph.specOf("s"), null);
  });

  test("a definition that contains itself gives no spec instead of recursing forever", () => {
    const document = {
      ...emptyWorkflow(),
      nodes: { top: { type: SUBGRAPH_TYPE, subgraph: "loop" } },
      subgraphs: { loop: { nodes: { again: { type: SUBGRAPH_TYPE, subgraph: "loop" } }, inputs: [{ name: "x", type: "INT", targets: [{ node: "again", input: "x" }] }] } },
    };
    const graph = new Graph(document, catalogue);
    assert.deepEqual(graph.specOf("top").inputs, [{ name: "x", type: "INT", optional: true, multi: false }]);
  });
});

describe("opening subgraphs", () => {
  const sampling = ["latent", "noise", "schedule", "solver", "sampler"];

  /** txt2img-sd3 with its sampling nodes grouped into the Subgraph node "sampling". */
  function grouped() {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    graph.groupIntoSubgraph(sampling, { name: "Sampling" });
    return graph;
  }

  /** Assert that the whole document still has the server's shape and loads back as it is. */
  function assertWholeDocument(graph) {
    const saved = graph.toWorkflow();
    checkWorkflow(saved);
    assert.deepEqual(new Graph(saved, catalogue).toWorkflow(), saved);
    return saved;
  }

  test("splitFlatId finds the scope's node a flattened id is or is inside", () => {
    assert.deepEqual(splitFlatId("sampler", ""), { node: "sampler", inside: [] });
    assert.deepEqual(splitFlatId("a/b/c", "a/"), { node: "b", inside: ["c"] });
    assert.equal(splitFlatId("a", "a/"), null);
    assert.equal(splitFlatId("other/b", "a/"), null);
    assert.equal(splitFlatId(null, ""), null);
  });

  test("entering shows the definition's nodes; leaving goes back up", () => {
    const graph = grouped();
    const top = graph.nodeIds();
    assert.deepEqual([graph.scope, graph.scopePrefix, graph.scopePorts()], [[], "", null]);
    graph.enterSubgraph("sampling");
    assert.deepEqual(graph.scope, ["sampling"]);
    assert.equal(graph.scopePrefix, "sampling/");
    assert.deepEqual(graph.nodeIds().sort(), [...sampling].sort());
    assert.deepEqual(graph.node("sampler").inputs.latent, { node: "latent", output: "latent" });
    assert.ok(graph.links().every((wire) => sampling.includes(wire.from) && sampling.includes(wire.to)));
    assert.ok(!graph.hasNode("decode"), "top-level nodes are not in this scope");
    assert.deepEqual(graph.scopeLevels(), [{ node: "sampling", title: "Sampling", subgraph: "sampling", name: "Sampling", uses: 1 }]);
    const ports = graph.scopePorts();
    assert.deepEqual(ports.outputs, [{ name: "latent", type: "LATENT", source: { node: "sampler", output: "latent" } }]);
    assert.ok(ports.inputs.some((port) => port.type === "FLOW_MODEL" && port.targets.some((t) => t.node === "sampler" && t.input === "model")));
    const copy = graph.scope;
    copy.push("changed");
    assert.deepEqual(graph.scope, ["sampling"], "scope is a copy");
    assert.equal(graph.leaveSubgraph(), "sampling");
    assert.equal(graph.leaveSubgraph(), null, "nothing to leave at the top level");
    assert.deepEqual(graph.nodeIds(), top);
  });

  test("only a Subgraph node with a definition can be opened", () => {
    const graph = new Graph({ ...emptyWorkflow(), nodes: { n: { type: "Noise" }, s: { type: SUBGRAPH_TYPE, subgraph: "gone" } } }, catalogue);
    assertRefusedUnchanged(graph, () => graph.enterSubgraph("n"), "not_subgraph", "n is a Noise, not a Subgraph node");
    assertRefusedUnchanged(graph, () => graph.enterSubgraph("s"), "unknown_subgraph", "s: subgraph \"gone\" is not defined");
    assertRefusedUnchanged(graph, () => graph.enterSubgraph("ghost"), "missing_node", "ghost");
    assert.deepEqual(graph.scope, []);
  });

  test("a definition that contains itself cannot be opened a second time", () => {
    const document = {
      ...emptyWorkflow(),
      nodes: { top: { type: SUBGRAPH_TYPE, subgraph: "loop" } },
      subgraphs: { loop: { nodes: { again: { type: SUBGRAPH_TYPE, subgraph: "loop" } } } },
    };
    const graph = new Graph(document, catalogue);
    graph.enterSubgraph("top");
    assertRefused(() => graph.enterSubgraph("again"), "subgraph_cycle", "loop → loop");
    assert.deepEqual(graph.scope, ["top"]);
  });

  test("edits inside land in the definition, and the whole document stays valid", () => {
    const graph = grouped();
    const before = graph.toWorkflow();
    graph.enterSubgraph("sampling");
    graph.setParam("sampler", "guidance", 4.5);
    graph.setTitle("noise", "Seed source");
    graph.moveNodes({ solver: [10, 20] });
    graph.setBypass(["solver"], true);
    graph.setBypass(["solver"], false);
    const added = graph.addNode("Noise", { position: [5, 5] });
    assert.equal(added, "noise_2", "ids are fresh within the scope");
    graph.connect(added, "noise", "sampler", "noise");
    const saved = assertWholeDocument(graph);
    const inner = saved.subgraphs.sampling.nodes;
    assert.equal(inner.sampler.params.guidance, 4.5);
    assert.equal(inner.noise.title, "Seed source");
    assert.deepEqual(inner.solver.position, [10, 20]);
    assert.deepEqual(inner.sampler.inputs.noise, { node: "noise_2", output: "noise" });
    assert.deepEqual(saved.nodes, before.nodes, "the top level is untouched");
    assert.deepEqual(graph.compatibleSources("sampler", "noise").map((s) => s.node).sort(), ["noise", "noise_2"], "sources come from the scope");
    assert.ok(graph.compatibleTargets("latent", "latent").every((t) => sampling.includes(t.node)));
    graph.connect("noise", "noise", "sampler", "noise");
    graph.removeNodes([added]);
    graph.setTitle("noise", before.subgraphs.sampling.nodes.noise.title);
    graph.setParam("sampler", "guidance", 7);
    graph.moveNodes({ solver: before.subgraphs.sampling.nodes.solver.position });
    assert.deepEqual(graph.toWorkflow(), before);
  });

  test("removing an inner node drops it from the input ports and prunes its exposed fields for every use", () => {
    const graph = grouped();
    graph.addNode(SUBGRAPH_TYPE, { subgraph: "sampling", id: "again" });
    const document = graph.toWorkflow();
    document.exposed.push({ node: "again/schedule", param: "steps", label: "Steps again" }, { node: "again/noise", param: "seed", label: "Seed again" });
    graph.replaceWorkflow(document);
    graph.enterSubgraph("sampling");
    assert.equal(graph.scopeLevels()[0].uses, 2);
    graph.removeNodes(["schedule"]);
    const saved = assertWholeDocument(graph);
    const targets = saved.subgraphs.sampling.inputs.flatMap((port) => port.targets);
    assert.ok(targets.length > 0 && targets.every((t) => t.node !== "schedule"));
    assert.ok(!("sigmas" in saved.subgraphs.sampling.nodes.sampler.inputs), "links from it go too");
    assert.deepEqual(saved.exposed.map((field) => field.node).filter((node) => node.includes("schedule")), []);
    assert.ok(saved.exposed.some((field) => field.node === "again/noise") && saved.exposed.some((field) => field.node === "sampling/noise"));
    assert.deepEqual(saved.groups, document.groups);
  });

  test("removing inside leaves top-level groups alone, even for a top-level node of the same id", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    graph.groupIntoSubgraph(["noise", "sampler"], { name: "Sampling" });
    graph.insertNodes({ noise: { type: "Noise", position: [0, 0] } });
    const document = graph.toWorkflow();
    document.groups[0].nodes.push("noise");
    graph.replaceWorkflow(document);
    graph.enterSubgraph("sampling");
    graph.removeNodes(["noise"]);
    assert.deepEqual(graph.toWorkflow().groups, document.groups);
    assert.ok(graph.toWorkflow().nodes.noise, "the top-level noise stays");
  });

  test("the node an output port comes from cannot be removed", () => {
    const graph = grouped();
    graph.enterSubgraph("sampling");
    assertRefusedUnchanged(graph, () => graph.removeNodes(["noise", "sampler"]), "subgraph_port",
      "cannot delete sampler", "output \"latent\"", "subgraph \"sampling\"", "ungroup");
  });

  test("a new inner link into a port target takes that target out of the port", () => {
    const graph = grouped();
    graph.enterSubgraph("sampling");
    const modelPort = () => graph.scopePorts().inputs.find((port) => port.type === "FLOW_MODEL");
    assert.ok(modelPort().targets.some((t) => t.node === "sampler" && t.input === "model"));
    const model = graph.addNode("LoadFlowModel");
    graph.connect(model, "model", "sampler", "model");
    assert.deepEqual(modelPort().targets.filter((t) => t.node === "sampler"), []);
    assert.ok(modelPort().targets.some((t) => t.node === "latent"), "the port's other targets stay");
    graph.connect(model, "model", "latent", "model");
    assert.deepEqual(modelPort().targets, [{ node: "schedule", input: "model" }]);
    assertWholeDocument(graph);
  });

  test("undo and redo keep the scope while it is valid, and trim it when it is not", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const history = new History();
    history.edit(graph, (g) => g.groupIntoSubgraph(sampling, { name: "Sampling" }));
    graph.enterSubgraph("sampling");
    history.edit(graph, (g) => g.setParam("sampler", "guidance", 3));
    const edited = graph.toWorkflow();
    assert.equal(history.undo(graph), true);
    assert.deepEqual(graph.scope, ["sampling"]);
    assert.equal(graph.node("sampler").params.guidance, 7);
    assert.equal(history.redo(graph), true);
    assert.deepEqual(graph.toWorkflow(), edited);
    assert.equal(graph.node("sampler").params.guidance, 3);
    // A refused edit restores the document as it was and stays in the scope.
    assert.throws(() => history.edit(graph, (g) => g.setParam("sampler", "guidance", "much")), GraphError);
    assert.deepEqual(graph.scope, ["sampling"]);
    history.undo(graph);
    history.undo(graph); // before the grouping: there is no Subgraph node to be inside
    assert.deepEqual(graph.scope, []);
    assert.ok(graph.hasNode("decode") && graph.hasNode("sampler"));
    history.redo(graph);
    assert.deepEqual(graph.scope, [], "a trimmed scope does not come back");
  });

  test("replacing the document trims the scope to the part that still leads to definitions", () => {
    const graph = grouped();
    graph.enterSubgraph("sampling");
    const { node } = graph.groupIntoSubgraph(["noise", "solver"], { name: "Inner" });
    graph.enterSubgraph(node);
    assert.deepEqual(graph.scope, ["sampling", "inner"]);
    const document = graph.toWorkflow();
    graph.replaceWorkflow(document);
    assert.deepEqual(graph.scope, ["sampling", "inner"]);
    delete document.subgraphs.inner;
    graph.replaceWorkflow(document);
    assert.deepEqual(graph.scope, ["sampling"]);
    graph.replaceWorkflow(emptyWorkflow());
    assert.deepEqual(graph.scope, []);
  });

  test("subgraphs open inside subgraphs; grouping and ungrouping inside works and exposed fields follow", () => {
    const graph = grouped();
    const before = graph.toWorkflow();
    graph.enterSubgraph("sampling");
    const { node, subgraph } = graph.groupIntoSubgraph(["noise", "solver"], { name: "Inner" });
    let saved = assertWholeDocument(graph);
    assert.equal(saved.subgraphs.sampling.nodes[node].subgraph, subgraph);
    assert.deepEqual(Object.keys(saved.subgraphs[subgraph].nodes).sort(), ["noise", "solver"]);
    assert.ok(saved.exposed.some((field) => field.node === "sampling/inner/noise" && field.param === "seed"));
    assert.deepEqual(saved.groups, before.groups, "visual groups are top-level only");
    assert.deepEqual(saved.nodes, before.nodes);

    graph.enterSubgraph(node);
    assert.equal(graph.scopePrefix, "sampling/inner/");
    assert.deepEqual(graph.scopeLevels().map((level) => level.node), ["sampling", "inner"]);
    graph.setParam("noise", "seed", 42);
    assert.equal(graph.toWorkflow().subgraphs.inner.nodes.noise.params.seed, 42);
    graph.leaveToTop();
    assert.deepEqual(graph.scope, []);

    graph.enterSubgraph("sampling");
    graph.ungroup(node);
    saved = assertWholeDocument(graph);
    assert.ok(!saved.subgraphs.inner, "the unused inner definition goes");
    assert.equal(saved.subgraphs.sampling.nodes.noise.params.seed, 42);
    graph.setParam("noise", "seed", 0);
    assertSameWorkflow(graph.toWorkflow(), before);
  });

  test("grouping or ungrouping a port endpoint inside is refused with the port", () => {
    const graph = grouped();
    graph.enterSubgraph("sampling");
    assertRefusedUnchanged(graph, () => graph.groupIntoSubgraph(["latent", "noise"]), "cannot_group", "cannot group latent", "input", "ungroup");
    assertRefusedUnchanged(graph, () => graph.groupIntoSubgraph(["sampler", "noise", "solver", "latent", "schedule"]), "cannot_group");
    graph.leaveSubgraph();
    // A Subgraph node the outer definition's ports feed: ungrouping it inside is refused.
    graph.ungroup("sampling");
    graph.groupIntoSubgraph(["sampler", "noise"], { name: "Inner" });
    graph.groupIntoSubgraph(["inner", "latent", "schedule", "solver"], { name: "Outer" });
    graph.enterSubgraph("outer");
    assertRefusedUnchanged(graph, () => graph.ungroup("inner"), "cannot_ungroup", "cannot ungroup inner", "input \"model\"");
  });

  test("a Subgraph node cannot be added or pasted inside its own definition", () => {
    const graph = grouped();
    graph.enterSubgraph("sampling");
    assertRefusedUnchanged(graph, () => graph.addNode(SUBGRAPH_TYPE, { subgraph: "sampling" }), "subgraph_cycle", "cannot go inside subgraph \"sampling\"");
    const holder = { type: SUBGRAPH_TYPE, subgraph: "holder" };
    const definitions = { holder: { nodes: { deep: { type: SUBGRAPH_TYPE, subgraph: "sampling" } } } };
    assertRefusedUnchanged(graph, () => graph.insertNodes({ holder }, definitions), "subgraph_cycle", "through \"sampling\"");
    graph.leaveSubgraph();
    graph.insertNodes({ holder }, definitions);
    assert.equal(graph.scopeLevels().length, 0);
    graph.enterSubgraph("holder");
    graph.enterSubgraph("deep");
    assert.equal(graph.scopePrefix, "holder/deep/");
    assert.equal(graph.scopeLevels().at(-1).uses, 2);
  });
});

describe("vocabulary hints", () => {
  test("a Prompt wired to a closed-vocabulary model shows what it knows; an open model, or nothing wired, shows none", () => {
    assert.ok(catalogue.vocabularies["embedded:shapes"].includes("circle"));
    const graph = new Graph(template("txt2img-embedded.json"), catalogue);
    const prompt = graph.nodeIds().find((id) => graph.node(id).type === "TextEncode");
    assert.equal(graph.vocabularyHint(prompt, "text"), catalogue.vocabularies["embedded:shapes"]);
    assert.equal(graph.vocabularyHint(prompt, "negative_text"), null, "only params that declare vocabulary_from");
    const loader = graph.links().find((wire) => wire.to === prompt && wire.input === "encoder").from;
    graph.setParam(loader, "source", "stabilityai/stable-diffusion-3.5-medium");
    assert.equal(graph.vocabularyHint(prompt, "text"), null);
    graph.disconnect(prompt, "encoder");
    assert.equal(graph.vocabularyHint(prompt, "text"), null);
  });
});

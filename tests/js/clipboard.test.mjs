// Copy and paste of a selection through clipboard text.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { copySelection, parseClipboard, pasteClipboard } from "../../app/ui/editor/static/clipboard.mjs";
import { Graph, GraphError, SUBGRAPH_TYPE, emptyWorkflow } from "../../app/ui/editor/static/graph.mjs";
import { History } from "../../app/ui/editor/static/history.mjs";

const catalogue = JSON.parse(readFileSync(new URL("./catalogue.json", import.meta.url), "utf-8"));
const template = (name) => JSON.parse(readFileSync(new URL(`../../pipelines/templates/${name}`, import.meta.url), "utf-8"));

const sampling = ["latent", "noise", "schedule", "solver", "sampler"];

describe("copy", () => {
  test("the text holds the selected nodes and only the links among them", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const data = JSON.parse(copySelection(graph, sampling));
    assert.equal(data.format, "flowcanvas.clipboard");
    assert.deepEqual(Object.keys(data.nodes).sort(), [...sampling].sort());
    assert.deepEqual(data.nodes.sampler.inputs, {
      latent: { node: "latent", output: "latent" }, noise: { node: "noise", output: "noise" },
      sigmas: { node: "schedule", output: "sigmas" }, solver: { node: "solver", output: "solver" },
    });
    assert.deepEqual(data.nodes.schedule.inputs, {}, "links from model, width and height are dropped");
    assert.deepEqual(data.nodes.noise.params, graph.node("noise").params);
    assert.deepEqual(data.subgraphs, {});
  });

  test("copying does not change the graph", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const before = graph.toWorkflow();
    copySelection(graph, sampling);
    assert.deepEqual(graph.toWorkflow(), before);
  });

  test("a multi input keeps the selected links in order", () => {
    const graph = new Graph(emptyWorkflow(), catalogue);
    const [a, b, c] = ["EmptyImage", "EmptyImage", "EmptyImage"].map((type) => graph.addNode(type));
    const grid = graph.addNode("ImageGrid");
    for (const image of [a, b, c]) graph.connect(image, "image", grid, "images");
    const data = JSON.parse(copySelection(graph, [c, grid, a]));
    assert.deepEqual(data.nodes[grid].inputs.images, [{ node: a, output: "image" }, { node: c, output: "image" }]);
  });

  test("an empty selection or a missing node is refused", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    assert.throws(() => copySelection(graph, []), GraphError);
    assert.throws(() => copySelection(graph, ["ghost"]), (error) => error.code === "missing_node");
  });
});

describe("paste", () => {
  test("into the same graph: fresh ids, links remapped, positions offset", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const text = copySelection(graph, sampling);
    const before = graph.toWorkflow();
    const renamed = pasteClipboard(graph, text);
    assert.deepEqual(renamed, { latent: "latent_2", noise: "noise_2", sampler: "sampler_2", schedule: "schedule_2", solver: "solver_2" });
    for (const [old, id] of Object.entries(renamed)) {
      const entry = graph.node(id);
      assert.deepEqual(entry.position, [before.nodes[old].position[0] + 40, before.nodes[old].position[1] + 40]);
      assert.deepEqual(entry.params, before.nodes[old].params);
      assert.equal(entry.type, before.nodes[old].type);
    }
    assert.deepEqual(graph.node("sampler_2").inputs, {
      latent: { node: "latent_2", output: "latent" }, noise: { node: "noise_2", output: "noise" },
      sigmas: { node: "schedule_2", output: "sigmas" }, solver: { node: "solver_2", output: "solver" },
    });
    const saved = graph.toWorkflow();
    for (const id of Object.keys(before.nodes)) assert.deepEqual(saved.nodes[id], before.nodes[id], `${id} is untouched`);
    assert.deepEqual(saved.exposed, before.exposed, "exposed fields are not copied");
    assert.deepEqual(saved.groups, before.groups, "groups are not copied");
  });

  test("pasting twice counts the ids up", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const text = copySelection(graph, ["noise"]);
    assert.deepEqual(pasteClipboard(graph, text), { noise: "noise_2" });
    assert.deepEqual(pasteClipboard(graph, text), { noise: "noise_3" });
  });

  test("into another graph (another tab): the copied ids are kept where free", () => {
    const source = new Graph(template("txt2img-sd3.json"), catalogue);
    const target = new Graph(emptyWorkflow(), catalogue);
    target.addNode("Noise", { id: "noise" });
    const renamed = pasteClipboard(target, copySelection(source, sampling), { offset: [0, 0] });
    assert.deepEqual(renamed, { latent: "latent", noise: "noise_2", sampler: "sampler", schedule: "schedule", solver: "solver" });
    assert.deepEqual(target.node("sampler").inputs.noise, { node: "noise_2", output: "noise" });
    assert.deepEqual(target.node("sampler").position, source.node("sampler").position);
  });

  test("`at` puts the pasted block's top-left corner at a point", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const renamed = pasteClipboard(graph, copySelection(graph, ["noise", "solver"]), { at: [1000, 2000] });
    const noise = graph.toWorkflow().nodes.noise;
    const solver = graph.toWorkflow().nodes.solver;
    const [left, top] = [Math.min(noise.position[0], solver.position[0]), Math.min(noise.position[1], solver.position[1])];
    assert.deepEqual(graph.node(renamed.noise).position, [noise.position[0] - left + 1000, noise.position[1] - top + 2000]);
    assert.deepEqual(graph.node(renamed.solver).position, [solver.position[0] - left + 1000, solver.position[1] - top + 2000]);
  });

  test("text that is not ours is refused with a clear error and changes nothing", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const before = graph.toWorkflow();
    const notOurs = [
      ["plain text", "a red circle", "not JSON"],
      ["other JSON", '{"hello": 1}', "does not hold FlowCanvas nodes"],
      ["a JSON list", "[1, 2]", "does not hold FlowCanvas nodes"],
      ["null", "null", "does not hold FlowCanvas nodes"],
      ["a ComfyUI graph", '{"last_node_id": 1, "nodes": [], "links": []}', "does not hold FlowCanvas nodes"],
      ["a whole workflow", JSON.stringify(before), "open it instead"],
      ["a newer clipboard", '{"format": "flowcanvas.clipboard", "version": 2, "nodes": {}}', "version 2"],
      ["malformed nodes", '{"format": "flowcanvas.clipboard", "version": 1, "nodes": {"a": {"type": "Noise", "position": "x"}}}', "malformed", "nodes.a.position"],
      ["an unknown field", '{"format": "flowcanvas.clipboard", "version": 1, "nodes": {}, "script": "alert(1)"}', "malformed", "script"],
      ["a node id with a slash", '{"format": "flowcanvas.clipboard", "version": 1, "nodes": {"a/b": {"type": "Noise"}}}', "a_b"],
    ];
    for (const [what, text, ...fragments] of notOurs.slice(0, -1)) {
      assert.throws(() => pasteClipboard(graph, text), (error) => {
        assert.ok(error instanceof GraphError, what);
        assert.equal(error.code, "not_clipboard", what);
        for (const fragment of fragments) assert.ok(error.message.includes(fragment), `${what}: ${error.message}`);
        return true;
      });
      assert.deepEqual(graph.toWorkflow(), before, what);
    }
    // An id the server would refuse is made a fresh, valid one.
    assert.deepEqual(pasteClipboard(graph, notOurs.at(-1)[1]), { "a/b": "a_b" });
  });

  test("parseClipboard reads what copySelection writes", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const { nodes, subgraphs } = parseClipboard(copySelection(graph, ["noise"]));
    assert.deepEqual(nodes, { noise: graph.node("noise") });
    assert.deepEqual(subgraphs, {});
  });

  test("a paste is one undoable edit", () => {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const history = new History();
    const before = graph.toWorkflow();
    history.edit(graph, (g) => pasteClipboard(g, copySelection(g, sampling)));
    history.undo(graph);
    assert.deepEqual(graph.toWorkflow(), before);
  });
});

describe("subgraphs on the clipboard", () => {
  function groupedGraph() {
    const graph = new Graph(template("txt2img-sd3.json"), catalogue);
    const inner = graph.groupIntoSubgraph(["noise", "solver"], { name: "Inner" });
    const outer = graph.groupIntoSubgraph([inner.node, "sampler", "schedule", "latent"], { name: "Outer" });
    return { graph, inner, outer };
  }

  test("a Subgraph node travels with its definition and the ones nested in it", () => {
    const { graph, inner, outer } = groupedGraph();
    const data = JSON.parse(copySelection(graph, [outer.node]));
    assert.deepEqual(Object.keys(data.subgraphs).sort(), [inner.subgraph, outer.subgraph].sort());
    const target = new Graph(emptyWorkflow(), catalogue);
    const renamed = pasteClipboard(target, JSON.stringify(data));
    assert.equal(target.node(renamed[outer.node]).subgraph, outer.subgraph);
    assert.deepEqual(target.toWorkflow().subgraphs, graph.toWorkflow().subgraphs);
    assert.deepEqual(target.specOf(renamed[outer.node]), graph.specOf(outer.node));
  });

  test("pasting into the same graph reuses identical definitions", () => {
    const { graph, outer } = groupedGraph();
    const definitions = graph.toWorkflow().subgraphs;
    const renamed = pasteClipboard(graph, copySelection(graph, [outer.node]));
    assert.equal(graph.node(renamed[outer.node]).subgraph, outer.subgraph);
    assert.deepEqual(graph.toWorkflow().subgraphs, definitions);
  });

  test("a definition whose id is taken by a different one is pasted under a fresh id, and so is what uses it", () => {
    const { graph, inner, outer } = groupedGraph();
    const text = copySelection(graph, [outer.node]);
    const target = new Graph(emptyWorkflow(), catalogue);
    target.addNode("Noise", { id: "n" });
    const clash = target.groupIntoSubgraph(["n"], { name: "Inner" });
    assert.equal(clash.subgraph, inner.subgraph);
    const theirs = target.toWorkflow().subgraphs[inner.subgraph];

    const renamed = pasteClipboard(target, text);
    const saved = target.toWorkflow();
    assert.deepEqual(saved.subgraphs[inner.subgraph], theirs, "the existing definition is untouched");
    const pastedOuter = saved.nodes[renamed[outer.node]];
    assert.equal(pastedOuter.type, SUBGRAPH_TYPE);
    const pastedInnerId = Object.values(saved.subgraphs[pastedOuter.subgraph].nodes).find((entry) => entry.type === SUBGRAPH_TYPE).subgraph;
    assert.notEqual(pastedInnerId, inner.subgraph);
    assert.deepEqual(saved.subgraphs[pastedInnerId], graph.toWorkflow().subgraphs[inner.subgraph]);
    assert.deepEqual(target.specOf(renamed[outer.node]), graph.specOf(outer.node));
  });
});

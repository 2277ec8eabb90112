// Undo/redo over the graph model: one step per edit, exact restores, coalescing, the cap.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { Graph, GraphError } from "../../app/ui/editor/static/graph.mjs";
import { History } from "../../app/ui/editor/static/history.mjs";

const catalogue = JSON.parse(readFileSync(new URL("./catalogue.json", import.meta.url), "utf-8"));
const starter = JSON.parse(readFileSync(new URL("../../pipelines/templates/txt2img-sd3.json", import.meta.url), "utf-8"));

const fresh = () => ({ graph: new Graph(starter, catalogue), history: new History() });

describe("steps", () => {
  test("each edit is one step; undo and redo restore the exact graphs", () => {
    const { graph, history } = fresh();
    const states = [graph.toWorkflow()];
    history.edit(graph, (g) => g.setParam("sampler", "guidance", 3));
    states.push(graph.toWorkflow());
    const added = history.edit(graph, (g) => g.addNode("Noise", { position: [5, 5] }));
    assert.equal(added, "noise_2", "edit returns what the edit returned");
    states.push(graph.toWorkflow());
    history.edit(graph, (g) => g.connect(added, "noise", "sampler", "noise"));
    states.push(graph.toWorkflow());
    history.edit(graph, (g) => g.removeNodes(["solver"]));
    states.push(graph.toWorkflow());

    for (let i = states.length - 2; i >= 0; i -= 1) {
      assert.equal(history.undo(graph), true);
      assert.deepEqual(graph.toWorkflow(), states[i]);
    }
    assert.equal(history.canUndo, false);
    assert.equal(history.undo(graph), false);
    assert.deepEqual(graph.toWorkflow(), states[0]);

    for (let i = 1; i < states.length; i += 1) {
      assert.equal(history.redo(graph), true);
      assert.deepEqual(graph.toWorkflow(), states[i]);
    }
    assert.equal(history.canRedo, false);
    assert.equal(history.redo(graph), false);
  });

  test("an edit made of several calls is one step", () => {
    const { graph, history } = fresh();
    const before = graph.toWorkflow();
    history.edit(graph, (g) => {
      const noise = g.addNode("Noise");
      g.connect(noise, "noise", "sampler", "noise");
      g.removeNodes(["noise"]);
    });
    history.undo(graph);
    assert.deepEqual(graph.toWorkflow(), before);
    assert.equal(history.canUndo, false);
  });

  test("a new edit after an undo clears the redo stack", () => {
    const { graph, history } = fresh();
    history.edit(graph, (g) => g.setParam("sampler", "guidance", 3));
    history.edit(graph, (g) => g.setParam("sampler", "guidance", 4));
    history.undo(graph);
    assert.equal(history.canRedo, true);
    history.edit(graph, (g) => g.setTitle("sampler", "S"));
    assert.equal(history.canRedo, false);
    assert.equal(history.redo(graph), false);
    history.undo(graph);
    assert.equal(graph.node("sampler").params.guidance, 3);
  });

  test("a refused edit records nothing and leaves the graph as it was, even half-way through", () => {
    const { graph, history } = fresh();
    const before = graph.toWorkflow();
    assert.throws(() => history.edit(graph, (g) => g.setParam("sampler", "guidance", 1000)), GraphError);
    assert.throws(() => history.edit(graph, (g) => {
      g.addNode("Noise");
      g.connect("noise", "noise", "sampler", "model");
    }), GraphError);
    assert.deepEqual(graph.toWorkflow(), before);
    assert.equal(history.canUndo, false);
  });

  test("an edit that changes nothing records nothing", () => {
    const { graph, history } = fresh();
    history.edit(graph, (g) => g.setParam("sampler", "guidance", g.node("sampler").params.guidance));
    history.edit(graph, (g) => g.disconnect("noise", "seed"));
    assert.equal(history.canUndo, false);
  });

  test("snapshots are copies: later edits do not alter what undo restores", () => {
    const { graph, history } = fresh();
    history.edit(graph, (g) => g.moveNodes({ sampler: [1, 1] }));
    const afterMove = graph.toWorkflow();
    history.edit(graph, (g) => g.moveNodes({ sampler: [2, 2] }));
    history.undo(graph);
    assert.deepEqual(graph.toWorkflow(), afterMove);
    graph.moveNodes({ sampler: [9, 9] }); // outside history, as a careless caller might
    history.redo(graph);
    assert.deepEqual(graph.node("sampler").position, [2, 2]);
  });

  test("clear forgets every step", () => {
    const { graph, history } = fresh();
    history.edit(graph, (g) => g.setTitle("sampler", "a"));
    history.edit(graph, (g) => g.setTitle("sampler", "b"));
    history.undo(graph);
    history.clear();
    assert.equal(history.canUndo, false);
    assert.equal(history.canRedo, false);
  });
});

describe("coalescing", () => {
  test("a drag (edits with one key) is one step back to where it started", () => {
    const { graph, history } = fresh();
    const before = graph.toWorkflow();
    for (let x = 0; x < 20; x += 1) history.edit(graph, (g) => g.moveNodes({ sampler: [x, x] }), { coalesce: "move:sampler" });
    assert.deepEqual(graph.node("sampler").position, [19, 19]);
    history.undo(graph);
    assert.deepEqual(graph.toWorkflow(), before);
    assert.equal(history.canUndo, false);
    history.redo(graph);
    assert.deepEqual(graph.node("sampler").position, [19, 19]);
  });

  test("typing into one field is one step; another field or an uncoalesced edit starts a new one", () => {
    const { graph, history } = fresh();
    const start = graph.node("prompt").params.text;
    for (const text of ["a", "a c", "a ca", "a cat"]) history.edit(graph, (g) => g.setParam("prompt", "text", text), { coalesce: "param:prompt.text" });
    for (const text of ["b", "bl"]) history.edit(graph, (g) => g.setParam("prompt", "negative_text", text), { coalesce: "param:prompt.negative_text" });
    history.edit(graph, (g) => g.setTitle("prompt", "P"));
    history.edit(graph, (g) => g.setTitle("prompt", "Q"));
    const undone = [];
    while (history.undo(graph)) undone.push([graph.node("prompt").params.text, graph.node("prompt").params.negative_text, graph.node("prompt").title]);
    const { title, params } = starter.nodes.prompt;
    assert.deepEqual(undone, [
      ["a cat", "bl", "P"],
      ["a cat", "bl", title],
      ["a cat", params.negative_text, title],
      [start, params.negative_text, title],
    ]);
  });

  test("endCoalescing makes the next drag of the same node a step of its own", () => {
    const { graph, history } = fresh();
    history.edit(graph, (g) => g.moveNodes({ sampler: [1, 1] }), { coalesce: "move:sampler" });
    history.edit(graph, (g) => g.moveNodes({ sampler: [2, 2] }), { coalesce: "move:sampler" });
    history.endCoalescing();
    history.edit(graph, (g) => g.moveNodes({ sampler: [3, 3] }), { coalesce: "move:sampler" });
    history.undo(graph);
    assert.deepEqual(graph.node("sampler").position, [2, 2]);
    history.undo(graph);
    assert.deepEqual(graph.node("sampler").position, starter.nodes.sampler.position);
  });

  test("an undo ends coalescing, so the next edit does not merge into an undone step", () => {
    const { graph, history } = fresh();
    history.edit(graph, (g) => g.moveNodes({ sampler: [1, 1] }), { coalesce: "move:sampler" });
    history.edit(graph, (g) => g.setTitle("sampler", "x"));
    history.undo(graph);
    history.edit(graph, (g) => g.moveNodes({ sampler: [5, 5] }), { coalesce: "move:sampler" });
    history.undo(graph);
    assert.deepEqual(graph.node("sampler").position, [1, 1]);
  });

  test("a drag that ends where it began leaves no step", () => {
    const { graph, history } = fresh();
    history.edit(graph, (g) => g.setTitle("noise", "N"));
    const home = graph.node("sampler").position;
    history.edit(graph, (g) => g.moveNodes({ sampler: [0, 0] }), { coalesce: "move:sampler" });
    history.edit(graph, (g) => g.moveNodes({ sampler: home }), { coalesce: "move:sampler" });
    history.edit(graph, (g) => g.moveNodes({ sampler: [7, 7] }), { coalesce: "move:sampler" });
    history.undo(graph);
    assert.deepEqual(graph.node("sampler").position, home);
    assert.equal(graph.node("noise").title, "N");
    history.undo(graph);
    assert.equal(graph.node("noise").title, starter.nodes.noise.title);
    assert.equal(history.canUndo, false);
  });
});

describe("the cap", () => {
  test("only the last `limit` steps can be undone", () => {
    const graph = new Graph(starter, catalogue);
    const history = new History({ limit: 5 });
    for (let step = 1; step <= 8; step += 1) history.edit(graph, (g) => g.setParam("sampler", "guidance", step));
    let undone = 0;
    while (history.undo(graph)) undone += 1;
    assert.equal(undone, 5);
    assert.equal(graph.node("sampler").params.guidance, 3);
    while (history.redo(graph));
    assert.equal(graph.node("sampler").params.guidance, 8);
  });

  test("the default cap is 100 steps", () => {
    const graph = new Graph(starter, catalogue);
    const history = new History();
    for (let step = 0; step < 130; step += 1) history.edit(graph, (g) => g.moveNodes({ noise: [step, 0] }));
    let undone = 0;
    while (history.undo(graph)) undone += 1;
    assert.equal(undone, 100);
    assert.deepEqual(graph.node("noise").position, [29, 0]);
  });

  test("a limit below one is refused", () => {
    assert.throws(() => new History({ limit: 0 }), RangeError);
  });
});

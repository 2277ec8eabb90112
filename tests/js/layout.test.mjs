// Arrange: columns follow the data, nodes sit just left of their first consumer, nothing overlaps.

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { describe, test } from "node:test";

import { ARRANGE_GAP, arrange } from "../../app/ui/editor/static/layout.mjs";

const templates = new URL("../../pipelines/templates/", import.meta.url);

/** The node entries and links of a workflow document (inputs hold one link or a list of them). */
function graphOf(workflow) {
  const nodes = Object.entries(workflow.nodes).map(([id, entry]) => ({ id, position: entry.position }));
  const links = [];
  for (const [id, entry] of Object.entries(workflow.nodes)) {
    for (const value of Object.values(entry.inputs ?? {})) {
      for (const link of Array.isArray(value) ? value : [value]) links.push({ from: link.node, to: id });
    }
  }
  return { nodes, links };
}

const overlaps = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;

describe("arrange", () => {
  test("a chain goes left to right, one column each", () => {
    const nodes = ["c", "b", "a"].map((id) => ({ id, position: [0, 0] }));
    const links = [{ from: "a", to: "b" }, { from: "b", to: "c" }];
    const sizes = new Map(["a", "b", "c"].map((id) => [id, { width: 100, height: 50 }]));
    const at = arrange(nodes, links, sizes);
    assert.ok(at.get("a")[0] < at.get("b")[0] && at.get("b")[0] < at.get("c")[0]);
    assert.equal(at.get("b")[0] - at.get("a")[0] >= 100 + ARRANGE_GAP.x, true);
    assert.equal(at.get("a")[1], at.get("c")[1]);
  });

  test("a source sits one column left of its first consumer, not with the far-left sources", () => {
    const nodes = ["model", "encode", "sample", "seed"].map((id, i) => ({ id, position: [0, i * 10] }));
    const links = [{ from: "model", to: "encode" }, { from: "encode", to: "sample" }, { from: "seed", to: "sample" },
      { from: "model", to: "sample" }];
    const sizes = new Map(nodes.map(({ id }) => [id, { width: 100, height: 50 }]));
    const at = arrange(nodes, links, sizes);
    assert.equal(at.get("seed")[0], at.get("encode")[0]);
    assert.ok(at.get("model")[0] < at.get("encode")[0]);
  });

  test("within a column the previous vertical order is kept", () => {
    const nodes = [{ id: "low", position: [0, 500] }, { id: "high", position: [300, 20] }, { id: "sink", position: [0, 0] }];
    const links = [{ from: "low", to: "sink" }, { from: "high", to: "sink" }];
    const sizes = new Map(nodes.map(({ id }) => [id, { width: 100, height: 50 }]));
    const at = arrange(nodes, links, sizes);
    assert.ok(at.get("high")[1] < at.get("low")[1]);
  });

  test("a cycle does not hang it", () => {
    const nodes = [{ id: "a", position: [0, 0] }, { id: "b", position: [0, 0] }];
    const at = arrange(nodes, [{ from: "a", to: "b" }, { from: "b", to: "a" }], new Map());
    assert.equal(at.size, 2);
  });

  for (const file of readdirSync(templates).filter((name) => name.endsWith(".json"))) {
    test(`${file}: no two nodes overlap, whatever their sizes`, () => {
      const { nodes, links } = graphOf(JSON.parse(readFileSync(new URL(file, templates), "utf-8")));
      const sizes = new Map(nodes.map(({ id }, i) => [id, { width: 180 + (i % 3) * 70, height: 60 + (i % 4) * 55 }]));
      const at = arrange(nodes, links, sizes);
      const boxes = nodes.map(({ id }) => {
        const [left, top] = at.get(id);
        return { id, left, top, right: left + sizes.get(id).width, bottom: top + sizes.get(id).height };
      });
      for (const [i, a] of boxes.entries()) {
        for (const b of boxes.slice(i + 1)) assert.equal(overlaps(a, b), false, `${a.id} overlaps ${b.id}`);
      }
    });
  }
});

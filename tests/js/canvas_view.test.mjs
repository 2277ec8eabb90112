// The canvas's view without a browser: fit's zoom and placement (Viewport) and the labels names become.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { MIN_FIT_ZOOM, Viewport } from "../../app/ui/editor/static/viewport.mjs";
import { humanise } from "../../app/ui/editor/static/nodes_view.mjs";

/** A viewport over a canvas of a given size (the DOM parts Viewport touches, and no more). */
function viewport(width, height) {
  const canvas = { style: {}, getBoundingClientRect: () => ({ left: 0, top: 0, width, height }) };
  return new Viewport(canvas, { style: {} });
}

describe("fit", () => {
  test("a graph that fits is centred, never zoomed in past 1", () => {
    const view = viewport(800, 600);
    view.fit({ left: 100, top: 50, right: 300, bottom: 150 });
    assert.equal(view.zoom, 1);
    assert.deepEqual([view.x, view.y], [300 - 100, 250 - 50]);
  });

  test("zooms out to fit, but not below the zoom where 12 px text is still about 10 px", () => {
    assert.ok(12 * MIN_FIT_ZOOM >= 9.5, "labels stay readable");
    const view = viewport(800, 600);
    view.fit({ left: 0, top: 0, right: 900, bottom: 400 });
    assert.equal(view.zoom, (800 - 80) / 900);
    view.fit({ left: 0, top: 0, right: 4000, bottom: 3000 });
    assert.equal(view.zoom, MIN_FIT_ZOOM);
  });

  test("a graph too big at the smallest fit zoom shows its top-left part; an axis that fits is centred", () => {
    const view = viewport(800, 600);
    view.fit({ left: 40, top: 60, right: 3000, bottom: 300 });
    assert.equal(view.zoom, MIN_FIT_ZOOM);
    assert.equal(view.x, 40 - 40 * MIN_FIT_ZOOM, "the left edge is at the margin");
    assert.equal(view.y, (600 - 240 * MIN_FIT_ZOOM) / 2 - 60 * MIN_FIT_ZOOM, "the height fits: centred");
  });

  test("on a canvas with no size (a hidden tab) it shows the origin and says the canvas is not shown", () => {
    const view = viewport(0, 0);
    assert.equal(view.shown, false);
    view.fit({ left: 500, top: 500, right: 900, bottom: 900 });
    assert.deepEqual([view.x, view.y, view.zoom], [40, 40, 1]);
    assert.equal(viewport(10, 10).shown, true);
  });
});

describe("labels", () => {
  test("snake_case names read as words, acronyms in capitals, as nodes/registry.py titles params", () => {
    assert.equal(humanise("negative_prompt"), "Negative prompt");
    assert.equal(humanise("text_encoder"), "Text encoder");
    assert.equal(humanise("vae"), "VAE");
    assert.equal(humanise("drop_t5"), "Drop T5");
    assert.equal(humanise("true_cfg"), "True CFG");
    assert.equal(humanise("images"), "Images");
  });

  test("every param in the catalogue has a title, and a param without a Field title gets its name humanised", async () => {
    const { readFileSync } = await import("node:fs");
    const catalogue = JSON.parse(readFileSync(new URL("./catalogue.json", import.meta.url), "utf-8"));
    for (const spec of catalogue.nodes) {
      for (const param of spec.params) assert.equal(typeof param.title, "string", `${spec.type}.${param.name}`);
    }
    const save = catalogue.nodes.find((spec) => spec.type === "SaveImage").params.find((p) => p.name === "filename_prefix");
    assert.equal(save.title, humanise(save.name));
  });
});

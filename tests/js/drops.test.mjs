// Reading a dropped PNG's text chunks: the workflow a FlowCanvas PNG carries, however the chunk was written.

import assert from "node:assert/strict";
import { deflateSync } from "node:zlib";
import { describe, test } from "node:test";

import { WORKFLOW_CHUNK, pngTextChunks, pngWorkflow } from "../../app/ui/editor/static/drops.mjs";

const SIGNATURE = Uint8Array.from([137, 80, 78, 71, 13, 10, 26, 10]);

/** One PNG chunk (the CRC is not checked by the reader, so it is left zero). */
function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  new DataView(out.buffer).setUint32(0, data.length);
  out.set(Buffer.from(type, "latin1"), 4);
  out.set(data, 8);
  return out;
}

const join = (...parts) => Uint8Array.from(Buffer.concat(parts.map((part) => Buffer.from(part))));
const png = (...chunks) => join(SIGNATURE, chunk("IHDR", new Uint8Array(13)), ...chunks, chunk("IDAT", new Uint8Array(4)), chunk("IEND", new Uint8Array()));
const text = (keyword, value) => chunk("tEXt", join(Buffer.from(`${keyword}\0`, "latin1"), Buffer.from(value, "latin1")));
const ztext = (keyword, value) => chunk("zTXt", join(Buffer.from(`${keyword}\0\0`, "latin1"), deflateSync(Buffer.from(value, "latin1"))));
const itext = (keyword, value, { compressed = false } = {}) => chunk("iTXt", join(
  Buffer.from(`${keyword}\0`, "latin1"), Uint8Array.from([compressed ? 1 : 0, 0]), Buffer.from("en\0Workflow\0", "utf-8"),
  compressed ? deflateSync(Buffer.from(value, "utf-8")) : Buffer.from(value, "utf-8")));

const WORKFLOW = { format: "flowcanvas.workflow", version: 1, name: "Rosé ☀", nodes: { a: { type: "Int", params: { value: 3 } } } };

describe("PNG text chunks", () => {
  test("tEXt, zTXt and iTXt (plain and compressed) are all read", async () => {
    const texts = await pngTextChunks(png(text("Software", "Pillow"), ztext("Comment", "zipped words"),
      itext("plain", "ünïcode"), itext("packed", "ünïcode, deflated", { compressed: true })));
    assert.deepEqual(Object.fromEntries(texts), {
      Software: "Pillow", Comment: "zipped words", plain: "ünïcode", packed: "ünïcode, deflated",
    });
  });

  test("a file that is not a PNG, or a cut one, gives what it can and never throws", async () => {
    assert.equal((await pngTextChunks(new TextEncoder().encode('{"nodes": {}}'))).size, 0);
    const whole = png(text("first", "kept"), text("second", "lost"));
    const cut = whole.subarray(0, Buffer.from(whole).indexOf("lost") + 2); // ends inside the second chunk
    assert.deepEqual(Object.fromEntries(await pngTextChunks(cut)), { first: "kept" });
    assert.equal((await pngTextChunks(png(chunk("zTXt", Buffer.from("broken\0\0not zlib", "latin1"))))).size, 0);
  });
});

describe("the workflow a PNG carries", () => {
  test(`is the JSON in its ${WORKFLOW_CHUNK} chunk, written as tEXt or as iTXt (non-Latin-1 text)`, async () => {
    assert.deepEqual(await pngWorkflow(png(text("Software", "x"), itext(WORKFLOW_CHUNK, JSON.stringify(WORKFLOW)))), WORKFLOW);
    const latin = { ...WORKFLOW, name: "plain" };
    assert.deepEqual(await pngWorkflow(png(text(WORKFLOW_CHUNK, JSON.stringify(latin)))), latin);
  });

  test("is null for a picture without one, or with text there that is not a workflow object", async () => {
    assert.equal(await pngWorkflow(png(text("workflow", JSON.stringify(WORKFLOW)))), null); // ComfyUI's key: not ours
    assert.equal(await pngWorkflow(png(text(WORKFLOW_CHUNK, "not json"))), null);
    assert.equal(await pngWorkflow(png(text(WORKFLOW_CHUNK, "[1, 2]"))), null);
  });
});

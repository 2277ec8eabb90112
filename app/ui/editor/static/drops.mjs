// Images dropped on the canvas, as ComfyUI users expect: onto a node with an image param it becomes that param,
// onto empty canvas it becomes a new LoadImage node there. A FlowCanvas PNG (one carrying its workflow in a
// `flowcanvas_workflow` text chunk, see nodes/image.py encode_png) asks first, in a dialog on the canvas, whether
// to open its workflow or use the picture; opening is one undoable step like any replacement of the document.
//
// The canvas takes its image drops (preventDefault), so the page-wide importer (app/ui/studio_static/
// import_drop.mjs) leaves them alone; other files (a workflow JSON) still go to it.

import { el } from "./nodes_view.mjs";

export const WORKFLOW_CHUNK = "flowcanvas_workflow"; // pipelines/workflow.py PNG_WORKFLOW_KEY
const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/webp"]); // what keep_upload keeps
const IMAGE_NODE = "LoadImage";
const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/** Inflate zlib data (PNG's compression method 0). @param {Uint8Array} bytes @returns {Promise<Uint8Array>} */
async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * The text chunks of a PNG (tEXt, zTXt and iTXt), keyword → text; empty for bytes that are not a PNG. A chunk
 * that does not decode, or that a cut file ends in, is left out.
 * @param {Uint8Array} bytes
 * @returns {Promise<Map<string, string>>}
 */
export async function pngTextChunks(bytes) {
  const texts = new Map();
  if (bytes.length < 8 || PNG_SIGNATURE.some((byte, i) => bytes[i] !== byte)) return texts;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder("utf-8");
  for (let at = 8; at + 12 <= bytes.length;) {
    const length = view.getUint32(at);
    if (at + 12 + length > bytes.length) break; // a cut file: its last chunk is not all there
    const type = latin1.decode(bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, at + 8 + length);
    at += 12 + length;
    if (type === "IEND") break;
    if (!["tEXt", "zTXt", "iTXt"].includes(type)) continue;
    const keywordEnd = data.indexOf(0);
    if (keywordEnd < 0) continue;
    const keyword = latin1.decode(data.subarray(0, keywordEnd));
    try {
      if (type === "tEXt") {
        texts.set(keyword, latin1.decode(data.subarray(keywordEnd + 1)));
      } else if (type === "zTXt") {
        texts.set(keyword, latin1.decode(await inflate(data.subarray(keywordEnd + 2))));
      } else {
        const compressed = data[keywordEnd + 1] === 1;
        const languageEnd = data.indexOf(0, keywordEnd + 3);
        const translatedEnd = languageEnd < 0 ? -1 : data.indexOf(0, languageEnd + 1);
        if (translatedEnd < 0) continue;
        const text = data.subarray(translatedEnd + 1);
        texts.set(keyword, utf8.decode(compressed ? await inflate(text) : text));
      }
    } catch {
      // a corrupt chunk: as if it were not there
    }
  }
  return texts;
}

/** The workflow a FlowCanvas PNG carries, or null. @param {Uint8Array} bytes @returns {Promise<object|null>} */
export async function pngWorkflow(bytes) {
  const text = (await pngTextChunks(bytes)).get(WORKFLOW_CHUNK);
  if (text === undefined) return null;
  try {
    const workflow = JSON.parse(text);
    return workflow !== null && typeof workflow === "object" && !Array.isArray(workflow) ? workflow : null;
  } catch {
    return null;
  }
}

/** The dragged item is an image the canvas takes (its type is known while dragging, its name only on drop). */
const isImage = (item) => item.kind === "file" && IMAGE_TYPES.has(item.type);

/**
 * Handle image drops on the canvas of an editor.
 * @param {import("./bridge.mjs").Editor} editor
 */
export function installDrops(editor) {
  const { root, viewport } = editor;
  const canvas = viewport.canvas;
  const dialog = root.querySelector(".fc-dialog");
  let marked = null;

  /** The node under a client point with an image param, and that param's name; or null. */
  const imageTarget = (clientX, clientY) => {
    const node = document.elementFromPoint(clientX, clientY)?.closest(".fc-node");
    if (!node || !canvas.contains(node)) return null;
    const param = editor.graph.specOf(node.dataset.node)?.params.find((p) => p.widget === "image_upload");
    return param ? { element: node, node: node.dataset.node, param: param.name } : null;
  };
  const mark = (element) => {
    if (marked === element) return;
    marked?.classList.remove("fc-drop-target");
    element?.classList.add("fc-drop-target");
    marked = element;
  };

  canvas.addEventListener("dragover", (event) => {
    if (!Array.from(event.dataTransfer?.items ?? []).some(isImage)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    mark(imageTarget(event.clientX, event.clientY)?.element ?? null);
  });
  canvas.addEventListener("dragleave", (event) => {
    if (!canvas.contains(event.relatedTarget)) mark(null);
  });
  canvas.addEventListener("drop", (event) => {
    mark(null);
    const file = Array.from(event.dataTransfer?.files ?? []).find((f) => IMAGE_TYPES.has(f.type));
    if (file === undefined) return; // not ours: the page-wide importer may take it
    event.preventDefault();
    const target = imageTarget(event.clientX, event.clientY);
    const at = viewport.toWorld(event.clientX, event.clientY);
    dropped(file, target, at).catch((error) => editor.notify(`Could not use ${file.name}: ${error?.message ?? error}`, "error"));
  });

  /** A dropped image: maybe a workflow to open, else the picture for the node under it or a new LoadImage. */
  async function dropped(file, target, at) {
    if (file.type === "image/png") {
      const workflow = await pngWorkflow(new Uint8Array(await file.arrayBuffer()));
      if (workflow !== null) {
        const choice = await ask(file.name, workflow);
        if (choice === "open") {
          if (editor.replaceDocument(workflow)) editor.notify(`Opened the workflow in ${file.name}.`);
          return;
        }
        if (choice === "cancel") return;
      }
    }
    const imageParam = editor.graph.typeSpec(IMAGE_NODE)?.params.find((p) => p.widget === "image_upload")?.name;
    if (target === null && imageParam === undefined) {
      editor.notify(`No ${IMAGE_NODE} node type here to hold ${file.name}.`, "error");
      return;
    }
    const kept = await editor.uploadImage(file);
    if (!kept.path) return;
    if (target !== null && editor.graph.hasNode(target.node)) {
      editor.edit((g) => g.setParam(target.node, target.param, kept.path));
    } else {
      const id = editor.edit((g) => g.addNode(IMAGE_NODE, { position: [Math.round(at[0]), Math.round(at[1])], params: { [imageParam]: kept.path } }));
      if (id !== undefined) editor.select([id]);
    }
  }

  /**
   * Ask what to do with a PNG that carries a workflow: "open", "image" or "cancel" (Escape, or the dialog closed).
   * @param {string} name @param {object} workflow @returns {Promise<"open"|"image"|"cancel">}
   */
  function ask(name, workflow) {
    return new Promise((resolve) => {
      const nodes = Object.keys(workflow.nodes ?? {}).length;
      const answer = (choice) => {
        dialog.hidden = true;
        dialog.replaceChildren();
        root.focus({ preventScroll: true });
        resolve(choice);
      };
      const button = (label, choice, title) => {
        const b = el("button", `fc-dialog-${choice}`, label);
        b.type = "button";
        b.title = title;
        b.addEventListener("click", () => answer(choice));
        return b;
      };
      const buttons = el("div", "fc-dialog-buttons");
      buttons.append(
        button("Open the workflow", "open", "Replace the canvas with it (Undo brings this one back)"),
        button("Use the image", "image", "Put the picture on the canvas, as a LoadImage does"),
        button("Cancel", "cancel", "Do nothing"),
      );
      const title = typeof workflow.name === "string" && workflow.name ? `“${workflow.name}”, ` : "";
      dialog.replaceChildren(
        el("div", "fc-dialog-title", `${name} carries a workflow`),
        el("p", "", `${title}${nodes} node${nodes === 1 ? "" : "s"}. Open it in place of this canvas, or use the picture?`),
        buttons,
      );
      dialog.onkeydown = (event) => {
        event.stopPropagation(); // the canvas's shortcuts wait until the dialog is answered
        if (event.key === "Escape") answer("cancel");
      };
      dialog.hidden = false;
      dialog.querySelector(".fc-dialog-open").focus();
    });
  }
}

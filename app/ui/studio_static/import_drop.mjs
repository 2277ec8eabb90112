// Page-wide drop-to-import: a JSON or PNG file dropped anywhere on the page (any tab) is uploaded and handed to
// Python as an `import_file` event {name, path}; Python recognises it (app/ui/sharing.py) and opens a FlowCanvas
// workflow on the canvas, or says what the file is. Drops that a component handles itself (it calls
// preventDefault, as Gradio's upload areas do) are left to it, and so are drags that carry no files (the canvas
// palette's). Mounted by the Library tab's importer (app/ui/views/library.py), which Gradio renders at page load.

const MAX_BYTES = 32 * 1024 * 1024; // app/ui/sharing.py MAX_IMPORT_BYTES: refused before uploading
const DROPPING = "fc-dropping"; // class on <html> while files are dragged over the page

/** The Gradio side of the importer component; the latest mount wins (js_on_load may run again). */
let backend = null;

const carriesFiles = (event) => Array.from(event.dataTransfer?.types ?? []).includes("Files");

function showStatus(element, text) {
  const line = element.querySelector(".fc-import-status");
  if (line) line.textContent = text;
}

/** @param {{element: HTMLElement, trigger(name: string, data: object): void, upload(file: File): Promise<{path: string}>}} context */
export function install({ element, trigger, upload }) {
  const first = backend === null;
  backend = { element, trigger, upload };
  if (!first) return;
  document.addEventListener("dragover", (event) => {
    if (event.defaultPrevented || !carriesFiles(event)) return;
    event.preventDefault(); // allows the drop
    event.dataTransfer.dropEffect = "copy";
    document.documentElement.classList.add(DROPPING);
  });
  document.addEventListener("dragleave", (event) => {
    if (event.relatedTarget === null) document.documentElement.classList.remove(DROPPING); // left the window
  });
  document.addEventListener("drop", async (event) => {
    document.documentElement.classList.remove(DROPPING);
    if (event.defaultPrevented || !carriesFiles(event) || event.dataTransfer.files.length === 0) return;
    event.preventDefault(); // or the browser navigates to the file
    const file = event.dataTransfer.files[0];
    const { element: root, trigger: send, upload: put } = backend;
    if (file.size > MAX_BYTES) {
      send("import_file", { name: file.name, path: null, size: file.size });
      return;
    }
    showStatus(root, `Reading ${file.name}…`);
    try {
      const sent = await put(file);
      send("import_file", { name: file.name, path: sent.path, size: file.size });
    } catch (error) {
      showStatus(root, `Could not upload ${file.name}: ${error?.message ?? error}`);
    }
  });
}

// The node menu (right-click a node) and the keyboard-shortcuts overlay (? key or the toolbar's ? button).

import { el } from "./nodes_view.mjs";
import { SUBGRAPH_TYPE } from "./graph.mjs";

/** Every shortcut the canvas handles (interaction.mjs and bridge.mjs), as shown in the help overlay. */
export const SHORTCUTS = [
  ["Ctrl+Enter", "Run the workflow"],
  ["Ctrl+Alt+Enter", "Cancel the run"],
  ["Right-click a node", "Node menu: run up to here, open, rename, bypass, group, ungroup, delete"],
  ["Ctrl+B", "Bypass the selection, or stop bypassing it"],
  ["Double-click the canvas", "Search and add a node"],
  ["Double-click a title", "Rename the node"],
  ["Double-click a Subgraph node, Tab", "Open it to edit the nodes inside (the bar at the top leads back)"],
  ["Shift+Tab", "Leave the open subgraph, one level up"],
  ["Drag from a socket", "Wire it (compatible sockets light up); drag a wired input away to unwire"],
  ["Ctrl/Shift + drag", "Marquee select (Shift adds)"],
  ["Shift+click", "Add a node to the selection or take it out"],
  ["Ctrl+A / Escape", "Select all / nothing"],
  ["Delete, Backspace", "Delete the selection"],
  ["Ctrl+C / Ctrl+X / Ctrl+V", "Copy / cut / paste (as JSON text, also between tabs)"],
  ["Ctrl+Z / Ctrl+Shift+Z, Ctrl+Y", "Undo / redo"],
  ["Drag the background, Space+drag", "Pan"],
  ["Wheel", "Zoom about the cursor"],
  [".", "Fit the view to the nodes"],
  ["?", "Show or hide this help"],
];

/**
 * @param {import("./bridge.mjs").Editor} editor
 * @param {{run(target: string|null): void, rename(id: string): void}} actions
 */
export function installOverlays(editor, actions) {
  const { root } = editor;
  const canvas = root.querySelector(".fc-canvas");
  const menu = root.querySelector(".fc-menu");
  const help = root.querySelector(".fc-help");

  const closeMenu = () => {
    menu.hidden = true;
    menu.replaceChildren();
  };

  canvas.addEventListener("contextmenu", (event) => {
    const node = event.target.closest(".fc-node");
    if (node === null || editor.readonly) return;
    event.preventDefault();
    const id = node.dataset.node;
    if (!editor.selection.has(id)) editor.select([id]);
    const selected = [...editor.selection];
    const entry = editor.graph.node(id);
    // [action, label, what it does, shown, enabled]
    const items = [
      ["run-to", "Run up to here", () => actions.run(id), true, !editor.runView.active],
      ["open", "Open", () => editor.openSubgraph(id), entry.type === SUBGRAPH_TYPE, true],
      ["rename", "Rename", () => actions.rename(id), true, true],
      ["bypass", entry.bypass ? "Stop bypassing" : "Bypass", () => editor.toggleBypass(), entry.type !== SUBGRAPH_TYPE, true],
      ["group", `Group ${selected.length} nodes into a subgraph`, () => editor.groupSelection(), selected.length >= 2, true],
      ["ungroup", "Ungroup", () => editor.edit((g) => g.ungroup(id)), entry.type === SUBGRAPH_TYPE, true],
      ["delete", selected.length > 1 ? `Delete ${selected.length} nodes` : "Delete", () => editor.deleteSelection(), true, true],
    ];
    menu.replaceChildren(...items.filter(([, , , shown]) => shown).map(([name, label, action, , enabled]) => {
      const item = el("button", "fc-menu-item", label);
      item.type = "button";
      item.disabled = !enabled;
      if (!enabled) item.title = "A run is going: wait for it or cancel it";
      item.dataset.action = name;
      item.setAttribute("role", "menuitem");
      item.addEventListener("click", () => {
        closeMenu();
        action();
      });
      return item;
    }));
    const box = canvas.getBoundingClientRect();
    menu.style.left = `${event.clientX - box.left}px`;
    menu.style.top = `${event.clientY - box.top}px`;
    menu.hidden = false;
  });
  canvas.addEventListener("pointerdown", (event) => {
    if (!event.target.closest(".fc-menu")) closeMenu();
  }, { capture: true });

  const rows = SHORTCUTS.map(([keys, what]) => {
    const row = el("tr");
    row.append(el("td", "fc-keys", keys), el("td", "", what));
    return row;
  });
  const table = el("table");
  table.append(...rows);
  const close = el("button", "fc-help-close", "Close");
  close.type = "button";
  close.addEventListener("click", () => toggleHelp(false));
  help.append(el("div", "fc-panel-title", "Keyboard and mouse"), table, close);

  function toggleHelp(show = help.hidden) {
    help.hidden = !show;
    if (!show) root.focus({ preventScroll: true });
  }
  root.querySelector(".fc-cmd-help").addEventListener("click", () => toggleHelp());
  return { closeMenu, toggleHelp, helpShown: () => !help.hidden };
}

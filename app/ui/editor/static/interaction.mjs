// Pointer and keyboard handling of the canvas: one gesture at a time, chosen at pointerdown.
//
// Gestures: drag nodes (the selection), drag a wire from a socket, pan (background drag, space-drag, middle
// button), marquee (Ctrl/Shift + background drag). Graph edits made during a gesture are coalesced into one
// undo step and committed at pointerup. Copy and paste use the document's clipboard events, so the text goes
// through the system clipboard (and so between tabs) without asking for clipboard permissions. A Subgraph node
// opens on double-click (or Tab with it selected); Shift+Tab goes back up.

import { SUBGRAPH_TYPE } from "./graph.mjs";

// Targets where the pointer belongs to a form control (or the breadcrumb bar), not to the canvas.
const CONTROLS = "input, textarea, select, button, .fc-quickadd, .fc-scope";
const DRAG_THRESHOLD = 3;

function isTyping(target) {
  return target instanceof HTMLElement && (target.matches("input, textarea, select") || target.isContentEditable);
}

/**
 * Wire up pointer, wheel and keyboard handling for an editor.
 * @param {import("./bridge.mjs").Editor} editor
 * @param {{closeMenu(): void, toggleHelp(show?: boolean): void, helpShown(): boolean}} overlays
 */
export function installInteraction(editor, overlays) {
  const { root, viewport } = editor;
  const canvas = viewport.canvas;
  const marquee = root.querySelector(".fc-marquee");
  let gesture = null;
  let spaceHeld = false;
  let moveRun = 0;
  /** The last pointer position over the canvas, in world coordinates: where a paste goes. */
  let pointerWorld = [0, 0];

  viewport.listenWheel();

  canvas.addEventListener("pointerdown", (event) => {
    if (event.target.closest(CONTROLS) || gesture !== null) return;
    root.focus({ preventScroll: true });
    root.querySelector(".fc-quickadd").hidden = true;
    const socket = event.target.closest(".fc-socket");
    const node = event.target.closest(".fc-node");
    if (event.button === 1 || (event.button === 0 && spaceHeld)) gesture = panGesture(event);
    else if (event.button !== 0) return;
    else if (editor.readonly) gesture = panGesture(event); // nothing to move or wire: any drag pans
    else if (socket) gesture = wireGesture(socket);
    else if (node) gesture = nodeGesture(node.dataset.node, event);
    else if (event.ctrlKey || event.metaKey || event.shiftKey) gesture = marqueeGesture(event);
    else gesture = panGesture(event, { clickClears: true });
    if (gesture === null) return;
    event.preventDefault();
    gesture.startX = event.clientX;
    gesture.startY = event.clientY;
    gesture.moved = false;
  });

  canvas.addEventListener("pointermove", (event) => {
    pointerWorld = viewport.toWorld(event.clientX, event.clientY);
    if (gesture === null) return;
    if (!gesture.moved && Math.hypot(event.clientX - gesture.startX, event.clientY - gesture.startY) < DRAG_THRESHOLD) return;
    if (!gesture.moved) {
      // Captured only once it is a drag: a capture from pointerdown would retarget click and dblclick to the canvas.
      canvas.setPointerCapture(event.pointerId);
      gesture.moved = true;
    }
    gesture.move(event);
  });

  const finish = (event, cancelled) => {
    if (gesture === null) return;
    const done = gesture;
    gesture = null;
    if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
    done.end(event, cancelled);
  };
  canvas.addEventListener("pointerup", (event) => finish(event, false));
  canvas.addEventListener("pointercancel", (event) => finish(event, true));

  // A title's double-click renames (nodes_view stops it); anywhere else on a Subgraph node opens it.
  canvas.addEventListener("dblclick", (event) => {
    const node = event.target.closest(".fc-node");
    if (node === null || event.target.closest(CONTROLS)) return;
    if (editor.graph.node(node.dataset.node).type === SUBGRAPH_TYPE) editor.openSubgraph(node.dataset.node);
  });

  // ---------------------------------------------------------------- gestures

  function panGesture(event, { clickClears = false } = {}) {
    let last = [event.clientX, event.clientY];
    canvas.classList.add("fc-panning");
    return {
      move(e) {
        viewport.panBy(e.clientX - last[0], e.clientY - last[1]);
        last = [e.clientX, e.clientY];
      },
      end() {
        canvas.classList.remove("fc-panning");
        if (clickClears && !this.moved) editor.select([]);
      },
    };
  }

  function nodeGesture(id, event) {
    if (event.shiftKey) {
      // Shift-click toggles the node; a deselected node is not dragged.
      if (editor.selection.has(id)) {
        editor.selection.delete(id);
        editor.render();
        return null;
      }
      editor.select([id], { add: true });
    } else if (!editor.selection.has(id)) {
      editor.select([id]);
    }
    const start = Object.fromEntries([...editor.selection].map((nodeId) => [nodeId, editor.graph.node(nodeId).position ?? [0, 0]]));
    const key = `move-${(moveRun += 1)}`;
    return {
      move(e) {
        const dx = (e.clientX - this.startX) / viewport.zoom;
        const dy = (e.clientY - this.startY) / viewport.zoom;
        const positions = Object.fromEntries(Object.entries(start).map(([nodeId, [x, y]]) => [nodeId, [Math.round(x + dx), Math.round(y + dy)]]));
        editor.edit((g) => g.moveNodes(positions), { coalesce: key, commit: false });
      },
      end() {
        editor.history.endCoalescing();
        if (this.moved) editor.commit();
      },
    };
  }

  function marqueeGesture(event) {
    const add = event.shiftKey;
    const box = canvas.getBoundingClientRect();
    let screen = { left: 0, top: 0, right: 0, bottom: 0 };
    return {
      move(e) {
        screen = {
          left: Math.min(this.startX, e.clientX), top: Math.min(this.startY, e.clientY),
          right: Math.max(this.startX, e.clientX), bottom: Math.max(this.startY, e.clientY),
        };
        Object.assign(marquee.style, {
          left: `${screen.left - box.left}px`, top: `${screen.top - box.top}px`,
          width: `${screen.right - screen.left}px`, height: `${screen.bottom - screen.top}px`,
        });
        marquee.hidden = false;
      },
      end() {
        marquee.hidden = true;
        if (!this.moved) return;
        const [left, top] = viewport.toWorld(screen.left, screen.top);
        const [right, bottom] = viewport.toWorld(screen.right, screen.bottom);
        const hit = [...editor.nodesView.boxes()].filter(([, b]) => b.left < right && b.right > left && b.top < bottom && b.bottom > top);
        editor.select(hit.map(([id]) => id), { add });
      },
    };
  }

  /**
   * Drag a wire. From an output: to any compatible input. From a wired input: pick its (last) link up, to drop
   * it elsewhere or nowhere (removed). From a free input: backwards, to a compatible output.
   */
  function wireGesture(socket) {
    const { graph } = editor;
    let origin = { node: socket.dataset.node, name: socket.dataset.name, side: socket.dataset.side };
    let detach = null;
    if (origin.side === "in") {
      const links = graph.links().filter((l) => l.to === origin.node && l.input === origin.name);
      const link = links.at(-1);
      if (link !== undefined) {
        detach = { to: link.to, input: link.input, index: link.index };
        origin = { node: link.from, name: link.output, side: "out" };
      }
    }
    const fromOutput = origin.side === "out";
    const fits = new Set((fromOutput ? graph.compatibleTargets(origin.node, origin.name).map((t) => `${t.node}\0${t.input}`)
      : graph.compatibleSources(origin.node, origin.name).map((s) => `${s.node}\0${s.output}`)));
    const wanted = fromOutput ? "in" : "out";
    for (const dot of root.querySelectorAll(".fc-socket")) {
      if (dot.dataset.side !== wanted) continue;
      // While picking up a link, its own input counts as a fit: dropping it back changes nothing.
      const own = detach !== null && dot.dataset.node === detach.to && dot.dataset.name === detach.input;
      dot.classList.add(own || fits.has(`${dot.dataset.node}\0${dot.dataset.name}`) ? "fc-fit" : "fc-unfit");
    }
    canvas.classList.add("fc-wiring");
    const originDot = root.querySelector(`.fc-socket.fc-${origin.side}[data-node="${CSS.escape(origin.node)}"][data-name="${CSS.escape(origin.name)}"]`);
    const colour = getComputedStyle(originDot).getPropertyValue("--socket");
    const targetAt = (e) => document.elementFromPoint(e.clientX, e.clientY)?.closest(`.fc-socket.fc-${wanted}`) ?? null;
    const draw = (e) => {
      const start = editor.nodesView.socketCenter(origin.node, origin.side, origin.name);
      const target = targetAt(e);
      const end = target?.classList.contains("fc-fit")
        ? editor.nodesView.socketCenter(target.dataset.node, wanted, target.dataset.name)
        : viewport.toWorld(e.clientX, e.clientY);
      editor.wiresView.showPending({ start, end, fromOutput, colour });
    };
    return {
      move: draw,
      end(e, cancelled) {
        editor.wiresView.showPending(null);
        canvas.classList.remove("fc-wiring");
        for (const dot of root.querySelectorAll(".fc-socket.fc-fit, .fc-socket.fc-unfit")) dot.classList.remove("fc-fit", "fc-unfit");
        const target = cancelled ? null : targetAt(e);
        if (!this.moved && target === null) return;
        const [from, output, to, input] = target === null ? [] : fromOutput
          ? [origin.node, origin.name, target.dataset.node, target.dataset.name]
          : [target.dataset.node, target.dataset.name, origin.node, origin.name];
        if (target !== null) {
          const problem = graph.connectionProblem(from, output, to, input);
          if (problem !== null) {
            editor.notify(`Refused: ${problem.message}`, "error");
            target.classList.add("fc-refused");
            setTimeout(() => target.classList.remove("fc-refused"), 600);
            return;
          }
        }
        if (target === null && detach === null) return;
        editor.edit((g) => {
          if (detach !== null) g.disconnect(detach.to, detach.input, detach.index);
          if (target !== null) g.connect(from, output, to, input);
        });
      },
    };
  }

  // ---------------------------------------------------------------- keyboard and clipboard

  root.addEventListener("keydown", (event) => {
    const key = event.key.toLowerCase();
    const mod = event.ctrlKey || event.metaKey;
    if (mod && key === "enter") {
      // Also from inside a widget: blurring it first commits the value being typed, then the run sees it.
      if (isTyping(event.target)) event.target.blur();
      if (event.altKey) editor.cancelRun();
      else editor.run();
      event.preventDefault();
      return;
    }
    if (isTyping(event.target)) return;
    if (key === "escape" && overlays.helpShown()) {
      overlays.toggleHelp(false);
    } else if (key === "?") {
      overlays.toggleHelp();
    } else if (key === " ") {
      spaceHeld = true;
      canvas.classList.add("fc-space");
    } else if (key === "delete" || key === "backspace") {
      editor.deleteSelection();
    } else if (mod && key === "z" && !event.shiftKey) {
      editor.undo();
    } else if (mod && (key === "y" || (key === "z" && event.shiftKey))) {
      editor.redo();
    } else if (mod && key === "b") {
      editor.toggleBypass();
    } else if (mod && key === "a") {
      editor.select(editor.graph.nodeIds());
    } else if (key === "." && !mod) {
      editor.fitView();
    } else if (key === "escape") {
      overlays.closeMenu();
      editor.select([]);
    } else if (key === "tab" && !mod && !event.altKey) {
      // Tab opens the one selected Subgraph node, Shift+Tab goes up; otherwise Tab moves the focus as usual.
      const [only] = editor.selection;
      if (event.shiftKey) {
        if (!editor.leaveSubgraph()) return;
      } else if (editor.selection.size === 1 && editor.graph.node(only).type === SUBGRAPH_TYPE) {
        editor.openSubgraph(only);
      } else {
        return;
      }
    } else {
      return; // not ours: let the browser have it (Ctrl+C/V arrive as copy/paste events below)
    }
    event.preventDefault();
  });
  root.addEventListener("keyup", (event) => {
    if (event.key === " ") {
      spaceHeld = false;
      canvas.classList.remove("fc-space");
    }
  });

  // The clipboard events go to the focused element's document; act only while the canvas itself has focus.
  const ours = () => document.activeElement === root;
  const copy = (event) => {
    if (!ours()) return;
    const text = editor.copyText();
    if (text === null) return;
    event.clipboardData.setData("text/plain", text);
    event.preventDefault();
    return true;
  };
  document.addEventListener("copy", copy);
  document.addEventListener("cut", (event) => {
    if (copy(event)) editor.deleteSelection();
  });
  document.addEventListener("paste", (event) => {
    if (!ours()) return;
    const text = event.clipboardData.getData("text/plain");
    if (!text) return;
    event.preventDefault();
    editor.paste(text, pointerWorld);
  });
}

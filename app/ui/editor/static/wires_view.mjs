// The wires: an SVG layer in world coordinates, one bezier per link, coloured by the output's socket type.

const SVG = "http://www.w3.org/2000/svg";

/** A horizontal-tangent bezier from an output (left) to an input (right), as ComfyUI draws them. */
function curve([x1, y1], [x2, y2]) {
  const d = Math.max(40, Math.abs(x2 - x1) / 2);
  return `M ${x1} ${y1} C ${x1 + d} ${y1}, ${x2 - d} ${y2}, ${x2} ${y2}`;
}

export class WiresView {
  /** @param {SVGSVGElement} svg @param {Record<string, string>} colours socket type → CSS colour */
  constructor(svg, colours) {
    this.svg = svg;
    this.colours = colours;
    this.links = document.createElementNS(SVG, "g");
    this.pending = document.createElementNS(SVG, "path");
    this.pending.classList.add("fc-wire", "fc-pending");
    this.pending.style.display = "none";
    svg.append(this.links, this.pending);
  }

  /**
   * Redraw every link; ends come from the nodes view's socket positions.
   * @param {import("./graph.mjs").Graph} graph
   * @param {import("./nodes_view.mjs").NodesView} nodes
   */
  render(graph, nodes) {
    const paths = [];
    for (const link of graph.links()) {
      const from = nodes.socketCenter(link.from, "out", link.output);
      const to = nodes.socketCenter(link.to, "in", link.input);
      if (from === null || to === null) continue; // a link to a missing node or socket: validation reports it
      const type = graph.specOf(link.from)?.outputs.find((o) => o.name === link.output)?.type;
      const path = document.createElementNS(SVG, "path");
      path.classList.add("fc-wire");
      path.setAttribute("d", curve(from, to));
      path.style.stroke = this.colours[type] ?? "#9e9e9e";
      Object.assign(path.dataset, { from: link.from, output: link.output, to: link.to, input: link.input });
      paths.push(path);
    }
    this.links.replaceChildren(...paths);
  }

  /**
   * Draw the wire being dragged; `fromOutput` says which end is the output. Null hides it.
   * @param {{start: [number, number], end: [number, number], fromOutput: boolean, colour: string} | null} wire
   */
  showPending(wire) {
    if (wire === null) {
      this.pending.style.display = "none";
      return;
    }
    const [a, b] = wire.fromOutput ? [wire.start, wire.end] : [wire.end, wire.start];
    this.pending.setAttribute("d", curve(a, b));
    this.pending.style.stroke = wire.colour;
    this.pending.style.display = "";
  }
}

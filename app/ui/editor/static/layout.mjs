// Arrange: lay a graph's nodes out left to right on a grid, with no overlaps, from their measured sizes.
//
// Columns follow the data: a node sits one column left of its first consumer ("as late as possible"), so a
// seed or a step count lands next to the node that reads it rather than in a far-left column of sources.
// Within a column nodes keep the vertical order they had (the author's intent), then the columns are stacked
// top-down with a fixed gap. Pure: it reads ids, links and sizes and returns positions; the editor applies them.

export const ARRANGE_GAP = { x: 60, y: 30 };
const ORIGIN = [40, 40];
const GRID = 10;

/**
 * @param {{id: string, position: [number, number]}[]} nodes in any order
 * @param {{from: string, to: string}[]} links
 * @param {Map<string, {width: number, height: number}>} sizes each node's box as drawn
 * @param {{x: number, y: number}} [gap]
 * @returns {Map<string, [number, number]>} each node's new top-left position
 */
export function arrange(nodes, links, sizes, gap = ARRANGE_GAP) {
  const ids = nodes.map((node) => node.id);
  const known = new Set(ids);
  const consumers = new Map(ids.map((id) => [id, new Set()]));
  const producers = new Map(ids.map((id) => [id, new Set()]));
  for (const { from, to } of links) {
    if (!known.has(from) || !known.has(to) || from === to) continue;
    consumers.get(from).add(to);
    producers.get(to).add(from);
  }
  // Longest path from the sources gives each node a column after everything it reads ...
  const column = new Map();
  const depth = (id, seen = new Set()) => {
    if (column.has(id)) return column.get(id);
    if (seen.has(id)) return 0; // a cycle: validation reports it; the layout just stops climbing
    seen.add(id);
    const value = Math.max(-1, ...[...producers.get(id)].map((p) => depth(p, seen))) + 1;
    column.set(id, value);
    return value;
  };
  ids.forEach((id) => depth(id));
  // ... then each node with consumers moves right, up to one column before the first of them (sinks first).
  const bySinkFirst = [...ids].sort((a, b) => column.get(b) - column.get(a));
  for (const id of bySinkFirst) {
    const next = [...consumers.get(id)].map((c) => column.get(c));
    if (next.length > 0) column.set(id, Math.max(column.get(id), Math.min(...next) - 1));
  }
  const position = new Map(nodes.map((node) => [node.id, node.position ?? [0, 0]]));
  const columns = [];
  for (const id of ids) (columns[column.get(id)] ??= []).push(id);
  const arranged = new Map();
  let x = ORIGIN[0];
  for (const members of columns) {
    if (members === undefined) continue;
    members.sort((a, b) => position.get(a)[1] - position.get(b)[1] || position.get(a)[0] - position.get(b)[0] || (a < b ? -1 : 1));
    let y = ORIGIN[1];
    let width = 0;
    for (const id of members) {
      const size = sizes.get(id) ?? { width: 200, height: 100 };
      arranged.set(id, [x, y]);
      y = snap(y + size.height + gap.y);
      width = Math.max(width, size.width);
    }
    x = snap(x + width + gap.x);
  }
  return arranged;
}

/** Round up to the canvas grid, so arranged nodes line up and gaps only grow. @param {number} value */
function snap(value) {
  return Math.ceil(value / GRID) * GRID;
}

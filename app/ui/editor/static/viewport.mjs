// Pan and zoom of the canvas: one CSS transform on the world layer, so nodes and wires share world coordinates.

const MIN_ZOOM = 0.2;
const MAX_ZOOM = 2.5;
/** Fit zooms out no further than this: the canvas's 12 px text stays about 10 px on screen, readable. */
export const MIN_FIT_ZOOM = 0.8;

/** The visible part of the world: `x`, `y` are the screen offset of world (0, 0), `zoom` its scale. */
export class Viewport {
  /**
   * @param {HTMLElement} canvas the element receiving pointer events (its box is the screen)
   * @param {HTMLElement} world the layer holding nodes and wires, transformed
   */
  constructor(canvas, world) {
    this.canvas = canvas;
    this.world = world;
    this.x = 0;
    this.y = 0;
    this.zoom = 1;
    this.apply();
  }

  apply() {
    this.world.style.transform = `translate(${this.x}px, ${this.y}px) scale(${this.zoom})`;
    // Grid dots follow the view, so panning feels like moving paper.
    this.canvas.style.backgroundPosition = `${this.x}px ${this.y}px`;
    this.canvas.style.backgroundSize = `${20 * this.zoom}px ${20 * this.zoom}px`;
  }

  /** World coordinates of a client (page) point. @param {number} clientX @param {number} clientY @returns {[number, number]} */
  toWorld(clientX, clientY) {
    const box = this.canvas.getBoundingClientRect();
    return [(clientX - box.left - this.x) / this.zoom, (clientY - box.top - this.y) / this.zoom];
  }

  /** Pan by a screen distance. @param {number} dx @param {number} dy */
  panBy(dx, dy) {
    this.x += dx;
    this.y += dy;
    this.apply();
  }

  /** Zoom by `factor`, keeping the world point under the client point where it is. @param {number} factor @param {number} clientX @param {number} clientY */
  zoomAt(factor, clientX, clientY) {
    const zoom = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, this.zoom * factor));
    const box = this.canvas.getBoundingClientRect();
    const sx = clientX - box.left;
    const sy = clientY - box.top;
    this.x = sx - ((sx - this.x) * zoom) / this.zoom;
    this.y = sy - ((sy - this.y) * zoom) / this.zoom;
    this.zoom = zoom;
    this.apply();
  }

  /** Whether the canvas is laid out (a hidden tab's canvas has no size). */
  get shown() {
    const { width, height } = this.canvas.getBoundingClientRect();
    return width > 0 && height > 0;
  }

  /**
   * Show a world rectangle, zoomed between MIN_FIT_ZOOM and 1 (small graphs stay at their real size): centred
   * where it fits; where it does not, its top-left part, and the rest is a pan away.
   * @param {{left: number, top: number, right: number, bottom: number} | null} bounds null: the origin at zoom 1
   */
  fit(bounds, margin = 40) {
    const { width, height } = this.canvas.getBoundingClientRect();
    if (bounds === null || width === 0 || height === 0) {
      Object.assign(this, { x: margin, y: margin, zoom: 1 });
    } else {
      const w = Math.max(1, bounds.right - bounds.left);
      const h = Math.max(1, bounds.bottom - bounds.top);
      this.zoom = Math.min(1, Math.max(MIN_FIT_ZOOM, Math.min((width - 2 * margin) / w, (height - 2 * margin) / h)));
      const place = (room, size, start) => (size * this.zoom <= room - 2 * margin ? (room - size * this.zoom) / 2 : margin) - start * this.zoom;
      this.x = place(width, w, bounds.left);
      this.y = place(height, h, bounds.top);
    }
    this.apply();
  }

  /** Wheel zoom about the cursor; passive:false because the page must not scroll meanwhile. */
  listenWheel() {
    this.canvas.addEventListener("wheel", (event) => {
      if (event.target.closest("textarea, .fc-quickadd")) return; // those scroll their own content
      event.preventDefault();
      this.zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX, event.clientY);
    }, { passive: false });
  }
}

// Undo/redo for the editor: every edit is one step, holding the workflow document as it was before.
//
// Only graph data is kept (run state and previews live elsewhere). Consecutive edits that share a coalesce
// key (one drag, typing in one field) make a single step; the UI ends a run of them with `endCoalescing()`
// (pointerup, blur) so that the next drag of the same node is a step of its own.

import { sameJson } from "./graph.mjs";

/** @typedef {{toWorkflow(): object, replaceWorkflow(workflow: object): void}} Document a Graph, or anything holding a workflow */

export class History {
  #past = [];
  #future = [];
  #limit;
  #openKey = null;

  /** @param {{limit?: number}} [options] `limit`: how many steps undo reaches back (the oldest are dropped) */
  constructor({ limit = 100 } = {}) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`history limit must be a whole number ≥ 1, got ${limit}`);
    this.#limit = limit;
  }

  /**
   * Apply an edit to `document` as one undoable step and return what the edit returned. An edit that throws
   * leaves the document as it was and records nothing; an edit that changes nothing records nothing.
   * @template T
   * @param {Document} document
   * @param {(document: Document) => T} apply
   * @param {{coalesce?: string|null}} [options] edits in a row with the same key merge into one step
   * @returns {T}
   */
  edit(document, apply, { coalesce = null } = {}) {
    const before = document.toWorkflow();
    let result;
    try {
      result = apply(document);
    } catch (error) {
      document.replaceWorkflow(before); // an edit made of several calls may have half-happened
      throw error;
    }
    const after = document.toWorkflow();
    if (sameJson(before, after)) return result;
    this.#future = [];
    if (coalesce !== null && coalesce === this.#openKey && this.#past.length > 0) {
      // The step already holds the state before the first edit of this run; back at it, the run undid itself.
      if (sameJson(this.#past.at(-1), after)) {
        this.#past.pop();
        this.#openKey = null;
      }
      return result;
    }
    this.#past.push(before);
    if (this.#past.length > this.#limit) this.#past.shift();
    this.#openKey = coalesce;
    return result;
  }

  /** End a run of coalescing edits: the next edit starts a new step whatever its key. */
  endCoalescing() {
    this.#openKey = null;
  }

  /** Restore the document as it was before the last step. @param {Document} document @returns {boolean} whether there was one */
  undo(document) {
    return this.#move(document, this.#past, this.#future);
  }

  /** Re-apply the last undone step. @param {Document} document @returns {boolean} whether there was one */
  redo(document) {
    return this.#move(document, this.#future, this.#past);
  }

  /** @returns {boolean} */
  get canUndo() {
    return this.#past.length > 0;
  }

  /** @returns {boolean} */
  get canRedo() {
    return this.#future.length > 0;
  }

  /** Forget every step (a different workflow was opened). */
  clear() {
    this.#past = [];
    this.#future = [];
    this.#openKey = null;
  }

  #move(document, from, to) {
    if (from.length === 0) return false;
    const current = document.toWorkflow();
    document.replaceWorkflow(from.pop());
    to.push(current);
    this.#openKey = null;
    return true;
  }
}

// Disjoint intervals in a B+ tree, apart from the extent algebra (extents.ts): the protocol and
// the request-key handler's bundle use that, and need not load a tree they never use.
import sortedBtree from 'sorted-btree';
import type { Interval } from './extents.ts';

// A CommonJS module: its class is the default export's `default`.
const BTree = sortedBtree.default;

/**
 * Disjoint intervals (each with what it carries) kept by their first id in a B+ tree: an insert and
 * an overlap query cost log n. A sorted array's insert moves half of it: over 65,535 contexts, a
 * second of every load (the judgement's claims) or of a first start (the allocator's fresh ranges).
 */
export class DisjointIntervals<T extends Interval> {
  private readonly byStart = new BTree<number, T>();
  /** The pair the tree's neighbour lookups fill in, rather than a new one each (read at once, never kept). */
  private readonly pair = [0, undefined] as unknown as [number, T];

  /** `initial` must be disjoint already (mergeIntervals makes a list so). */
  constructor(initial: Iterable<T> = []) {
    for (const i of initial) this.add(i);
  }

  /** Every interval overlapping [start, end), in order: the one begun before `start` (if it reaches past it), then those begun inside. */
  overlapping(start: number, end: number): T[] {
    const out: T[] = [];
    const before = this.byStart.nextLowerPair(start, this.pair);
    if (before && before[1].end > start) out.push(before[1]);
    this.byStart.forRange(start, end, false, (_k, i) => {
      out.push(i);
    });
    return out;
  }

  /** Whether any interval overlaps [start, end), without listing them. */
  overlaps(start: number, end: number): boolean {
    const before = this.byStart.nextLowerPair(start, this.pair);
    if (before && before[1].end > start) return true;
    const next = this.byStart.getPairOrNextHigher(start, this.pair);
    return next !== undefined && next[0] < end;
  }

  /** One interval that overlaps none of those kept. */
  add(i: T): void {
    this.byStart.set(i.start, i);
  }

  /** Take out an interval kept (the very one: another begun at its start stays). */
  delete(i: T): void {
    if (this.byStart.get(i.start) === i) this.byStart.delete(i.start);
  }
}

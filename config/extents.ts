// The extent algebra: parse, validate, compose and look up id extents, with the kernel's own limits.
import type { Extent, IdMap } from './types.ts';

/** The kernel accepts at most this many lines in one uid_map/gid_map (since Linux 4.15). */
export const MAX_EXTENTS = 340;
/** (uid_t)-1 is never a valid id: an extent must end at or below ID_LIMIT - 1. */
export const ID_LIMIT = 0xffffffff;

export type Interval = { readonly start: number; readonly end: number }; // [start, end)

/** The last text parsed and its map: uid_map and gid_map are most often the same text, read one after the other. */
let last: { text: string; map: IdMap | string } | null = null;

/**
 * "0 100000 65536, 65536 300000 10" -> extents; a string explaining the first problem otherwise.
 * The same text gives the same map (maps are never changed in place), held once in memory.
 */
export function parseExtents(text: string): IdMap | string {
  if (last?.text !== text) last = { text, map: parseExtentsOnce(text) };
  return last.map;
}

/** One extent written plainly, "INSIDE OUTSIDE COUNT" with spaces or tabs between: most maps are. */
const ONE_EXTENT = /^(0|[1-9][0-9]{0,9})[ \t]+(0|[1-9][0-9]{0,9})[ \t]+(0|[1-9][0-9]{0,9})$/;

function parseExtentsOnce(text: string): IdMap | string {
  // What the general parse below makes of such a text, without its splits (a tenth of a start's
  // parse of 65,535 files); anything else, a number past the largest id included, goes that way.
  const one = ONE_EXTENT.exec(text);
  if (one !== null) {
    const [inside, outside, count] = [Number(one[1]), Number(one[2]), Number(one[3])];
    if (inside <= ID_LIMIT && outside <= ID_LIMIT && count <= ID_LIMIT) {
      const map = [{ inside, outside, count }];
      return validateExtents(map) ?? map;
    }
  }
  const parts = text.split(',').map((p) => p.trim());
  if (parts.length === 1 && parts[0] === '') return 'is empty: write "INSIDE OUTSIDE COUNT", for example "0 100000 65536"';
  const map: Extent[] = [];
  for (const [i, part] of parts.entries()) {
    const fields = part.split(/\s+/);
    const where = parts.length > 1 ? `extent ${i + 1} ("${part}")` : `"${part}"`;
    if (fields.length !== 3) return `${where} must be three numbers "INSIDE OUTSIDE COUNT"`;
    const nums = fields.map(parseId);
    if (nums.some((n) => n === null)) return `${where} must be three non-negative decimal numbers`;
    const [inside, outside, count] = nums as number[];
    map.push({ inside: inside, outside: outside, count: count });
  }
  // Kept as long as its context: an array grown by push holds room for 17 extents (152 bytes for
  // most maps' one); a copy holds what it has (24).
  return validateExtents(map) ?? map.slice();
}

/** A decimal id without sign, exponent or leading zeros beyond "0", below 2^32. */
export function parseId(text: string): number | null {
  if (!/^(0|[1-9][0-9]{0,9})$/.test(text)) return null;
  const n = Number(text);
  return n <= ID_LIMIT ? n : null;
}

/** The kernel's rules for one map, checked before the kernel sees it so the admin learns which extent is wrong. */
export function validateExtents(map: IdMap): string | null {
  if (map.length === 0) return 'has no extents';
  if (map.length > MAX_EXTENTS) return `has ${map.length} extents; the kernel accepts at most ${MAX_EXTENTS}`;
  for (const [i, e] of map.entries()) {
    const name = () => `extent ${i + 1} (${formatExtent(e)})`;
    if (e.count === 0) return `${name()} has count 0`;
    if (e.inside + e.count > ID_LIMIT) return `${name()} runs past the largest id ${ID_LIMIT - 1} on the inside`;
    if (e.outside + e.count > ID_LIMIT) return `${name()} runs past the largest id ${ID_LIMIT - 1} on the outside`;
  }
  if (map.length === 1) return null;
  const clash = (side: 'inside' | 'outside'): string | null => {
    const order = map.map((e, i) => ({ e, i })).sort((a, b) => a.e[side] - b.e[side]);
    for (let k = 1; k < order.length; k++) {
      const prev = order[k - 1];
      const cur = order[k];
      if (prev.e[side] + prev.e.count > cur.e[side]) {
        return `extents ${Math.min(prev.i, cur.i) + 1} and ${Math.max(prev.i, cur.i) + 1} overlap on the ${side} side`;
      }
    }
    return null;
  };
  return clash('inside') ?? clash('outside');
}

export function formatExtent(e: Extent): string {
  return `${e.inside} ${e.outside} ${e.count}`;
}

/** The configuration's spelling: "0 100000 65536, 65536 300000 10". */
export function formatExtents(map: IdMap): string {
  return map.map(formatExtent).join(', ');
}

/** What the kernel wants written to /proc/PID/uid_map: one extent per line. */
export function kernelMapText(map: IdMap): string {
  return map.map((e) => `${e.inside} ${e.outside} ${e.count}\n`).join('');
}

/** Parse /proc/PID/uid_map as the kernel prints it (columns padded with spaces). */
export function parseKernelMap(text: string): IdMap {
  const map: Extent[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length !== 3) continue;
    map.push({ inside: Number(f[0]), outside: Number(f[1]), count: Number(f[2]) });
  }
  return map;
}

/** Same extents regardless of order. */
export function sameMap(a: IdMap, b: IdMap): boolean {
  if (a.length !== b.length) return false;
  // The common case, checked at every creation: the kernel gives the extents back in the order written.
  let inOrder = true;
  for (let i = 0; i < a.length && inOrder; i++) inOrder = a[i].inside === b[i].inside && a[i].outside === b[i].outside && a[i].count === b[i].count;
  if (inOrder) return true;
  const key = (m: IdMap) => m.map(formatExtent).sort().join(',');
  return key(a) === key(b);
}

/** A map sorted by one side, for binary search. */
export function sortBy(map: IdMap, side: 'inside' | 'outside'): IdMap {
  return [...map].sort((a, b) => a[side] - b[side]);
}

/**
 * Find id on `side` of a map sorted by that side and return its image on the other side, or null.
 * Binary search: a map may hold 340 extents and the `map` method converts batches of ids.
 */
export function lookup(sorted: IdMap, side: 'inside' | 'outside', id: number): number | null {
  const other = side === 'inside' ? 'outside' : 'inside';
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const e = sorted[mid];
    if (id < e[side]) hi = mid - 1;
    else if (id >= e[side] + e.count) lo = mid + 1;
    else return e[other] + (id - e[side]);
  }
  return null;
}

/**
 * Compose a child map (child ids -> parent ids) with the parent's map (parent ids -> grandparent ids):
 * the result maps child ids straight to grandparent ids. Parts of the child's outside range the
 * parent does not map are dropped, exactly as the kernel would leave them unmapped.
 */
export function composeMaps(child: IdMap, parent: IdMap): IdMap {
  const out: Extent[] = [];
  for (const c of child) {
    for (const p of parent) {
      const start = Math.max(c.outside, p.inside);
      const end = Math.min(c.outside + c.count, p.inside + p.count);
      if (start >= end) continue;
      out.push({ inside: c.inside + (start - c.outside), outside: p.outside + (start - p.inside), count: end - start });
    }
  }
  return out.sort((a, b) => a.inside - b.inside);
}

/** The parts of [start, end) that no extent of `map` covers on `side`. */
export function uncovered(map: IdMap, side: 'inside' | 'outside', start: number, end: number): Interval[] {
  const gaps: Interval[] = [];
  let at = start;
  for (const e of sortBy(map, side)) {
    const s = e[side];
    const t = s + e.count;
    if (t <= at) continue;
    if (s >= end) break;
    if (s > at) gaps.push({ start: at, end: Math.min(s, end) });
    at = Math.max(at, t);
    if (at >= end) break;
  }
  if (at < end) gaps.push({ start: at, end });
  return gaps;
}

/** The ids a map reaches on its outside side, as intervals. */
export function outsideIntervals(map: IdMap): Interval[] {
  return map.map((e) => ({ start: e.outside, end: e.outside + e.count }));
}

/** Index of the first interval of a list sorted by start, disjoint, that ends after `at`. */
export function firstEndingAfter(sorted: readonly Interval[], at: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid].end <= at) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export function intervalsOverlap(a: Interval, b: Interval): boolean {
  return a.start < b.end && b.start < a.end;
}

export function formatInterval(i: Interval): string {
  return i.end - i.start === 1 ? `${i.start}` : `${i.start}-${i.end - 1}`;
}

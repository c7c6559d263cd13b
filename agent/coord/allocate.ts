// Pure range allocation for `range = auto` (SPEC §4): hash-derived first slot, next free aligned slot.
import { createHash } from 'node:crypto';
import { configError } from '../../config/ini.ts';
import { allocationSize } from '../../config/load.ts';
import { firstEndingAfter, formatInterval } from '../../config/extents.ts';
import { DisjointIntervals } from '../../config/intervals.ts';
import type { Interval } from '../../config/extents.ts';
import type { ConfigError, ContextDef, Pool } from '../../config/types.ts';

export type Allocation = { readonly start: number; readonly size: number };

/** Sort and merge intervals so lookups can binary-search them. */
export function mergeIntervals(list: readonly Interval[]): Interval[] {
  const sorted = [...list].filter((i) => i.end > i.start).sort((a, b) => a.start - b.start);
  const out: Interval[] = [];
  for (const i of sorted) {
    const last = out[out.length - 1];
    if (last && i.start <= last.end) out[out.length - 1] = { start: last.start, end: Math.max(last.end, i.end) };
    else out.push(i);
  }
  return out;
}

/** The aligned slots of a pool for allocations of `size`: slot k starts at first + k * size. */
export function poolSlots(pool: Pool, size: number): { first: number; count: number } {
  const first = Math.ceil(pool.start / size) * size;
  const count = first > pool.end ? 0 : Math.floor((pool.end + 1 - first) / size);
  return { first, count };
}

/** The label's first candidate slot: the same label gets the same slot on every host with the same pool. */
export function hashSlot(label: string, slots: number): number {
  const digest = createHash('sha256').update(label, 'utf8').digest();
  return digest.readUInt32BE(0) % slots;
}

/** First free aligned slot from the label's hash onwards (wrapping), or an error message on exhaustion; `taken` is disjoint (merged). */
export function allocateRange(label: string, size: number, pool: Pool, taken: readonly Interval[] | DisjointIntervals<Interval>): number | string {
  const { first, count } = poolSlots(pool, size);
  if (count === 0) return `the pool ${pool.start}-${pool.end} holds no aligned range of ${size} ids: widen [pool] range or lower size`;
  const start = hashSlot(label, count);
  const ids = taken instanceof DisjointIntervals ? taken : new DisjointIntervals(taken);
  for (let k = 0; k < count; k++) {
    const s = first + ((start + k) % count) * size;
    if (!ids.overlaps(s, s + size)) return s;
  }
  return `the pool ${pool.start}-${pool.end} is exhausted: no free range of ${size} ids is left (widen [pool] range, remove contexts, or release the pins of contexts that are gone or in drift, which hold their ids)`;
}

/**
 * Why a range that came from outside (the shared pool, ranges.json) is not one this host would
 * allocate for a label asking `size` ids (null: it is): inside the pool, on one of its aligned slots,
 * of that size, clear of `reserved` (merged: the system's accounts and subordinate ids). SPEC §12:
 * a range is judged exactly as a local allocation, never taken on trust.
 */
export function rangeProblem(a: Allocation, size: number, pool: Pool, reserved: readonly Interval[]): string | null {
  const end = a.start + a.size;
  if (a.size !== size) return `it has ${a.size} ids where ${size} are asked for`;
  if (a.start < pool.start || end - 1 > pool.end) return `it lies outside the pool ${pool.start}-${pool.end}`;
  const { first } = poolSlots(pool, size);
  if ((a.start - first) % size !== 0) return `it does not start on one of the pool's slots of ${size} ids (from ${first})`;
  const hit = reserved[firstEndingAfter(reserved, a.start)];
  if (hit !== undefined && hit.start < end)
    return `it overlaps host ids ${formatInterval({ start: Math.max(hit.start, a.start), end: Math.min(hit.end, end) })}, which belong to the system (accounts, subordinate ids or static ranges)`;
  return null;
}

/** /etc/subuid and /etc/subgid lines "name:start:count" as intervals; malformed lines are skipped. */
export function parseSubIds(text: string): Interval[] {
  return parseSubIdOwners(text).map(({ start, end }) => ({ start, end }));
}

/** The same lines with their owner field (a user name or a uid), as newuidmap(1) reads them. */
export function parseSubIdOwners(text: string): { owner: string; start: number; end: number }[] {
  const out: { owner: string; start: number; end: number }[] = [];
  for (const line of text.split('\n')) {
    const m = /^([^:#\s][^:]*):(\d+):(\d+)\s*$/.exec(line.trim());
    if (m && Number(m[3]) > 0 && Number(m[2]) + Number(m[3]) <= 2 ** 32 - 1) out.push({ owner: m[1], start: Number(m[2]), end: Number(m[2]) + Number(m[3]) });
  }
  return out;
}

/** A namespace pinned now: its label, the ids its maps name outside it, and whether it is top-level (asked of the kernel). */
export type PinnedIds = { readonly label: string; readonly ids: readonly Interval[]; readonly topLevel: () => boolean };

/**
 * The ids no fresh allocation may take because a pinned namespace is mapped to them: an orphan pin
 * (its file removed while the agent was down, left for root to release) or a pin in drift still
 * holds its namespace, and whatever runs in it, on those ids. Only a top-level pin's ids are host
 * ids (a nested pin's lie in its parent's), and only a pin whose ids `taken` does not cover already
 * is asked whether it is: every pin of a context in force, as a rule, costs no question. Left out: a
 * pin that `rehashed` says finds its range again by hashing (an auto context whose record was lost).
 */
function livePinIds(pins: readonly PinnedIds[], taken: DisjointIntervals<Interval>, rehashed: (label: string) => boolean): Interval[] {
  const covered = (i: Interval) => {
    const o = taken.overlapping(i.start, i.end);
    return o.length === 1 && o[0].start <= i.start && o[0].end >= i.end;
  };
  const out: Interval[] = [];
  for (const p of pins) if (!rehashed(p.label) && !p.ids.every(covered) && p.topLevel()) out.push(...p.ids);
  return out;
}

/**
 * Give every `range = auto` context a start: its recorded allocation when the size still matches,
 * else a fresh one that avoids `reserved` (static ranges, subordinate ids, existing accounts), the
 * ids of the namespaces pinned now (`pins`) and every other allocation, recorded or fresh. Fresh
 * ones are returned so the caller records them before any namespace uses them.
 */
export function assignRanges(
  defs: readonly ContextDef[],
  pool: Pool,
  recorded: ReadonlyMap<string, Allocation>,
  reserved: readonly Interval[],
  errors: ConfigError[],
  /** What a recorded range must stay clear of: the system's ids (not the static ranges, which yield to a recorded allocation). */
  system: readonly Interval[] = reserved,
  /** The namespaces pinned now (livePinIds). */
  pins: readonly PinnedIds[] = [],
): { starts: Map<string, number>; fresh: Map<string, Allocation>; kept: Map<string, Allocation> } {
  const starts = new Map<string, number>();
  const fresh = new Map<string, Allocation>();
  const auto = defs.filter((d) => d.autoSize !== null);
  const sizes = new Map(auto.map((d) => [d.label, allocationSize(d)]));
  const kept = new Map<string, Allocation>();
  // A recorded range stays reserved even when its context is gone, so a context removed and
  // restored gets its ids back; one whose size changed is allocated anew.
  for (const [label, a] of recorded) if (!sizes.has(label) || sizes.get(label) === a.size) kept.set(label, a);
  const allocations: Interval[] = [...kept.values()].map((a) => ({ start: a.start, end: a.start + a.size }));
  let taken = new DisjointIntervals(mergeIntervals([...reserved, ...allocations]));
  const live = livePinIds(pins, taken, (label) => sizes.has(label) && !recorded.has(label));
  if (live.length > 0) taken = new DisjointIntervals(mergeIntervals([...reserved, ...allocations, ...live]));
  const systemIds = mergeIntervals(system);
  for (const d of auto) {
    const k = kept.get(d.label);
    if (k) {
      // ranges.json is input too: a record this host would never have made is refused, not used.
      const problem = rangeProblem(k, allocationSize(d)!, pool, systemIds);
      if (problem)
        errors.push(
          configError(
            d.file,
            'context',
            'range',
            null,
            `the recorded range ${k.start}-${k.start + k.size - 1} of "${d.label}" (ranges.json) is refused: ${problem}; usernsctl ranges forget ${d.label} allocates it anew`,
          ),
        );
      else starts.set(d.label, k.start);
      continue;
    }
    const size = allocationSize(d)!;
    const s = allocateRange(d.label, size, pool, taken);
    if (typeof s === 'string') {
      errors.push(configError(d.file, 'context', 'range', null, s));
      continue;
    }
    starts.set(d.label, s);
    fresh.set(d.label, { start: s, size });
    taken.add({ start: s, end: s + size }); // the slot overlaps nothing
  }
  return { starts, fresh, kept };
}

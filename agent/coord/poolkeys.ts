// The shared pool kept one etcd key per label (SPEC §4, coordinator = etcd), pure: what the keys
// are called and hold, how what was read of them is judged, where a label's fresh range goes. etcd
// only decides which write wins; this file decides what is written. Layout 2:
//
//   PREFIX/pool              the layout's marker (an agent of layout 1 reads "not version 1" there
//                            and refuses cleanly), or layout 1's whole document, being migrated
//   PREFIX/labels/LABEL      the label's entry: {kind: "auto", start, size, by, at} or
//                            {kind: "static", intervals, by, at}
//   PREFIX/ids/XXXXXXXX      the index: one key per interval a label holds, named by its first id
//                            (8 hex digits, so keys sort as ids do): {end, label}
//
// Every write of an entry writes its index keys in the same transaction, and compares that no
// index key from the interval before it to its end was made or changed since it was read: so no
// two intervals overlap, and an allocation reads and writes a handful of keys whatever the pool
// holds. Everything read is input (SPEC §12): an entry is judged as this host's own allocation
// would be, and against the index around it.
import * as v from 'valibot';
import { intervalsOverlap } from '../../config/extents.ts';
import type { Interval } from '../../config/extents.ts';
import type { Pool } from '../../config/types.ts';
import { COUNT, ID, isPlainObject, issueText, labelKeyProblem, TEXT } from '../../config/untrusted.ts';
import { mergeIntervals, poolSlots, hashSlot, rangeProblem } from './allocate.ts';
import type { Allocation } from './allocate.ts';

export const POOL_LAYOUT = 2;
/** PREFIX/pool once the pool is kept one key per label. */
export const POOL_MARKER = JSON.stringify({ version: POOL_LAYOUT, layout: 'one key per label: PREFIX/labels/LABEL, indexed by PREFIX/ids/START' });
/**
 * The intervals one label may hold in the pool: its entry and an index key each are written in one
 * transaction, and etcd takes at most 128 operations in one (--max-txn-ops).
 */
export const MAX_INTERVALS = 100;
/** Slots looked at per read when looking for a free one (one range read of the index). */
export const WINDOW_SLOTS = 256;

export type PoolEntry =
  | { readonly kind: 'auto'; readonly start: number; readonly size: number; readonly by: string; readonly at: string }
  | { readonly kind: 'static'; readonly intervals: readonly Interval[]; readonly by: string; readonly at: string };
/**
 * An index key: ids start..end-1 are the label's (`kind` and `by` repeat its entry's, for the words
 * of a refusal). `valid` false: a key whose value cannot be read (it holds its first id).
 */
export type IndexEntry = {
  readonly start: number;
  readonly end: number;
  readonly label: string;
  readonly valid: boolean;
  readonly kind?: 'auto' | 'static';
  readonly by?: string;
};
/** What was read of a label's entry: none, one, or one that is not valid (kept as it was, used for nothing). */
export type ReadEntry = PoolEntry | { readonly invalid: string } | null;

const END = v.pipe(v.number(), v.safeInteger(), v.minValue(1), v.maxValue(0xffffffff));
const INTERVAL = v.pipe(
  v.object({ start: ID, end: END }),
  v.check((i) => i.end > i.start, 'an interval must end after it starts'),
);
const ENTRY = v.variant('kind', [
  v.object({ kind: v.literal('auto'), start: ID, size: COUNT, by: TEXT, at: TEXT }),
  v.object({ kind: v.literal('static'), intervals: v.pipe(v.array(INTERVAL), v.minLength(1), v.maxLength(MAX_INTERVALS)), by: TEXT, at: TEXT }),
]);
const INDEX = v.object({
  end: END,
  label: v.pipe(v.string(), v.maxLength(256)),
  kind: v.optional(v.picklist(['auto', 'static'])),
  by: v.optional(TEXT),
});

export const labelsPrefix = (prefix: string) => `${prefix}labels/`;
export const idsPrefix = (prefix: string) => `${prefix}ids/`;
export const labelKey = (prefix: string, label: string) => `${prefix}labels/${label}`;
/** The index key of an interval starting at `start` (ids up to 2^32 - 1: 8 hex digits). */
export const idsKey = (prefix: string, start: number) => `${prefix}ids/${start.toString(16).padStart(8, '0')}`;

/** The first id an index key names, or null when the key is not one of the index's. */
export function idsKeyStart(prefix: string, key: string): number | null {
  const tail = key.startsWith(idsPrefix(prefix)) ? key.slice(idsPrefix(prefix).length) : '';
  return /^[0-9a-f]{8}$/.test(tail) ? parseInt(tail, 16) : null;
}

/** A label's entry as read: checked (its key a label, its value an entry), a static one's intervals merged. */
export function parseEntry(label: string, text: string): ReadEntry {
  const lp = labelKeyProblem(label);
  if (lp !== null) return { invalid: `not a context label: ${lp}` };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { invalid: 'not JSON' };
  }
  const r = v.safeParse(ENTRY, raw);
  if (!r.success) return { invalid: issueText(r.issues) };
  const e = r.output;
  if (e.kind === 'auto') return e.start + e.size - 1 > 0xfffffffe ? { invalid: 'size: the range ends past the last id' } : e;
  return { ...e, intervals: mergeIntervals(e.intervals) };
}

/** An index key as read; null when the key is not the index's (it holds nothing). */
export function parseIndex(prefix: string, key: string, text: string): IndexEntry | null {
  const start = idsKeyStart(prefix, key);
  if (start === null) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    raw = null;
  }
  const r = v.safeParse(INDEX, raw);
  if (!r.success || r.output.end <= start) return { start, end: start + 1, label: '', valid: false };
  return { start, end: r.output.end, label: r.output.label, valid: true, kind: r.output.kind, by: r.output.by };
}

export const entryIntervals = (e: PoolEntry): readonly Interval[] => (e.kind === 'auto' ? [{ start: e.start, end: e.start + e.size }] : e.intervals);
export const serializeEntry = (e: PoolEntry) => JSON.stringify(e);
export const serializeIndex = (end: number, label: string, e: PoolEntry) => JSON.stringify({ end, label, kind: e.kind, by: e.by });

const fmt = (i: Interval) => `${i.start}-${i.end - 1}`;
const describe = (e: IndexEntry) => {
  if (!e.valid) return `an index key at ${e.start} that is not valid`;
  const whose = e.by === undefined ? '' : e.kind === 'static' ? ` (configured on ${e.by})` : ` (allocated by ${e.by})`;
  return `${e.label}'s ${e.kind === 'static' ? 'static range' : 'range'} ${fmt(e)}${whose}`;
};

/**
 * Why a label's intervals are not what the index says (null: each has its own key, naming it with
 * the same end, and no other key's interval overlaps any of them). `before` is the index key
 * before the first interval, `within` every key from its start to the last interval's end.
 */
export function indexProblem(label: string, intervals: readonly Interval[], before: IndexEntry | null, within: readonly IndexEntry[]): string | null {
  const others: IndexEntry[] = before ? [before] : [];
  const own = new Set<IndexEntry>();
  for (const i of intervals) {
    const k = within.find((e) => e.start === i.start);
    if (k && k.valid && k.label === label && k.end === i.end) own.add(k);
  }
  for (const e of within) if (!own.has(e)) others.push(e);
  for (const e of others) if (intervals.some((i) => intervalsOverlap(i, e))) return `it overlaps ${describe(e)}`;
  const missing = intervals.find((i) => ![...own].some((k) => k.start === i.start));
  return missing ? `the pool's index has no key for its ids ${fmt(missing)}` : null;
}

/** The slots of a pool a label's search goes through: from its hash slot to the last, then from the first to it. */
export type Probe = { readonly first: number; readonly count: number; readonly hash: number; readonly next: number; readonly wrapped: boolean };

export function startProbe(label: string, size: number, pool: Pool): Probe | string {
  const { first, count } = poolSlots(pool, size);
  if (count === 0) return `the pool ${pool.start}-${pool.end} holds no aligned range of ${size} ids: widen [pool] range or lower size`;
  const hash = hashSlot(label, count);
  return { first, count, hash, next: hash, wrapped: false };
}

/** The ids the probe reads next (one range of the index), or null when it has looked at every slot. */
export function probeWindow(p: Probe, size: number): { readonly from: number; readonly to: number; readonly slots: number } | null {
  const last = p.wrapped ? p.hash : p.count;
  if (p.next >= last) return null;
  const slots = Math.min(WINDOW_SLOTS, last - p.next);
  return { from: p.first + p.next * size, to: p.first + (p.next + slots) * size, slots };
}

export function advanceProbe(p: Probe): Probe {
  const next = p.next + WINDOW_SLOTS;
  if (!p.wrapped && next >= p.count) return { ...p, next: 0, wrapped: true };
  return { ...p, next };
}

export const exhausted = (pool: Pool, size: number) =>
  `the pool ${pool.start}-${pool.end} is exhausted: no free range of ${size} ids is left (widen [pool] range or remove contexts)`;

/**
 * The first free slot of the window the probe reads, given the index keys read there (`before`: the
 * key before the window) and what is taken besides (this host's system ids, what this round has
 * claimed already); and the first id of the index key before it, for the write's compare (null:
 * none, the compare starts at the index's first key). Null: the window is full.
 */
export function freeSlot(
  p: Probe,
  size: number,
  before: IndexEntry | null,
  within: readonly IndexEntry[],
  taken: readonly Interval[],
): { start: number; after: number | null } | null {
  const w = probeWindow(p, size);
  if (!w) return null;
  const keys = before ? [before, ...within] : [...within];
  const busy = mergeIntervals([...taken, ...keys]);
  for (let k = 0; k < w.slots; k++) {
    const start = w.from + k * size;
    if (busy.some((i) => i.start < start + size && start < i.end)) continue;
    let after: number | null = null;
    for (const e of keys) if (e.start < start && (after === null || e.start > after)) after = e.start;
    return { start, after };
  }
  return null;
}

export type Request = { readonly label: string; readonly size: number };
export type StaticClaim = { readonly label: string; readonly intervals: readonly Interval[] };
/** A label this host cannot have as configured, and why (naming the other label, and host). */
export type Conflict = { readonly label: string; readonly message: string };

/** What this host wants of the pool for one label (`at`: ranges import's recorded start). */
export type Want =
  | { readonly label: string; readonly kind: 'auto'; readonly size: number; readonly at?: number }
  | { readonly label: string; readonly kind: 'static'; readonly intervals: readonly Interval[] };

/**
 * A label the pool has, judged as this host would judge its own: the allocation it decides, or why
 * it refuses. `before`/`within`: the index read around the entry's intervals.
 */
export function judgeKnown(
  want: Want,
  entry: Exclude<ReadEntry, null>,
  before: IndexEntry | null,
  within: readonly IndexEntry[],
  pool: Pool,
  system: readonly Interval[],
): { decided: Allocation | null } | { conflict: string } {
  const label = want.label;
  if ('invalid' in entry)
    return {
      conflict: `the shared pool's entry for it is not valid (${entry.invalid}): it is used for nothing; fix it, or forget it (usernsctl ranges forget ${label}) to have it allocated anew`,
    };
  if (want.kind === 'static') {
    if (entry.kind === 'auto') return { conflict: `${entry.by} has it as an auto range: a label is static everywhere or auto everywhere` };
    const mine = mergeIntervals(want.intervals);
    const same = mine.length === entry.intervals.length && mine.every((x, k) => x.start === entry.intervals[k].start && x.end === entry.intervals[k].end);
    if (!same)
      return {
        conflict: `${entry.by} has it with ids ${entry.intervals.map(fmt).join(', ')}, this host with ${mine.map(fmt).join(', ')}: hosts that share storage must give a label the same ids`,
      };
    const problem = indexProblem(label, entry.intervals, before, within);
    return problem ? { conflict: `the shared pool's static range of it is refused: ${problem}; one of the two must change` } : { decided: null };
  }
  if (entry.kind === 'static') return { conflict: `${entry.by} configures it with static ids: a label is static everywhere or auto everywhere` };
  if (want.at !== undefined && want.at !== entry.start)
    return {
      conflict: `the shared pool has it at ${fmt({ start: entry.start, end: entry.start + entry.size })} (allocated by ${entry.by}), this host at ${fmt({ start: want.at, end: want.at + want.size })}`,
    };
  if (entry.size !== want.size)
    return {
      conflict: `the shared pool has it with ${entry.size} ids (allocated by ${entry.by}), this host asks for ${want.size}: give it the same size everywhere, or forget it (usernsctl ranges forget ${label}) to have it allocated anew`,
    };
  // SPEC §12: a range another host (or anyone who can write the key) put there is judged as this
  // host would judge its own allocation, and against the index around it.
  const problem = rangeProblem(entry, want.size, pool, system) ?? indexProblem(label, entryIntervals(entry), before, within);
  if (problem)
    return {
      conflict: `the shared pool gives it ${fmt({ start: entry.start, end: entry.start + entry.size })} (allocated by ${entry.by}), which this host refuses: ${problem}; fix the pool, or forget it (usernsctl ranges forget ${label}) to have it allocated anew`,
    };
  return { decided: { start: entry.start, size: entry.size } };
}

/**
 * Why a label's intervals cannot be registered where the index has others (null: they can), in the
 * words of a static claim ("its ids ... overlap ...") or of ranges import ("this host's L at ...").
 */
export function claimProblem(want: Want, intervals: readonly Interval[], before: IndexEntry | null, within: readonly IndexEntry[]): string | null {
  for (const e of before ? [before, ...within] : within) {
    const hit = intervals.find((i) => intervalsOverlap(i, e));
    if (!hit) continue;
    return want.kind === 'static'
      ? `its ids ${intervals.map(fmt).join(', ')} overlap ${describe(e)} in the shared pool: one of the two files must change`
      : `this host's ${want.label} at ${fmt(hit)} overlaps ${describe(e)}`;
  }
  return null;
}

/** The ids a want's entry would hold, when they are known before the pool is read (static, or import's fixed start). */
export function fixedIntervals(w: Want): readonly Interval[] | null {
  if (w.kind === 'static') return mergeIntervals(w.intervals);
  return w.at === undefined ? null : [{ start: w.at, end: w.at + w.size }];
}

/**
 * Layout 1's document as the entries and index keys of layout 2, in label order, so every agent
 * that migrates it writes the same keys. An entry that was not valid goes over as it was (the same
 * refusal, the same forget); an interval overlapping one before it (in id order, then label order)
 * gets no index key (its label is refused for the overlap, as it was).
 */
export function migrationKeys(prefix: string, doc: unknown): { key: string; value: string }[] {
  const d = isPlainObject(doc) ? doc : {};
  const section = (x: unknown) => (isPlainObject(x) ? Object.entries(x) : []);
  const entries = new Map<string, unknown>();
  for (const [label, raw] of section(d.ranges)) entries.set(label, isPlainObject(raw) ? { kind: 'auto', ...raw } : raw);
  for (const [label, raw] of section(d.statics)) if (!entries.has(label)) entries.set(label, isPlainObject(raw) ? { kind: 'static', ...raw } : raw);
  const out: { key: string; value: string }[] = [];
  const claims: { label: string; i: Interval; entry: PoolEntry }[] = [];
  for (const label of [...entries.keys()].sort()) {
    const value = JSON.stringify(entries.get(label) ?? null);
    out.push({ key: labelKey(prefix, label), value });
    const e = parseEntry(label, value);
    if (e !== null && !('invalid' in e)) for (const i of entryIntervals(e)) claims.push({ label, i, entry: e });
  }
  // In id order (then label order), an interval overlapping one kept before it gets no key.
  claims.sort((a, b) => a.i.start - b.i.start || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
  let reached = 0;
  for (const { label, i, entry } of claims) {
    if (i.start < reached) continue;
    reached = i.end;
    out.push({ key: idsKey(prefix, i.start), value: serializeIndex(i.end, label, entry) });
  }
  return out;
}

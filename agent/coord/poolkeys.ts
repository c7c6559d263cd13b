// The shared pool kept one etcd key per label (SPEC §4, coordinator = etcd), pure: what the keys
// are called and hold, how what was read of them is judged, where a label's fresh range goes. etcd
// only decides which write wins; this file decides what is written. Layout 2:
//
//   PREFIX/pool              the layout's marker (an agent of layout 1 reads "not version 1" there
//                            and refuses cleanly), or layout 1's whole document, being migrated
//   PREFIX/labels/LABEL      the label's entry: {kind: "auto", start, size, by, at} or
//                            {kind: "static", intervals, by, at}
//   PREFIX/ids/EEEEEEEE-SSSSSSSS  the index: one key per interval a label holds, named by the id
//                            just after it and its first id (8 hex digits each, so keys sort by
//                            their ends as ids do, and a read of keys alone gives the intervals):
//                            {label, kind, by}
//
// An index key holds at most CHUNK ids (a longer interval is several keys). Named by their ends, the
// keys that can overlap ids A..B-1 are those ending from A+1 to B and the first one after B:
// ascending reads of a few keys (etcd sorts a descending read in full, so the key before an id
// would cost the whole index). Every write of an entry writes its index keys in the same
// transaction, and compares that no index key ending from A+1 to B-1+CHUNK (where any key that could
// overlap A..B-1 ends) was made or changed since it was read: so no two intervals overlap, and an
// allocation reads and writes a handful of keys whatever the pool holds. Everything read is input (SPEC §12): an entry is judged as this host's own allocation
// would be, and against the index around it.
import * as v from 'valibot';
import { formatInterval, intervalsOverlap } from '../../config/extents.ts';
import type { Interval } from '../../config/extents.ts';
import type { Pool } from '../../config/types.ts';
import { COUNT, ID, isPlainObject, issueText, labelKeyProblem, TEXT } from '../../config/untrusted.ts';
import { mergeIntervals, poolSlots, hashSlot, rangeProblem } from './allocate.ts';
import { POOL_DOC_VERSION } from './pooldoc.ts';
import type { Allocation } from './allocate.ts';

export const POOL_LAYOUT = 2;
/** PREFIX/pool once the pool is kept one key per label. */
export const POOL_MARKER = JSON.stringify({ version: POOL_LAYOUT, layout: 'one key per label: PREFIX/labels/LABEL, indexed by PREFIX/ids/START' });
/** What PREFIX/pool says of the pool's layout (its text; null: no key). */
export type PoolKeyState =
  | { readonly state: 'marked' }
  | { readonly state: 'new' }
  | { readonly state: 'layout1'; readonly doc: Record<string, unknown> }
  | { readonly state: 'moving'; readonly doc: unknown }
  | { readonly state: 'unknown'; readonly why: string };

export function poolKeyState(text: string | null): PoolKeyState {
  if (text === POOL_MARKER) return { state: 'marked' };
  if (text === null) return { state: 'new' };
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return { state: 'unknown', why: 'is not JSON' };
  }
  if (isPlainObject(doc) && doc.version === POOL_DOC_VERSION) return { state: 'layout1', doc };
  if (isPlainObject(doc) && doc.version === POOL_LAYOUT && 'migrating' in doc) return { state: 'moving', doc: doc.migrating };
  return { state: 'unknown', why: `is not a layout of the pool this agent knows (${POOL_DOC_VERSION} or ${POOL_LAYOUT}: written by a newer agent?)` };
}

/**
 * The index keys one label may hold in the pool: its entry and an index key each are written in one
 * transaction, and etcd takes at most 128 operations in one (--max-txn-ops).
 */
export const MAX_INTERVALS = 100;
/** The ids one index key holds at most (4 Mi: 64 ranges of 65,536); a label holds at most MAX_INTERVALS keys. */
export const CHUNK = 2 ** 22;
/** Slots looked at per read when looking for a free one (one range read of the index keys). */
export const WINDOW_SLOTS = 256;

export type PoolEntry =
  | { readonly kind: 'auto'; readonly start: number; readonly size: number; readonly by: string; readonly at: string }
  | { readonly kind: 'static'; readonly intervals: readonly Interval[]; readonly by: string; readonly at: string };
/**
 * An index key: ids start..end-1 are the label's (`kind` and `by` repeat its entry's, for the words
 * of a refusal). `valid` false: a key whose value cannot be read, or read without its value (it
 * holds its ids all the same).
 */
export type IndexEntry = {
  readonly start: number;
  readonly end: number;
  readonly label: string;
  readonly valid: boolean;
  readonly kind?: 'auto' | 'static';
  readonly by?: string;
  /** The key's revision, as read from etcd. */
  readonly mod?: string;
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
  label: v.pipe(v.string(), v.maxLength(256)),
  kind: v.optional(v.picklist(['auto', 'static'])),
  by: v.optional(TEXT),
});

export const labelsPrefix = (prefix: string) => `${prefix}labels/`;
export const idsPrefix = (prefix: string) => `${prefix}ids/`;
export const labelKey = (prefix: string, label: string) => `${prefix}labels/${label}`;
const hex8 = (n: number) => n.toString(16).padStart(8, '0');
/** The index key of ids start..end-1 (end 1 to 2^32 - 1). */
export const idsKey = (prefix: string, i: Interval) => `${prefix}ids/${hex8(i.end)}-${hex8(i.start)}`;
/** The first index key that can end at `end` or after (keys ending before it sort before it). */
export const idsFrom = (prefix: string, end: number) => `${prefix}ids/${hex8(end)}`;
/** The key just past every index key ending at `end`. */
export const idsPast = (prefix: string, end: number) => `${prefix}ids/${hex8(end)}.`;

/** The interval an index key names (at most CHUNK ids), or null when the key is not one of the index's. */
export function idsKeyInterval(prefix: string, key: string): Interval | null {
  if (!key.startsWith(idsPrefix(prefix))) return null;
  const m = /^([0-9a-f]{8})-([0-9a-f]{8})$/.exec(key.slice(idsPrefix(prefix).length));
  if (!m) return null;
  const end = parseInt(m[1], 16);
  const start = parseInt(m[2], 16);
  return start < end && end - start <= CHUNK ? { start, end } : null;
}

/** A label's entry as read: checked (its key a label, its value an entry), a static one's intervals merged. */
export function parseEntry(label: string, text: string): Exclude<ReadEntry, null> {
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

/** An index key as read (`text` null: read without its value); null when the key is not the index's (it holds nothing). */
export function parseIndex(prefix: string, key: string, text: string | null): IndexEntry | null {
  const i = idsKeyInterval(prefix, key);
  if (i === null) return null;
  let raw: unknown; // (none when read without its value, or not JSON: not valid)
  try {
    raw = text === null ? undefined : JSON.parse(text);
  } catch {
    /* not JSON */
  }
  const r = v.safeParse(INDEX, raw);
  if (!r.success) return { ...i, label: '', valid: false };
  return { ...i, label: r.output.label, valid: true, kind: r.output.kind, by: r.output.by };
}

export const entryIntervals = (e: PoolEntry): readonly Interval[] => (e.kind === 'auto' ? [{ start: e.start, end: e.start + e.size }] : e.intervals);
export const serializeEntry = (e: PoolEntry) => JSON.stringify(e);
export const serializeIndex = (label: string, e: PoolEntry) => JSON.stringify({ label, kind: e.kind, by: e.by });

const fmt = formatInterval;
const describe = (e: IndexEntry) => {
  if (!e.valid) return `ids ${formatInterval(e)} (an index key that is not valid)`;
  const whose = e.by === undefined ? '' : e.kind === 'static' ? ` (configured on ${e.by})` : ` (allocated by ${e.by})`;
  return `${e.label}'s ${e.kind === 'static' ? 'static range' : 'range'} ${fmt(e)}${whose}`;
};

/**
 * Why a label's intervals are not what the index says (null: each piece has its own key, naming
 * it with the same start, and no other key's interval overlaps any of them). `around`: the index keys read
 * around them (ending after the first interval's start, up to the first ending after the last's end).
 */
export function indexProblem(label: string, intervals: readonly Interval[], around: readonly IndexEntry[]): string | null {
  const own = new Set<IndexEntry>();
  const chunks = indexChunks(intervals);
  for (const i of chunks) {
    const k = around.find((e) => e.end === i.end && e.start === i.start);
    if (k && k.valid && k.label === label) own.add(k);
  }
  for (const e of around) if (!own.has(e) && intervals.some((i) => intervalsOverlap(i, e))) return `it overlaps ${describe(e)}`;
  const missing = chunks.find((i) => ![...own].some((k) => k.end === i.end));
  return missing ? `the pool's index has no key for its ids ${fmt(missing)}` : null;
}

/** The index keys of a label's intervals: each cut in pieces of at most CHUNK ids. */
export function indexChunks(intervals: readonly Interval[]): Interval[] {
  const out: Interval[] = [];
  for (const i of intervals) for (let s = i.start; s < i.end; s += CHUNK) out.push({ start: s, end: Math.min(i.end, s + CHUNK) });
  return out;
}

/**
 * What a write of `intervals` compares: the index keys ending from `fromEnd` to `toEnd` made or
 * changed since the read (every key that could overlap them ends there), and `bound`, when given,
 * still there as read. A key ends at most CHUNK ids after its first id; and a key that overlaps them
 * cannot end after a key read past them (`bound`, the first ending after them) while that key stays:
 * it would overlap that one too. So in a crowded pool the compare is one or two keys long.
 */
export function compareSpan(intervals: readonly Interval[], around: readonly IndexEntry[]): { fromEnd: number; toEnd: number; bound: IndexEntry | null } {
  const last = intervals[intervals.length - 1].end;
  const cap = Math.min(last - 1 + CHUNK, 0xffffffff);
  let bound: IndexEntry | null = null;
  for (const e of around) if (e.start >= last && e.end <= cap && (bound === null || e.end < bound.end)) bound = e;
  return { fromEnd: intervals[0].start + 1, toEnd: bound ? bound.end - 1 : cap, bound };
}

/**
 * The slots of a pool a label's search goes through: from its hash slot to the last, then from the
 * first to it; `window` slots at a time (WINDOW_SLOTS unless a map guides it to one: slotmap.ts).
 */
export type Probe = {
  readonly first: number;
  readonly count: number;
  readonly hash: number;
  readonly next: number;
  readonly wrapped: boolean;
  readonly window?: number | undefined;
};

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
  const slots = Math.min(p.window ?? WINDOW_SLOTS, last - p.next);
  return { from: p.first + p.next * size, to: p.first + (p.next + slots) * size, slots };
}

/** The first id a label's search looks at (for ordering many labels by where they go; 0 when the pool holds none). */
export function searchStart(label: string, size: number, pool: Pool): number {
  const p = startProbe(label, size, pool);
  return typeof p === 'string' ? 0 : p.first + p.hash * size;
}

export function advanceProbe(p: Probe): Probe {
  const next = p.next + (p.window ?? WINDOW_SLOTS);
  if (!p.wrapped && next >= p.count) return { ...p, next: 0, wrapped: true };
  return { ...p, next };
}

export const exhausted = (pool: Pool, size: number) =>
  `the pool ${pool.start}-${pool.end} is exhausted: no free range of ${size} ids is left (widen [pool] range or remove contexts)`;

/**
 * The first free slot of the window the probe reads, given the index keys read there (`around`) and
 * what is taken besides (this host's system ids, what this round has claimed already). Null: the
 * window is full.
 */
export function freeSlot(p: Probe, size: number, around: readonly IndexEntry[], taken: readonly Interval[]): number | null {
  const w = probeWindow(p, size);
  if (!w) return null;
  const busy = mergeIntervals([...taken, ...around]);
  // Slots and busy intervals both ascend: one walk through each.
  let b = 0;
  for (let k = 0; k < w.slots; k++) {
    const start = w.from + k * size;
    while (b < busy.length && busy[b].end <= start) b++;
    if (b === busy.length || busy[b].start >= start + size) return start;
  }
  return null;
}

export type Request = { readonly label: string; readonly size: number };
export type StaticClaim = { readonly label: string; readonly intervals: readonly Interval[] };
/** A label this host cannot have as configured, and why (naming the other label, and host). */
export type Conflict = { readonly label: string; readonly message: string };

/** What this host wants of the pool for one label (`at`: ranges import's recorded start; `hint`: where this host recorded it). */
export type Want =
  | { readonly label: string; readonly kind: 'auto'; readonly size: number; readonly at?: number; readonly hint?: number }
  | { readonly label: string; readonly kind: 'static'; readonly intervals: readonly Interval[] };

/**
 * A label the pool has, judged as this host would judge its own: the allocation it decides, or why
 * it refuses. `around`: the index read around the entry's intervals.
 */
export function judgeKnown(
  want: Want,
  entry: Exclude<ReadEntry, null>,
  around: readonly IndexEntry[],
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
    const problem = indexProblem(label, entry.intervals, around);
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
  const problem = rangeProblem(entry, want.size, pool, system) ?? indexProblem(label, entryIntervals(entry), around);
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
export function claimProblem(want: Want, intervals: readonly Interval[], around: readonly IndexEntry[]): string | null {
  for (const e of around) {
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
    if (!('invalid' in e)) for (const i of indexChunks(entryIntervals(e))) claims.push({ label, i, entry: e });
  }
  // In id order (then label order: the sort is stable), an interval overlapping one kept before it gets no key.
  claims.sort((a, b) => a.i.start - b.i.start);
  let reached = 0;
  for (const { label, i, entry } of claims) {
    if (i.start < reached) continue;
    reached = i.end;
    out.push({ key: idsKey(prefix, i), value: serializeIndex(label, entry) });
  }
  return out;
}

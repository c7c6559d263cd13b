// The pool as the hosts that share it agree on it (SPEC §4, coordinator = etcd): one document of
// every label's range and every host's static ranges. Pure: etcd only decides which document wins
// (a compare-and-swap on its revision); what goes in it is decided here, with the same allocator
// as a single host's.
import { intervalsOverlap } from '../../config/extents.ts';
import type { Interval } from '../../config/extents.ts';
import type { Pool } from '../../config/types.ts';
import * as v from 'valibot';
import { allocateRange, mergeIntervals, rangeProblem } from './allocate.ts';
import type { Allocation } from './allocate.ts';
import { bareRecord, checkEntries, COUNT, ID, isPlainObject, TEXT } from '../../config/untrusted.ts';

export const POOL_DOC_VERSION = 1;

export type RangeEntry = { readonly start: number; readonly size: number; readonly by: string; readonly at: string };
/** A host's static range of a label: the host ids its maps reach (uid and gid extents merged). */
export type StaticEntry = { readonly intervals: readonly Interval[]; readonly by: string; readonly at: string };
/** An entry another writer left that is not valid: kept as it was (written back untouched), used for nothing. */
export type InvalidEntry = { readonly why: string; readonly raw: unknown };
/** Records without prototypes: every label, "constructor" and "__proto__" included, is only what the document says. */
export type PoolDoc = {
  readonly version: number;
  readonly ranges: Readonly<Record<string, RangeEntry>>;
  readonly statics: Readonly<Record<string, StaticEntry>>;
  readonly invalid?: { readonly ranges: ReadonlyMap<string, InvalidEntry>; readonly statics: ReadonlyMap<string, InvalidEntry> };
};

export const EMPTY_DOC: PoolDoc = { version: POOL_DOC_VERSION, ranges: bareRecord(), statics: bareRecord() };

const RANGE_ENTRY = v.object({ start: ID, size: COUNT, by: TEXT, at: TEXT });
const INTERVAL = v.pipe(
  v.object({ start: ID, end: v.pipe(v.number(), v.safeInteger(), v.maxValue(0xffffffff)) }),
  v.check((i) => i.end > i.start, 'an interval must end after it starts'),
);
const STATIC_ENTRY = v.object({ intervals: v.pipe(v.array(INTERVAL), v.minLength(1), v.maxLength(680)), by: TEXT, at: TEXT });

export type Request = { readonly label: string; readonly size: number };
export type StaticClaim = { readonly label: string; readonly intervals: readonly Interval[] };
/** A label this host cannot have as configured, and why (naming the other label, and host). */
export type Conflict = { readonly label: string; readonly message: string };

export type Decision = {
  /** The document to write, or null when nothing had to change. */
  readonly next: PoolDoc | null;
  /** Every requested label's range, as the cluster has it. */
  readonly decided: Map<string, Allocation>;
  readonly conflicts: Conflict[];
};

const fmt = (i: Interval) => `${i.start}-${i.end - 1}`;
const sameIntervals = (a: readonly Interval[], b: readonly Interval[]) =>
  a.length === b.length && a.every((x, k) => x.start === b[k].start && x.end === b[k].end);

/** What a document holds, as intervals with their owner: for overlap checks and the allocator. */
function occupied(doc: PoolDoc, except: string | null): { label: string; what: string; i: Interval }[] {
  const out: { label: string; what: string; i: Interval }[] = [];
  for (const [label, r] of Object.entries(doc.ranges))
    if (label !== except)
      out.push({ label, what: `range ${r.start}-${r.start + r.size - 1} (allocated by ${r.by})`, i: { start: r.start, end: r.start + r.size } });
  for (const [label, s] of Object.entries(doc.statics))
    if (label !== except) for (const i of s.intervals) out.push({ label, what: `static range ${fmt(i)} (configured on ${s.by})`, i });
  return out;
}

/**
 * Merge one host's wishes into the document: its static ranges registered (refused, naming the
 * other, when they overlap another label's), and every requested label given its range — the one
 * the cluster already has, or a fresh one from the hash-first allocator that avoids everything in
 * the document and `reserved` (this host's own system ids). Same inputs, same output: every host
 * computes the same candidate, so the common case is one compare-and-swap.
 */
export function decide(
  doc: PoolDoc,
  requests: readonly Request[],
  statics: readonly StaticClaim[],
  pool: Pool,
  reserved: readonly Interval[],
  host: string,
  now: string,
): Decision {
  const ranges = bareRecord(Object.entries(doc.ranges));
  const staticsOut = bareRecord(Object.entries(doc.statics));
  let changed = false;
  const conflicts: Conflict[] = [];
  const decided = new Map<string, Allocation>();
  for (const s of statics) {
    const mine = mergeIntervals(s.intervals);
    const known = doc.statics[s.label];
    if (known && sameIntervals(known.intervals, mine)) continue;
    const hit = occupied({ ...doc, ranges, statics: staticsOut }, s.label).find((o) => mine.some((i) => intervalsOverlap(i, o.i)));
    if (hit) {
      conflicts.push({
        label: s.label,
        message: `its ids ${mine.map(fmt).join(', ')} overlap ${hit.label}'s ${hit.what} in the shared pool: one of the two files must change`,
      });
      continue;
    }
    if (known) {
      conflicts.push({
        label: s.label,
        message: `${known.by} has it with ids ${known.intervals.map(fmt).join(', ')}, this host with ${mine.map(fmt).join(', ')}: hosts that share storage must give a label the same ids`,
      });
      continue;
    }
    staticsOut[s.label] = { intervals: mine, by: host, at: now };
    changed = true;
  }
  let taken = mergeIntervals([...reserved, ...occupied({ ...doc, ranges, statics: staticsOut }, null).map((o) => o.i)]);
  const system = mergeIntervals(reserved);
  for (const r of requests) {
    const bad = doc.invalid?.ranges.get(r.label) ?? doc.invalid?.statics.get(r.label);
    if (bad) {
      conflicts.push({
        label: r.label,
        message: `the shared pool's entry for it is not valid (${bad.why}): it is used for nothing; fix it, or forget it (usernsctl ranges forget ${r.label}) to have it allocated anew`,
      });
      continue;
    }
    const known = ranges[r.label];
    if (known) {
      if (known.size !== r.size) {
        conflicts.push({
          label: r.label,
          message: `the shared pool has it with ${known.size} ids (allocated by ${known.by}), this host asks for ${r.size}: give it the same size everywhere, or forget it (usernsctl ranges forget ${r.label}) to have it allocated anew`,
        });
        continue;
      }
      // SPEC §12: a range another host (or anyone who can write the key) put there is judged as
      // this host would judge its own allocation, and against everything else in the document.
      const i = { start: known.start, end: known.start + known.size };
      const problem =
        rangeProblem(known, r.size, pool, system) ??
        ((o) => (o ? `it overlaps ${o.label}'s ${o.what}` : null))(
          occupied({ ...doc, ranges, statics: staticsOut }, r.label).find((o) => intervalsOverlap(o.i, i)),
        );
      if (problem)
        conflicts.push({
          label: r.label,
          message: `the shared pool gives it ${known.start}-${known.start + known.size - 1} (allocated by ${known.by}), which this host refuses: ${problem}; fix the pool, or forget it (usernsctl ranges forget ${r.label}) to have it allocated anew`,
        });
      else decided.set(r.label, { start: known.start, size: known.size });
      continue;
    }
    if (staticsOut[r.label]) {
      conflicts.push({ label: r.label, message: `${staticsOut[r.label].by} configures it with static ids: a label is static everywhere or auto everywhere` });
      continue;
    }
    const start = allocateRange(r.label, r.size, pool, taken);
    if (typeof start === 'string') {
      conflicts.push({ label: r.label, message: start });
      continue;
    }
    ranges[r.label] = { start, size: r.size, by: host, at: now };
    decided.set(r.label, { start, size: r.size });
    taken = mergeIntervals([...taken, { start, end: start + r.size }]);
    changed = true;
  }
  return { next: changed ? { version: POOL_DOC_VERSION, ranges, statics: staticsOut, invalid: doc.invalid } : null, decided, conflicts };
}

/**
 * A document read from etcd, checked as untrusted input (SPEC §12): another version, or no JSON
 * object, refuses the whole document; an entry that is not valid is kept aside (and written back as
 * it was), so it harms only its own label.
 */
export function parseDoc(text: string | null): PoolDoc | string {
  if (text === null) return EMPTY_DOC;
  let d: unknown;
  try {
    d = JSON.parse(text);
  } catch {
    return 'the shared pool document is not JSON';
  }
  if (!isPlainObject(d) || d.version !== POOL_DOC_VERSION) {
    return `the shared pool document is not version ${POOL_DOC_VERSION} of usernsd's (written by a newer agent?)`;
  }
  const ranges = checkEntries(isPlainObject(d.ranges) ? d.ranges : {}, RANGE_ENTRY);
  const statics = checkEntries(isPlainObject(d.statics) ? d.statics : {}, STATIC_ENTRY);
  return {
    version: POOL_DOC_VERSION,
    ranges: bareRecord(ranges.good),
    statics: bareRecord([...statics.good].map(([label, st]) => [label, { ...st, intervals: mergeIntervals(st.intervals) }] as const)),
    invalid: { ranges: ranges.bad, statics: statics.bad },
  };
}

/** The document as etcd stores it: what this host decided, and every invalid entry as it found it. */
export function serializeDoc(doc: PoolDoc): string {
  const ranges: Record<string, unknown> = bareRecord(Object.entries(doc.ranges));
  const statics: Record<string, unknown> = bareRecord(Object.entries(doc.statics));
  for (const [label, e] of doc.invalid?.ranges ?? []) if (!(label in ranges)) ranges[label] = e.raw;
  for (const [label, e] of doc.invalid?.statics ?? []) if (!(label in statics)) statics[label] = e.raw;
  return JSON.stringify({ version: doc.version, ranges, statics });
}

/** Remove a label's range (ranges forget), a valid or an invalid one: the new document, or null when it had none. */
export function forget(doc: PoolDoc, label: string): PoolDoc | null {
  const invalid = doc.invalid?.ranges.has(label) ?? false;
  if (!doc.ranges[label] && !invalid) return null;
  const ranges = bareRecord(Object.entries(doc.ranges).filter(([l]) => l !== label));
  const bad = new Map([...(doc.invalid?.ranges ?? [])].filter(([l]) => l !== label));
  return { ...doc, ranges, invalid: { ranges: bad, statics: doc.invalid?.statics ?? new Map() } };
}

/**
 * ranges import: this host's recorded allocations pushed into the document, all or none. A label
 * the document has with another range, or a range overlapping another label's, is a conflict.
 */
export function importAllocations(
  doc: PoolDoc,
  local: ReadonlyMap<string, Allocation>,
  host: string,
  now: string,
): { next: PoolDoc | null; conflicts: Conflict[] } {
  const ranges = bareRecord(Object.entries(doc.ranges));
  const conflicts: Conflict[] = [];
  let changed = false;
  for (const [label, a] of [...local].sort(([x], [y]) => x.localeCompare(y))) {
    if (doc.invalid?.ranges.has(label)) {
      conflicts.push({
        label,
        message: `the shared pool's entry for ${label} is not valid (${doc.invalid.ranges.get(label)!.why}): forget it first (usernsctl ranges forget ${label})`,
      });
      continue;
    }
    const known = ranges[label];
    if (known) {
      if (known.start !== a.start || known.size !== a.size)
        conflicts.push({
          label,
          message: `the shared pool has ${label} at ${known.start}-${known.start + known.size - 1} (allocated by ${known.by}), this host at ${a.start}-${a.start + a.size - 1}`,
        });
      continue;
    }
    const i = { start: a.start, end: a.start + a.size };
    const hit = occupied({ ...doc, ranges }, label).find((o) => intervalsOverlap(o.i, i));
    if (hit) {
      conflicts.push({ label, message: `this host's ${label} at ${fmt(i)} overlaps ${hit.label}'s ${hit.what}` });
      continue;
    }
    ranges[label] = { start: a.start, size: a.size, by: host, at: now };
    changed = true;
  }
  return { next: conflicts.length === 0 && changed ? { ...doc, ranges } : null, conflicts };
}

// Layout 1 of the shared pool (usernsd before 2026-12): one document of every label's range and
// every host's static ranges under PREFIX/pool, changed by compare-and-swap on its revision. It held
// about 15,000 labels under etcd's request limit, and each allocation rewrote all of it. This
// version reads it only to move it to one key per label (poolkeys.ts, etcd.ts ensureLayout) and to
// say what it holds (check-config --etcd); older agents still read and write it, and refuse the
// pool once it is moved.
import type { Interval } from '../../config/extents.ts';
import * as v from 'valibot';
import { mergeIntervals } from './allocate.ts';
import { bareRecord, checkEntries, COUNT, ID, isPlainObject, TEXT } from '../../config/untrusted.ts';

export const POOL_DOC_VERSION = 1;

export type RangeEntry = { readonly start: number; readonly size: number; readonly by: string; readonly at: string };
/** A host's static range of a label: the host ids its maps reach (uid and gid extents merged). */
export type StaticEntry = { readonly intervals: readonly Interval[]; readonly by: string; readonly at: string };
/** An entry another writer left that is not valid: kept with why, used for nothing (the move carries it over as it was). */
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

/**
 * A document read from etcd, checked as untrusted input (SPEC §12): another version, or no JSON
 * object, refuses the whole document; an entry that is not valid is kept aside (the move carries it over as
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

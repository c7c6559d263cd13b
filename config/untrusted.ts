// Data from outside the agent's memory — the etcd pool document and the state directory's files —
// read as untrusted input (SPEC §12): shapes checked with valibot, labels as labels, numbers as ids,
// keys kept in maps without prototypes ("constructor" is a label like any other), and an entry
// that is wrong becomes that entry's problem, never the whole document's or the agent's.
import * as v from 'valibot';
import { labelProblem } from './schema.ts';
import { HOST_LABEL } from './types.ts';

/** Host ids and counts as the kernel has them: below 2^32 - 1. */
const MAX_ID = 0xfffffffe;
const MAX_COUNT = 0xffffffff;
export const ID = v.pipe(v.number(), v.safeInteger(), v.minValue(0), v.maxValue(MAX_ID));
export const COUNT = v.pipe(v.number(), v.safeInteger(), v.minValue(1), v.maxValue(MAX_COUNT));
/** ID and COUNT as plain checks, for a reader that takes the common shape without valibot (coord/state.ts plainInForceEntry). */
export const isId = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0 && (x as number) <= MAX_ID;
export const isCount = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 1 && (x as number) <= MAX_COUNT;
/** Free text another host wrote (its name, a time): bounded, no control characters. */
export const TEXT = v.pipe(v.string(), v.maxLength(256), v.regex(/^[^\x00-\x1f\x7f]*$/u));

export const ALLOCATION = v.object({ start: ID, size: COUNT });
/** An id map as the kernel takes it: at most 340 extents. */
export const MAX_EXTENTS = 340;
export const IDMAP = v.pipe(v.array(v.object({ inside: ID, outside: ID, count: COUNT })), v.maxLength(MAX_EXTENTS));

/** Why `key` is no context label (null: it is one). */
export function labelKeyProblem(key: string): string | null {
  if (key === HOST_LABEL) return '"host" is reserved';
  return labelProblem(key);
}

/** A null-prototype record: indexing it with any label finds only what was put in it. */
export function bareRecord<T>(entries: Iterable<readonly [string, T]> = []): Record<string, T> {
  const out = Object.create(null) as Record<string, T>;
  for (const [k, val] of entries) out[k] = val;
  return out;
}

export { isPlainObject } from './json.ts';

/** The first issue valibot found, as one phrase: "size: Invalid type: Expected number but received null". */
export function issueText(issues: readonly v.BaseIssue<unknown>[]): string {
  const i = issues[0];
  if (!i) return 'invalid';
  const path = i.path?.map((p) => String((p as { key?: unknown }).key)).join('.') ?? '';
  return `${path ? `${path}: ` : ''}${i.message}`.slice(0, 200);
}

/**
 * Each entry of a JSON object checked on its own: good ones (label → value) and bad ones (label →
 * why, the raw value kept so a writer can leave another's entry as it found it).
 */
export function checkEntries<T>(
  raw: Record<string, unknown>,
  schema: v.GenericSchema<unknown, T>,
): { good: Map<string, T>; bad: Map<string, { why: string; raw: unknown }> } {
  const good = new Map<string, T>();
  const bad = new Map<string, { why: string; raw: unknown }>();
  for (const [key, value] of Object.entries(raw)) {
    const lp = labelKeyProblem(key);
    if (lp !== null) {
      bad.set(key, { why: `not a context label: ${lp}`, raw: value });
      continue;
    }
    const r = v.safeParse(schema, value);
    if (r.success) good.set(key, r.output);
    else bad.set(key, { why: issueText(r.issues), raw: value });
  }
  return { good, bad };
}

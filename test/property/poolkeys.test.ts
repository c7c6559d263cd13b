// The shared pool's keys, pure: index keys sort as the ids they name, a label's search looks at
// every slot once (from its hash), a free slot is free, and layout 1's document, whatever it holds,
// becomes keys whose index is disjoint and names only what its entries hold.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { hashSlot, mergeIntervals, poolSlots } from '../../agent/coord/allocate.ts';
import {
  advanceProbe,
  CHUNK,
  compareSpan,
  entryIntervals,
  freeSlot,
  idsKey,
  idsFrom,
  idsKeyInterval,
  idsPast,
  indexChunks,
  indexProblem,
  migrationKeys,
  parseEntry,
  parseIndex,
  probeWindow,
  startProbe,
} from '../../agent/coord/poolkeys.ts';
import type { IndexEntry, Probe } from '../../agent/coord/poolkeys.ts';
import type { Pool } from '../../config/types.ts';

const P = '/p/';

describe('property: the shared pool kept one key per label', () => {
  it('index keys sort by the end of the ids they name, and name them back', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xfffffffe }), fc.integer({ min: 1, max: CHUNK }), fc.integer({ min: 1, max: 0xffffffff }), (start, n, e) => {
        const i = { start, end: Math.min(start + n, 0xffffffff) };
        assert.deepEqual(idsKeyInterval(P, idsKey(P, i)), i);
        // Keys sort by their ends: every key ending before e, after e, at e, against idsFrom(e) and idsPast(e).
        assert.equal(idsKey(P, i) < idsFrom(P, e), i.end < e);
        assert.equal(idsKey(P, i) < idsPast(P, e), i.end <= e);
      }),
    );
  });

  it("a label's search looks at every slot of the pool once, its hash slot first, in windows of consecutive ids", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 5_000_000 }),
        fc.integer({ min: 1, max: 2000 }),
        fc.constantFrom(1, 7, 4096, 65536),
        fc.string({ minLength: 1, maxLength: 8 }),
        (start, slots, size, label) => {
          const pool: Pool = { start, end: start + slots * size + size - 1, size };
          let p = startProbe(label, size, pool) as Probe;
          const { first, count } = poolSlots(pool, size);
          const seen: number[] = [];
          for (let w = probeWindow(p, size); w; w = probeWindow(p, size)) {
            assert.equal((w.to - w.from) / size, w.slots);
            for (let k = 0; k < w.slots; k++) seen.push((w.from - first) / size + k);
            p = advanceProbe(p);
          }
          assert.equal(seen[0], hashSlot(label, count));
          assert.deepEqual(
            [...seen].sort((x, y) => x - y),
            Array.from({ length: count }, (_, k) => k),
          );
        },
      ),
    );
  });

  it('the keys a window reads (ending in it, and the first after) are all that can be in its way: its free slot is free against the whole index', () => {
    const pool: Pool = { start: 65536, end: 65536 + 64 * 4096 - 1, size: 4096 };
    const arbKey = fc.record({ s: fc.integer({ min: 60_000, max: 340_000 }), n: fc.integer({ min: 1, max: 9000 }) });
    fc.assert(
      fc.property(fc.array(arbKey, { maxLength: 40 }), fc.array(arbKey, { maxLength: 3 }), fc.string({ minLength: 1, maxLength: 4 }), (keys, taken, label) => {
        const p = startProbe(label, 4096, pool) as Probe;
        const w = probeWindow(p, 4096)!;
        // The index keeps its keys disjoint: overlapping ones are dropped.
        const index: IndexEntry[] = keys
          .map((k) => ({ start: k.s, end: k.s + k.n, label: 'o', valid: true }))
          .sort((a, b) => a.start - b.start)
          .filter((e, k, all) => k === 0 || all[k - 1].end <= e.start);
        const readIn = index.filter((e) => e.end > w.from && e.end <= w.to);
        const after = index.find((e) => e.end > w.to);
        const around = [...readIn, ...(after ? [after] : [])];
        const others = taken.map((t) => ({ start: t.s, end: t.s + t.n }));
        const r = freeSlot(p, 4096, around, others);
        const free = (s: number) => [...index, ...others].every((b) => b.end <= s || s + 4096 <= b.start);
        assert.equal(r ?? undefined, Array.from({ length: w.slots }, (_, k) => w.from + k * 4096).find(free));
      }),
    );
  });

  it("a write's compare reaches every index key another writer could make over what it claims (at most CHUNK ids, clear of every key that stays), and no key ending before it", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ s: fc.integer({ min: 0, max: 2 ** 32 - 2 ** 26 }), n: fc.integer({ min: 1, max: 2 * CHUNK }) }), { minLength: 1, maxLength: 3 }),
        fc.array(fc.record({ s: fc.integer({ min: 0, max: 2 ** 32 - 2 ** 26 }), n: fc.integer({ min: 1, max: CHUNK }) }), { maxLength: 30 }),
        fc.integer({ min: 0, max: 2 ** 32 - 2 }),
        fc.integer({ min: 1, max: CHUNK }),
        (raw, others, jStart, jLen) => {
          const claimed = mergeIntervals(raw.map((x) => ({ start: x.s, end: x.s + x.n })));
          const span = { start: claimed[0].start, end: claimed[claimed.length - 1].end };
          // The index as read: disjoint keys clear of the claim.
          const index: IndexEntry[] = others
            .map((o) => ({ start: o.s, end: o.s + o.n, label: 'o', valid: true, mod: '1' }))
            .filter((e) => e.end <= span.start || e.start >= span.end)
            .sort((a, b) => a.start - b.start)
            .filter((e, k, all) => k === 0 || all[k - 1].end <= e.start);
          const { fromEnd, toEnd, bound } = compareSpan(claimed, index);
          if (bound) assert.ok(index.includes(bound) && bound.start >= span.end && bound.end - 1 === toEnd);
          const j = { start: jStart, end: Math.min(jStart + jLen, 0xffffffff) };
          const clear = index.every((e) => e.end <= j.start || j.end <= e.start);
          if (clear && j.start < span.end && span.start < j.end) assert.ok(j.end >= fromEnd && j.end <= toEnd, `key ${j.start}-${j.end} in the compare`);
          if (j.end <= span.start) assert.ok(j.end < fromEnd, 'a key ending before it is not compared');
          for (const c of indexChunks(claimed)) assert.ok(c.end - c.start <= CHUNK && c.end >= fromEnd && c.end <= toEnd, 'its own keys are in the compare');
        },
      ),
    );
  });

  it("layout 1's document, whatever it holds, moves to keys whose index is disjoint and names only what its label's entry holds; the same keys every time", () => {
    const label = fc.constantFrom('a', 'b', 'c', 'constructor', '__proto__', 'not a label', 'host');
    const number = fc.oneof(fc.integer({ min: -5, max: 300_000 }), fc.constantFrom(0, 2 ** 32 - 1, 2 ** 32, 1.5), fc.constant(null));
    const range = fc.oneof(fc.record({ start: number, size: number, by: fc.constant('h'), at: fc.constant('t') }), fc.jsonValue({ maxDepth: 2 }));
    const stat = fc.oneof(
      fc.record({ intervals: fc.array(fc.record({ start: number, end: number }), { maxLength: 3 }), by: fc.constant('h'), at: fc.constant('t') }),
      fc.jsonValue({ maxDepth: 2 }),
    );
    const section = <T>(val: fc.Arbitrary<T>) =>
      fc.array(fc.tuple(label, val), { maxLength: 8 }).map((kv) => {
        const o: Record<string, unknown> = {};
        for (const [k, x] of kv) Object.defineProperty(o, k, { value: x, enumerable: true, writable: true, configurable: true });
        return o;
      });
    fc.assert(
      fc.property(fc.record({ version: fc.constant(1), ranges: fc.oneof(section(range), fc.jsonValue({ maxDepth: 1 })), statics: section(stat) }), (doc) => {
        const keys = migrationKeys(P, JSON.parse(JSON.stringify(doc)));
        assert.deepEqual(migrationKeys(P, JSON.parse(JSON.stringify(doc))), keys);
        const entries = new Map(
          keys
            .filter((k) => k.key.startsWith(`${P}labels/`))
            .map((k) => [k.key.slice(`${P}labels/`.length), parseEntry(k.key.slice(`${P}labels/`.length), k.value)]),
        );
        const index = keys.flatMap((k) => parseIndex(P, k.key, k.value) ?? []).sort((a, b) => a.start - b.start);
        assert.equal(new Set(keys.map((k) => k.key)).size, keys.length, 'no key twice');
        for (let k = 1; k < index.length; k++) assert.ok(index[k - 1].end <= index[k].start);
        for (const x of index) {
          const e = entries.get(x.label);
          assert.ok(x.valid && e && !('invalid' in e) && indexChunks(entryIntervals(e)).some((i) => i.start === x.start && i.end === x.end));
        }
        // Every valid entry is either fully indexed, or refused for an overlap with one that is.
        for (const [l, e] of entries)
          if (e && !('invalid' in e)) {
            const problem = indexProblem(l, entryIntervals(e), index);
            assert.ok(problem === null || /overlaps/.test(problem), `${l}: ${problem}`);
          }
      }),
      { numRuns: 300 },
    );
  });
});

// The shared pool's keys, pure: index keys sort as the ids they name, a label's search looks at
// every slot once (from its hash), a free slot is free, and layout 1's document, whatever it holds,
// becomes keys whose index is disjoint and names only what its entries hold.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { hashSlot, poolSlots } from '../../agent/coord/allocate.ts';
import {
  advanceProbe,
  entryIntervals,
  freeSlot,
  idsKey,
  idsKeyStart,
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
  it('index keys sort as the ids they name, and name them back', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffffffff }), (a, b) => {
        assert.equal(idsKeyStart(P, idsKey(P, a)), a);
        assert.equal(idsKey(P, a) < idsKey(P, b), a < b);
        assert.equal(idsKey(P, a) === idsKey(P, b), a === b);
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

  it('a free slot overlaps nothing read or taken, and nothing free before it in the window was passed over', () => {
    const pool: Pool = { start: 65536, end: 65536 + 64 * 4096 - 1, size: 4096 };
    const arbKey = fc.record({ s: fc.integer({ min: 60_000, max: 340_000 }), n: fc.integer({ min: 1, max: 9000 }) });
    fc.assert(
      fc.property(fc.array(arbKey, { maxLength: 40 }), fc.array(arbKey, { maxLength: 3 }), fc.string({ minLength: 1, maxLength: 4 }), (keys, taken, label) => {
        const p = startProbe(label, 4096, pool) as Probe;
        const w = probeWindow(p, 4096)!;
        const index: IndexEntry[] = keys.map((k) => ({ start: k.s, end: k.s + k.n, label: 'o', valid: true }));
        // What the window's read shows: the key before it, and those starting in it (the index keeps
        // its keys disjoint: overlapping ones are dropped).
        const disjoint = [...index].sort((a, b) => a.start - b.start).filter((e, k, all) => k === 0 || all[k - 1].end <= e.start);
        const prior = disjoint.filter((e) => e.start < w.from).at(-1) ?? null;
        const within = disjoint.filter((e) => e.start >= w.from && e.start < w.to);
        const others = taken.map((t) => ({ start: t.s, end: t.s + t.n }));
        const busy = [...(prior ? [prior] : []), ...within, ...others];
        const r = freeSlot(p, 4096, prior, within, others);
        const free = (s: number) => busy.every((b) => b.end <= s || s + 4096 <= b.start);
        const firstFree = Array.from({ length: w.slots }, (_, k) => w.from + k * 4096).find(free);
        assert.equal(r?.start, firstFree);
        if (r) {
          const expectAfter = [...(prior ? [prior] : []), ...within]
            .filter((e) => e.start < r.start)
            .reduce<number | null>((m, e) => Math.max(m ?? -1, e.start), null);
          assert.equal(r.after, expectAfter);
        }
      }),
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
          assert.ok(x.valid && e && !('invalid' in e) && entryIntervals(e).some((i) => i.start === x.start && i.end === x.end));
        }
        // Every valid entry is either fully indexed, or refused for an overlap with one that is.
        for (const [l, e] of entries)
          if (e && !('invalid' in e)) {
            const before = index.filter((x) => x.start < entryIntervals(e)[0].start).at(-1) ?? null;
            const within = index.filter((x) => x.start >= entryIntervals(e)[0].start && x.start < entryIntervals(e).at(-1)!.end);
            const problem = indexProblem(l, entryIntervals(e), before, within);
            assert.ok(problem === null || /overlaps/.test(problem), `${l}: ${problem}`);
          }
      }),
      { numRuns: 300 },
    );
  });
});

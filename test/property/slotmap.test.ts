// The slot map that guides a label's search in the shared pool (agent/coord/slotmap.ts), pure: the
// search is run here against an index as etcd would answer its reads. With a map that is right, the
// first read is of the slot a search through the whole index finds; with any map, however stale,
// the slot found is free in the index, and the pool is found full only when it is.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { allocateRange, mergeIntervals, poolSlots } from '../../agent/coord/allocate.ts';
import { startProbe, WINDOW_SLOTS } from '../../agent/coord/poolkeys.ts';
import type { IndexEntry, Probe } from '../../agent/coord/poolkeys.ts';
import { GUIDED_MISSES, newSearch, searchLook, searchStep, SlotMap } from '../../agent/coord/slotmap.ts';
import type { Search } from '../../agent/coord/slotmap.ts';
import type { Interval } from '../../config/extents.ts';
import type { Pool } from '../../config/types.ts';

const SIZE = 4096;

/** What a read of ids from..to-1 returns: the keys ending in them and the first ending after (index keys are disjoint). */
function read(index: readonly IndexEntry[], from: number, to: number): IndexEntry[] {
  const inside = index.filter((e) => e.end > from && e.end <= to);
  const after = index.filter((e) => e.end > to).sort((a, b) => a.end - b.end)[0];
  return after ? [...inside, after] : inside;
}

/** The search for `label` run to its end, one read a round: the slot, or null (found full), and the reads. */
function run(
  label: string,
  pool: Pool,
  index: readonly IndexEntry[],
  map: SlotMap | null,
  system: readonly Interval[],
): { slot: number | null; reads: number } {
  let s: Search = newSearch(startProbe(label, SIZE, pool) as Probe, SIZE, map);
  for (let reads = 1; reads < 10_000; reads++) {
    const look = searchLook(s, map, () => false);
    if (!look.window) return { slot: null, reads: reads - 1 };
    const step = searchStep(look.search, map, read(index, look.window.from, look.window.to), system);
    if ('slot' in step) return { slot: step.slot, reads };
    s = step.search;
  }
  throw new Error('the search never ended');
}

const arbPool = fc.integer({ min: 2, max: 700 }).map((slots): Pool => ({ start: 1_000_000, end: 1_000_000 + slots * SIZE - 1, size: SIZE }));
/** An index over the pool: taken slots, some runs of them one key (a static range), some keys of a few ids. */
const arbIndex = (pool: Pool) => {
  const { first, count } = poolSlots(pool, SIZE);
  return fc
    .array(fc.record({ k: fc.nat({ max: count - 1 }), run: fc.integer({ min: 1, max: 4 }), partial: fc.boolean() }), { maxLength: count })
    .map((keys) => {
      const ivs = keys.map(({ k, run, partial }) => ({
        start: first + k * SIZE + (partial ? 100 : 0),
        end: Math.min(first + (k + run) * SIZE, pool.end + 1) - (partial ? 100 : 0),
      }));
      return mergeIntervals(ivs).map((i): IndexEntry => ({ ...i, label: 'o', valid: true }));
    });
};
const free = (index: readonly Interval[], system: readonly Interval[], s: number) => [...index, ...system].every((b) => b.end <= s || s + SIZE <= b.start);

describe('property: the slot map guides a search in the shared pool', () => {
  it('with a map that is right, the first read is of the slot a search through the whole index finds: the first free one from the hash slot', () => {
    fc.assert(
      fc.property(
        arbPool.chain((pool) => fc.tuple(fc.constant(pool), arbIndex(pool))),
        fc.string({ minLength: 1, maxLength: 6 }),
        ([pool, index], label) => {
          const map = new SlotMap(pool, SIZE, index);
          const want = allocateRange(label, SIZE, pool, index);
          const got = run(label, pool, index, map, []);
          if (typeof want === 'string') assert.equal(got.slot, null, 'found full: the pool is');
          else assert.deepEqual(got, { slot: want, reads: 1 });
        },
      ),
    );
  });

  it('with any map, however stale, the slot found is free in the index and the pool is found full only when it is; the misses cost a bounded number of reads', () => {
    fc.assert(
      fc.property(
        arbPool.chain((pool) => fc.tuple(fc.constant(pool), arbIndex(pool), arbIndex(pool))),
        fc.string({ minLength: 1, maxLength: 6 }),
        fc.array(fc.record({ start: fc.integer({ min: 990_000, max: 4_000_000 }), n: fc.integer({ min: 1, max: 20_000 }) }), { maxLength: 3 }),
        ([pool, index, believed], label, sys) => {
          const system = mergeIntervals(sys.map((x) => ({ start: x.start, end: x.start + x.n })));
          const map = new SlotMap(pool, SIZE, believed);
          const { first, count } = poolSlots(pool, SIZE);
          const anyFree = Array.from({ length: count }, (_, k) => first + k * SIZE).some((s) => free(index, system, s));
          const got = run(label, pool, index, map, system);
          if (got.slot === null) assert.ok(!anyFree, 'found full while a slot is free');
          else {
            assert.ok(free(index, system, got.slot), `slot ${got.slot} is taken`);
            assert.equal((got.slot - first) % SIZE, 0, 'on a slot');
          }
          // At most: the guided misses, then every window from the hash slot (and one past the end before wrapping).
          assert.ok(got.reads <= GUIDED_MISSES + Math.ceil(count / WINDOW_SLOTS) + 1, `${got.reads} reads`);
        },
      ),
    );
  });

  it('a map that believes every slot free, in a pool full but for one: a few misses, then windows find it', () => {
    fc.assert(
      fc.property(arbPool, fc.nat(), fc.string({ minLength: 1, maxLength: 6 }), (pool, pick, label) => {
        const { first, count } = poolSlots(pool, SIZE);
        const hole = pick % count;
        // One key a slot, as auto ranges are: a read of one slot learns that slot and the next.
        const index = Array.from({ length: count }, (_, k) => k)
          .filter((k) => k !== hole)
          .map((k): IndexEntry => ({ start: first + k * SIZE, end: first + (k + 1) * SIZE, label: `o${k}`, valid: true }));
        const got = run(label, pool, index, new SlotMap(pool, SIZE), []);
        assert.equal(got.slot, first + hole * SIZE);
        assert.ok(got.reads <= GUIDED_MISSES + Math.ceil(count / WINDOW_SLOTS) + 1, `${got.reads} reads`);
      }),
    );
  });

  it('learns exactly the slots a read covers wholly, marks what a key touches, and frees what a forget frees', () => {
    const pool: Pool = { start: 0, end: 16 * SIZE - 1, size: SIZE };
    const map = new SlotMap(pool, SIZE, [{ start: 0, end: 16 * SIZE }]);
    assert.equal(
      map.nextFree(0, 16, () => false),
      -1,
      'all taken',
    );
    // A read of ids from the middle of slot 2 to the middle of slot 6, finding one key in slot 4: slots 3, 5 learned free.
    map.learn(2 * SIZE + 10, 6 * SIZE + 10, [{ start: 4 * SIZE + 1, end: 4 * SIZE + 2 }]);
    assert.deepEqual(
      Array.from({ length: 16 }, (_, k) => map.taken(k)),
      Array.from({ length: 16 }, (_, k) => k !== 3 && k !== 5),
    );
    assert.equal(
      map.nextFree(0, 16, (k) => k === 3),
      5,
      'skip is honoured',
    );
    map.mark({ start: 9 * SIZE, end: 11 * SIZE }, false);
    assert.equal(
      map.nextFree(6, 16, () => false),
      9,
    );
    map.mark({ start: 9 * SIZE + 4095, end: 9 * SIZE + 4097 }, true);
    assert.ok(map.taken(9) && map.taken(10), 'two ids on a border take both slots');
    assert.equal(
      map.nextFree(0, 16, () => false),
      3,
    );
    // Ids outside the pool touch nothing.
    map.mark({ start: 100 * SIZE, end: 101 * SIZE }, true);
    assert.equal(new SlotMap({ start: 5, end: 4, size: SIZE }, SIZE).count, 0);
  });
});

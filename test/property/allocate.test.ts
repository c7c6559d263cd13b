// Range allocation (SPEC §4): never overlapping, aligned, in the pool, the same for the same inputs.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { allocateRange, assignRanges, hashSlot, mergeIntervals, parseSubIdOwners, parseSubIds, poolSlots, rangeProblem } from '../../agent/coord/allocate.ts';
import type { Interval } from '../../config/extents.ts';
import type { ConfigError, ContextDef, Pool } from '../../config/types.ts';

const label = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,20}$/);
const pool: Pool = { start: 524288, end: 524288 + 64 * 65536 - 1, size: 65536 };
const arbTaken = fc
  .array(fc.record({ start: fc.integer({ min: 0, max: 6000000 }), len: fc.integer({ min: 1, max: 200000 }) }), { maxLength: 20 })
  .map((xs) => xs.map((x) => ({ start: x.start, end: x.start + x.len })));
const def = (l: string, size = 65536): ContextDef => ({
  label: l,
  file: `/etc/userns.d/${l}.conf`,
  parent: 'host',
  owner: { uid: 0, gid: 0, name: 'root' },
  uidMap: null,
  gidMap: null,
  autoSize: size,
  setgroups: 'allow',
  create: 'lazy',
  squash: { mode: 'root', anonuid: 65534, anongid: 65534 },
  access: { uids: [], gids: [] },
  ownerIds: 'delegated',
});
const overlaps = (a: Interval, b: Interval) => a.start < b.end && b.start < a.end;

describe('property: range allocation', () => {
  it('never overlaps the reserved ids or another allocation, and stays aligned inside the pool', () => {
    fc.assert(
      fc.property(fc.uniqueArray(label, { minLength: 1, maxLength: 30 }), arbTaken, (labels, reserved) => {
        const errors: ConfigError[] = [];
        const { starts } = assignRanges(
          labels.map((l) => def(l)),
          pool,
          new Map(),
          reserved,
          errors,
        );
        const got = [...starts.values()].map((s) => ({ start: s, end: s + 65536 }));
        for (const [i, a] of got.entries()) {
          assert.equal(a.start % 65536, 0);
          assert.ok(a.start >= pool.start && a.end - 1 <= pool.end);
          for (const r of reserved) assert.ok(!overlaps(a, r), `allocation ${a.start} overlaps reserved ${r.start}-${r.end}`);
          for (const b of got.slice(i + 1)) assert.ok(!overlaps(a, b));
        }
        assert.equal(starts.size + errors.length, labels.length, 'every context gets a range or an error');
      }),
    );
  });

  it("never hands out a top-level pin's ids, and asks the kernel only about pins whose ids are not reserved already", () => {
    const arbPin = fc.record({ slot: fc.integer({ min: 0, max: 63 }), len: fc.integer({ min: 1, max: 65536 }), top: fc.boolean() });
    fc.assert(
      fc.property(fc.uniqueArray(label, { minLength: 1, maxLength: 20 }), arbTaken, fc.array(arbPin, { maxLength: 20 }), (labels, reserved, arbPins) => {
        const asked: number[] = [];
        const pins = arbPins.map((p, i) => {
          const start = pool.start + p.slot * 65536;
          return { label: `pin${i}`, ids: [{ start, end: start + p.len }], topLevel: () => (asked.push(i), p.top) };
        });
        const { starts } = assignRanges(
          labels.map((l) => def(l)),
          pool,
          new Map(),
          reserved,
          [],
          reserved,
          pins,
        );
        const got = [...starts.values()].map((s) => ({ start: s, end: s + 65536 }));
        for (const [i, p] of pins.entries()) {
          if (arbPins[i].top) for (const a of got) assert.ok(!overlaps(a, p.ids[0]), `allocation ${a.start} takes the ids of top-level ${p.label}`);
          const covered = mergeIntervals(reserved).some((r) => r.start <= p.ids[0].start && r.end >= p.ids[0].end);
          if (covered) assert.ok(!asked.includes(i), `${p.label}'s ids are reserved already, yet the kernel was asked`);
        }
      }),
    );
  });

  it('gives the same label the same range for the same inputs', () => {
    fc.assert(
      fc.property(label, arbTaken, (l, reserved) => {
        const merged = mergeIntervals(reserved);
        assert.equal(allocateRange(l, 65536, pool, merged), allocateRange(l, 65536, pool, mergeIntervals([...reserved].reverse())));
      }),
    );
  });

  it('starts at the slot derived from the label when that slot is free', () => {
    fc.assert(
      fc.property(label, (l) => {
        const { first, count } = poolSlots(pool, 65536);
        assert.equal(allocateRange(l, 65536, pool, []), first + hashSlot(l, count) * 65536);
      }),
    );
  });

  it('keeps recorded allocations and never hands their ids to another label', () => {
    fc.assert(
      fc.property(fc.uniqueArray(label, { minLength: 2, maxLength: 10 }), (labels) => {
        const first = assignRanges(
          labels.map((l) => def(l)),
          pool,
          new Map(),
          [],
          [],
        );
        const recorded = new Map([...first.starts].map(([l, s]) => [l, { start: s, size: 65536 }]));
        // Drop the first context from the configuration: its range stays reserved.
        const again = assignRanges(
          labels.slice(1).map((l) => def(l)),
          pool,
          recorded,
          [],
          [],
        );
        assert.equal(again.fresh.size, 0);
        for (const l of labels.slice(1)) assert.equal(again.starts.get(l), first.starts.get(l));
        const newcomer = assignRanges([def('zz-new-label')], pool, recorded, [], []);
        const s = newcomer.starts.get('zz-new-label')!;
        for (const r of recorded.values()) assert.ok(!overlaps({ start: s, end: s + 65536 }, { start: r.start, end: r.start + r.size }));
      }),
    );
  });

  it('says the pool is exhausted when no slot is free', () => {
    const full = [{ start: 0, end: pool.end + 1 }];
    assert.match(String(allocateRange('x', 65536, pool, full)), /pool 524288-4718591 is exhausted/);
    const errors: ConfigError[] = [];
    assignRanges([def('x')], { start: 10, end: 20, size: 65536 }, new Map(), [], errors);
    assert.match(errors[0].message, /holds no aligned range of 65536 ids/);
  });

  it('reads /etc/subuid lines and skips malformed ones', () => {
    assert.deepEqual(parseSubIds('hpa:100000:65536\n# c\nbad line\nbob:165536:10\n'), [
      { start: 100000, end: 165536 },
      { start: 165536, end: 165546 },
    ]);
  });
});

describe('allocation: fixed labels get fixed slots (every host and every version agree)', () => {
  // A shared pool's hosts, and an agent after an upgrade, must compute the same slot for a label:
  // these literals are the contract (sha256 of the label, its first 32 bits big-endian, modulo the
  // slot count), not something computed with the functions under test.
  const pool = { start: 100000000, end: 199999999, size: 65536 };

  it('counts the aligned slots of a pool, the last one included', () => {
    assert.deepEqual(poolSlots(pool, 65536), { first: 100007936, count: 1525 });
    assert.deepEqual(
      poolSlots({ start: 65536, end: 4 * 65536 - 1, size: 65536 }, 65536),
      { first: 65536, count: 3 },
      "a slot ending on the pool's last id counts",
    );
    assert.deepEqual(poolSlots({ start: 65536, end: 4 * 65536 - 2, size: 65536 }, 65536), { first: 65536, count: 2 }, 'one id short: it does not');
    assert.deepEqual(
      poolSlots({ start: 65537, end: 4 * 65536, size: 65536 }, 65536),
      { first: 131072, count: 2 },
      'the first slot starts on the first aligned id',
    );
    assert.deepEqual(poolSlots({ start: 65537, end: 131071, size: 65536 }, 65536), { first: 131072, count: 0 });
  });

  it('puts each of these labels where it has always been', () => {
    for (const [label, slot, start] of [
      ['backups', 1355, 188809216],
      ['images', 748, 149028864],
      ['sandbox', 13, 100859904],
      ['hpa-backups', 1452, 195166208],
      ['a', 510, 133431296],
    ] as const) {
      assert.equal(hashSlot(label, 1525), slot, label);
      assert.equal(allocateRange(label, 65536, pool, []), start, label);
      assert.equal(start, 100007936 + slot * 65536);
    }
  });

  it('takes the next free slot after a taken one, wrapping at the end of the pool', () => {
    const taken = [{ start: 195166208, end: 195166208 + 65536 }];
    assert.equal(allocateRange('hpa-backups', 65536, pool, taken), 195166208 + 65536);
    const last = 100007936 + 1524 * 65536;
    const tail = [{ start: 195166208, end: last + 65536 }]; // from its slot to the pool's last slot
    assert.equal(allocateRange('hpa-backups', 65536, pool, tail), 100007936, 'wraps to the first slot');
  });
});

describe('allocation by example: what a range from outside is judged by, and the subordinate id files', () => {
  const p = { start: 65536, end: 65536 * 9 - 1, size: 65536 }; // slots at 65536 … 8*65536

  it('says why a range is not one this host would allocate, and accepts one that is', () => {
    assert.equal(rangeProblem({ start: 131072, size: 65536 }, 65536, p, []), null);
    assert.equal(rangeProblem({ start: 131072, size: 65536 }, 131072, p, []), 'it has 65536 ids where 131072 are asked for');
    assert.equal(rangeProblem({ start: 0, size: 65536 }, 65536, p, []), `it lies outside the pool 65536-${p.end}`);
    assert.equal(rangeProblem({ start: 8 * 65536 + 1, size: 65536 }, 65536, p, []), `it lies outside the pool 65536-${p.end}`, 'its last id one past the pool');
    assert.equal(rangeProblem({ start: 8 * 65536, size: 65536 }, 65536, p, []), null, "the last slot, ending on the pool's last id");
    assert.equal(
      rangeProblem({ start: 131073, size: 65536 }, 65536, { ...p, end: p.end + 10 }, []),
      "it does not start on one of the pool's slots of 65536 ids (from 65536)",
    );
    const reserved = mergeIntervals([{ start: 196607, end: 196610 }]);
    assert.equal(
      rangeProblem({ start: 131072, size: 65536 }, 65536, p, reserved),
      'it overlaps host ids 196607, which belong to the system (accounts, subordinate ids or static ranges)',
    );
    assert.equal(
      rangeProblem({ start: 131072, size: 65536 }, 65536, p, mergeIntervals([{ start: 196608, end: 196700 }])),
      null,
      'a reserved range that starts where it ends does not overlap',
    );
  });

  it('merges touching intervals, drops empty ones, and sorts', () => {
    assert.deepEqual(
      mergeIntervals([
        { start: 20, end: 30 },
        { start: 5, end: 5 },
        { start: 0, end: 10 },
        { start: 10, end: 15 },
        { start: 40, end: 39 },
      ]),
      [
        { start: 0, end: 15 },
        { start: 20, end: 30 },
      ],
    );
    assert.deepEqual(
      mergeIntervals([
        { start: 0, end: 100 },
        { start: 10, end: 20 },
      ]),
      [{ start: 0, end: 100 }],
      'one inside another',
    );
    assert.deepEqual(mergeIntervals([{ start: 50, end: 50 }]), [], 'an empty interval alone holds nothing');
  });

  it('reads /etc/subuid lines as newuidmap does, skipping anything malformed', () => {
    const text = [
      'hpa:100000:65536',
      '  1001:200000:10  ',
      '# a comment',
      'bad:1:0',
      'over:4294967290:10',
      'edge:4294967290:5',
      'top:4294967290:6',
      'x:1:2:3',
      'y:1',
      ':5:5',
      'z:1:2 trailing',
      '',
    ].join('\n');
    assert.deepEqual(parseSubIdOwners(text), [
      { owner: 'hpa', start: 100000, end: 165536 },
      { owner: '1001', start: 200000, end: 200010 },
      { owner: 'edge', start: 4294967290, end: 4294967295 },
    ]);
  });
});

describe('allocation by example: the slot edges and what assignRanges does with each kind of context', () => {
  const p = { start: 65536, end: 65536 * 3 - 1, size: 65536 }; // two slots: 65536 and 131072

  it('a taken range that starts where a slot ends leaves the slot free', () => {
    for (const l of ['a', 'b', 'c', 'd']) assert.equal(allocateRange(l, 65536, p, [{ start: 131072, end: 196608 }]), 65536, l);
  });

  it('a pool of one id holds one slot of one id', () => {
    assert.deepEqual(poolSlots({ start: 5, end: 5, size: 1 }, 1), { first: 5, count: 1 });
  });

  it('allocates only `range = auto` contexts, anew when the recorded size is not the size asked, and files an exhausted pool under [context] range', () => {
    const statik: ContextDef = {
      ...def('static'),
      uidMap: [{ inside: 0, outside: 65536, count: 10 }],
      gidMap: [{ inside: 0, outside: 65536, count: 10 }],
      autoSize: null,
    };
    const errors: ConfigError[] = [];
    const r = assignRanges([statik, def('grown', 65536)], { ...p, end: 65536 * 5 - 1 }, new Map([['grown', { start: 65536, size: 131072 }]]), [], errors);
    assert.deepEqual(errors, []);
    assert.deepEqual([...r.starts.keys()], ['grown'], 'a static context is given no range');
    assert.equal(r.fresh.get('grown')?.size, 65536, 'a recorded range of another size is replaced by a fresh one');
    assert.deepEqual([...r.kept.keys()], []);
    const full: ConfigError[] = [];
    assignRanges([def('x'), def('y'), def('z')], p, new Map(), [], full);
    assert.deepEqual(
      full.map((e) => [e.file, e.section, e.key, e.line]),
      [['/etc/userns.d/z.conf', 'context', 'range', null]],
    );
  });
});

// The shared pool document's decisions by example (issue 27: the mutants the property test let
// through): each conflict with the words an admin reads, the document read as untrusted input.
import assert from 'node:assert/strict';
import { decide, EMPTY_DOC, forget, importAllocations, parseDoc, serializeDoc } from '../../agent/coord/pooldoc.ts';
import type { PoolDoc } from '../../agent/coord/pooldoc.ts';

const POOL = { start: 1_048_576, end: 1_048_576 + 8 * 65536 - 1, size: 65536 }; // 8 slots: 16*65536 .. 23*65536
const slot = (k: number) => 1_048_576 + k * 65536;
const doc = (d: object): PoolDoc => {
  const r = parseDoc(JSON.stringify({ version: 1, ranges: {}, statics: {}, ...d }));
  assert.ok(typeof r !== 'string', r as string);
  return r;
};

describe('unit: the shared pool document, by example', () => {
  it('reads nothing as the empty document, and refuses text that is not a document of this version', () => {
    assert.deepEqual(parseDoc(null), EMPTY_DOC);
    assert.equal(parseDoc('{'), 'the shared pool document is not JSON');
    assert.match(parseDoc('{"version":2}') as string, /^the shared pool document is not version 1 of usernsd's \(written by a newer agent\?\)$/);
    assert.match(parseDoc('[]') as string, /not version 1/);
  });

  it('keeps an entry that is not valid aside (an interval that ends before it starts, a range with no size), and writes it back as it was', () => {
    const raw = {
      version: 1,
      ranges: { ok: { start: slot(0), size: 65536, by: 'a', at: 't' }, nosize: { start: slot(1), by: 'a', at: 't' } },
      statics: {
        backwards: { intervals: [{ start: 10, end: 10 }], by: 'b', at: 't' },
        good: {
          intervals: [
            { start: 10, end: 20 },
            { start: 20, end: 30 },
          ],
          by: 'b',
          at: 't',
        },
      },
    };
    const d = parseDoc(JSON.stringify(raw)) as PoolDoc;
    assert.deepEqual(Object.keys(d.ranges), ['ok']);
    assert.deepEqual(Object.keys(d.statics), ['good']);
    assert.deepEqual(d.statics.good.intervals, [{ start: 10, end: 30 }], 'touching intervals merged');
    assert.deepEqual([...d.invalid!.ranges.keys(), ...d.invalid!.statics.keys()], ['nosize', 'backwards']);
    assert.equal(d.invalid!.statics.get('backwards')!.why, 'intervals.0: an interval must end after it starts');
    assert.deepEqual(JSON.parse(serializeDoc(d)), {
      version: 1,
      ranges: { ok: raw.ranges.ok, nosize: raw.ranges.nosize },
      statics: { good: { intervals: [{ start: 10, end: 30 }], by: 'b', at: 't' }, backwards: raw.statics.backwards },
    });
    const asked = decide(d, [{ label: 'nosize', size: 65536 }], [], POOL, [], 'c', 'now');
    assert.deepEqual(
      asked.conflicts.map((c) => c.label),
      ['nosize'],
    );
    assert.match(
      asked.conflicts[0].message,
      /^the shared pool's entry for it is not valid \(.*\): it is used for nothing; fix it, or forget it \(usernsctl ranges forget nosize\) to have it allocated anew$/,
    );
  });

  it('refuses a label asked with another size than the pool has, naming both and who allocated it', () => {
    const d = doc({ ranges: { x: { start: slot(2), size: 65536, by: 'hostA', at: 't' } } });
    const r = decide(d, [{ label: 'x', size: 131072 }], [], { ...POOL, size: 131072 }, [], 'hostB', 'now');
    assert.deepEqual(r.decided.size, 0);
    assert.equal(r.next, null);
    assert.deepEqual(r.conflicts, [
      {
        label: 'x',
        message:
          'the shared pool has it with 65536 ids (allocated by hostA), this host asks for 131072: give it the same size everywhere, or forget it (usernsctl ranges forget x) to have it allocated anew',
      },
    ]);
  });

  it('judges a range another writer put in the pool as its own allocation: outside the pool, or over another label, is refused', () => {
    const outside = doc({ ranges: { far: { start: 65536, size: 65536, by: 'intruder', at: 't' } } });
    const r1 = decide(outside, [{ label: 'far', size: 65536 }], [], POOL, [], 'h', 'now');
    assert.match(
      r1.conflicts[0].message,
      /^the shared pool gives it 65536-131071 \(allocated by intruder\), which this host refuses: .*; fix the pool, or forget it \(usernsctl ranges forget far\) to have it allocated anew$/,
    );
    const over = doc({
      ranges: { a: { start: slot(3), size: 65536, by: 'h1', at: 't' } },
      statics: { s: { intervals: [{ start: slot(3) + 100, end: slot(3) + 200 }], by: 'h2', at: 't' } },
    });
    const r2 = decide(over, [{ label: 'a', size: 65536 }], [], POOL, [], 'h', 'now');
    assert.match(
      r2.conflicts[0].message,
      new RegExp(`which this host refuses: it overlaps s's static range ${slot(3) + 100}-${slot(3) + 199} \\(configured on h2\\)`),
    );
    assert.equal(r2.decided.size, 0);
  });

  it("keeps statics apart: another host's ids for the label, an overlap with a range, auto asked for a static label", () => {
    const d = doc({
      ranges: { r: { start: slot(4), size: 65536, by: 'h1', at: 't' } },
      statics: { s: { intervals: [{ start: 100, end: 200 }], by: 'h1', at: 't' } },
    });
    const r = decide(
      d,
      [{ label: 's', size: 65536 }],
      [
        { label: 's', intervals: [{ start: 100, end: 300 }] },
        { label: 't', intervals: [{ start: slot(4) + 10, end: slot(4) + 20 }] },
        { label: 'u', intervals: [{ start: 500, end: 600 }] },
      ],
      POOL,
      [],
      'h2',
      'now',
    );
    assert.deepEqual(r.conflicts, [
      { label: 's', message: 'h1 has it with ids 100-199, this host with 100-299: hosts that share storage must give a label the same ids' },
      {
        label: 't',
        message: `its ids ${slot(4) + 10}-${slot(4) + 19} overlap r's range ${slot(4)}-${slot(4) + 65535} (allocated by h1) in the shared pool: one of the two files must change`,
      },
      { label: 's', message: 'h1 configures it with static ids: a label is static everywhere or auto everywhere' },
    ]);
    assert.deepEqual(r.next?.statics.u, { intervals: [{ start: 500, end: 600 }], by: 'h2', at: 'now' }, 'the one claim that fits is registered');
    assert.deepEqual(
      decide(r.next, [], [{ label: 'u', intervals: [{ start: 500, end: 600 }] }], POOL, [], 'h3', 'later').next,
      null,
      'the same claim again changes nothing',
    );
  });

  it('says so when the pool is full, and gives nothing', () => {
    const full = doc({ ranges: Object.fromEntries(Array.from({ length: 8 }, (_, k) => [`l${k}`, { start: slot(k), size: 65536, by: 'h', at: 't' }])) });
    const r = decide(full, [{ label: 'more', size: 65536 }], [], POOL, [], 'h', 'now');
    assert.deepEqual(r.conflicts, [
      { label: 'more', message: `the pool ${POOL.start}-${POOL.end} is exhausted: no free range of 65536 ids is left (widen [pool] range or remove contexts)` },
    ]);
    assert.equal(r.next, null);
  });
});

describe('unit: the shared pool document, statics and upkeep (issue 27: what survived mutation)', () => {
  const two = doc({
    statics: {
      s: {
        intervals: [
          { start: 100, end: 200 },
          { start: 300, end: 400 },
        ],
        by: 'h1',
        at: 't',
      },
    },
    ranges: { r: { start: slot(4), size: 65536, by: 'h1', at: 't' } },
  });

  it('a static claim of two intervals the pool already has, in any order, is no change and no conflict', () => {
    const same = decide(
      two,
      [],
      [
        {
          label: 's',
          intervals: [
            { start: 300, end: 400 },
            { start: 100, end: 200 },
          ],
        },
      ],
      POOL,
      [],
      'h2',
      'now',
    );
    assert.deepEqual([same.next, same.conflicts], [null, []]);
  });

  it('a static claim that differs in one interval, or in how many, is a conflict naming every interval of both', () => {
    const claims = [
      [
        { start: 100, end: 200 },
        { start: 300, end: 500 },
      ], // the second ends elsewhere
      [
        { start: 100, end: 200 },
        { start: 310, end: 400 },
      ], // the second starts elsewhere
      [{ start: 100, end: 200 }], // one of the two
    ];
    const mine = ['100-199, 300-499', '100-199, 310-399', '100-199'];
    for (const [k, intervals] of claims.entries()) {
      const r = decide(two, [], [{ label: 's', intervals }], POOL, [], 'h2', 'now');
      assert.deepEqual(
        r.conflicts,
        [{ label: 's', message: `h1 has it with ids 100-199, 300-399, this host with ${mine[k]}: hosts that share storage must give a label the same ids` }],
        mine[k],
      );
      assert.equal(r.next, null);
    }
  });

  it('a static claim is refused when any one of its intervals overlaps another label, and every interval is named', () => {
    const r = decide(
      two,
      [],
      [
        {
          label: 't',
          intervals: [
            { start: 500, end: 600 },
            { start: slot(4) + 10, end: slot(4) + 20 },
          ],
        },
      ],
      POOL,
      [],
      'h2',
      'now',
    );
    assert.deepEqual(r.conflicts, [
      {
        label: 't',
        message: `its ids 500-599, ${slot(4) + 10}-${slot(4) + 19} overlap r's range ${slot(4)}-${slot(4) + 65535} (allocated by h1) in the shared pool: one of the two files must change`,
      },
    ]);
  });

  it('a static claim over an entry no host can read replaces it (the pool has no other way to repair a static), and the raw entry is not written back', () => {
    const broken = doc({ statics: { s: { intervals: 'garbage', by: 'h1', at: 't' } } });
    assert.deepEqual([...broken.invalid!.statics.keys()], ['s']);
    const r = decide(broken, [], [{ label: 's', intervals: [{ start: 100, end: 200 }] }], POOL, [], 'h2', 'now');
    assert.deepEqual(r.conflicts, []);
    assert.deepEqual((JSON.parse(serializeDoc(r.next!)) as { statics: unknown }).statics, {
      s: { intervals: [{ start: 100, end: 200 }], by: 'h2', at: 'now' },
    });
  });

  it('writes a document without entries aside as it is, whatever made it', () => {
    assert.equal(serializeDoc(EMPTY_DOC), '{"version":1,"ranges":{},"statics":{}}');
    const d = decide(EMPTY_DOC, [{ label: 'a', size: 65536 }], [], POOL, [], 'h', 'now').next!;
    assert.deepEqual(Object.keys((JSON.parse(serializeDoc(d)) as { ranges: object }).ranges), ['a']);
  });

  it("forget takes one label's range, valid or not, and keeps every other entry, the unreadable ones included", () => {
    const raw = {
      version: 1,
      ranges: { a: { start: slot(0), size: 65536, by: 'h', at: 't' }, b: { start: slot(1), size: 65536, by: 'h', at: 't' }, bad1: { start: -1 }, bad2: 'x' },
      statics: { s: { intervals: [{ start: 10, end: 20 }], by: 'h', at: 't' }, sbad: 7 },
    };
    const d = parseDoc(JSON.stringify(raw)) as PoolDoc;
    const kept = (x: PoolDoc) => JSON.parse(serializeDoc(x)) as typeof raw;
    const noA = forget(d, 'a')!;
    assert.deepEqual(kept(noA), { version: 1, ranges: { b: raw.ranges.b, bad1: raw.ranges.bad1, bad2: raw.ranges.bad2 }, statics: raw.statics });
    const noBad = forget(d, 'bad1')!;
    assert.ok(noBad, 'an entry that is not valid can be forgotten');
    assert.deepEqual(kept(noBad), { version: 1, ranges: { a: raw.ranges.a, b: raw.ranges.b, bad2: raw.ranges.bad2 }, statics: raw.statics });
    assert.equal(forget(d, 's'), null, 'forget is for ranges: a static stays');
    assert.equal(forget(EMPTY_DOC, 'a'), null);
  });

  it("import pushes this host's allocations, refuses the whole set on any conflict, in label order, and changes nothing it already has", () => {
    const d = doc({ ranges: { a: { start: slot(0), size: 65536, by: 'h1', at: 't' }, bad: 'x' } });
    assert.deepEqual(
      importAllocations(d, new Map([['a', { start: slot(0), size: 65536 }]]), 'h2', 'now'),
      { next: null, conflicts: [] },
      'the same allocation again is no change',
    );
    assert.deepEqual(importAllocations(d, new Map(), 'h2', 'now'), { next: null, conflicts: [] });
    const r = importAllocations(
      d,
      new Map([
        ['z', { start: slot(5), size: 65536 }],
        ['bad', { start: slot(6), size: 65536 }],
        ['a', { start: slot(1), size: 65536 }],
        ['b', { start: slot(0) + 65536 * 2, size: 131072 }],
      ]),
      'h2',
      'now',
    );
    assert.equal(r.next, null);
    assert.deepEqual(r.conflicts, [
      { label: 'a', message: `the shared pool has a at ${slot(0)}-${slot(0) + 65535} (allocated by h1), this host at ${slot(1)}-${slot(1) + 65535}` },
      {
        label: 'bad',
        message:
          'the shared pool\'s entry for bad is not valid (Invalid type: Expected Object but received "x"): forget it first (usernsctl ranges forget bad)',
      },
    ]);
    const sized = importAllocations(d, new Map([['a', { start: slot(0), size: 131072 }]]), 'h2', 'now');
    assert.match(sized.conflicts[0].message, new RegExp(`this host at ${slot(0)}-${slot(0) + 131071}$`), 'the same start with another size is a conflict');
    const ok = importAllocations(d, new Map([['c', { start: slot(3), size: 65536 }]]), 'h2', 'now');
    assert.deepEqual(ok.conflicts, []);
    assert.deepEqual(ok.next?.ranges.c, { start: slot(3), size: 65536, by: 'h2', at: 'now' });
    assert.deepEqual(ok.next?.ranges.a, d.ranges.a);
  });
});

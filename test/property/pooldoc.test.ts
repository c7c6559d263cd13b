// The shared pool's decisions, pure: hosts deciding in any order against one document (as the
// compare-and-swap serializes them) give a label one range, never overlap, and keep statics apart.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decide, EMPTY_DOC, forget, importAllocations } from '../../agent/coord/pooldoc.ts';
import type { PoolDoc } from '../../agent/coord/pooldoc.ts';
import type { Pool } from '../../config/types.ts';

const POOL: Pool = { start: 1_000_000, end: 1_000_000 + 64 * 4096 - 1, size: 4096 };
const LABELS = Array.from({ length: 24 }, (_, i) => `l${i}`);
const arbRequest = fc.record({ label: fc.constantFrom(...LABELS), size: fc.constantFrom(4096, 8192) });
const arbStatic = fc.record({ label: fc.constantFrom('s1', 's2', 's3'), start: fc.integer({ min: 1_000_000, max: 1_200_000 }), count: fc.integer({ min: 1, max: 9000 }) })
  .map((s) => ({ label: s.label, intervals: [{ start: s.start, end: s.start + s.count }] }));
/** One host's turn: what it asks for, and the statics it registers. */
const arbTurn = fc.record({ host: fc.constantFrom('a', 'b', 'c'), requests: fc.uniqueArray(arbRequest, { selector: (r) => r.label, maxLength: 10 }), statics: fc.uniqueArray(arbStatic, { selector: (s) => s.label, maxLength: 2 }) });

function intervals(d: PoolDoc) {
  return [...Object.entries(d.ranges).map(([l, r]) => ({ l, s: r.start, e: r.start + r.size })), ...Object.entries(d.statics).flatMap(([l, st]) => st.intervals.map((i) => ({ l, s: i.start, e: i.end })))].sort((x, y) => x.s - y.s);
}

describe('property: the shared pool document', () => {
  it('whatever order hosts decide in: one range per label, nothing overlapping, every answer the document\'s', () => {
    fc.assert(fc.property(fc.array(arbTurn, { maxLength: 12 }), (turns) => {
      let doc: PoolDoc = EMPTY_DOC;
      for (const t of turns) {
        const d = decide(doc, t.requests, t.statics, POOL, [], t.host, 'now');
        if (d.next) doc = d.next;
        // Every decided label is the document's, and a label asked with another size is a conflict, not a second range.
        for (const [label, a] of d.decided) assert.deepEqual(a, { start: doc.ranges[label]!.start, size: doc.ranges[label]!.size });
        for (const r of t.requests) assert.ok(d.decided.has(r.label) || d.conflicts.some((c) => c.label === r.label), `${r.label} is decided or refused`);
        const all = intervals(doc);
        for (let k = 1; k < all.length; k++) assert.ok(all[k - 1]!.e <= all[k]!.s, `${all[k - 1]!.l} overlaps ${all[k]!.l}`);
      }
    }));
  });

  it('the first candidate is the same on every host: a label asked alone twice gets one range, in one write', () => {
    fc.assert(fc.property(fc.constantFrom(...LABELS), (label) => {
      const first = decide(EMPTY_DOC, [{ label, size: 4096 }], [], POOL, [], 'a', 'now');
      const again = decide(first.next!, [{ label, size: 4096 }], [], POOL, [], 'b', 'later');
      assert.equal(again.next, null, 'nothing to write the second time');
      assert.deepEqual(again.decided.get(label), first.decided.get(label));
      assert.deepEqual(decide(EMPTY_DOC, [{ label, size: 4096 }], [], POOL, [], 'c', 'x').decided, first.decided, 'another host computes the same candidate');
    }));
  });

  it('forget frees a label\'s range for the next decision; import is all or nothing and names both sides of a conflict', () => {
    const d1 = decide(EMPTY_DOC, [{ label: 'x', size: 4096 }], [], POOL, [], 'a', 'now').next!;
    assert.equal(forget(d1, 'y'), null);
    const d2 = forget(d1, 'x')!;
    assert.equal(d2.ranges.x, undefined);
    const x = d1.ranges.x!;
    const clash = importAllocations(d1, new Map([['mine', { start: x.start, size: 4096 }], ['free', { start: 1_100_000 - (1_100_000 % 4096), size: 4096 }]]), 'b', 'now');
    assert.equal(clash.next, null);
    assert.match(clash.conflicts[0]!.message, /this host's mine at \d+-\d+ overlaps x's range/);
    const clean = importAllocations(d1, new Map([['free', { start: 1_100_000 - (1_100_000 % 4096), size: 4096 }]]), 'b', 'now');
    assert.ok(clean.next?.ranges.free);
  });
});

// The shared pool's decisions, pure: hosts deciding in any order against one document (as the
// compare-and-swap serializes them) give a label one range, never overlap, and keep statics apart.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decide, EMPTY_DOC, forget, importAllocations, parseDoc, serializeDoc } from '../../agent/coord/pooldoc.ts';
import { rangeProblem } from '../../agent/coord/allocate.ts';
import type { PoolDoc } from '../../agent/coord/pooldoc.ts';
import type { Pool } from '../../config/types.ts';

const POOL: Pool = { start: 1_000_000, end: 1_000_000 + 64 * 4096 - 1, size: 4096 };
const LABELS = Array.from({ length: 24 }, (_, i) => `l${i}`);
const arbRequest = fc.record({ label: fc.constantFrom(...LABELS), size: fc.constantFrom(4096, 8192) });
const arbStatic = fc
  .record({ label: fc.constantFrom('s1', 's2', 's3'), start: fc.integer({ min: 1_000_000, max: 1_200_000 }), count: fc.integer({ min: 1, max: 9000 }) })
  .map((s) => ({ label: s.label, intervals: [{ start: s.start, end: s.start + s.count }] }));
/** One host's turn: what it asks for, and the statics it registers. */
const arbTurn = fc.record({
  host: fc.constantFrom('a', 'b', 'c'),
  requests: fc.uniqueArray(arbRequest, { selector: (r) => r.label, maxLength: 10 }),
  statics: fc.uniqueArray(arbStatic, { selector: (s) => s.label, maxLength: 2 }),
});

function intervals(d: PoolDoc) {
  return [
    ...Object.entries(d.ranges).map(([l, r]) => ({ l, s: r.start, e: r.start + r.size })),
    ...Object.entries(d.statics).flatMap(([l, st]) => st.intervals.map((i) => ({ l, s: i.start, e: i.end }))),
  ].sort((x, y) => x.s - y.s);
}

describe('property: the shared pool document', () => {
  it("whatever order hosts decide in: one range per label, nothing overlapping, every answer the document's", () => {
    fc.assert(
      fc.property(fc.array(arbTurn, { maxLength: 12 }), (turns) => {
        let doc: PoolDoc = EMPTY_DOC;
        for (const [n, t] of turns.entries()) {
          const before = doc;
          const d = decide(doc, t.requests, t.statics, POOL, [], t.host, `turn ${n}`);
          if (d.next) doc = d.next;
          // Every decided label is the document's, and a label asked with another size is a conflict, not a second range.
          for (const [label, a] of d.decided) assert.deepEqual(a, { start: doc.ranges[label].start, size: doc.ranges[label].size });
          for (const r of t.requests)
            if (d.decided.has(r.label)) assert.equal(d.decided.get(r.label)!.size, r.size, `${r.label} asked with ${r.size} ids got another size`);
          // Statics: each claim is in the document as claimed, or refused; none already there is changed
          // (another host's is never overwritten), and a new one says who registered it, and when.
          for (const st of t.statics) {
            const claimed = st.intervals.map((i) => ({ ...i }));
            const held = doc.statics[st.label];
            const same = held !== undefined && JSON.stringify(held.intervals) === JSON.stringify(claimed);
            assert.ok(same || d.conflicts.some((c) => c.label === st.label), `static ${st.label} is registered as claimed or refused`);
            if (same && before.statics[st.label] === undefined) assert.deepEqual([held.by, held.at], [t.host, `turn ${n}`]);
          }
          for (const [label, old] of Object.entries(before.statics))
            assert.deepEqual(doc.statics[label], old, `static ${label} registered by ${old.by} is kept as it was`);
          for (const r of t.requests) assert.ok(d.decided.has(r.label) || d.conflicts.some((c) => c.label === r.label), `${r.label} is decided or refused`);
          const all = intervals(doc);
          for (let k = 1; k < all.length; k++) assert.ok(all[k - 1].e <= all[k].s, `${all[k - 1].l} overlaps ${all[k].l}`);
        }
      }),
    );
  });

  it('the first candidate is the same on every host: a label asked alone twice gets one range, in one write', () => {
    fc.assert(
      fc.property(fc.constantFrom(...LABELS), (label) => {
        const first = decide(EMPTY_DOC, [{ label, size: 4096 }], [], POOL, [], 'a', 'now');
        const again = decide(first.next!, [{ label, size: 4096 }], [], POOL, [], 'b', 'later');
        assert.equal(again.next, null, 'nothing to write the second time');
        assert.deepEqual(again.decided.get(label), first.decided.get(label));
        assert.deepEqual(decide(EMPTY_DOC, [{ label, size: 4096 }], [], POOL, [], 'c', 'x').decided, first.decided, 'another host computes the same candidate');
      }),
    );
  });

  it("forget frees a label's range for the next decision; import is all or nothing and names both sides of a conflict", () => {
    const d1 = decide(EMPTY_DOC, [{ label: 'x', size: 4096 }], [], POOL, [], 'a', 'now').next!;
    assert.equal(forget(d1, 'y'), null);
    const d2 = forget(d1, 'x')!;
    assert.equal(d2.ranges.x, undefined);
    const x = d1.ranges.x;
    const clash = importAllocations(
      d1,
      new Map([
        ['mine', { start: x.start, size: 4096 }],
        ['free', { start: 1_100_000 - (1_100_000 % 4096), size: 4096 }],
      ]),
      'b',
      'now',
    );
    assert.equal(clash.next, null);
    assert.match(clash.conflicts[0].message, /this host's mine at \d+-\d+ overlaps x's range/);
    const clean = importAllocations(d1, new Map([['free', { start: 1_100_000 - (1_100_000 % 4096), size: 4096 }]]), 'b', 'now');
    assert.ok(clean.next?.ranges.free);
  });

  it('a hostile document (any JSON under any label, prototype names included) never throws, and nothing decided is a range this host would not allocate', () => {
    const hostileLabel = fc.constantFrom('l0', 'l1', 'l2', 'constructor', '__proto__', 'toString', 'hasOwnProperty', '../x', '', 'host');
    const number = fc.oneof(
      fc.integer({ min: -5, max: 1_400_000 }),
      fc.constantFrom(0, 4096, 2 ** 32 - 1, 2 ** 32, 1.5, Number.MAX_SAFE_INTEGER),
      fc.constant(null),
      fc.string({ maxLength: 3 }),
    );
    const rangeValue = fc.oneof(
      fc.record({ start: number, size: number, by: fc.oneof(fc.string({ maxLength: 5 }), fc.constant(null)), at: fc.constant('t') }),
      fc.jsonValue({ maxDepth: 2 }),
    );
    const staticValue = fc.oneof(
      fc.record({ intervals: fc.array(fc.record({ start: number, end: number }), { maxLength: 3 }), by: fc.constant('h'), at: fc.constant('t') }),
      fc.jsonValue({ maxDepth: 2 }),
    );
    const entries = <T>(value: fc.Arbitrary<T>) =>
      fc.array(fc.tuple(hostileLabel, value), { maxLength: 8 }).map((kv) => {
        const o: Record<string, unknown> = {};
        for (const [k, val] of kv) Object.defineProperty(o, k, { value: val, enumerable: true, writable: true, configurable: true });
        return o;
      });
    const arbDoc = fc.record({
      version: fc.constantFrom(1, 1, 1, 2, null),
      ranges: fc.oneof(entries(rangeValue), fc.jsonValue({ maxDepth: 1 })),
      statics: fc.oneof(entries(staticValue), fc.jsonValue({ maxDepth: 1 })),
    });
    const reserved = [{ start: 1_010_000, end: 1_010_001 }];
    fc.assert(
      fc.property(
        arbDoc,
        fc.uniqueArray(fc.record({ label: hostileLabel, size: fc.constant(4096) }), { selector: (r) => r.label, maxLength: 6 }),
        (raw, requests) => {
          const doc = parseDoc(JSON.stringify(raw));
          if (typeof doc === 'string') {
            assert.notEqual(raw.version, 1, 'only another version refuses the whole document');
            return;
          }
          const d = decide(
            doc,
            requests.filter((r) => r.label !== '' && r.label !== '../x' && r.label !== 'host'),
            [],
            POOL,
            reserved,
            'me',
            'now',
          );
          const taken: { s: number; e: number; l: string }[] = [];
          for (const [label, a] of d.decided) {
            assert.equal(rangeProblem(a, 4096, POOL, reserved), null, `${label}: ${JSON.stringify(a)}`);
            for (const t of taken) assert.ok(a.start + a.size <= t.s || t.e <= a.start, `${label} overlaps ${t.l}`);
            taken.push({ s: a.start, e: a.start + a.size, l: label });
          }
          // What this host could not read goes back as it was.
          const again = parseDoc(serializeDoc(d.next ?? doc));
          assert.ok(typeof again !== 'string');
          assert.deepEqual([...(again.invalid?.ranges.keys() ?? [])].sort(), [...(doc.invalid?.ranges.keys() ?? [])].sort());
        },
      ),
      { numRuns: 500 },
    );
  });
});

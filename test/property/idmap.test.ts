// SPEC §4 mapping and squash, as properties over random contexts, and the NFS rules as examples.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { chainToHost, HOST_VIEW, makeView, mapId, mapIds, toHost } from '../../agent/idmap.ts';
import type { MapView } from '../../agent/idmap.ts';
import type { IdMap, SquashMode } from '../../config/types.ts';
import { arbIdNear, arbMap, oracleLookup } from '../helpers/arbitraries.ts';

const OVERFLOW = { uid: 65534, gid: 65534 };
// Host ids from 100000 up: the overflow id 65534 is never a mapped host id, as on a real system.
const view = (label: string, uid: IdMap, gid: IdMap, mode: SquashMode = 'none', anonuid = 65534, anongid = 65534): MapView =>
  makeView(label, { mode, anonuid, anongid }, uid, gid);

/** Two contexts that share some host ids: B's map is built over pieces of A's host ranges. */
const arbPair = fc
  .tuple(arbMap(), arbMap())
  .chain(([a, b]) =>
    fc
      .subarray([...a])
      .map(
        (shared) =>
          [
            a,
            [
              ...b.map((e) => ({ ...e, outside: e.outside + 2000000 })),
              ...shared.map((e, i) => ({ inside: 1000000 + i * 10000, outside: e.outside, count: Math.min(e.count, 10000) })),
            ],
          ] as const,
      ),
  );

describe('property: mapping between contexts', () => {
  it('maps an id to host exactly as the extents say (inside -> outside, never the reverse)', () => {
    fc.assert(
      fc.property(
        arbMap().chain((m) => fc.tuple(fc.constant(m), arbIdNear(m, 'inside'))),
        ([m, id]) => {
          const a = view('a', m, m);
          assert.equal(mapId(a, HOST_VIEW, 'uid', id, OVERFLOW), oracleLookup(m, 'inside', id) ?? OVERFLOW.uid);
          assert.equal(toHost(a, 'uid', id), oracleLookup(m, 'inside', id));
        },
      ),
    );
  });

  it('round trip A -> B -> A with mode none returns the id when both map it', () => {
    fc.assert(
      fc.property(
        arbPair.chain(([a, b]) => fc.tuple(fc.constant(a), fc.constant(b), arbIdNear(a, 'inside'))),
        ([am, bm, id]) => {
          const A = view('a', am, am);
          const B = view('b', bm, bm);
          const host = oracleLookup(am, 'inside', id);
          fc.pre(host !== null && oracleLookup(bm, 'outside', host) !== null);
          const there = mapId(A, B, 'uid', id, OVERFLOW);
          assert.equal(there, oracleLookup(bm, 'outside', host));
          assert.equal(mapId(B, A, 'uid', there, OVERFLOW), id);
        },
      ),
    );
  });

  it('A -> B equals A -> host -> B, for every squash mode', () => {
    const arb = arbPair.chain(([a, b]) =>
      fc.tuple(fc.constant(a), fc.constant(b), arbIdNear(a, 'inside'), fc.constantFrom<SquashMode>('none', 'root', 'all'), fc.integer({ min: 0, max: 300000 })),
    );
    fc.assert(
      fc.property(arb, ([am, bm, id, mode, anon]) => {
        const A = view('a', am, am, mode, anon, anon);
        const B = view('b', bm, bm);
        for (const kind of ['uid', 'gid'] as const) {
          assert.equal(mapId(A, B, kind, id, OVERFLOW), mapId(HOST_VIEW, B, kind, mapId(A, HOST_VIEW, kind, id, OVERFLOW), OVERFLOW));
        }
      }),
    );
  });

  it("under mode root, id 0 of A comes out as B's 0 only when anonuid maps there; other ids are untouched", () => {
    const arb = arbPair.chain(([a, b]) => fc.tuple(fc.constant(a), fc.constant(b), arbIdNear(a, 'inside'), fc.integer({ min: 0, max: 3000000 })));
    fc.assert(
      fc.property(arb, ([am, bm, id, anon]) => {
        const A = view('a', am, am, 'root', anon, anon);
        const Anone = view('a', am, am, 'none');
        const B = view('b', bm, bm);
        const zero = mapId(A, B, 'uid', 0, OVERFLOW);
        if (zero === 0) assert.equal(oracleLookup(bm, 'outside', anon), 0);
        assert.equal(zero, oracleLookup(bm, 'outside', anon) ?? OVERFLOW.uid);
        if (id !== 0) assert.equal(mapId(A, B, 'uid', id, OVERFLOW), mapId(Anone, B, 'uid', id, OVERFLOW));
      }),
    );
  });

  it("under mode all, every uid comes out as anonuid's image and every gid as anongid's", () => {
    const arb = arbPair.chain(([a, b]) =>
      fc.tuple(fc.constant(a), fc.constant(b), fc.array(fc.nat({ max: 0xfffffffe }), { maxLength: 20 }), fc.integer({ min: 0, max: 3000000 })),
    );
    fc.assert(
      fc.property(arb, ([am, bm, ids, anon]) => {
        const A = view('a', am, am, 'all', anon, anon + 1);
        const B = view('b', bm, bm);
        for (const out of mapIds(A, B, 'uid', ids, OVERFLOW)) assert.equal(out, oracleLookup(bm, 'outside', anon) ?? OVERFLOW.uid);
        for (const out of mapIds(A, B, 'gid', ids, OVERFLOW)) assert.equal(out, oracleLookup(bm, 'outside', anon + 1) ?? OVERFLOW.gid);
      }),
    );
  });

  it('is total and deterministic: always an id, the same one every time', () => {
    const arb = fc.tuple(arbMap(), arbMap(), fc.nat({ max: 0xfffffffe }), fc.constantFrom<SquashMode>('none', 'root', 'all'));
    fc.assert(
      fc.property(arb, ([am, bm, id, mode]) => {
        const A = view('a', am, am, mode);
        const B = view('b', bm, bm);
        const r = mapId(A, B, 'gid', id, OVERFLOW);
        assert.ok(Number.isInteger(r) && r >= 0 && r < 0xffffffff);
        assert.equal(mapId(A, B, 'gid', id, OVERFLOW), r);
      }),
    );
  });

  it('a chain of maps composes like following each map in turn', () => {
    const arb = fc
      .tuple(arbMap({ outsideBase: 0, maxCount: 2000 }), arbMap({ insideBase: 0, maxCount: 8000 }))
      .chain(([c, p]) => fc.tuple(fc.constant(c), fc.constant(p), arbIdNear(c, 'inside')));
    fc.assert(
      fc.property(arb, ([child, parent, id]) => {
        const mid = oracleLookup(child, 'inside', id);
        assert.equal(oracleLookup(chainToHost([child, parent]), 'inside', id), mid === null ? null : oracleLookup(parent, 'inside', mid));
      }),
    );
  });
});

describe('idmap: the NFS squash rules, spelled out', () => {
  // A: container ids 0..65535 at host 100000; B: the backup operator's context at host 200000.
  const am: IdMap = [{ inside: 0, outside: 100000, count: 65536 }];
  const bm: IdMap = [{ inside: 0, outside: 200000, count: 65536 }];
  const B = view('b', bm, bm);

  it('root_squash replaces uid 0 and gid 0 independently, and nothing else', () => {
    const A = view('a', am, am, 'root', 200000 + 34, 200000 + 35); // anon = B's 34 / 35
    assert.deepEqual(mapIds(A, B, 'uid', [0, 1000], OVERFLOW), [34, 65534], 'uid 0 squashed; 1000 is host 101000, which B cannot see');
    assert.deepEqual(mapIds(A, HOST_VIEW, 'uid', [0, 1000], OVERFLOW), [200034, 101000]);
    assert.deepEqual(mapIds(A, HOST_VIEW, 'gid', [5, 0, 7, 0], OVERFLOW), [100005, 200035, 100007, 200035], 'supplementary gid 0 replaced in place');
  });

  it('all_squash replaces every id and every supplementary gid', () => {
    const A = view('a', am, am, 'all', 200034, 200035);
    assert.deepEqual(mapIds(A, B, 'uid', [0, 1, 65535, 4000000000], OVERFLOW), [34, 34, 34, 34]);
    assert.deepEqual(mapIds(A, B, 'gid', [0, 100, 200], OVERFLOW), [35, 35, 35]);
  });

  it('no_root_squash passes ids through', () => {
    const A = view('a', am, am, 'none');
    assert.deepEqual(mapIds(A, HOST_VIEW, 'uid', [0, 1, 65535], OVERFLOW), [100000, 100001, 165535]);
  });

  it('unmappable ids become the overflow id, and the same context leaves ids alone', () => {
    const A = view('a', am, am, 'none');
    assert.deepEqual(mapIds(A, B, 'uid', [0, 65536], { uid: 99, gid: 98 }), [99, 99]);
    // One past the end of a's range, seen from the host, which sees every id: nobody, not host 165536.
    assert.deepEqual(mapIds(A, HOST_VIEW, 'uid', [65535, 65536], { uid: 99, gid: 98 }), [165535, 99]);
    assert.deepEqual(mapIds(HOST_VIEW, A, 'gid', [5, 100005], { uid: 99, gid: 98 }), [98, 5]);
    assert.deepEqual(mapIds(A, A, 'uid', [0, 4000000000], OVERFLOW), [0, 4000000000]);
  });

  it('setting anonuid alone squashes nothing (mode none)', () => {
    const A = view('a', am, am, 'none', 12345, 12345);
    assert.equal(mapId(A, HOST_VIEW, 'uid', 0, OVERFLOW), 100000);
  });
});

// SPEC §7 views: the idmap a view carries, derived by the pure core, as properties over random
// contexts (nested ones through their chain), and the bindfs options where the kernel cannot idmap.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { bindfsOptions, chainToHost, viewPlan, withoutInside } from '../../agent/idmap.ts';
import type { ViewMaps, ViewMode } from '../../agent/idmap.ts';
import type { IdMap, SquashMode } from '../../config/types.ts';
import { arbIdNear, arbMap, oracleLookup } from '../helpers/arbitraries.ts';

const squash = (mode: SquashMode, anon = 65534) => ({ mode, anonuid: anon, anongid: anon });
const arbMode = fc.constantFrom<ViewMode>('identity', 'foreign');
const arbSquash = fc.constantFrom<SquashMode>('none', 'root', 'all');
/** Most contexts map on-disk 0 (their root): shift a map so its lowest inside id is 0, most of the time. */
const fromZero = (m: IdMap) =>
  fc.boolean().map((shift) => {
    const low = Math.min(...m.map((e) => e.inside));
    return shift ? m : m.map((e) => ({ ...e, inside: e.inside - low }));
  });
const arbHost = fc.tuple(arbMap().chain(fromZero), arbMap({ outsideBase: 300000 }).chain(fromZero)).map(([uid, gid]): ViewMaps => ({ uid, gid }));

/** Disjoint on both sides: no two on-disk ids show as one host id, no on-disk id shows twice. */
function oneToOne(map: IdMap): boolean {
  for (const side of ['inside', 'outside'] as const) {
    const sorted = [...map].sort((a, b) => a[side] - b[side]);
    for (let i = 1; i < sorted.length; i++) if (sorted[i - 1][side] + sorted[i - 1].count > sorted[i][side]) return false;
  }
  return map.every((e) => e.count > 0);
}

describe('property: the idmap of a view', () => {
  it('is one-to-one for every mode and squash, or not an idmap at all (all squash, foreign)', () => {
    fc.assert(
      fc.property(arbHost, arbMode, arbSquash, (host, mode, sq) => {
        const plan = viewPlan(host, squash(sq), mode);
        if (plan.kind === 'force') {
          assert.equal(mode, 'foreign');
          assert.equal(sq, 'all');
          return;
        }
        assert.ok(oneToOne(plan.maps.uid) && oneToOne(plan.maps.gid));
      }),
    );
  });

  it("identity is the context's own map, whatever its squash", () => {
    fc.assert(
      fc.property(arbHost, arbSquash, (host, sq) => {
        const plan = viewPlan(host, squash(sq), 'identity');
        assert.deepEqual(plan, { kind: 'idmap', maps: host });
      }),
    );
  });

  it('foreign shows on-disk 0 only when squash is none, and then as the map says; never host 0 otherwise', () => {
    fc.assert(
      fc.property(arbHost, arbSquash, (host, sq) => {
        const plan = viewPlan(host, squash(sq), 'foreign');
        if (plan.kind === 'force') return; // every file shows as anon: nothing shows as host 0 unless anon is 0
        for (const kind of ['uid', 'gid'] as const) {
          const zero = oracleLookup(plan.maps[kind], 'inside', 0);
          if (sq === 'none') assert.equal(zero, oracleLookup(host[kind], 'inside', 0));
          else assert.equal(zero, null, 'root squash leaves on-disk 0 unmapped (shown as the overflow id, never writable)');
        }
      }),
    );
  });

  it("maps an on-disk id to the context's host id or not at all: an id outside its map is never mapped", () => {
    const arb = arbHost.chain((h) => fc.tuple(fc.constant(h), arbIdNear(h.uid, 'inside'), arbMode, arbSquash));
    fc.assert(
      fc.property(arb, ([host, id, mode, sq]) => {
        const plan = viewPlan(host, squash(sq), mode);
        if (plan.kind === 'force') return;
        const shown = oracleLookup(plan.maps.uid, 'inside', id);
        const own = oracleLookup(host.uid, 'inside', id);
        if (own === null) assert.equal(shown, null);
        else if (!(mode === 'foreign' && sq === 'root' && id === 0)) assert.equal(shown, own);
      }),
    );
  });

  it('of a nested context composes through its chain: on-disk u shows as parent(child(u))', () => {
    // The child's outside ids are the parent's inside ids: build it over the parent's inside range.
    const arb = arbMap({ insideBase: 0, outsideBase: 100000 }).chain((parent) => {
      const e = parent[0];
      const child = fc.integer({ min: 1, max: e.count }).map((count): IdMap => [{ inside: 0, outside: e.inside, count }]);
      return fc.tuple(fc.constant(parent), child, fc.integer({ min: 0, max: e.count + 10 }), arbMode, arbSquash);
    });
    fc.assert(
      fc.property(arb, ([parent, child, id, mode, sq]) => {
        const host = chainToHost([child, parent]);
        const plan = viewPlan({ uid: host, gid: host }, squash(sq), mode);
        if (plan.kind === 'force') return;
        const viaChain = (() => {
          const p = oracleLookup(child, 'inside', id);
          return p === null ? null : oracleLookup(parent, 'inside', p);
        })();
        const shown = oracleLookup(plan.maps.uid, 'inside', id);
        if (mode === 'foreign' && sq === 'root' && id === 0) assert.equal(shown, null);
        else assert.equal(shown, viaChain);
      }),
    );
  });

  it('withoutInside removes exactly one id and keeps the rest', () => {
    const arb = arbMap().chain((m) => fc.tuple(fc.constant(m), arbIdNear(m, 'inside'), arbIdNear(m, 'inside')));
    fc.assert(
      fc.property(arb, ([m, cut, probe]) => {
        const out = withoutInside(m, cut);
        assert.ok(out.length <= m.length + 1);
        assert.equal(oracleLookup(out, 'inside', probe), probe === cut ? null : oracleLookup(m, 'inside', probe));
      }),
    );
  });

  it('bindfs gets an offset only when it is the whole map (one extent from 0), and is always read-only', () => {
    fc.assert(
      fc.property(arbHost, arbMode, arbSquash, fc.integer({ min: 0, max: 70000 }), (host, mode, sq, id) => {
        const plan = viewPlan(host, squash(sq), mode);
        const opts = bindfsOptions(plan);
        if (opts === null) {
          assert.equal(plan.kind, 'idmap');
          return;
        }
        assert.deepEqual(opts.slice(0, 2), ['-o', 'ro']);
        if (plan.kind === 'force') {
          assert.deepEqual(opts.slice(2), [`--force-user=${plan.uid}`, `--force-group=${plan.gid}`]);
          return;
        }
        const offset = Number(opts.find((o) => o.startsWith('--uid-offset='))!.split('=')[1]);
        assert.equal(plan.maps.uid.length, 1);
        const covered = oracleLookup(plan.maps.uid, 'inside', id);
        if (covered !== null) assert.equal(id + offset, covered, 'the offset shows every mapped id as the map does');
      }),
    );
  });

  it("the seed 002 backup: identity shows raw ids as the context's host ids; foreign hides root", () => {
    const host = { uid: [{ inside: 0, outside: 2100000, count: 65536 }], gid: [{ inside: 0, outside: 2100000, count: 65536 }] };
    const identity = viewPlan(host, squash('root'), 'identity');
    const foreign = viewPlan(host, squash('root'), 'foreign');
    assert.deepEqual(identity, { kind: 'idmap', maps: host });
    assert.deepEqual(foreign, {
      kind: 'idmap',
      maps: { uid: [{ inside: 1, outside: 2100001, count: 65535 }], gid: [{ inside: 1, outside: 2100001, count: 65535 }] },
    });
    assert.deepEqual(bindfsOptions(identity), ['-o', 'ro', '--uid-offset=2100000', '--gid-offset=2100000']);
    assert.equal(bindfsOptions(foreign), null);
    assert.deepEqual(viewPlan(host, squash('all', 65533), 'foreign'), { kind: 'force', uid: 65533, gid: 65533 });
  });
});

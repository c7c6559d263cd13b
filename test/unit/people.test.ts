// Who a caller counts as for the limits (agent/people.ts): an owner and every host id its contexts map.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { People } from '../../agent/people.ts';
import type { Context } from '../../config/types.ts';

const ctx = (label: string, owner: number, start: number, count: number, parent = 'host'): Context => ({
  label,
  file: `/etc/userns.d/${label}.conf`,
  parent,
  owner: { uid: owner, gid: owner, name: null },
  uidMap: [{ inside: 0, outside: start, count }],
  gidMap: [{ inside: 0, outside: start, count }],
  autoSize: null,
  setgroups: 'deny',
  create: 'lazy',
  squash: { mode: 'root', anonuid: 65534, anongid: 65534 },
  access: { uids: [], gids: [] },
  ownerIds: 'delegated',
});

describe('people: the limits count persons', () => {
  it("a uid at either end of a context's range is its owner; one past either end is itself; a root-owned context is one person of its own", () => {
    const p = new People();
    p.rebuild([ctx('a', 1000, 100000, 65536), ctx('r', 0, 300000, 10), ctx('kid', 0, 5, 5, 'a')]);
    for (const uid of [100000, 165535]) assert.equal(p.of(uid), 'uid 1000');
    for (const uid of [99999, 165536]) assert.equal(p.of(uid), `uid ${uid}`);
    assert.equal(p.of(300009), 'context r');
    assert.equal(p.of(300010), 'uid 300010');
    assert.equal(p.of(0), 'uid 0');
    assert.equal(p.of(5), 'uid 5', "a nested context's map is in its parent's ids, not host ids");
    assert.match(p.describe(100005), /^uid 100005 \(counted as uid 1000: the owner of the context that maps it\)$/);
    assert.equal(p.describe(4242), 'uid 4242');
  });

  it('any uid counts as the owner of the one disjoint range that holds it, else as itself (fast-check)', () => {
    const arb = fc
      .uniqueArray(
        fc.record({ start: fc.integer({ min: 1, max: 2 ** 31 }), count: fc.integer({ min: 1, max: 1 << 20 }), owner: fc.integer({ min: 0, max: 2000 }) }),
        { selector: (r) => r.start, maxLength: 12 },
      )
      .map((rs) => {
        // Disjoint, as configuration guarantees for top-level contexts: each kept range starts past the last kept one.
        const kept: typeof rs = [];
        for (const r of rs.sort((a, b) => a.start - b.start))
          if (kept.length === 0 || kept[kept.length - 1].start + kept[kept.length - 1].count <= r.start) kept.push(r);
        return kept;
      });
    fc.assert(
      fc.property(arb, fc.array(fc.integer({ min: 0, max: 2 ** 32 - 2 }), { maxLength: 30 }), (ranges, probes) => {
        const p = new People();
        p.rebuild(ranges.map((r, i) => ctx(`c${i}`, r.owner, r.start, r.count)));
        const edges = ranges.flatMap((r) => [r.start - 1, r.start, r.start + r.count - 1, r.start + r.count]);
        for (const uid of [...probes, ...edges]) {
          const i = ranges.findIndex((r) => r.start <= uid && uid < r.start + r.count);
          const r = ranges[i];
          assert.equal(p.of(uid), r === undefined ? `uid ${uid}` : r.owner !== 0 ? `uid ${r.owner}` : `context c${i}`);
        }
      }),
    );
  });

  it('followed change by change, counts everyone as a rebuild from the contexts in force would (model-based, fast-check)', () => {
    // A history of reloads: each sets or removes a few contexts (top-level or nested, in a slot of
    // its own so top-level ranges stay disjoint) in a copy of the map in force, as the registry does.
    const SLOT = 1 << 20;
    const change = fc.record({
      label: fc.integer({ min: 0, max: 5 }),
      remove: fc.boolean(),
      offset: fc.integer({ min: 1, max: SLOT / 2 }),
      count: fc.integer({ min: 1, max: SLOT / 2 - 1 }),
      owner: fc.integer({ min: 0, max: 3 }),
      nested: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(fc.array(change, { minLength: 1, maxLength: 4 }), { maxLength: 12 }), (reloads) => {
        const followed = new People();
        let inForce = new Map<string, Context>();
        followed.rebuild(inForce.values());
        const ever: Context[] = []; // the edges of every range ever in force are probed: a range left behind shows there
        for (const changes of reloads) {
          const next = new Map(inForce);
          for (const c of changes) {
            const label = `c${c.label}`;
            if (c.remove) next.delete(label);
            else {
              const made = ctx(label, c.owner, (c.label + 1) * SLOT + c.offset, c.count, c.nested ? 'c9' : 'host');
              next.set(label, made);
              ever.push(made);
            }
          }
          followed.follow(inForce, next, new Set(changes.map((c) => `c${c.label}`)));
          inForce = next;
          const rebuilt = new People();
          rebuilt.rebuild(inForce.values());
          const edges = ever.flatMap((c) => c.uidMap.flatMap((e) => [e.outside - 1, e.outside, e.outside + e.count - 1, e.outside + e.count]));
          for (const uid of [0, SLOT, 7 * SLOT + 1, ...edges]) assert.equal(followed.of(uid), rebuilt.of(uid), `uid ${uid}`);
        }
      }),
      { numRuns: 300 },
    );
  });
});

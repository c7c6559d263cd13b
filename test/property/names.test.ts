// Names for mapped ids (userdb): LABEL.N both ways over random disjoint contexts, and the Varlink
// answers nss-systemd gets, refusals included.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { NameIndex, idName, parseIdName } from '../../agent/names.ts';
import { answer } from '../../agent/wire/userdb.ts';
import { lookup, sortBy } from '../../config/extents.ts';
import type { Peer } from '../../agent/wire/peer.ts';
import type { IdMap } from '../../config/types.ts';
import { arbIdNear, arbMap, oracleLookup } from '../helpers/arbitraries.ts';

/**
 * Up to four top-level contexts whose host ranges are disjoint (each its own outside base), each
 * with its own gid map (another shape, and another outside base, from its uid map): a uid looked
 * up as a gid, or the other way round, is then wrong, not accidentally right.
 */
const arbContexts = fc
  .array(fc.tuple(arbMap({ maxExtents: 3, maxCount: 3000 }), arbMap({ maxExtents: 3, maxCount: 3000 })), { minLength: 1, maxLength: 4 })
  .map((maps) =>
    maps.map(([um, gm], i) => {
      const shift = (m: IdMap, base: number): IdMap => m.map((e) => ({ ...e, outside: e.outside + base }));
      return { label: `ctx${i}.b_${i}`, parent: 'host', uid: shift(um, i * 1_000_000), gid: shift(gm, 500_000 + i * 1_000_000) };
    }),
  );

describe('property: names of mapped ids', () => {
  it('names every host id of a top-level context LABEL.N, N its inside id, and back', () => {
    const arb = arbContexts.chain((cs) =>
      fc.tuple(fc.constant(cs), fc.nat(cs.length - 1)).chain(([cs, i]) => fc.tuple(fc.constant(cs), fc.constant(i), arbIdNear(cs[i].uid, 'inside'))),
    );
    fc.assert(
      fc.property(arb, ([cs, i, inside]) => {
        const index = new NameIndex(cs);
        const c = cs[i];
        const host = oracleLookup(c.uid, 'inside', inside);
        const byName = index.byName('uid', idName(c.label, inside));
        if (host === null) {
          assert.equal(byName, null);
          return;
        }
        assert.deepEqual(index.byHost('uid', host), { label: c.label, inside, host, name: `${c.label}.${inside}` });
        assert.equal(byName?.host, host);
        assert.equal(index.sibling('uid', byName), oracleLookup(c.gid, 'inside', inside));
      }),
    );
  });

  it("names no host id outside every range, and never a nested context (its ids are its top-level context's)", () => {
    // Host ids near the contexts' extents (their edges and one past them), and anywhere.
    const arb = arbContexts.chain((cs) =>
      fc.tuple(
        fc.constant(cs),
        fc.oneof(
          fc.constantFrom(...cs).chain((c) => fc.oneof(arbIdNear(c.uid, 'outside'), arbIdNear(c.gid, 'outside'))),
          fc.integer({ min: 0, max: 6_000_000 }),
        ),
      ),
    );
    fc.assert(
      fc.property(arb, ([cs, host]) => {
        const nested = { label: 'nested', parent: cs[0].label, uid: cs[0].uid, gid: cs[0].gid };
        const index = new NameIndex([...cs, nested]);
        for (const kind of ['uid', 'gid'] as const) {
          const owner = cs.find((c) => oracleLookup(c[kind], 'outside', host) !== null);
          const got = index.byHost(kind, host);
          assert.equal(got?.label ?? null, owner?.label ?? null, `${kind} ${host}`);
          if (owner) assert.equal(got?.inside, oracleLookup(owner[kind], 'outside', host));
        }
        assert.equal(index.byName('uid', 'nested.0'), null);
      }),
    );
  });

  it('reads only canonical names: a label, a dot, a decimal id without leading zeros', () => {
    assert.deepEqual(parseIdName('hpa-backups.1000'), { label: 'hpa-backups', inside: 1000 });
    assert.deepEqual(parseIdName('a.b.0'), { label: 'a.b', inside: 0 });
    for (const bad of ['hpa-backups', '.5', 'x.01', 'x.', 'x.1e3', 'x.-1', 'x.4294967295', 'root']) assert.equal(parseIdName(bad), null, bad);
  });
});

describe('userdb Varlink answers', () => {
  const index = new NameIndex([
    { label: 'hpa-backups', parent: 'host', uid: [{ inside: 0, outside: 2100000, count: 65536 }], gid: [{ inside: 0, outside: 2100000, count: 100 }] },
  ]);
  const root: Peer = { pid: 1, uid: 0, gid: 0, groups: [], userns: [1], host: true };
  const user: Peer = { pid: 2, uid: 1000, gid: 1000, groups: [], userns: [1], host: true };
  const served: string[] = [];
  const source = {
    index: () => index,
    mayKnow: (p: Peer) => p.uid === 0,
    served: (k: string, o: string) => {
      served.push(`${k}:${o}`);
    },
  };
  const call = (method: string, parameters: Record<string, unknown>, peer = root) =>
    answer(source, 'io.usernsd', peer, { method: `io.systemd.UserDatabase.${method}`, parameters: { service: 'io.usernsd', ...parameters } });

  it('answers a user by uid and by name with a record nss-systemd turns into a passwd line', () => {
    const byUid = call('GetUserRecord', { uid: 2101000 });
    assert.deepEqual(
      byUid.parameters?.record,
      {
        userName: 'hpa-backups.1000',
        uid: 2101000,
        realName: 'uid 1000 of context hpa-backups',
        homeDirectory: '/',
        shell: '/usr/sbin/nologin',
        disposition: 'container',
        locked: true,
        service: 'io.usernsd',
      },
      'no gid: the context maps only gids 0-99 (nss-systemd then uses the uid)',
    );
    assert.deepEqual(call('GetUserRecord', { userName: 'hpa-backups.5' }).parameters?.record, {
      ...(byUid.parameters.record as object),
      userName: 'hpa-backups.5',
      uid: 2100005,
      gid: 2100005,
      realName: 'uid 5 of context hpa-backups',
    });
    assert.deepEqual(call('GetGroupRecord', { gid: 2100005 }).parameters?.record, {
      groupName: 'hpa-backups.5',
      gid: 2100005,
      description: 'gid 5 of context hpa-backups',
      disposition: 'container',
      service: 'io.usernsd',
    });
  });

  it('says NoRecordFound for unknown ids, a uid and name that disagree, enumeration, memberships, and callers who may not know', () => {
    for (const [m, p, peer] of [
      ['GetUserRecord', { uid: 5 }, root],
      ['GetUserRecord', { uid: 2101000, userName: 'hpa-backups.1' }, root],
      ['GetUserRecord', {}, root],
      ['GetGroupRecord', { gid: 2100500 }, root],
      ['GetMemberships', {}, root],
      ['GetUserRecord', { uid: 2101000 }, user],
    ] as const) {
      assert.deepEqual(call(m, p, peer), { error: 'io.systemd.UserDatabase.NoRecordFound', parameters: {} }, `${m} ${JSON.stringify(p)}`);
    }
    // The metric must not tell a hidden context's id from no context's (SPEC §12): both are "none".
    assert.ok(!served.some((x) => x.endsWith(':refused')), served.join(' '));
    served.length = 0;
    call('GetUserRecord', { uid: 2101000 }, user);
    call('GetUserRecord', { uid: 5 }, user);
    assert.deepEqual(served, ['user:none', 'user:none'], 'a caller who may not know, and an id of no context, count alike');
  });

  it("refuses another service's name and methods it does not have", () => {
    assert.equal(
      answer(source, 'io.usernsd', root, { method: 'io.systemd.UserDatabase.GetUserRecord', parameters: { uid: 2101000, service: 'io.systemd.Home' } }).error,
      'io.systemd.UserDatabase.BadService',
    );
    assert.equal(answer(source, 'io.usernsd', root, { method: 'org.varlink.service.GetInfo', parameters: {} }).error, 'org.varlink.service.MethodNotFound');
    assert.equal(answer(source, 'io.usernsd', root, null).error, 'org.varlink.service.MethodNotFound');
  });

  it('inside a context, names every id it maps C.N and back in its own ids, and nothing else, whatever the host ids (property)', () => {
    // C maps its ids [0, size) on host [base, base + size), as one extent or two.
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 70000 }), fc.integer({ min: 0, max: 2 ** 31 }), fc.integer({ min: 0, max: 80000 }), (size, base, id) => {
        const split = Math.floor(size / 2);
        const map = [
          { inside: 0, outside: base, count: size - split },
          ...(split > 0 ? [{ inside: size - split, outside: base + size + 10, count: split }] : []),
        ];
        const inside: Peer = { ...user, userns: [7, 1], host: false };
        const src = {
          ...source,
          mayKnow: () => true,
          callerIds: (p: Peer) => (p.host ? null : { label: 'C', toHost: (_k: 'uid' | 'gid', i: number) => lookup(sortBy(map, 'inside'), 'inside', i) }),
        };
        const ask = (m: string, params: Record<string, unknown>) =>
          answer(src, 'io.usernsd', inside, { method: `io.systemd.UserDatabase.${m}`, parameters: { service: 'io.usernsd', ...params } });
        const r = ask('GetUserRecord', { uid: id });
        if (id < size) {
          const rec = r.parameters?.record as { userName: string; uid: number; gid: number };
          assert.equal(rec.userName, `C.${id}`);
          assert.equal(rec.uid, id, "the caller's id, never the host's");
          assert.equal(rec.gid, id);
          assert.equal((ask('GetUserRecord', { userName: `C.${id}` }).parameters?.record as { uid: number }).uid, id);
          assert.equal((ask('GetGroupRecord', { gid: id }).parameters?.record as { groupName: string }).groupName, `C.${id}`);
        } else assert.equal(r.error, 'io.systemd.UserDatabase.NoRecordFound');
        // Names of the host's contexts and of host ids mean nothing inside.
        assert.equal(ask('GetUserRecord', { userName: 'hpa-backups.5' }).error, 'io.systemd.UserDatabase.NoRecordFound');
        assert.equal(ask('GetUserRecord', { uid: base + size + 20 + 80000 }).error, 'io.systemd.UserDatabase.NoRecordFound');
      }),
    );
  });
});

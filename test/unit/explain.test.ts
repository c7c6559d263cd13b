// usernsctl explain's core (agent/explain.ts), pure: every branch — no label, an id outside the
// map, root and all squash, a caller in another context, a nested context — with the figures
// written out, not computed with the functions under test.
import assert from 'node:assert/strict';
import { explain } from '../../agent/explain.ts';
import type { ExplainInput } from '../../agent/explain.ts';
import { HOST_VIEW, makeView } from '../../agent/idmap.ts';
import { parseExtents } from '../../config/extents.ts';
import type { Context, IdMap, SquashMode } from '../../config/types.ts';

const OVERFLOW = { uid: 65534, gid: 65534 };
const m = (t: string) => parseExtents(t) as IdMap;

function context(label: string, mode: SquashMode, map: string, parent = 'host'): Context {
  return {
    label,
    file: `/etc/userns.d/${label}.conf`,
    parent,
    owner: { uid: 0, gid: 0, name: 'root' },
    uidMap: m(map),
    gidMap: m(map),
    autoSize: null,
    setgroups: 'allow',
    create: 'lazy',
    squash: { mode, anonuid: 65533, anongid: 65532 },
    access: { uids: [], gids: [] },
    ownerIds: 'delegated',
  };
}

/** A context whose host map is `host` (its own map composed through its parents). */
function input(
  ctx: Context | null,
  host: string | null,
  onDisk: { uid: number; gid: number },
  caller = HOST_VIEW,
  names: Record<number, string> = {},
): ExplainInput {
  return {
    path: '/srv/x',
    onDisk,
    labelledPath: ctx ? '/srv' : null,
    file: ctx && host ? { ctx, view: makeView(ctx.label, ctx.squash, m(host), m(host)) } : null,
    caller,
    overflow: OVERFLOW,
    note: null,
    nameOf: (_kind, id) => names[id] ?? null,
  };
}

describe('unit: explain', () => {
  const backups = context('backups', 'root', '0 2000000 65536');
  // uids 0-65535 on 2000000, gids 0-99 on 3000000.
  const splitCtx: Context = { ...context('split', 'root', '0 2000000 65536'), gidMap: m('0 3000000 100') };
  const split = { ctx: splitCtx, view: makeView('split', splitCtx.squash, m('0 2000000 65536'), m('0 3000000 100')) };

  it('a file of a context without squash: host ids, names, and both views', () => {
    const plain = context('plain', 'none', '0 2000000 65536');
    const e = explain(input(plain, '0 2000000 65536', { uid: 1000, gid: 33 }, HOST_VIEW, { 2001000: 'plain.1000' }));
    assert.equal(e.context, 'plain');
    assert.deepEqual(e.uid, {
      onDisk: 1000,
      host: 2001000,
      name: 'plain.1000',
      fromHost: 2001000,
      fromCaller: 2001000,
      identityView: 2001000,
      foreignView: 2001000,
      why: [],
    });
    assert.deepEqual([e.gid.host, e.gid.name, e.gid.why], [2000033, null, []]);
  });

  it('root squash: on-disk 0 shows as anonuid from the host, unmapped in a foreign view, mapped in an identity view', () => {
    const e = explain(input(backups, '0 2000000 65536', { uid: 0, gid: 0 }));
    assert.deepEqual([e.uid.host, e.uid.fromHost, e.uid.identityView, e.uid.foreignView], [2000000, 65533, 2000000, 65534]);
    assert.deepEqual([e.gid.fromHost, e.gid.foreignView], [65532, 65534]);
    assert.equal(e.uid.why.length, 1);
    assert.match(
      e.uid.why[0],
      /^backups squashes root \(mode root\): from any other context its on-disk uid 0 shows as anonuid 65533, and a foreign view leaves it unmapped \(the overflow uid 65534\)/,
    );
    const nonRoot = explain(input(backups, '0 2000000 65536', { uid: 1, gid: 1 }));
    assert.deepEqual([nonRoot.uid.fromHost, nonRoot.uid.foreignView, nonRoot.uid.why], [2000001, 2000001, []], 'only root is squashed');
  });

  it('all squash: every id shows as the anonymous ids from the host and in a foreign view; an identity view shows the map alone', () => {
    const tape = context('tape', 'all', '0 3000000 65536');
    const e = explain(input(tape, '0 3000000 65536', { uid: 1000, gid: 1000 }));
    assert.deepEqual([e.uid.host, e.uid.fromHost, e.uid.identityView, e.uid.foreignView], [3001000, 65533, 3001000, 65533]);
    assert.deepEqual([e.gid.fromHost, e.gid.foreignView], [65532, 65532]);
    assert.match(e.uid.why[0], /^tape squashes all ids \(mode all\): from any other context every file shows as its anonuid 65533$/);
  });

  it('an on-disk id past the map: no host id, the overflow id everywhere, and why', () => {
    const e = explain(input(backups, '0 2000000 65536', { uid: 65536, gid: 70000 }));
    assert.deepEqual([e.uid.host, e.uid.name, e.uid.fromHost, e.uid.identityView, e.uid.foreignView], [null, null, 65534, 65534, 65534]);
    assert.deepEqual(e.uid.why, [
      'on-disk uid 65536 is not in the uid_map of backups (0 2000000 65536): nothing can show it but as the overflow uid 65534, and nothing can write it',
    ]);
    const nested = context('www', 'none', '0 1000 100', 'backups');
    const n = explain(input(nested, '0 2001000 100', { uid: 100, gid: 0 }));
    assert.match(n.uid.why[0], /^on-disk uid 100 is not in the uid_map of www \(0 1000 100, through its parent backups\)/);
    assert.equal(n.gid.host, 2001000, "a nested context's ids through its parent to the host");
  });

  it('a caller in another context: what its own view shows, and why it is the overflow id', () => {
    const other = makeView('other', { mode: 'none', anonuid: 65534, anongid: 65534 }, m('0 5000000 65536'), m('0 5000000 65536'));
    const e = explain(input(backups, '0 2000000 65536', { uid: 1000, gid: 1000 }, other));
    assert.equal(e.callerContext, 'other');
    assert.deepEqual([e.uid.fromHost, e.uid.fromCaller], [2001000, 65534]);
    assert.deepEqual(e.uid.why, ['host uid 2001000 is not mapped in context other (yours): it shows there as the overflow uid 65534']);
    const inside = makeView('backups', backups.squash, m('0 2000000 65536'), m('0 2000000 65536'));
    assert.deepEqual(explain(input(backups, '0 2000000 65536', { uid: 1000, gid: 1000 }, inside)).uid.fromCaller, 1000, 'its own context sees the on-disk id');
  });

  it("no label: the ids are the host's own; a caller in a context that does not map them learns why", () => {
    const e = explain(input(null, null, { uid: 1000, gid: 1000 }, HOST_VIEW, { 1000: 'hpa' }));
    assert.deepEqual([e.context, e.parent, e.squash, e.labelledPath], [null, null, null, null]);
    assert.deepEqual(e.uid, { onDisk: 1000, host: 1000, name: 'hpa', fromHost: 1000, fromCaller: 1000, identityView: 1000, foreignView: 1000, why: [] });
    const caller = makeView('backups', backups.squash, m('0 2000000 65536'), m('0 2000000 65536'));
    const c = explain(input(null, null, { uid: 1000, gid: 2000005 }, caller));
    assert.deepEqual([c.uid.fromCaller, c.gid.fromCaller], [65534, 5]);
    assert.deepEqual(c.uid.why, ['host uid 1000 is not mapped in context backups (yours): it shows there as the overflow uid 65534']);
    assert.deepEqual(c.gid.why, []);
    assert.deepEqual(explain(input(null, null, { uid: 65534, gid: 65534 }, caller)).uid.why, [], 'the overflow id itself needs no why');
  });

  it('keeps uids and gids apart: each through its own map, its own anonymous id, its own overflow', () => {
    // uids 0-65535 on 2000000, gids 0-99 on 3000000: a gid of 100 is past its map, the uid 100 is not.
    const e = explain({
      path: '/srv/x',
      onDisk: { uid: 100, gid: 100 },
      file: split,
      labelledPath: '/srv',
      caller: HOST_VIEW,
      overflow: { uid: 65534, gid: 65500 },
      note: null,
      nameOf: () => null,
    });
    assert.deepEqual([e.uid.host, e.uid.fromHost, e.uid.why], [2000100, 2000100, []]);
    assert.deepEqual([e.gid.host, e.gid.fromHost, e.gid.foreignView], [null, 65500, 65500]);
    assert.deepEqual(e.gid.why, [
      'on-disk gid 100 is not in the gid_map of split (0 3000000 100): nothing can show it but as the overflow gid 65500, and nothing can write it',
    ]);
    const root = explain({
      path: '/srv/x',
      onDisk: { uid: 0, gid: 0 },
      file: split,
      labelledPath: '/srv',
      caller: HOST_VIEW,
      overflow: { uid: 65534, gid: 65500 },
      note: 'n',
      nameOf: () => null,
    });
    assert.deepEqual([root.uid.fromHost, root.gid.fromHost, root.uid.foreignView, root.gid.foreignView], [65533, 65532, 65534, 65500]);
    assert.deepEqual([root.squash, root.note, root.parent], [{ mode: 'root', anonuid: 65533, anongid: 65532 }, 'n', 'host']);
  });

  it("says why only when the caller's context is another, and only for an id the host sees but the caller does not", () => {
    const other = makeView('other', { mode: 'none', anonuid: 65534, anongid: 65534 }, m('0 2001000 10'), m('0 2001000 10'));
    const seen = explain(input(backups, '0 2000000 65536', { uid: 1000, gid: 2000 }, other));
    assert.deepEqual([seen.uid.fromCaller, seen.uid.why], [0, []], 'other maps host 2001000: no why');
    assert.deepEqual([seen.gid.fromCaller, seen.gid.why.length], [65534, 1]);
    const unmapped = explain(input(backups, '0 2000000 65536', { uid: 70000, gid: 70000 }, other));
    assert.equal(unmapped.uid.why.length, 1, "an id the host does not see either: only the map's own why, not the caller's");
  });
  it('words each id in its own terms: the uid_map for a uid past it, the anongid for a squashed gid, no squash for root without squash', () => {
    const past = explain({
      path: '/srv/x',
      onDisk: { uid: 70000, gid: 0 },
      file: split,
      labelledPath: '/srv',
      caller: HOST_VIEW,
      overflow: OVERFLOW,
      note: null,
      nameOf: () => 'a name',
    });
    assert.deepEqual(past.uid.why, [
      'on-disk uid 70000 is not in the uid_map of split (0 2000000 65536): nothing can show it but as the overflow uid 65534, and nothing can write it',
    ]);
    assert.equal(past.uid.name, null, 'an id with no host id has no name, whatever userdb would say');
    assert.equal(
      past.gid.why[0],
      'split squashes root (mode root): from any other context its on-disk gid 0 shows as anongid 65532, and a foreign view leaves it unmapped (the overflow gid 65534) so that nobody can write as it',
    );
    const plain = context('plain', 'none', '0 2000000 65536');
    const root = explain(input(plain, '0 2000000 65536', { uid: 0, gid: 0 }));
    assert.deepEqual([root.uid.fromHost, root.uid.foreignView, root.uid.why, root.gid.why], [2000000, 2000000, [], []]);
  });

  it("a caller in the file's own context reading its overflow id is told nothing about its own view", () => {
    const inside = makeView('backups', backups.squash, m('0 2000000 65536'), m('0 2000000 65536'));
    const e = explain(input(backups, '0 2000000 65536', { uid: 65534, gid: 65534 }, inside));
    assert.deepEqual([e.uid.fromCaller, e.uid.fromHost, e.uid.why], [65534, 2065534, []]);
  });
});

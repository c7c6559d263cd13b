// Who may use and who may enter a context (agent/policy.ts, SPEC §6), rule by rule: each row grants
// through exactly one rule or through none, so a rule that is lost or widened fails its row.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isRoot, mayEnter, mayEnterFromInside, mayShape, mayUse, ownName } from '../../agent/policy.ts';
import type { Peer } from '../../agent/wire/peer.ts';
import type { Context } from '../../config/types.ts';

const peer = (uid: number, gid = uid, groups: number[] = []): Peer => ({ pid: 1234, uid, gid, groups, userns: [1], host: true });
function context(label: string, owner: number, access: { uids?: number[]; gids?: number[] } = {}, parent = 'host'): Context {
  const map = [{ inside: 0, outside: 100000, count: 65536 }];
  return {
    label,
    file: `/etc/userns.d/${label}.conf`,
    parent,
    owner: { uid: owner, gid: owner, name: null },
    uidMap: map,
    gidMap: map,
    autoSize: null,
    setgroups: 'allow',
    create: 'lazy',
    squash: { mode: 'root', anonuid: 65534, anongid: 65534 },
    access: { uids: access.uids ?? [], gids: access.gids ?? [] },
    ownerIds: 'delegated',
  };
}

describe('unit: access policy', () => {
  const top = context('top', 1000);
  const mid = context('top.mid', 1001, {}, 'top');
  const leaf = context('top.mid.leaf', 1002, { uids: [2000], gids: [3000] }, 'top.mid');
  const chain = [mid, top]; // leaf's ancestors, nearest first

  it('mayUse grants root, the owner, an owner up the chain, an [access] user, an [access] group by primary or supplementary group — and no one else', () => {
    const rows: [string, Peer, boolean][] = [
      ['root', peer(0, 5), true],
      ['its owner', peer(1002), true],
      ["its parent's owner", peer(1001), true],
      ['the top owner', peer(1000), true],
      ['an [access] user', peer(2000, 9), true],
      ['an [access] group, primary', peer(4000, 3000), true],
      ['an [access] group, supplementary', peer(4000, 4000, [7, 3000]), true],
      ['a stranger', peer(4000, 4000, [7, 8]), false],
      ['a stranger whose uid is an [access] gid', peer(3000, 9), false],
      ['a stranger whose gid is an [access] uid', peer(4000, 2000), false],
      ["a stranger whose gid is the owner's uid", peer(4000, 1002), false],
    ];
    for (const [who, p, want] of rows) assert.equal(mayUse(p, leaf, chain), want, who);
  });

  it('mayUse without ancestors knows only the context itself', () => {
    assert.equal(mayUse(peer(1000), leaf), false, "an ancestor's owner, unnamed, is a stranger");
    assert.equal(mayUse(peer(4000), leaf), false);
    assert.equal(mayUse(peer(1002), leaf), true);
  });

  it('mayEnter grants root and the top-level owner only: not [access], not a nested owner (who enters from inside its parent)', () => {
    const rows: [string, Peer, boolean][] = [
      ['root', peer(0), true],
      ['the top owner', peer(1000), true],
      ['a nested owner', peer(1002), false],
      ['an [access] user', peer(2000), false],
      ['an [access] group member', peer(4000, 3000, [3000]), false],
      ['a stranger', peer(4000), false],
    ];
    for (const [who, p, want] of rows) assert.equal(mayEnter(p, top), want, who);
  });

  it('isRoot is uid 0, whatever the groups', () => {
    assert.equal(isRoot(peer(0, 100, [1])), true);
    assert.equal(isRoot(peer(1, 0, [0])), false);
  });

  it('whoever is not root, an owner in the chain, an [access] user or in an [access] group is refused, and entry never exceeds use', () => {
    const id = fc.integer({ min: 0, max: 12 });
    fc.assert(
      fc.property(
        id,
        id,
        fc.array(id, { maxLength: 3 }),
        id,
        id,
        fc.array(id, { maxLength: 2 }),
        fc.array(id, { maxLength: 2 }),
        (uid, gid, groups, owner, parentOwner, uids, gids) => {
          const parent = context('p', parentOwner);
          const ctx = context('p.c', owner, { uids, gids }, 'p');
          const p = peer(uid, gid, groups);
          const oracle = uid === 0 || uid === owner || uid === parentOwner || uids.includes(uid) || gids.includes(gid) || gids.some((g) => groups.includes(g));
          assert.equal(mayUse(p, ctx, [parent]), oracle);
          if (mayEnter(p, parent)) assert.ok(mayUse(p, parent), 'who may enter may use');
        },
      ),
    );
  });

  describe('from inside a context (SPEC §14): the namespace decides, not the host uid', () => {
    const within = (uid: number, insideLabel: string | null): Peer => ({ ...peer(uid), userns: [7, 1], host: false, inside: insideLabel });

    it('mayUse: the context the caller runs in and what is nested in it, nothing else, whatever its uid', () => {
      const rows: [string, Peer, Context, readonly Context[], boolean][] = [
        ['inside top: top', within(5, 'top'), top, [], true],
        ['inside top: leaf, nested in it', within(5, 'top'), leaf, chain, true],
        ['inside top.mid: leaf', within(5, 'top.mid'), leaf, chain, true],
        ['inside top.mid.leaf: top.mid, its parent', within(5, 'top.mid.leaf'), mid, [top], false],
        ['inside top.mid: top, its parent', within(5, 'top.mid'), top, [], false],
        ["inside another: top, though the caller's uid is top's owner", within(1000, 'other'), top, [], false],
        ["inside another: leaf, though the uid is an [access] user's", within(2000, 'other'), leaf, chain, false],
        ['inside another as host uid 0', within(0, 'other'), top, [], false],
      ];
      for (const [what, p, c, anc, want] of rows) assert.equal(mayUse(p, c, anc), want, what);
    });

    it("a caller inside any context of any forest may use exactly that context's subtree (property)", () => {
      // A forest: context i's parent is one of the contexts before it, or host.
      const forest = fc.array(fc.tuple(fc.nat(), fc.boolean(), fc.nat(3), fc.array(fc.nat(3), { maxLength: 2 })), { minLength: 1, maxLength: 12 });
      fc.assert(
        fc.property(forest, fc.nat(), fc.nat(3), (spec, pick, uid) => {
          const ctxs: Context[] = [];
          for (const [i, [p, top, owner, access]] of spec.entries()) {
            const parent = top || i === 0 ? 'host' : ctxs[p % i].label;
            ctxs.push(context(`c${i}`, 1000 + owner, { uids: access.map((a) => 1000 + a) }, parent));
          }
          const byLabel = new Map(ctxs.map((c) => [c.label, c]));
          const ancestors = (c: Context) => {
            const out: Context[] = [];
            for (let a = byLabel.get(c.parent); a; a = byLabel.get(a.parent)) out.push(a);
            return out;
          };
          const where = ctxs[pick % ctxs.length];
          // Whatever its uid: an owner's, an [access] user's, a stranger's, host uid 0.
          const caller = within([1000 + uid, 0][pick % 2], where.label);
          for (const c of ctxs) {
            const inSubtree = c === where || ancestors(c).includes(where);
            assert.equal(mayUse(caller, c, ancestors(c)), inSubtree, `${c.label} from inside ${where.label}`);
          }
        }),
      );
    });

    it('uid 0 from another namespace is not root; an unknown namespace is judged by its uid, never as root, never entering', () => {
      assert.equal(isRoot(within(0, 'top')), false);
      assert.equal(isRoot(within(0, null)), false);
      assert.equal(isRoot(peer(0)), true);
      assert.equal(mayUse(within(0, null), top), false, 'host uid 0 in a namespace of its own is no one');
      assert.equal(mayUse(within(1000, null), top), true, 'the owner, in a namespace of its own (a rootless container)');
      assert.equal(mayEnter(within(1000, null), top), false, 'but the kernel will not let it join from there');
      assert.equal(mayEnter(within(0, 'top'), top), false);
      assert.equal(mayEnter(peer(1000), top), true);
    });

    it("contexts are made and released from inside by that context's root, for its own subtree only (SPEC §14)", () => {
      const ROOT_OF_TOP = 100000; // the host uid top maps uid 0 to
      const rows: [string, Peer, Context, readonly Context[], boolean][] = [
        ["top's root inside top, under top", within(ROOT_OF_TOP, 'top'), top, [], true],
        ["top's root inside top, under top.mid", within(ROOT_OF_TOP, 'top'), mid, [top], true],
        ['another uid inside top', within(ROOT_OF_TOP + 1, 'top'), top, [], false],
        ["top's owner on the host", peer(1000), top, [], false],
        ["top's root seen from the host (no namespace)", peer(ROOT_OF_TOP), top, [], false],
        ["the same uid inside another context: not top's subtree", within(ROOT_OF_TOP, 'other'), top, [], false],
        ['host uid 0 inside top', within(0, 'top'), top, [], false],
        ['root', peer(0), top, [], true],
      ];
      for (const [what, p, c, anc, want] of rows) assert.equal(mayShape(p, c, anc, ROOT_OF_TOP), want, what);
      // Its owner being its root changes nothing on the host: the owner may use it there, not shape it.
      const own = context('own', ROOT_OF_TOP);
      assert.equal(mayUse(peer(ROOT_OF_TOP), own), true);
      assert.equal(mayShape(peer(ROOT_OF_TOP), own, [], ROOT_OF_TOP), false, 'from the host, not even its owner-root');
      assert.equal(mayShape(within(ROOT_OF_TOP, 'top'), top, [], null), false, 'a context that maps no uid 0 has no root');
    });

    it('from inside, its root enters what is nested in its context, not the context itself nor anything beside it', () => {
      const R = 100000;
      assert.equal(mayEnterFromInside(within(R, 'top'), mid, [top], R), true);
      assert.equal(mayEnterFromInside(within(R, 'top'), leaf, chain, R), true);
      assert.equal(mayEnterFromInside(within(R, 'top'), top, [], R), false, 'it is in it already');
      assert.equal(mayEnterFromInside(within(R + 1, 'top'), mid, [top], R), false, 'not its root');
      assert.equal(mayEnterFromInside(within(R, 'top.mid'), leaf, chain, R), true);
      assert.equal(mayEnterFromInside(within(R, 'top.mid'), mid, [top], R), false);
      assert.equal(mayEnterFromInside(peer(R), mid, [top], R), false, 'from the host the owner rule decides');
      assert.equal(mayEnterFromInside(within(R, 'top'), mid, [top], null), false, 'a context without a root has none to enter with');
    });

    it('labels are the caller\'s own names: inside top, "x" is top.x, and names in its subtree stay as they are', () => {
      assert.equal(ownName(within(5, 'top'), 'x'), 'top.x');
      assert.equal(ownName(within(5, 'top'), 'x.y'), 'top.x.y');
      assert.equal(ownName(within(5, 'top'), 'top'), 'top');
      assert.equal(ownName(within(5, 'top'), 'top.mid'), 'top.mid');
      assert.equal(ownName(within(5, 'top'), 'other'), 'top.other', 'a context outside its subtree cannot even be named');
      assert.equal(ownName(within(5, 'top'), 'topx'), 'top.topx');
      assert.equal(ownName(peer(5), 'x'), 'x');
      assert.equal(ownName(within(5, null), 'x'), 'x');
    });
  });
});

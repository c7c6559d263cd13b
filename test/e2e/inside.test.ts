// Seen from inside (SPEC §14): a caller is known by the user namespace it runs in, from the kernel
// (SO_PEERPIDFD, PIDFD_GET_USER_NAMESPACE, NS_GET_PARENT), never by its message or its host uid. From
// inside a context it sees that context and what is nested in it, and the rest as if it did not exist;
// host uid 0 mapped into a context is that context's root, not the agent's.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { cleanup, makeCheckoutReachable, runInside, startAgent, USERNSCTL } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser } from '../helpers/kernel.ts';

const B = 7_950_000;

/** Run `argv` as `user` (or root) inside the pinned namespace `pin` as its uid 0 (null: on the host). */
const inside = (pin: string | null, argv: string[], user?: { uid: number; gid: number }) => runInside(pin === null ? [] : [pin], argv, { user });

describe('e2e: seen from inside a context (root)', function () {
  this.timeout(120_000);
  let tree: Tree | undefined;
  let restore: (() => void) | null = null;
  const users: ReturnType<typeof makeUser>[] = [];

  before(function () {
    if (!isRoot) this.skip();
    restore = makeCheckoutReachable();
  });
  after(() => restore?.());
  afterEach(async () => {
    await cleanup(tree);
    tree = undefined;
    for (const u of users.splice(0)) u.remove();
  });

  it('a process inside L sees L and its nested contexts only; a sibling looks exactly like a missing label; host root mapped inside is not root', async () => {
    const t = (tree = makeTree());
    const alice = makeUser();
    users.push(alice);
    t.delegate(alice.name, B, 65536);
    t.context('L.conf', `[context]\nowner = ${alice.name}\nuid_map = 0 ${B} 65536\ngid_map = 0 ${B} 65536\n`);
    t.context('L.x.conf', '[context]\nparent = L\nuid_map = 0 1000 1000\ngid_map = 0 1000 1000\n');
    // A sibling alice may use from the host ([access]): from inside L it must not exist.
    t.context('S.conf', `[context]\nuid_map = 0 ${B + 65536} 65536\ngid_map = 0 ${B + 65536} 65536\n[access]\nusers = ${alice.name}\n`);
    // Host uid 0 mapped into a context of root's: its root is host uid 0, in another namespace.
    t.context('R.conf', '[context]\nuid_map = 0 0 1\ngid_map = 0 0 1\n');
    const agent = await startAgent(t);
    const ctl = [process.execPath, USERNSCTL, '--socket', agent.socket];
    for (const l of ['L', 'L.x', 'R']) {
      const r = await inside(null, [...ctl, 'resolve', l]); // created from the host
      assert.equal(r.code, 0, r.err);
    }
    const pin = (l: string) => join(t.pins, l);

    // From the host, alice may use L, L.x and S (owner, nested, [access]).
    const hostList = await inside(null, [...ctl, '--json', 'list'], alice);
    assert.deepEqual((JSON.parse(hostList.out) as { contexts: { label: string }[] }).contexts.map((c) => c.label).sort(), ['L', 'L.x', 'S']);

    // From inside L (entered by alice without host root): L and L.x only.
    const list = await inside(pin('L'), [...ctl, '--json', 'list'], alice);
    assert.equal(list.code, 0, list.err);
    assert.deepEqual((JSON.parse(list.out) as { contexts: { label: string }[] }).contexts.map((c) => c.label).sort(), ['L', 'L.x']);
    assert.equal((await inside(pin('L'), [...ctl, 'resolve', 'L.x'], alice)).code, 0);
    // No oracle: a sibling that exists and a label that does not get the same answer.
    const sibling = await inside(pin('L'), [...ctl, 'resolve', 'S'], alice);
    const missing = await inside(pin('L'), [...ctl, 'resolve', 'nope'], alice);
    assert.equal(sibling.code, 1);
    // From inside L, labels are L's names: "S" is L.S, which does not exist either.
    assert.equal(sibling.err.replace('"L.S"', '"X"'), missing.err.replace('"L.nope"', '"X"'));
    const status = await inside(pin('L'), [...ctl, '--json', 'status'], alice);
    assert.equal((JSON.parse(status.out) as { contexts: number; full: boolean }).contexts, 2);
    // Deeper inside (L.x, joined from L as L's root): L.x alone.
    const deeper = await inside(
      pin('L'),
      ['nsenter', `--user=${pin('L.x')}`, '--preserve-credentials', '-S', '0', '-G', '0', '--', ...ctl, '--json', 'list'],
      alice,
    );
    assert.equal(deeper.code, 0, deeper.err);
    assert.deepEqual(
      (JSON.parse(deeper.out) as { contexts: { label: string }[] }).contexts.map((c) => c.label),
      ['L.x'],
    );

    // Inside R as its uid 0, which is host uid 0: R's root, not the agent's root.
    const rootInside = await inside(pin('R'), [...ctl, 'release', 'L']);
    assert.equal(rootInside.code, 1);
    assert.match(rootInside.err, /E_PERMISSION: uid 0 may not release "R\.L" \(or there is none\)/);
    const reload = await inside(pin('R'), [...ctl, 'reload']);
    assert.match(reload.err, /E_PERMISSION: reload is for root only/);
    const rList = await inside(pin('R'), [...ctl, '--json', 'list']);
    assert.deepEqual(
      (JSON.parse(rList.out) as { contexts: { label: string }[] }).contexts.map((c) => c.label),
      ['R'],
    );
    const rStatus = await inside(pin('R'), [...ctl, '--json', 'status']);
    assert.equal((JSON.parse(rStatus.out) as { full: boolean }).full, false, "the full status is the host root's");
  });
});

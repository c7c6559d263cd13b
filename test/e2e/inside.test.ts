// Seen from inside (SPEC §14): a caller is known by the user namespace it runs in, from the kernel
// (SO_PEERPIDFD, PIDFD_GET_USER_NAMESPACE, NS_GET_PARENT), never by its message or its host uid. From
// inside a context it sees that context and what is nested in it, and the rest as if it did not exist;
// host uid 0 mapped into a context is that context's root, not the agent's. The root of context L,
// in L without host root, makes L.x and L.x.y through the socket, enters them, and sees them survive
// a SIGKILL, a restart and lost pins; limits hold; a sibling's process learns nothing; releasing L
// forgets them; userdb there answers in L's ids.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { cleanup, makeCheckoutReachable, runInside, startAgent, USERNSCTL } from '../helpers/agent.ts';
import type { Run } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, kernelMaps, makeUser } from '../helpers/kernel.ts';

const B = 7_950_000;

/** Run `argv` as `user` (or root) inside the pinned namespace `pin` as its uid 0 (null: on the host). */
const inside = (pin: string | null, argv: string[], user?: { uid: number; gid: number }) => runInside(pin === null ? [] : [pin], argv, { user });
/** The same inside the pins `path` (outermost first; none: on the host), with `env`. */
const within = (path: string[], argv: string[], user?: { uid: number; gid: number }, env: NodeJS.ProcessEnv = process.env) =>
  runInside(path, argv, { user, env });
const labels = (r: Run) => (JSON.parse(r.out) as { contexts: { label: string; pinned: boolean }[] }).contexts.map((c) => c.label).sort();

describe('e2e: seen from inside a context (root)', function () {
  this.timeout(180_000);
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

  it("L's root makes L.x and L.x.y from inside, enters them; limits, bad maps and strangers are refused; they outlive SIGKILL and lost pins; releasing L forgets them", async () => {
    const t = (tree = makeTree());
    const alice = makeUser();
    users.push(alice);
    t.delegate(alice.name, B, 65536);
    t.context('L.conf', `[context]\nowner = ${alice.name}\nuid_map = 0 ${B} 65536\ngid_map = 0 ${B} 65536\nchildren = 2\n`);
    t.context('S.conf', `[context]\nuid_map = 0 ${B + 65536} 65536\ngid_map = 0 ${B + 65536} 65536\n[access]\nusers = ${alice.name}\n`);
    let agent = await startAgent(t);
    const ctl = () => [process.execPath, USERNSCTL, '--socket', agent.socket];
    for (const l of ['L', 'S']) assert.equal((await within([], [...ctl(), 'resolve', l])).code, 0);
    const pin = (l: string) => join(t.pins, l);
    const inL = (args: string[], user: { uid: number; gid: number } = alice) => within([pin('L')], [...ctl(), ...args], user);
    const records = () => readdirSync(join(t.state, 'children')).sort();

    // Nobody but L's root, from inside L: not alice on the host, not another uid inside L.
    const fromHost = await within([], [...ctl(), 'create', 'L.h', '--uid-map', '0 0 10'], alice);
    assert.equal(fromHost.code, 1);
    assert.match(fromHost.err, /E_PERMISSION/);
    const notRoot = await within(
      [pin('L')],
      ['setpriv', '--reuid=5', '--regid=5', '--keep-groups', '--', ...ctl(), 'create', 'n', '--uid-map', '0 0 10'],
      alice,
    );
    assert.equal(notRoot.code, 1, notRoot.err);
    assert.match(notRoot.err, /E_PERMISSION/);

    // Maps written in the parent's ids; a map beyond L's ids is refused and leaves no record.
    const x = await inL(['--json', 'create', 'x', '--uid-map', '0 1000 1000', '--gid-map', '0 1000 1000']);
    assert.equal(x.code, 0, x.err);
    const made = JSON.parse(x.out) as { label: string; path: string; ino: number; mayEnter: boolean };
    assert.equal(made.label, 'L.x');
    assert.equal(made.mayEnter, true);
    assert.equal(statSync(pin('L.x')).ino, made.ino);
    const bad = await inL(['create', 'w', '--uid-map', '0 65000 1000']);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /E_CONFIG: cannot create context "L\.w": uid_map: outside uids 65536-65999 are not mapped inside parent "L"/);
    assert.deepEqual(records(), ['L.x.conf']);
    const xy = await inL(['create', 'x.y', '--uid-map', '0 100 100']);
    assert.equal(xy.code, 0, xy.err);
    const over = await inL(['create', 'z', '--uid-map', '0 3000 10']);
    assert.equal(over.code, 1);
    assert.match(over.err, /E_BUSY: context "L" allows 2 context\(s\) made from inside it, and has 2/);
    assert.deepEqual(labels(await inL(['--json', 'list'])), ['L', 'L.x', 'L.x.y']);
    const rootList = JSON.parse((await within([], [...ctl(), '--json', 'list'])).out) as { contexts: { label: string; madeInside: boolean }[] };
    assert.deepEqual(
      rootList.contexts.map((c) => [c.label, c.madeInside]),
      [
        ['L', false],
        ['S', false],
        ['L.x', true],
        ['L.x.y', true],
      ],
    );
    assert.match((await within([], [...ctl(), 'list'])).out, /^L\.x\.y +L\.x +L\.x's root +yes +eager, made inside +root$/m);

    // Inside L, its ids are the only ones it has: "host" is L's own namespace.
    const mapped = await inL(['map', '--from', 'x.y', '--to', 'host', '--uid', '5']);
    assert.equal(mapped.out, 'uid 5 -> 1105\n', mapped.err);
    assert.equal((await within([], [...ctl(), 'map', '--from', 'L.x.y', '--to', 'host', '--uid', '5'])).out, `uid 5 -> ${B + 1105}\n`);

    // Entered from inside L as its root, by the kernel's rule: the namespace is the pin's.
    const entered = await inL(['enter', 'x.y', '--', 'readlink', '/proc/self/ns/user']);
    assert.equal(entered.code, 0, entered.err);
    assert.equal(entered.out.trim(), `user:[${statSync(pin('L.x.y')).ino}]`);

    // A sibling's root: none of it exists, the same answers as for a label that does not.
    const inS = (args: string[]) => within([pin('S')], [...ctl(), ...args]);
    assert.deepEqual(labels(await inS(['--json', 'list'])), ['S']);
    const seen = await inS(['resolve', 'L.x']);
    const none = await inS(['resolve', 'L.nope']);
    assert.equal(seen.code, 1);
    assert.equal(seen.err.replace('L.x', 'X'), none.err.replace('L.nope', 'X'));
    const rel = await inS(['release', 'L.x']);
    const relNone = await inS(['release', 'L.nope']);
    assert.equal(rel.code, 1);
    assert.equal(rel.err.replace('L.x', 'X'), relNone.err.replace('L.nope', 'X'));
    const sCreate = await inS(['create', 'q', '--uid-map', '0 0 10']);
    assert.match(sCreate.err, /E_BUSY: context "S" allows 0 context\(s\) made from inside it/);

    // SIGKILL and a restart: still there, still pinned.
    agent.child.kill('SIGKILL');
    await agent.exited;
    agent = await startAgent(t);
    const after = JSON.parse((await inL(['--json', 'list'])).out) as { contexts: { label: string; pinned: boolean }[] };
    assert.deepEqual(
      after.contexts.map((c) => [c.label, c.pinned]),
      [
        ['L', true],
        ['L.x', true],
        ['L.x.y', true],
      ],
    );

    // Pins gone (a reboot): made again at start, eagerly, with L under them.
    await agent.stop();
    for (const l of ['L.x.y', 'L.x', 'L', 'S']) execFileSync('umount', [pin(l)]);
    agent = await startAgent(t);
    for (const l of ['L', 'L.x', 'L.x.y']) assert.ok(statSync(pin(l)).ino !== statSync(t.pins).ino && isPinned(pin(l)), `${l} pinned again`);

    // From inside, its root releases what was made inside; root's release of L forgets the rest.
    const gone = await inL(['release', 'x.y']);
    assert.equal(gone.code, 0, gone.err);
    assert.deepEqual(records(), ['L.x.conf']);
    const fileCtx = await inL(['release', 'L']);
    assert.equal(fileCtx.code, 1, 'a context defined by a file is not released from inside');
    assert.match(fileCtx.err, /E_PERMISSION: uid \d+ may not release "L"/);
    assert.equal((await within([], [...ctl(), 'release', 'L'])).code, 0);
    assert.deepEqual(records(), []);
    assert.ok(!isPinned(pin('L.x')));
    assert.deepEqual(labels(await within([], [...ctl(), '--json', 'list'])), ['L', 'S']);
    assert.ok(!existsSync(join(t.state, 'children', 'L.x.conf')));
  });

  it('userdb answers a caller inside in its own ids: nss-systemd there names its ids and those of what it made, and nothing of a sibling', async function () {
    if (!/\bsystemd\b/.test(execFileSync('sh', ['-c', 'grep -E "^passwd:" /etc/nsswitch.conf || true'], { encoding: 'utf8' })))
      throw new Error('/etc/nsswitch.conf does not ask systemd (libnss-systemd): .ci/run installs and configures it');
    const userdb = `/run/systemd/userdb/io.usernsd-children-${process.pid}`;
    const dirBefore = existsSync(dirname(userdb));
    const t = (tree = makeTree(`userdb = yes\nuserdb_socket = ${userdb}\n`));
    try {
      t.context('L.conf', `[context]\nuid_map = 0 ${B} 65536\ngid_map = 0 ${B} 65536\nchildren = 1\n`);
      t.context('S.conf', `[context]\nuid_map = 0 ${B + 65536} 65536\ngid_map = 0 ${B + 65536} 65536\n`);
      const agent = await startAgent(t);
      const ctl = [process.execPath, USERNSCTL, '--socket', agent.socket];
      for (const l of ['L', 'S']) assert.equal((await within([], [...ctl, 'resolve', l])).code, 0);
      // getent as any program runs it there: nss-systemd, without the bypass this test process holds.
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'SYSTEMD_BYPASS_USERDB'));
      const inL = (argv: string[]) => within([join(t.pins, 'L')], argv, undefined, env);
      assert.equal((await inL([...ctl, 'create', 'x', '--uid-map', '0 41000 100'])).code, 0);
      const field = async (argv: string[], i: number) => (await inL(argv)).out.split(':')[i];
      // (Ids no account of /etc/passwd has: the host's files come first there too.) Inside L, L is the
      // outermost context: it names every id L has, those of what L made included, as the host's
      // names are its top-level contexts'.
      assert.equal(await field(['getent', 'passwd', '40005'], 0), 'L.40005', "L's own uid 40005, asked in L's ids");
      assert.equal(await field(['getent', 'passwd', 'L.40005'], 2), '40005', "and back: the name gives L's id, not the host's");
      assert.equal(await field(['getent', 'passwd', '41005'], 0), 'L.41005', "the ids of L.x, made from inside, are L's too");
      assert.equal((await inL(['getent', 'group', '40007'])).out, 'L.40007:x:40007:\n');
      assert.equal((await inL(['getent', 'passwd', 'S.5'])).code, 2, 'a sibling has no names here');
      assert.equal((await inL(['getent', 'passwd', '70000'])).code, 2, 'an id L does not map has no name');
      // Inside L.x, entered from L: L.x is the outermost it sees.
      const inX = await within([join(t.pins, 'L'), join(t.pins, 'L.x')], ['getent', 'passwd', '77'], undefined, env);
      assert.equal(inX.out.split(':')[0], 'L.x.77', inX.err);
      assert.equal(
        (await within([join(t.pins, 'L'), join(t.pins, 'L.x')], ['getent', 'passwd', 'L.40005'], undefined, env)).code,
        2,
        "its parent's names are not its",
      );
      // On the host the same names are the host's ids.
      assert.equal((await within([], ['getent', 'passwd', 'L.41005'], undefined, env)).out.split(':')[2], String(B + 41005));
    } finally {
      await cleanup(t);
      tree = undefined;
      if (existsSync(userdb)) rmSync(userdb);
      if (!dirBefore)
        try {
          rmdirSync(dirname(userdb));
        } catch {
          /* another service's socket is there */
        }
    }
  });

  it('with child_ranges, a context made inside takes a whole range of its own, mapped on the host as the ids it was given', async () => {
    const t = (tree = makeTree());
    t.context('A.conf', '[context]\nrange = auto\nchild_ranges = 1\nchildren = 1\n');
    const agent = await startAgent(t);
    const ctl = [process.execPath, USERNSCTL, '--socket', agent.socket];
    const a = JSON.parse((await within([], [...ctl, '--json', 'resolve', 'A'])).out) as { uidMap: { inside: number; outside: number; count: number }[] };
    const [own, extra] = a.uidMap;
    assert.deepEqual(extra, { inside: own.outside + 65536, outside: own.outside + 65536, count: 65536 }, 'one more range, one to one');
    assert.equal(kernelMaps(join(t.pins, 'A')).uid, `0 ${own.outside} 65536, ${extra.outside} ${extra.outside} 65536`);
    const made = await within([join(t.pins, 'A')], [...ctl, 'create', 'big', '--uid-map', `0 ${extra.inside} 65536`]);
    assert.equal(made.code, 0, made.err);
    assert.equal(kernelMaps(join(t.pins, 'A.big')).uid, `0 ${extra.outside} 65536`, 'its 65,536 ids are the extra range on the host');
  });
});

/** Whether a pin path is an nsfs mount (a pinned namespace). */
function isPinned(path: string): boolean {
  try {
    return execFileSync('findmnt', ['-n', '-o', 'FSTYPE', '--mountpoint', path], { encoding: 'utf8' }).trim() === 'nsfs';
  } catch {
    return false;
  }
}

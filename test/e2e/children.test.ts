// Contexts made from inside (SPEC §14): the root of context L, in L without host root, makes L.x and
// L.x.y through the socket, enters them, and sees them survive a SIGKILL, a restart and lost pins;
// limits hold; a sibling's process learns nothing; releasing L forgets them.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { cleanup, makeCheckoutReachable, runInside, startAgent, USERNSCTL } from '../helpers/agent.ts';
import type { Run } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, kernelMaps, makeUser } from '../helpers/kernel.ts';

const B = 7_980_000;

/** Run `argv` as `user` (or root) inside the pins `path` (outermost first) as their uid 0 (none: on the host). */
const inside = (path: string[], argv: string[], user?: { uid: number; gid: number }, env: NodeJS.ProcessEnv = process.env) =>
  runInside(path, argv, { user, env });

const labels = (r: Run) => (JSON.parse(r.out) as { contexts: { label: string; pinned: boolean }[] }).contexts.map((c) => c.label).sort();

describe('e2e: contexts made from inside (root)', function () {
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

  it("L's root makes L.x and L.x.y from inside, enters them; limits, bad maps and strangers are refused; they outlive SIGKILL and lost pins; releasing L forgets them", async () => {
    const t = (tree = makeTree());
    const alice = makeUser();
    users.push(alice);
    t.delegate(alice.name, B, 65536);
    t.context('L.conf', `[context]\nowner = ${alice.name}\nuid_map = 0 ${B} 65536\ngid_map = 0 ${B} 65536\nchildren = 2\n`);
    t.context('S.conf', `[context]\nuid_map = 0 ${B + 65536} 65536\ngid_map = 0 ${B + 65536} 65536\n[access]\nusers = ${alice.name}\n`);
    let agent = await startAgent(t);
    const ctl = () => [process.execPath, USERNSCTL, '--socket', agent.socket];
    for (const l of ['L', 'S']) assert.equal((await inside([], [...ctl(), 'resolve', l])).code, 0);
    const pin = (l: string) => join(t.pins, l);
    const inL = (args: string[], user: { uid: number; gid: number } = alice) => inside([pin('L')], [...ctl(), ...args], user);
    const records = () => readdirSync(join(t.state, 'children')).sort();

    // Nobody but L's root, from inside L: not alice on the host, not another uid inside L.
    const fromHost = await inside([], [...ctl(), 'create', 'L.h', '--uid-map', '0 0 10'], alice);
    assert.equal(fromHost.code, 1);
    assert.match(fromHost.err, /E_PERMISSION/);
    const notRoot = await inside(
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
    const rootList = JSON.parse((await inside([], [...ctl(), '--json', 'list'])).out) as { contexts: { label: string; madeInside: boolean }[] };
    assert.deepEqual(
      rootList.contexts.map((c) => [c.label, c.madeInside]),
      [
        ['L', false],
        ['S', false],
        ['L.x', true],
        ['L.x.y', true],
      ],
    );
    assert.match((await inside([], [...ctl(), 'list'])).out, /^L\.x\.y +L\.x +L\.x's root +yes +eager, made inside +root$/m);

    // Inside L, its ids are the only ones it has: "host" is L's own namespace.
    const mapped = await inL(['map', '--from', 'x.y', '--to', 'host', '--uid', '5']);
    assert.equal(mapped.out, 'uid 5 -> 1105\n', mapped.err);
    assert.equal((await inside([], [...ctl(), 'map', '--from', 'L.x.y', '--to', 'host', '--uid', '5'])).out, `uid 5 -> ${B + 1105}\n`);

    // Entered from inside L as its root, by the kernel's rule: the namespace is the pin's.
    const entered = await inL(['enter', 'x.y', '--', 'readlink', '/proc/self/ns/user']);
    assert.equal(entered.code, 0, entered.err);
    assert.equal(entered.out.trim(), `user:[${statSync(pin('L.x.y')).ino}]`);

    // A sibling's root: none of it exists, the same answers as for a label that does not.
    const inS = (args: string[]) => inside([pin('S')], [...ctl(), ...args]);
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
    assert.equal((await inside([], [...ctl(), 'release', 'L'])).code, 0);
    assert.deepEqual(records(), []);
    assert.ok(!isPinned(pin('L.x')));
    assert.deepEqual(labels(await inside([], [...ctl(), '--json', 'list'])), ['L', 'S']);
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
      for (const l of ['L', 'S']) assert.equal((await inside([], [...ctl, 'resolve', l])).code, 0);
      // getent as any program runs it there: nss-systemd, without the bypass this test process holds.
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'SYSTEMD_BYPASS_USERDB'));
      const inL = (argv: string[]) => inside([join(t.pins, 'L')], argv, undefined, env);
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
      const inX = await inside([join(t.pins, 'L'), join(t.pins, 'L.x')], ['getent', 'passwd', '77'], undefined, env);
      assert.equal(inX.out.split(':')[0], 'L.x.77', inX.err);
      assert.equal(
        (await inside([join(t.pins, 'L'), join(t.pins, 'L.x')], ['getent', 'passwd', 'L.40005'], undefined, env)).code,
        2,
        "its parent's names are not its",
      );
      // On the host the same names are the host's ids.
      assert.equal((await inside([], ['getent', 'passwd', 'L.41005'], undefined, env)).out.split(':')[2], String(B + 41005));
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
    const a = JSON.parse((await inside([], [...ctl, '--json', 'resolve', 'A'])).out) as { uidMap: { inside: number; outside: number; count: number }[] };
    const [own, extra] = a.uidMap;
    assert.deepEqual(extra, { inside: own.outside + 65536, outside: own.outside + 65536, count: 65536 }, 'one more range, one to one');
    assert.equal(kernelMaps(join(t.pins, 'A')).uid, `0 ${own.outside} 65536, ${extra.outside} ${extra.outside} 65536`);
    const made = await inside([join(t.pins, 'A')], [...ctl, 'create', 'big', '--uid-map', `0 ${extra.inside} 65536`]);
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

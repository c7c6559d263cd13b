// The owner of a context as an attacker (SPEC §12): each attack of issue 21 played by a throwaway
// user against a real agent, and its result checked from the host side, never from the agent's word.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, makeCheckoutReachable, startAgent, usernsctl, USERNSCTL, usernsctlAt } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree, populateBackup } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser } from '../helpers/kernel.ts';
import { sealingDirectory } from '../../agent/seal.ts';

/** The owner's delegated range (its subuid and subgid entry here). */
const B = 7_300_000;
/** The agent's userdb socket, asked directly (not through nss-systemd: this is about the socket). */
const USERDB_DIR = `/tmp/usernsd-attacks-${process.pid}`;
const USERDB = join(USERDB_DIR, 'io.usernsd-attacks');
const PY = '/usr/bin/python3';

type User = ReturnType<typeof makeUser>;
const as = (u: { uid: number; gid: number }, cmd: string[]) =>
  spawnSync('setpriv', [`--reuid=${u.uid}`, `--regid=${u.gid}`, '--clear-groups', '--', ...cmd], { encoding: 'utf8', timeout: 60_000 });

/**
 * Every file under `dir` a user other than root could reach on the host (no sealed directory on
 * its path) that is setuid or setgid to an id outside `given`: what an owner must never plant.
 */
function plantedPrivilege(dir: string, given: (id: number) => boolean): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (sealingDirectory(p) === null && ((st.mode & 0o4000 && !given(st.uid)) || (st.mode & 0o2000 && !given(st.gid))))
        out.push(`${p} ${st.uid}:${st.gid} ${(st.mode & 0o7777).toString(8)}`);
    }
  };
  walk(dir);
  return out;
}

describe('e2e: the owner of a context as an attacker gains nothing it was not given (root, SPEC §12)', function () {
  this.timeout(120_000);
  let tree: Tree;
  let agent: RunningAgent;
  let owner: User;
  let bob: User;
  let restoreModes: () => void = () => {};
  const ctl = (args: string[], opts: Parameters<typeof usernsctl>[1] = {}) => usernsctlAt(agent.socket, args, opts);
  const delegated = (id: number) => id === owner.uid || id === owner.gid || (id >= B && id < B + 65536);
  let n = 0;
  const dst = () => {
    const d = join(tree.dir, `dst${++n}`);
    mkdirSync(d);
    chmodSync(d, 0o777);
    return d;
  };

  before(async function () {
    if (!isRoot) this.skip();
    restoreModes = makeCheckoutReachable();
    owner = makeUser();
    bob = makeUser();
    mkdirSync(USERDB_DIR, { recursive: true, mode: 0o755 });
    tree = makeTree(`userdb = yes\nuserdb_socket = ${USERDB}\n`);
    tree.delegate(owner.name, B, 65536);
    tree.context('mine.conf', `[context]\nowner = ${owner.name}\nuid_map = 0 ${B} 65536\ngid_map = 0 ${B} 65536\n`);
    populateBackup(join(tree.dir, 'open'));
    mkdirSync(join(tree.dir, 'sealed'), { mode: 0o700 });
    chmodSync(join(tree.dir, 'sealed'), 0o700);
    populateBackup(join(tree.dir, 'sealed', 'backup'));
    agent = await startAgent(tree);
    for (const t of ['open', 'sealed/backup']) assert.equal((await ctl(['label', 'set', join(tree.dir, t), 'mine', '--config', tree.config])).code, 0);
  });

  after(async () => {
    await cleanup(tree);
    rmSync(USERDB_DIR, { recursive: true, force: true });
    owner?.remove();
    bob?.remove();
    restoreModes();
  });

  it("1. runs nothing as root from the owner's mount namespace: a program bound over the agent's node there is never executed", async () => {
    const marks = join(tree.dir, 'marks');
    mkdirSync(marks);
    chmodSync(marks, 0o777);
    const evil = join(tree.dir, 'evil.sh');
    writeFileSync(evil, `#!/bin/sh\nid -u > ${marks}/ran-as-$(id -u)\nexit 1\n`, { mode: 0o755 });
    chmodSync(evil, 0o755);
    // The owner's own copy of node runs its client; the agent's path is what the attacker replaces.
    const clientNode = join(tree.dir, 'client-node');
    copyFileSync(process.execPath, clientNode);
    chmodSync(clientNode, 0o755);
    const d = dst();
    const agentNode = realpathSync(process.execPath);
    const script = `mount --bind ${evil} ${agentNode} && exec ${clientNode} ${USERNSCTL} --socket ${agent.socket} enter mine --view ${join(tree.dir, 'open')}:${d} -- true`;
    const r = as(owner, ['unshare', '--user', '--map-root-user', '--mount', 'sh', '-c', script]);
    // From inside a namespace of its own the owner has no right to join its context (the kernel's
    // rule), and the agent, which knows where its caller runs (SPEC §14), refuses the view before
    // anything is made in that mount namespace. What matters is below: nothing ran as root.
    assert.match(r.stderr, /E_PERMISSION: a caller in a user namespace of its own \(or a context's\) may not enter context "mine" from there/, r.stderr);
    assert.doesNotMatch(r.stderr, /E_INTERNAL|E_KERNEL|Failed to copy/, r.stderr);
    // A mark is owned by the host uid that wrote it (ids inside a namespace say nothing about that).
    const byRoot = readdirSync(marks).filter((m) => lstatSync(join(marks, m)).uid !== owner.uid);
    assert.deepEqual(byRoot, [], "the program bound over node ran with host ids other than the owner's");
    assert.ok(agent.logs.every((l) => !/ran-as/.test(l.msg)));
    const still = await ctl(['resolve', 'mine']);
    assert.equal(still.code, 0, still.err);
  });

  it("2. plants no setuid file as an id it was not given where a host user can reach it: an open tree's view is read-only, a sealed tree stays sealed", async () => {
    const plant = (d: string) =>
      `cp /bin/true ${d}/x 2>/dev/null && chmod 4755 ${d}/x && echo planted; chown 0:0 ${d}/hpa 2>/dev/null && chmod 6755 ${d}/hpa 2>/dev/null && echo chowned; true`;
    const open = join(tree.dir, 'open');
    const d1 = dst();
    const r1 = await ctl(['enter', 'mine', '--view', `${open}:${d1}`, '--', 'sh', '-c', plant(d1)], { user: owner });
    assert.equal(r1.code, 0, r1.err);
    assert.equal(r1.out, '', 'nothing was written through a view of a tree host users can reach');
    assert.match(r1.err, /is read-only: .* is reachable by users other than root/);
    assert.deepEqual(plantedPrivilege(open, delegated), []);
    const sealed = join(tree.dir, 'sealed', 'backup');
    const d2 = dst();
    const r2 = await ctl(['enter', 'mine', '--view', `${sealed}:${d2}`, '--', 'sh', '-c', `${plant(d2)}; ${d2}/x && echo ran-nosuid`], { user: owner });
    assert.equal(r2.code, 0, r2.err);
    assert.match(r2.out, /planted/, "a sealed tree is the owner's to edit as its context's root");
    assert.ok(existsSync(join(sealed, 'x')), 'on disk, as on-disk root');
    assert.equal(lstatSync(join(sealed, 'x')).uid, 0);
    // From the host, as any user but root, the planted file cannot even be named.
    for (const u of [owner, bob]) assert.notEqual(as(u, ['stat', join(sealed, 'x')]).status, 0, `uid ${u.uid} reached the sealed tree`);
    assert.deepEqual(plantedPrivilege(sealed, delegated), [], 'every setuid file of another id is behind the sealed directory');
  });

  it("3. maps no host id that belongs to someone else: a static map covering another user is refused by check-config and the agent, and the other user's files stay closed", async () => {
    const secret = join(tree.dir, 'bob-secret');
    writeFileSync(secret, 'bob only\n', { mode: 0o600 });
    spawnSync('chown', [`${bob.uid}:${bob.gid}`, secret]);
    tree.context('grab.conf', `[context]\nowner = ${owner.name}\nuid_map = 0 ${bob.uid} 1, 1 ${B} 10\ngid_map = 0 ${owner.gid} 1\n`);
    try {
      const check = await usernsctl(['check-config', '--config', tree.config]);
      assert.equal(check.code, 1);
      assert.match(
        check.err,
        new RegExp(
          `grab\\.conf: \\[context\\] uid_map: maps host uids ${bob.uid}, which were not delegated to ${owner.name} \\(${bob.uid} is ${bob.name}'s\\)`,
        ),
      );
      const reload = await ctl(['reload']);
      assert.equal(reload.code, 1, 'the reload reports the refused file');
      assert.match((await ctl(['metrics'])).out, /^usernsd_reloads_total\{outcome="partial"\} [1-9]/m, 'and the metrics say so: not "ok"');
      const r = await ctl(['enter', 'grab', '--', 'sh', '-c', `setpriv --reuid 0 cat ${secret}`], { user: owner });
      assert.notEqual(r.code, 0);
      assert.doesNotMatch(r.out, /bob only/);
      // To the owner, a context it may not use looks like one that does not exist.
      assert.match(r.err, /E_PERMISSION: uid \d+ may not use context "grab" \(or there is none\)/);
      // A 4,000,000,000-id map is refused the same way.
      tree.context('grab.conf', `[context]\nowner = ${owner.name}\nuid_map = 0 1 4000000000\ngid_map = 0 1 4000000000\n`);
      const huge = await usernsctl(['check-config', '--config', tree.config]);
      assert.match(huge.err, /grab\.conf: \[context\] uid_map: maps host uids .* which were not delegated/);
    } finally {
      spawnSync('rm', ['-f', join(tree.contexts, 'grab.conf'), secret]);
      await ctl(['reload']);
    }
  });

  it('5. counts an owner and every id its context maps as one person: connections from the ids it can become share its limit, root is still served', async () => {
    // The owner holds its whole share of the main socket from its own uid...
    const hold = `import socket, sys, time
socks = []
for i in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); socks.append(s)
print("held", flush=True)
sys.stdin.read()`;
    const holder = spawn('setpriv', [`--reuid=${owner.uid}`, `--regid=${owner.gid}`, '--clear-groups', '--', PY, '-c', hold, agent.socket, '256'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.setEncoding('utf8').on('data', (d: string) => {
          if (d.toString().includes('held')) resolve();
        });
        holder.once('exit', (code) => reject(new Error(`the holder exited ${code}`)));
      });
      // ...then asks again as one of its context's host ids, which it can become (enter, setpriv).
      const probe = `import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(1); s.connect(sys.argv[1])
try:
    print(s.recv(4096).decode(errors="replace"))
except socket.timeout:
    print("served")`;
      // connect() returns once a connection is queued: the agent may not have accepted all 256 yet.
      let inside = as({ uid: B + 5, gid: B + 5 }, [PY, '-c', probe, agent.socket]);
      for (let i = 0; i < 25 && !/E_BUSY/.test(inside.stdout); i++) {
        await new Promise((r) => setTimeout(r, 200));
        inside = as({ uid: B + 5, gid: B + 5 }, [PY, '-c', probe, agent.socket]);
      }
      assert.match(
        inside.stdout,
        new RegExp(`E_BUSY.*uid ${B + 5} \\(counted as uid ${owner.uid}: the owner of the context that maps it\\) holds 256 connections already`),
        inside.stdout + inside.stderr,
      );
      const other = as({ uid: bob.uid, gid: bob.gid }, [PY, '-c', probe, agent.socket]);
      assert.match(other.stdout, /served/, "another person is not held to the owner's limit");
      const root = await ctl(['resolve', 'mine']);
      assert.equal(root.code, 0, root.err);
    } finally {
      holder.stdin.end();
      holder.kill();
    }
  });

  it('5. a userdb connection that sends lookups and never reads its replies makes the agent hold a bounded amount, and it stays up', async () => {
    const rss = () => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${agent.child.pid}/status`, 'utf8'))![1]) / 1024;
    const flood = `import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(3)
msg = ('{"method":"io.systemd.UserDatabase.GetUserRecord","parameters":{"uid":%d,"service":"io.usernsd-attacks"}}' % int(sys.argv[2])).encode() + b"\\0"
sent = 0
try:
    while sent < 32 * 1024 * 1024:
        sent += s.send(msg * 64)
except socket.timeout:
    pass
print(sent, flush=True)
time.sleep(2)`;
    const before = rss();
    const r = as(owner, [PY, '-c', flood, USERDB, String(B + 1000)]);
    assert.equal(r.status, 0, r.stderr);
    const after = rss();
    const sent = Number(r.stdout.trim()) / 2 ** 20;
    // On 69f7858 the agent kept about four bytes of reply per byte sent (64 MiB sent: +248 MiB).
    assert.ok(after - before < 48, `the agent grew by ${(after - before).toFixed(0)} MiB for ${sent.toFixed(1)} MiB of lookups never read`);
    const still = await ctl(['resolve', 'mine']);
    assert.equal(still.code, 0, still.err);
  });

  it('6. learns nothing of contexts it may not use or paths it cannot reach: explain answers a hidden context as a missing one, and an ACL that denies counts', async () => {
    tree.context('hidden.conf', `[context]\nuid_map = 0 ${B + 65536} 65536\ngid_map = 0 ${B + 65536} 65536\n`);
    assert.equal((await ctl(['reload'])).code, 0);
    const pub = join(tree.dir, 'pub6');
    mkdirSync(pub, { mode: 0o755 });
    chmodSync(pub, 0o755);
    for (const label of ['hidden', 'nosuch']) {
      mkdirSync(join(pub, label));
      writeFileSync(join(pub, label, 'f'), 'x');
      assert.equal((await ctl(['label', 'set', join(pub, label), label, '--config', tree.config])).code, 0);
    }
    const explain = async (path: string) => {
      const r = await ctl(['--json', 'explain', path], { user: owner });
      return { code: r.code, text: (r.code === 0 ? r.out : r.err).replaceAll(/hidden|nosuch/g, 'L') };
    };
    const [hidden, nosuch] = [await explain(join(pub, 'hidden', 'f')), await explain(join(pub, 'nosuch', 'f'))];
    assert.equal(hidden.code, 0, hidden.text);
    assert.deepEqual(hidden, nosuch, 'a context the owner may not use looks like one that does not exist');
    // An ACL entry that denies the owner: the mode alone would let it search.
    const denied = join(tree.dir, 'acl6');
    mkdirSync(join(denied, 'inner'), { recursive: true, mode: 0o755 });
    chmodSync(denied, 0o755);
    writeFileSync(join(denied, 'inner', 'f'), 'x');
    assert.equal(spawnSync('setfacl', ['-m', `u:${owner.uid}:---`, denied]).status, 0, 'setfacl (the acl package)');
    assert.notEqual(as(owner, ['ls', join(denied, 'inner')]).status, 0, 'the kernel denies the owner');
    const viaAcl = await ctl(['explain', join(denied, 'inner', 'f')], { user: owner });
    const missing = await ctl(['explain', join(denied, 'inner', 'nope')], { user: owner });
    assert.equal(viaAcl.code, 1);
    assert.equal(
      viaAcl.err.replace(/\/f$/, ''),
      missing.err.replace(/\/nope$/, '').replace('nope', 'f'),
      'an existing file behind a denying ACL answers as a missing one',
    );
    assert.match(viaAcl.err, /E_PERMISSION: uid \d+ cannot reach .* \(or it does not exist\)/);
  });
});

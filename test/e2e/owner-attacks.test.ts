// The owner of a context as an attacker (SPEC §12): each attack of issue 21 played by a throwaway
// user against a real agent, and its result checked from the host side, never from the agent's word.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { USERNSCTL, cleanup, makeCheckoutReachable, startAgent, usernsctl } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree, populateBackup } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser } from '../helpers/kernel.ts';
import { sealingDirectory } from '../../agent/seal.ts';

/** The owner's delegated range (its subuid and subgid entry here). */
const B = 7_300_000;

type User = ReturnType<typeof makeUser>;
const as = (u: { uid: number; gid: number }, cmd: string[]) => spawnSync('setpriv', [`--reuid=${u.uid}`, `--regid=${u.gid}`, '--clear-groups', '--', ...cmd], { encoding: 'utf8', timeout: 60_000 });

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
      else if (sealingDirectory(p) === null && (((st.mode & 0o4000) && !given(st.uid)) || ((st.mode & 0o2000) && !given(st.gid)))) out.push(`${p} ${st.uid}:${st.gid} ${(st.mode & 0o7777).toString(8)}`);
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
  const ctl = (args: string[], opts: Parameters<typeof usernsctl>[1] = {}) => usernsctl(['--socket', agent.socket, ...args], opts);
  const delegated = (id: number) => id === owner.uid || id === owner.gid || (id >= B && id < B + 65536);
  let n = 0;
  const dst = () => { const d = join(tree.dir, `dst${++n}`); mkdirSync(d); chmodSync(d, 0o777); return d; };

  before(async function () {
    if (!isRoot) this.skip();
    restoreModes = makeCheckoutReachable();
    owner = makeUser();
    bob = makeUser();
    tree = makeTree();
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
    owner?.remove();
    bob?.remove();
    restoreModes();
  });

  it('1. runs nothing as root from the owner\'s mount namespace: a program bound over the agent\'s node there is never executed', async () => {
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
    // The view itself is made (by usernsd-spawner's worker); the enter after it fails: from inside
    // a namespace of its own, the owner has no right to join its context. What matters is below.
    assert.doesNotMatch(r.stderr, /E_PERMISSION|E_INTERNAL|E_KERNEL|Failed to copy/, r.stderr);
    // A mark is owned by the host uid that wrote it (ids inside a namespace say nothing about that).
    const byRoot = readdirSync(marks).filter((m) => lstatSync(join(marks, m)).uid !== owner.uid);
    assert.deepEqual(byRoot, [], 'the program bound over node ran with host ids other than the owner\'s');
    assert.ok(agent.logs.every((l) => !/ran-as/.test(l.msg)));
    const still = await ctl(['resolve', 'mine']);
    assert.equal(still.code, 0, still.err);
  });

  it('2. plants no setuid file as an id it was not given where a host user can reach it: an open tree\'s view is read-only, a sealed tree stays sealed', async () => {
    const plant = (d: string) => `cp /bin/true ${d}/x 2>/dev/null && chmod 4755 ${d}/x && echo planted; chown 0:0 ${d}/hpa 2>/dev/null && chmod 6755 ${d}/hpa 2>/dev/null && echo chowned; true`;
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
    assert.match(r2.out, /planted/, 'a sealed tree is the owner\'s to edit as its context\'s root');
    assert.ok(existsSync(join(sealed, 'x')), 'on disk, as on-disk root');
    assert.equal(lstatSync(join(sealed, 'x')).uid, 0);
    // From the host, as any user but root, the planted file cannot even be named.
    for (const u of [owner, bob]) assert.notEqual(as(u, ['stat', join(sealed, 'x')]).status, 0, `uid ${u.uid} reached the sealed tree`);
    assert.deepEqual(plantedPrivilege(sealed, delegated), [], 'every setuid file of another id is behind the sealed directory');
  });

  it('3. maps no host id that belongs to someone else: a static map covering another user is refused by check-config and the agent, and the other user\'s files stay closed', async () => {
    const secret = join(tree.dir, 'bob-secret');
    writeFileSync(secret, 'bob only\n', { mode: 0o600 });
    spawnSync('chown', [`${bob.uid}:${bob.gid}`, secret]);
    tree.context('grab.conf', `[context]\nowner = ${owner.name}\nuid_map = 0 ${bob.uid} 1, 1 ${B} 10\ngid_map = 0 ${owner.gid} 1\n`);
    try {
      const check = await usernsctl(['check-config', '--config', tree.config]);
      assert.equal(check.code, 1);
      assert.match(check.err, new RegExp(`grab\\.conf: \\[context\\] uid_map: maps host uids ${bob.uid}, which were not delegated to ${owner.name} \\(${bob.uid} is ${bob.name}'s\\)`));
      const reload = await ctl(['reload']);
      assert.equal(reload.code, 1, 'the reload reports the refused file');
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
});

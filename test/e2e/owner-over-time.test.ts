// The owner as an attacker over time, model-based (SPEC §12): random sequences of what an owner can
// do inside its context through enter --view — create, chown, chmod with setuid and setgid, mknod,
// hard links, renames, xattrs, POSIX ACLs, nested contexts — on a tree other host users can reach
// and on a sealed one, with reloads and restarts between; after every step a host-side scan proves
// that no file a non-root host user can reach carries an id, or a setuid/setgid bit, the owner was
// not given.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { sealingDirectory } from '../../agent/seal.ts';
import { callAgent } from '../../agent/wire/client.ts';
import * as P from '../../agent/wire/protocol.ts';
import { cleanup, makeCheckoutReachable, startAgent, usernsctl } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree, populateBackup } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser, unmountAll } from '../helpers/kernel.ts';
import { modelTests } from '../helpers/model.ts';

const B = 7_500_000;
type User = ReturnType<typeof makeUser>;
type Snapshot = Map<string, string>;
type Real = { tree: Tree; agent: RunningAgent; owner: User; open: string; sealed: string; before: Snapshot; n: number };
type Model = { steps: number };

/** Every entry under `dir`, as "uid:gid:mode", by path. */
function snapshot(dir: string): Snapshot {
  const out: Snapshot = new Map();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = lstatSync(p);
      out.set(p, `${st.uid}:${st.gid}:${(st.mode & 0o177777).toString(8)}:${st.ino}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

/** The two trees the owner works on, and the directory that seals one of them. */
const trees = (r: Pick<Real, 'open' | 'sealed'>): Snapshot => new Map([...snapshot(r.open), ...snapshot(join(r.sealed, '..'))]);

/**
 * The invariant, read from the host: a file that changed or appeared since the start, and that a
 * non-root host user can reach (no sealed directory on its path), has only ids the owner was given
 * (its uid and gid, its range) — and nothing reachable is setuid or setgid to an id it was not given.
 */
function check(r: Real): void {
  const given = (id: number) => id === r.owner.uid || id === r.owner.gid || (id >= B && id < B + 65536);
  const now = trees(r);
  const bad: string[] = [];
  for (const [p, meta] of now) {
    if (sealingDirectory(p) !== null) continue;
    const [uid, gid, mode] = meta.split(':').map((x, i) => (i === 2 ? parseInt(x, 8) : Number(x)));
    const changed = r.before.get(p) !== meta;
    if (changed && (!given(uid) || !given(gid))) bad.push(`${p} ${meta} (changed or new)`);
    if ((mode & 0o4000 && !given(uid)) || (mode & 0o2000 && !given(gid))) bad.push(`${p} ${meta} (setuid/setgid)`);
  }
  assert.deepEqual(bad, [], 'a file a host user can reach carries an id the owner was not given');
}

/** What the owner runs inside, as its context's root, each in its own subshell (a refusal is fine). */
const OPS = {
  create: (d: string, k: number) => `touch ${d}/c${k}`,
  chownRoot: (d: string, k: number) => `touch ${d}/r${k} && chown 0:0 ${d}/r${k}`,
  chownUser: (d: string, k: number) => `touch ${d}/u${k} && chown 1000:1000 ${d}/u${k}`,
  setuid: (d: string, k: number) => `cp /bin/true ${d}/s${k} && chown 0:0 ${d}/s${k} && chmod 4755 ${d}/s${k}`,
  setgid: (d: string, k: number) => `cp /bin/true ${d}/g${k} && chmod 2755 ${d}/g${k}`,
  setuidExisting: (d: string) => `chmod 4755 ${d}/root`,
  mknod: (d: string, k: number) => `mknod ${d}/n${k} c 1 3`,
  hardlink: (d: string, k: number) => `ln ${d}/root ${d}/l${k}`,
  rename: (d: string, k: number) => `mv ${d}/hpa ${d}/hpa${k} && mv ${d}/hpa${k} ${d}/hpa`,
  xattr: (d: string) => `setfattr -n user.x -v y ${d}/hpa`,
  acl: (d: string) => `setfacl -m u:0:rwx ${d}/hpa`,
  mkdirRoot: (d: string, k: number) => `mkdir ${d}/dir${k} && chmod 4777 ${d}/dir${k}`,
} as const;
type Op = keyof typeof OPS;

type Command = fc.AsyncCommand<Model, Real>;
const command = (name: string, run: (m: Model, r: Real) => Promise<void>): Command => ({ check: () => true, run, toString: () => name });

const ownerSession = (where: 'open' | 'sealed', nested: boolean, ops: Op[]) =>
  command(`enter ${nested ? 'kid' : 'mine'} --view ${where}: ${ops.join(', ')}`, async (m, r) => {
    const dst = join(r.tree.dir, `dst${++r.n}`);
    mkdirSync(dst);
    chmodSync(dst, 0o777);
    const src = where === 'open' ? r.open : r.sealed;
    const script = ops.map((op, k) => `(${OPS[op](dst, r.n * 100 + k)}) 2>/dev/null; true`).join('; ');
    const res = await usernsctl(['--socket', r.agent.socket, 'enter', nested ? 'kid' : 'mine', '--view', `${src}:${dst}`, '--', 'sh', '-c', script], {
      user: r.owner,
    });
    // A nested context's tree is its parent's: the label says mine, so kid is refused (E_PERMISSION);
    // anything else must work or fail with a clear error, never crash the agent.
    assert.ok(res.code === 0 || /E_PERMISSION|E_UNSUPPORTED|E_INVALID/.test(res.err), res.err);
    m.steps++;
    check(r);
  });

const reload = command('reload', async (m, r) => {
  await callAgent(r.agent.socket, P.reload, {});
  check(r);
});

const restart = command('restart', async (m, r) => {
  assert.equal(await r.agent.stop(), 0);
  r.agent = await startAgent(r.tree, ['--log-level', 'info']);
  check(r);
});

const opsArb = fc.array(fc.constantFrom(...(Object.keys(OPS) as Op[])), { minLength: 1, maxLength: 6 });
const commandsArb = fc.commands(
  [
    fc.tuple(fc.constantFrom<'open' | 'sealed'>('open', 'sealed'), fc.boolean(), opsArb).map(([w, nested, ops]) => ownerSession(w, nested, ops)),
    fc.tuple(fc.constantFrom<'open' | 'sealed'>('open', 'sealed'), opsArb).map(([w, ops]) => ownerSession(w, false, ops)),
    fc.constant(reload),
    fc.constant(restart),
  ],
  { maxCommands: 6 },
);

describe('e2e: an owner attacking through its views over time, model-based, checked from the host (root)', function () {
  this.timeout(600_000);
  let owner: User | undefined;
  let restoreModes: () => void = () => {};
  before(function () {
    if (!isRoot) this.skip();
    restoreModes = makeCheckoutReachable();
    owner = makeUser();
  });
  after(() => {
    owner?.remove();
    restoreModes();
  });

  const property = () =>
    fc.asyncProperty(commandsArb, async (cmds) => {
      const tree = makeTree();
      const open = join(tree.dir, 'open');
      const sealed = join(tree.dir, 'sealed', 'backup');
      populateBackup(open);
      mkdirSync(join(tree.dir, 'sealed'), { mode: 0o700 });
      chmodSync(join(tree.dir, 'sealed'), 0o700);
      populateBackup(sealed);
      tree.delegate(owner!.name, B, 65536);
      tree.context('mine.conf', `[context]\nowner = ${owner!.name}\nuid_map = 0 ${B} 65536\ngid_map = 0 ${B} 65536\n`);
      tree.context('kid.conf', '[context]\nparent = mine\nuid_map = 0 1000 100\ngid_map = 0 1000 100\n');
      for (const t of [open, sealed]) spawnSync('setfattr', ['-n', 'trusted.userns', '-v', 'mine', t]);
      const real: Real = { tree, owner: owner!, open, sealed, agent: undefined as unknown as RunningAgent, before: new Map(), n: 0 };
      try {
        real.agent = await startAgent(tree, ['--log-level', 'info']);
        real.before = trees(real);
        await fc.asyncModelRun(() => ({ model: { steps: 0 }, real }), cmds);
      } finally {
        await cleanup(undefined);
        unmountAll(tree.dir);
        tree.remove();
      }
    });

  modelTests({ file: import.meta.url, title: 'no reachable file carries an id the owner was not given', runs: 6, seed: 20261205 }, property);
});

// Delegations over time, model-based (SPEC §13): random creations, releases, reloads that add or
// remove a cgroup, a network namespace with its veth pair or a device, restarts, SIGKILLs in the
// middle of a creation or a release, and crashes that lose a pin, on a context, one nested in
// it and a sibling; after every step the kernel is read back: no delegated object without a live
// pin, no live pin without its delegations, nothing of a released context left.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { pinnedIno } from '../../agent/kernel/userns.ts';
import { cleanup, startAgent, USERNSCTL, usernsctlHere } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, unmountAll } from '../helpers/kernel.ts';
import { cgroup2Mount } from '../../agent/kernel/delegate.ts';
import { netnsPinned, vethNames } from '../../agent/kernel/netdelegate.ts';
import { modelTests } from '../helpers/model.ts';

// Labels of this suite's own: a veth's host name comes from the label alone, so another suite's
// context "a" with a veth running at the same time would be this one's.
const LABELS = ['ot', 'ot.b', 'oc'] as const;
type Label = (typeof LABELS)[number];
const PARENT: Record<Label, Label | null> = { ot: null, 'ot.b': 'ot', oc: null };
/** The host id each context's root maps to (ot.b is nested: 0 1000 1000 inside ot). */
const ROOT_ID: Record<Label, number> = { ot: 7_800_000, 'ot.b': 7_801_000, oc: 7_900_000 };

type Given = { cgroup: boolean; device: boolean; net: boolean };
type Model = { given: Record<Label, Given>; pinned: Set<Label> };
type Real = { tree: Tree; agent: RunningAgent; cgRoot: string };

const descendants = (l: Label): Label[] => LABELS.filter((x) => PARENT[x] === l);

function writeContext(tree: Tree, l: Label, g: Given): void {
  const maps = l === 'ot.b' ? 'parent = ot\nuid_map = 0 1000 1000\ngid_map = 0 1000 1000' : `uid_map = 0 ${ROOT_ID[l]} 65536\ngid_map = 0 ${ROOT_ID[l]} 65536`;
  const delegate = [g.cgroup ? 'cgroup = yes' : '', g.device ? `devices = ${join(tree.dir, `dev-${l}`)}` : '', g.net ? 'netns = yes\nveth = yes' : '']
    .filter(Boolean)
    .join('\n');
  tree.context(`${l}.conf`, `[context]\n${maps}\n[delegate]\n${delegate}\n`);
}

/** Where the model says a context's cgroup is: under its parent's when the parent has one. */
function cgroupPath(m: Model, r: Real, l: Label): string {
  const p = PARENT[l];
  return p !== null && m.given[p].cgroup ? join(cgroupPath(m, r, p), l) : join(r.cgRoot, l);
}

function cgroupsUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .flatMap((e) => [join(dir, e.name), ...cgroupsUnder(join(dir, e.name))]);
}

/** The invariants, from the kernel. */
function check(m: Model, r: Real): void {
  const want = new Set<string>();
  for (const l of LABELS) {
    const pinned = pinnedIno(join(r.tree.pins, l)) !== null;
    assert.equal(pinned, m.pinned.has(l), `${l} is ${pinned ? '' : 'not '}pinned`);
    const dev = lstatSync(join(r.tree.dir, `dev-${l}`));
    const devOwner = pinned && m.given[l].device ? ROOT_ID[l] : 0;
    assert.equal(`${dev.uid}:${dev.gid}`, `${devOwner}:${devOwner}`, `the device of ${l}`);
    assert.equal(dev.mode & 0o777, 0o640, `the mode of ${l}'s device`);
    const net = pinned && m.given[l].net;
    assert.equal(netnsPinned(join(r.tree.dir, 'netns', l)), net, `the network namespace of ${l}`);
    assert.equal(existsSync(join(r.tree.dir, 'netns', l)), net, `no file left where ${l}'s network namespace was`);
    assert.equal(spawnSync('ip', ['link', 'show', 'dev', vethNames(l).host], { stdio: 'ignore' }).status === 0, net, `the veth pair of ${l}`);
    if (pinned && m.given[l].cgroup) {
      const cg = cgroupPath(m, r, l);
      want.add(cg);
      const st = lstatSync(cg);
      assert.equal(`${st.uid}:${st.gid}`, `${ROOT_ID[l]}:${ROOT_ID[l]}`, `the cgroup of ${l}`);
      assert.equal(lstatSync(join(cg, 'cgroup.procs')).uid, ROOT_ID[l]);
    }
  }
  assert.deepEqual(cgroupsUnder(r.cgRoot).sort(), [...want].sort(), 'the cgroups are exactly those of the pinned contexts given one');
}

type Command = fc.AsyncCommand<Model, Real>;
const command = (name: string, run: (m: Model, r: Real) => Promise<void>, when: (m: Model) => boolean = () => true): Command => ({
  check: when,
  run,
  toString: () => name,
});

const ok = async (r: Real, args: string[]) => {
  const res = await usernsctlHere(['--socket', r.agent.socket, ...args]);
  assert.equal(res.code, 0, `usernsctl ${args.join(' ')}: ${res.err}`);
};

const resolve = (l: Label) =>
  command(`resolve ${l}`, async (m, r) => {
    await ok(r, ['resolve', l]);
    for (let x: Label | null = l; x !== null; x = PARENT[x]) m.pinned.add(x);
    check(m, r);
  });

const release = (l: Label, kill: boolean) =>
  command(`release${kill ? ' --kill' : ''} ${l}`, async (m, r) => {
    await ok(r, ['release', ...(kill ? ['--kill'] : []), l]);
    for (const x of [l, ...descendants(l)]) m.pinned.delete(x);
    check(m, r);
  });

const reconfigure = (l: Label, g: Given) =>
  command(`give ${l} ${JSON.stringify(g)}, reload`, async (m, r) => {
    writeContext(r.tree, l, g);
    m.given[l] = g;
    await ok(r, ['reload']);
    check(m, r);
  });

const restart = command('restart', async (m, r) => {
  assert.equal(await r.agent.stop(), 0);
  r.agent = await startAgent(r.tree, ['--log-level', 'info']);
  check(m, r);
});

/** SIGKILL, and while the agent is down a pin with nothing pinned inside it is lost. */
const crashLosing = (l: Label) =>
  command(
    `SIGKILL, lose the pin of ${l}, start`,
    async (m, r) => {
      r.agent.child.kill('SIGKILL');
      await r.agent.exited;
      spawnSync('umount', ['-l', join(r.tree.pins, l)]);
      m.pinned.delete(l);
      r.agent = await startAgent(r.tree, ['--log-level', 'info']);
      check(m, r);
    },
    (m) => m.pinned.has(l) && descendants(l).every((d) => !m.pinned.has(d)),
  );

/**
 * SIGKILL while a creation or a release is under way (after `delayMs`), then a start: whatever the
 * kill left pinned is the model's now (read from the kernel), and must hold all it is given.
 */
const killDuring = (what: 'resolve' | 'release', l: Label, delayMs: number) =>
  command(`SIGKILL ${delayMs} ms into ${what} ${l}, start`, async (m, r) => {
    const client = spawn(process.execPath, [USERNSCTL, '--socket', r.agent.socket, what, l], { stdio: 'ignore' });
    const finished = new Promise((res) => client.once('exit', res));
    await new Promise((res) => setTimeout(res, delayMs));
    r.agent.child.kill('SIGKILL');
    await r.agent.exited;
    await finished;
    r.agent = await startAgent(r.tree, ['--log-level', 'info']);
    for (const x of LABELS) {
      if (pinnedIno(join(r.tree.pins, x)) !== null) m.pinned.add(x);
      else m.pinned.delete(x);
    }
    check(m, r);
  });

const label = fc.constantFrom<Label>(...LABELS);
const given = fc.record({ cgroup: fc.boolean(), device: fc.boolean(), net: fc.boolean() });
const commandsArb = fc.commands(
  [
    label.map(resolve),
    fc.tuple(label, fc.boolean()).map(([l, k]) => release(l, k)),
    fc.tuple(label, given).map(([l, g]) => reconfigure(l, g)),
    fc.constant(restart),
    label.map(crashLosing),
    fc.tuple(fc.constantFrom<'resolve' | 'release'>('resolve', 'release'), label, fc.integer({ min: 0, max: 60 })).map(([w, l, ms]) => killDuring(w, l, ms)),
  ],
  { maxCommands: 10 },
);

describe('e2e: delegations over time, model-based, checked against the kernel (root)', function () {
  this.timeout(600_000);
  before(function () {
    if (!isRoot) this.skip();
    if (cgroup2Mount() === null) throw new Error('no cgroup v2 hierarchy is mounted on this machine');
  });

  const property = () =>
    fc.asyncProperty(commandsArb, async (cmds) => {
      const cgRoot = join(cgroup2Mount()!, `usernsd-model-${process.pid}-${Date.now() % 1_000_000}`);
      const tree = makeTree(`cgroup_root = ${cgRoot}\n`);
      writeFileSync(tree.config, `${readFileSync(tree.config, 'utf8')}netns_dir = ${join(tree.dir, 'netns')}\n`);
      const model: Model = {
        given: {
          ot: { cgroup: true, device: true, net: false },
          'ot.b': { cgroup: true, device: true, net: true },
          oc: { cgroup: true, device: false, net: true },
        },
        pinned: new Set(),
      };
      for (const l of LABELS) {
        spawnSync('mknod', [join(tree.dir, `dev-${l}`), 'c', '1', '3']);
        spawnSync('chmod', ['640', join(tree.dir, `dev-${l}`)]);
        writeContext(tree, l, model.given[l]);
      }
      const real: Real = { tree, cgRoot, agent: undefined as unknown as RunningAgent };
      try {
        real.agent = await startAgent(tree, ['--log-level', 'info']);
        await fc.asyncModelRun(() => ({ model, real }), cmds);
      } finally {
        await cleanup(undefined);
        unmountAll(tree.dir);
        for (const l of LABELS) spawnSync('ip', ['link', 'del', 'dev', vethNames(l).host], { stdio: 'ignore' });
        for (const cg of cgroupsUnder(cgRoot).reverse()) rmdirSync(cg);
        if (existsSync(cgRoot)) rmdirSync(cgRoot);
        tree.remove();
      }
    });

  modelTests(
    { file: import.meta.url, title: 'no delegated object without a live pin, no live pin without its delegations', runs: 8, seed: 20261206 },
    property,
  );
});

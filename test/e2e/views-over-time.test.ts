// Views over time, model-based: views made and unmounted while the context's file changes, the agent
// reloads, releases and restarts; after every step, what the kernel shows through each view and
// what `view --list` says are checked against the model.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { mountView } from '../../agent/cli/viewcmd.ts';
import { isIdmapped, mountTable } from '../../agent/kernel/mountinfo.ts';
import { callAgent } from '../../agent/wire/client.ts';
import * as P from '../../agent/wire/protocol.ts';
import { cleanup, startAgent } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree, populateBackup } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, unmountAll } from '../helpers/kernel.ts';
import { modelTests } from '../helpers/model.ts';

const BASES = [7_000_000, 7_100_000] as const;
const OVERFLOW = 65534;
type Config = { base: number; squash: 'none' | 'root' };
type View = { dst: string; mode: 'identity' | 'foreign'; readOnly: boolean; made: Config };
type Model = { config: Config; views: View[]; made: number };
type Real = { tree: Tree; agent: RunningAgent; src: string };

const contextText = (c: Config) => `[context]\nuid_map = 0 ${c.base} 65536\ngid_map = 0 ${c.base} 65536\n[squash]\nmode = ${c.squash}\n`;

/** What an on-disk id shows as through a view: the map and squash as they were when it was made. */
function shows(v: View, onDisk: number): number {
  if (onDisk >= 65536) return OVERFLOW;
  if (onDisk === 0 && v.mode === 'foreign' && v.made.squash === 'root') return OVERFLOW;
  return v.made.base + onDisk;
}

async function checkInvariants(m: Model, r: Real): Promise<void> {
  const mounts = mountTable();
  for (const v of m.views) {
    const mount = mounts.get(v.dst);
    assert.ok(mount && isIdmapped(mount), `${v.dst} is an idmapped mount`);
    assert.equal(mount.options.split(',')[0], v.readOnly ? 'ro' : 'rw', `${v.dst} is ${v.readOnly ? 'read-only' : 'writable'}`);
    for (const [name, id] of [
      ['root', 0],
      ['hpa', 1000],
      ['alien', 70000],
    ] as const) {
      const st = statSync(join(v.dst, name));
      assert.equal(`${st.uid}:${st.gid}`, `${shows(v, id)}:${shows(v, id)}`, `${name} through ${v.mode} view ${v.dst} made with ${JSON.stringify(v.made)}`);
    }
  }
  const ours = new Set(Array.from({ length: m.made }, (_, i) => join(r.tree.dir, `v${i + 1}`)));
  for (const dst of ours) if (!m.views.some((v) => v.dst === dst)) assert.ok(!mounts.has(dst), `${dst} was unmounted`);
  const { views } = await callAgent(r.agent.socket, P.views, {});
  const listed = views
    .filter((v) => ours.has(v.target) && mounts.has(v.target))
    .map((v) => `${v.target} ${v.mode} ${v.readOnly}`)
    .sort();
  assert.deepEqual(listed, m.views.map((v) => `${v.dst} ${v.mode} ${v.readOnly}`).sort(), 'view --list shows exactly the views mounted');
}

type Command = fc.AsyncCommand<Model, Real>;
const command = (name: string, check: (m: Readonly<Model>) => boolean, run: (m: Model, r: Real) => Promise<void>): Command => ({
  check,
  run,
  toString: () => name,
});

const makeView = (mode: 'identity' | 'foreign', readOnly: boolean) =>
  command(
    `view --${mode}${readOnly ? ' --read-only' : ''}`,
    () => true,
    async (m, r) => {
      const dst = join(r.tree.dir, `v${++m.made}`);
      mkdirSync(dst);
      const v = mountView(r.agent.socket, r.src, dst, { mode, readOnly });
      assert.equal(v.mechanism, 'idmapped');
      m.views.push({ dst, mode, readOnly, made: { ...m.config } });
      await checkInvariants(m, r);
    },
  );

const unmount = (i: number) =>
  command(
    `umount view #${i}`,
    (m) => m.views.length > 0,
    async (m, r) => {
      const v = m.views.splice(i % m.views.length, 1)[0];
      assert.equal(spawnSync('umount', [v.dst]).status, 0);
      await checkInvariants(m, r);
    },
  );

/** A file created through a view by the host id of on-disk 1000 lands as on-disk 1000 (or EROFS). */
const write = (i: number) =>
  command(
    `write through view #${i}`,
    (m) => m.views.length > 0,
    async (m, r) => {
      const v = m.views[i % m.views.length];
      const uid = shows(v, 1000);
      const name = `w${Date.now()}-${i}`;
      const res = spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', 'touch', join(v.dst, 'pub', name)], { encoding: 'utf8' });
      if (v.readOnly) assert.match(res.stderr, /Read-only file system/);
      else {
        assert.equal(res.status, 0, res.stderr);
        const st = statSync(join(r.src, 'pub', name));
        assert.equal(`${st.uid}:${st.gid}`, '1000:1000');
      }
    },
  );

const reconfigure = (c: Config) =>
  command(
    `write ctx.conf ${JSON.stringify(c)} + reload`,
    () => true,
    async (m, r) => {
      r.tree.context('ctx.conf', contextText(c));
      await callAgent(r.agent.socket, P.reload, {});
      m.config = c;
      await checkInvariants(m, r);
    },
  );

const release = command(
  'resolve + release ctx',
  () => true,
  async (m, r) => {
    await callAgent(r.agent.socket, P.resolve, { label: 'ctx' }).catch(() => null); // drift after a change is fine: release clears it
    await callAgent(r.agent.socket, P.release, { label: 'ctx' });
    await checkInvariants(m, r);
  },
);

const restart = command(
  'restart',
  () => true,
  async (m, r) => {
    assert.equal(await r.agent.stop(), 0);
    r.agent = await startAgent(r.tree, ['--log-level', 'info']);
    await checkInvariants(m, r);
  },
);

const configArb = fc.record({ base: fc.constantFrom(...BASES), squash: fc.constantFrom<'none' | 'root'>('none', 'root') });
const commandsArb = fc.commands(
  [
    fc.tuple(fc.constantFrom<'identity' | 'foreign'>('identity', 'foreign'), fc.boolean()).map(([mode, ro]) => makeView(mode, ro)),
    fc.tuple(fc.constantFrom<'identity' | 'foreign'>('identity', 'foreign'), fc.boolean()).map(([mode, ro]) => makeView(mode, ro)),
    fc.nat(7).map(unmount),
    fc.nat(7).map(write),
    configArb.map(reconfigure),
    fc.constant(release),
    fc.constant(restart),
  ],
  { maxCommands: 12 },
);

describe('e2e: views over time, model-based, checked in the kernel (root)', function () {
  this.timeout(600_000);
  before(function () {
    if (!isRoot) this.skip();
  });

  const property = () =>
    fc.asyncProperty(configArb, commandsArb, async (initial, cmds) => {
      const tree = makeTree();
      const src = join(tree.dir, 'backup');
      populateBackup(src);
      tree.context('ctx.conf', contextText(initial));
      const real: Real = { tree, src, agent: undefined as unknown as RunningAgent };
      try {
        real.agent = await startAgent(tree, ['--log-level', 'info']);
        spawnSync('setfattr', ['-n', 'trusted.userns', '-v', 'ctx', src]);
        await fc.asyncModelRun(() => ({ model: { config: initial, views: [], made: 0 }, real }), cmds);
      } finally {
        await cleanup(undefined);
        unmountAll(tree.dir);
        tree.remove();
      }
    });

  modelTests({ file: import.meta.url, title: 'shows every view as it was made, lists exactly what is mounted', runs: 8, seed: 20261129 }, property);
});

// Contexts made from inside over time, model-based (SPEC §14): random creations and releases by the
// roots of two sibling contexts from inside them, releases by host root, restarts, SIGKILLs and lost
// pins. After every step the state directory and the kernel are read back: exactly the model's
// records, each pinned and nested in its parent's pin; each caller lists exactly its subtree; and a
// caller never learns of a context outside it (the same answer as for a label that does not exist).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { cleanup, InsideClients, startAgent, usernsctlHere } from '../helpers/agent.ts';
import type { Run, RunningAgent } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, unmountAll } from '../helpers/kernel.ts';
import { modelTests } from '../helpers/model.ts';
import * as P from '../../agent/wire/protocol.ts';
import { callAgent } from '../../agent/wire/client.ts';

const TOPS = ['L', 'M'] as const;
type Top = (typeof TOPS)[number];
const QUOTA: Record<Top, number> = { L: 3, M: 2 };
const ROOT_ID: Record<Top, number> = { L: 7_700_000, M: 7_765_536 };
/** Names a root gives, in its own terms, and the maps each gets (outside ids: the parent's). */
const NAMES = ['a', 'b', 'a.c', 'b.d'] as const;
type Name = (typeof NAMES)[number];
const MAP: Record<Name, string> = { a: '0 1000 100', b: '0 2000 100', 'a.c': '0 10 10', 'b.d': '0 20 10' };
const parentName = (n: Name): Name | null => (n.includes('.') ? (n.slice(0, n.indexOf('.')) as Name) : null);

/** The records the model expects: full labels. */
type Model = { records: Set<string> };
type Real = { tree: Tree; agent: RunningAgent; inside: InsideClients };

/**
 * usernsctl inside `top`'s namespace as its root (the pin made first from the host, as a container
 * start would): one process kept there per namespace, not one per call (a check lists from both).
 */
async function inside(r: Real, top: Top, args: string[]): Promise<Run> {
  await callAgent(r.agent.socket, P.resolve, { label: top }); // in this process: a step spawns enough already
  return r.inside.run([join(r.tree.pins, top)], ['--socket', r.agent.socket, ...args]);
}

function check(m: Model, r: Real): Promise<void> {
  return (async () => {
    const dir = join(r.tree.state, 'children');
    const records = existsSync(dir) ? readdirSync(dir).filter((n) => n.endsWith('.conf')) : [];
    assert.deepEqual(records.map((n) => n.slice(0, -5)).sort(), [...m.records].sort(), "the records are the model's");
    // Each pinned, and in its parent's pin (status says drift or stale otherwise).
    const st = await callAgent(r.agent.socket, P.status, {});
    const states = new Map(st.contextStates!.map((c) => [c.label, c.state]));
    for (const l of m.records) assert.equal(states.get(l), 'pinned', `${l} is pinned where it belongs`);
    for (const top of TOPS) {
      const listed = JSON.parse((await inside(r, top, ['--json', 'list'])).out) as P.ListResult;
      const mine = [top, ...[...m.records].filter((l) => l.startsWith(`${top}.`))];
      assert.deepEqual(listed.contexts.map((c) => c.label).sort(), mine.sort(), `${top} lists its subtree`);
    }
    // No oracle: from inside M, a context of L's (when there is one) answers as nothing does.
    const other = [...m.records].find((l) => l.startsWith('L.'));
    if (other) {
      const seen = await inside(r, 'M', ['resolve', other]);
      const none = await inside(r, 'M', ['resolve', 'L.none']);
      assert.equal(seen.code, 1);
      assert.equal(seen.err.replaceAll(other, 'X'), none.err.replaceAll('L.none', 'X'));
    }
  })();
}

type Command = fc.AsyncCommand<Model, Real>;
const command = (name: string, go: (m: Model, r: Real) => Promise<void>): Command => ({ check: () => true, run: go, toString: () => name });

const create = (top: Top, n: Name) =>
  command(`inside ${top}: create ${n}`, async (m, r) => {
    const label = `${top}.${n}`;
    const p = parentName(n);
    const count = [...m.records].filter((l) => l.startsWith(`${top}.`)).length;
    const res = await inside(r, top, ['create', n, '--uid-map', MAP[n]]);
    if (m.records.has(label)) assert.match(res.err, /E_INVALID: context ".*" exists already/);
    else if (p !== null && !m.records.has(`${top}.${p}`)) assert.match(res.err, /E_PERMISSION: .*or its parent does not exist/);
    else if (count >= QUOTA[top]) assert.match(res.err, new RegExp(`E_BUSY: context "${top}" allows ${QUOTA[top]}`));
    else {
      assert.equal(res.code, 0, res.err);
      m.records.add(label);
    }
    if (res.code !== 0) assert.equal(res.code, 1, res.err);
    await check(m, r);
  });

const releaseInside = (top: Top, n: Name) =>
  command(`inside ${top}: release ${n}`, async (m, r) => {
    const label = `${top}.${n}`;
    const res = await inside(r, top, ['release', n]);
    if (m.records.has(label)) {
      assert.equal(res.code, 0, res.err);
      for (const l of [...m.records]) if (l === label || l.startsWith(`${label}.`)) m.records.delete(l);
    } else assert.match(res.err, /E_PERMISSION: uid \d+ may not release/);
    await check(m, r);
  });

const releaseTop = (top: Top) =>
  command(`host root: release ${top}`, async (m, r) => {
    const res = await usernsctlHere(['--socket', r.agent.socket, 'release', top]);
    assert.equal(res.code, 0, res.err);
    for (const l of [...m.records]) if (l.startsWith(`${top}.`)) m.records.delete(l);
    await check(m, r);
  });

const restart = (how: 'SIGTERM' | 'SIGKILL' | 'lose pins') =>
  command(`${how}, start`, async (m, r) => {
    if (how === 'SIGKILL') {
      r.agent.child.kill('SIGKILL');
      await r.agent.exited;
    } else assert.equal(await r.agent.stop(), 0);
    if (how === 'lose pins' && existsSync(r.tree.pins))
      for (const pin of readdirSync(r.tree.pins).filter((n) => !n.startsWith('.'))) spawnSync('umount', ['-l', join(r.tree.pins, pin)]);
    r.agent = await startAgent(r.tree, ['--log-level', 'info']);
    await check(m, r);
  });

const top = fc.constantFrom<Top>(...TOPS);
const name = fc.constantFrom<Name>(...NAMES);
const commandsArb = fc.commands(
  [
    fc.tuple(top, name).map(([t, n]) => create(t, n)),
    fc.tuple(top, name).map(([t, n]) => create(t, n)),
    fc.tuple(top, name).map(([t, n]) => releaseInside(t, n)),
    top.map(releaseTop),
    fc.constantFrom<'SIGTERM' | 'SIGKILL' | 'lose pins'>('SIGTERM', 'SIGKILL', 'lose pins').map(restart),
  ],
  { maxCommands: 9 },
);

describe('e2e: contexts made from inside over time, model-based, checked against the kernel (root)', function () {
  this.timeout(600_000);
  before(function () {
    if (!isRoot) this.skip();
  });

  const property = () =>
    fc.asyncProperty(commandsArb, async (cmds) => {
      const tree = makeTree();
      for (const t of TOPS) tree.context(`${t}.conf`, `[context]\nuid_map = 0 ${ROOT_ID[t]} 65536\ngid_map = 0 ${ROOT_ID[t]} 65536\nchildren = ${QUOTA[t]}\n`);
      const real: Real = { tree, agent: undefined as unknown as RunningAgent, inside: new InsideClients() };
      try {
        real.agent = await startAgent(tree, ['--log-level', 'info']);
        await fc.asyncModelRun(() => ({ model: { records: new Set<string>() }, real }), cmds);
      } finally {
        await real.inside.close();
        await cleanup(undefined);
        unmountAll(tree.dir);
        tree.remove();
      }
    });

  modelTests(
    { file: import.meta.url, title: 'exactly the recorded contexts, pinned, each caller seeing its subtree alone', runs: 4, seed: 20261207 },
    property,
  );
});

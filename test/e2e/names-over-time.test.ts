// Names over time, model-based: contexts written, changed and removed, reloads and restarts; after
// every step the real nss-systemd (getent) names exactly the host ids of the contexts in force.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, rmdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import { callAgent } from '../../agent/wire/client.ts';
import * as P from '../../agent/wire/protocol.ts';
import { cleanup, startAgent } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, unmountAll } from '../helpers/kernel.ts';
import { modelTests } from '../helpers/model.ts';

const LABELS = ['alpha', 'beta.b', 'gamma_3'] as const;
const BASES = [6_600_000, 6_700_000, 6_800_000] as const;
const SERVICE = `io.usernsd.model${process.pid}`;
const USERDB = `/run/systemd/userdb/${SERVICE}`;
const hasNssSystemd = /\bsystemd\b/.test(spawnSync('sh', ['-c', 'grep -E "^passwd:" /etc/nsswitch.conf'], { encoding: 'utf8' }).stdout);

type Model = { files: Map<string, number> }; // label -> base of its 65536 ids
type Real = { tree: Tree; agent: RunningAgent };

// getent as any program runs it: without the bypass this test process holds (config/nss.ts).
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'SYSTEMD_BYPASS_USERDB'));
const getent = (key: string) => spawnSync('getent', ['passwd', key], { encoding: 'utf8', env });

/** Every label and base the model could hold, probed both ways: named exactly when in force. */
function checkInvariants(m: Model): void {
  for (const label of LABELS) {
    for (const base of BASES) {
      const r = getent(String(base + 42));
      const inForce = m.files.get(label) === base;
      if (inForce) assert.equal(r.stdout.split(':')[0], `${label}.42`, `host uid ${base + 42} is ${label}.42`);
      else if (![...m.files.values()].includes(base)) assert.equal(r.status, 2, `host uid ${base + 42} has no name: ${r.stdout}`);
    }
    const byName = getent(`${label}.7`);
    const base = m.files.get(label);
    if (base === undefined) assert.equal(byName.status, 2, `${label}.7 names nothing`);
    else assert.equal(byName.stdout.split(':')[2], String(base + 7));
  }
}

type Command = fc.AsyncCommand<Model, Real>;
const command = (name: string, check: (m: Readonly<Model>) => boolean, run: (m: Model, r: Real) => Promise<void>): Command => ({
  check,
  run,
  toString: () => name,
});

/** Only a write that keeps the contexts disjoint: an overlap is refused (config-over-time covers that). */
const write = (label: string, base: number) =>
  command(
    `write ${label} on ${base} + reload`,
    (m) => ![...m.files].some(([l, b]) => l !== label && b === base),
    async (m, r) => {
      r.tree.context(`${label}.conf`, `[context]\nuid_map = 0 ${base} 65536\ngid_map = 0 ${base} 65536\n`);
      await callAgent(r.agent.socket, P.reload, {});
      m.files.set(label, base);
      checkInvariants(m);
    },
  );

const remove = (label: string) =>
  command(
    `remove ${label} + reload`,
    (m) => m.files.has(label),
    async (m, r) => {
      rmSync(join(r.tree.contexts, `${label}.conf`));
      await callAgent(r.agent.socket, P.reload, {});
      m.files.delete(label);
      checkInvariants(m);
    },
  );

const restart = command(
  'restart',
  () => true,
  async (m, r) => {
    assert.equal(await r.agent.stop(), 0);
    r.agent = await startAgent(r.tree, ['--log-level', 'info']);
    checkInvariants(m);
  },
);

const commandsArb = fc.commands(
  [
    fc.tuple(fc.constantFrom(...LABELS), fc.constantFrom(...BASES)).map(([l, b]) => write(l, b)),
    fc.tuple(fc.constantFrom(...LABELS), fc.constantFrom(...BASES)).map(([l, b]) => write(l, b)),
    fc.constantFrom(...LABELS).map(remove),
    fc.constant(restart),
  ],
  { maxCommands: 8 },
);

describe('e2e: names over time, model-based, read through nss-systemd (root)', function () {
  this.timeout(600_000);
  before(function () {
    if (!isRoot || !hasNssSystemd) this.skip();
  });
  // An agent killed rather than stopped leaves its socket, and the directory it made on a host without systemd.
  const userdbDirBefore = existsSync(dirname(USERDB));
  after(() => {
    if (existsSync(USERDB)) rmSync(USERDB);
    if (!userdbDirBefore)
      try {
        rmdirSync(dirname(USERDB));
      } catch {
        /* another service's socket is there */
      }
  });

  const property = () =>
    fc.asyncProperty(commandsArb, async (cmds) => {
      const tree = makeTree(`userdb = yes\nuserdb_socket = ${USERDB}\n`);
      const real: Real = { tree, agent: undefined as unknown as RunningAgent };
      try {
        real.agent = await startAgent(tree, ['--log-level', 'info']);
        await fc.asyncModelRun(() => ({ model: { files: new Map() }, real }), cmds);
      } finally {
        await cleanup(undefined);
        unmountAll(tree.dir);
        tree.remove();
      }
    });

  modelTests({ file: import.meta.url, title: 'names exactly the host ids of the contexts in force', runs: 6, seed: 20261129 }, property);
});

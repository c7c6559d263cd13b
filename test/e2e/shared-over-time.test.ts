// Shared ranges over time, model-based: two agents on one etcd cluster, files written and removed
// on either host (auto ranges, and a static one each that may break and be fixed), ranges
// forgotten, reloads, restarts, a member bounced; after every step both hosts give every label they
// both have the same ids, every context in force on a host has its ids claimed in the pool under its
// label (a forget is undone by the next settle of a host that still has it), the kernel's pins
// agree, and nothing in the pool overlaps.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { callAgent } from '../../agent/wire/client.ts';
import * as P from '../../agent/wire/protocol.ts';
import { cleanup, startAgent } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { hasEtcd, poolEntries, startCluster } from '../helpers/etcd.ts';
import type { Cluster } from '../helpers/etcd.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, kernelMaps } from '../helpers/kernel.ts';
import { modelTests } from '../helpers/model.ts';

const LABELS = ['a', 'b', 'c', 'd'] as const;
/** Each host's static context: ids outside the pool's range, its own. */
const STATIC = ['s0', 's1'] as const;
const staticBase = (h: 0 | 1) => 120_000_000 + h * 1_000_000;
const staticText = (h: 0 | 1) => `[context]\nuid_map = 0 ${staticBase(h)} 65536\ngid_map = 0 ${staticBase(h)} 65536\n`;
/** What each host's files say: auto labels, and its static one; `broken`: a static whose file is broken now (kept in force at its last good version). */
type Model = { files: [Map<string, 'auto' | 'static'>, Map<string, 'auto' | 'static'>]; broken: [Set<string>, Set<string>] };
type Real = { trees: [Tree, Tree]; agents: [RunningAgent, RunningAgent]; cluster: Cluster; prefix: string };

async function settled(a: RunningAgent): Promise<void> {
  for (const t0 = Date.now(); Date.now() - t0 < 30_000; await new Promise((r) => setTimeout(r, 100))) {
    const s = await callAgent(a.socket, P.status, {});
    if (s.coordinator?.waiting === 0 && s.coordinator.reachable) return;
  }
  throw new Error('an agent still waits for the shared pool');
}

/** Every context in force on a host is claimed in the pool under its label, with the ids it has there (a settle may still be on its way). */
async function claimedInPool(r: Real): Promise<void> {
  const lists = await Promise.all(r.agents.map((a) => callAgent(a.socket, P.list, {})));
  for (let t0 = Date.now(); ; await new Promise((res) => setTimeout(res, 200))) {
    const doc = poolEntries(r.cluster, r.prefix);
    const unclaimed = lists.flatMap((list, h) =>
      list.contexts
        .filter((c) => {
          const start = c.uidMap[0].outside;
          const claim =
            doc.statics[c.label]?.intervals ??
            (doc.ranges[c.label] ? [{ start: doc.ranges[c.label].start, end: doc.ranges[c.label].start + doc.ranges[c.label].size }] : []);
          return !claim.some((i) => i.start <= start && start + c.uidMap[0].count <= i.end);
        })
        .map((c) => `host${h}'s ${c.label}`),
    );
    if (unclaimed.length === 0) return;
    assert.ok(Date.now() - t0 < 15_000, `in force but not claimed in the pool: ${unclaimed.join(', ')}`);
  }
}

async function checkInvariants(m: Model, r: Real): Promise<void> {
  for (const a of r.agents) await settled(a);
  await claimedInPool(r);
  const doc = poolEntries(r.cluster, r.prefix);
  const spans = Object.entries(doc.ranges)
    .map(([l, x]) => ({ l, s: x.start, e: x.start + x.size }))
    .sort((x, y) => x.s - y.s);
  for (let k = 1; k < spans.length; k++) assert.ok(spans[k - 1].e <= spans[k].s, `${spans[k - 1].l} overlaps ${spans[k].l}`);
  const lists = await Promise.all(r.agents.map((a) => callAgent(a.socket, P.list, {})));
  lists.forEach((list, h) => {
    const labels = list.contexts.map((c) => c.label).sort();
    assert.deepEqual(labels, [...m.files[h].keys()].sort(), `host${h} has exactly its files in force (a broken static one at its last good version)`);
    for (const c of list.contexts)
      if (m.files[h].get(c.label) === 'auto') assert.equal(c.uidMap[0].outside, doc.ranges[c.label]?.start, `host${h}'s ${c.label} has the pool's range`);
      else assert.equal(c.uidMap[0].outside, staticBase(h as 0 | 1), `host${h}'s ${c.label} has its file's ids`);
  });
  // The kernel agrees: a label pinned on both hosts maps the same host ids.
  for (const label of LABELS) {
    if (m.files[0].get(label) !== 'auto' || m.files[1].get(label) !== 'auto') continue;
    const pins = await Promise.all(r.agents.map((a) => callAgent(a.socket, P.resolve, { label })));
    assert.deepEqual(kernelMaps(pins[0].path), kernelMaps(pins[1].path), `${label}'s pins`);
  }
}

type Command = fc.AsyncCommand<Model, Real>;
const command = (name: string, check: (m: Readonly<Model>) => boolean, run: (m: Model, r: Real) => Promise<void>): Command => ({
  check,
  run,
  toString: () => name,
});

const write = (h: 0 | 1, label: string) =>
  command(
    `host${h}: write ${label}.conf (auto) + reload`,
    (m) => !m.files[h].has(label),
    async (m, r) => {
      r.trees[h].context(`${label}.conf`, '[context]\nrange = auto\n');
      await callAgent(r.agents[h].socket, P.reload, {});
      m.files[h].set(label, 'auto');
      await checkInvariants(m, r);
    },
  );

const remove = (h: 0 | 1, label: string) =>
  command(
    `host${h}: remove ${label}.conf + reload`,
    (m) => m.files[h].has(label),
    async (m, r) => {
      rmSync(join(r.trees[h].contexts, `${label}.conf`));
      await callAgent(r.agents[h].socket, P.reload, {});
      m.files[h].delete(label);
      m.broken[h].delete(label);
      await checkInvariants(m, r);
    },
  );

/** The host's static file written whole (new, or fixed after it broke). */
const writeStatic = (h: 0 | 1) =>
  command(
    `host${h}: write ${STATIC[h]}.conf (static) + reload`,
    (m) => !m.files[h].has(STATIC[h]) || m.broken[h].has(STATIC[h]),
    async (m, r) => {
      r.trees[h].context(`${STATIC[h]}.conf`, staticText(h));
      await callAgent(r.agents[h].socket, P.reload, {});
      m.files[h].set(STATIC[h], 'static');
      m.broken[h].delete(STATIC[h]);
      await checkInvariants(m, r);
    },
  );

/** The host's static file broken: the context stays in force at its last good version. */
const breakStatic = (h: 0 | 1) =>
  command(
    `host${h}: break ${STATIC[h]}.conf + reload`,
    (m) => m.files[h].has(STATIC[h]) && !m.broken[h].has(STATIC[h]),
    async (m, r) => {
      r.trees[h].context(`${STATIC[h]}.conf`, '[context]\nuid_map = 0 1\n');
      await callAgent(r.agents[h].socket, P.reload, {});
      m.broken[h].add(STATIC[h]);
      await checkInvariants(m, r);
    },
  );

/** ranges forget from one host: refused while pinned anywhere; then both hosts reload, and the pool settles what is still in force. */
const forget = (h: 0 | 1, label: string) =>
  command(
    `host${h}: ranges forget ${label} + both reload`,
    () => true,
    async (m, r) => {
      await callAgent(r.agents[h].socket, P.rangesForget, { label }).catch((e: unknown) => {
        if (!(e instanceof Error && /pinned on/.test(e.message))) throw e;
      });
      for (const a of r.agents) await callAgent(a.socket, P.reload, {});
      await checkInvariants(m, r);
    },
  );

const restart = (h: 0 | 1) =>
  command(
    `host${h}: restart`,
    () => true,
    async (m, r) => {
      assert.equal(await r.agents[h].stop(), 0);
      r.agents[h] = await startAgent(r.trees[h], ['--log-level', 'info']);
      await checkInvariants(m, r);
    },
  );

const bounce = (i: number) =>
  command(
    `etcd member ${i}: killed and started again`,
    () => true,
    async (m, r) => {
      await r.cluster.kill(i);
      await r.cluster.start(i);
      await checkInvariants(m, r);
    },
  );

const host = fc.constantFrom<0 | 1>(0, 1);
const label = fc.constantFrom(...LABELS);
const commandsArb = fc.commands(
  [
    fc.tuple(host, label).map(([h, l]) => write(h, l)),
    fc.tuple(host, label).map(([h, l]) => write(h, l)),
    fc.tuple(host, label).map(([h, l]) => remove(h, l)),
    // The static contexts' life, weighted so that a run often writes one, breaks it and forgets it.
    host.map(writeStatic),
    host.map(writeStatic),
    host.map(breakStatic),
    host.map(breakStatic),
    host.map((h) => remove(h, STATIC[h])),
    fc.tuple(host, fc.constantFrom(...STATIC)).map(([h, l]) => forget(h, l)),
    fc.tuple(host, fc.constantFrom(...STATIC)).map(([h, l]) => forget(h, l)),
    fc.tuple(host, label).map(([h, l]) => forget(h, l)),
    host.map(restart),
    fc.nat(2).map(bounce),
  ],
  { maxCommands: 10 },
);

describe('e2e: shared ranges over time, model-based, two agents on one etcd cluster (root)', function () {
  this.timeout(600_000);
  let cluster: Cluster;
  let run = 0;
  before(async function () {
    if (!isRoot || !hasEtcd) this.skip();
    cluster = await startCluster(3);
  });
  after(async () => {
    await cluster?.stop();
  });

  const property = () =>
    fc.asyncProperty(commandsArb, async (cmds) => {
      const prefix = `/usernsd-model-${process.pid}-${++run}/`;
      const trees = [0, 1].map((h) =>
        makeTree(
          `[pool]\ncoordinator = etcd\nrange = 100000000-110000000\n[etcd]\nendpoints = ${cluster.endpoints.join(', ')}\nprefix = ${prefix}\nname = host${h}\ntimeout = 1500\n`,
        ),
      ) as [Tree, Tree];
      try {
        const agents = (await Promise.all(trees.map((t) => startAgent(t, ['--log-level', 'info'])))) as [RunningAgent, RunningAgent];
        await fc.asyncModelRun(
          () => ({
            model: {
              files: [new Map(), new Map()] as Model['files'],
              broken: [new Set<string>(), new Set<string>()] as Model['broken'],
            },
            real: { trees, agents, cluster, prefix },
          }),
          cmds,
        );
      } finally {
        for (const t of trees) await cleanup(t);
      }
    });

  modelTests({ file: import.meta.url, title: 'both hosts agree on every label', runs: 4, seed: 20261129 }, property);
});

// Shared ranges: one allocation decided in etcd (a read and a compare-and-swap on a 3-member
// cluster on loopback) against one decided locally (the allocator and the fsync'd ranges.json), and
// an agent's start-up with 1,000 auto contexts, local against etcd; interleaved in one run.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assignRanges } from '../agent/coord/allocate.ts';
import type { Allocation } from '../agent/coord/allocate.ts';
import { EtcdCoordinator } from '../agent/coord/etcd.ts';
import { ensureStateDir, writeAllocations } from '../agent/coord/state.ts';
import type { ContextDef, Pool } from '../config/types.ts';
import { cleanup, startAgent } from '../test/helpers/agent.ts';
import { hasEtcd, startCluster } from '../test/helpers/etcd.ts';
import { makeTree } from '../test/helpers/fixtures.ts';
import { pct, msSince } from './report.ts';

const POOL: Pool = { start: 100_000_000, end: 499_999_999, size: 65536 };

export type SharedBench = {
  available: boolean;
  runs: number;
  local: { p50: number; p99: number };
  etcd: { p50: number; p99: number };
  contexts: number;
  startLocal: number;
  startEtcd: number;
};

export async function benchShared(runs = 200, contexts = 1000): Promise<SharedBench> {
  if (!hasEtcd) return { available: false, runs, local: { p50: 0, p99: 0 }, etcd: { p50: 0, p99: 0 }, contexts, startLocal: 0, startEtcd: 0 };
  const cluster = await startCluster(3);
  const state = mkdtempSync(join(tmpdir(), 'usernsd-bench-state-'));
  try {
    const coord = new EtcdCoordinator({
      endpoints: cluster.endpoints,
      prefix: `/bench-${process.pid}/`,
      ca: null,
      cert: null,
      key: null,
      timeoutMs: 2000,
      name: 'bench',
    });
    const recorded = new Map<string, Allocation>();
    const local: number[] = [];
    const shared: number[] = [];
    for (let i = 0; i < runs + 10; i++) {
      const label = `b${i}`;
      // Local: what a load does for one new auto context: allocate against the record, write it durably.
      let t0 = process.hrtime.bigint();
      const def = { label, autoSize: POOL.size, file: 'x' } as ContextDef;
      const { fresh } = assignRanges([def], POOL, recorded, [], []);
      for (const [l, a] of fresh) recorded.set(l, a);
      ensureStateDir(state);
      writeAllocations(state, recorded);
      const dl = msSince(t0);
      t0 = process.hrtime.bigint();
      await coord.settle([{ label, size: POOL.size }], [], POOL, []);
      const de = msSince(t0);
      if (i >= 10) {
        local.push(dl);
        shared.push(de);
      }
    }
    await coord.close();
    // Start-up to ready with 1,000 auto contexts, each new to its pool: local, then etcd.
    const startup = async (extra: string) => {
      const tree = makeTree(extra);
      try {
        for (let k = 0; k < contexts; k++) tree.context(`s${k}.conf`, '[context]\nrange = auto\n');
        const t0 = process.hrtime.bigint();
        const agent = await startAgent(tree, ['--log-level', 'info'], { readyTimeoutMs: 120_000 });
        const t = msSince(t0);
        await agent.stop();
        return t;
      } finally {
        await cleanup(tree);
      }
    };
    const startLocal = await startup('[pool]\nrange = 100000000-499999999\n');
    const startEtcd = await startup(
      `[pool]\ncoordinator = etcd\nrange = 100000000-499999999\n[etcd]\nendpoints = ${cluster.endpoints.join(', ')}\nprefix = /bench-start-${process.pid}/\n`,
    );
    return {
      available: true,
      runs,
      local: { p50: pct(local, 0.5), p99: pct(local, 0.99) },
      etcd: { p50: pct(shared, 0.5), p99: pct(shared, 0.99) },
      contexts,
      startLocal,
      startEtcd,
    };
  } finally {
    rmSync(state, { recursive: true, force: true });
    await cluster.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(await benchShared());

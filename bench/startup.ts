// Start-up to ready with 10,000 context files (all lazy; half eager), resident memory, reload, and restart with the pins adopted.
import { readFileSync } from 'node:fs';
import { cleanup, startAgent } from '../test/helpers/agent.ts';
import { makeTree } from '../test/helpers/fixtures.ts';
import type { Tree } from '../test/helpers/fixtures.ts';

export type StartupFigures = {
  contexts: number; eager: number;
  lazyReadyMs: number; lazyRssMb: number;
  eagerReadyMs: number; eagerRssMb: number; perCreationMs: number;
  reloadMs: number; restartReadyMs: number; adoptMs: number;
};

function writeContexts(tree: Tree, n: number, eagerEvery: number): void {
  for (let i = 0; i < n; i++) {
    const base = 1_000_000 + i * 1000;
    const eager = eagerEvery > 0 && i % eagerEvery === 0 ? 'create = eager\n' : '';
    tree.context(`c${String(i).padStart(5, '0')}.conf`, `[context]\nuid_map = 0 ${base} 1000\ngid_map = 0 ${base} 1000\n${eager}`);
  }
}

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

async function timeToReady(tree: Tree): Promise<{ ms: number; rss: number; agent: Awaited<ReturnType<typeof startAgent>> }> {
  const t0 = performance.now();
  const agent = await startAgent(tree, ['--log-level', 'info'], { readyTimeoutMs: 600_000 });
  const ms = performance.now() - t0;
  return { ms, rss: rssMb(agent.child.pid!), agent };
}

export async function benchStartup(n = 10_000): Promise<StartupFigures> {
  const lazy = makeTree();
  const eager = makeTree();
  try {
    writeContexts(lazy, n, 0);
    const l = await timeToReady(lazy);
    await l.agent.stop();

    writeContexts(eager, n, 2);
    const e = await timeToReady(eager);
    const created = e.agent.logs.filter((x) => x.msg === 'Created user namespace (eager)');
    if (created.length !== n / 2) throw new Error(`expected ${n / 2} eager creations, saw ${created.length}`);
    const perCreationMs = created.reduce((s, x) => s + (x.ms as number), 0) / created.length;
    e.agent.child.kill('SIGHUP');
    const reloaded = await e.agent.waitForLog((x) => x.msg === 'Reloaded configuration', 60_000);
    await e.agent.stop();
    // Restart: 5,000 pins exist and are adopted from their records, then nothing is created.
    const r = await timeToReady(eager);
    const adopted = r.agent.logs.find((x) => x.msg === 'Adopted existing pins')!;
    await r.agent.stop();
    return {
      contexts: n, eager: n / 2,
      lazyReadyMs: l.ms, lazyRssMb: l.rss,
      eagerReadyMs: e.ms, eagerRssMb: e.rss, perCreationMs,
      reloadMs: reloaded.ms as number, restartReadyMs: r.ms, adoptMs: adopted.ms as number,
    };
  } finally {
    await cleanup(lazy);
    await cleanup(eager);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(JSON.stringify(await benchStartup(Number(process.argv[2] ?? 10_000)), null, 1));

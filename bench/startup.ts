// Start-up to ready with 10,000 context files (all lazy; half eager, through usernsd-spawner and
// through a helper forked per namespace), resident memory, reload, and restart with the pins adopted.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { cleanup, startAgent } from '../test/helpers/agent.ts';
import { makeTree } from '../test/helpers/fixtures.ts';
import type { Tree } from '../test/helpers/fixtures.ts';

export type StartupFigures = {
  contexts: number;
  eager: number;
  lazyReadyMs: number;
  lazyRssMb: number;
  eagerReadyMs: number;
  eagerRssMb: number;
  perCreationMs: number;
  /** The same start with spawner = node: a helper forked from the agent per namespace (what there was before usernsd-spawner). */
  forkedReadyMs: number;
  forkedPerCreationMs: number;
  reloadMs: number;
  restartReadyMs: number;
  adoptMs: number;
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

/** Pins on a tmpfs, as /run/userns is wherever the agent is installed (the test trees are on the root disk). */
function pinsOnTmpfs(tree: Tree): void {
  mkdirSync(tree.pins, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'mode=0755', 'usernsd-bench', tree.pins]);
}

/** A start with every other context eager: time to ready, and the agent's own mean time per creation. */
async function eagerStart(tree: Tree, n: number): Promise<{ ready: Awaited<ReturnType<typeof timeToReady>>; perCreationMs: number }> {
  const ready = await timeToReady(tree);
  const summary = ready.agent.logs.find((x) => x.msg === 'Created eager contexts')!;
  if (summary.created !== n / 2) throw new Error(`expected ${n / 2} eager creations, saw ${String(summary.created)}`);
  return { ready, perCreationMs: summary.meanMs as number };
}

export async function benchStartup(n = 10_000): Promise<StartupFigures> {
  const lazy = makeTree();
  const eager = makeTree();
  const forked = makeTree('spawner = node\n');
  try {
    writeContexts(lazy, n, 0);
    const l = await timeToReady(lazy);
    await l.agent.stop();

    // Before: a helper forked from the agent per namespace.
    pinsOnTmpfs(forked);
    writeContexts(forked, n, 2);
    const f = await eagerStart(forked, n);
    await f.ready.agent.stop();
    await cleanup(forked);

    pinsOnTmpfs(eager);
    writeContexts(eager, n, 2);
    const e = await eagerStart(eager, n);
    e.ready.agent.child.kill('SIGHUP');
    const reloaded = await e.ready.agent.waitForLog((x) => x.msg === 'Reloaded configuration', 60_000);
    await e.ready.agent.stop();
    // Restart: the pins exist and are adopted from their records, then nothing is created.
    const r = await timeToReady(eager);
    const adopted = r.agent.logs.find((x) => x.msg === 'Adopted existing pins')!;
    await r.agent.stop();
    return {
      contexts: n,
      eager: n / 2,
      lazyReadyMs: l.ms,
      lazyRssMb: l.rss,
      eagerReadyMs: e.ready.ms,
      eagerRssMb: e.ready.rss,
      perCreationMs: e.perCreationMs,
      forkedReadyMs: f.ready.ms,
      forkedPerCreationMs: f.perCreationMs,
      reloadMs: reloaded.ms as number,
      restartReadyMs: r.ms,
      adoptMs: adopted.ms as number,
    };
  } finally {
    await cleanup(lazy);
    await cleanup(eager);
    await cleanup(forked);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(JSON.stringify(await benchStartup(Number(process.argv[2] ?? 10_000)), null, 1));

// What the benchmarks share: the median, the verdict and figure formats, pins on a tmpfs, the time
// to ready, and the replacement of one marked section of BENCHMARKS.md.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { AGENT_TUNABLES } from '../scripts/agent-env.js';
import { startAgent } from '../test/helpers/agent.ts';
import type { RunningAgent } from '../test/helpers/agent.ts';
import type { Tree } from '../test/helpers/fixtures.ts';

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/** The p-th quantile (0 to 1) of `xs`, as the nearest rank below. */
export const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];
/** Milliseconds since `t0` (process.hrtime.bigint()). */
export const msSince = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
export const f2 = (n: number) => n.toFixed(2);
export const verdict = (ok: boolean, miss: string) => (ok ? 'met' : `**missed** (${miss})`);

/** The machine's CPUs' busy and total time so far, all of them, in clock ticks (/proc/stat's first line; steal counts as busy). */
export function cpuTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - f[4], total };
}
/** How busy the CPUs were since `t0` (0 to 1). */
export const busySince = (t0: { busy: number; total: number }) => {
  const t = cpuTicks();
  return t.total === t0.total ? 0 : (t.busy - t0.busy) / (t.total - t0.total);
};

/**
 * Until the machine is quiet (its CPUs under a tenth busy for a tenth of a second, at most `maxMs`):
 * what a phase left the kernel to do (thousands of namespaces and mounts freed after their teardown)
 * is not timed as part of the next. The milliseconds waited.
 */
export async function quiet(maxMs = 10_000): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < maxMs) {
    const c0 = cpuTicks();
    await new Promise((r) => setTimeout(r, 100));
    if (busySince(c0) < 0.1) break;
  }
  return performance.now() - t0;
}

/** Pins on a tmpfs, as /run/userns is wherever the agent is installed. */
export function pinsOnTmpfs(tree: Tree): void {
  mkdirSync(tree.pins, { recursive: true });
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'mode=0755', 'usernsd-bench', tree.pins]);
}

/** Start an agent on `tree`: how long until it serves (eager contexts made), and the agent. */
export async function timeToReady(tree: Tree): Promise<{ ms: number; agent: RunningAgent }> {
  const t0 = performance.now();
  // The environment the installed wrapper gives the agent (scripts/install.js).
  const env = { GLIBC_TUNABLES: AGENT_TUNABLES };
  const agent = await startAgent(tree, ['--log-level', 'info'], { readyTimeoutMs: 600_000, env });
  return { ms: performance.now() - t0, agent };
}

/** Replace BENCHMARKS.md's section between <!-- NAME --> and <!-- /NAME --> (or add it at the end), and print it. */
export function writeSection(name: string, section: string): void {
  const file = new URL('../BENCHMARKS.md', import.meta.url);
  const old = readFileSync(file, 'utf8');
  const close = `<!-- /${name} -->\n`;
  const start = old.indexOf(`<!-- ${name} -->`);
  const end = old.indexOf(close);
  writeFileSync(file, start >= 0 && end > start ? old.slice(0, start) + section + old.slice(end + close.length) : `${old.trimEnd()}\n\n${section}`);
  process.stdout.write(section);
}

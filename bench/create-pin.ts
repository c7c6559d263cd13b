// create+pin latency: the agent's Namespaces.ensure (through usernsd-spawner, and through the
// helper forked per namespace) against a shell script doing the same steps.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfiguration } from '../agent/configure.ts';
import { Namespaces } from '../agent/kernel/userns.ts';
import { detach } from '../agent/kernel/sys.ts';

const SCRIPT = `
set -e
pin=$1
self=$(readlink /proc/self/ns/user)
unshare --user sleep infinity & pid=$!
while [ "$(readlink /proc/$pid/ns/user)" = "$self" ]; do :; done
printf allow > /proc/$pid/setgroups
printf '0 100000 65536\\n' > /proc/$pid/uid_map
printf '0 100000 65536\\n' > /proc/$pid/gid_map
: > "$pin"
mount --bind /proc/$pid/ns/user "$pin"
kill $pid
wait $pid || true
`;

function runScript(pin: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const c = spawn('bash', ['-c', SCRIPT, 'bash', pin], { stdio: 'ignore' });
    c.on('error', reject);
    c.on('exit', (code) => (code === 0 ? resolve(Number(process.hrtime.bigint() - t0) / 1e6) : reject(new Error(`script exit ${code}`))));
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)];

export async function benchCreatePin(runs = 50): Promise<{ ours: number; forked: number; script: number; oursP90: number; scriptP90: number; runs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'usernsd-bench-'));
  try {
    writeFileSync(join(dir, 'usernsd.conf'), `[agent]\ncontexts = ${dir}/userns.d\npins = ${dir}/pins\nstate = ${dir}/state\n`);
    mkdirSync(join(dir, 'userns.d'));
    mkdirSync(join(dir, 'script-pins'));
    writeFileSync(join(dir, 'userns.d', 'b.conf'), '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    const cfg = loadConfiguration(join(dir, 'usernsd.conf'), { record: true, systemIds: () => [] });
    const ctx = cfg.contexts.get('b')!;
    const ns = new Namespaces({ pinsDir: join(dir, 'pins'), spawner: 'native' });
    const nsForked = new Namespaces({ pinsDir: join(dir, 'pins'), spawner: 'node' });
    const ours: number[] = [];
    const forked: number[] = [];
    const script: number[] = [];
    const timed = async (n: Namespaces) => {
      const t0 = process.hrtime.bigint();
      await n.ensure(ctx, null);
      const dt = Number(process.hrtime.bigint() - t0) / 1e6;
      await n.release('b');
      return dt;
    };
    // Interleaved, so all three see the same machine load.
    try {
      for (let i = 0; i < runs + 5; i++) {
        const dt = await timed(ns);
        const df = await timed(nsForked);
        const pin = join(dir, 'script-pins', `p${i}`);
        const st = await runScript(pin);
        detach(pin);
        rmSync(pin);
        if (i >= 5) {
          ours.push(dt);
          forked.push(df);
          script.push(st);
        } // the first runs warm caches
      }
    } finally {
      ns.close();
    }
    return { ours: median(ours), forked: median(forked), script: median(script), oursP90: p90(ours), scriptP90: p90(script), runs };
  } finally {
    for (const sub of ['pins', 'script-pins']) {
      try {
        for (const f of readdirSync(join(dir, sub))) detach(join(dir, sub, f));
      } catch {
        /* none */
      }
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

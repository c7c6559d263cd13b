// A real etcd cluster on loopback ports for the tests (Debian's etcd-server; .ci/run installs it):
// members started, killed and restarted at will, every process reaped and every data dir removed.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const hasEtcd = spawnSync('etcd', ['--version']).status === 0 && spawnSync('etcdctl', ['version']).status === 0;

export type Cluster = {
  readonly endpoints: string[];
  kill(i: number): Promise<void>;
  start(i: number): Promise<void>;
  /** etcdctl against the cluster, for checks made apart from the agents. */
  ctl(args: string[]): { status: number | null; out: string; err: string };
  stop(): Promise<void>;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Ports a block (clients base..base+4, peers base+5..base+9) takes. */
const BLOCK = 10;

/** Whether nothing listens on 127.0.0.1:port now. */
const free = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host: '127.0.0.1', exclusive: true }, () => s.close(() => resolve(true)));
  });

/**
 * The first block of free loopback ports from a place of this process's own, below the kernel's
 * ephemeral range: an outgoing connection (an agent's, etcdctl's) never takes one of them between
 * a member's kill and its restart, as it could from 32768 up.
 */
async function portBlock(skip: number): Promise<number> {
  const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  const first = 10_000;
  const blocks = Math.floor(((low ?? 32768) - first) / BLOCK);
  for (let n = 0; n < blocks; n++) {
    const base = first + ((process.pid + skip + n) % blocks) * BLOCK;
    const ports = Array.from({ length: BLOCK }, (_, i) => base + i);
    if ((await Promise.all(ports.map(free))).every(Boolean)) return base;
  }
  throw new Error(`no ${BLOCK} free loopback ports from ${first} to ${low}`);
}

/**
 * A cluster of `size` members (at most 5) on free loopback ports. A member that exits before the
 * cluster is healthy (its port taken meanwhile, by another test process) costs another try, on
 * other ports; the error says what etcd wrote.
 */
export async function startCluster(size = 3): Promise<Cluster> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await startOn(size, await portBlock(attempt * 97));
    } catch (err) {
      if (attempt >= 2 || !(err instanceof MemberExited)) throw err;
    }
  }
}

class MemberExited extends Error {}

async function startOn(size: number, base: number): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), 'usernsd-etcd-'));
  const client = (i: number) => base + i;
  const peer = (i: number) => base + 5 + i;
  const endpoints = Array.from({ length: size }, (_, i) => `http://127.0.0.1:${client(i)}`);
  const initial = Array.from({ length: size }, (_, i) => `n${i}=http://127.0.0.1:${peer(i)}`).join(',');
  const procs = new Array<ChildProcess | null>(size).fill(null);
  const stderr = new Array<string>(size).fill('');
  const launch = (i: number) => {
    stderr[i] = '';
    const p = spawn(
      'etcd',
      [
        '--name',
        `n${i}`,
        '--data-dir',
        join(dir, `n${i}`),
        '--listen-client-urls',
        endpoints[i],
        '--advertise-client-urls',
        endpoints[i],
        '--listen-peer-urls',
        `http://127.0.0.1:${peer(i)}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${peer(i)}`,
        '--initial-cluster',
        initial,
        '--initial-cluster-state',
        'new',
        '--initial-cluster-token',
        `usernsd-test-${process.pid}`,
        '--heartbeat-interval',
        '50',
        '--election-timeout',
        '500',
        '--log-level',
        'error',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    p.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr[i] = (stderr[i] + d).slice(-2000);
    });
    procs[i] = p;
  };
  const ctl = (args: string[]) => {
    const r = spawnSync('etcdctl', ['--endpoints', endpoints.join(','), '--command-timeout', '3s', ...args], {
      encoding: 'utf8',
      env: { ...process.env, ETCDCTL_API: '3' },
    });
    return { status: r.status, out: r.stdout, err: r.stderr };
  };
  const healthy = async (members: number[]) => {
    for (let t = 0; t < 200; t++) {
      const exited = members.find((i) => procs[i] && (procs[i].exitCode !== null || procs[i].signalCode !== null));
      if (exited !== undefined) {
        const p = procs[exited]!;
        throw new MemberExited(
          `etcd member ${exited} exited (${p.signalCode ?? p.exitCode}) on ports ${client(exited)}, ${peer(exited)}: ${stderr[exited].trim()}`,
        );
      }
      const r = spawnSync('etcdctl', ['--endpoints', members.map((i) => endpoints[i]).join(','), '--command-timeout', '1s', 'endpoint', 'health'], {
        encoding: 'utf8',
      });
      if (r.status === 0) return;
      await sleep(100);
    }
    throw new Error(`etcd members ${members.join(',')} did not become healthy after 200 tries: ${members.map((i) => stderr[i].trim()).join(' | ')}`);
  };
  for (let i = 0; i < size; i++) launch(i);
  const cluster: Cluster = {
    endpoints,
    async kill(i) {
      const p = procs[i];
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGKILL');
      await gone;
      procs[i] = null;
    },
    async start(i) {
      launch(i);
      await healthy([i]);
    },
    ctl,
    async stop() {
      for (let i = 0; i < size; i++) await cluster.kill(i);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await healthy([...Array(size).keys()]);
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/** Every key under `prefix` and its text, read with etcdctl (values that are not UTF-8 come back mangled, as any reader sees them). */
export function readPrefix(cluster: Cluster, prefix: string): Record<string, string> {
  const r = cluster.ctl(['get', '--prefix', prefix, '-w', 'json']);
  if (r.status !== 0) throw new Error(`etcdctl get --prefix ${prefix}: ${r.err}`);
  const kvs = (JSON.parse(r.out) as { kvs?: { key: string; value: string }[] }).kvs ?? [];
  const b64 = (s: string) => Buffer.from(s, 'base64').toString('utf8');
  return Object.fromEntries(kvs.map((kv) => [b64(kv.key), b64(kv.value)]));
}

/** The shared pool's entries (PREFIX/labels/LABEL) as JSON, each as it is stored: the auto ones under ranges, the static ones under statics. */
export function poolEntries(
  cluster: Cluster,
  prefix: string,
): { ranges: Record<string, PoolRange>; statics: Record<string, PoolStatic>; raw: Record<string, unknown> } {
  const out = { ranges: {} as Record<string, PoolRange>, statics: {} as Record<string, PoolStatic>, raw: {} as Record<string, unknown> };
  for (const [k, v] of Object.entries(readPrefix(cluster, `${prefix}labels/`))) {
    const label = k.slice(`${prefix}labels/`.length);
    let e: unknown;
    try {
      e = JSON.parse(v);
    } catch {
      e = v;
    }
    out.raw[label] = e;
    const kind = (e as { kind?: unknown } | null)?.kind;
    if (kind === 'auto') out.ranges[label] = e as PoolRange;
    if (kind === 'static') out.statics[label] = e as PoolStatic;
  }
  return out;
}
export type PoolRange = { start: number; size: number; by: string; at: string };
export type PoolStatic = { intervals: { start: number; end: number }[]; by: string; at: string };

// What a well-behaved client sees while local users abuse the agent: latency before, during and after a storm, the agent's memory and log.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentClient } from '../agent/wire/client.ts';
import * as P from '../agent/wire/protocol.ts';

const ROOT = new URL('..', import.meta.url).pathname;
const CLIENT = join(ROOT, 'bench', 'storm-client.ts');

export type Latency = { count: number; errors: number; p50: number; p99: number; max: number };
export type StormResult = {
  seconds: number;
  quiet: Latency;
  storm: Latency;
  /** What the hostile processes reported doing. */
  hostile: Record<string, unknown>[];
  /** Frames the hostile clients wrote (many into connections the agent had closed already). */
  invalidFramesPerSecond: number;
  /** Invalid requests the agent answered (its E_INVALID counter). */
  answeredInvalid: number;
  rootServed: number;
  rootFailed: number;
  rssBeforeMb: number;
  rssPeakMb: number;
  rssAfterMb: number;
  logBytesQuiet: number;
  logBytesStorm: number;
  agentPid: number;
};

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

function summary(ms: number[], errors: number): Latency {
  const s = [...ms].sort((a, b) => a - b);
  return { count: ms.length, errors, p50: percentile(s, 0.5), p99: percentile(s, 0.99), max: s.at(-1) ?? NaN };
}

const rssMb = (pid: number, field = 'VmRSS') =>
  Number(
    /(\d+) kB/.exec(
      readFileSync(`/proc/${pid}/status`, 'utf8')
        .split('\n')
        .find((l) => l.startsWith(field)) ?? '',
    )?.[1] ?? NaN,
  ) / 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The good client: one request at a time, for `ms`, every latency kept. */
async function goodClient(socket: string, ms: number): Promise<Latency> {
  const c = await AgentClient.connect(socket);
  const lat: number[] = [];
  let errors = 0;
  const until = Date.now() + ms;
  try {
    while (Date.now() < until) {
      const t = performance.now();
      try {
        await c.call(P.resolve, { label: 'a' }, 10_000);
        lat.push(performance.now() - t);
      } catch {
        errors++;
      }
    }
  } finally {
    c.close();
  }
  return summary(lat, errors);
}

/**
 * Run the agent on a temporary tree and measure. `seconds`: how long the storm and each quiet phase
 * last. The hostile processes run as uids of their own (no passwd entries needed): one sends every
 * kind of bad traffic, one floods connections past its limit, four hold 250 idle connections each.
 */
export async function runStorm(seconds: number, opts: { agentArgs?: string[] } = {}): Promise<StormResult> {
  const dir = mkdtempSync(join(tmpdir(), 'usernsd-storm-'));
  chmodSync(dir, 0o755); // the hostile users must reach the socket
  const children: ChildProcess[] = [];
  try {
    writeFileSync(
      join(dir, 'usernsd.conf'),
      `[agent]\ncontexts = ${dir}/userns.d\nstate = ${dir}/state\npins = ${dir}/pins\nsocket = ${dir}/usernsd.sock\nlog_level = info\nuserdb = no\n`,
    );
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(dir, 'userns.d'));
    writeFileSync(join(dir, 'userns.d', 'a.conf'), '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    const socket = join(dir, 'usernsd.sock');
    const agent = spawn(process.execPath, [join(ROOT, 'bin', 'usernsd.js'), '--config', join(dir, 'usernsd.conf'), ...(opts.agentArgs ?? [])], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(agent);
    let logBytes = 0;
    let ready = false;
    const readyP = new Promise<void>((resolve, reject) => {
      agent.stderr.setEncoding('utf8').on('data', (d: string) => {
        logBytes += d.length;
        if (!ready && d.includes('"Serving"')) {
          ready = true;
          resolve();
        }
      });
      agent.on('exit', (code) => reject(new Error(`the agent exited (${code})`)));
    });
    await readyP;
    await (await AgentClient.connect(socket)).call(P.resolve, { label: 'a' }); // created before timing
    const pid = agent.pid!;
    const rssBeforeMb = rssMb(pid);

    const q0 = logBytes;
    const quiet = await goodClient(socket, seconds * 1000);
    const logBytesQuiet = logBytes - q0;

    const hostile = (uid: number, env: Record<string, string>) => {
      const c = spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--', process.execPath, CLIENT, socket, String(seconds)], {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, ...env },
      });
      children.push(c);
      let out = '';
      c.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
      });
      return new Promise<Record<string, unknown>>((resolve) =>
        c.on('exit', () => {
          try {
            resolve(JSON.parse(out) as Record<string, unknown>);
          } catch {
            resolve({ failed: out });
          }
        }),
      );
    };
    const s0 = logBytes;
    const reports = Promise.all([
      hostile(64_001, { STORM_KINDS: 'pipelined,oversize,halfFrames,neverReading,vanish' }),
      hostile(64_002, { STORM_KINDS: 'flood', STORM_FLOOD: String(P.LIMITS.MAX_CONNECTIONS_PER_UID + 100) }),
      ...[64_003, 64_004, 64_005, 64_006].map((uid) => hostile(uid, { STORM_KINDS: 'flood', STORM_FLOOD: '250' })),
    ]);
    await sleep(300); // the storm is under way
    let rootServed = 0;
    let rootFailed = 0;
    const rootLoop = (async () => {
      const until = Date.now() + (seconds - 1) * 1000;
      while (Date.now() < until) {
        // Root on a fresh connection each time: the reserve must hold while others hold theirs.
        try {
          const c = await AgentClient.connect(socket);
          try {
            await c.call(P.status, {}, 10_000);
            rootServed++;
          } finally {
            c.close();
          }
        } catch {
          rootFailed++;
        }
        await sleep(50);
      }
    })();
    const storm = await goodClient(socket, (seconds - 0.5) * 1000);
    await rootLoop;
    const counters = (await (await AgentClient.connect(socket)).call(P.status, {})).counters ?? {};
    const hostileReports = await reports;
    const logBytesStorm = logBytes - s0;
    const rssPeakMb = rssMb(pid, 'VmHWM');
    await sleep(2000);
    const rssAfterMb = rssMb(pid);
    const invalid = hostileReports.reduce((n, r) => n + (typeof r.invalidFrames === 'number' ? r.invalidFrames : 0), 0);
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
    return {
      seconds,
      quiet,
      storm,
      hostile: hostileReports,
      invalidFramesPerSecond: invalid / seconds,
      answeredInvalid: counters['errors.E_INVALID'] ?? 0,
      rootServed,
      rootFailed,
      rssBeforeMb,
      rssPeakMb,
      rssAfterMb,
      logBytesQuiet,
      logBytesStorm,
      agentPid: pid,
    };
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    const { execFileSync } = await import('node:child_process');
    try {
      execFileSync('sh', ['-c', `grep -o " ${dir}/pins/[^ ]*" /proc/self/mountinfo | xargs -r -n1 umount -l`]);
    } catch {
      /* nothing pinned */
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const r = await runStorm(Number(process.argv[2] ?? 10));
  process.stdout.write(JSON.stringify(r, null, 1) + '\n');
}

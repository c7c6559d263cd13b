// The agent as a separate process on a temporary tree, and usernsctl as users run it; nothing outlives a test.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { runCli } from '../../agent/cli/main.ts';
import { UNDECLARED_ERROR } from '../../agent/wire/protocol.ts';
import { isRoot, unmountAll } from './kernel.ts';
import { makeTree } from './fixtures.ts';
import type { Tree } from './fixtures.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
export const USERNSD = join(ROOT, 'bin', 'usernsd.js');
export const USERNSCTL = join(ROOT, 'bin', 'usernsctl.js');

export type LogLine = { level: number; msg: string; [k: string]: unknown };

export type RunningAgent = {
  readonly child: ChildProcess;
  readonly socket: string;
  /** Every JSON line the agent wrote to stderr so far. */
  readonly logs: LogLine[];
  /** Resolves when a log line matching `pred` has been written (or already was). */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** SIGTERM and wait: the exit code. */
  stop(): Promise<number | null>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
};

/**
 * The environment of the agents and usernsctl processes tests start: this process's, without
 * NODE_EXTRA_CA_CERTS, which none of them needs (no TLS). Node reads that file on a thread of its
 * own once node:tls is loaded; the agent closed that read's descriptor as inherited, so the read
 * failed ("bad end line", a warning that failed the storm test once) and, once the number was
 * reused, the agent's next file (EBADF). The agent waits for that read now (kernel/sys.ts,
 * test/unit/inherited.test.ts); the suite still leaves the variable out.
 */
export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  delete env.NODE_EXTRA_CA_CERTS;
  return env;
}

/** Start `usernsd --config tree.config` and wait until it serves; killed and reaped by `cleanup`. */
export function startAgent(
  tree: Tree,
  extraArgs: string[] = ['--log-level', 'debug'],
  opts: { env?: NodeJS.ProcessEnv; wrap?: string[]; readyTimeoutMs?: number } = {},
): Promise<RunningAgent> {
  // `wrap`: a command the agent runs under (setpriv, unshare…), as init would start it.
  const argv = [...(opts.wrap ?? []), process.execPath, USERNSD, '--config', tree.config, ...extraArgs];
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: childEnv(opts.env) });
  running.add(child);
  const logs: LogLine[] = [];
  const waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  let rest = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    rest += chunk;
    const lines = rest.split('\n');
    rest = lines.pop()!;
    for (const text of lines) {
      let l: LogLine;
      try {
        l = JSON.parse(text) as LogLine;
      } catch {
        l = { level: 60, msg: text };
      }
      logs.push(l);
      if (typeof l.msg === 'string' && l.msg.startsWith(UNDECLARED_ERROR)) undeclared.push(l.msg);
      for (const w of [...waiters])
        if (w.pred(l)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(l);
        }
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
  const waitForLog = (pred: (l: LogLine) => boolean, timeoutMs = 10_000) => {
    const seen = logs.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<LogLine>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no matching agent log line within ${timeoutMs} ms; log:\n${logs.map((l) => JSON.stringify(l)).join('\n')}`)),
        timeoutMs,
      );
      waiters.push({
        pred,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
      // An agent that exits first fails the wait at once, and its timer goes with it: left running, it
      // kept the test process alive after the last test for the rest of its time (a minute for a start).
      void exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`the agent exited (${code ?? signal}) before the expected log line; log:\n${logs.map((l) => JSON.stringify(l)).join('\n')}`));
      });
    });
  };
  const agent: RunningAgent = {
    child,
    socket: join(tree.dir, 'usernsd.sock'),
    logs,
    waitForLog,
    exited,
    async stop() {
      child.kill('SIGTERM');
      return (await exited).code;
    },
  };
  return waitForLog((l) => l.msg === 'Serving', opts.readyTimeoutMs).then(() => agent);
}

const running = new Set<ChildProcess>();
/** Errors an agent answered that its protocol does not declare for the method (handlers.ts logs each): cleanup fails on them. */
const undeclared: string[] = [];

/**
 * Kill what is left, unmount every pin under the tree, remove it: for afterEach, also after a
 * failure. Then fail if any agent since the last cleanup answered an error its method does not
 * declare (usernsd-protocol(7)): every suite that runs agents checks the protocol's contract.
 */
export async function cleanup(tree: Tree | undefined): Promise<void> {
  for (const child of [...running]) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    running.delete(child);
  }
  if (tree) {
    unmountAll(tree.dir);
    tree.remove();
  }
  const found = undeclared.splice(0);
  assert.deepEqual(found, [], 'answers outside the errors the protocol declares for their method');
}

/**
 * The frame of a suite that runs agents as root: skipped when not root (a failure under CI, see
 * reporter.cjs), a fresh tree for each test, and after each, passed or failed, every agent killed,
 * every mount under the tree gone and the tree removed. `use` receives each test's tree.
 */
export function rootAgentSuite(use: (tree: Tree) => void): void {
  let current: Tree | undefined;
  before(function () {
    if (!isRoot) this.skip();
  });
  beforeEach(() => {
    current = makeTree();
    use(current);
  });
  afterEach(async () => {
    await cleanup(current);
    current = undefined;
  });
}

export type Run = { code: number | null; out: string; err: string };

/**
 * usernsctl's own code in this process, as root: what a process would print and exit with, without
 * the start of one (model tests make hundreds of these calls; the process itself is tested apart).
 */
export async function usernsctlHere(args: string[]): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(args, { out: (s) => out.push(s), err: (s) => err.push(s) });
  return { code, out: out.map((l) => `${l}\n`).join(''), err: err.map((l) => `${l}\n`).join('') };
}

/** usernsctl's commands that only ask the agent over its socket and print its answer. */
const ASKS_ONLY = new Set(['status', 'resolve', 'reload', 'release', 'list', 'map', 'ranges', 'metrics']);

/**
 * usernsctl --socket SOCKET ARGS, as suites' `ctl` helpers call it: as root, a command that only asks
 * the agent runs in this process (usernsctlHere: the same code, output and exit code, without a
 * process start); as another user, with an environment of its own, or a command that acts in the
 * caller's process (enter, view, label, keys, mount-helper), a process is started (usernsctl).
 */
export function usernsctlAt(socket: string, args: string[], opts: { user?: { uid: number; gid: number }; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  const command = args.find((a) => !a.startsWith('-'));
  if (!opts.user && !opts.env && command !== undefined && ASKS_ONLY.has(command)) return usernsctlHere(['--socket', socket, ...args]);
  return usernsctl(['--socket', socket, ...args], opts);
}

/** usernsctl, as root or as another user (with that user's supplementary groups, as login gives them). */
export function usernsctl(args: string[], opts: { user?: { uid: number; gid: number }; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  const base = [process.execPath, USERNSCTL, ...args];
  const argv = opts.user ? ['setpriv', `--reuid=${opts.user.uid}`, `--regid=${opts.user.gid}`, '--init-groups', '--', ...base] : base;
  return new Promise((resolve) => {
    const child = spawn(argv[0], argv.slice(1), { env: childEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
    });
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

/** `argv` wrapped to run inside pinned user namespaces (`pins`, outermost first) as their uid 0. */
function insideArgv(pins: readonly string[], argv: string[]): string[] {
  let cmd = argv;
  for (const pin of [...pins].reverse()) cmd = ['nsenter', `--user=${pin}`, '--preserve-credentials', '-S', '0', '-G', '0', '--', ...cmd];
  return cmd;
}

/**
 * Run `argv` inside pinned user namespaces (`pins`, outermost first; none: on the host) as their
 * uid 0, as `usernsctl enter` does, started as `user` (default root) with `env`.
 */
export function runInside(pins: readonly string[], argv: string[], opts: { user?: { uid: number; gid: number }; env?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  const cmd = insideArgv(pins, argv);
  const full = opts.user ? ['setpriv', `--reuid=${opts.user.uid}`, `--regid=${opts.user.gid}`, '--init-groups', '--', ...cmd] : cmd;
  return new Promise((resolve) => {
    const child = spawn(full[0], full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000, env: opts.env ?? childEnv() });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

/** One process of test/helpers/inside-client.ts, kept inside a namespace. */
type InsideClient = { readonly child: ChildProcess; readonly ino: number; readonly answers: ((line: string) => void)[]; stderr: string };

/**
 * usernsctl inside pinned user namespaces as their root, as runInside runs it, for suites that make
 * many calls from inside (a model test's check lists from every context after every step): one
 * process per namespace, kept while its pin holds the same namespace, instead of one per call.
 * A pin made anew (released and resolved again, lost and remade) gets a process of its own.
 */
export class InsideClients {
  private readonly clients = new Map<string, InsideClient>();

  async run(pins: readonly string[], args: string[]): Promise<Run> {
    const key = pins.join('\0');
    const ino = statSync(pins[pins.length - 1]).ino;
    let c = this.clients.get(key);
    if (c && (c.ino !== ino || c.child.exitCode !== null || c.child.signalCode !== null)) {
      await this.stop(c);
      c = undefined;
    }
    if (!c) {
      const cmd = insideArgv(pins, [process.execPath, join(ROOT, 'test', 'helpers', 'inside-client.ts')]);
      const child = spawn(cmd[0], cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: childEnv() });
      const client: InsideClient = { child, ino, answers: [], stderr: '' };
      let rest = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        rest += d;
        for (let nl = rest.indexOf('\n'); nl >= 0; nl = rest.indexOf('\n')) {
          client.answers.shift()?.(rest.slice(0, nl));
          rest = rest.slice(nl + 1);
        }
      });
      child.stderr.setEncoding('utf8').on('data', (d: string) => (client.stderr += d));
      this.clients.set(key, (c = client));
    }
    const client = c;
    return new Promise<Run>((resolve, reject) => {
      const gone = () => reject(new Error(`the usernsctl kept inside ${pins.join(' > ')} exited: ${client.stderr.trim()}`));
      client.child.once('exit', gone);
      client.answers.push((line) => {
        client.child.off('exit', gone);
        resolve(JSON.parse(line) as Run);
      });
      client.child.stdin!.write(`${JSON.stringify(args)}\n`);
    });
  }

  /** End every process and reap it: for the end of each run, also after a failure. */
  async close(): Promise<void> {
    for (const c of this.clients.values()) await this.stop(c);
    this.clients.clear();
  }

  private async stop(c: InsideClient): Promise<void> {
    if (c.child.exitCode === null && c.child.signalCode === null) {
      const exited = new Promise((r) => c.child.once('exit', r));
      c.child.kill('SIGKILL');
      await exited;
    }
  }
}

/** Can `uid` run the checkout's node at all? null if so, else why not. */
export function checkoutReachableBy(uid: number, gid: number): string | null {
  const r = spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--', process.execPath, USERNSCTL, '--version'], { encoding: 'utf8' });
  return r.status === 0 ? null : `uid ${uid} cannot run ${process.execPath} ${USERNSCTL}: ${r.stderr.trim()}`;
}

/**
 * Let other users run the checkout's usernsctl: a checkout under a 0700 home (/root) is not
 * reachable by them. Adds only the search bit (o+x) to the directories above the checkout that
 * lack it; the returned function puts every mode back.
 */
export function makeCheckoutReachable(): () => void {
  const changed: [string, number][] = [];
  for (let dir = dirname(ROOT.replace(/\/$/, '')); ; dir = dirname(dir)) {
    const mode = statSync(dir).mode & 0o7777;
    if ((mode & 0o001) === 0) {
      chmodSync(dir, mode | 0o001);
      changed.push([dir, mode]);
    }
    if (dir === '/') break;
  }
  return () => {
    for (const [dir, mode] of changed.reverse()) chmodSync(dir, mode);
  };
}

/** Debian's python3 (the protocol's stdlib client and the notify listener are written for it). */
export const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/** The agents started and not yet exited (for a test that kills one before it is ready). */
export function runningChildren(): ReadonlySet<ChildProcess> {
  return running;
}

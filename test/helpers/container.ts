// A real systemd as PID 1 in systemd-nspawn over the host's own root (read-only, under a tmpfs overlay), for unit tests.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';

export type Container = {
  /** The container's init (systemd), as a host pid. */
  readonly init: number;
  /** Run a command in every namespace of the container; throws with its output when it fails. */
  sh(script: string): string;
  /** The same, without throwing: status and output. */
  try(script: string): { status: number | null; out: string };
  /** The container init's mount table. */
  mountinfo(): string;
  /** Stop it and wait until its cgroups are empty and removed. */
  stop(): Promise<void>;
  /** This container's cgroups that still exist (after stop: none, or the teardown failed). */
  leftoverCgroups(): string[];
};

export const NSPAWN = '/usr/bin/systemd-nspawn';

/** Why a container cannot be booted here, or null. */
export function containerUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root';
  if (!existsSync(NSPAWN)) return 'systemd-nspawn is not installed (apt-get install --no-install-recommends systemd-container)';
  if (!existsSync('/lib/systemd/systemd')) return 'systemd is not installed';
  return null;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const CGROUP_HIERARCHIES = ['/sys/fs/cgroup/systemd', '/sys/fs/cgroup/unified'].filter((h) => existsSync(h));

/**
 * Boot one. The host need not run systemd and its /run need not be a tmpfs: the container gets a
 * cgroup of its own, and in a private mount namespace /run/systemd (nspawn's scratch) and the
 * overlay are tmpfs. `src` is bound read-only at /src (it may sit under /tmp, a tmpfs inside).
 */
export async function bootContainer(src: string): Promise<Container> {
  const name = `usernsd-test-${process.pid}-${Date.now() % 100000}`;
  const work = mkdtempSync('/var/tmp/usernsd-nspawn-');
  const cgroups = CGROUP_HIERARCHIES.map((h) => join(h, name));
  for (const cg of cgroups) mkdirSync(cg);
  const inner = [
    `mount -t tmpfs -o mode=0755 usernsd-test-run /run/systemd`,
    `mount -t tmpfs -o mode=0755 usernsd-test-ovl '${work}'`,
    `mkdir '${work}/upper' '${work}/work' '${work}/root'`,
    `mount -t overlay usernsd-test-root -o lowerdir=/,upperdir='${work}/upper',workdir='${work}/work' '${work}/root'`,
    `exec ${NSPAWN} -D '${work}/root' -M '${name}' --boot --register=no --keep-unit --private-network --console=read-only --bind-ro='${src}':/src -- systemd.mask=postgresql.service`,
  ].join('\n');
  const joinCgroups = cgroups.map((cg) => `echo $$ > '${cg}/cgroup.procs'`).join('; ');
  const outer = `${joinCgroups}\nexec unshare --mount --propagation private sh -ec "$0"`;
  const child: ChildProcess = spawn('setsid', ['sh', '-c', outer, inner], { stdio: ['ignore', 'pipe', 'pipe'], detached: false });
  let console = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    console = (console + d).slice(-20_000);
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    console = (console + d).slice(-20_000);
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));

  let init = 0;
  const stop = async () => {
    if (init)
      try {
        process.kill(init, 'SIGRTMIN+4');
      } catch {
        /* gone */
      } // systemd: power off
    const deadline = Date.now() + 10_000;
    while (child.exitCode === null && child.signalCode === null && Date.now() < deadline) await sleep(100);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    // The launcher has exited, but what ran in the container may still be dying: a cgroup can only
    // be removed once the kernel has taken its last process out (rmdir says EBUSY before that).
    await emptyCgroups(cgroups);
    for (const cg of cgroups) await removeCgroupTree(cg);
    try {
      rmdirSync(work);
    } catch {
      /* the tmpfs went with the namespace; the directory stays only if busy */
    }
  };

  try {
    for (let i = 0; i < 200 && !init; i++) {
      const r = spawnSync('ps', ['-o', 'pid=,comm=', '--ppid', String(child.pid)], { encoding: 'utf8' });
      const line = r.stdout.split('\n').find((l) => l.trim().split(/\s+/)[1] === 'systemd');
      if (line) init = Number(line.trim().split(/\s+/)[0]);
      else await sleep(50);
    }
    if (!init) throw new Error(`no container init came up; nspawn said:\n${console}`);
    // The test process's own SYSTEMD_BYPASS_USERDB (config/nss.ts sets it for its lookups) must not
    // reach the container: there nss-systemd is to ask the agent like any program.
    const env = { ...process.env };
    delete env.SYSTEMD_BYPASS_USERDB;
    const run = (script: string) => spawnSync('nsenter', ['-t', String(init), '-a', 'sh', '-c', script], { encoding: 'utf8', timeout: 60_000, env });
    let state = '';
    for (let i = 0; i < 300; i++) {
      state = run('systemctl is-system-running').stdout.trim();
      if (state === 'running' || state === 'degraded') break;
      await sleep(100);
    }
    if (state !== 'running' && state !== 'degraded') throw new Error(`the container did not finish booting (${state}); nspawn said:\n${console}`);
    return {
      init,
      sh(script) {
        const r = run(script);
        if (r.status !== 0) throw new Error(`in the container: ${script}\nexit ${r.status}\n${r.stdout}${r.stderr}`);
        return r.stdout;
      },
      try(script) {
        const r = run(script);
        return { status: r.status, out: r.stdout + r.stderr };
      },
      mountinfo: () => readFileSync(`/proc/${init}/mountinfo`, 'utf8'),
      stop,
      leftoverCgroups: () => cgroups.filter((cg) => existsSync(cg)),
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Every cgroup directory of the subtree at `root`, deepest first (as rmdir needs them). */
function cgroupTree(root: string): string[] {
  if (!existsSync(root)) return [];
  const below = readdirSync(root, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .flatMap((e) => cgroupTree(join(root, e.name)));
  return [...below, root];
}

/** The pids still in the subtree at `root` (a cgroup removed meanwhile counts as empty). */
function cgroupPids(root: string): number[] {
  return cgroupTree(root).flatMap((cg) => {
    try {
      return readFileSync(join(cg, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
    } catch {
      return [];
    }
  });
}

/**
 * Wait until no process is left in the subtrees; what is still there after a grace period is killed
 * (by pid, read from the cgroup, so nothing outside the container is touched) and waited for again.
 */
async function emptyCgroups(roots: string[]): Promise<void> {
  const pids = () => roots.flatMap(cgroupPids);
  for (let i = 0; i < 50 && pids().length; i++) await sleep(100);
  for (let round = 0; round < 3 && pids().length; round++) {
    for (const pid of pids())
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    for (let i = 0; i < 50 && pids().length; i++) await sleep(100);
  }
  const left = pids();
  if (left.length) throw new Error(`processes still in the container's cgroups after SIGKILL: ${left.join(' ')}`);
}

/** rmdir the subtree, deepest first; a cgroup the kernel still calls busy (its last task exiting) is retried. */
async function removeCgroupTree(root: string): Promise<void> {
  for (let i = 0; i < 50 && existsSync(root); i++) {
    for (const cg of cgroupTree(root))
      try {
        rmdirSync(cg);
      } catch {
        /* EBUSY: retried */
      }
    if (existsSync(root)) await sleep(100);
  }
}

// Short helper processes of the kernel side: run to completion, reap, wait for a new user
// namespace, and the kernel's refusals as faults.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { refused } from '../fault.ts';
import type { Fault } from '../fault.ts';

export const PATH_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };
export const SPAWN_TIMEOUT_MS = 5000;

const OWN_USERNS = readlinkSync('/proc/self/ns/user');

/** The kernel refused a step of making a context's namespace (the edge, agent/advice.ts, says what to change). */
export function kernelError(label: string, step: string, code: string, detail?: string): Fault {
  return refused('namespace', step, code, { label, detail });
}

/** util-linux tools print strerror text; give back the errno name. */
export function errnoFromText(text: string): string {
  const known: [RegExp, string][] = [
    [/No space left on device/, 'ENOSPC'],
    [/Operation not permitted/, 'EPERM'],
    [/Invalid argument/, 'EINVAL'],
    [/Too many users/, 'EUSERS'],
    [/Permission denied/, 'EACCES'],
    [/No such file or directory/, 'ENOENT'],
  ];
  return known.find(([re]) => re.test(text))?.[1] ?? 'EIO';
}

/** Run a short helper to completion; stderr is kept for the error message. */
export function run(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: PATH_ENV, stdio: ['ignore', 'pipe', 'pipe'], timeout: SPAWN_TIMEOUT_MS });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr: stderr.trim() }));
  });
}

/**
 * End a helper: its stdin closes (so `cat` ends by itself, even where the agent may not signal a
 * process of another user: no CAP_KILL), then SIGKILL for good measure; waited for, within a bound.
 */
export async function reap(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.stdin?.end();
  child.kill('SIGKILL');
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    exited,
    new Promise((r) => {
      timer = setTimeout(r, SPAWN_TIMEOUT_MS);
    }),
  ]);
  clearTimeout(timer);
}

/**
 * The pid of a helper once it runs in a user namespace of its own (not ours, not `parentNs`, given
 * as "user:[INO]"); its exit, a spawn error or the deadline fail with the helper's stderr.
 */
export function waitForNewNamespace(label: string, child: ChildProcess, parentNs: string | null): Promise<number> {
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + SPAWN_TIMEOUT_MS;
    const fail = (err: Error) => {
      clearImmediate(timer);
      reject(err);
    };
    child.once('error', (err) => fail(kernelError(label, 'start the namespace helper', (err as NodeJS.ErrnoException).code ?? 'EIO', err.message)));
    child.once('exit', () =>
      setImmediate(() => fail(kernelError(label, 'create the user namespace', errnoFromText(stderr), stderr.trim() || 'the helper exited'))),
    );
    let timer: NodeJS.Immediate;
    const poll = () => {
      if (child.pid !== undefined) {
        try {
          const ns = readlinkSync(`/proc/${child.pid}/ns/user`);
          if (ns !== OWN_USERNS && ns !== parentNs) return resolve(child.pid);
        } catch (err) {
          // Another user's process is readable only with CAP_SYS_PTRACE: say so now, not at the deadline.
          if ((err as NodeJS.ErrnoException).code === 'EACCES')
            return fail(kernelError(label, 'inspect the namespace helper', 'EACCES', `/proc/${child.pid}/ns/user`));
          // else: not there yet, or gone; the exit handler reports it
        }
      }
      if (Date.now() > deadline) return fail(kernelError(label, 'create the user namespace', 'ETIMEDOUT', 'the helper did not unshare in time'));
      timer = setImmediate(poll);
    };
    timer = setImmediate(poll);
  });
}

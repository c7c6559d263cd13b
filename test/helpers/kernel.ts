// Kernel-side helpers for root tests: clean up mounts under a tree, throwaway users, kernel views.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { detach } from '../../agent/kernel/sys.ts';

export const isRoot = process.getuid?.() === 0;

/** Mount points below `dir`, deepest first, from the kernel's own list. */
export function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
}

/** Detach every mount under `dir` (stacked ones too), so a failed test leaves nothing mounted. */
export function unmountAll(dir: string): void {
  for (let round = 0; round < 8; round++) {
    const ms = mountsUnder(dir);
    if (ms.length === 0) return;
    for (const m of ms)
      try {
        detach(m);
      } catch {
        /* gone meanwhile */
      }
  }
}

/** A throwaway system user with a group of the same name; remove() deletes both. */
let users = 0;
export function makeUser(prefix = 'unsdt'): { name: string; uid: number; gid: number; remove(): void } {
  // pid + a counter: two users of one test run never share a name (a random suffix could).
  const name = `${prefix}${process.pid % 100000}x${++users}`;
  execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/bin/sh', name]);
  const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
  const remove = () => {
    // userdel refuses (exit 8) a user something still runs as: a test that failed midway may have
    // left such a process (its own, as the user is), which is ended here rather than the user left.
    for (let attempt = 0; attempt < 5 && spawnSync('userdel', [name]).status === 8; attempt++) {
      spawnSync('pkill', ['-KILL', '-u', name]);
      spawnSync('pkill', ['-KILL', '-U', name]);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
    spawnSync('groupdel', [name]);
  };
  return { name, uid, gid, remove };
}

/** `nsenter --user=PIN cat /proc/self/{uid,gid}_map`: the maps as the namespace's own processes see them. */
export function kernelMaps(pin: string): { uid: string; gid: string } {
  const read = (f: string) =>
    execFileSync('nsenter', [`--user=${pin}`, '--preserve-credentials', 'cat', `/proc/self/${f}`], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/).join(' '))
      .join(', ');
  return { uid: read('uid_map'), gid: read('gid_map') };
}

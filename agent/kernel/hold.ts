// One agent per state and pins directory: each is held, for the agent's life, by a flock(2) on a
// lock file of its own in it, taken before the agent reads or writes anything else there.
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { errnoOf, Fault, refused } from '../fault.ts';
import type { SysError } from './ffi.ts';
import { makeDirs } from './files.ts';
import { lockExclusive } from './sys.ts';

/** The lock file in a held directory: the agent's own (0600), so no other user can open it, let alone lock it. */
export const LOCK_FILE = '.usernsd.lock';

type Held = { readonly dirs: readonly (readonly [string, number])[]; readonly role: string; readonly fd: number; readonly dev: number; readonly ino: number };
/** What this process holds, by its directory (the first of `dirs`): what holdAgain takes again. */
const holds = new Map<string, Held>();

/**
 * Hold the agent's `role` directory for this process's life: `dirs` are made in order (path, mode)
 * when missing, and an exclusive flock(2) is taken on LOCK_FILE in the last of them. A lock on the
 * directory itself would do, but any user who can open it could take it first and keep the agent
 * from starting: the file is opened by root alone (mode 0600, and refused when it is not root's and
 * closed to others). The descriptor is close-on-exec (no program the agent starts keeps the lock),
 * and the kernel lets go when the process ends, however it ends. Throws a busy fault naming the
 * holder's pid (from /proc/locks) when another process holds it.
 */
export function holdDirectory(dirs: readonly (readonly [string, number])[], role: string): number {
  for (const [dir, mode] of dirs) makeDirs(dir, mode);
  const file = join(dirs[dirs.length - 1][0], LOCK_FILE);
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP')
      throw new Fault('in-the-way', `${file} is a symbolic link, not the agent's lock file`, { object: 'directory', subject: file });
    throw refused('directory', 'open', errnoOf(err), { subject: file, cause: err });
  }
  const st = fstatSync(fd);
  if (!st.isFile() || st.uid !== process.geteuid!() || (st.mode & 0o077) !== 0) {
    closeSync(fd);
    throw new Fault('in-the-way', `${file} is not the agent's own lock file (a regular file of its uid, mode 0600)`, { object: 'directory', subject: file });
  }
  try {
    if (lockExclusive(fd, file)) {
      holds.set(resolve(dirs[0][0]), { dirs, role, fd, dev: st.dev, ino: st.ino });
      return fd;
    }
  } catch (err) {
    closeSync(fd);
    throw refused('directory', 'lock', (err as SysError).code, { subject: file, cause: err });
  }
  closeSync(fd);
  const pid = lockHolder(st.dev, st.ino);
  throw new Fault('busy', `another usernsd${pid === null ? '' : ` (pid ${pid})`} is using the ${role} ${dirs[0][0]}`, {
    object: 'directory',
    step: 'hold',
    subject: dirs[0][0],
  });
}

/**
 * Hold `dir` again if this process held it: for whoever made it anew after it was removed behind
 * the agent's back, which took the agent's lock with it (another agent could otherwise take the new
 * one and work beside it). Nothing for a directory this process never held.
 */
export function holdAgain(dir: string): number | null {
  const h = holds.get(resolve(dir));
  return h ? holdAnew(h.dirs, h.role) : null;
}

/**
 * holdDirectory for a directory made anew: the lock on the one removed is let go once the new one
 * is held — if its descriptor is still that lock file's (a caller may have closed it, and its number
 * may name another file since).
 */
export function holdAnew(dirs: readonly (readonly [string, number])[], role: string): number {
  const before = holds.get(resolve(dirs[0][0]));
  const fd = holdDirectory(dirs, role);
  if (!before) return fd;
  let st;
  try {
    st = fstatSync(before.fd);
  } catch {
    return fd; // closed already
  }
  if (st.dev === before.dev && st.ino === before.ino) closeSync(before.fd);
  return fd;
}

/** The pid that holds a flock on the inode (dev, ino), as /proc/locks says ("1: FLOCK ADVISORY WRITE PID MAJ:MIN:INO 0 EOF"); null if none is shown. */
export function lockHolder(dev: number, ino: number, locks = readLocks()): number | null {
  // dev_t as glibc encodes it: the major number in bits 8-19 and 32-43, the minor in bits 0-7 and 12-31 (hex in /proc/locks).
  const major = ((dev >> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff);
  const minor = (dev & 0xff) | ((dev >>> 12) & ~0xff);
  const want = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${ino}`;
  for (const line of locks.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[1] === 'FLOCK' && f[3] === 'WRITE' && f[5] === want && /^\d+$/.test(f[4])) return Number(f[4]);
  }
  return null;
}

function readLocks(): string {
  try {
    return readFileSync('/proc/locks', 'utf8');
  } catch {
    return '';
  }
}

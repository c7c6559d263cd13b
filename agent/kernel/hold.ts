// One agent per state and pins directory: each is held, for the agent's life, by a flock(2) on the
// directory itself, taken before the agent reads or writes anything in them.
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';
import { errnoOf, Fault, refused } from '../fault.ts';
import type { SysError } from './ffi.ts';
import { makeDirs } from './files.ts';
import { lockExclusive } from './sys.ts';

/**
 * Hold `dir`, the agent's `role` directory (made with `mode` when missing), for this process's life: an exclusive flock(2) on the
 * directory itself, so no file of ours appears in it. The descriptor is close-on-exec (no program
 * the agent starts keeps the lock after it), and the kernel lets go when the process ends, however
 * it ends. Throws a busy fault naming the holder's pid (from /proc/locks) when another process holds it.
 */
export function holdDirectory(dir: string, mode: number, role: string): number {
  makeDirs(dir, mode);
  let fd: number;
  try {
    fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP' || (err as NodeJS.ErrnoException).code === 'ENOTDIR')
      throw new Fault('in-the-way', `${dir} is not a directory (a symlink?)`, { object: 'directory', subject: dir });
    throw refused('directory', 'open', errnoOf(err), { subject: dir, cause: err });
  }
  try {
    if (lockExclusive(fd, dir)) return fd;
  } catch (err) {
    closeSync(fd);
    throw refused('directory', 'lock', (err as SysError).code, { subject: dir, cause: err });
  }
  const st = fstatSync(fd);
  closeSync(fd);
  const pid = lockHolder(st.dev, st.ino);
  throw new Fault('busy', `another usernsd${pid === null ? '' : ` (pid ${pid})`} is using the ${role} ${dir}`, {
    object: 'directory',
    step: 'hold',
    subject: dir,
  });
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

// Files the agent writes the careful way, for every layer that keeps something on disk (the pin
// records beside the pins, the state directory): atomic replacement, directories with an exact
// mode, and the temporary files a crashed writer leaves.
import {
  chmodSync,
  closeSync,
  constants,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import type { Stats } from 'node:fs';
import { dirname, join } from 'node:path';

/** open(2)'s O_PATH, which node:fs does not name: a descriptor to look up from and through, never opened for its data. */
export const O_PATH = 0o10000000;

/**
 * The name of what a descriptor holds (and of `name` in it, when it is a directory) for calls that
 * take a path: the kernel follows /proc/self/fd/N to that very inode, never to whatever a name
 * resolves to by then.
 */
export const viaFd = (fd: number, name = ''): string => `/proc/self/fd/${fd}${name ? `/${name}` : ''}`;

/** lstat(2), or null when there is nothing there (or it cannot be looked at). */
export function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

/**
 * mkdir -p with MODE on every directory it makes, whatever the umask (the unit runs the agent with
 * UMask=0077: a pins or socket directory other users must reach is given its mode explicitly).
 * Directories that exist already are left as they are.
 */
export function makeDirs(dir: string, mode: number): void {
  const first = mkdirSync(dir, { recursive: true, mode });
  if (first === undefined) return;
  for (let d = dir; ; d = dirname(d)) {
    chmodSync(d, mode);
    if (d === first || d === dirname(d)) break;
  }
}

/** A temporary file made anew (O_EXCL, never through a symbolic link), mode 0600; one a crash of a process with this pid left is replaced. */
function openTemp(tmp: string): number {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  try {
    return openSync(tmp, flags, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    unlinkSync(tmp);
    return openSync(tmp, flags, 0o600);
  }
}

/**
 * Write-then-rename, so a crash leaves the old file or the new one, never a torn one. `durable`
 * adds the fsyncs that make this hold across a power loss too, for what outlives a reboot; without
 * them it holds across a crash of the agent (the page cache survives it) at a fraction of the cost.
 */
export function writeFileAtomic(dir: string, name: string, body: string, durable = true): void {
  const file = join(dir, name);
  const tmp = join(dir, `.${name}.${process.pid}.tmp`);
  const fd = openTemp(tmp);
  try {
    // Encoded first: the string path of writeSync encodes about half as fast (contexts.json of 65,535 contexts is 29 MB).
    writeSync(fd, Buffer.from(body, 'utf8'));
    if (durable) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  if (durable) fsyncDir(dir);
}

/**
 * writeFileAtomic for a body made piece by piece, without holding the event loop for all of it: the
 * event loop runs between pieces (each made when it is written). `stopped` is asked before each
 * piece and before the rename: once it says true, the temporary file is removed, nothing is
 * replaced, and false is returned. `written` runs in the very turn of the rename, before anything
 * else runs. Its temporary file is a name of its own (`.NAME.pieces.PID.tmp`), never the one
 * writeFileAtomic writes meanwhile.
 */
export async function writeFileAtomicInPieces(
  dir: string,
  name: string,
  pieces: Iterable<string>,
  opts: { readonly durable: boolean; readonly stopped: () => boolean; readonly written: () => void },
): Promise<boolean> {
  const tmp = join(dir, `.${name}.pieces.${process.pid}.tmp`);
  const fd = openTemp(tmp);
  let open = true;
  const drop = () => {
    if (open) closeSync(fd);
    open = false;
    unlinkSync(tmp);
  };
  try {
    for (const piece of pieces) {
      if (opts.stopped()) {
        drop();
        return false;
      }
      writeSync(fd, Buffer.from(piece, 'utf8'));
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (opts.stopped()) {
      drop();
      return false;
    }
    // From here to `written`, one turn: nothing else sees the new file before its writer knows it.
    if (opts.durable) fsyncSync(fd);
    closeSync(fd);
    open = false;
    renameSync(tmp, join(dir, name));
    if (opts.durable) fsyncDir(dir);
    opts.written();
    return true;
  } catch (err) {
    try {
      drop();
    } catch {
      /* renamed already, or gone */
    }
    throw err;
  }
}

/** fsync a directory: the names made or replaced in it outlive a power loss. */
export function fsyncDir(dir: string): void {
  const dfd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/**
 * Temporary files a crashed agent left (`.NAME.PID.tmp`, see writeFileAtomic): removed at start
 * unless their writer still runs. Returns the names removed.
 */
export function removeStaleTemps(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = /^\..+\.(\d+)\.tmp$/.exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || writerRuns(pid)) continue;
    try {
      unlinkSync(join(dir, name));
      removed.push(name);
    } catch {
      /* gone meanwhile */
    }
  }
  return removed;
}

/** Does a usernsd with this pid run? (A pid reused by another program does not count.) */
function writerRuns(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('usernsd');
  } catch {
    return false;
  }
}

// Paths the agent hands to a context's root ([delegate] directories and devices), resolved as
// hostile (SPEC §12): a component of such a path may lie in a directory the context's owner can
// write, who may swap it for a symlink between any two of the agent's system calls. So nothing here
// acts on a name once it has been looked at: each directory is opened with O_NOFOLLOW relative to
// the descriptor of the one above it, and mode and owner are set through the descriptor of the very
// inode that was checked (/proc/self/fd/N, as systemd's chase() and fchmod_opath() do) — never on a
// name the kernel would resolve again, following whatever is there by then.
import { chmodSync, chownSync, closeSync, constants, fchmodSync, fchownSync, fstatSync, mkdirSync, openSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { errnoOf, Fault, refused } from '../fault.ts';
import { lstatOrNull, O_PATH, viaFd } from './files.ts';

// libuv opens every descriptor O_CLOEXEC.
const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/**
 * The moments between two system calls where a hostile owner may act. Tests run their attacks here
 * (test/integration/owned-paths.test.ts); the agent passes nothing.
 */
export type PathStep = 'made' | 'opened' | 'moded' | 'checked';
export type Between = (step: PathStep, path: string) => void;
const nothing: Between = () => {};

export type Owner = { readonly uid: number; readonly gid: number };

/**
 * mkdir -p PATH: each directory it makes root's with mode 0755, the last one then handed to `root`
 * (owner and group). An existing last directory is taken only when `root` owns it already: usernsd
 * never chowns data it did not create. No component may be a symlink. Returns whether it made the
 * last directory; throws a Fault (object 'directory') otherwise.
 */
export function makeOwnedDirectory(label: string, path: string, root: Owner, between: Between = nothing): boolean {
  const parts = path.split('/').filter(Boolean);
  const me = process.geteuid!();
  const inTheWay = (at: string, why: string, step?: string) =>
    new Fault('in-the-way', `directory ${path} for "${label}": ${why}`, { object: 'directory', label, subject: at, step });
  let dir = openSync('/', DIR_FLAGS);
  try {
    let at = '';
    for (const [i, part] of parts.entries()) {
      at = `${at}/${part}`;
      const last = i === parts.length - 1;
      let made = false;
      try {
        // 0700 until it is checked and given its mode: no one else looks in meanwhile.
        mkdirSync(viaFd(dir, part), { mode: 0o700 });
        made = true;
      } catch (err) {
        if (errnoOf(err) !== 'EEXIST') throw refused('directory', `make directory ${at}`, errnoOf(err), { label });
      }
      if (made) between('made', at);
      let fd: number;
      try {
        fd = openSync(viaFd(dir, part), DIR_FLAGS);
      } catch (err) {
        const code = errnoOf(err);
        // O_NOFOLLOW | O_DIRECTORY on a symlink says ELOOP or ENOTDIR, by what it points to: which one it is, for the message only.
        if (code === 'ELOOP' || code === 'ENOTDIR')
          throw inTheWay(at, lstatOrNull(viaFd(dir, part))?.isSymbolicLink() ? `${at} is a symlink (not followed)` : `${at} is not a directory`);
        throw refused('directory', `open directory ${at}`, code, { label });
      }
      closeSync(dir);
      dir = fd;
      between('opened', at);
      const st = fstatSync(fd);
      if (made && st.uid !== me)
        // Not the directory it made: someone removed that one and put their own in its place.
        throw inTheWay(at, `${at} was replaced while it was made (it is uid ${st.uid}'s)`);
      if (!made) {
        if (!last) continue;
        if (st.uid !== root.uid)
          throw inTheWay(
            path,
            `exists, owned by uid ${st.uid}: usernsd gives only directories it creates or that the context's root (host uid ${root.uid}) owns already`,
            'chown',
          );
        return false;
      }
      try {
        fchmodSync(fd, 0o755);
        between('moded', at);
        if (last) fchownSync(fd, root.uid, root.gid);
      } catch (err) {
        throw refused('directory', `make directory ${at}`, errnoOf(err), { label });
      }
    }
    return true;
  } finally {
    closeSync(dir);
  }
}

/** Whether the node found (its lstat) is the one meant: its rdev, as recorded. */
export type NodeCheck = (st: Stats) => boolean;

/**
 * Set a device node's owner and mode (`mode` of the node as found; null: leave it), on the inode
 * found at PATH only if `isIt` says it is the node meant: opened with O_PATH | O_NOFOLLOW, checked
 * through that descriptor, changed through it. Returns false, changing nothing, when it is not.
 */
export function setNodeOwner(path: string, isIt: NodeCheck, owner: Owner, mode: (st: Stats) => number | null, between: Between = nothing): boolean {
  let fd: number;
  try {
    fd = openSync(path, O_PATH | constants.O_NOFOLLOW);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return false;
    throw err;
  }
  try {
    const st = fstatSync(fd);
    if (!(st.isCharacterDevice() || st.isBlockDevice()) || !isIt(st)) return false;
    between('checked', path);
    // chmod(2) and chown(2) of /proc/self/fd/N act on the inode the descriptor holds (an O_PATH
    // descriptor takes neither fchmod nor fchown). The mode is changed while the node is root's:
    // on a node of another owner it would need CAP_FOWNER.
    const ours = st.uid === process.geteuid!();
    const to = mode(st);
    if (ours && to !== null) chmodSync(viaFd(fd), to);
    chownSync(viaFd(fd), owner.uid, owner.gid);
    if (!ours && to !== null) chmodSync(viaFd(fd), to);
    return true;
  } finally {
    closeSync(fd);
  }
}

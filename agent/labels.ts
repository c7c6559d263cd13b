// Labels on inodes (SPEC §7): the nearest labelled ancestor of a path, without crossing a mount point or following a symlink for the label itself.
import { closeSync, constants, openSync, readlinkSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { labelProblem } from '../config/schema.ts';
import type { Peer } from './wire/peer.ts';
import { UsernsError } from './errors.ts';
import { SysError } from './kernel/ffi.ts';
import { asCaller, getXattrOf, searchableAs } from './kernel/sys.ts';
import { O_PATH, viaFd } from './kernel/files.ts';
import { mountTable } from './kernel/mountinfo.ts';

/** Mount points of this mount namespace, from the kernel. */
export function mountPoints(): Set<string> {
  return new Set(mountTable().keys());
}

/**
 * Can the peer search every directory down to `dir`? The agent walks as root, and must not tell a
 * caller about paths it could not reach itself: the kernel is asked with the caller's own ids and
 * groups (ACLs included, a denying entry too). Where it cannot be asked, mode bits alone decide.
 */
export function peerCanReach(peer: Peer, dir: string): boolean {
  if (peer.uid === 0) return true;
  const asked = searchableAs(dir, peer);
  if (asked !== null) return asked;
  const parts = dir.split('/').filter(Boolean);
  for (let i = 0; i <= parts.length; i++) {
    const d = '/' + parts.slice(0, i).join('/');
    const st = statSync(d);
    const bits = peer.uid === st.uid ? st.mode >> 6 : peer.gid === st.gid || peer.groups.includes(st.gid) ? st.mode >> 3 : st.mode;
    if ((bits & 1) === 0) return false;
  }
  return true;
}

export type Found = { readonly label: string; readonly at: string };

/** Mount points and "..": no walk up is longer than the deepest path the kernel resolves. */
const MAX_WALK = 4096;

/**
 * A path as the caller reaches it: a descriptor of it (its last component not followed: a symlink
 * is itself) and one of the directory it is in, both opened with the caller's own filesystem ids
 * and groups (asCaller), so that the kernel checks the caller may reach it in the very lookup whose
 * result is used. A caller who swaps a directory of hers for a symlink into a place she cannot reach
 * gets that lookup refused, or the directory she could reach: never the other place. The caller
 * closes it.
 */
export class Reached {
  readonly fd: number;
  readonly dirFd: number;
  private constructor(fd: number, dirFd: number) {
    this.fd = fd;
    this.dirFd = dirFd;
  }

  /**
   * `follow`: the last component too is followed (a view's tree named through a symlink); the
   * label's walk then goes up from what it points to, by "..".
   */
  static as(peer: Peer, path: string, { follow = false }: { follow?: boolean } = {}): Reached {
    const base = basename(path);
    const open = () => {
      if (follow) {
        const fd = openSync(path, O_PATH);
        return new Reached(fd, fd);
      }
      const dirFd = openSync(dirname(path), O_PATH | constants.O_DIRECTORY);
      if (base === '') return new Reached(dirFd, dirFd);
      try {
        return new Reached(openSync(viaFd(dirFd, base), O_PATH | constants.O_NOFOLLOW), dirFd);
      } catch (err) {
        closeSync(dirFd);
        throw err;
      }
    };
    try {
      return asCaller(peer, open);
    } catch (err) {
      throw notReachable(peer, path, err);
    }
  }

  close(): void {
    closeSync(this.fd);
    if (this.dirFd !== this.fd) closeSync(this.dirFd);
  }
}

/**
 * Walk up from `path` to the nearest inode carrying the label attribute, as the caller reaches it
 * (Reached). The last component is not followed: a symlink's own attribute is read, never its
 * target's. Up from there the walk goes by descriptor ("..", as root: the caller reached each of
 * these directories' children through them) and ends at the first mount point it meets.
 */
export function findLabel(path: string, xattr: string, peer: Peer): Found {
  const reached = Reached.as(peer, path);
  try {
    return findLabelFrom(reached, path, xattr);
  } finally {
    reached.close();
  }
}

/** findLabel from a path reached already (explain looks at the file's own ids through the same descriptor). */
export function findLabelFrom(reached: Reached, path: string, xattr: string): Found {
  const mounts = mountPoints();
  let fd = reached.fd;
  const opened: number[] = [];
  try {
    for (let step = 0; step < MAX_WALK; step++) {
      // Where it is, as the kernel names the inode the descriptor holds: for the answer and the mount check.
      const at = readlinkSync(viaFd(fd));
      let value: Buffer | null;
      try {
        value = getXattrOf(fd, xattr);
      } catch (err) {
        if (err instanceof SysError && (err.code === 'ENOTSUP' || err.code === 'EOPNOTSUPP'))
          value = null; // this filesystem holds no such attribute
        else throw new UsernsError('E_KERNEL', `Failed to read ${xattr} of ${at}: ${(err as Error).message}`);
      }
      if (value !== null) {
        const label = value.toString();
        const problem = labelProblem(label);
        if (problem) throw new UsernsError('E_CONFIG', `${at} carries an invalid label in ${xattr}: ${problem} (fix it with usernsctl label set or clear)`);
        return { label, at };
      }
      if (at === '/' || mounts.has(at))
        throw new UsernsError(
          'E_NOT_FOUND',
          `no ${xattr} label on ${path} or its ancestors up to ${at}${at === '/' ? '' : ' (a mount point: the walk does not cross it)'}`,
        );
      // The last component's directory is the one it was looked up in; above that, "..".
      if (fd === reached.fd && reached.dirFd !== reached.fd) fd = reached.dirFd;
      else {
        fd = openSync(viaFd(fd, '..'), O_PATH | constants.O_DIRECTORY);
        opened.push(fd);
      }
    }
    throw new UsernsError('E_NOT_FOUND', `no ${xattr} label on ${path} within ${MAX_WALK} directories up`);
  } catch (err) {
    if (err instanceof UsernsError) throw err;
    throw new UsernsError('E_KERNEL', `Failed to walk up from ${path} for its label: ${(err as Error).message}`);
  } finally {
    for (const f of opened) closeSync(f);
  }
}

/** One answer for a path a caller cannot reach and one that does not exist: no oracle (SPEC §12). */
export function unreachableBy(peer: Peer, path: string): UsernsError {
  return new UsernsError('E_PERMISSION', `uid ${peer.uid} cannot reach ${path} (or it does not exist)`);
}

/** Root learns what is wrong; anyone else gets unreachableBy. */
export function notReachable(peer: Peer, path: string, err: unknown): UsernsError {
  if (peer.uid !== 0) return unreachableBy(peer, path);
  return new UsernsError('E_NOT_FOUND', `${path}: ${(err as NodeJS.ErrnoException | null)?.code ?? 'not found'}`);
}

// Labels on inodes (SPEC §7): the nearest labelled ancestor of a path, without crossing a mount point or following a symlink for the label itself.
import { lstatSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { labelProblem } from '../config/schema.ts';
import type { Peer } from './wire/peer.ts';
import { UsernsError } from './errors.ts';
import { SysError } from './kernel/ffi.ts';
import { getXattr, searchableAs } from './kernel/sys.ts';
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

/**
 * Walk up from `path` to the nearest inode carrying the label attribute. The ancestors are taken
 * as they really are (realpath), the last component is not followed: a symlink's own attribute is
 * read, never its target's. The walk ends at the first mount point it meets.
 */
export function findLabel(path: string, xattr: string, peer: Peer): Found {
  let parent: string;
  try {
    parent = realpathSync(dirname(path));
  } catch (err) {
    throw notReachable(peer, path, err);
  }
  if (!peerCanReach(peer, parent)) throw notReachable(peer, path, null);
  let at = basename(path) === '' ? parent : join(parent, basename(path));
  try {
    lstatSync(at);
  } catch (err) {
    throw notReachable(peer, path, err);
  }
  const mounts = mountPoints();
  for (;;) {
    let value: Buffer | null;
    try {
      value = getXattr(at, xattr);
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
    if (at === '/' || mounts.has(at)) {
      throw new UsernsError(
        'E_NOT_FOUND',
        `no ${xattr} label on ${path} or its ancestors up to ${at}${at === '/' ? '' : ' (a mount point: the walk does not cross it)'}`,
      );
    }
    at = dirname(at);
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

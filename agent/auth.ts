// Who is asking (the kernel's word, never the message's) and what they may do (SPEC §6).
import type { Context } from '../config/types.ts';
import { peerCred, peerGroups } from './kernel/sys.ts';

/** A connected client as the kernel saw it at connect(2). */
export type Peer = {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  /** Supplementary groups. */
  readonly groups: readonly number[];
};

/** SO_PEERCRED and SO_PEERGROUPS of an accepted UNIX socket. */
export function peerOf(fd: number): Peer {
  const cred = peerCred(fd);
  return { pid: cred.pid, uid: cred.uid, gid: cred.gid, groups: peerGroups(fd) };
}

export function isRoot(peer: Peer): boolean {
  return peer.uid === 0;
}

/**
 * May this peer resolve and map this context? Root, its owner or the owner of a context it is
 * nested in (who holds every capability in it anyway), an [access] user, or a member (by primary
 * or supplementary group of the connecting process) of an [access] group. `ancestors`: its parent,
 * the parent's parent, and so on.
 */
export function mayUse(peer: Peer, ctx: Context, ancestors: readonly Context[] = []): boolean {
  if (peer.uid === 0 || peer.uid === ctx.owner.uid) return true;
  if (ctx.access.uids.includes(peer.uid)) return true;
  if (ctx.access.gids.some((g) => g === peer.gid || peer.groups.includes(g))) return true;
  return ancestors.some((a) => a.owner.uid === peer.uid);
}

/**
 * May this peer join the context's namespace from the initial one? The kernel's rule for setns(2):
 * root, or the owner of the top-level ancestor (`top`: the context itself when its parent is host).
 * [access] gives resolve and map, not entry; a nested context's own owner joins from inside its parent.
 */
export function mayEnter(peer: Peer, top: Context): boolean {
  return peer.uid === 0 || peer.uid === top.owner.uid;
}

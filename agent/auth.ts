// Who is asking (the kernel's word, never the message's) and what they may do (SPEC §6).
import type { Context } from '../config/types.ts';
import { peerCred, peerGroups } from './sys.ts';

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
 * May this peer resolve, map and enter this context? Root, the owner, an [access] user, or a member
 * (by primary or supplementary group of the connecting process) of an [access] group.
 */
export function mayUse(peer: Peer, ctx: Context): boolean {
  if (peer.uid === 0 || peer.uid === ctx.owner.uid) return true;
  if (ctx.access.uids.includes(peer.uid)) return true;
  return ctx.access.gids.some((g) => g === peer.gid || peer.groups.includes(g));
}

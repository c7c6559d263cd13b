// Who is asking: the kernel's word at connect(2), never the message's (SPEC §6, §12). What a peer
// may do is agent/policy.ts.
import { peerCred, peerGroups } from '../kernel/sys.ts';

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

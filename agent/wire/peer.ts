// Who is asking: the kernel's word at connect(2), never the message's (SPEC §6, §12). What a peer
// may do is agent/policy.ts.
import { statSync } from 'node:fs';
import { peerCred, peerGroups, peerUsernsChain } from '../kernel/sys.ts';

/** The agent's own user namespace: a caller in it is on the host (the agent's view of it). */
export const OWN_USERNS = statSync('/proc/self/ns/user').ino;

/** A connected client as the kernel saw it at connect(2). */
export type Peer = {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
  /** Supplementary groups. */
  readonly groups: readonly number[];
  /** The user namespaces it runs in, innermost first, as nsfs inodes (empty: the kernel could not say). */
  readonly userns: readonly number[];
  /** Whether it runs in the agent's own user namespace: only there is uid 0 root, and setns(2) from here. */
  readonly host: boolean;
  /**
   * The context whose namespace it runs in (the innermost pinned one on its chain), set for each
   * request at the handler edge; null: none (the host, or a namespace no context pins).
   */
  readonly inside?: string | null;
};

/** SO_PEERCRED and SO_PEERGROUPS of an accepted UNIX socket. */
export function peerOf(fd: number): Peer {
  const cred = peerCred(fd);
  const userns = peerUsernsChain(fd, cred.pid, OWN_USERNS);
  return { pid: cred.pid, uid: cred.uid, gid: cred.gid, groups: peerGroups(fd), userns, host: userns[0] === OWN_USERNS };
}

// What a peer may do with a context (SPEC §6): pure rules over the identity the kernel gave
// (agent/wire/peer.ts) and the context's owner and [access] lists.
import type { Context } from '../config/types.ts';
import type { Peer } from './wire/peer.ts';

/** Root: uid 0 in the agent's own user namespace. Host uid 0 mapped into a context is that context's, not root. */
export function isRoot(peer: Peer): boolean {
  return peer.uid === 0 && peer.host;
}

/**
 * May this peer resolve and map this context? From inside a context, that context and its
 * descendants only. From the host: root, its owner or the owner of a context it is
 * nested in (who holds every capability in it anyway), an [access] user, or a member (by primary
 * or supplementary group of the connecting process) of an [access] group. `ancestors`: its parent,
 * the parent's parent, and so on.
 */
export function mayUse(peer: Peer, ctx: Context, ancestors: readonly Context[] = []): boolean {
  // Inside a context (SPEC §14): that context and what is nested in it, whatever host uid it shows.
  if (typeof peer.inside === 'string') return ctx.label === peer.inside || ancestors.some((a) => a.label === peer.inside);
  if (isRoot(peer) || peer.uid === ctx.owner.uid) return true;
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
  // From another user namespace the kernel's rule is other: not "from the initial one" (SPEC §14).
  return peer.host && (peer.uid === 0 || peer.uid === top.owner.uid);
}

/**
 * The label a caller means (SPEC §14): from inside context C, a label that is neither C nor nested
 * in it by name is C's name for a context nested in it ("x" is C.x); from the host, the label itself.
 */
export function ownName(peer: Peer, label: string): string {
  const c = peer.inside;
  if (typeof c !== 'string' || label === c || label.startsWith(`${c}.`)) return label;
  return `${c}.${label}`;
}

/**
 * May this peer create a context nested in `parent`, or release one made from inside it? Host root;
 * and, from inside context C, C's root (`rootUid`: the host uid C maps uid 0 to) for C and what is
 * nested in it. A context's other users, and its root seen from the host, may not.
 */
export function mayShape(peer: Peer, parent: Context, ancestors: readonly Context[], rootUid: number | null): boolean {
  if (isRoot(peer)) return true;
  return typeof peer.inside === 'string' && peer.uid === rootUid && mayUse(peer, parent, ancestors);
}

/**
 * May this peer join `ctx` from inside the context it runs in (SPEC §14)? The kernel lets a
 * namespace's root into every namespace nested in it, since the agent makes those as that root:
 * from inside C, C's root (`rootUid`) may enter what is nested in C, not C itself (it is there).
 */
export function mayEnterFromInside(peer: Peer, ctx: Context, ancestors: readonly Context[], rootUid: number | null): boolean {
  // A caller on the host has no context it runs in: no ancestor is named by it.
  return peer.uid === rootUid && ancestors.some((a) => a.label === peer.inside);
}

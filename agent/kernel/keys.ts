// The kernel's key service (keyctl(2)) through koffi: what a request-key handler and `usernsctl keys` need.
import { koffi, libc, SysError } from './ffi.ts';

// Not `import from 'node:fs'`: its namespace costs the upcall ~2 ms (see upcall.ts).
const { readFileSync } = process.getBuiltinModule('node:fs');

const syscall = libc.func('long syscall(long nr, ...)');
// x86-64 and aarch64 numbers of keyctl(2) and add_key(2); the request-key handler runs on the machine it was built for.
const SYS_KEYCTL = process.arch === 'arm64' ? 219 : 250;
const SYS_ADD_KEY = process.arch === 'arm64' ? 217 : 248;

/** Keys of type `user` described `userns:LABEL` are ours. */
export const KEY_PREFIX = 'userns:';

/** Errnos Node's table lacks (asm-generic/errno.h). */
export const EKEYREJECTED = 129;

const KEYCTL = {
  DESCRIBE: 6,
  GET_PERSISTENT: 22,
  INSTANTIATE: 12,
  SET_TIMEOUT: 15,
  REJECT: 19,
  INVALIDATE: 21,
} as const;

function keyctl(op: number, ...args: unknown[]): number {
  const r = Number(syscall(SYS_KEYCTL, 'int', op, ...args));
  if (r < 0) throw new SysError('keyctl', koffi.errno(), `op ${op}`);
  return r;
}

/** Owner of a key: the process that asked for it (a key being constructed belongs to its requester). */
export function describeKey(key: number): { type: string; uid: number; gid: number; perm: number; description: string } {
  const buf = Buffer.alloc(4096);
  const n = keyctl(KEYCTL.DESCRIBE, 'int32', key, 'void *', buf, 'size_t', buf.length);
  const [type, uid, gid, perm, ...rest] = buf
    .subarray(0, Math.max(0, n - 1))
    .toString()
    .split(';');
  return { type: type, uid: Number(uid), gid: Number(gid), perm: parseInt(perm, 16), description: rest.join(';') };
}

/**
 * Set the expiry while the handler still holds the authority to instantiate: after instantiation
 * the authority is gone, and a `user` key grants its handler no setattr permission (nfsidmap sets
 * its -t after instantiating, so on such keys it fails with EACCES and they stay permanent).
 */
export function setKeyTimeout(key: number, seconds: number): void {
  keyctl(KEYCTL.SET_TIMEOUT, 'int32', key, 'uint32', seconds);
}

/** Instantiate a key under construction, also linking it into `ring` (0: nowhere more). */
export function instantiateKey(key: number, payload: Buffer, ring = 0): void {
  keyctl(KEYCTL.INSTANTIATE, 'int32', key, 'void *', payload, 'size_t', payload.length, 'int32', ring);
}

const KEY_SPEC_PROCESS_KEYRING = -2;

/**
 * Where the upcall registers the keys it answers, so that root can find and invalidate them all
 * when a context changes (the requesters' own keyrings are theirs alone): root's persistent
 * keyring (keyrings(7)). It is linked into this process's keyring, which makes this process its
 * possessor — what reading, linking into and invalidating through it need — until the process ends.
 * Throws when the kernel has no persistent keyrings (EOPNOTSUPP).
 */
export function issuedKeysRing(): number {
  return keyctl(KEYCTL.GET_PERSISTENT, 'int32', 0, 'int32', KEY_SPEC_PROCESS_KEYRING);
}

/** An answer's own keyring in the registry is described "usernsd:KEY" (KEY its serial, in decimal). */
const RING_PREFIX = 'usernsd:';

/**
 * A keyring of its own for one answer, in the registry, expiring after `seconds`: a keyring holds
 * one key per description, so linking every user's "userns:LABEL" into the registry itself would
 * keep only the last one. The caller links the answer into it when it instantiates the key.
 */
export function answerRing(key: number, seconds: number): number {
  const ring = Number(syscall(SYS_ADD_KEY, 'str', 'keyring', 'str', `${RING_PREFIX}${key}`, 'void *', null, 'size_t', 0, 'int32', issuedKeysRing()));
  if (ring < 0) throw new SysError('add_key', koffi.errno(), `keyring ${RING_PREFIX}${key}`);
  setKeyTimeout(ring, seconds);
  return ring;
}

/** Each answer's own keyring in the registry, by the answer key's serial ("usernsd:KEY"). */
export function answerRings(all: KeyEntry[] = listKeys()): Map<number, number> {
  return new Map(
    all.filter((k) => k.type === 'keyring' && k.description.startsWith(RING_PREFIX)).map((k) => [Number(k.description.slice(RING_PREFIX.length)), k.id]),
  );
}

/**
 * Invalidate the keys the upcall answered for these labels, whoever asked for them, and their
 * answer rings: the next request for one makes a new upcall once they are collected (see
 * collected). Returns how many answers, and every key invalidated; a key gone meanwhile is not an
 * error.
 */
export function invalidateIssuedKeys(labels: ReadonlySet<string>): { answers: number; invalidated: number[] } {
  const invalidated: number[] = [];
  if (labels.size === 0) return { answers: 0, invalidated };
  issuedKeysRing(); // possessed from here on: /proc/keys shows every key in it
  const all = listKeys();
  const ringOf = answerRings(all);
  let answers = 0;
  for (const k of ourKeys(all)) {
    if (!labels.has(k.label)) continue;
    try {
      invalidateKey(k.id);
      invalidated.push(k.id);
      answers++;
    } catch {
      /* expired or invalidated meanwhile */
    }
    const ring = ringOf.get(k.id);
    if (ring !== undefined)
      try {
        invalidateKey(ring);
        invalidated.push(ring);
      } catch {
        /* expired meanwhile */
      }
  }
  return { answers, invalidated };
}

/** How long a release, a reload or `usernsctl keys clear` waits for the key collector, at most. */
export const COLLECT_WAIT_MS = 2000;

/**
 * Until the kernel's key collector has taken these invalidated keys out of every keyring that
 * held them. Before that, a request_key(2) that meets one in the requester's keyrings fails with
 * EKEYREVOKED instead of making a new upcall: keyctl_invalidate(3) only marks the key, and the
 * collector, a work item the kernel runs soon after, unlinks it (tens of milliseconds after on
 * 6.18 builds). So whoever invalidates answers once they are gone, not before.
 *
 * Looked at in /proc/keys (the keys this process may view): an answer stays in view while its
 * answer ring, possessed through root's persistent keyring, links it; the ring is removed in the
 * collector's pass that unlinks invalidated keys from every keyring, the requesters' included.
 * True once none of them is there; false when `withinMs` ran out first.
 */
export async function collected(ids: readonly number[], withinMs = COLLECT_WAIT_MS): Promise<boolean> {
  if (ids.length === 0) return true;
  const deadline = performance.now() + withinMs;
  for (;;) {
    const present = new Set(listKeys().map((k) => k.id));
    if (!ids.some((id) => present.has(id))) return true;
    if (performance.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Negate with an error the requester sees (keyctl_reject(3)), for `seconds`, so it fails fast instead of waiting. */
export function rejectKey(key: number, seconds: number, errno: number = EKEYREJECTED): void {
  keyctl(KEYCTL.REJECT, 'int32', key, 'uint32', seconds, 'uint32', errno, 'int32', 0);
}

export function invalidateKey(key: number): void {
  keyctl(KEYCTL.INVALIDATE, 'int32', key);
}

export type KeyEntry = { id: number; flags: string; timeout: string; uid: number; gid: number; type: string; description: string; summary: string };

/** The keys this process may view, from /proc/keys (its columns: id flags usage timeout perm uid gid type description: summary). */
export function listKeys(): KeyEntry[] {
  const out: KeyEntry[] = [];
  for (const line of readFileSync('/proc/keys', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+) (\S+)\s+\d+\s+(\S+)\s+[0-9a-f]+\s+(\d+)\s+(\d+)\s+(\S+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const rest = m[7];
    const cut = rest.lastIndexOf(': ');
    out.push({
      id: parseInt(m[1], 16),
      flags: m[2],
      timeout: m[3],
      uid: Number(m[4]),
      gid: Number(m[5]),
      type: m[6],
      description: cut < 0 ? rest : rest.slice(0, cut),
      summary: cut < 0 ? '' : rest.slice(cut + 2),
    });
  }
  return out;
}

/** The `user` keys "userns:LABEL" among listKeys(), with their label: matched exactly, never by prefix (nfsidmap -c clears by prefix). */
export function ourKeys(all: KeyEntry[] = listKeys()): (KeyEntry & { label: string })[] {
  return all.filter((k) => k.type === 'user' && k.description.startsWith(KEY_PREFIX)).map((k) => ({ ...k, label: k.description.slice(KEY_PREFIX.length) }));
}

export type KeyState = 'instantiated' | 'negative' | 'pending' | 'expired' | 'revoked' | 'invalidated' | 'dead';

/**
 * A key's state from /proc/keys: its timeout column says "expd" once it has expired (its flags still
 * say instantiated), and its flags are I(nstantiated) R(evoked) D(ead) Q(uota) U(nder construction)
 * N(egative) i(nvalidated).
 */
export function keyState(k: KeyEntry): KeyState {
  if (k.flags.includes('i')) return 'invalidated';
  if (k.flags.includes('D')) return 'dead';
  if (k.flags.includes('R')) return 'revoked';
  if (k.timeout === 'expd') return 'expired';
  if (k.flags.includes('N')) return 'negative';
  if (k.flags.includes('I')) return 'instantiated';
  return 'pending';
}

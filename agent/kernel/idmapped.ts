// Views in the kernel (SPEC §7): a user namespace carrying a view's idmap, and a detached idmapped
// copy of a tree made in the caller's mount namespace. Attaching it is the caller's job.
import { openSync, readlinkSync } from 'node:fs';
import { formatExtents } from '../../config/extents.ts';
import { errnoOf, Fault, refused } from '../fault.ts';
import type { ViewMaps } from '../idmap.ts';
import { SysError } from './ffi.ts';
import type { Spawner } from './spawner.ts';
import type { NamespaceMaker } from './makers.ts';
import { closeFd, fdIdentity, openTreeClone, setMountAttrs } from './sys.ts';

/** User namespaces kept open for views, by map; the oldest is closed past this many. */
const MAX_CACHED_NAMESPACES = 256;

/** What a tree must still be when it is copied: the inode the agent checked (its label, its place). */
export type TreeIdentity = { readonly dev: number; readonly ino: number };

export type TreeRequest = {
  readonly src: string;
  readonly expect: TreeIdentity;
  /** The user namespace whose maps the view carries. */
  readonly usernsFd: number;
  readonly readOnly: boolean;
  /** The caller's process: the tree is copied in its mount namespace. */
  readonly pid: number;
};

/** A detached idmapped tree (the caller closes the descriptor), or why the kernel cannot idmap this filesystem. */
export type TreeResult = { readonly fd: number } | { readonly unsupported: string };

const OWN_MNT_NS = readlinkSync('/proc/self/ns/mnt');

export class ViewNamespaces {
  /** Insertion order is age: a Map is the LRU list. */
  private readonly cache = new Map<string, number>();
  private readonly inflight = new Map<string, Promise<number>>();
  /** The agent's namespace maker: it makes the views' namespaces too; its usernsd-spawner, if it is one, copies trees in callers' mount namespaces. */
  private readonly maker: NamespaceMaker;

  constructor(maker: NamespaceMaker) {
    this.maker = maker;
  }

  get spawner(): Spawner | null {
    return this.maker.spawner;
  }

  /**
   * An open user namespace whose uid_map and gid_map are `maps` (a child of the initial one,
   * owned by root), created once per map and kept: making a view then costs no process.
   */
  usernsFor(maps: ViewMaps): Promise<number> {
    const key = `${formatExtents(maps.uid)}/${formatExtents(maps.gid)}`;
    const fd = this.cache.get(key);
    if (fd !== undefined) {
      this.cache.delete(key);
      this.cache.set(key, fd);
      return Promise.resolve(fd);
    }
    let p = this.inflight.get(key);
    if (!p) {
      p = createIdmapNamespace(maps, this.maker)
        .then((created) => {
          this.cache.set(key, created);
          for (const [k, old] of this.cache) {
            if (this.cache.size <= MAX_CACHED_NAMESPACES) break;
            this.cache.delete(k);
            closeFd(old);
          }
          return created;
        })
        .finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  get size(): number {
    return this.cache.size;
  }

  close(): void {
    for (const fd of this.cache.values()) closeFd(fd);
    this.cache.clear();
  }
}

async function createIdmapNamespace(maps: ViewMaps, maker: NamespaceMaker): Promise<number> {
  if (maps.uid.length === 0 || maps.gid.length === 0) throw new Fault('misconfigured', 'this view maps no ids at all: nothing to show', { object: 'view' });
  const holder = await maker.make({ label: 'a view', uid: 0, gid: 0, setgroups: 'allow', uidMap: maps.uid, gidMap: maps.gid, parent: null });
  try {
    return openSync(`/proc/${holder.pid}/ns/user`, 'r');
  } finally {
    await holder.end();
  }
}

/**
 * Copy the tree at `src` as the caller's mount namespace has it, and give the copy the view's
 * idmap; every view is nosuid and nodev (a tree of alien metadata: its setuid bits and device
 * nodes mean nothing here). In the agent's own namespace when the caller shares it; otherwise
 * (under systemd the agent has a private, read-only one, whose copy would carry read-only flags and
 * miss the caller's mounts) a worker of usernsd-spawner does it there. Nothing is exec'd in a
 * namespace the caller chose: what ran there would be read from the caller's mounts.
 */
export async function makeTree(req: TreeRequest, spawner: Spawner | null): Promise<TreeResult> {
  let callerNs: string;
  try {
    callerNs = readlinkSync(`/proc/${req.pid}/ns/mnt`);
  } catch (err) {
    throw refused('view', `find the caller's mount namespace (/proc/${req.pid}/ns/mnt)`, errnoOf(err));
  }
  if (callerNs === OWN_MNT_NS) return copyTree(req.src, req.expect, req.usernsFd, req.readOnly);
  if (!spawner) {
    throw new Fault(
      'unsupported',
      'a view for a caller in another mount namespace is made by usernsd-spawner, and this agent has none (spawner = node, or no C compiler at build time)',
      { object: 'view', step: "copy the tree in the caller's mount namespace" },
    );
  }
  return treeInSpawner(req, spawner);
}

/** The copy in the agent's own mount namespace. */
export function copyTree(src: string, expect: TreeIdentity, usernsFd: number, readOnly: boolean): TreeResult {
  let tree: number;
  try {
    tree = openTreeClone(src);
  } catch (err) {
    if (err instanceof SysError) throw treeFault(err.code, 'copy the tree', `Failed to copy the tree at ${src}: ${err.message}`);
    throw err;
  }
  try {
    const got = fdIdentity(tree);
    if (got.dev !== expect.dev || got.ino !== expect.ino) {
      throw changed(src);
    }
    try {
      setMountAttrs(tree, { usernsFd, readOnly, nosuid: true, nodev: true });
    } catch (err) {
      if (err instanceof SysError && err.code === 'EINVAL') {
        closeFd(tree);
        return { unsupported: unsupportedWhy(src) };
      }
      throw err instanceof SysError ? treeFault(err.code, 'idmap the tree', `Failed to idmap the tree at ${src}: ${err.message}`) : err;
    }
    return { fd: tree };
  } catch (err) {
    closeFd(tree);
    throw err;
  }
}

/** The tree is not there (ENOENT, ENOTDIR: missing), or the kernel refused a step of copying it. */
const treeFault = (errno: string, step: string, fact: string) =>
  new Fault(step === 'copy the tree' && (errno === 'ENOENT' || errno === 'ENOTDIR') ? 'missing' : 'refused', fact, { object: 'view', step, errno });

const changed = (src: string) =>
  new Fault('changed', `${src} changed while the view was being made (it is not the directory that was checked)`, { object: 'view', subject: src });

const unsupportedWhy = (src: string) =>
  `the kernel cannot idmap the filesystem of ${src} (mount_setattr: EINVAL: NFS, FUSE and some others do not support idmapped mounts, nor does a mount that is idmapped already)`;

async function treeInSpawner(req: TreeRequest, spawner: Spawner): Promise<TreeResult> {
  let mntNsFd: number;
  try {
    // A descriptor, not the path: the worker joins this namespace even if the pid is reused meanwhile.
    mntNsFd = openSync(`/proc/${req.pid}/ns/mnt`, 'r');
  } catch (err) {
    throw refused('view', "open the caller's mount namespace", errnoOf(err));
  }
  try {
    const r = await spawner.tree({ path: req.src, dev: req.expect.dev, ino: req.expect.ino, readOnly: req.readOnly, mntNsFd, usernsFd: req.usernsFd });
    if ('fd' in r) return r;
    if (r.errno === 'EINVAL' && r.step === 'idmap the tree') return { unsupported: unsupportedWhy(req.src) };
    if (r.errno === 'ESTALE') throw changed(req.src);
    throw treeFault(r.errno, r.step, `Failed to ${r.step} at ${req.src} in the caller's mount namespace: ${r.errno}`);
  } finally {
    closeFd(mntNsFd);
  }
}

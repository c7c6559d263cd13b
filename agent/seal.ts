// Whether a tree's raw location is out of every non-root host user's reach (SPEC §12): what a
// context's owner creates through a writable identity view lands there with on-disk ids it was
// not given (0 among them), so such a view is only writable where no other host user can get at it.
import { lstatSync, readFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { isIdmapped, mountTable } from './kernel/mountinfo.ts';
import { getXattr } from './kernel/sys.ts';

export type Seal = { readonly sealed: true; readonly by: string } | { readonly sealed: false; readonly why: string };

/** The advice an owner's view gives when the tree is not sealed: the model of /var/lib/machines. */
export const SEAL_ADVICE =
  'to edit it through the view, keep the tree under a directory owned by root with no search permission for group and others (mkdir -m 0700 /srv/usernsd; mv TREE /srv/usernsd/), as /var/lib/machines is';

const ACL_ACCESS = 'system.posix_acl_access';
const TAG = { user: 0x02, groupObj: 0x04, group: 0x08, mask: 0x10, other: 0x20 } as const;

/**
 * Does the directory's access ACL let anyone but its owner search it? (The mode's group bits are
 * the ACL's mask when there is one, so the mode alone would miss a named user's entry.)
 */
function aclGrantsSearch(dir: string): boolean {
  let acl: Buffer | null;
  try {
    acl = getXattr(dir, ACL_ACCESS);
  } catch {
    return true; // ERANGE: an ACL too large to read here is taken as granting
  }
  if (acl === null || acl.length < 4) return false;
  let mask = 7;
  const entries: { tag: number; perm: number }[] = [];
  for (let at = 4; at + 8 <= acl.length; at += 8) entries.push({ tag: acl.readUInt16LE(at), perm: acl.readUInt16LE(at + 2) });
  for (const e of entries) if (e.tag === TAG.mask) mask = e.perm;
  return entries.some(
    (e) => ((e.tag === TAG.user || e.tag === TAG.groupObj || e.tag === TAG.group) && (e.perm & mask & 1) !== 0) || (e.tag === TAG.other && (e.perm & 1) !== 0),
  );
}

/** The first directory from `path` up to / that no one but root may search, or null. */
export function sealingDirectory(path: string): string | null {
  for (let d = path; ; d = dirname(d)) {
    try {
      const st = lstatSync(d);
      if (st.isDirectory() && st.uid === 0 && (st.mode & 0o011) === 0 && !aclGrantsSearch(d)) return d;
    } catch {
      return null;
    }
    if (d === '/') return null;
  }
}

const under = (path: string, dir: string) => dir === '/' || path === dir || path.startsWith(dir + sep);
/** glibc's major/minor of a dev_t, as mountinfo writes them. */
function devName(dev: number): string {
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & 0xffffff00n);
  return `${major}:${minor}`;
}

/**
 * Every path of this mount namespace under which the directory (`src`, dev, ino) is seen raw: its
 * own, and the same place through other mounts of its filesystem (a bind mount elsewhere, the whole
 * disk mounted twice). Idmapped mounts are views: they show other ids, so they are left out.
 */
export function rawPaths(src: string, dev: number, ino: number, mountinfo?: string): string[] {
  const mounts = [...mountTable(mountinfo).values()].map((m) => ({ dev: m.dev, root: m.root, mountPoint: m.mountPoint, idmapped: isIdmapped(m) }));
  const name = devName(dev);
  // The mount src is seen through: the deepest mount point above it (the last one listed on it).
  let own: (typeof mounts)[number] | undefined;
  for (const m of mounts) if (under(src, m.mountPoint) && (!own || m.mountPoint.length >= own.mountPoint.length)) own = m;
  if (!own || own.dev !== name) return [src];
  const inFs = join(own.root, relative(own.mountPoint, src));
  const out = new Set<string>([src]);
  for (const m of mounts) {
    if (m.dev !== name || m.idmapped || !under(inFs, m.root)) continue;
    const alias = join(m.mountPoint, relative(m.root, inFs));
    try {
      const st = lstatSync(alias);
      if (st.dev === dev && st.ino === ino) out.add(alias); // else covered by another mount: not reached by that path
    } catch {
      /* not there in this namespace */
    }
  }
  return [...out];
}

/**
 * Whether the kernel refuses a hard link to a file the linker neither owns nor may read and write
 * (fs.protected_hardlinks = 1, Debian's default). Without it the owner could link a file it planted
 * in the sealed tree out of it (through /proc/PID/fd of a process of its own inside), so nothing is
 * sealed then.
 */
export function hardlinksProtected(file = '/proc/sys/fs/protected_hardlinks'): boolean {
  try {
    return readFileSync(file, 'utf8').trim() === '1';
  } catch {
    return false;
  }
}

/** Sealed when every raw path of the tree lies under a directory only root may search (and links out are refused). */
export function hostReach(src: string, dev: number, ino: number, mountinfo?: string, protectedLinks: boolean = hardlinksProtected()): Seal {
  if (!protectedLinks)
    return {
      sealed: false,
      why: 'fs.protected_hardlinks is off, so a file made in the tree could be linked out of it by any user (sysctl fs.protected_hardlinks=1)',
    };
  let by = '';
  for (const p of rawPaths(src, dev, ino, mountinfo)) {
    const d = sealingDirectory(p);
    if (d === null)
      return {
        sealed: false,
        why: `${p} is reachable by users other than root (no directory on its path is root's with no search permission for group and others)`,
      };
    by ||= d;
  }
  return { sealed: true, by };
}

// Files' stamps looked at by name in their directory, for a reload that finds the few of 65,535
// files that changed: one at a time (statx(2) through koffi), or all at once (native/stamps.c).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Stamp } from '../../config/ini.ts';
import { DIST } from './built.ts';
import { koffi, libc } from './ffi.ts';

const AT_SYMLINK_NOFOLLOW = 0x100;
const STATX_BASIC_STATS = 0x7ff;

/** statx(2), in glibc since 2.28; null without it (then stamps are looked at with lstat). */
const statxFn = (() => {
  try {
    return libc.func('int statx(int dirfd, const char *path, int flags, unsigned int mask, _Out_ uint8_t *buf)');
  } catch {
    return null;
  }
})();
/** struct statx, the same on every architecture: 256 bytes. */
const statxBuf = Buffer.alloc(256);
const u64 = (b: Buffer, at: number) => b.readUInt32LE(at) + b.readUInt32LE(at + 4) * 2 ** 32;
/** A statx timestamp in milliseconds, computed as Node computes a Stats' mtimeMs (the same double). */
const statxMs = (b: Buffer, at: number) => (b.readUInt32LE(at) + b.readInt32LE(at + 4) * 2 ** 32) * 1e3 + b.readUInt32LE(at + 8) / 1e6;
/** glibc's makedev(3), which libuv (and so Node's Stats.dev) applies to statx's major and minor. */
const makedev = (major: number, minor: number) => (major & 0xfff) * 256 + (minor & 0xff) + (minor >>> 8) * 2 ** 20 + (major >>> 12) * 2 ** 44;

/**
 * Whether `name` in the directory `dirFd` (a symbolic link not followed) still has `stamp`, as
 * config/ini.ts stampOf takes it from a Stats: one statx(2) into a buffer kept for it, one path
 * component and no Stats object. Null when it cannot say (no statx here, or the name is gone): look
 * the usual way.
 */
export function sameStampAt(dirFd: number, name: string, stamp: Stamp): boolean | null {
  if (statxFn === null || statxFn(dirFd, name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, statxBuf) !== 0) return null;
  const b = statxBuf;
  return (
    u64(b, 32) === stamp.ino &&
    statxMs(b, 96) === stamp.ctimeMs &&
    statxMs(b, 112) === stamp.mtimeMs &&
    u64(b, 40) === stamp.size &&
    makedev(b.readUInt32LE(136), b.readUInt32LE(140)) === stamp.dev &&
    b.readUInt16LE(28) === stamp.mode &&
    b.readUInt32LE(20) === stamp.uid &&
    b.readUInt32LE(24) === stamp.gid
  );
}

/** Where `npm run build` puts the library: dist/libusernsd-stamps.so. */
export const STAMPS_LIBRARY = join(DIST, 'libusernsd-stamps.so');

/** The numbers of one stamp in the library's answer, in its order (native/stamps.c). */
const FIELDS = 8;
/** Threads the library may split a listing between, at most (it takes no more than the CPUs the agent may run on). */
const MAX_THREADS = 4;

type StampsFn = {
  async(dirFd: number, names: Buffer, count: number, out: Float64Array, maxThreads: number, done: (err: unknown, used: number) => void): void;
};

/**
 * The library, loaded at the first look; null when it is not there (a build without a C compiler:
 * then each stamp is looked at with sameStampAt) or cannot be loaded.
 */
let library: StampsFn | null | undefined;
function stampsFn(): StampsFn | null {
  if (library !== undefined) return library;
  library = null;
  try {
    library = nativeLibrary()?.func('int usernsd_stamps(int dirfd, const uint8_t *names, uint32_t count, _Out_ double *out, uint32_t max_threads)') ?? null;
  } catch {
    /* a library of an older build, without the function: looked at one at a time */
  }
  return library;
}

/** The library loaded, once (stamps here, the start's reads in reads.ts); null when it is not there or cannot be loaded. */
let loaded: ReturnType<typeof koffi.load> | null | undefined;
export function nativeLibrary(): ReturnType<typeof koffi.load> | null {
  if (loaded !== undefined) return loaded;
  loaded = null;
  if (!existsSync(STAMPS_LIBRARY)) return null;
  try {
    loaded = koffi.load(STAMPS_LIBRARY);
  } catch {
    /* a library built for another system */
  }
  return loaded;
}

/**
 * Whether stampsAt may use the library (true: when it is there, the default). A test turns it off
 * to look as a build without a C compiler does, one file at a time.
 */
export function useStampsLibrary(on: boolean): void {
  library = on ? undefined : null;
}

/** Looks through the library, and the threads the last one used (a test's evidence of the split). */
export const stampCounts = { looks: 0, threads: 0 };

/**
 * The names of a listing (its last path components), each ended by NUL, as the library takes them:
 * kept with the listing, which a reload of an unchanged directory takes again (ParseCache.list).
 */
const encoded = new WeakMap<readonly string[], Buffer>();
function namesOf(files: readonly string[]): Buffer {
  let names = encoded.get(files);
  if (names === undefined) {
    names = Buffer.from(files.map((f) => f.slice(f.lastIndexOf('/') + 1)).join('\0') + '\0');
    encoded.set(files, names);
  }
  return names;
}

/** The stamps of a listing's files as the library looked at them, by their place in the listing (stampsAt). */
export class Stamps {
  private readonly out: Float64Array;
  constructor(out: Float64Array) {
    this.out = out;
  }

  /** Whether file `i` of the listing still has `stamp`; null when it could not be looked at (gone): look the usual way. */
  same(i: number, stamp: Stamp): boolean | null {
    const o = this.out;
    const at = i * FIELDS;
    if (Number.isNaN(o[at])) return null;
    return (
      o[at] === stamp.ino &&
      o[at + 1] === stamp.ctimeMs &&
      o[at + 2] === stamp.mtimeMs &&
      o[at + 3] === stamp.size &&
      o[at + 4] === stamp.dev &&
      o[at + 5] === stamp.mode &&
      o[at + 6] === stamp.uid &&
      o[at + 7] === stamp.gid
    );
  }
}

/**
 * The stamps of `files` (paths of entries of the directory `dirFd`, symbolic links not followed),
 * all looked at by the library on threads of its own, the event loop free meanwhile. Null when the
 * library is not there: look at each one with sameStampAt.
 */
export async function stampsAt(dirFd: number, files: readonly string[]): Promise<Stamps | null> {
  const fn = stampsFn();
  if (fn === null || files.length === 0) return null;
  const out = new Float64Array(files.length * FIELDS);
  // A failed call (none is known) leaves each stamp to be looked at one at a time.
  const used = await new Promise<number | null>((resolve) =>
    fn.async(dirFd, namesOf(files), files.length, out, MAX_THREADS, (err, n) => resolve(err ? null : n)),
  );
  if (used === null) return null;
  stampCounts.looks++;
  stampCounts.threads = used;
  return new Stamps(out);
}

// A start's context files read on a thread of the native library (native/reads.c) while the
// agent's thread parses them: no Node thread to start (30-130 ms before its first file), and no
// copy of each file's text across threads but one memcpy.
import { constants } from 'node:os';
import type { ReadFile, Stamp } from '../../config/ini.ts';
import { judgeRead, MAX_CONFIG_FILE_BYTES, newStamp } from '../../config/ini.ts';
import type { ReadAhead } from '../../config/readahead.ts';
import type { ConfigError } from '../../config/types.ts';
import { closeFd, openDirPath } from './sys.ts';
import { nativeLibrary } from './stamps.ts';

/** The library's reader (an opaque pointer). */
type Handle = object;
type ReadsFns = {
  start(dirFd: number, names: Buffer, count: number, limit: number): Handle | null;
  take(r: Handle, i: number, stamp: Float64Array, err: Int32Array, buf: Buffer, cap: number): number;
  end(r: Handle): void;
  ahead(r: Handle): number;
};

let fns: ReadsFns | null | undefined;
function readsFns(): ReadsFns | null {
  if (fns !== undefined) return fns;
  fns = null;
  const lib = nativeLibrary();
  if (lib === null) return null;
  try {
    fns = {
      start: lib.func('void *usernsd_reads_start(int dirfd, const uint8_t *names, uint32_t count, uint32_t limit)') as ReadsFns['start'],
      take: lib.func(
        'int32_t usernsd_reads_take(void *r, uint32_t i, _Out_ double *stamp, _Out_ int32_t *err, _Out_ uint8_t *buf, uint32_t cap)',
      ) as ReadsFns['take'],
      end: lib.func('void usernsd_reads_end(void *r)') as ReadsFns['end'],
      ahead: lib.func('uint32_t usernsd_reads_ahead(void *r)') as ReadsFns['ahead'],
    };
  } catch {
    /* a library of an older build: the files are read the other ways */
  }
  return fns;
}

/** Whether NativeReads may start (true: when the library is there). A test turns it off, as a build without a C compiler is. */
export function useNativeReads(on: boolean): void {
  fns = on ? undefined : null;
}

/** Files the library's thread handed over (a test's evidence that a load read on it). */
export const nativeReadCounts = { handed: 0 };

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));
const errnoName = (n: number) => ERRNO_NAMES.get(n) ?? `errno ${n}`;

/** The numbers of one stamp, in the library's order (native/stamps.c): ino, ctimeMs, mtimeMs, size, dev, mode, uid, gid. */
const stampOfFields = (o: Float64Array): Stamp => newStamp(o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]);

/**
 * `files` (paths in one directory, the listing of a start) read in order by the library's thread,
 * each as readConfigFile reads it and judged here as it judges it (config/ini.ts judgeRead), taken
 * in the same order. As ThreadReads: nothing waits for the thread, a file it has not read yet is
 * left to the caller (undefined), and it skips the files the caller has passed; a file asked out of
 * order is left to the caller too. close() when done.
 */
export class NativeReads implements ReadAhead {
  private readonly files: readonly string[];
  private readonly fns: ReadsFns;
  private handle: Handle | null;
  private readonly dirFd: number;
  private next = 0;
  private readonly stamp = new Float64Array(8);
  private readonly err = new Int32Array(1);
  private readonly buf = Buffer.allocUnsafe(MAX_CONFIG_FILE_BYTES + 1);

  private constructor(files: readonly string[], fns: ReadsFns, handle: Handle, dirFd: number) {
    this.files = files;
    this.fns = fns;
    this.handle = handle;
    this.dirFd = dirFd;
  }

  /** A reader of `files`, all in one directory; null when the library is not there or the thread cannot start (the caller reads them). */
  static start(files: readonly string[]): NativeReads | null {
    const f = readsFns();
    if (f === null || files.length === 0) return null;
    const dir = files[0].slice(0, files[0].lastIndexOf('/') + 1);
    if (dir === '' || files.some((p) => !p.startsWith(dir) || p.indexOf('/', dir.length) >= 0)) return null;
    let dirFd: number;
    try {
      dirFd = openDirPath(dir);
    } catch {
      return null; // the caller's reads say why
    }
    const names = Buffer.from(files.map((p) => p.slice(dir.length)).join('\0') + '\0');
    const handle = f.start(dirFd, names, files.length, MAX_CONFIG_FILE_BYTES);
    if (handle === null) {
      closeFd(dirFd);
      return null;
    }
    return new NativeReads(files, f, handle, dirFd);
  }

  get(file: string): ReadFile | ConfigError | undefined {
    if (this.handle === null || this.files[this.next] !== file) return undefined;
    const i = this.next++;
    const n = this.fns.take(this.handle, i, this.stamp, this.err, this.buf, this.buf.length);
    if (n === -2) return undefined; // not read yet (or passed): the caller reads it
    nativeReadCounts.handed++;
    const code = this.err[0] === 0 ? null : errnoName(this.err[0]);
    if (n === -3) return judgeRead(file, code ?? 'EIO', stampOfFields(this.stamp), null, this.buf, 0);
    return judgeRead(file, null, stampOfFields(this.stamp), code, this.buf, n);
  }

  /** How far the thread has come in the listing (read, or passed): a test's way to wait for it. */
  get ahead(): number {
    return this.handle === null ? 0 : this.fns.ahead(this.handle);
  }

  /** The thread stopped (it is joined: at most the file it is reading), what it holds freed. */
  close(): void {
    if (this.handle === null) return;
    this.fns.end(this.handle);
    this.handle = null;
    closeFd(this.dirFd);
  }
}

// /proc/self/mountinfo, parsed once for everyone who asks what is mounted where: the label walk
// (which stops at mount points) and the views (ordinary mounts, found again here).
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';

/** dev: the filesystem's device as mountinfo writes it, "major:minor". */
export type MountEntry = {
  readonly id: number;
  readonly dev: string;
  readonly root: string;
  readonly mountPoint: string;
  readonly options: string;
  readonly fsType: string;
  readonly source: string;
};

const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** One line of mountinfo, or null for a line of another shape. */
function entryOf(line: string): MountEntry | null {
  const f = line.split(' ');
  const dash = f.indexOf('-');
  if (f.length < 10 || dash < 6) return null;
  return {
    id: Number(f[0]),
    dev: f[2],
    root: unescape(f[3]),
    mountPoint: unescape(f[4]),
    options: f[5],
    fsType: f[dash + 1],
    source: unescape(f[dash + 2]),
  };
}

/** /proc/self/mountinfo (or the given text), by mount point; the last mount on a point is the one seen. */
export function mountTable(text: string = readFileSync('/proc/self/mountinfo', 'utf8')): Map<string, MountEntry> {
  const out = new Map<string, MountEntry>();
  for (const line of text.split('\n')) {
    const entry = entryOf(line);
    if (entry) out.set(entry.mountPoint, entry);
  }
  return out;
}

/** Bytes of mountinfo read at a time by firstMount. */
const MOUNTINFO_CHUNK = 64 * 1024;

/**
 * The first mount of /proc/self/mountinfo (or of the given text; `from`: another file, in pieces of
 * another size, for a test) that `pred` takes, in mount order; null when none does. The file is
 * read a piece at a time and no further than that mount: the kernel writes it afresh at each read,
 * and with thousands of pins mounted it is megabytes (5,000 pins: 7-12 ms to read whole, 0.3 ms to
 * the cgroup2 line) while what is looked for was mounted at boot.
 */
export function firstMount(
  pred: (m: MountEntry) => boolean,
  text?: string,
  from: { readonly path: string; readonly chunk: number } = { path: '/proc/self/mountinfo', chunk: MOUNTINFO_CHUNK },
): MountEntry | null {
  const first = (lines: string): MountEntry | null => {
    for (const line of lines.split('\n')) {
      const entry = entryOf(line);
      if (entry && pred(entry)) return entry;
    }
    return null;
  };
  if (text !== undefined) return first(text);
  const fd = openSync(from.path, 'r');
  try {
    const chunk = Buffer.allocUnsafe(from.chunk);
    let pending = Buffer.alloc(0);
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) return first(pending.toString('utf8'));
      const data = Buffer.concat([pending, chunk.subarray(0, n)]);
      // Whole lines only: a newline byte is never part of a character in UTF-8.
      const end = data.lastIndexOf(0x0a);
      if (end < 0) {
        pending = data;
        continue;
      }
      const found = first(data.toString('utf8', 0, end));
      if (found) return found;
      pending = data.subarray(end + 1);
    }
  } finally {
    closeSync(fd);
  }
}

/** Is this mount idmapped (mountinfo lists "idmapped" among its per-mount options)? */
export function isIdmapped(m: MountEntry): boolean {
  return m.options.split(',').includes('idmapped');
}

// /proc/self/mountinfo, parsed once for everyone who asks what is mounted where: the label walk
// (which stops at mount points) and the views (ordinary mounts, found again here).
import { readFileSync } from 'node:fs';

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

/** /proc/self/mountinfo (or the given text), by mount point; the last mount on a point is the one seen. */
export function mountTable(text: string = readFileSync('/proc/self/mountinfo', 'utf8')): Map<string, MountEntry> {
  const out = new Map<string, MountEntry>();
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (f.length < 10 || dash < 6) continue;
    const entry = {
      id: Number(f[0]),
      dev: f[2],
      root: unescape(f[3]),
      mountPoint: unescape(f[4]),
      options: f[5],
      fsType: f[dash + 1],
      source: unescape(f[dash + 2]),
    };
    out.set(entry.mountPoint, entry);
  }
  return out;
}

/** Is this mount idmapped (mountinfo lists "idmapped" among its per-mount options)? */
export function isIdmapped(m: MountEntry): boolean {
  return m.options.split(',').includes('idmapped');
}

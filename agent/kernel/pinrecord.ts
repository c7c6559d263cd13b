// What a pin is (a user namespace mounted on a file) and what the agent records of each: its maps, for this boot.
import { constants, lstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { labelProblem } from '../../config/schema.ts';
import type { IdMap } from '../../config/types.ts';
import * as v from 'valibot';
import { writeFileAtomic } from './files.ts';
import { IDMAP } from '../../config/untrusted.ts';

/**
 * In the pins directory, beside the pins they describe and with their lifetime (/run is a tmpfs):
 * one record per pin. Not a label: it starts with a dot. On the state disk instead, creating the
 * record file cost more than the rest of a creation (0.5 ms of ext4 metadata each).
 */
export const RECORDS_DIR = '.usernsd-records';

/** The pins directory (open to all) and its records directory (root's alone, where the agent's lock is), each with its mode: made in this order. */
export function pinsDirectories(pinsDir: string): [string, number][] {
  return [
    [pinsDir, 0o755],
    [join(pinsDir, RECORDS_DIR), 0o700],
  ];
}

/**
 * The format of the records this build writes: each record says it ("format"), and so does a file
 * named "format" in the records directory, which the agent reads at start (one read, not one per
 * pin). A newer usernsd's records are not this one's to guess at.
 */
export const RECORD_FORMAT = 1;
const FORMAT_FILE = 'format';

/** The device of nsfs, the filesystem namespace files live on. */
export const NSFS_DEV = statSync('/proc/self/ns/user').dev;

/**
 * What the agent knows of a pin it made or checked. Namespace inode numbers start again after a
 * reboot and soon repeat, so a record speaks only for the boot that wrote it.
 */
type Record = { format: number; boot: string; ino: number; uidMap: IdMap; gidMap: IdMap };

/** A record as read back: input like any other (SPEC §12), the kernel's limit of 340 extents a map. */
const RECORD = v.object({
  format: v.optional(v.literal(RECORD_FORMAT)),
  boot: v.string(),
  ino: v.pipe(v.number(), v.safeInteger(), v.minValue(1)),
  uidMap: IDMAP,
  gidMap: IDMAP,
});

/** This boot, as the kernel names it. */
const BOOT_ID = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

/**
 * Is a user namespace mounted on this path? Its nsfs inode, or null. lstat: a mount on the path
 * counts, a symlink planted there (pointing at some namespace) does not.
 */
export function pinnedIno(path: string): number | null {
  try {
    // No pin is the common answer (every creation asks first): without an exception built for it.
    const st = lstatSync(path, { throwIfNoEntry: false });
    return st?.dev === NSFS_DEV ? st.ino : null;
  } catch {
    return null;
  }
}

/**
 * Record a pin's maps. Not durable: the record describes a mount, which no power loss leaves behind
 * either (and a record of another boot is not trusted). Its two fsyncs, and the journal waits they
 * cause, were half of the agent's own time per creation.
 */
export function writePinRecord(recordsDir: string, label: string, ino: number, maps: { uidMap: IdMap; gidMap: IdMap }): void {
  const rec: Record = { format: RECORD_FORMAT, boot: BOOT_ID, ino, uidMap: maps.uidMap, gidMap: maps.gidMap };
  writeFileAtomic(recordsDir, `${label}.json`, JSON.stringify(rec) + '\n', false);
}

/** A pin's maps from the record written when it was made or checked, if the record speaks for this pin (inode) and boot. */
export function recordedMaps(recordsDir: string, label: string, ino: number): { uidMap: IdMap; gidMap: IdMap } | null {
  try {
    const parsed = v.safeParse(RECORD, JSON.parse(readFileSync(join(recordsDir, `${label}.json`), 'utf8')));
    if (!parsed.success) return null; // not a record of ours: the pin's maps are read from the kernel instead
    const rec = parsed.output;
    return rec.boot === BOOT_ID && rec.ino === ino ? { uidMap: rec.uidMap, gidMap: rec.gidMap } : null;
  } catch {
    return null; // no record, or a torn one
  }
}

/**
 * What the pins of a pins directory hold now, by label: their maps from their records (no helper
 * process); a pin without a record of this boot is listed with null maps.
 */
export function pinnedMaps(pinsDir: string): Map<string, { uidMap: IdMap; gidMap: IdMap } | null> {
  const out = new Map<string, { uidMap: IdMap; gidMap: IdMap } | null>();
  let names: string[];
  try {
    names = readdirSync(pinsDir);
  } catch {
    return out;
  }
  for (const label of names) {
    if (label.startsWith('.') || labelProblem(label) !== null) continue;
    const ino = pinnedIno(join(pinsDir, label));
    if (ino !== null) out.set(label, recordedMaps(join(pinsDir, RECORDS_DIR), label, ino));
  }
  return out;
}

/** Say the records directory's format, once (the directory was just made or checked). */
export function markRecordFormat(recordsDir: string): void {
  try {
    const st = lstatSync(join(recordsDir, FORMAT_FILE));
    if (st.isFile() && st.size > 0) return;
  } catch {
    /* not written yet */
  }
  // Write-then-rename: an agent killed while writing leaves no file, or a whole one (an empty file
  // made by an earlier build's O_EXCL write, killed before it wrote, is replaced). The temporary is
  // made with O_EXCL and rename(2) replaces the name, never following a symlink planted there.
  writeFileAtomic(recordsDir, FORMAT_FILE, `${RECORD_FORMAT}\n`, false);
}

/** The records directory's format when a newer usernsd wrote it (a problem to refuse start on), else null. */
export function newerRecordFormat(recordsDir: string): string | null {
  const file = join(recordsDir, FORMAT_FILE);
  let text: string;
  try {
    text = readFileSync(file, { encoding: 'utf8', flag: constants.O_RDONLY | constants.O_NOFOLLOW });
  } catch {
    return null; // no records yet, or records of a usernsd before formats (format 1)
  }
  if (text === '') return null; // a write an older build was killed in the middle of: ours, format 1
  const n = /^(\d{1,9})\n?$/.exec(text) ? Number(text.trim()) : NaN;
  if (n <= RECORD_FORMAT) return null;
  return Number.isNaN(n)
    ? `${file} is not a record format (${JSON.stringify(text.slice(0, 20))}): the pin records there were written by a usernsd this one does not know`
    : `${file} says format ${n}, written by a newer usernsd; this one reads format ${RECORD_FORMAT}`;
}

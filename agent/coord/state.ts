// The agent's persistent state under /var/lib/usernsd: range allocations and the contexts in force, written atomically.
import { constants, lstatSync, mkdirSync, readdirSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../kernel/files.ts';
import type { Context } from '../../config/types.ts';
import type { Allocation } from './allocate.ts';
import { UsernsError } from '../errors.ts';
import * as v from 'valibot';
import { HOST_LABEL } from '../../config/types.ts';
import { MAX_DELEGATED_PATHS } from '../../config/schema.ts';
import { ALLOCATION, checkEntries, COUNT, ID, IDMAP, isPlainObject, issueText, labelKeyProblem } from '../../config/untrusted.ts';

const IDS = v.pipe(v.array(ID), v.maxLength(65536));
/** An absolute path as a context file may give one: no "..", no NUL, bounded. */
const PATH = v.pipe(
  v.string(),
  v.startsWith('/'),
  v.maxLength(4096),
  v.check((p) => !p.includes('\0') && !p.split('/').includes('..')),
);
const PATHS = v.pipe(v.array(PATH), v.maxLength(MAX_DELEGATED_PATHS));
const DELEGATION = v.object({
  cgroup: v.boolean(),
  cgroupLimits: v.pipe(
    v.array(v.object({ file: v.pipe(v.string(), v.regex(/^[a-z]+\.[a-z0-9_.]+$/)), value: v.pipe(v.string(), v.regex(/^[A-Za-z0-9 ._:-]+$/)) })),
    v.maxLength(64),
  ),
  netns: v.optional(v.boolean(), false),
  veth: v.optional(v.boolean(), false),
  tap: v.optional(v.nullable(v.pipe(v.string(), v.regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/))), null),
  devices: PATHS,
  directories: PATHS,
  execStart: v.nullable(PATH),
  execStop: v.nullable(PATH),
  execTimeoutMs: v.pipe(v.number(), v.safeInteger(), v.minValue(1000), v.maxValue(3_600_000)),
});
/** A context as contexts.json records it (Context, field for field). */
const IN_FORCE_CONTEXT = v.object({
  label: v.string(),
  file: v.pipe(v.string(), v.startsWith('/')),
  parent: v.string(),
  owner: v.object({ uid: ID, gid: ID, name: v.nullable(v.string()) }),
  uidMap: IDMAP,
  gidMap: IDMAP,
  autoSize: v.nullable(COUNT),
  setgroups: v.picklist(['allow', 'deny']),
  create: v.picklist(['lazy', 'eager']),
  squash: v.object({ mode: v.picklist(['none', 'root', 'all']), anonuid: ID, anongid: ID }),
  access: v.object({ uids: IDS, gids: IDS }),
  ownerIds: v.optional(v.picklist(['delegated', 'any'])),
  delegate: v.optional(DELEGATION),
  children: v.optional(v.pipe(v.number(), v.safeInteger(), v.minValue(0), v.maxValue(1024))),
  childRanges: v.optional(v.pipe(v.number(), v.safeInteger(), v.minValue(0), v.maxValue(64))),
  runtime: v.optional(v.boolean()),
});

export const RANGES_FILE = 'ranges.json';
/**
 * The format this build writes in its state files (their "version"): ranges.json, contexts.json,
 * views.json. A higher number was written by a newer usernsd, which this one must not guess at.
 */
export const STATE_VERSION = 1;
export const VIEWS_FILE = 'views.json';
export const IN_FORCE_FILE = 'contexts.json';
/** Contexts made from inside at run time (SPEC §14): one context file each, LABEL.conf, written by the agent. */
export const CHILDREN_DIR = 'children';

function isNewer(version: unknown): version is number {
  return typeof version === 'number' && Number.isSafeInteger(version) && version > STATE_VERSION;
}

function versionProblem(version: number): string {
  return `format ${version}, written by a newer usernsd; this one reads format ${STATE_VERSION}`;
}

/** A state file at this build's version; a newer usernsd's is said as such, anything else is corrupt. */
function checkVersion(file: string, data: unknown, corrupt: (why: string) => UsernsError): asserts data is Record<string, unknown> {
  const version = isPlainObject(data) ? data.version : undefined;
  if (isNewer(version)) throw new UsernsError('E_CONFIG', `${file} is in ${versionProblem(version)}: run the newer usernsd again (usernsd(8) UPGRADES)`);
  if (version !== STATE_VERSION) throw corrupt(`not version ${STATE_VERSION}`);
}

/**
 * The state files a newer usernsd wrote (a format above STATE_VERSION), each with what to do. The
 * agent refuses to start on any: an older agent that rewrote them would lose what it cannot read.
 * A file that is missing, unreadable or corrupt is not this check's to judge (its reader says so).
 */
export function newerStateFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of [RANGES_FILE, IN_FORCE_FILE, VIEWS_FILE]) {
    const file = join(dir, name);
    let data: unknown;
    try {
      data = readStateJson(file, () => new UsernsError('E_CONFIG', 'corrupt'));
    } catch {
      continue;
    }
    const version = isPlainObject(data) ? data.version : undefined;
    if (isNewer(version)) out.push(`${file} is in ${versionProblem(version)}`);
  }
  return out;
}

/** The state directory must be a real directory, never a symlink planted by someone else. */
export function ensureStateDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = lstatSync(dir);
    if (!st.isDirectory()) throw new UsernsError('E_CONFIG', `state directory ${dir} is not a directory (a symlink?): remove it`);
  } catch (err) {
    if (err instanceof UsernsError) throw err;
    throw new UsernsError('E_INTERNAL', `cannot create state directory ${dir}: ${(err as NodeJS.ErrnoException).code}`, err);
  }
}

/**
 * Recorded allocations. A missing file is an empty record; a corrupt one is an error, never an
 * empty record, because forgetting allocations would hand the same ids out twice.
 */
/**
 * A state file's JSON, never through a symlink: undefined when the file does not exist, an
 * E_CONFIG error (from `corrupt`) when it is not JSON, and an E_CONFIG error when it cannot be read.
 */
function readStateJson(file: string, corrupt: (why: string) => UsernsError): unknown {
  let text: string;
  try {
    text = readFileSync(file, { encoding: 'utf8', flag: constants.O_RDONLY | constants.O_NOFOLLOW });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new UsernsError('E_CONFIG', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`, err);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw corrupt('not JSON');
  }
}

export function readAllocations(dir: string): Map<string, Allocation> {
  const file = join(dir, RANGES_FILE);
  const corrupt = (why: string) =>
    new UsernsError(
      'E_CONFIG',
      `${file} is corrupt (${why}): no range will be allocated until it is fixed. Restore it from a backup, or rebuild it from the pins' maps (usernsctl list shows them) and remove the file only if no auto-range namespace exists`,
    );
  const data = readStateJson(file, corrupt);
  if (data === undefined) return new Map();
  checkVersion(file, data, corrupt);
  if (!isPlainObject(data.allocations)) throw corrupt('no allocations object');
  // Every entry checked (SPEC §12: the state directory is input, not truth). One bad entry stops
  // allocation, as a corrupt file does: forgetting it could hand its ids out twice.
  const { good, bad } = checkEntries(data.allocations, ALLOCATION);
  const [label, b] = [...bad][0] ?? [];
  if (label !== undefined) throw corrupt(`bad entry for ${JSON.stringify(label).slice(0, 80)}: ${b.why}`);
  return good;
}

export function writeAllocations(dir: string, allocations: ReadonlyMap<string, Allocation>): void {
  const sorted = Object.fromEntries([...allocations].sort(([a], [b]) => a.localeCompare(b)));
  try {
    writeFileAtomic(dir, RANGES_FILE, JSON.stringify({ version: STATE_VERSION, allocations: sorted }, null, 1) + '\n');
  } catch (err) {
    throw new UsernsError('E_INTERNAL', `cannot record allocations in ${join(dir, RANGES_FILE)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, err);
  }
}

/**
 * The contexts in force, as the agent last put them in force. It decides who keeps its ids when a
 * file changes (config/load.ts admissionOrder) — after a restart, and for check-config — and keeps a
 * context whose file broke at its last good version. Missing: nothing is in force yet.
 */
export function readInForce(dir: string): Map<string, Context> {
  const file = join(dir, IN_FORCE_FILE);
  const corrupt = (why: string) => new UsernsError('E_CONFIG', `${file} is corrupt (${why}): contexts are admitted in file order until the agent rewrites it`);
  const data = readStateJson(file, corrupt);
  if (data === undefined) return new Map();
  checkVersion(file, data, corrupt);
  const contexts = data.contexts;
  if (!Array.isArray(contexts)) throw corrupt('no contexts array');
  const out = new Map<string, Context>();
  for (const c of contexts) {
    // A kept context is configuration: checked as its file would be (its maps are judged again by finishContexts).
    const r = v.safeParse(IN_FORCE_CONTEXT, c);
    if (!r.success || labelKeyProblem(r.output.label) !== null || (r.output.parent !== HOST_LABEL && labelKeyProblem(r.output.parent) !== null))
      throw corrupt(`a bad entry${r.success ? '' : `: ${issueText(r.issues)}`}`);
    out.set(r.output.label, { ...r.output, ownerIds: r.output.ownerIds ?? 'delegated' });
  }
  return out;
}

/** Record the contexts in force; nothing is written when the record already says exactly this. */
export function writeInForce(dir: string, contexts: Iterable<Context>, durable = true): void {
  const body = JSON.stringify({ version: STATE_VERSION, contexts: [...contexts] }) + '\n';
  try {
    if (readFileSync(join(dir, IN_FORCE_FILE), { encoding: 'utf8', flag: constants.O_RDONLY | constants.O_NOFOLLOW }) === body) return;
  } catch {
    /* none yet, or unreadable: write it */
  }
  try {
    writeFileAtomic(dir, IN_FORCE_FILE, body, durable);
  } catch (err) {
    throw new UsernsError(
      'E_INTERNAL',
      `cannot record the contexts in force in ${join(dir, IN_FORCE_FILE)}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      err,
    );
  }
}

/** The record of a context made from inside: a context file, written whole or not at all (0600, in a 0700 directory). */
export function writeChildRecord(dir: string, label: string, body: string): void {
  const children = join(dir, CHILDREN_DIR);
  ensureStateDir(dir);
  ensureStateDir(children);
  try {
    writeFileAtomic(children, `${label}.conf`, body);
  } catch (err) {
    throw new UsernsError('E_INTERNAL', `cannot record context ${label} in ${children}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, err);
  }
}

/** Records of contexts made from inside as a shared pool holds them: at most this long each. */
export const MAX_CHILD_RECORD_BYTES = 16 * 1024;

/**
 * Make the local records what the shared pool holds (SPEC §14): written where missing or different,
 * removed where the pool has none. The pool's entries are input: a key that is no label, or a text
 * too long or with a NUL byte, is left out (and named in `bad`); what is kept is then judged as
 * every context file is when it loads. Returns whether anything changed.
 */
export function syncChildRecords(dir: string, pool: ReadonlyMap<string, string>): { changed: boolean; bad: string[] } {
  const children = join(dir, CHILDREN_DIR);
  const bad: string[] = [];
  const want = new Map<string, string>();
  for (const [label, text] of pool) {
    if (labelKeyProblem(label) !== null || Buffer.byteLength(text) > MAX_CHILD_RECORD_BYTES || text.includes('\0')) bad.push(label.slice(0, 80));
    else want.set(label, text);
  }
  let changed = false;
  let have: string[] = [];
  try {
    have = readdirSync(children).filter((n) => n.endsWith('.conf') && !n.startsWith('.'));
  } catch {
    /* none yet */
  }
  for (const name of have) {
    const label = name.slice(0, -'.conf'.length);
    if (!want.has(label)) {
      removeChildRecords(dir, [label]);
      changed = true;
    }
  }
  for (const [label, text] of want) {
    let now: string | null = null;
    try {
      now = readFileSync(join(children, `${label}.conf`), { encoding: 'utf8', flag: constants.O_RDONLY | constants.O_NOFOLLOW });
    } catch {
      /* missing */
    }
    if (now === text) continue;
    writeChildRecord(dir, label, text);
    changed = true;
  }
  return { changed, bad };
}

/** Remove the records of contexts made from inside; returns the labels whose record was there. */
export function removeChildRecords(dir: string, labels: readonly string[]): string[] {
  const removed: string[] = [];
  for (const label of labels) {
    try {
      unlinkSync(join(dir, CHILDREN_DIR, `${label}.conf`));
      removed.push(label);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new UsernsError('E_INTERNAL', `cannot remove the record of context ${label}: ${(err as NodeJS.ErrnoException).code}`, err);
    }
  }
  return removed;
}

// The agent's persistent state under /var/lib/usernsd: range allocations and the contexts in force, written atomically.
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  existsSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { fsyncDir, writeFileAtomic, writeFileAtomicInPieces } from '../kernel/files.ts';
import { holdAgain } from '../kernel/hold.ts';
import type { Context } from '../../config/types.ts';
import type { Allocation } from './allocate.ts';
import { errnoOf, Fault } from '../fault.ts';
import * as v from 'valibot';
import { HOST_LABEL } from '../../config/types.ts';
import { MAX_DELEGATED_PATHS } from '../../config/schema.ts';
import { ALLOCATION, checkEntries, COUNT, ID, IDMAP, isCount, isId, isPlainObject, issueText, labelKeyProblem, MAX_EXTENTS } from '../../config/untrusted.ts';

const MAX_IDS = 65536;
const IDS = v.pipe(v.array(ID), v.maxLength(MAX_IDS));
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

/** A state file that cannot be read as a record (what to do depends on which: advice.ts). */
const corruptIn = (file: string, object: 'ranges-file' | 'in-force-file' | 'journal') => (why: string) =>
  new Fault('corrupt', `${file} is corrupt (${why})`, { object, subject: file });

const unreadable = (file: string, err: unknown) =>
  new Fault('corrupt', `cannot read ${file}: ${errnoOf(err)}`, { object: 'state-file', subject: file, errno: errnoOf(err), cause: err });

/** The agent could not write its own record: a fault of this host (a full disk, a read-only /var). */
const unrecorded = (what: string, err: unknown) =>
  new Fault('unrecorded', `${what}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { object: 'state-file', errno: errnoOf(err), cause: err });

function versionProblem(version: number): string {
  return `format ${version}, written by a newer usernsd; this one reads format ${STATE_VERSION}`;
}

/** A state file at this build's version; a newer usernsd's is said as such, anything else is corrupt. */
function checkVersion(file: string, data: unknown, corrupt: (why: string) => Fault): asserts data is Record<string, unknown> {
  const version = isPlainObject(data) ? data.version : undefined;
  if (isNewer(version)) throw new Fault('newer', `${file} is in ${versionProblem(version)}`, { object: 'state-file', subject: file });
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
    // What this build and its successors write starts with the version: no need to parse 29 MB of
    // contexts.json for it (anything else is parsed whole).
    const head = fileStart(file);
    const sniffed = head === null ? null : /^\s*\{\s*"version"\s*:\s*(\d{1,15})\s*[,}]/.exec(head);
    let version: unknown;
    if (sniffed) version = Number(sniffed[1]);
    else {
      try {
        const data = readStateJson(file, () => new Fault('corrupt', 'corrupt', { object: 'state-file' }));
        version = isPlainObject(data) ? data.version : undefined;
      } catch {
        continue;
      }
    }
    if (isNewer(version)) out.push(`${file} is in ${versionProblem(version)}`);
  }
  // The journal's format is its first line's.
  const journal = join(dir, IN_FORCE_JOURNAL);
  try {
    const head = fileStart(journal);
    const first = head?.includes('\n')
      ? head.split('\n', 1)[0]
      : readFileSync(journal, { encoding: 'utf8', flag: constants.O_RDONLY | constants.O_NOFOLLOW }).split('\n', 1)[0];
    const header = JSON.parse(first) as unknown;
    const version = isPlainObject(header) ? header.version : undefined;
    if (isNewer(version)) out.push(`${journal} is in ${versionProblem(version)}`);
  } catch {
    /* missing or not JSON: its reader says so */
  }
  return out;
}

/** A file's first bytes (never through a symlink), or null when it cannot be read. */
function fileStart(file: string, bytes = 4096): string | null {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return null;
  }
  try {
    const buf = Buffer.alloc(bytes);
    return buf.toString('utf8', 0, readSync(fd, buf, 0, bytes, 0));
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

/**
 * The state directory must be a real directory, never a symlink planted by someone else. Made anew
 * (removed behind the agent's back), it is held again (kernel/hold.ts): the agent's lock went with
 * it. Returns whether it was made: what was recorded in it is gone.
 */
export function ensureStateDir(dir: string): boolean {
  try {
    const made = mkdirSync(dir, { recursive: true, mode: 0o700 }) !== undefined;
    const st = lstatSync(dir);
    if (!st.isDirectory()) throw new Fault('in-the-way', `state directory ${dir} is not a directory (a symlink?)`, { object: 'directory', subject: dir });
    if (made) holdAgain(dir);
    return made;
  } catch (err) {
    if (err instanceof Fault) throw err;
    throw new Fault('unrecorded', `cannot create state directory ${dir}: ${errnoOf(err)}`, { object: 'state-file', errno: errnoOf(err), cause: err });
  }
}

/**
 * A state file's JSON, never through a symlink: undefined when the file does not exist, an
 * E_CONFIG error (from `corrupt`) when it is not JSON, and an E_CONFIG error when it cannot be read.
 */
function readStateJson(file: string, corrupt: (why: string) => Fault): unknown {
  let text: string;
  try {
    text = readFileSync(file, { encoding: 'utf8', flag: constants.O_RDONLY | constants.O_NOFOLLOW });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw unreadable(file, err);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw corrupt('not JSON');
  }
}

/**
 * Recorded allocations. A missing file is an empty record; a corrupt one is an error, never an
 * empty record, because forgetting allocations would hand the same ids out twice.
 */
export function readAllocations(dir: string): Map<string, Allocation> {
  const file = join(dir, RANGES_FILE);
  const corrupt = corruptIn(file, 'ranges-file');
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
    throw unrecorded(`cannot record allocations in ${join(dir, RANGES_FILE)}`, err);
  }
}

/**
 * The changes to the contexts in force since contexts.json was written whole, one JSON line each
 * ({"set": CONTEXT} or {"forget": LABEL}) after a header ({"version": 1, "generation": G}): a reload
 * that changes one context of 65,535 appends one line instead of rewriting them all. It applies to
 * the contexts.json of its generation only; a whole write starts a new generation and removes it.
 * An older usernsd reads contexts.json alone: the agent writes it whole when it stops.
 */
export const IN_FORCE_JOURNAL = 'contexts.journal';

/** A context read back from the record: checked as its file would be (its maps are judged again by finishContexts). */
function inForceEntry(c: unknown): Context | string {
  let e = plainInForceEntry(c);
  if (e === null) {
    const r = v.safeParse(IN_FORCE_CONTEXT, c);
    if (!r.success) return `a bad entry: ${issueText(r.issues)}`;
    e = r.output;
  }
  if (labelKeyProblem(e.label) !== null || (e.parent !== HOST_LABEL && labelKeyProblem(e.parent) !== null)) return 'a bad entry';
  return { ...e, ownerIds: e.ownerIds ?? 'delegated' };
}

/** Every element, holes included (Array.prototype.every skips a sparse array's holes; valibot does not). */
function all(x: unknown[], ok: (e: unknown) => boolean): boolean {
  for (let i = 0; i < x.length; i++) if (!ok(x[i])) return false;
  return true;
}
const isExtent = (e: unknown) => isPlainObject(e) && isId(e.inside) && isId(e.outside) && isCount(e.count);
const isIdMap = (x: unknown): x is { inside: number; outside: number; count: number }[] => Array.isArray(x) && x.length <= MAX_EXTENTS && all(x, isExtent);
const isIds = (x: unknown): x is number[] => Array.isArray(x) && x.length <= MAX_IDS && all(x, isId);
const oneOf = <T extends string>(x: unknown, words: readonly T[]): x is T => typeof x === 'string' && (words as readonly string[]).includes(x);

/**
 * What `v.safeParse(IN_FORCE_CONTEXT, c)` outputs, for an entry as usernsd writes one without a
 * [delegate] or children (most of them); null for anything else, which valibot checks. valibot took
 * 350-400 ms of a restart on 65,535 contexts, this a tenth of it; the property test in
 * test/property/inforce.test.ts holds the two to the same output, and this to accepting nothing
 * valibot refuses.
 */
export function plainInForceEntry(c: unknown): v.InferOutput<typeof IN_FORCE_CONTEXT> | null {
  if (!isPlainObject(c)) return null;
  if ('delegate' in c || 'children' in c || 'childRanges' in c || 'runtime' in c) return null;
  const { label, file, parent, owner, uidMap, gidMap, autoSize, setgroups, create, squash, access, ownerIds } = c;
  if (typeof label !== 'string' || typeof file !== 'string' || !file.startsWith('/') || typeof parent !== 'string') return null;
  if (!isPlainObject(owner) || !isId(owner.uid) || !isId(owner.gid) || !(owner.name === null || typeof owner.name === 'string')) return null;
  if (!isIdMap(uidMap) || !isIdMap(gidMap) || !(autoSize === null || isCount(autoSize))) return null;
  if (!oneOf(setgroups, ['allow', 'deny'] as const) || !oneOf(create, ['lazy', 'eager'] as const)) return null;
  if (!isPlainObject(squash) || !oneOf(squash.mode, ['none', 'root', 'all'] as const) || !isId(squash.anonuid) || !isId(squash.anongid)) return null;
  if (!isPlainObject(access) || !isIds(access.uids) || !isIds(access.gids)) return null;
  if ('ownerIds' in c && !oneOf(ownerIds, ['delegated', 'any'] as const)) return null;
  const extents = (m: { inside: number; outside: number; count: number }[]) => m.map((e) => ({ inside: e.inside, outside: e.outside, count: e.count }));
  return {
    label,
    file,
    parent,
    owner: { uid: owner.uid, gid: owner.gid, name: owner.name },
    uidMap: extents(uidMap),
    gidMap: extents(gidMap),
    autoSize,
    setgroups,
    create,
    squash: { mode: squash.mode, anonuid: squash.anonuid, anongid: squash.anongid },
    access: { uids: [...access.uids], gids: [...access.gids] },
    ...('ownerIds' in c ? { ownerIds: ownerIds as 'delegated' | 'any' } : {}),
  };
}

/** The output valibot gives for a record entry (the reference plainInForceEntry is held to), or null when it refuses it. */
export function checkedInForceEntry(c: unknown): v.InferOutput<typeof IN_FORCE_CONTEXT> | null {
  const r = v.safeParse(IN_FORCE_CONTEXT, c);
  return r.success ? r.output : null;
}

/**
 * The contexts in force, as the agent last put them in force. It decides who keeps its ids when a
 * file changes (config/judge.ts admissionOrder) — after a restart, and for check-config — and keeps a
 * context whose file broke at its last good version. Missing: nothing is in force yet.
 */
export function readInForce(dir: string): Map<string, Context> {
  return readInForceRecord(dir).contexts;
}

/** readInForce, with the generation of contexts.json (null: none, or written by a usernsd without journals) and the journal's lines. */
export function readInForceRecord(dir: string): { contexts: Map<string, Context>; generation: string | null; journalLines: number } {
  const file = join(dir, IN_FORCE_FILE);
  const corrupt = corruptIn(file, 'in-force-file');
  const data = readStateJson(file, corrupt);
  const out = new Map<string, Context>();
  if (data === undefined) return { contexts: out, generation: null, journalLines: 0 };
  checkVersion(file, data, corrupt);
  const contexts = data.contexts;
  if (!Array.isArray(contexts)) throw corrupt('no contexts array');
  for (const c of contexts) {
    const e = inForceEntry(c);
    if (typeof e === 'string') throw corrupt(e);
    out.set(e.label, e);
  }
  const generation = typeof data.generation === 'string' ? data.generation : null;
  return { contexts: out, generation, journalLines: generation === null ? 0 : applyJournal(dir, generation, out) };
}

/** The journal's changes applied to `contexts` when it belongs to `generation`; the number of lines applied. */
function applyJournal(dir: string, generation: string, contexts: Map<string, Context>): number {
  const file = join(dir, IN_FORCE_JOURNAL);
  const corrupt = corruptIn(file, 'journal');
  let text: string;
  try {
    text = readFileSync(file, { encoding: 'utf8', flag: constants.O_RDONLY | constants.O_NOFOLLOW });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw unreadable(file, err);
  }
  // A last line without its newline is an append a crash cut short: it never happened.
  const lines = text.split('\n').slice(0, -1);
  const parse = (line: string): unknown => {
    try {
      return JSON.parse(line);
    } catch {
      throw corrupt('a line that is not JSON');
    }
  };
  if (lines.length === 0) return 0;
  const header = parse(lines[0]);
  checkVersion(file, header, corrupt);
  if (header.generation !== generation) return 0; // written for a contexts.json since replaced whole
  for (const line of lines.slice(1)) {
    const change = parse(line);
    if (isPlainObject(change) && typeof change.forget === 'string' && Object.keys(change).length === 1) {
      if (labelKeyProblem(change.forget) !== null) throw corrupt('a bad label to forget');
      contexts.delete(change.forget);
      continue;
    }
    if (!isPlainObject(change) || Object.keys(change).length !== 1 || !('set' in change)) throw corrupt('a line that is neither a set nor a forget');
    const e = inForceEntry(change.set);
    if (typeof e === 'string') throw corrupt(e);
    contexts.set(e.label, e);
  }
  return lines.length - 1;
}

const newGeneration = () => randomBytes(8).toString('hex');

/**
 * Record the contexts in force whole, as a new generation (its journal removed); nothing is written
 * when the record already says exactly this. Returns the generation in force.
 */
export function writeInForce(dir: string, contexts: Iterable<Context>, durable = true): string {
  // The generation comes last, so that the rest can be compared with what is there.
  const head = JSON.stringify({ version: STATE_VERSION, contexts: [...contexts] }).slice(0, -1);
  try {
    const old = readInForceText(dir);
    const at = `${head},"generation":"`;
    if (old?.startsWith(at) && !existsSync(join(dir, IN_FORCE_JOURNAL))) {
      const g = /^([0-9a-f]{16})"\}\n$/.exec(old.slice(at.length));
      if (g) return g[1];
    }
  } catch {
    /* unreadable: write it */
  }
  const generation = newGeneration();
  try {
    writeFileAtomic(dir, IN_FORCE_FILE, `${head},"generation":"${generation}"}\n`, durable);
    // After the new generation is in place: a crash in between leaves a journal of the old one, ignored.
    unlinkSync(join(dir, IN_FORCE_JOURNAL));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw unrecorded(`cannot record the contexts in force in ${join(dir, IN_FORCE_FILE)}`, err);
  }
  return generation;
}

/** Contexts a piece of writeInForceInPieces holds: about 110 KB of JSON, under V8's large-object size. */
const CONTEXTS_PER_PIECE = 256;

/**
 * writeInForce for a directory that holds no contexts.json yet, without holding the event loop: the
 * same text (a new generation), written a few hundred contexts at a time while the agent serves
 * (65,535 contexts are 29 MB, 0.2 s of JSON.stringify and writing). `stopped`, asked between
 * pieces, gives it up (nothing replaced: false); `written` gets the generation in the turn the
 * file is in place. Throws what writeInForce throws.
 */
export async function writeInForceInPieces(
  dir: string,
  contexts: readonly Context[],
  opts: { readonly durable: boolean; readonly stopped: () => boolean; readonly written: (generation: string) => void },
): Promise<boolean> {
  const generation = newGeneration();
  function* pieces(): Generator<string> {
    yield `{"version":${STATE_VERSION},"contexts":[`;
    for (let i = 0; i < contexts.length; i += CONTEXTS_PER_PIECE) {
      const json = contexts.slice(i, i + CONTEXTS_PER_PIECE).map((c) => JSON.stringify(c));
      yield `${i > 0 ? ',' : ''}${json.join(',')}`;
    }
    yield `],"generation":"${generation}"}\n`;
  }
  try {
    return await writeFileAtomicInPieces(dir, IN_FORCE_FILE, pieces(), {
      durable: opts.durable,
      stopped: opts.stopped,
      written: () => {
        try {
          unlinkSync(join(dir, IN_FORCE_JOURNAL)); // as writeInForce: a journal of an older generation
        } catch {
          /* none */
        }
        opts.written(generation);
      },
    });
  } catch (err) {
    throw unrecorded(`cannot record the contexts in force in ${join(dir, IN_FORCE_FILE)}`, err);
  }
}

/** Whether the state directory holds a contexts.json (whatever it says). */
export function hasInForceRecord(dir: string): boolean {
  return existsSync(join(dir, IN_FORCE_FILE));
}

function readInForceText(dir: string): string | null {
  try {
    return readFileSync(join(dir, IN_FORCE_FILE), { encoding: 'utf8', flag: constants.O_RDONLY | constants.O_NOFOLLOW });
  } catch {
    return null;
  }
}

/**
 * Record changes to the contexts in force, after the contexts.json of `generation`: appended to its
 * journal (made, with its header, by the first change). `durable`: fsync'ed before it returns.
 */
export function appendInForce(dir: string, generation: string, set: readonly Context[], forget: readonly string[], durable = true): void {
  const file = join(dir, IN_FORCE_JOURNAL);
  const lines = [...set.map((c) => JSON.stringify({ set: c })), ...forget.map((l) => JSON.stringify({ forget: l }))].join('\n');
  try {
    let fd: number;
    let header = '';
    try {
      fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      header = JSON.stringify({ version: STATE_VERSION, generation }) + '\n';
    }
    try {
      writeSync(fd, `${header}${lines}\n`);
      if (durable) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    // A journal just made is a new name in the directory: that too must outlive a power loss.
    if (durable && header !== '') fsyncDir(dir);
  } catch (err) {
    throw unrecorded(`cannot record the contexts in force in ${file}`, err);
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
    throw unrecorded(`cannot record context ${label} in ${children}`, err);
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
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw unrecorded(`cannot remove the record of context ${label}`, err);
    }
  }
  return removed;
}

// From files to contexts: usernsd.conf, then every context file, then the checks that span files.
import { readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { appendErrors, capErrors, configError, parseIni, readConfigFile, readConfigText, sameStamp, stampOf } from './ini.ts';
import type { IniDoc, Stamp } from './ini.ts';
import { ThreadReads } from './readahead.ts';
import type { ReadAhead } from './readahead.ts';
import { AGENT_SCHEMA, CONTEXT_SCHEMA, isProblem, labelProblem } from './schema.ts';
import type { KeySpec } from './schema.ts';
import type { Schema } from './schema.ts';
import { DEFAULT_SOCKET, DEFAULT_USERDB_SOCKET, HOST_LABEL } from './types.ts';
import type { AgentConfig, ConfigError, ContextDef, Delegation, IdMap, Nss, Owner, Squash } from './types.ts';

export const AGENT_DEFAULTS: Omit<AgentConfig, 'file'> = {
  socket: DEFAULT_SOCKET,
  contexts: '/etc/userns.d',
  pins: '/run/userns',
  state: '/var/lib/usernsd',
  logLevel: 'info',
  labelXattr: 'trusted.userns',
  mountNamespace: 'auto',
  spawner: 'auto',
  subuid: '/etc/subuid',
  subgid: '/etc/subgid',
  overflowuid: 65534,
  overflowgid: 65534,
  cgroupRoot: 'auto',
  netnsDir: '/run/netns',
  pool: { start: 524288, end: 1879048191, size: 65536 },
  userdb: true,
  userdbSocket: DEFAULT_USERDB_SOCKET,
  metricsListen: null,
  coordinator: 'local',
  etcd: { endpoints: [], prefix: '/usernsd/', ca: null, cert: null, key: null, timeoutMs: 2000, name: null },
};

/**
 * Check every section and key of a parsed file against a schema and parse the known values.
 * Returns section -> key -> typed value for the keys that parsed; everything else becomes an error.
 */
function applySchema(doc: IniDoc, schema: Schema, nss: Nss, errors: ConfigError[]): Map<string, Map<string, unknown>> {
  const out = new Map<string, Map<string, unknown>>();
  for (const [name, section] of doc.sections) {
    const table = Object.hasOwn(schema, name) ? schema[name] : undefined;
    if (!table) {
      errors.push(
        configError(
          doc.file,
          name,
          null,
          section.line,
          `unknown section (known: ${Object.keys(schema)
            .map((s) => `[${s}]`)
            .join(', ')})`,
        ),
      );
      continue;
    }
    const values = new Map<string, unknown>();
    out.set(name, values);
    for (const [key, { value, line }] of section.keys) {
      const spec = Object.hasOwn(table, key) ? table[key] : undefined;
      if (!spec) {
        errors.push(configError(doc.file, name, key, line, `unknown key (known in [${name}]: ${Object.keys(table).join(', ')})`));
      } else if (value === null || value === '') {
        errors.push(configError(doc.file, name, key, line, 'needs a value: write key = value'));
      } else {
        const parsed = spec.parse(value, nss);
        if (isProblem(parsed)) errors.push(configError(doc.file, name, key, line, parsed.problem));
        else values.set(key, parsed);
      }
    }
  }
  return out;
}

function lineOf(doc: IniDoc, section: string, key?: string): number | null {
  const s = doc.sections.get(section);
  if (!s) return null;
  return key === undefined ? s.line : (s.keys.get(key)?.line ?? s.line);
}

/** The AgentConfig fields set by keys the agent reads only at start (AGENT_SCHEMA's atStart). */
export const START_ONLY_FIELDS: readonly (keyof AgentConfig)[] = [
  ...new Set(Object.values(AGENT_SCHEMA).flatMap((section) => Object.values<KeySpec<unknown>>(section).flatMap((k) => (k.atStart ? [k.atStart] : [])))),
];

/**
 * A reload's settings: what only a start may change kept as the agent started with it, and each
 * such setting the files changed (the agent says it waits for the next start).
 */
export function keepStartOnly(
  running: AgentConfig,
  next: AgentConfig,
): { agent: AgentConfig; waiting: { field: keyof AgentConfig; old: unknown; new: unknown }[] } {
  const waiting = START_ONLY_FIELDS.filter((f) => JSON.stringify(next[f]) !== JSON.stringify(running[f])).map((field) => ({
    field,
    old: running[field],
    new: next[field],
  }));
  return { agent: { ...next, ...Object.fromEntries(START_ONLY_FIELDS.map((f) => [f, running[f]])) }, waiting };
}

/** Read /etc/usernsd.conf. A bad key is reported and its default used, so the agent can still start. */
export function loadAgentConfig(
  file: string,
  nss: Nss,
  defaults: Omit<AgentConfig, 'file'> = AGENT_DEFAULTS,
  text: string | ConfigError = readConfigText(file),
): { config: AgentConfig; errors: ConfigError[] } {
  const errors: ConfigError[] = [];
  if (typeof text !== 'string') return { config: { ...defaults, file }, errors: [text] };
  const { doc, errors: iniErrors } = parseIni(file, text);
  appendErrors(errors, iniErrors);
  const v = applySchema(doc, AGENT_SCHEMA, nss, errors);
  const get = <T>(section: string, key: string, fallback: T): T => (v.get(section)?.get(key) as T | undefined) ?? fallback;
  const range = get('pool', 'range', { start: defaults.pool.start, end: defaults.pool.end });
  const size = get('pool', 'size', defaults.pool.size);
  if (range.end - range.start + 1 < size) {
    errors.push(
      configError(file, 'pool', 'range', lineOf(doc, 'pool', 'range'), `holds ${range.end - range.start + 1} ids, fewer than one allocation of size ${size}`),
    );
  }
  if (range.start === 0) errors.push(configError(file, 'pool', 'range', lineOf(doc, 'pool', 'range'), 'must not include id 0 (host root)'));
  const coordinator = get<'local' | 'etcd'>('pool', 'coordinator', defaults.coordinator);
  const etcd = {
    endpoints: get<string[]>('etcd', 'endpoints', [...defaults.etcd.endpoints]),
    prefix: get('etcd', 'prefix', defaults.etcd.prefix),
    ca: get<string | null>('etcd', 'ca', defaults.etcd.ca),
    cert: get<string | null>('etcd', 'cert', defaults.etcd.cert),
    key: get<string | null>('etcd', 'key', defaults.etcd.key),
    timeoutMs: get('etcd', 'timeout', defaults.etcd.timeoutMs),
    name: get<string | null>('etcd', 'name', defaults.etcd.name),
  };
  if (coordinator === 'etcd' && etcd.endpoints.length === 0)
    errors.push(
      configError(file, 'pool', 'coordinator', lineOf(doc, 'pool', 'coordinator'), "etcd needs [etcd] endpoints = URL, ... (the cluster's client URLs)"),
    );
  if ((etcd.cert === null) !== (etcd.key === null))
    errors.push(
      configError(file, 'etcd', etcd.cert === null ? 'key' : 'cert', lineOf(doc, 'etcd'), 'cert and key go together (a client certificate and its key)'),
    );
  if (etcd.cert !== null && etcd.ca === null)
    errors.push(configError(file, 'etcd', 'cert', lineOf(doc, 'etcd', 'cert'), 'a client certificate needs the ca that verifies the cluster (TLS)'));
  return {
    config: {
      file,
      socket: get('agent', 'socket', defaults.socket),
      contexts: get('agent', 'contexts', defaults.contexts),
      pins: get('agent', 'pins', defaults.pins),
      state: get('agent', 'state', defaults.state),
      logLevel: get('agent', 'log_level', defaults.logLevel),
      labelXattr: get('agent', 'label_xattr', defaults.labelXattr),
      mountNamespace: get('agent', 'mount_namespace', defaults.mountNamespace),
      spawner: get('agent', 'spawner', defaults.spawner),
      subuid: get('agent', 'subuid', defaults.subuid),
      subgid: get('agent', 'subgid', defaults.subgid),
      overflowuid: get('mapping', 'overflowuid', defaults.overflowuid),
      overflowgid: get('mapping', 'overflowgid', defaults.overflowgid),
      cgroupRoot: get('agent', 'cgroup_root', defaults.cgroupRoot),
      netnsDir: get('agent', 'netns_dir', defaults.netnsDir),
      pool: { start: range.start, end: range.end, size },
      userdb: get('agent', 'userdb', defaults.userdb ? 'yes' : 'no') === 'yes',
      userdbSocket: get('agent', 'userdb_socket', defaults.userdbSocket),
      metricsListen: get('metrics', 'listen', defaults.metricsListen),
      coordinator,
      etcd,
    },
    errors: capErrors(file, errors),
  };
}

const ROOT: Owner = { uid: 0, gid: 0, name: 'root' };

// What most context files leave as it is, one frozen object for all of them: 65,535 files kept
// 65,535 copies of each alive, a fifth of the agent's live heap with the line numbers below.
const DEFAULT_SQUASH: Squash = Object.freeze({ mode: 'root', anonuid: 65534, anongid: 65534 });
const NO_ACCESS: ContextDef['access'] = Object.freeze({ uids: Object.freeze([]), gids: Object.freeze([]) });
const NO_ERRORS: readonly ConfigError[] = Object.freeze([]);

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** The line tables handed out, by layout (contextLines), while there are few layouts. */
const layouts = new Map<string, Readonly<Record<string, number>>>();
const MAX_LAYOUTS = 4096;

/**
 * Where each key of [context] and [delegate] stands, for the errors judged across files (a clash, a
 * parent). Files written alike have the same lines: one frozen table for each layout (a dictionary
 * of its own per file is about 200 bytes, 13 MB for 65,535 files).
 */
function contextLines(doc: IniDoc): Readonly<Record<string, number>> {
  // The layout read off the document, in linesOf's order: its table is made only for a layout not
  // seen yet. A section is written "[name]", which no key can begin with (it would be a header).
  let layout = '';
  for (const name of ['context', 'delegate']) {
    const section = doc.sections.get(name);
    if (!section) continue;
    layout += `[${name}]\0${section.line}\0`;
    for (const [key, { line }] of section.keys) layout += `${key}\0${line}\0`;
  }
  const known = layouts.get(layout);
  if (known !== undefined) return known;
  const out = linesOf(doc);
  if (layouts.size < MAX_LAYOUTS) layouts.set(layout, Object.freeze(out));
  return out;
}

function linesOf(doc: IniDoc): Record<string, number> {
  const out: Record<string, number> = Object.create(null) as Record<string, number>;
  const section = doc.sections.get('context');
  if (section) out[''] = section.line;
  for (const key of section?.keys.keys() ?? []) {
    const line = lineOf(doc, 'context', key);
    if (line !== null) out[key] = line;
  }
  // [delegate]'s, for what is judged across files (one resource, one context).
  const delegate = doc.sections.get('delegate');
  if (delegate) out['delegate.'] = delegate.line;
  for (const key of delegate?.keys.keys() ?? []) {
    const line = lineOf(doc, 'delegate', key);
    if (line !== null) out[`delegate.${key}`] = line;
  }
  return out;
}

/**
 * The line an error about `key` points at: the key's own, else (a rule about a key left to its
 * default, as an owner's map with range = auto) the section's; null for a context kept from the record.
 */
export function lineIn(d: ContextDef, key: string): number | null {
  const lines = d.lines;
  if (!lines) return null;
  if (key === 'uid_map' || key === 'gid_map') return lines[key] ?? lines.range ?? lines[''] ?? null;
  return lines[key] ?? lines[''] ?? null;
}

/** Seconds a hook runs before it is killed, unless exec_timeout says otherwise. */
export const DEFAULT_HOOK_TIMEOUT_S = 30;

/**
 * The [delegate] section as a Delegation, or undefined when it gives nothing. Every delegated
 * resource is owned by the context's root, so the maps must map inside id 0 (an auto range does).
 * A device node is host access no ordinary user has: an owned context gets one only where the admin
 * vouches for the context (owner_ids = any), as for a map beyond the owner's delegation (SPEC §12).
 */
function delegation(
  v: Map<string, unknown> | undefined,
  owner: Owner,
  vouched: boolean,
  maps: { uidMap: IdMap | null; gidMap: IdMap | null } | null,
  err: (key: string | null, message: string) => void,
): Delegation | undefined {
  if (!v) return undefined;
  const d: Delegation = {
    cgroup: v.get('cgroup') === 'yes',
    cgroupLimits: (v.get('cgroup_limits') as Delegation['cgroupLimits'] | undefined) ?? [],
    netns: v.get('netns') === 'yes',
    veth: v.get('veth') === 'yes',
    tap: (v.get('tap') as string | undefined) ?? null,
    devices: (v.get('devices') as string[] | undefined) ?? [],
    directories: (v.get('directories') as string[] | undefined) ?? [],
    execStart: (v.get('exec_start') as string | undefined) ?? null,
    execStop: (v.get('exec_stop') as string | undefined) ?? null,
    execTimeoutMs: ((v.get('exec_timeout') as number | undefined) ?? DEFAULT_HOOK_TIMEOUT_S) * 1000,
  };
  if (d.cgroupLimits.length > 0 && !d.cgroup) err('cgroup_limits', "limits are written into the context's cgroup: set cgroup = yes too");
  if (d.veth && !d.netns) err('veth', "the veth pair's inner end goes into the context's network namespace: set netns = yes too");
  const given = [d.cgroup, d.netns, d.veth, d.tap !== null, d.devices.length > 0, d.directories.length > 0, d.execStart !== null, d.execStop !== null];
  if (!given.some(Boolean)) return undefined;
  const mapsRoot = (m: IdMap | null) => m === null || m.some((e) => e.inside === 0);
  if (maps && (!mapsRoot(maps.uidMap) || !mapsRoot(maps.gidMap)))
    err(null, "what [delegate] gives is owned by the context's root: uid_map and gid_map must map inside id 0");
  if (owner.uid !== 0 && d.devices.length > 0 && !vouched)
    err(
      'devices',
      `a device node is host access an ordinary user does not have: the context is owned by ${owner.name ?? owner.uid}, so devices need owner_ids = any in [context] (the admin vouches for it; check-config says so)`,
    );
  return d;
}

/** The ids a range = auto context is allocated: its own range and its child_ranges, in one block; null for a static one. */
export function allocationSize(d: Pick<ContextDef, 'autoSize' | 'childRanges'>): number | null {
  return d.autoSize === null ? null : d.autoSize * (1 + (d.childRanges ?? 0));
}

/** One context file -> a definition, or the errors that keep it out. */
export function parseContextFile(
  file: string,
  text: string,
  nss: Nss,
  poolSize: number,
): { def: ContextDef; errors: readonly ConfigError[] } | { def: null; errors: ConfigError[] } {
  const errors: ConfigError[] = [];
  const { doc, errors: iniErrors, syntax } = parseIni(file, text);
  appendErrors(errors, iniErrors);
  const v = applySchema(doc, CONTEXT_SCHEMA, nss, errors);
  const ctx = v.get('context') ?? new Map<string, unknown>();
  const get = <T>(section: string, key: string): T | undefined => v.get(section)?.get(key) as T | undefined;
  const err = (section: string, key: string | null, message: string) =>
    errors.push(configError(file, section, key, key ? lineOf(doc, section, key) : lineOf(doc, section), message));

  // What is missing is said only of a file that parsed: after a syntax error it would be noise.
  const missing = (section: string, key: string | null, message: string) => {
    if (!syntax) err(section, key, message);
  };
  if (!doc.sections.has('context')) missing('context', null, 'missing: every context file needs a [context] section');
  const label = get<string>('context', 'label') ?? fileName(file).replace(/\.conf$/, '');
  if (!ctx.has('label') && labelProblem(label) !== null) {
    err('context', 'label', `the file name gives the label "${label}": ${labelProblem(label)}; rename the file or set label =`);
  }
  if (label === HOST_LABEL) err('context', 'label', '"host" is reserved for the initial user namespace');

  const parent = get<string>('context', 'parent') ?? HOST_LABEL;
  if (parent === label) err('context', 'parent', 'a context cannot be its own parent');
  const owner = get<Owner>('context', 'owner') ?? ROOT;
  const uidMap = get<IdMap>('context', 'uid_map') ?? null;
  const gidMap = get<IdMap>('context', 'gid_map') ?? null;
  const auto = get<string>('context', 'range') === 'auto';
  const sizeSet = get<number>('context', 'size');
  const section = doc.sections.get('context');
  const present = (key: string) => section?.keys.has(key) ?? false;
  if (auto) {
    for (const key of ['uid_map', 'gid_map']) if (present(key)) err('context', key, 'cannot be combined with range = auto: remove one of them');
    if (parent !== HOST_LABEL)
      err('context', 'range', 'range = auto is only for contexts whose parent is host; give a nested context a uid_map and gid_map inside its parent');
  } else {
    if (present('size')) err('context', 'size', 'only applies with range = auto');
    if (!present('range')) {
      if (!present('uid_map')) missing('context', 'uid_map', 'missing: set uid_map and gid_map, or range = auto');
      if (!present('gid_map')) missing('context', 'gid_map', 'missing: set uid_map and gid_map, or range = auto');
    }
  }
  if (present('child_ranges') && !auto)
    err(
      'context',
      'child_ranges',
      'only applies with range = auto: a static map gives the contexts made inside it more ids by an extent of its own (INSIDE = OUTSIDE)',
    );
  const delegate = delegation(v.get('delegate'), owner, get<string>('context', 'owner_ids') === 'any', auto ? null : { uidMap, gidMap }, (key, message) =>
    err('delegate', key, message),
  );
  if (errors.length > 0) return { def: null, errors: capErrors(file, errors) };
  // One literal, the optional keys added after: spreads in it would size every definition for
  // them (16 fields, 152 bytes, against 13 and 128), and each context holds two (the Context).
  const def: Mutable<ContextDef> = {
    label,
    file,
    parent,
    owner,
    uidMap: auto ? null : uidMap,
    gidMap: auto ? null : gidMap,
    autoSize: auto ? (sizeSet ?? poolSize) : null,
    setgroups: get<'allow' | 'deny'>('context', 'setgroups') ?? defaultSetgroups(owner, parent),
    create: get<'lazy' | 'eager'>('context', 'create') ?? 'lazy',
    squash: v.has('squash')
      ? { mode: get('squash', 'mode') ?? 'root', anonuid: get('squash', 'anonuid') ?? 65534, anongid: get('squash', 'anongid') ?? 65534 }
      : DEFAULT_SQUASH,
    access: v.has('access') ? { uids: get('access', 'users') ?? [], gids: get('access', 'groups') ?? [] } : NO_ACCESS,
    ownerIds: get<'delegated' | 'any'>('context', 'owner_ids') ?? 'delegated',
    lines: contextLines(doc),
  };
  if (delegate) def.delegate = delegate;
  const children = get<number>('context', 'children');
  if (children) def.children = children;
  const childRanges = get<number>('context', 'child_ranges');
  if (childRanges) def.childRanges = childRanges;
  return { def, errors: NO_ERRORS }; // a file with errors has no definition (above)
}

/**
 * setgroups where a file leaves it out, when the file alone decides it: deny for an owner other than
 * root, allow for root's context at the top level. Null: a root-owned nested context's, which follows
 * its parent's (finishContexts: a namespace under one that denies it must deny it too). A definition
 * whose setgroups and maps are decided is the Context itself (judge.ts contextOf), not a copy.
 */
function defaultSetgroups(owner: Owner, parent: string): 'allow' | 'deny' | null {
  if (owner.uid !== 0) return 'deny';
  return parent === HOST_LABEL ? 'allow' : null;
}

/** basename(path), without its checks and loops, for a path that does not end in "/" (a file's, as listed). */
export function fileName(path: string): string {
  return path.endsWith('/') ? basename(path) : path.slice(path.lastIndexOf('/') + 1);
}

/** The context files of a directory: `*.conf`, in name order; anything else (examples, backups) is left alone. */
export function listContextFiles(dir: string): string[] | ConfigError {
  try {
    // join(dir, name) for each, without normalizing dir again for each name (65,535 of them: 40 ms):
    // a name read from a directory holds no "/", and none starting with "." is kept.
    const prefix = join(dir, '_').slice(0, -1);
    return readdirSync(dir)
      .filter((n) => n.endsWith('.conf') && !n.startsWith('.'))
      .sort()
      .map((n) => prefix + n);
  } catch (err) {
    return configError(dir, null, null, null, `cannot read the contexts directory: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/** A file not read: the stamp of its path (lstat), and the parse the cache holds of that version. */
export type Unread = { readonly text: null; readonly stamp: Stamp; readonly parsed: Parsed };

export type { ReadAhead };
/** The files of a listing found unchanged, by their place in it (the others: in the ReadAhead, or read now). */
export type Unchanged = readonly (Unread | undefined)[];

export type Parsed = { readonly def: ContextDef | null; readonly errors: readonly ConfigError[] };

/**
 * Context files as earlier loads parsed them, by path, with the stamp of the version read: a reload
 * reads and parses again only the files whose stamp changed, as make and git's index notice change
 * without reading. A parse that looked up a user or group name is not kept (the name may mean other
 * ids now), nor one made with another pool size (range = auto's default size).
 *
 * A file changed less than `racyMs` before it was read is not kept either: the kernel stamps times
 * at the granularity of its clock tick, so a second write within the same tick, of the same size,
 * leaves every field of the stamp as it was ("racy git": git re-reads such entries too).
 */
export class ParseCache {
  private poolSize: number | null = null;
  /**
   * Each file's version kept, by path (the read-ahead passes an unread file on: no object made per
   * file at a reload); null while every version kept is in `aligned`, from which it is made when a
   * path is asked for. A start keeps its parses by place only: 65,535 insertions into a map of
   * paths, and the look at every path of the listing keepOnly made, were about 60 ms of it.
   */
  private byPath: Map<string, Unread> | null = new Map();
  /** Files taken from the cache, files parsed, listings of the directory taken, and linkings kept, since the cache was made. */
  readonly counts = { reused: 0, parsed: 0, listed: 0, linked: 0 };

  private readonly racyMs: number;
  private readonly now: () => number;

  constructor(racyMs = 1000, now: () => number = Date.now) {
    this.racyMs = racyMs;
    this.now = now;
  }

  /** The parse of `file` when `stamp` (of the path as it is now) is the version parsed. */
  get(file: string, stamp: Stamp, poolSize: number): Parsed | undefined {
    const e = this.entry(file, poolSize);
    return e !== undefined && sameStamp(e.stamp, stamp) ? e.parsed : undefined;
  }

  /** The version of `file` kept, and its parse, for a caller that compares the stamp itself (the agent, without a Stats object). */
  entry(file: string, poolSize: number): Unread | undefined {
    return poolSize === this.poolSize ? this.paths().get(file) : undefined;
  }

  /** The versions kept by path, made from `aligned` if they were kept by place only. */
  private paths(): Map<string, Unread> {
    if (this.byPath === null) {
      const { files, entries } = this.aligned!;
      this.byPath = new Map();
      for (let i = 0; i < files.length; i++) if (entries[i] !== undefined) this.byPath.set(files[i], entries[i]!);
    }
    return this.byPath;
  }

  /**
   * The entries of one listing by their place in it (entryAt): the same listing again, as list()
   * gives it while the directory is unchanged, is looked up by place, not by 65,535 paths. Null, or
   * the same entries as byPath has for its files.
   */
  private aligned: { readonly files: readonly string[]; readonly entries: (Unread | undefined)[] } | null = null;

  /** entry() of `files[i]`, by its place in the listing. */
  entryAt(files: readonly string[], i: number, poolSize: number): Unread | undefined {
    if (poolSize !== this.poolSize) return undefined;
    if (this.aligned?.files !== files) {
      const byPath = this.paths();
      this.aligned = { files, entries: files.map((f) => byPath.get(f)) };
    }
    return this.aligned.entries[i];
  }

  /** Keep `file`'s parse; `at`: its place in the listing it came from, which entryAt looks it up by. */
  set(file: string, stamp: Stamp, poolSize: number, parsed: Parsed, at?: { readonly files: readonly string[]; readonly i: number }): void {
    if (poolSize !== this.poolSize) {
      this.byPath = new Map();
      this.aligned = null; // its entries were parsed with the other size
    }
    this.poolSize = poolSize;
    const settled = Math.max(stamp.ctimeMs, stamp.mtimeMs) < this.now() - this.racyMs;
    const kept: Unread | undefined = settled ? { text: null, stamp, parsed } : undefined;
    if (at && at.files[at.i] === file) {
      // Nothing kept yet (a start): this listing's places hold what is kept, and no map of paths is made.
      if (this.aligned === null && this.byPath?.size === 0) {
        this.aligned = { files: at.files, entries: new Array<Unread | undefined>(at.files.length) };
        this.byPath = null;
        this.placed = 0;
      }
      if (this.aligned?.files === at.files) {
        if (this.byPath === null) this.placed += (kept ? 1 : 0) - (this.aligned.entries[at.i] ? 1 : 0);
        this.aligned.entries[at.i] = kept;
        if (kept) this.byPath?.set(file, kept);
        else this.byPath?.delete(file);
        return;
      }
    }
    const byPath = this.paths();
    if (kept) byPath.set(file, kept);
    else byPath.delete(file);
    this.aligned = null;
  }

  /** The last listing of the contexts directory, and the directory's stamp when it was taken. */
  private listed: { readonly dir: string; readonly stamp: Stamp; readonly files: readonly string[] } | null = null;

  /**
   * The context files of `dir` (listContextFiles), listed again only when the directory's stamp
   * changed: adding, removing or renaming an entry sets its modification and change times. A listing
   * of 65,535 names (read, filtered, sorted, joined) is about 0.1 s of every reload otherwise. A
   * directory changed within `racyMs` of its listing is listed again, as a file is read again.
   */
  list(dir: string): readonly string[] | ConfigError {
    let stamp: Stamp | null = null;
    try {
      stamp = stampOf(statSync(dir));
    } catch {
      /* listContextFiles says why */
    }
    const last = this.listed;
    if (stamp && last && last.dir === dir && sameStamp(last.stamp, stamp)) return last.files;
    const files = listContextFiles(dir);
    this.counts.listed++;
    const settled = stamp !== null && Math.max(stamp.ctimeMs, stamp.mtimeMs) < this.now() - this.racyMs;
    this.listed = Array.isArray(files) && settled ? { dir, stamp: stamp!, files } : null;
    return files;
  }

  /**
   * The last linking that found nothing wrong: its input, its output (parents first) and where each
   * input went in it. See link().
   */
  private linked: { readonly input: readonly ContextDef[]; readonly output: readonly ContextDef[]; readonly at: Int32Array } | null = null;

  /**
   * linkContexts, without linking again what is linked the same way: when the last linking found
   * nothing wrong and `defs` differ from its input only in definitions of the same label and parent
   * at the same place (files edited, none added, removed or moved), the output is the last one with
   * those definitions in their places. Linking 65,535 definitions is about 50 ms of a reload otherwise.
   */
  link(defs: readonly ContextDef[], errors: ConfigError[]): { defs: ContextDef[]; errors: ConfigError[] } {
    const last = this.linked;
    if (last && last.input.length === defs.length) {
      let output: ContextDef[] | null = null;
      let same = true;
      for (let i = 0; i < defs.length && same; i++) {
        const was = last.input[i];
        const now = defs[i];
        if (was === now) continue;
        if (was.label !== now.label || was.parent !== now.parent) same = false;
        else (output ??= [...last.output])[last.at[i]] = now;
      }
      if (same) {
        const out = output ?? [...last.output];
        this.linked = { input: [...defs], output: out, at: last.at };
        this.counts.linked++;
        return { defs: [...out], errors };
      }
    }
    const before = errors.length;
    const r = linkContexts(defs, errors);
    this.linked = null;
    if (errors.length === before && r.defs.length === defs.length) {
      const place = new Map(r.defs.map((d, i) => [d, i]));
      this.linked = { input: [...defs], output: [...r.defs], at: Int32Array.from(defs, (d) => place.get(d)!) };
    }
    return r;
  }

  /** The listing keepOnly last kept to: set() adds only listed files, so the same listing again drops nothing. */
  private keptTo: readonly string[] | null = null;

  /** Only the files listed now are kept. */
  keepOnly(files: readonly string[]): void {
    if (files === this.keptTo) return;
    this.keptTo = files;
    if (this.byPath === null && this.aligned!.files === files) return; // kept by place in this very listing: nothing else is
    const byPath = this.paths();
    if (byPath.size <= files.length && files.every((f) => byPath.has(f))) return; // nothing else is kept
    const listed = new Set(files);
    for (const f of byPath.keys()) if (!listed.has(f)) byPath.delete(f);
    this.aligned = null;
  }

  /** How many versions `aligned` holds while byPath is null (size is asked of every file at a reload). */
  private placed = 0;

  get size(): number {
    return this.byPath !== null ? this.byPath.size : this.placed;
  }
}

/** Every file of the directory parsed on its own, plus the checks between files that need no allocation. */
export function loadContextDefs(
  dir: string,
  nss: Nss,
  poolSize: number,
  texts?: ReadAhead,
  files?: readonly string[] | ConfigError,
  cache?: ParseCache,
  unchanged?: Unchanged,
): { defs: ContextDef[]; errors: ConfigError[] } {
  const listed = files ?? (cache ? cache.list(dir) : listContextFiles(dir));
  if (!isListing(listed)) return { defs: [], errors: [listed] };
  // Nothing read ahead and a long listing (check-config; the agent's start without the native
  // library, which otherwise reads ahead itself: agent/kernel/reads.ts): read on a second thread while this one parses.
  const reads = texts === undefined && unchanged === undefined ? ThreadReads.forListing(listed) : null;
  try {
    const { defs, errors } = parseContextFiles(listed, nss, poolSize, texts ?? reads ?? undefined, cache, unchanged);
    cache?.keepOnly(listed);
    return cache ? cache.link(defs, errors) : linkContexts(defs, errors);
  } finally {
    void reads?.close();
  }
}

/** A listing of context files, not the error of one. */
export const isListing = (x: readonly string[] | ConfigError): x is readonly string[] => Array.isArray(x);

/** `nss`, and whether anything was looked up through it since the last `reset`. */
function watchedNss(nss: Nss): { nss: Nss; asked: () => boolean; reset: () => void } {
  let asked = false;
  const ask =
    <A extends unknown[], R>(f: (...a: A) => R) =>
    (...a: A): R => {
      asked = true;
      return f(...a);
    };
  return {
    nss: { userByName: ask((n) => nss.userByName(n)), userById: ask((u) => nss.userById(u)), groupByName: ask((n) => nss.groupByName(n)) },
    asked: () => asked,
    reset: () => {
      asked = false;
    },
  };
}

/**
 * Each file read (or taken from `texts`, or from `cache` when `texts` holds the file's stamp alone)
 * and parsed on its own: the definitions, and every error.
 */
function parseContextFiles(
  files: readonly string[],
  nss: Nss,
  poolSize: number,
  texts?: ReadAhead,
  cache?: ParseCache,
  unchanged?: Unchanged,
): { defs: ContextDef[]; errors: ConfigError[] } {
  const defs: ContextDef[] = [];
  const errors: ConfigError[] = [];
  const watch = watchedNss(nss);
  for (let i = 0; i < files.length; i++) {
    const file = files[i];
    const ahead = unchanged?.[i] ?? texts?.get(file) ?? readConfigFile(file);
    let r: Parsed;
    if ('parsed' in ahead) {
      r = ahead.parsed;
      if (cache) cache.counts.reused++;
    } else {
      const read = ahead;
      if (!('text' in read)) {
        errors.push(read);
        continue;
      }
      watch.reset();
      r = parseContextFile(file, read.text, watch.nss, poolSize);
      if (cache) {
        cache.counts.parsed++;
        if (!watch.asked()) cache.set(file, read.stamp, poolSize, r, { files, i });
      }
    }
    appendErrors(errors, r.errors);
    if (r.def) defs.push(r.def);
  }
  return { defs, errors };
}

/**
 * Contexts made from inside at run time (SPEC §14): the agent's records, context files it wrote in
 * the state directory's children/, parsed and judged as every context file is. An unreadable
 * directory (check-config run by a user) or a missing one holds none.
 */
export function loadRuntimeDefs(dir: string, nss: Nss, poolSize: number): { defs: ContextDef[]; errors: ConfigError[] } {
  const files = listContextFiles(dir);
  if (!Array.isArray(files)) return { defs: [], errors: [] };
  const { defs, errors } = parseContextFiles(files, nss, poolSize);
  const named: ContextDef[] = [];
  for (const d of defs) {
    if (`${d.label}.conf` === basename(d.file)) named.push({ ...d, runtime: true });
    else
      errors.push(
        configError(d.file, 'context', 'label', lineIn(d, 'label'), `a record of a context made from inside is named after its label (${d.label}.conf)`),
      );
  }
  return { defs: named, errors };
}

/**
 * What a context made from inside may be given (SPEC §14, delegations handed on): a cgroup inside
 * its parent's, which its parent has, and nothing else of the host's. Returns the key and why, or null.
 */
export function runtimeDelegateProblem(d: ContextDef, parent: ContextDef | undefined): [string, string] | null {
  const g = d.delegate;
  if (!g) return null;
  const other = [g.netns, g.veth, g.tap !== null, g.devices.length > 0, g.directories.length > 0, g.execStart !== null, g.execStop !== null];
  if (other.some(Boolean) || g.cgroupLimits.length > 0)
    return ['delegate', "a context made from inside may be given a cgroup inside its parent's, nothing else of the host's"];
  if (g.cgroup && !parent?.delegate?.cgroup)
    return ['cgroup', `its parent "${d.parent}" has no cgroup to give a part of ([delegate] cgroup = yes in the parent's file)`];
  return null;
}

/** The context a runtime child counts against: its nearest ancestor that a file defines (null: none). */
export function quotaHolder(label: string, byLabel: ReadonlyMap<string, ContextDef>): ContextDef | null {
  let d = byLabel.get(label);
  for (let depth = 0; d && d.runtime && depth < 64; depth++) d = byLabel.get(d.parent);
  return d && !d.runtime ? d : null;
}

/**
 * Which runtime children are loaded beside the files: a file always wins over a runtime child of the
 * same label (said as a notice: check-config reports the clash); a runtime child is nested under a
 * context a file defines, at any depth; and the runtime children under one such context number at
 * most its `children =` (in name order: the ones beyond are refused, each saying so).
 */
export function admitRuntimeChildren(
  files: readonly ContextDef[],
  runtime: readonly ContextDef[],
  errors: ConfigError[],
  notices: ConfigError[],
): ContextDef[] {
  if (runtime.length === 0) return [];
  const fileLabels = new Map(files.map((d) => [d.label, d]));
  const candidates: ContextDef[] = [];
  for (const d of runtime) {
    const file = fileLabels.get(d.label);
    if (file)
      notices.push(
        configError(
          d.file,
          'context',
          'label',
          lineIn(d, 'label'),
          `context "${d.label}" is defined by ${file.file}, which wins over this context made from inside: it is not loaded (remove the record, or rename one of them)`,
        ),
      );
    else if (d.parent === HOST_LABEL)
      errors.push(configError(d.file, 'context', 'parent', lineIn(d, 'parent'), 'a context made from inside is nested in the context it was made from'));
    else candidates.push(d);
  }
  const byLabel = new Map<string, ContextDef>([...candidates.map((d) => [d.label, d] as const), ...fileLabels]);
  const used = new Map<string, number>();
  const admitted: ContextDef[] = [];
  for (const d of [...candidates].sort((a, b) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0))) {
    const holder = quotaHolder(d.label, byLabel);
    if (!holder) continue; // its parent is missing: linkContexts says so
    const given = runtimeDelegateProblem(d, byLabel.get(d.parent));
    if (given) {
      errors.push(configError(d.file, 'delegate', given[0] === 'delegate' ? null : given[0], null, given[1]));
      continue;
    }
    const n = used.get(holder.label) ?? 0;
    if (n >= (holder.children ?? 0)) {
      errors.push(
        configError(
          d.file,
          'context',
          null,
          lineIn(d, ''),
          `context "${holder.label}" allows ${holder.children ?? 0} context(s) made from inside it (children = in ${holder.file}), and this one is beyond them`,
        ),
      );
      continue;
    }
    used.set(holder.label, n + 1);
    admitted.push(d);
  }
  return admitted;
}

/** Unique labels, parents that exist, no cycles: what survives can be ordered parents-first. */
export function linkContexts(defs: readonly ContextDef[], errors: ConfigError[]): { defs: ContextDef[]; errors: ConfigError[] } {
  const byLabel = new Map<string, ContextDef>();
  for (const d of defs) {
    const first = byLabel.get(d.label);
    if (first) errors.push(configError(d.file, 'context', 'label', lineIn(d, 'label'), `label "${d.label}" is already defined by ${first.file}: ignored`));
    else byLabel.set(d.label, d);
  }
  // Parents first; a context whose parent is missing or refused is refused with it.
  const ordered: ContextDef[] = [];
  const state = new Map<string, 'visiting' | 'ok' | 'bad'>();
  // The labels being visited, root call first (a cycle names them): one array for every visit.
  const path: string[] = [];
  const visit = (d: ContextDef): boolean => {
    const s = state.get(d.label);
    if (s === 'ok') return true;
    if (s === 'bad') return false;
    if (s === 'visiting') {
      errors.push(configError(d.file, 'context', 'parent', lineIn(d, 'parent'), `parents form a cycle: ${[...path, d.label].join(' -> ')}`));
      state.set(d.label, 'bad');
      return false;
    }
    state.set(d.label, 'visiting');
    let ok = true;
    if (d.parent !== HOST_LABEL) {
      const p = byLabel.get(d.parent);
      if (!p) {
        errors.push(configError(d.file, 'context', 'parent', lineIn(d, 'parent'), `parent "${d.parent}" is not a configured context`));
        ok = false;
      } else {
        path.push(d.label);
        const parentOk = visit(p);
        path.pop();
        if (!parentOk) {
          if (state.get(d.label) !== 'bad')
            errors.push(configError(d.file, 'context', 'parent', lineIn(d, 'parent'), `parent "${d.parent}" is not valid, so neither is this context`));
          ok = false;
        }
      }
    }
    if (state.get(d.label) === 'bad') return false;
    state.set(d.label, ok ? 'ok' : 'bad');
    if (ok) ordered.push(d);
    return ok;
  };
  for (const d of byLabel.values()) visit(d);
  return { defs: ordered, errors };
}

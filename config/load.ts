// From files to contexts: usernsd.conf, then every context file, then the checks that span files.
import { readdirSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { basename, join } from 'node:path';
import { composeMaps, formatInterval, sameMap, uncovered } from './extents.ts';
import { DisjointIntervals } from './intervals.ts';
import { appendErrors, capErrors, configError, parseIni, readConfigFile, readConfigText, sameStamp } from './ini.ts';
import type { IniDoc, ReadFile, Stamp } from './ini.ts';
import type { Interval } from './extents.ts';
import { AGENT_SCHEMA, CONTEXT_SCHEMA, isProblem, labelProblem } from './schema.ts';
import type { KeySpec } from './schema.ts';
import type { Schema } from './schema.ts';
import { DEFAULT_SOCKET, DEFAULT_USERDB_SOCKET, HOST_LABEL } from './types.ts';
import type { AgentConfig, ConfigError, Context, ContextDef, Delegation, IdMap, Nss, Owner } from './types.ts';

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

/** Where each [context] key of a file is, for errors judged across files (a clash, a parent). */
function contextLines(doc: IniDoc): Readonly<Record<string, number>> {
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
function lineIn(d: ContextDef, key: string): number | null {
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
export function parseContextFile(file: string, text: string, nss: Nss, poolSize: number): { def: ContextDef | null; errors: ConfigError[] } {
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
  const label = get<string>('context', 'label') ?? basename(file).replace(/\.conf$/, '');
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
  return {
    def: {
      label,
      file,
      parent,
      owner,
      uidMap: auto ? null : uidMap,
      gidMap: auto ? null : gidMap,
      autoSize: auto ? (sizeSet ?? poolSize) : null,
      // The default depends on the parent's (finishContexts): a nested namespace inherits deny.
      setgroups: get<'allow' | 'deny'>('context', 'setgroups') ?? null,
      create: get<'lazy' | 'eager'>('context', 'create') ?? 'lazy',
      squash: {
        mode: get('squash', 'mode') ?? 'root',
        anonuid: get('squash', 'anonuid') ?? 65534,
        anongid: get('squash', 'anongid') ?? 65534,
      },
      access: { uids: get('access', 'users') ?? [], gids: get('access', 'groups') ?? [] },
      ownerIds: get<'delegated' | 'any'>('context', 'owner_ids') ?? 'delegated',
      ...(delegate ? { delegate } : {}),
      ...(get<number>('context', 'children') ? { children: get<number>('context', 'children') } : {}),
      ...(get<number>('context', 'child_ranges') ? { childRanges: get<number>('context', 'child_ranges') } : {}),
      lines: contextLines(doc),
    },
    errors,
  };
}

/** The context files of a directory: `*.conf`, in name order; anything else (examples, backups) is left alone. */
export function listContextFiles(dir: string): string[] | ConfigError {
  try {
    return readdirSync(dir)
      .filter((n) => n.endsWith('.conf') && !n.startsWith('.'))
      .sort()
      .map((n) => join(dir, n));
  } catch (err) {
    return configError(dir, null, null, null, `cannot read the contexts directory: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/** A file not read: the stamp of its path (lstat), and the parse the cache holds of that version. */
export type Unread = { readonly text: null; readonly stamp: Stamp; readonly parsed: Parsed };

/** Files read ahead (off the event loop, by the agent), by path, each with its stamp; others are read when needed. */
export type ReadAhead = ReadonlyMap<string, ReadFile | Unread | ConfigError>;

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
  private readonly files = new Map<string, { readonly stamp: Stamp; readonly parsed: Parsed }>();
  /** Files taken from the cache and files parsed, since the cache was made. */
  readonly counts = { reused: 0, parsed: 0 };

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
  entry(file: string, poolSize: number): { readonly stamp: Stamp; readonly parsed: Parsed } | undefined {
    return poolSize === this.poolSize ? this.files.get(file) : undefined;
  }

  set(file: string, stamp: Stamp, poolSize: number, parsed: Parsed): void {
    if (poolSize !== this.poolSize) this.files.clear();
    this.poolSize = poolSize;
    const settled = Math.max(stamp.ctimeMs, stamp.mtimeMs) < this.now() - this.racyMs;
    if (settled) this.files.set(file, { stamp, parsed });
    else this.files.delete(file);
  }

  /** Only the files listed now are kept. */
  keepOnly(files: readonly string[]): void {
    const listed = new Set(files);
    for (const f of this.files.keys()) if (!listed.has(f)) this.files.delete(f);
  }

  get size(): number {
    return this.files.size;
  }
}

/** Every file of the directory parsed on its own, plus the checks between files that need no allocation. */
export function loadContextDefs(
  dir: string,
  nss: Nss,
  poolSize: number,
  texts?: ReadAhead,
  files: string[] | ConfigError = listContextFiles(dir),
  cache?: ParseCache,
): { defs: ContextDef[]; errors: ConfigError[] } {
  if (!Array.isArray(files)) return { defs: [], errors: [files] };
  const { defs, errors } = parseContextFiles(files, nss, poolSize, texts, cache);
  cache?.keepOnly(files);
  return linkContexts(defs, errors);
}

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
): { defs: ContextDef[]; errors: ConfigError[] } {
  const defs: ContextDef[] = [];
  const errors: ConfigError[] = [];
  const watch = watchedNss(nss);
  for (const file of files) {
    const ahead = texts?.get(file) ?? readConfigFile(file);
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
        if (!watch.asked()) cache.set(file, read.stamp, poolSize, r);
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
  const visit = (d: ContextDef, path: string[]): boolean => {
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
      } else if (!visit(p, [...path, d.label])) {
        if (state.get(d.label) !== 'bad')
          errors.push(configError(d.file, 'context', 'parent', lineIn(d, 'parent'), `parent "${d.parent}" is not valid, so neither is this context`));
        ok = false;
      }
    }
    if (state.get(d.label) === 'bad') return false;
    state.set(d.label, ok ? 'ok' : 'bad');
    if (ok) ordered.push(d);
    return ok;
  };
  for (const d of byLabel.values()) visit(d, []);
  return { defs: ordered, errors };
}

/** Ids of one kind a context reaches in the initial namespace, through its parent chain. */
export type HostMaps = { readonly uid: IdMap; readonly gid: IdMap };

/**
 * Ids taken: by a context admitted in this load, by a range = auto allocation (its label's alone), or
 * by the pin of a context in force whose ids changed (still in use until it is released).
 */
type Claim = { start: number; end: number; label: string; by: 'context' | 'allocation' | 'pin' };

/** The claims on one parent's ids of one kind: disjoint, each with who made it. */
class Claims extends DisjointIntervals<Claim> {
  /** Claim for `label` what of [start, end) no claim covers yet. */
  gaps(start: number, end: number, label: string, by: Claim['by'] = 'context'): void {
    let at = start;
    for (const c of this.overlapping(start, end)) {
      if (c.start > at) this.add({ start: at, end: c.start, label, by });
      at = Math.max(at, c.end);
    }
    if (at < end) this.add({ start: at, end, label, by });
  }
}

/** What came before a load: the contexts in force (by label) and the ranges allocated, used or not. */
export type Prior = {
  readonly inForce: ReadonlyMap<string, Context>;
  /** Allocations in effect for range = auto (recorded or fresh), by label: reserved for their label alone. */
  readonly allocations: ReadonlyMap<string, { readonly start: number; readonly size: number }>;
  /**
   * The maps the pinned namespaces hold now, by label (null: not known): a pinned context whose
   * configured ids differ from its pin's keeps the pin's ids claimed until it is released.
   */
  readonly pinned?: ReadonlyMap<string, { readonly uidMap: IdMap; readonly gidMap: IdMap } | null>;
  /** The host ids delegated to each user (SPEC §12); default: only the user's own uid and gid. */
  readonly delegations?: Delegations;
  /**
   * `inForce` was read from the state directory's record (a start, check-config), not the agent's
   * own objects (a reload): a context the same as its record is then the one made from its file,
   * which shares its parts with the parse the cache keeps, and not the record's (which would hold a
   * second copy of every context: 237 MiB against 181 at a restart with 65,535 contexts).
   */
  readonly fromRecord?: boolean;
};

/**
 * What a user was given on the host, as newuidmap(1) sees it: its own uid and gid plus its
 * subordinate ranges. `whose` names the account an id belongs to, for messages (null: none known).
 */
export type Delegations = {
  readonly of: (owner: Owner) => { readonly uid: readonly Interval[]; readonly gid: readonly Interval[] };
  readonly whose?: (kind: 'uid' | 'gid', id: number) => string | null;
};

export const OWN_IDS_ONLY: Delegations = { of: (o) => ({ uid: [{ start: o.uid, end: o.uid + 1 }], gid: [{ start: o.gid, end: o.gid + 1 }] }) };

/** Ids of [start, end) that no interval of `given` covers. */
function notGiven(given: readonly Interval[], start: number, end: number): Interval[] {
  return uncovered(
    given.map((g) => ({ inside: g.start, outside: g.start, count: g.end - g.start })),
    'inside',
    start,
    end,
  );
}

/**
 * A map beyond its owner's delegation, said the way an admin fixes it: which ids, whose they are
 * (the first few accounts), and what the owner was given.
 */
function beyondDelegation(
  d: ContextDef,
  kind: 'uid' | 'gid',
  gaps: Interval[],
  given: readonly Interval[],
  whose: Delegations['whose'],
): { what: string; advice: string } {
  const named: string[] = [];
  for (const g of gaps) {
    for (let id = g.start; id < g.end && named.length < 3; id++) {
      const who = whose?.(kind, id);
      if (who) named.push(`${id} is ${who}'s`);
      if (id - g.start > 4096) break; // names are looked up for the first ids of each gap only
    }
  }
  const owner = d.owner.name ?? String(d.owner.uid);
  return {
    what: `maps host ${kind}s ${gaps.map(formatInterval).join(', ')}, which were not delegated to ${owner}${named.length ? ` (${named.join(', ')})` : ''}`,
    advice: `${owner} was given ${given.map(formatInterval).join(', ') || 'nothing'} (its own ${kind} and its sub${kind} entries); map inside those, use range = auto, add a sub${kind} entry, or set owner_ids = any if the owner may have these ids`,
  };
}

export const NO_PRIOR: Prior = { inForce: new Map(), allocations: new Map() };

/** Equal extents in the same order (what a file says twice, or a record of it): no formatting, no sorting. */
function sameExtents(a: IdMap, b: IdMap): boolean {
  return a.length === b.length && a.every((e, i) => e.inside === b[i].inside && e.outside === b[i].outside && e.count === b[i].count);
}

const sameNumbers = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Every field of a Context, compared as the in-force record keeps them; `lines` only when both
 * have them (a record has none). test/unit/config.test.ts holds this list to the type: a field
 * added to Context and not here would let a record's stale value stay in force.
 */
export const RECORDED_FIELDS = [
  'label',
  'file',
  'parent',
  'owner',
  'uidMap',
  'gidMap',
  'autoSize',
  'setgroups',
  'create',
  'squash',
  'access',
  'ownerIds',
  'delegate',
  'children',
  'childRanges',
  'runtime',
  'lines',
] as const;

export function sameRecorded(a: Context, b: Context): boolean {
  return (
    a.label === b.label &&
    a.file === b.file &&
    a.parent === b.parent &&
    a.owner.uid === b.owner.uid &&
    a.owner.gid === b.owner.gid &&
    a.owner.name === b.owner.name &&
    sameExtents(a.uidMap, b.uidMap) &&
    sameExtents(a.gidMap, b.gidMap) &&
    a.autoSize === b.autoSize &&
    a.setgroups === b.setgroups &&
    a.create === b.create &&
    a.squash.mode === b.squash.mode &&
    a.squash.anonuid === b.squash.anonuid &&
    a.squash.anongid === b.squash.anongid &&
    sameNumbers(a.access.uids, b.access.uids) &&
    sameNumbers(a.access.gids, b.access.gids) &&
    a.ownerIds === b.ownerIds &&
    isDeepStrictEqual(a.delegate, b.delegate) &&
    a.children === b.children &&
    a.childRanges === b.childRanges &&
    (a.runtime ?? false) === (b.runtime ?? false) &&
    (a.lines === undefined || b.lines === undefined || isDeepStrictEqual(a.lines, b.lines))
  );
}

function sameIds(a: Context, b: { parent: string; uidMap: IdMap; gidMap: IdMap }): boolean {
  return a.parent === b.parent && sameExtents(a.uidMap, b.uidMap) && sameExtents(a.gidMap, b.gidMap);
}

/** A definition's maps once its range is known: as written, or its allocation; null when it has none (the allocator said why). */
function mapsOf(d: ContextDef, allocated: ReadonlyMap<string, number>): { uidMap: IdMap; gidMap: IdMap } | null {
  if (d.uidMap && d.gidMap) return { uidMap: d.uidMap, gidMap: d.gidMap };
  const start = allocated.get(d.label);
  if (start === undefined) return null;
  const size = d.autoSize!;
  const extra = (d.childRanges ?? 0) * size;
  // Its own range at 0, then the ranges for what is made inside it, each id its own host id.
  const map = [{ inside: 0, outside: start, count: size }, ...(extra > 0 ? [{ inside: start + size, outside: start + size, count: extra }] : [])];
  return { uidMap: map, gidMap: map };
}

/**
 * The context a definition was last accepted as, while it stays the same object (a file whose stamp
 * did not change, a context kept): accepted again with the same ids, it is that same object, so
 * what is in force can be compared by identity (Registry.apply, the in-force record).
 */
const acceptedAs = new WeakMap<ContextDef, Context>();

function contextOf(d: ContextDef, uidMap: IdMap, gidMap: IdMap, setgroups: 'allow' | 'deny', inForce: Context | undefined, fromRecord: boolean): Context {
  const last = acceptedAs.get(d);
  if (last && last.setgroups === setgroups && sameExtents(last.uidMap, uidMap) && sameExtents(last.gidMap, gidMap)) return last;
  let c: Context = { ...d, uidMap, gidMap, setgroups };
  // The same as the context in force (a file rewritten as it was; at start, the record's): that one.
  if (inForce !== undefined && !fromRecord && sameRecorded(inForce, c)) c = inForce;
  acceptedAs.set(d, c);
  return c;
}

/**
 * The order contexts are admitted in: first every context already in force that keeps its ids
 * (unchanged, or kept at its last good version because its file is now broken), then the new and
 * changed ones; parents before children within each. So a context in force is never refused
 * because a file that sorts before it now claims its ids: the newcomer is.
 */
function admissionOrder(
  defs: readonly ContextDef[],
  kept: readonly Context[],
  allocated: ReadonlyMap<string, number>,
  prior: Prior,
): { def: ContextDef; senior: boolean }[] {
  const byLabel = new Map<string, ContextDef>();
  for (const d of [...kept, ...defs]) byLabel.set(d.label, d);
  const keptSet = new Set<ContextDef>(kept);
  const senior = new Map<string, boolean>();
  const isSenior = (d: ContextDef): boolean => {
    let v = senior.get(d.label);
    if (v !== undefined) return v;
    senior.set(d.label, false); // a cycle cannot be senior (linkContexts has refused it anyway)
    const old = prior.inForce.get(d.label);
    const parent = byLabel.get(d.parent);
    // The very context this static definition was accepted as (an unchanged file): the same ids.
    const unchanged = old !== undefined && d.uidMap !== null && acceptedAs.get(d) === old;
    const maps = unchanged ? null : mapsOf(d, allocated);
    v =
      (unchanged || keptSet.has(d) || (old !== undefined && maps !== null && sameIds(old, { parent: d.parent, ...maps }))) &&
      (d.parent === HOST_LABEL || (parent !== undefined && isSenior(parent)));
    senior.set(d.label, v);
    return v;
  };
  // Parents-first across both lists: a kept context's parent may be a fresh definition.
  const ordered: ContextDef[] = [];
  const placed = new Set<string>();
  const place = (d: ContextDef, depth: number): void => {
    if (placed.has(d.label) || depth > 64) return;
    const parent = byLabel.get(d.parent);
    if (parent && parent !== d) place(parent, depth + 1);
    placed.add(d.label);
    ordered.push(d);
  };
  for (const d of byLabel.values()) place(d, 0);
  const all = ordered.map((d) => ({ def: d, senior: isSenior(d) }));
  return [...all.filter((x) => x.senior), ...all.filter((x) => !x.senior)];
}

/**
 * The last checks, once every context has maps (static or allocated): nested maps inside their
 * parent's, setgroups as the kernel allows it under the parent, an owner the parent maps, no host
 * root for a non-root owner, no two unrelated contexts sharing host ids. Contexts in force come
 * first (admissionOrder), then the rest parents-first in file order, so of two clashing files the
 * newcomer is refused, naming both; a range = auto allocation belongs to its label alone.
 *
 * Overlap is checked among siblings (children of the same parent, host included) in the parent's
 * ids: a nested context's ids lie inside its parent's by the first check, so two contexts of
 * different families can only clash if their top-level ancestors do.
 *
 * A context in force whose file now has errors is kept at its last good version (while its parent
 * stays): its label is in `kept`.
 */
/** A host resource a context's [delegate] names, and the context accepted with it. */
type Given = { readonly kind: 'device' | 'directory' | 'tap'; readonly item: string; readonly label: string };

function delegatedItems(d: ContextDef): (readonly ['device' | 'directory' | 'tap', string])[] {
  const g = d.delegate;
  if (!g) return [];
  return [...g.devices.map((p) => ['device', p] as const), ...g.directories.map((p) => ['directory', p] as const), ...(g.tap ? [['tap', g.tap] as const] : [])];
}

const KEY_OF = { device: 'devices', directory: 'directories', tap: 'tap' } as const;

/** What the contexts of one owner other than root may be given together (nsresourced: 16 cgroups, 16 interfaces a namespace). */
export const OWNER_LIMITS = { cgroups: 16, interfaces: 16 } as const;

/** What the accepted contexts of each owner hold, by uid: counted as they are admitted, not by scanning them again. */
type OwnerHeld = Map<number, { cgroups: number; interfaces: number }>;

const interfacesOf = (x: Delegation) => (x.veth ? 1 : 0) + (x.tap ? 1 : 0);

/** The [delegate] key over an owner's limit with `d`, and why; null within it. Root's contexts are the admin's own. */
function ownerLimitProblem(d: ContextDef, held: OwnerHeld): [string, string] | null {
  const g = d.delegate;
  if (!g || d.owner.uid === 0) return null;
  const mine = held.get(d.owner.uid) ?? { cgroups: 0, interfaces: 0 };
  const who = d.owner.name ?? String(d.owner.uid);
  if (g.cgroup && mine.cgroups >= OWNER_LIMITS.cgroups)
    return ['cgroup', `${who}'s contexts hold ${OWNER_LIMITS.cgroups} cgroups already, the most one owner is given`];
  if (interfacesOf(g) > 0 && mine.interfaces + interfacesOf(g) > OWNER_LIMITS.interfaces)
    return [
      g.tap ? 'tap' : 'veth',
      `${who}'s contexts hold ${mine.interfaces} network interfaces already; ${OWNER_LIMITS.interfaces} is the most one owner is given`,
    ];
  return null;
}

/** Count what an accepted context of an owner other than root holds. */
function holdFor(held: OwnerHeld, d: ContextDef): void {
  if (!d.delegate || d.owner.uid === 0) return;
  const mine = held.get(d.owner.uid) ?? { cgroups: 0, interfaces: 0 };
  held.set(d.owner.uid, { cgroups: mine.cgroups + (d.delegate.cgroup ? 1 : 0), interfaces: mine.interfaces + interfacesOf(d.delegate) });
}

/** The resources of `d` that an accepted context names already: [key, why] each. */
function delegationClashes(d: ContextDef, given: readonly Given[]): [string, string][] {
  const out: [string, string][] = [];
  const inside = (a: string, b: string) => a === b || a.startsWith(`${b}/`) || b.startsWith(`${a}/`);
  for (const [kind, item] of delegatedItems(d)) {
    const other = given.find((g) => g.kind === kind && g.label !== d.label && (kind === 'directory' ? inside(item, g.item) : item === g.item));
    if (!other) continue;
    const what = other.item === item ? `${kind} ${item}` : `directory ${item} (it and ${other.item} lie one inside the other)`;
    out.push([KEY_OF[kind], `${what} is given to context "${other.label}" already: a resource follows one label; give it to one of them`]);
  }
  return out;
}

/** What staticHostMaps reads of a definition (or of a context in force: its maps are static by then). */
type StaticMaps = Pick<ContextDef, 'label' | 'parent' | 'uidMap' | 'gidMap'>;

/**
 * The host ids each static context file asks for, judged or not: its own maps, a nested one's
 * composed through its parent's (nothing under an auto context, whose range is not decided yet, nor
 * under a parent that is not there). The local allocator keeps auto ranges clear of them all, so a
 * file refused today (a typo in its owner, an overlap) finds its ids free once it is fixed.
 */
export function staticHostMaps(defs: readonly StaticMaps[]): Map<string, HostMaps> {
  const byLabel = new Map(defs.map((d) => [d.label, d]));
  const out = new Map<string, HostMaps | null>();
  const hostOf = (d: StaticMaps): HostMaps | null => {
    if (out.has(d.label)) return out.get(d.label)!;
    out.set(d.label, null); // a cycle (refused by linkContexts) maps nothing
    let h: HostMaps | null = null;
    if (d.uidMap && d.gidMap) {
      const parent = d.parent === HOST_LABEL ? null : byLabel.get(d.parent);
      const above = parent ? hostOf(parent) : null;
      if (d.parent === HOST_LABEL) h = { uid: d.uidMap, gid: d.gidMap };
      else if (above) h = { uid: composeMaps(d.uidMap, above.uid), gid: composeMaps(d.gidMap, above.gid) };
    }
    out.set(d.label, h);
    return h;
  };
  const maps = new Map<string, HostMaps>();
  for (const d of defs) {
    const h = hostOf(d);
    if (h) maps.set(d.label, h);
  }
  return maps;
}

/**
 * Contexts in force whose files are broken now (no definition of their label, an error in their
 * file): what the judgement keeps at its last good version, unless something senior takes its ids.
 */
export function keptCandidates(defs: readonly ContextDef[], inForce: ReadonlyMap<string, Context>, errors: readonly ConfigError[]): Context[] {
  const labels = new Set(defs.map((d) => d.label));
  const broken = new Set(errors.map((e) => e.file));
  return [...inForce.values()].filter((c) => !labels.has(c.label) && broken.has(c.file));
}

export function finishContexts(
  defs: readonly ContextDef[],
  allocated: ReadonlyMap<string, number>,
  errors: ConfigError[],
  prior: Prior = NO_PRIOR,
): { contexts: Context[]; hostMaps: Map<string, HostMaps>; kept: string[]; notices: ConfigError[] } {
  const accepted = new Map<string, Context>();
  const notices: ConfigError[] = [];
  const delegations = prior.delegations ?? OWN_IDS_ONLY;
  /** An accepted ancestor with the same owner: its map was judged already, and the owner may nest inside it. */
  const ownedAncestor = (d: ContextDef): boolean => {
    for (let p = accepted.get(d.parent); p; p = accepted.get(p.parent)) if (p.owner.uid === d.owner.uid) return true;
    return false;
  };
  const hostMaps = new Map<string, HostMaps>();
  const claims = new Map<string, { uid: Claims; gid: Claims }>();
  const given: Given[] = [];
  const held: OwnerHeld = new Map();
  const refuse = (d: ContextDef, key: string, message: string) => errors.push(configError(d.file, 'context', key, lineIn(d, key), message));
  const labels = new Set(defs.map((d) => d.label));
  const kept = keptCandidates(defs, prior.inForce, errors);
  const keptLabels: string[] = [];

  // Allocations are claimed up front, for their label only: a static range never lands on one.
  const hostClaims = { uid: new Claims(), gid: new Claims() };
  for (const [label, a] of [...prior.allocations].sort((x, y) => x[1].start - y[1].start)) {
    const claim: Claim = { start: a.start, end: a.start + a.size, label, by: 'allocation' };
    if (hostClaims.uid.overlapping(claim.start, claim.end).length > 0) continue; // never, for the allocator's own output
    hostClaims.uid.add(claim);
    hostClaims.gid.add({ ...claim });
  }
  claims.set(HOST_LABEL, hostClaims);
  // A pinned context whose ids change keeps its namespace, with the old ids, until root releases it
  // (it is in drift): nobody else may take those ids meanwhile.
  const current = new Map<string, ContextDef>([...kept, ...defs].map((d) => [d.label, d]));
  for (const [label, held] of prior.pinned ?? []) {
    const now = current.get(label);
    if (!now || !held) continue; // a removed context's pin is released at once; an unknown one is checked at adoption
    const nowMaps = mapsOf(now, allocated);
    if (nowMaps && sameMap(nowMaps.uidMap, held.uidMap) && sameMap(nowMaps.gidMap, held.gidMap)) continue;
    const siblings = claims.get(now.parent) ?? { uid: new Claims(), gid: new Claims() };
    for (const [kind, map] of [
      ['uid', held.uidMap],
      ['gid', held.gidMap],
    ] as const) {
      for (const e of map) siblings[kind].gaps(e.outside, e.outside + e.count, label, 'pin');
    }
    claims.set(now.parent, siblings);
  }

  for (const { def: d } of admissionOrder(defs, kept, allocated, prior)) {
    if (d.parent !== HOST_LABEL && !accepted.has(d.parent)) {
      refuse(d, 'parent', `parent "${d.parent}" is not valid, so neither is this context`);
      continue;
    }
    const own = mapsOf(d, allocated);
    if (!own) continue; // the allocator has said why
    const { uidMap, gidMap } = own;
    const maps = [
      ['uid', 'uid_map', uidMap],
      ['gid', 'gid_map', gidMap],
    ] as const;
    const parent = accepted.get(d.parent);
    const problems: [string, string][] = [];
    if (parent) {
      for (const [kind, key, map] of maps) {
        const pmap = kind === 'uid' ? parent.uidMap : parent.gidMap;
        const gaps = map.flatMap((e) => uncovered(pmap, 'inside', e.outside, e.outside + e.count));
        if (gaps.length > 0) {
          problems.push([
            key,
            `outside ${kind}s ${gaps.map(formatInterval).join(', ')} are not mapped inside parent "${d.parent}": a nested map may only use ids its parent has`,
          ]);
        }
        if (uncovered(pmap, 'inside', 0, 1).length > 0) {
          problems.push([
            key,
            `parent "${d.parent}" does not map ${kind} 0: the agent writes a nested context's maps as its parent's root, so the parent must map inside ${kind} 0`,
          ]);
        }
      }
    }
    const parentHost = parent ? hostMaps.get(d.parent)! : null;
    const host: HostMaps = parentHost ? { uid: composeMaps(uidMap, parentHost.uid), gid: composeMaps(gidMap, parentHost.gid) } : { uid: uidMap, gid: gidMap };
    // setgroups: the kernel refuses "allow" in a namespace whose parent denies it.
    const setgroups = d.setgroups ?? (parent?.setgroups === 'deny' || d.owner.uid !== 0 ? 'deny' : 'allow');
    if (parent?.setgroups === 'deny' && setgroups === 'allow') {
      problems.push([
        'setgroups',
        `cannot be allow: parent "${d.parent}" has setgroups = deny, and the kernel refuses allow under deny (remove the line: a nested context inherits deny)`,
      ]);
    }
    // A nested namespace is owned by its owner's id inside the parent: the parent must map it.
    if (parentHost && d.owner.uid !== 0) {
      for (const [kind, id, key] of [
        ['uid', d.owner.uid, 'owner'],
        ['gid', d.owner.gid, 'owner'],
      ] as const) {
        if (uncovered(kind === 'uid' ? parentHost.uid : parentHost.gid, 'outside', id, id + 1).length > 0) {
          problems.push([
            key,
            `${d.owner.name ?? d.owner.uid} (host ${kind} ${id}) is not mapped in parent "${d.parent}": the owner of a nested context is a host user whose ids the parent maps; the parent's own owner needs no owner line here, since the owner of a namespace may enter every namespace nested in it`,
          ]);
          break;
        }
      }
    }
    if (d.owner.uid !== 0) {
      for (const [kind, key] of maps) {
        if ((kind === 'uid' ? host.uid : host.gid).some((e) => e.outside === 0)) {
          problems.push([
            key,
            `maps host ${kind} 0 (root) into a context owned by ${d.owner.name ?? d.owner.uid}, who is not root: that would give the owner host root`,
          ]);
        }
      }
    }
    // SPEC §12: an owner gets through usernsd only host ids it was given. An auto range is usernsd's
    // own allocation for it; under an ancestor of the same owner, the owner could nest it itself.
    if (d.owner.uid !== 0 && d.autoSize === null && !ownedAncestor(d)) {
      const given = delegations.of(d.owner);
      for (const [kind, key] of maps) {
        const g = kind === 'uid' ? given.uid : given.gid;
        const gaps = (kind === 'uid' ? host.uid : host.gid).flatMap((e) => notGiven(g, e.outside, e.outside + e.count));
        if (gaps.length === 0) continue;
        const { what, advice } = beyondDelegation(d, kind, gaps, g, delegations.whose);
        if (d.ownerIds === 'any')
          notices.push(configError(d.file, 'context', 'owner_ids', lineIn(d, 'owner_ids'), `any: the owner may use ids it was not given: ${key} ${what}`));
        else problems.push([key, `${what}: ${advice}`]);
      }
    }
    if (d.owner.uid !== 0 && d.delegate && d.delegate.devices.length > 0)
      notices.push(
        configError(
          d.file,
          'delegate',
          'devices',
          lineIn(d, 'devices'),
          `the owner's context root is given host devices ${d.delegate.devices.join(', ')} (owner_ids = any)`,
        ),
      );
    const siblings = claims.get(d.parent) ?? { uid: new Claims(), gid: new Claims() };
    for (const [kind, key, map] of maps) {
      for (const e of map) {
        // Its own allocation or old pin is no clash; anything else overlapping is.
        const c = siblings[kind].overlapping(e.outside, e.outside + e.count).find((x) => !(x.label === d.label && x.by !== 'context'));
        if (!c) continue;
        const o = c.by !== 'pin' ? accepted.get(c.label) : undefined;
        const ids = formatInterval({ start: Math.max(c.start, e.outside), end: Math.min(c.end, e.outside + e.count) });
        const whose = d.parent === HOST_LABEL ? 'host' : `parent "${d.parent}"`;
        const by = o
          ? `context "${o.label}" (${o.file})`
          : c.by === 'pin'
            ? `the pinned namespace of "${c.label}", whose ids changed (release it first: usernsctl release ${c.label})`
            : `the range allocated to "${c.label}" (range = auto, recorded in the state directory's ranges.json; it stays reserved for that label)`;
        problems.push([key, `${whose} ${kind}s ${ids} are already used by ${by}: give one of them other ids`]);
        break;
      }
    }
    // SPEC §13: what one context is given, no other context names (nor a directory inside it).
    const clashes = delegationClashes(d, given);
    // And an owner's contexts together hold at most what nsresourced gives one namespace.
    const over = ownerLimitProblem(d, held);
    if (over) clashes.push(over);
    for (const [key, message] of clashes)
      errors.push(configError(d.file, 'delegate', key, d.lines?.[`delegate.${key}`] ?? d.lines?.['delegate.'] ?? null, message));
    if (problems.length > 0 || clashes.length > 0) {
      for (const [key, message] of problems) refuse(d, key, message);
      continue;
    }
    for (const [kind, item] of delegatedItems(d)) given.push({ kind, item, label: d.label });
    holdFor(held, d);
    // Only what is not claimed already (its own allocation, or its own old pin), so the list stays disjoint.
    for (const [kind, , map] of maps) for (const e of map) siblings[kind].gaps(e.outside, e.outside + e.count, d.label);
    claims.set(d.parent, siblings);
    hostMaps.set(d.label, host);
    accepted.set(d.label, contextOf(d, uidMap, gidMap, setgroups, prior.inForce.get(d.label), prior.fromRecord === true));
    if (!labels.has(d.label)) keptLabels.push(d.label);
  }
  // Parents before children, as admitted.
  return { contexts: [...accepted.values()], hostMaps, kept: keptLabels, notices };
}

// From files to contexts: usernsd.conf, then every context file, then the checks that span files.
import { readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { composeMaps, firstEndingAfter, formatInterval, uncovered } from './extents.ts';
import { configError, parseIni, readConfigText } from './ini.ts';
import type { IniDoc } from './ini.ts';
import { AGENT_SCHEMA, CONTEXT_SCHEMA, isProblem, labelProblem } from './schema.ts';
import type { Schema } from './schema.ts';
import { DEFAULT_SOCKET, HOST_LABEL } from './types.ts';
import type { AgentConfig, ConfigError, Context, ContextDef, IdMap, Nss, Owner } from './types.ts';

export const DEFAULT_CONFIG_FILE = '/etc/usernsd.conf';

export const AGENT_DEFAULTS: Omit<AgentConfig, 'file'> = {
  socket: DEFAULT_SOCKET,
  contexts: '/etc/userns.d',
  pins: '/run/userns',
  state: '/var/lib/usernsd',
  logLevel: 'info',
  labelXattr: 'trusted.userns',
  mountNamespace: 'auto',
  overflowuid: 65534,
  overflowgid: 65534,
  pool: { start: 524288, end: 1879048191, size: 65536 },
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
      errors.push(configError(doc.file, name, null, section.line, `unknown section (known: ${Object.keys(schema).map((s) => `[${s}]`).join(', ')})`));
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

/** Read /etc/usernsd.conf. A bad key is reported and its default used, so the agent can still start. */
export function loadAgentConfig(file: string, nss: Nss, defaults: Omit<AgentConfig, 'file'> = AGENT_DEFAULTS): { config: AgentConfig; errors: ConfigError[] } {
  const errors: ConfigError[] = [];
  const text = readConfigText(file);
  if (typeof text !== 'string') return { config: { ...defaults, file }, errors: [text] };
  const { doc, errors: iniErrors } = parseIni(file, text);
  errors.push(...iniErrors);
  const v = applySchema(doc, AGENT_SCHEMA, nss, errors);
  const get = <T>(section: string, key: string, fallback: T): T => (v.get(section)?.get(key) as T | undefined) ?? fallback;
  const range = get('pool', 'range', { start: defaults.pool.start, end: defaults.pool.end });
  const size = get('pool', 'size', defaults.pool.size);
  if (range.end - range.start + 1 < size) {
    errors.push(configError(file, 'pool', 'range', lineOf(doc, 'pool', 'range'), `holds ${range.end - range.start + 1} ids, fewer than one allocation of size ${size}`));
  }
  if (range.start === 0) errors.push(configError(file, 'pool', 'range', lineOf(doc, 'pool', 'range'), 'must not include id 0 (host root)'));
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
      overflowuid: get('mapping', 'overflowuid', defaults.overflowuid),
      overflowgid: get('mapping', 'overflowgid', defaults.overflowgid),
      pool: { start: range.start, end: range.end, size },
    },
    errors,
  };
}

const ROOT: Owner = { uid: 0, gid: 0, name: 'root' };

/** One context file -> a definition, or the errors that keep it out. */
export function parseContextFile(file: string, text: string, nss: Nss, poolSize: number): { def: ContextDef | null; errors: ConfigError[] } {
  const errors: ConfigError[] = [];
  const { doc, errors: iniErrors } = parseIni(file, text);
  errors.push(...iniErrors);
  const v = applySchema(doc, CONTEXT_SCHEMA, nss, errors);
  const ctx = v.get('context') ?? new Map<string, unknown>();
  const get = <T>(section: string, key: string): T | undefined => v.get(section)?.get(key) as T | undefined;
  const err = (section: string, key: string | null, message: string) =>
    errors.push(configError(file, section, key, key ? lineOf(doc, section, key) : lineOf(doc, section), message));

  if (!doc.sections.has('context')) err('context', null, 'missing: every context file needs a [context] section');
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
    if (parent !== HOST_LABEL) err('context', 'range', 'range = auto is only for contexts whose parent is host; give a nested context a uid_map and gid_map inside its parent');
  } else {
    if (present('size')) err('context', 'size', 'only applies with range = auto');
    if (!present('range')) {
      if (!present('uid_map')) err('context', 'uid_map', 'missing: set uid_map and gid_map, or range = auto');
      if (!present('gid_map')) err('context', 'gid_map', 'missing: set uid_map and gid_map, or range = auto');
    }
  }
  const setgroups = get<'allow' | 'deny'>('context', 'setgroups') ?? (owner.uid === 0 ? 'allow' : 'deny');
  if (errors.length > 0) return { def: null, errors };
  return {
    def: {
      label, file, parent, owner,
      uidMap: auto ? null : uidMap,
      gidMap: auto ? null : gidMap,
      autoSize: auto ? (sizeSet ?? poolSize) : null,
      setgroups,
      create: get<'lazy' | 'eager'>('context', 'create') ?? 'lazy',
      squash: {
        mode: get('squash', 'mode') ?? 'root',
        anonuid: get('squash', 'anonuid') ?? 65534,
        anongid: get('squash', 'anongid') ?? 65534,
      },
      access: { uids: get('access', 'users') ?? [], gids: get('access', 'groups') ?? [] },
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

/** Every file of the directory parsed on its own, plus the checks between files that need no allocation. */
export function loadContextDefs(dir: string, nss: Nss, poolSize: number): { defs: ContextDef[]; errors: ConfigError[] } {
  const files = listContextFiles(dir);
  if (!Array.isArray(files)) return { defs: [], errors: [files] };
  const defs: ContextDef[] = [];
  const errors: ConfigError[] = [];
  for (const file of files) {
    const text = readConfigText(file);
    if (typeof text !== 'string') {
      errors.push(text);
      continue;
    }
    const r = parseContextFile(file, text, nss, poolSize);
    errors.push(...r.errors);
    if (r.def) defs.push(r.def);
  }
  return linkContexts(defs, errors);
}

/** Unique labels, parents that exist, no cycles: what survives can be ordered parents-first. */
export function linkContexts(defs: readonly ContextDef[], errors: ConfigError[]): { defs: ContextDef[]; errors: ConfigError[] } {
  const byLabel = new Map<string, ContextDef>();
  for (const d of defs) {
    const first = byLabel.get(d.label);
    if (first) errors.push(configError(d.file, 'context', 'label', null, `label "${d.label}" is already defined by ${first.file}: ignored`));
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
      errors.push(configError(d.file, 'context', 'parent', null, `parents form a cycle: ${[...path, d.label].join(' -> ')}`));
      state.set(d.label, 'bad');
      return false;
    }
    state.set(d.label, 'visiting');
    let ok = true;
    if (d.parent !== HOST_LABEL) {
      const p = byLabel.get(d.parent);
      if (!p) {
        errors.push(configError(d.file, 'context', 'parent', null, `parent "${d.parent}" is not a configured context`));
        ok = false;
      } else if (!visit(p, [...path, d.label])) {
        if (state.get(d.label) !== 'bad') errors.push(configError(d.file, 'context', 'parent', null, `parent "${d.parent}" is not valid, so neither is this context`));
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

type Claim = { start: number; end: number; label: string };

/** Disjoint claims kept sorted by start: the first claim overlapping [start, end), if any, in O(log n). */
function findClaim(claims: readonly Claim[], start: number, end: number): Claim | null {
  const c = claims[firstEndingAfter(claims, start)];
  return c && c.start < end ? c : null;
}

function addClaim(claims: Claim[], claim: Claim): void {
  let lo = 0;
  let hi = claims.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (claims[mid]!.start < claim.start) lo = mid + 1;
    else hi = mid;
  }
  claims.splice(lo, 0, claim);
}

/**
 * The last checks, once every context has maps (static or allocated): nested maps inside their
 * parent's, no host root for a non-root owner, no two unrelated contexts sharing host ids. Contexts
 * are taken parents-first and in file order, so an earlier good context is never refused because a
 * later file clashes with it: the later one is refused, naming both.
 *
 * Overlap is checked among siblings (children of the same parent, host included) in the parent's
 * ids: a nested context's ids lie inside its parent's by the first check, so two contexts of
 * different families can only clash if their top-level ancestors do.
 */
export function finishContexts(
  defs: readonly ContextDef[],
  allocated: ReadonlyMap<string, number>,
  errors: ConfigError[],
): { contexts: Context[]; hostMaps: Map<string, HostMaps> } {
  const accepted = new Map<string, Context>();
  const hostMaps = new Map<string, HostMaps>();
  const claims = new Map<string, { uid: Claim[]; gid: Claim[] }>();
  const refuse = (d: ContextDef, key: string, message: string) => errors.push(configError(d.file, 'context', key, null, message));

  for (const d of defs) {
    if (d.parent !== HOST_LABEL && !accepted.has(d.parent)) {
      refuse(d, 'parent', `parent "${d.parent}" is not valid, so neither is this context`);
      continue;
    }
    let uidMap = d.uidMap;
    let gidMap = d.gidMap;
    if (uidMap === null || gidMap === null) {
      const start = allocated.get(d.label);
      if (start === undefined) continue; // the allocator has said why
      uidMap = gidMap = [{ inside: 0, outside: start, count: d.autoSize! }];
    }
    const maps = [['uid', 'uid_map', uidMap], ['gid', 'gid_map', gidMap]] as const;
    const parent = accepted.get(d.parent);
    const problems: [string, string][] = [];
    if (parent) {
      for (const [kind, key, map] of maps) {
        const pmap = kind === 'uid' ? parent.uidMap : parent.gidMap;
        const gaps = map.flatMap((e) => uncovered(pmap, 'inside', e.outside, e.outside + e.count));
        if (gaps.length > 0) {
          problems.push([key, `outside ${kind}s ${gaps.map(formatInterval).join(', ')} are not mapped inside parent "${d.parent}": a nested map may only use ids its parent has`]);
        }
      }
    }
    const parentHost = parent ? hostMaps.get(d.parent)! : null;
    const host: HostMaps = parentHost
      ? { uid: composeMaps(uidMap, parentHost.uid), gid: composeMaps(gidMap, parentHost.gid) }
      : { uid: uidMap, gid: gidMap };
    if (d.owner.uid !== 0) {
      for (const [kind, key] of maps) {
        if ((kind === 'uid' ? host.uid : host.gid).some((e) => e.outside === 0)) {
          problems.push([key, `maps host ${kind} 0 (root) into a context owned by ${d.owner.name ?? d.owner.uid}, who is not root: that would give the owner host root`]);
        }
      }
    }
    const siblings = claims.get(d.parent) ?? { uid: [], gid: [] };
    for (const [kind, key, map] of maps) {
      for (const e of map) {
        const c = findClaim(siblings[kind], e.outside, e.outside + e.count);
        if (!c) continue;
        const o = accepted.get(c.label)!;
        const ids = formatInterval({ start: Math.max(c.start, e.outside), end: Math.min(c.end, e.outside + e.count) });
        const whose = d.parent === HOST_LABEL ? 'host' : `parent "${d.parent}"`;
        problems.push([key, `${whose} ${kind}s ${ids} are already used by context "${o.label}" (${o.file}): give one of them other ids`]);
        break;
      }
    }
    if (problems.length > 0) {
      for (const [key, message] of problems) refuse(d, key, message);
      continue;
    }
    for (const [kind, , map] of maps) for (const e of map) addClaim(siblings[kind], { start: e.outside, end: e.outside + e.count, label: d.label });
    claims.set(d.parent, siblings);
    hostMaps.set(d.label, host);
    accepted.set(d.label, { ...d, uidMap, gidMap });
  }
  return { contexts: [...accepted.values()], hostMaps };
}

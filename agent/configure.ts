// One configuration load, start to finish: settings, context files, ranges, cross-file checks.
import { lstatSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { outsideIntervals } from '../config/extents.ts';
import type { Interval } from '../config/extents.ts';
import { appendErrors, configError, readConfigFileAsync, stampOf } from '../config/ini.ts';
import {
  admitRuntimeChildren,
  AGENT_DEFAULTS,
  linkContexts,
  isListing,
  listContextFiles,
  loadAgentConfig,
  loadContextDefs,
  allocationSize,
  loadRuntimeDefs,
  parseContextFile,
  runtimeDelegateProblem,
} from '../config/load.ts';
import type { ParseCache, ReadAhead, Unchanged, Unread } from '../config/load.ts';
import { finishContexts, keptCandidates, sameRecorded, staticHostMaps } from '../config/judge.ts';
import type { ContextsDelta } from '../config/judge.ts';
import type { Delegations, HostMaps, Judgement } from '../config/judge.ts';
import type { ReadFile } from '../config/ini.ts';
import { bypassUserdb, enumerateIds, systemNss } from '../config/nss.ts';
import { DEFAULT_CONFIG_FILE, HOST_LABEL } from '../config/types.ts';
import type { AgentConfig, ConfigError, Context, ContextDef, IdMap, Nss } from '../config/types.ts';
import { assignRanges, mergeIntervals, parseSubIdOwners, parseSubIds } from './coord/allocate.ts';
import { closeFd, openDirPath, parentNsIno } from './kernel/sys.ts';
import { sameStampAt, stampsAt } from './kernel/stamps.ts';
import type { Stamps } from './kernel/stamps.ts';
import type { StaticClaim } from './coord/poolkeys.ts';
import type { Allocation, PinnedIds } from './coord/allocate.ts';
import { agentError } from './advice.ts';
import { Fault } from './fault.ts';
import { pinnedIno, pinnedMaps } from './kernel/userns.ts';
import { CHILDREN_DIR, ensureStateDir, IN_FORCE_FILE, readAllocations, readInForceRecord, writeAllocations } from './coord/state.ts';

export type Configuration = {
  readonly agent: AgentConfig;
  /** Valid contexts, parents before children. */
  readonly contexts: ReadonlyMap<string, Context>;
  /** How `contexts` differs from the map the same judgement handed out before, when it knows (config/judge.ts ContextsDelta). */
  readonly delta?: ContextsDelta | null;
  readonly hostMaps: ReadonlyMap<string, HostMaps>;
  readonly allocations: ReadonlyMap<string, Allocation>;
  /** Allocations made by this load that are not yet in the state file (only when not recording). */
  readonly unrecorded: ReadonlyMap<string, Allocation>;
  /** Contexts in force before this load whose files are now broken, kept at their last good version. */
  readonly kept: readonly string[];
  readonly errors: readonly ConfigError[];
  /** What the admin allowed on purpose and should know: owner_ids = any used beyond a delegation (check-config prints these, the agent logs them). */
  readonly notices: readonly ConfigError[];
  /** coordinator = etcd: auto contexts waiting for etcd to decide their range (and whose children wait with them). */
  readonly pending: readonly PendingRange[];
  /** coordinator = etcd: this host's top-level static ranges, registered in the shared pool. */
  readonly statics: readonly StaticClaim[];
  /** coordinator = etcd: every label waiting (the pending ones and their descendants). */
  readonly waiting: readonly string[];
  /** coordinator = etcd: every auto context, to check its cached range against the pool's at each settle. */
  readonly requests: readonly PendingRange[];
  /**
   * The in-force record this load read (a start, check-config): its contexts, which the unchanged
   * contexts above are (the very objects), its generation and its journal's length. Null when the
   * load was given what is in force, or the record has no generation (an older usernsd's).
   */
  readonly recorded: { readonly contexts: ReadonlyMap<string, Context>; readonly generation: string; readonly journal: number } | null;
};

export type PendingRange = { readonly label: string; readonly size: number; readonly file: string };

/** What the allocator must never hand out, read from the system (the subordinate id files as configured). */
export type SystemIds = (agent: Pick<AgentConfig, 'subuid' | 'subgid'>) => Interval[];

export const systemIds: SystemIds = (agent) => {
  const out: Interval[] = [];
  for (const f of [agent.subuid, agent.subgid]) {
    try {
      for (const i of parseSubIds(readFileSync(f, 'utf8'))) out.push(i);
    } catch {
      /* absent: nothing delegated */
    }
  }
  const { uids, gids } = enumerateIds();
  for (const id of [...uids, ...gids]) out.push({ start: id, end: id + 1 });
  return out;
};

function kernelOverflow(): { overflowuid: number; overflowgid: number } {
  const read = (name: string) => {
    try {
      return Number(readFileSync(`/proc/sys/kernel/${name}`, 'utf8').trim());
    } catch {
      return 65534;
    }
  };
  return { overflowuid: read('overflowuid'), overflowgid: read('overflowgid') };
}

export type LoadOptions = {
  readonly nss?: Nss;
  readonly systemIds?: SystemIds;
  /** Record fresh allocations in the state directory (the agent) or only report them (check-config). */
  readonly record: boolean;
  /** The contexts in force (the agent's, at a reload); default: the state directory's record. */
  readonly inForce?: ReadonlyMap<string, Context>;
  /** Files read ahead (loadConfigurationAsync), and the context files listed then. */
  readonly texts?: ReadAhead;
  /** The listed files found unchanged since the cache read them, by their place in `files`. */
  readonly unchanged?: Unchanged;
  readonly files?: readonly string[] | ConfigError;
  /** The settings file as loadConfigurationAsync judged it. */
  readonly settings?: { readonly agent: AgentConfig; readonly errors: ConfigError[] };
  /** coordinator = etcd: labels the shared pool refuses as configured here, and why. */
  readonly refused?: ReadonlyMap<string, string>;
  /** Context files parsed at earlier loads (the agent's): a file whose stamp is unchanged is not read again. */
  readonly cache?: ParseCache;
  /** The judgement of the last load (the agent's): a reload judges again what changed (judge.ts judgeChanged). */
  readonly judgement?: Judgement;
};

/** What the agent keeps from one load for the next: the files as parsed, the judgement across them. */
export type LoadMemo = { readonly cache: ParseCache; readonly judgement: Judgement };

/** Files read at once, at most: enough to keep the disk busy, few enough to bound memory. */
const READ_AHEAD_BATCH = 64;
/**
 * Stamps looked at before the event loop is given back: a few milliseconds of lstat(2) on cached
 * inodes. One at a time, synchronously: 65,535 promised lstats cost the agent's thread three times
 * as much (each a request to the thread pool and a promise), for inodes the kernel has at hand.
 */
const STAMP_BATCH = 512;

/**
 * loadConfiguration for the agent: the files are read first without blocking the event loop for
 * long (so a reload of many files does not stall the requests being served), then judged as usual.
 * A file whose stamp says the parse cache holds its version is not read again.
 */
export async function loadConfigurationAsync(file: string | null, opts: LoadOptions): Promise<Configuration> {
  const nss = opts.nss ?? systemNss();
  const path = file ?? DEFAULT_CONFIG_FILE;
  const texts = new Map<string, ReadFile | ConfigError>([[path, await readConfigFileAsync(path)]]);
  // The settings are judged once: they say where the context files are, and go on with them.
  const settings = readSettings(file, nss, texts);
  const files = opts.cache ? opts.cache.list(settings.agent.contexts) : listContextFiles(settings.agent.contexts);
  // Stamps are looked at by name in the directory (statx, no Stats object): see unchanged.
  const dirFd = isListing(files) && opts.cache && opts.cache.size > 0 ? openDirOrNull(settings.agent.contexts) : null;
  // Unchanged files by their place in the listing: no map of 65,535 entries made at every reload.
  const same: (Unread | undefined)[] = isListing(files) ? new Array<Unread | undefined>(files.length) : [];
  try {
    if (isListing(files)) {
      // Every stamp at once on the library's threads, when it is there (kernel/stamps.ts).
      const at = { dirFd, stamps: dirFd !== null ? await stampsAt(dirFd, files) : null };
      for (let i = 0; i < files.length; i += STAMP_BATCH) {
        const toRead: string[] = [];
        for (let n = i; n < Math.min(i + STAMP_BATCH, files.length); n++) {
          const unread = unchanged(files, n, at, settings.agent.pool.size, opts.cache);
          if (unread) same[n] = unread;
          else toRead.push(files[n]);
        }
        for (let k = 0; k < toRead.length; k += READ_AHEAD_BATCH) {
          const batch = toRead.slice(k, k + READ_AHEAD_BATCH);
          const read = await Promise.all(batch.map(readConfigFileAsync));
          batch.forEach((f, j) => texts.set(f, read[j]));
        }
        await new Promise(setImmediate); // the requests waiting meanwhile are served
      }
    }
  } finally {
    if (dirFd !== null) closeFd(dirFd);
  }
  return loadConfiguration(file, { ...opts, nss, texts, files, settings, unchanged: same });
}

function openDirOrNull(dir: string): number | null {
  try {
    return openDirPath(dir);
  } catch {
    return null; // then each stamp is an lstat of the path
  }
}

/**
 * Only the stamp of a file whose version the cache holds parsed (a reload of many files reads what
 * changed); null: read it, the listing's `i`th file. Compared with what the library looked at
 * (`stamps`), or by statx at `dirFd` (the contexts directory, its files listed from it), without a
 * Stats object: a tenth less time for a reload of 65,535 files than lstatSync of each path, and the
 * library's threads two fifths of that.
 */
function unchanged(
  files: readonly string[],
  i: number,
  at: { readonly dirFd: number | null; readonly stamps: Stamps | null },
  poolSize: number,
  cache: ParseCache | undefined,
): Unread | null {
  if (!cache || cache.size === 0) return null;
  const file = files[i];
  const had = cache.entryAt(files, i, poolSize);
  if (had === undefined) return null;
  const same =
    at.stamps !== null ? at.stamps.same(i, had.stamp) : at.dirFd !== null ? sameStampAt(at.dirFd, file.slice(file.lastIndexOf('/') + 1), had.stamp) : null;
  if (same !== null) return same ? had : null;
  try {
    const st = lstatSync(file, { throwIfNoEntry: false });
    if (!st) return null; // gone since the listing: the read says so
    const stamp = stampOf(st);
    const parsed = cache.get(file, stamp, poolSize);
    return parsed ? { text: null, stamp, parsed } : null;
  } catch {
    return null;
  }
}

/** A read-ahead's text for loadAgentConfig (undefined: read it now). */
const textOf = (r: ReadFile | ConfigError | undefined): string | ConfigError | undefined => (r === undefined || !('text' in r) ? r : r.text);

/** The settings file judged (no --config: the default file, which may be missing, as for most daemons; an explicit one may not). */
function readSettings(file: string | null, nss: Nss, texts: ReadAhead | undefined): { agent: AgentConfig; errors: ConfigError[] } {
  const defaults = { ...AGENT_DEFAULTS, ...kernelOverflow() };
  if (file === null) {
    const r = loadAgentConfig(DEFAULT_CONFIG_FILE, nss, defaults, textOf(texts?.get(DEFAULT_CONFIG_FILE)));
    const missing = r.errors.length === 1 && r.errors[0].message.includes('ENOENT');
    return missing ? { agent: { ...defaults, file: DEFAULT_CONFIG_FILE }, errors: [] } : { agent: r.config, errors: r.errors };
  }
  const r = loadAgentConfig(file, nss, defaults, textOf(texts?.get(file)));
  return { agent: r.config, errors: r.errors };
}

/**
 * The settings file alone, judged as a load judges it (pass the result to the load as `settings`):
 * the agent needs its directories before it reads or writes anything in them.
 */
export function loadSettings(file: string | null, nss: Nss = systemNss()): { agent: AgentConfig; errors: ConfigError[] } {
  return readSettings(file, nss, undefined);
}

export function loadConfiguration(file: string | null, given: LoadOptions): Configuration {
  const nss = given.nss ?? systemNss();
  const errors: ConfigError[] = [];
  const { agent, errors: settingErrors } = given.settings ?? readSettings(file, nss, given.texts);
  appendErrors(errors, settingErrors);
  // A settings file with errors is refused whole (a start stops, a reload keeps everything as it
  // was): nothing a load made with it decides is recorded, least of all a range allocated in the
  // default pool because the admin's pool has a typo.
  const opts = settingErrors.length > 0 && given.record ? { ...given, record: false } : given;

  bypassUserdb(basename(agent.userdbSocket)); // before the first lookup of a name in the files
  const loaded = loadContextDefs(agent.contexts, nss, agent.pool.size, opts.texts, opts.files, opts.cache, opts.unchanged);
  appendErrors(errors, loaded.errors);
  // Contexts made from inside at run time (SPEC §14): beside the files, which win over them.
  const runtimeNotices: ConfigError[] = [];
  const runtime = loadRuntimeDefs(join(agent.state, CHILDREN_DIR), nss, agent.pool.size);
  appendErrors(errors, runtime.errors);
  const admitted = admitRuntimeChildren(loaded.defs, runtime.defs, errors, runtimeNotices);
  const defs = admitted.length > 0 ? linkContexts([...loaded.defs, ...admitted], errors).defs : loaded.defs;

  // Who is in force already: the agent's own picture, else what it recorded (check-config, a restart).
  let inForce: ReadonlyMap<string, Context> = opts.inForce ?? new Map();
  let recorded: Configuration['recorded'] = null;
  if (!opts.inForce) {
    try {
      const r = readInForceRecord(agent.state);
      inForce = r.contexts;
      if (r.generation !== null) recorded = { contexts: r.contexts, generation: r.generation, journal: r.journalLines };
    } catch (err) {
      const e = agentError(err);
      if (!e) throw err;
      // check-config run by a user who may not read the agent's state: it judges by the files alone.
      const unreadable = err instanceof Fault && err.errno === 'EACCES';
      if (opts.record || !unreadable) errors.push(configError(join(agent.state, IN_FORCE_FILE), null, null, null, e.message));
    }
  }

  // Who decides the auto ranges: this host (hash first, next free, recorded before use) or the
  // shared pool, whose decisions ranges.json holds; what it has not decided yet waits.
  const pinned = pinnedMaps(agent.pins);
  const pool =
    agent.coordinator === 'etcd'
      ? { fresh: new Map<string, Allocation>(), statics: staticClaims(defs), ...fromSharedPool(agent, defs, opts.refused ?? new Map(), errors) }
      : { pending: [], waiting: [], statics: [], coordinated: defs, ...fromLocalPool(agent, defs, inForce, pinned, opts, errors) };
  const { starts, fresh, kept, pending, waiting, statics, coordinated } = pool;
  // A context the shared pool refuses is not kept at a last good version: that version is what it refuses.
  if (opts.refused?.size) inForce = new Map([...inForce].filter(([label]) => !opts.refused!.has(label)));
  const delegations = readDelegations(agent, nss, errors);
  const {
    contexts,
    byLabel,
    hostMaps,
    kept: keptContexts,
    notices,
    delta,
  } = finishContexts(
    coordinated,
    starts,
    errors,
    { inForce, allocations: new Map([...kept, ...fresh]), pinned, pinParent: pinParentOf(agent.pins, pinned), delegations, fromRecord: !opts.inForce },
    opts.judgement,
  );
  // What is in force and the same as its record is, for the record too, the object made from its
  // file (see Prior.fromRecord): nothing to write for it, and the record's copy is garbage.
  if (recorded) recorded = { ...recorded, contexts: sameAsRecorded(recorded.contexts, contexts) };
  const allocations = new Map<string, Allocation>();
  for (const c of contexts) if (c.autoSize !== null) allocations.set(c.label, { start: c.uidMap[0].outside, size: allocationSize(c)! });
  // A static context kept at its last good version (its file broken) holds its ids here as before:
  // the shared pool is told so, as for a healthy file, or a forget of it would free them for good.
  const keptStatics = agent.coordinator === 'etcd' ? keptClaims(keptContexts, contexts, hostMaps, statics) : [];
  return {
    agent,
    contexts: byLabel,
    delta,
    hostMaps,
    allocations,
    unrecorded: opts.record ? new Map() : fresh,
    kept: keptContexts,
    errors,
    notices: [...runtimeNotices, ...notices],
    pending,
    statics: keptStatics.length > 0 ? [...statics, ...keptStatics] : statics,
    waiting,
    requests:
      agent.coordinator === 'etcd' ? defs.filter((d) => d.autoSize !== null).map((d) => ({ label: d.label, size: allocationSize(d)!, file: d.file })) : [],
    recorded,
  };
}

/**
 * Where a pin's namespace lies, as the kernel says (NS_GET_PARENT): the label whose pin is its
 * parent namespace, HOST_LABEL for the agent's own, null for any other (judge.ts Prior.pinParent).
 * Asked of orphans only: the other pins' inodes are looked at once, at the first question.
 */
function pinParentOf(pinsDir: string, pinned: ReadonlyMap<string, unknown>): (label: string) => string | null {
  let byIno: Map<number, string> | undefined;
  return (label) => {
    const ino = parentNsIno(join(pinsDir, label));
    if (ino === null) return null;
    if (ino === ownUserns()) return HOST_LABEL;
    if (byIno === undefined) {
      byIno = new Map();
      for (const other of pinned.keys()) {
        const at = pinnedIno(join(pinsDir, other));
        if (at !== null) byIno.set(at, other);
      }
    }
    return byIno.get(ino) ?? null;
  };
}

/** The agent's own user namespace, where top-level pins are made (its nsfs inode), looked at once when first asked. */
let ownUsernsIno: number | undefined;
const ownUserns = () => (ownUsernsIno ??= statSync('/proc/self/ns/user').ino);

/** The pins as the allocator weighs them (assignRanges): their maps from their records, top-level as the kernel says. */
function pinnedIds(pinsDir: string, pinned: ReadonlyMap<string, { uidMap: IdMap; gidMap: IdMap } | null>): PinnedIds[] {
  const out: PinnedIds[] = [];
  for (const [label, maps] of pinned) {
    if (!maps) continue;
    const topLevel = () => parentNsIno(join(pinsDir, label)) === ownUserns();
    out.push({ label, ids: outsideIntervals([...maps.uidMap, ...maps.gidMap]), topLevel });
  }
  return out;
}

/**
 * coordinator = local: every auto context gets its recorded start, or a fresh one that avoids the
 * static ranges, the system's ids, every other allocation and the ids of pinned namespaces,
 * recorded (when the agent loads) before anything uses it. A record that cannot be read allocates nothing: an error each.
 */
function fromLocalPool(
  agent: AgentConfig,
  defs: readonly ContextDef[],
  inForce: ReadonlyMap<string, Context>,
  pinned: ReadonlyMap<string, { uidMap: IdMap; gidMap: IdMap } | null>,
  opts: LoadOptions,
  errors: ConfigError[],
) {
  try {
    // Recorded allocations are read even without an auto context: a static range must not take one.
    // (Unreadable, for check-config run by a user: without auto contexts, nothing below says so.)
    const recorded = readAllocations(agent.state);
    if (!defs.some((d) => d.autoSize !== null)) return { starts: new Map<string, number>(), fresh: new Map<string, Allocation>(), kept: recorded };
    // The static ranges every file asks for, accepted or not (auto contexts and their children are
    // left out), and those of the contexts in force whose files are broken now: finishContexts keeps
    // them at their last good version, so their ids are not free either.
    const system = (opts.systemIds ?? systemIds)(agent);
    const reserved: Interval[] = [...system];
    for (const h of staticHostMaps([...defs, ...keptCandidates(defs, inForce, errors)]).values()) reserved.push(...outsideIntervals([...h.uid, ...h.gid]));
    const r = assignRanges(defs, agent.pool, recorded, reserved, errors, system, pinnedIds(agent.pins, pinned));
    if (opts.record && r.fresh.size > 0) {
      ensureStateDir(agent.state);
      writeAllocations(agent.state, new Map([...recorded, ...r.fresh]));
    }
    return r;
  } catch (err) {
    const e = agentError(err);
    if (!e) throw err;
    for (const d of defs) if (d.autoSize !== null) errors.push(configError(d.file, 'context', 'range', null, e.message));
    return { starts: new Map<string, number>(), fresh: new Map<string, Allocation>(), kept: new Map<string, Allocation>() };
  }
}

/** coordinator = etcd: this host's top-level static ranges, refused ones too (the pool says again whether they still conflict). */
/** The record's contexts, each one the same as a context in force replaced by that one. */
function sameAsRecorded(record: ReadonlyMap<string, Context>, contexts: readonly Context[]): Map<string, Context> {
  const out = new Map(record);
  for (const c of contexts) {
    const r = out.get(c.label);
    if (r !== undefined && r !== c && sameRecorded(r, c)) out.set(c.label, c);
  }
  return out;
}

/** The claims of the top-level static contexts kept at their last good version that `statics` lacks. */
function keptClaims(
  kept: readonly string[],
  contexts: readonly Context[],
  hostMaps: ReadonlyMap<string, HostMaps>,
  statics: readonly StaticClaim[],
): StaticClaim[] {
  if (kept.length === 0) return [];
  const claimed = new Set(statics.map((s) => s.label));
  const byLabel = new Map(contexts.map((c) => [c.label, c]));
  const out: StaticClaim[] = [];
  for (const label of kept) {
    const c = byLabel.get(label);
    const h = hostMaps.get(label);
    if (!c || !h || c.parent !== HOST_LABEL || c.autoSize !== null || claimed.has(label)) continue;
    out.push(claimOf(label, h));
  }
  return out;
}

/** What a static context claims in the shared pool: every host id its maps use. */
const claimOf = (label: string, h: HostMaps): StaticClaim => ({ label, intervals: mergeIntervals(outsideIntervals([...h.uid, ...h.gid])) });

function staticClaims(defs: readonly ContextDef[]): StaticClaim[] {
  const out: StaticClaim[] = [];
  const top = new Set(defs.filter((d) => d.parent === HOST_LABEL).map((d) => d.label));
  for (const [label, h] of finishContexts(
    defs.filter((d) => d.autoSize === null),
    new Map(),
    [],
  ).hostMaps) {
    if (!top.has(label)) continue;
    out.push(claimOf(label, h));
  }
  return out;
}

/**
 * coordinator = etcd: the starts the shared pool has decided (cached in ranges.json), the auto
 * contexts still waiting for it, and the definitions that go on to the cross-file checks — without
 * the waiting ones and their descendants, and without what the pool refused (an error each).
 */
function fromSharedPool(agent: AgentConfig, defs: readonly ContextDef[], refused: ReadonlyMap<string, string>, errors: ConfigError[]) {
  const starts = new Map<string, number>();
  const pending: PendingRange[] = [];
  let kept = new Map<string, Allocation>();
  try {
    kept = readAllocations(agent.state);
  } catch (err) {
    const e = agentError(err);
    if (!e) throw err;
    errors.push(configError(join(agent.state, 'ranges.json'), null, null, null, e.message));
  }
  const out = new Set<string>();
  for (const d of defs) {
    const why = refused.get(d.label);
    if (why) {
      errors.push(configError(d.file, 'context', d.autoSize !== null ? 'range' : null, null, `refused by the shared pool: ${why}`));
      out.add(d.label);
    }
    if (d.autoSize === null) continue;
    const a = kept.get(d.label);
    if (!why && a && a.size === allocationSize(d)) starts.set(d.label, a.start);
    else {
      // Asked again at every settle, refused ones too, so a conflict resolved elsewhere clears.
      pending.push({ label: d.label, size: allocationSize(d)!, file: d.file });
      out.add(d.label);
    }
  }
  // Children wait with their parent.
  const gone = new Set(out);
  for (let grew = true; grew;) {
    grew = false;
    for (const d of defs)
      if (!gone.has(d.label) && gone.has(d.parent)) {
        gone.add(d.label);
        grew = true;
      }
  }
  const waiting = [...gone].filter((l) => !refused.has(l));
  return { starts, kept, pending, waiting, coordinated: defs.filter((d) => !gone.has(d.label)) };
}

/**
 * Who was given which host ids (SPEC §12), as newuidmap(1) reads them: each user's own uid and
 * gid, and its lines in the subordinate id files ("name-or-uid:start:count"). A file anyone but root
 * may write delegates nothing (sshd's StrictModes): an error says so, and owners keep their own ids.
 */
export function readDelegations(agent: Pick<AgentConfig, 'subuid' | 'subgid'>, nss: Nss, errors: ConfigError[]): Delegations {
  const read = (file: string): { owner: string; start: number; end: number }[] => {
    let text: string;
    try {
      const st = statSync(file);
      if (st.uid !== 0 || (st.mode & 0o022) !== 0) {
        errors.push(
          configError(
            file,
            null,
            null,
            null,
            `delegates nothing: it must be owned by root and not writable by group or others (chown root ${file}; chmod go-w ${file})`,
          ),
        );
        return [];
      }
      text = readFileSync(file, 'utf8');
    } catch {
      return []; // absent: nothing delegated
    }
    return parseSubIdOwners(text);
  };
  const sub = { uid: read(agent.subuid), gid: read(agent.subgid) };
  const mine = (lines: typeof sub.uid, owner: { uid: number; name: string | null }) =>
    lines.filter((l) => l.owner === owner.name || l.owner === String(owner.uid)).map((l) => ({ start: l.start, end: l.end }));
  // Once per owner per load: thousands of contexts of one owner must not scan the files thousands of times.
  const memo = new Map<string, ReturnType<Delegations['of']>>();
  return {
    of: (owner) => {
      const key = `${owner.uid}:${owner.gid}`;
      const known = memo.get(key);
      if (known) return known;
      const name = owner.name ?? nss.userById(owner.uid)?.name ?? null;
      const who = { uid: owner.uid, name };
      const given = {
        uid: [{ start: owner.uid, end: owner.uid + 1 }, ...mine(sub.uid, who)],
        gid: [{ start: owner.gid, end: owner.gid + 1 }, ...mine(sub.gid, who)],
      };
      memo.set(key, given);
      return given;
    },
    whose: (kind, id) => (kind === 'uid' ? nss.userById(id)?.name : null) ?? null,
  };
}

/**
 * One context made from inside (SPEC §14), judged as a reload would judge its record, without
 * reading or judging anything else: its file text parsed by the same parser, then the cross-file
 * rules over what can bear on it (its ancestors, which are in force, and its siblings, whose ids it
 * must not share). The contexts in force stay as they are: files edited since the last reload wait
 * for the next one. Returns the context and its host maps, or the errors that refuse it.
 */
export function judgeRuntimeChild(
  agent: AgentConfig,
  inForce: ReadonlyMap<string, Context>,
  file: string,
  text: string,
  nss: Nss = systemNss(),
): { context: Context; host: HostMaps } | { errors: ConfigError[] } {
  const parsed = parseContextFile(file, text, nss, agent.pool.size);
  if (!parsed.def) return { errors: parsed.errors };
  const def: ContextDef = { ...parsed.def, runtime: true };
  const given = runtimeDelegateProblem(def, inForce.get(def.parent));
  if (given) return { errors: [configError(file, 'delegate', given[0] === 'delegate' ? null : given[0], null, given[1])] };
  const chain: Context[] = [];
  for (let p = inForce.get(def.parent); p && chain.length < 64; p = inForce.get(p.parent)) chain.unshift(p);
  // Only siblings whose ids meet its own can clash with it (the rest would only be judged again).
  const meets = (a: IdMap, b: IdMap) => a.some((x) => b.some((y) => x.outside < y.outside + y.count && y.outside < x.outside + x.count));
  const siblings = [...inForce.values()].filter(
    (c) => c.parent === def.parent && c.label !== def.label && (meets(c.uidMap, def.uidMap ?? []) || meets(c.gidMap, def.gidMap ?? [])),
  );
  const errors: ConfigError[] = [];
  const judged = [...chain, ...siblings];
  const r = finishContexts([...judged, def], new Map(), errors, {
    inForce: new Map(judged.map((c) => [c.label, c])),
    allocations: new Map(),
    delegations: readDelegations(agent, nss, errors),
  });
  const context = r.contexts.find((c) => c.label === def.label);
  const host = r.hostMaps.get(def.label);
  return context && host ? { context, host } : { errors: errors.filter((e) => e.file === file) };
}

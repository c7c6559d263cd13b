// The judgement across files: once every context has maps (static or allocated), which contexts are
// admitted, in what order, with what they claim of their parent's ids and of the host's resources.
import { isDeepStrictEqual } from 'node:util';
import { composeMaps, formatInterval, sameMap, uncovered } from './extents.ts';
import type { Interval } from './extents.ts';
import { DisjointIntervals } from './intervals.ts';
import { configError } from './ini.ts';
import { lineIn } from './load.ts';
import { HOST_LABEL } from './types.ts';
import type { ConfigError, Context, ContextDef, Delegation, IdMap, Owner } from './types.ts';

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

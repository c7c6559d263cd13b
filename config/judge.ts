// The judgement across files: once every context has maps (static or allocated), which contexts are
// admitted, in what order, with what they claim of their parent's ids and of the host's resources.
import { isDeepStrictEqual } from 'node:util';
import { composeMaps, formatInterval, sameMap, uncovered } from './extents.ts';
import type { Interval } from './extents.ts';
import { DisjointIntervals } from './intervals.ts';
import { configError } from './ini.ts';
import { LayeredMap } from './layered.ts';
import { lineIn } from './load.ts';
import { HOST_LABEL } from './types.ts';
import type { ConfigError, Context, ContextDef, Delegation, IdMap, Owner } from './types.ts';

/** Ids of one kind a context reaches in the initial namespace, through its parent chain. */
export type HostMaps = { readonly uid: IdMap; readonly gid: IdMap };

/** The host maps of `label`'s context: a top-level one's own maps, else a nested one's kept in `nested`. */
function hostMapsIn(contexts: ReadonlyMap<string, Context>, nested: ReadonlyMap<string, HostMaps>, label: string): HostMaps | undefined {
  const c = contexts.get(label);
  return c !== undefined && c.parent === HOST_LABEL ? { uid: c.uidMap, gid: c.gidMap } : nested.get(label);
}

/**
 * The host maps of contexts, by label: a top-level context's are its own maps (given when asked), a
 * nested one's are composed through its parents and kept in `nested`. So only the nested ones are a
 * map of their own, which a reload that changes something copies (own()), and not an entry for each
 * context: with 65,535 top-level contexts that copy was about 20 ms of a reload that changes maps,
 * and the entries 5 MB of the live heap. Iterated in the contexts' order (parents first).
 */
export class HostMapsOf implements ReadonlyMap<string, HostMaps> {
  private readonly contexts: ReadonlyMap<string, Context>;
  readonly nested: ReadonlyMap<string, HostMaps>;

  constructor(contexts: ReadonlyMap<string, Context>, nested: ReadonlyMap<string, HostMaps>) {
    this.contexts = contexts;
    this.nested = nested;
  }

  /**
   * `base` with what `change` does to its nested entries, over `contexts` (a context made or
   * forgotten from inside): a copy of the nested ones only. A plain map (a configuration made by
   * hand) is copied whole, as before.
   */
  static changed(
    base: ReadonlyMap<string, HostMaps>,
    contexts: ReadonlyMap<string, Context>,
    change: (m: Map<string, HostMaps>) => void,
  ): ReadonlyMap<string, HostMaps> {
    const m = LayeredMap.copyOf(base instanceof HostMapsOf ? base.nested : base);
    change(m);
    return base instanceof HostMapsOf ? new HostMapsOf(contexts, m) : m;
  }

  get(label: string): HostMaps | undefined {
    return hostMapsIn(this.contexts, this.nested, label);
  }

  has(label: string): boolean {
    const c = this.contexts.get(label);
    return c !== undefined && (c.parent === HOST_LABEL || this.nested.has(label));
  }

  get size(): number {
    let n = 0;
    for (const label of this.contexts.keys()) if (this.has(label)) n++;
    return n;
  }

  *entries(): MapIterator<[string, HostMaps]> {
    for (const label of this.contexts.keys()) {
      const h = this.get(label);
      if (h !== undefined) yield [label, h];
    }
  }

  *keys(): MapIterator<string> {
    for (const [label] of this.entries()) yield label;
  }

  *values(): MapIterator<HostMaps> {
    for (const [, h] of this.entries()) yield h;
  }

  [Symbol.iterator](): MapIterator<[string, HostMaps]> {
    return this.entries();
  }

  forEach(fn: (value: HostMaps, key: string, map: ReadonlyMap<string, HostMaps>) => void): void {
    for (const [label, h] of this.entries()) fn(h, label, this);
  }
}

/**
 * Ids taken: by a context admitted in this load, by a range = auto allocation (its label's alone), or
 * by the pin of a context in force whose ids changed (still in use until it is released).
 */
type Claim = { readonly start: number; readonly end: number; readonly label: string; readonly by: 'context' | 'allocation' | 'pin' };

/** The claims on one parent's ids of one kind: disjoint, each with who made it. */
class Claims extends DisjointIntervals<Claim> {
  /**
   * The claim made last, on either side: a context's gid map is most often its uid map, and the gid
   * side then holds the very claim the uid side does (claims are never changed, and each side takes
   * out only its own), not a copy: about 100 bytes of each of 65,535 contexts.
   */
  private static last: Claim | null = null;

  /** Claim for `label` what of [start, end) no claim covers yet. */
  gaps(start: number, end: number, label: string, by: Claim['by'] = 'context'): void {
    let at = start;
    for (const c of this.overlapping(start, end)) {
      if (c.start > at) this.add(Claims.claim(at, c.start, label, by));
      at = Math.max(at, c.end);
    }
    if (at < end) this.add(Claims.claim(at, end, label, by));
  }

  private static claim(start: number, end: number, label: string, by: Claim['by']): Claim {
    const l = Claims.last;
    if (l !== null && l.start === start && l.end === end && l.label === label && l.by === by) return l;
    return (Claims.last = { start, end, label, by });
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
  /**
   * Where the namespace of a pin without a context lies: the label whose pinned namespace is its
   * parent (HOST_LABEL: the agent's own), or null when none pinned is. Asked only of orphans (pins
   * of files gone while the agent was down), whose ids stay claimed there until root releases them.
   */
  readonly pinParent?: (label: string) => string | null;
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
  return sameInEffect(a, b) && (a.lines === undefined || b.lines === undefined || isDeepStrictEqual(a.lines, b.lines));
}

/**
 * sameRecorded but for `lines`: what the context does, whatever line its keys are written on. A
 * comment or a blank line added above them changes the one and not the other (a reload's diff
 * does not call such a context changed).
 */
export function sameInEffect(a: Context, b: Context): boolean {
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
    (a.runtime ?? false) === (b.runtime ?? false)
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
  // Decided in the file (static maps, setgroups written or left to a default the file decides): the
  // definition is the context, not a copy of it (128 bytes of each of 65,535 contexts). When nothing
  // else is in force under its label, that is all: nothing to remember it by (a first start of
  // 65,535 contexts made as many entries in the weak map, about 20 ms with their collection).
  const itself = d.setgroups === setgroups && d.uidMap === uidMap && d.gidMap === gidMap;
  if (itself && (inForce === undefined || inForce === d)) return d as Context;
  const last = acceptedAs.get(d);
  if (last && last.setgroups === setgroups && sameExtents(last.uidMap, uidMap) && sameExtents(last.gidMap, gidMap)) return last;
  let c: Context = itself ? (d as Context) : { ...d, uidMap, gidMap, setgroups };
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
  for (const d of kept) byLabel.set(d.label, d);
  for (const d of defs) byLabel.set(d.label, d);
  const keptSet = kept.length > 0 ? new Set<ContextDef>(kept) : null;
  /** Whether `d` itself keeps the ids it has in force (its ancestors aside). */
  const keeps = (d: ContextDef): boolean => {
    if (keptSet?.has(d)) return true;
    const old = prior.inForce.get(d.label);
    if (old === undefined) return false;
    // The very context this static definition was accepted as (an unchanged file): the same ids.
    if (d.uidMap !== null && (old === d || acceptedAs.get(d) === old)) return true;
    const maps = mapsOf(d, allocated);
    return maps !== null && sameIds(old, { parent: d.parent, ...maps });
  };
  // Parents-first across both lists (a kept context's parent may be a fresh definition), each
  // senior when it and every ancestor keep their ids: a parent is placed, and judged, first. A
  // cycle is never senior (linkContexts has refused it anyway).
  const senior = new Map<string, boolean>();
  const seniors: { def: ContextDef; senior: boolean }[] = [];
  const juniors: { def: ContextDef; senior: boolean }[] = [];
  const place = (d: ContextDef, depth: number): void => {
    if (senior.has(d.label) || depth > 64) return;
    const parent = byLabel.get(d.parent);
    if (parent && parent !== d) place(parent, depth + 1);
    const v = (d.parent === HOST_LABEL || (parent !== undefined && senior.get(parent.label) === true)) && keeps(d);
    senior.set(d.label, v);
    (v ? seniors : juniors).push({ def: d, senior: v });
  };
  for (const d of byLabel.values()) place(d, 0);
  return [...seniors, ...juniors];
}

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
  if (errors.length === 0) return [];
  const broken = new Set(errors.map((e) => e.file));
  const candidates: Context[] = [];
  for (const c of inForce.values()) if (broken.has(c.file)) candidates.push(c);
  if (candidates.length === 0) return [];
  const labels = new Set(defs.map((d) => d.label));
  return candidates.filter((c) => !labels.has(c.label));
}

/** What a judgement decides. */
export type Judged = {
  /** Accepted, parents before children; and the same by label. */
  contexts: Context[];
  byLabel: ReadonlyMap<string, Context>;
  hostMaps: ReadonlyMap<string, HostMaps>;
  kept: string[];
  notices: ConfigError[];
  /** How byLabel differs from the map the same Judgement handed out last: null when not known (see ContextsDelta). */
  delta: ContextsDelta | null;
};

/**
 * What changed between two maps of contexts by label, as the judgement that made `to` from `from`
 * knows it: every label whose entry may differ (set, replaced, removed) is in `labels`, in the order
 * it was judged (parents first); every other label holds the very same object in both. A reload that
 * changes one context of 65,535 then costs its readers (the registry's diff, the record, who counts
 * as whom) what changed, not a look at every entry.
 */
export type ContextsDelta = {
  readonly from: ReadonlyMap<string, Context>;
  readonly to: ReadonlyMap<string, Context>;
  readonly labels: ReadonlySet<string>;
};

type Sides = { readonly uid: Claims; readonly gid: Claims };
type Maps = { readonly uidMap: IdMap; readonly gidMap: IdMap };

/**
 * A judgement's state: what it admitted and what that claims, and of every item judged (a
 * definition, or a context in force kept at its last good version) what bears on the others. A
 * Judgement keeps it, so that the next judgement (a reload's) takes out what changed and judges
 * only that again.
 */
type State = {
  readonly items: Map<string, ContextDef>;
  /** Labels whose item is a context in force kept at its last good version (its file is broken). */
  readonly keptItems: Set<string>;
  /** Accepted, parents before children; by label, as hostMaps. Handed out as they are: see own(). */
  accepted: Map<string, Context>;
  /** The accepted ones of keptItems. */
  readonly kept: Set<string>;
  /** The host maps of the accepted contexts nested in another (a top-level one's are its maps: HostMapsOf). */
  hostMaps: Map<string, HostMaps>;
  /** Whether accepted and hostMaps were handed out (a judgement's outcome): changed only as copies then. */
  shared: boolean;
  /** Once own() copied the map handed out: that map, and the labels set or removed in the copy since. */
  from: ReadonlyMap<string, Context> | null;
  touched: Set<string> | null;
  /** Each parent's claims on its ids, the host's included. */
  readonly claims: Map<string, Sides>;
  given: Given[];
  readonly held: OwnerHeld;
  /** What the judgement said of each item, in the order it judged them. */
  readonly errorsOf: Map<string, ConfigError[]>;
  readonly noticesOf: Map<string, ConfigError[]>;
  /** Labels of the items not accepted, for whatever reason. */
  readonly rejected: Set<string>;
  /** Items refused whose maps were known: what their errors say depends on their siblings' ids. */
  readonly refused: Map<string, Maps & { readonly parent: string }>;
  /** Item labels by their parent's label (not the host's: its children are never judged again as such). */
  readonly children: Map<string, Set<string>>;
  /** Labels of the items with a [delegate] whose owner is not root, by owner uid: what owner limits count. */
  readonly delegators: Map<number, Set<string>>;
  /** The pins that claim ids their context no longer has, by label, under the parent they were claimed in. */
  readonly pinClaims: Map<string, PinClaim>;
  /** Every owner whose delegation a judgement asked for, and what it was. */
  readonly asked: Map<string, { readonly owner: Owner; readonly given: ReturnType<Delegations['of']> }>;
  allocated: ReadonlyMap<string, number>;
  allocations: Prior['allocations'];
  /** During a partial judgement: the labels accepted at the end of `accepted` (not in their old place). */
  moved: Set<string> | null;
  /**
   * The definitions and kept contexts judged, as they were given: each is `items`' entry for its
   * label (their labels are unique: linkContexts, keptCandidates), so the next judgement finds the
   * very object at the same place without a lookup by label.
   */
  judgedDefs: readonly ContextDef[];
  judgedKept: readonly Context[];
};

function newState(allocated: ReadonlyMap<string, number>, allocations: Prior['allocations']): State {
  return {
    judgedDefs: [],
    judgedKept: [],
    items: new Map(),
    keptItems: new Set(),
    accepted: new Map(),
    kept: new Set(),
    hostMaps: new Map(),
    shared: false,
    from: null,
    touched: null,
    claims: new Map(),
    given: [],
    held: new Map(),
    errorsOf: new Map(),
    noticesOf: new Map(),
    rejected: new Set(),
    refused: new Map(),
    children: new Map(),
    delegators: new Map(),
    pinClaims: new Map(),
    asked: new Map(),
    allocated,
    allocations,
    moved: null,
  };
}

/** The state's maps of accepted contexts and host maps, its own to change: copies, once they were handed out. */
function own(st: State): State {
  if (st.shared) {
    st.from = st.accepted;
    st.touched = new Set();
    // Layered over what was handed out: a reload that changes one context of 65,535 does not copy them all.
    st.accepted = LayeredMap.copyOf(st.accepted);
    st.hostMaps = LayeredMap.copyOf(st.hostMaps);
    st.shared = false;
  }
  return st;
}

/** The only ways accepted and hostMaps change (each through own). */
function setAccepted(st: State, label: string, c: Context): void {
  own(st).accepted.set(label, c);
  st.touched?.add(label);
}
function setHost(st: State, label: string, h: HostMaps): void {
  own(st).hostMaps.set(label, h);
}
function unaccept(st: State, label: string, host = true): void {
  if (!st.accepted.has(label) && !(host && st.hostMaps.has(label))) return;
  own(st).accepted.delete(label);
  st.touched?.add(label);
  if (host) st.hostMaps.delete(label);
}

function addTo<K>(m: Map<K, Set<string>>, key: K, label: string): void {
  const s = m.get(key);
  if (s) s.add(label);
  else m.set(key, new Set([label]));
}

function sidesOf(st: State, parent: string): Sides {
  let s = st.claims.get(parent);
  if (!s) st.claims.set(parent, (s = { uid: new Claims(), gid: new Claims() }));
  return s;
}

/** What stays the same over one judgement: its inputs, and the delegations as it asks for them (each recorded in the state). */
type Judging = {
  readonly allocated: ReadonlyMap<string, number>;
  readonly inForce: ReadonlyMap<string, Context>;
  readonly fromRecord: boolean;
  readonly delegationsOf: (owner: Owner) => ReturnType<Delegations['of']>;
  readonly whose: Delegations['whose'];
};

function judging(st: State, allocated: ReadonlyMap<string, number>, prior: Prior): Judging {
  const delegations = prior.delegations ?? OWN_IDS_ONLY;
  return {
    allocated,
    inForce: prior.inForce,
    fromRecord: prior.fromRecord === true,
    delegationsOf: (owner) => {
      const given = delegations.of(owner);
      st.asked.set(`${owner.uid}:${owner.gid}:${owner.name ?? ''}`, { owner, given });
      return given;
    },
    whose: delegations.whose,
  };
}

/** The allocations' claims, each for its label alone (a static range never lands on one). */
function claimAllocations(st: State, allocations: Iterable<readonly [string, { readonly start: number; readonly size: number }]>): void {
  const host = sidesOf(st, HOST_LABEL);
  for (const [label, a] of [...allocations].sort((x, y) => x[1].start - y[1].start)) {
    const claim: Claim = { start: a.start, end: a.start + a.size, label, by: 'allocation' };
    if (host.uid.overlaps(claim.start, claim.end)) continue; // never, for the allocator's own output
    host.uid.add(claim);
    host.gid.add(claim);
  }
}

/** The ids a pin holds in its parent's, claimed for it alone; `orphan`: its context is gone (else: in drift). */
type PinClaim = Maps & { readonly parent: string; readonly orphan?: true };

/**
 * A pinned context whose ids change keeps its namespace, with the old ids, until root releases it
 * (it is in drift): nobody else may take those ids meanwhile. So does the pin of a context whose
 * file went while the agent was down (an orphan: a start leaves it to root), found without a
 * context at a start, or at a reload when it was not in force: nobody may take its ids either. The
 * pin of a context this reload removes is released once the reload is done, and claims nothing.
 * Null: its pin claims nothing (or its maps are not known: it is checked at adoption).
 */
function pinClaimOf(
  label: string,
  now: ContextDef | undefined,
  held: Maps | null | undefined,
  allocated: ReadonlyMap<string, number>,
  prior: Prior,
): PinClaim | null {
  if (!held) return null;
  if (!now) {
    const orphan = prior.fromRecord === true || !prior.inForce.has(label);
    const parent = orphan ? (prior.pinParent?.(label) ?? null) : null;
    return parent === null ? null : { parent, uidMap: held.uidMap, gidMap: held.gidMap, orphan: true };
  }
  const nowMaps = mapsOf(now, allocated);
  if (nowMaps && sameMap(nowMaps.uidMap, held.uidMap) && sameMap(nowMaps.gidMap, held.gidMap)) return null;
  return { parent: now.parent, uidMap: held.uidMap, gidMap: held.gidMap };
}

function claimPin(st: State, label: string, pin: PinClaim): void {
  const siblings = sidesOf(st, pin.parent);
  for (const e of pin.uidMap) siblings.uid.gaps(e.outside, e.outside + e.count, label, 'pin');
  for (const e of pin.gidMap) siblings.gid.gaps(e.outside, e.outside + e.count, label, 'pin');
  st.pinClaims.set(label, pin);
}

/** One item judged against what is accepted and claimed so far; what it is said and what it claims are kept in the state. */
function judgeOne(st: State, d: ContextDef, kept: boolean, j: Judging): void {
  st.items.set(d.label, d);
  if (kept) st.keptItems.add(d.label);
  if (d.parent !== HOST_LABEL) addTo(st.children, d.parent, d.label);
  if (d.delegate && d.owner.uid !== 0) addTo(st.delegators, d.owner.uid, d.label);
  const errors: ConfigError[] = [];
  const notices: ConfigError[] = [];
  const maps = mapsOf(d, j.allocated); // null: the allocator has said why
  let ok = false;
  if (d.parent !== HOST_LABEL && !st.accepted.has(d.parent))
    errors.push(configError(d.file, 'context', 'parent', lineIn(d, 'parent'), `parent "${d.parent}" is not valid, so neither is this context`));
  else if (maps) ok = admit(st, d, maps, j, errors, notices);
  if (ok && kept) st.kept.add(d.label);
  if (ok) st.rejected.delete(d.label);
  else {
    st.rejected.add(d.label);
    // Accepted last time (a partial judgement), not now.
    unaccept(st, d.label);
  }
  if (maps && !ok) st.refused.set(d.label, { parent: d.parent, ...maps });
  if (errors.length > 0) st.errorsOf.set(d.label, errors);
  if (notices.length > 0) st.noticesOf.set(d.label, notices);
}

/** The checks of one item whose maps are known; accepted (true) with its claims, its resources and its owner's count, or refused with `errors`. */
function admit(st: State, d: ContextDef, mapped: Maps, j: Judging, errors: ConfigError[], notices: ConfigError[]): boolean {
  const { uidMap, gidMap } = mapped;
  const maps = [
    ['uid', 'uid_map', uidMap],
    ['gid', 'gid_map', gidMap],
  ] as const;
  const parent = st.accepted.get(d.parent);
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
  const parentHost = parent ? hostMapsIn(st.accepted, st.hostMaps, d.parent)! : null;
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
  if (d.owner.uid !== 0 && d.autoSize === null && !ownedAncestor(st, d)) {
    const given = j.delegationsOf(d.owner);
    for (const [kind, key] of maps) {
      const g = kind === 'uid' ? given.uid : given.gid;
      const gaps = (kind === 'uid' ? host.uid : host.gid).flatMap((e) => notGiven(g, e.outside, e.outside + e.count));
      if (gaps.length === 0) continue;
      const { what, advice } = beyondDelegation(d, kind, gaps, g, j.whose);
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
  const siblings = sidesOf(st, d.parent);
  for (const [kind, key, map] of maps) {
    for (const e of map) {
      // Its own allocation or old pin is no clash; anything else overlapping is.
      const c = siblings[kind].overlapping(e.outside, e.outside + e.count).find((x) => !(x.label === d.label && x.by !== 'context'));
      if (!c) continue;
      const o = c.by !== 'pin' ? st.accepted.get(c.label) : undefined;
      const ids = formatInterval({ start: Math.max(c.start, e.outside), end: Math.min(c.end, e.outside + e.count) });
      const whose = d.parent === HOST_LABEL ? 'host' : `parent "${d.parent}"`;
      const by = o
        ? `context "${o.label}" (${o.file})`
        : c.by === 'pin'
          ? st.pinClaims.get(c.label)?.orphan
            ? `the pinned namespace of "${c.label}", whose file is gone (an orphan: release it first, usernsctl release ${c.label}, once nothing runs in it)`
            : `the pinned namespace of "${c.label}", whose ids changed (release it first: usernsctl release ${c.label})`
          : `the range allocated to "${c.label}" (range = auto, recorded in the state directory's ranges.json; it stays reserved for that label)`;
      problems.push([key, `${whose} ${kind}s ${ids} are already used by ${by}: give one of them other ids`]);
      break;
    }
  }
  // SPEC §13: what one context is given, no other context names (nor a directory inside it).
  const clashes = delegationClashes(d, st.given);
  // And an owner's contexts together hold at most what nsresourced gives one namespace.
  const over = ownerLimitProblem(d, st.held);
  if (over) clashes.push(over);
  for (const [key, message] of clashes)
    errors.push(configError(d.file, 'delegate', key, d.lines?.[`delegate.${key}`] ?? d.lines?.['delegate.'] ?? null, message));
  if (problems.length > 0 || clashes.length > 0) {
    for (const [key, message] of problems) errors.push(configError(d.file, 'context', key, lineIn(d, key), message));
    return false;
  }
  for (const [kind, item] of delegatedItems(d)) st.given.push({ kind, item, label: d.label });
  holdFor(st.held, d);
  // Only what is not claimed already (its own allocation, or its own old pin), so the list stays disjoint.
  for (const [kind, , map] of maps) for (const e of map) siblings[kind].gaps(e.outside, e.outside + e.count, d.label);
  // What is as it was stays the very object (a reload that changed nothing here hands out the same maps).
  // A top-level context's are its own maps, not kept (HostMapsOf).
  if (d.parent === HOST_LABEL) {
    if (st.hostMaps.has(d.label)) own(st).hostMaps.delete(d.label); // nested before
  } else {
    const was = st.hostMaps.get(d.label);
    if (!was || !sameMap(was.uid, host.uid) || !sameMap(was.gid, host.gid)) setHost(st, d.label, host);
  }
  placeFor(st, d);
  const context = contextOf(d, uidMap, gidMap, setgroups, j.inForce.get(d.label), j.fromRecord);
  if (st.accepted.get(d.label) !== context) setAccepted(st, d.label, context);
  return true;
}

/**
 * A context accepted again (a partial judgement) keeps its place among the accepted, unless its
 * parent is not before it now (another parent, or one that went last): then it goes last, after it.
 */
function placeFor(st: State, d: ContextDef): void {
  const was = st.accepted.get(d.label);
  if (was === undefined) st.moved?.add(d.label);
  else if (d.parent !== HOST_LABEL && (was.parent !== d.parent || st.moved?.has(d.parent))) {
    unaccept(st, d.label, false); // its host maps stay (admit set them already)
    st.moved?.add(d.label);
  }
}

/** An accepted ancestor with the same owner: its map was judged already, and the owner may nest inside it. */
function ownedAncestor(st: State, d: ContextDef): boolean {
  for (let p = st.accepted.get(d.parent); p; p = st.accepted.get(p.parent)) if (p.owner.uid === d.owner.uid) return true;
  return false;
}

/** Every item judged, from nothing. */
function judgeAll(defs: readonly ContextDef[], kept: readonly Context[], allocated: ReadonlyMap<string, number>, prior: Prior): State {
  const st = newState(allocated, prior.allocations);
  const j = judging(st, allocated, prior);
  claimAllocations(st, prior.allocations);
  const current = new Map<string, ContextDef>([...kept, ...defs].map((d) => [d.label, d]));
  for (const [label, held] of prior.pinned ?? []) {
    const pin = pinClaimOf(label, current.get(label), held, allocated, prior);
    if (pin) claimPin(st, label, pin);
  }
  const keptSet = new Set<ContextDef>(kept);
  for (const { def: d } of admissionOrder(defs, kept, allocated, prior)) judgeOne(st, d, keptSet.has(d), j);
  return st;
}

/** Items judged again at most by a partial judgement; a reload that changed more judges everything. */
export const PARTIAL_MAX = 256;

type Piece = { readonly parent: string; readonly kind: 'uid' | 'gid'; readonly start: number; readonly end: number; readonly label: string };

function piecesOf(parent: string, label: string, m: Maps): Piece[] {
  return [
    ...m.uidMap.map((e) => ({ parent, kind: 'uid' as const, start: e.outside, end: e.outside + e.count, label })),
    ...m.gidMap.map((e) => ({ parent, kind: 'gid' as const, start: e.outside, end: e.outside + e.count, label })),
  ];
}

const meets = (a: Piece, b: Piece) => a.parent === b.parent && a.kind === b.kind && a.start < b.end && b.start < a.end;

const sameAllocation = (a: { start: number; size: number } | undefined, b: { start: number; size: number } | undefined) =>
  a === b || (a !== undefined && b !== undefined && a.start === b.start && a.size === b.size);

const samePin = (a: Maps | null | undefined, b: Maps | null | undefined) =>
  a === b || (!!a && !!b && sameMap(a.uidMap, b.uidMap) && sameMap(a.gidMap, b.gidMap));

/** Labels whose entry differs between two maps, by `same`. */
function differing<V>(a: ReadonlyMap<string, V>, b: ReadonlyMap<string, V>, same: (x: V | undefined, y: V | undefined) => boolean, into: Set<string>): void {
  for (const [label, v] of a) if (!same(v, b.get(label))) into.add(label);
  for (const label of b.keys()) if (!a.has(label)) into.add(label);
}

/**
 * The judgement again, of what changed only: the items that are not the very objects judged last
 * time, the labels whose allocation or drifted pin changed, and their descendants. Everything else
 * keeps its verdict, which is what a whole judgement would give it as long as nothing it was judged
 * against changed: so when a changed item meets one that is not (ids that overlap in one parent, a
 * resource named twice, the same owner's limits), when two changed ones meet, or when an owner's
 * delegation says something else now, this gives up (null, the state untouched) and the caller
 * judges everything. Its verdicts are those of a whole judgement (test/property/judgement.test.ts
 * holds it to that over random edits). A context accepted again keeps its place among the accepted
 * (placeFor), the new ones come last: parents before children, as a whole judgement orders them.
 */
function judgeChanged(
  st: State,
  defs: readonly ContextDef[],
  kept: readonly Context[],
  allocated: ReadonlyMap<string, number>,
  prior: Prior,
  counts: { looked: number },
): number | null {
  if (prior.fromRecord) return null;
  // What is in force must be what this state accepted (a context made from inside since, a reload that failed: no).
  // The very map this judgement handed out is (the registry puts it in force as it is); another one
  // is compared entry by entry.
  if (prior.inForce !== st.accepted) {
    if (prior.inForce.size !== st.accepted.size) return null;
    for (const [label, c] of st.accepted) if (prior.inForce.get(label) !== c) return null;
  }
  const delegations = prior.delegations ?? OWN_IDS_ONLY;
  for (const { owner, given } of st.asked.values()) {
    const now = delegations.of(owner);
    if (!sameIntervals(now.uid, given.uid) || !sameIntervals(now.gid, given.gid)) return null;
  }
  // What changed: items, allocations, starts, pins that claim ids.
  const fresh = new Map<string, { item: ContextDef; kept: boolean }>();
  const changed = new Set<string>();
  let same = 0;
  let replaced = 0;
  const look = (d: ContextDef, isKept: boolean) => {
    counts.looked++;
    const was = st.items.get(d.label);
    if (was === d && (st.keptItems.size === 0 ? !isKept : st.keptItems.has(d.label) === isKept)) same++;
    else {
      fresh.set(d.label, { item: d, kept: isKept });
      changed.add(d.label);
      if (was) replaced++;
    }
  };
  // Most items are the very objects judged last time, at the same place: that says so without a
  // lookup by label (65,535 of them in 0.1 ms rather than 15: the map's entries and the labels lie
  // all over the heap).
  for (let i = 0; i < kept.length; i++) {
    if (kept[i] === st.judgedKept[i]) same++;
    else look(kept[i], true);
  }
  for (let i = 0; i < defs.length; i++) {
    if (defs[i] === st.judgedDefs[i]) same++;
    else look(defs[i], false);
  }
  let removed: Set<string> | null = null;
  if (same + replaced !== st.items.size) {
    const present = new Set<string>();
    for (const d of kept) present.add(d.label);
    for (const d of defs) present.add(d.label);
    removed = new Set([...st.items.keys()].filter((l) => !present.has(l)));
    for (const l of removed) changed.add(l);
  }
  /** The item of a label now: changed, or the one judged last time unless it is gone. */
  const next = {
    get: (l: string) => fresh.get(l) ?? (removed?.has(l) || !st.items.has(l) ? undefined : { item: st.items.get(l)!, kept: st.keptItems.has(l) }),
    has: (l: string) => fresh.has(l) || (st.items.has(l) && !removed?.has(l)),
  };
  if (changed.size > PARTIAL_MAX) return null;
  differing(st.allocated, allocated, (a, b) => a === b, changed);
  differing(st.allocations, prior.allocations, sameAllocation, changed);
  const pins = new Map<string, PinClaim>();
  for (const [label, held] of prior.pinned ?? []) {
    const pin = pinClaimOf(label, next.get(label)?.item, held, allocated, prior);
    if (pin) pins.set(label, pin);
  }
  differing(st.pinClaims, pins, (a, b) => samePin(a, b) && a?.parent === b?.parent && a?.orphan === b?.orphan, changed);
  // Their descendants are judged again with them.
  const k = new Set(changed);
  const under = new Map<string, string[]>();
  for (const l of changed) {
    const n = next.get(l);
    if (n) under.set(n.item.parent, [...(under.get(n.item.parent) ?? []), l]);
  }
  for (const queue = [...k]; queue.length > 0;) {
    const x = queue.pop()!;
    for (const c of [...(st.children.get(x) ?? []), ...(under.get(x) ?? [])]) {
      if (k.has(c) || !next.has(c)) continue;
      k.add(c);
      queue.push(c);
    }
    if (k.size > PARTIAL_MAX) return null;
  }
  // What the changed items claimed, gave and counted last time (to be taken out), and what they may now.
  const old: { side: Claims; claim: Claim }[] = [];
  const oldPieces: Piece[] = [];
  const collect = (parent: string, label: string, m: Maps, by: Claim['by']) => {
    const sides = st.claims.get(parent);
    for (const p of piecesOf(parent, label, m)) {
      oldPieces.push(p);
      if (!sides) continue;
      for (const c of sides[p.kind].overlapping(p.start, p.end)) if (c.label === label && c.by === by) old.push({ side: sides[p.kind], claim: c });
    }
  };
  const owners = new Set<number>();
  let oldGiven = false;
  for (const l of k) {
    const c = st.accepted.get(l);
    if (c) {
      collect(c.parent, l, c, 'context');
      if (c.delegate && c.owner.uid !== 0) owners.add(c.owner.uid);
      if (delegatedItems(c).length > 0) oldGiven = true;
    }
    const pin = st.pinClaims.get(l);
    if (pin) collect(pin.parent, l, pin, 'pin');
    const a = st.allocations.get(l);
    if (a)
      collect(
        HOST_LABEL,
        l,
        { uidMap: [{ inside: 0, outside: a.start, count: a.size }], gidMap: [{ inside: 0, outside: a.start, count: a.size }] },
        'allocation',
      );
  }
  const newPieces: Piece[] = [];
  for (const l of k) {
    const n = next.get(l);
    if (n) {
      const m = mapsOf(n.item, allocated);
      if (m) newPieces.push(...piecesOf(n.item.parent, l, m));
      if (n.item.delegate && n.item.owner.uid !== 0) owners.add(n.item.owner.uid);
    }
    const pin = pins.get(l);
    if (pin) newPieces.push(...piecesOf(pin.parent, l, pin));
    const a = prior.allocations.get(l);
    if (a)
      newPieces.push(
        { parent: HOST_LABEL, kind: 'uid', start: a.start, end: a.start + a.size, label: l },
        { parent: HOST_LABEL, kind: 'gid', start: a.start, end: a.start + a.size, label: l },
      );
  }
  // Refused items that are not judged again: their errors name what their ids meet.
  const refusedStill = [...st.refused].filter(([l]) => !k.has(l));
  if (refusedStill.length * (oldPieces.length + newPieces.length) > PARTIAL_MAX * PARTIAL_MAX) return null;
  const refusedPieces = refusedStill.flatMap(([l, r]) => piecesOf(r.parent, l, r));
  for (const p of [...oldPieces, ...newPieces]) if (refusedPieces.some((q) => meets(p, q))) return null;
  for (const p of newPieces) {
    const side = st.claims.get(p.parent)?.[p.kind];
    if (side?.overlapping(p.start, p.end).some((c) => !k.has(c.label))) return null;
  }
  // A pin claims only what no claim covered when it was claimed (Claims.gaps): one that lay under a
  // claim taken out here would not claim it again unless everything is judged (an orphan's pin
  // under another orphan's, the other then given a file: test/property/judgement.test.ts, seed 1750667562).
  const pinsStill = [...st.pinClaims].filter(([l]) => !k.has(l));
  if (pinsStill.length * oldPieces.length > PARTIAL_MAX * PARTIAL_MAX) return null;
  for (const [l, pin] of pinsStill) for (const q of piecesOf(pin.parent, l, pin)) if (oldPieces.some((p) => meets(p, q))) return null;
  for (let a = 0; a < newPieces.length; a++)
    for (let b = a + 1; b < newPieces.length; b++) if (newPieces[a].label !== newPieces[b].label && meets(newPieces[a], newPieces[b])) return null;
  // Resources and owner limits: any meeting with an item not judged again, or between two judged again.
  for (const uid of owners) if ([...(st.delegators.get(uid) ?? [])].some((l) => !k.has(l))) return null;
  // The items judged again, taken before the state changes (next reads it).
  const again = new Map<string, { item: ContextDef; kept: boolean }>();
  for (const l of k) {
    const n = next.get(l);
    if (n) again.set(l, n);
  }
  const judgedAgain = [...again.values()];
  const ownersAgain = judgedAgain.filter((n) => n.item.delegate && n.item.owner.uid !== 0).map((n) => n.item.owner.uid);
  if (new Set(ownersAgain).size !== ownersAgain.length) return null;
  const refusedGive = refusedStill.some(([l]) => delegatedItems(st.items.get(l)!).length > 0);
  if (oldGiven && refusedGive) return null;
  const stillGiven = st.given.filter((g) => !k.has(g.label));
  const newGiven: Given[] = [];
  for (const n of judgedAgain) {
    if (delegatedItems(n.item).length === 0) continue;
    if (refusedGive || delegationClashes(n.item, [...stillGiven, ...newGiven]).length > 0) return null;
    for (const [kind, item] of delegatedItems(n.item)) newGiven.push({ kind, item, label: n.item.label });
  }

  // Nothing it judges again meets anything it keeps: out with the old, in with the new.
  for (const { side, claim } of old) side.delete(claim);
  st.given = stillGiven;
  for (const uid of owners) st.held.delete(uid);
  for (const l of k) {
    const was = st.items.get(l);
    if (was) {
      st.children.get(was.parent)?.delete(l);
      if (was.delegate && was.owner.uid !== 0) st.delegators.get(was.owner.uid)?.delete(l);
    }
    for (const m of [st.items, st.errorsOf, st.noticesOf, st.refused, st.pinClaims]) m.delete(l);
    // One accepted again keeps its place (the next judgeOne sets it, or takes it out); a gone one goes.
    if (!again.has(l)) unaccept(st, l);
    st.keptItems.delete(l);
    st.kept.delete(l);
    st.rejected.delete(l);
  }
  claimAllocations(
    st,
    [...k].flatMap((l) => {
      const a = prior.allocations.get(l);
      return a ? [[l, a] as const] : [];
    }),
  );
  for (const l of k) {
    const pin = pins.get(l);
    if (pin) claimPin(st, l, pin);
  }
  st.allocated = allocated;
  st.allocations = prior.allocations;
  // Parents before children among those judged again (they meet nothing else, so no other order matters).
  const j = judging(st, allocated, prior);
  st.moved = new Set();
  const done = new Set<string>();
  const judgeParentsFirst = (among: ReadonlyMap<string, { item: ContextDef; kept: boolean }>) => {
    const place = (n: { item: ContextDef; kept: boolean }, depth: number): void => {
      if (done.has(n.item.label) || depth > 64) return;
      const parent = among.get(n.item.parent);
      if (parent && parent !== n) place(parent, depth + 1);
      done.add(n.item.label);
      judgeOne(st, n.item, n.kept, j);
    };
    for (const n of among.values()) place(n, 0);
  };
  judgeParentsFirst(again);
  // The items refused are judged again too, after everything accepted: a whole judgement puts the
  // contexts in force first (admissionOrder), so what a refused one is told names what was accepted
  // after it last time. They stay refused (what refused them is still there, or this gave up above).
  const refusedAgain = new Map<string, { item: ContextDef; kept: boolean }>();
  for (const l of st.rejected) if (!k.has(l)) refusedAgain.set(l, { item: st.items.get(l)!, kept: st.keptItems.has(l) });
  for (const l of refusedAgain.keys()) for (const m of [st.errorsOf, st.noticesOf, st.refused]) m.delete(l);
  judgeParentsFirst(refusedAgain);
  st.moved = null;
  return done.size;
}

const sameIntervals = (a: readonly Interval[], b: readonly Interval[]) =>
  a.length === b.length && a.every((x, i) => x.start === b[i].start && x.end === b[i].end);

/** The outcome of a state: errors appended to `errors`, the rest returned. */
function outcome(st: State, errors: ConfigError[]): Judged {
  for (const es of st.errorsOf.values()) for (const e of es) errors.push(e);
  return {
    contexts: [...st.accepted.values()],
    byLabel: st.accepted,
    hostMaps: new HostMapsOf(st.accepted, st.hostMaps),
    kept: [...st.kept],
    notices: [...st.noticesOf.values()].flat(),
    delta: st.from && st.touched ? { from: st.from, to: st.accepted, labels: st.touched } : null,
  };
}

/**
 * The judgement kept from one load to the next (the agent's): a reload judges again only what
 * changed, when it can tell that the rest keeps its verdict (judgeChanged), and everything otherwise.
 */
export class Judgement {
  private state: State | null = null;
  /**
   * Judgements of everything and of what changed only since this was made, the items they judged,
   * and the items a partial judgement looked up by label (not found at their place: changed, moved).
   */
  readonly counts = { whole: 0, partial: 0, judged: 0, looked: 0 };

  /** `defs`' labels are unique, as linkContexts leaves them. */
  judge(defs: readonly ContextDef[], allocated: ReadonlyMap<string, number>, errors: ConfigError[], prior: Prior): Judged {
    const kept = keptCandidates(defs, prior.inForce, errors);
    let st = this.state;
    this.state = null; // a judgement that throws halfway leaves nothing half-changed behind
    const again = st ? judgeChanged(st, defs, kept, allocated, prior, this.counts) : null;
    if (st && again !== null) {
      this.counts.partial++;
      this.counts.judged += again;
    } else {
      st = judgeAll(defs, kept, allocated, prior);
      this.counts.whole++;
      this.counts.judged += st.items.size;
    }
    // Copies: the caller's array may change after this returns.
    st.judgedDefs = defs.slice();
    st.judgedKept = kept;
    this.state = st;
    // Handed out as they are, and never changed after (own() copies them first): a reload that
    // changed nothing in force hands out the very maps again, and makes no map of 65,535 entries.
    st.shared = true;
    const out = outcome(st, errors);
    st.from = null; // the map before is the caller's to keep or not
    st.touched = null;
    return out;
  }
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
export function finishContexts(
  defs: readonly ContextDef[],
  allocated: ReadonlyMap<string, number>,
  errors: ConfigError[],
  prior: Prior = NO_PRIOR,
  judgement?: Judgement,
): Judged {
  if (judgement) return judgement.judge(defs, allocated, errors, prior);
  return outcome(judgeAll(defs, keptCandidates(defs, prior.inForce, errors), allocated, prior), errors);
}

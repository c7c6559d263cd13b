// The pure mapping core (SPEC §4): ids of one context seen from another, with NFS-style squash.
import { composeMaps, lookup, sortBy } from '../config/extents.ts';
import { HOST_LABEL } from '../config/types.ts';
import type { IdMap, Squash } from '../config/types.ts';

export type IdKind = 'uid' | 'gid';

/**
 * A context as the mapper needs it: its ids composed down to host ids (the parent chain already
 * followed), sorted both ways for lookups, and how its files are squashed.
 */
export type MapView = {
  readonly label: string;
  readonly squash: Squash;
  readonly uid: CompiledMap | null; // null: the host itself (identity)
  readonly gid: CompiledMap | null;
};
export type CompiledMap = { readonly byInside: IdMap; readonly byOutside: IdMap };

export type Overflow = { readonly uid: number; readonly gid: number };

export const HOST_VIEW: MapView = { label: HOST_LABEL, squash: { mode: 'none', anonuid: 65534, anongid: 65534 }, uid: null, gid: null };

export function compileMap(hostMap: IdMap): CompiledMap {
  return { byInside: sortBy(hostMap, 'inside'), byOutside: sortBy(hostMap, 'outside') };
}

export function makeView(label: string, squash: Squash, hostUid: IdMap, hostGid: IdMap): MapView {
  return { label, squash, uid: compileMap(hostUid), gid: compileMap(hostGid) };
}

/**
 * Compose a chain of maps, innermost first ([own, parent's, grandparent's, …]), into one map from
 * the innermost ids to host ids.
 */
export function chainToHost(chain: readonly IdMap[]): IdMap {
  return chain.slice(1).reduce<IdMap>((acc, parent) => composeMaps(acc, parent), chain[0] ?? []);
}

/** An inside id of the view to its host id, or null when the chain does not map it. */
export function toHost(view: MapView, kind: IdKind, id: number): number | null {
  const m = view[kind];
  return m === null ? id : lookup(m.byInside, 'inside', id);
}

/** A host id to the view's inside id, or null when the view cannot see it. */
export function fromHost(view: MapView, kind: IdKind, hostId: number): number | null {
  const m = view[kind];
  return m === null ? hostId : lookup(m.byOutside, 'outside', hostId);
}

/**
 * SPEC §4: a file owned by `id` in context `from`, seen from context `to`.
 * 1. same context: unchanged; 2. squash by the owning context's mode (squashed ids are host ids);
 * 3. otherwise to host through `from`'s chain; 4. host to `to`'s ids; anything unmappable is overflow.
 */
export function mapId(from: MapView, to: MapView, kind: IdKind, id: number, overflow: Overflow): number {
  if (from.label === to.label) return id;
  const anon = kind === 'uid' ? from.squash.anonuid : from.squash.anongid;
  const squashed = from.squash.mode === 'all' || (from.squash.mode === 'root' && id === 0);
  const host = squashed ? anon : toHost(from, kind, id);
  const out = host === null ? null : fromHost(to, kind, host);
  return out ?? overflow[kind];
}

/** A batch of ids of one kind; supplementary gid lists keep their order, each member replaced in place. */
export function mapIds(from: MapView, to: MapView, kind: IdKind, ids: readonly number[], overflow: Overflow): number[] {
  const out = new Array<number>(ids.length);
  for (let i = 0; i < ids.length; i++) out[i] = mapId(from, to, kind, ids[i], overflow);
  return out;
}

// ---- views (SPEC §7): a tree whose on-disk ids are a context's inside ids, shown on the host ----

export const VIEW_MODES = ['identity', 'foreign'] as const;
export type ViewMode = (typeof VIEW_MODES)[number];

/** On-disk id -> host id, as a user namespace's uid_map and gid_map (inside: on-disk, outside: host). */
export type ViewMaps = { readonly uid: IdMap; readonly gid: IdMap };

/**
 * How a view shows a context's tree. `idmap`: one-to-one, the kernel's idmapped mount can carry it
 * (and bindfs, when it is one offset). `force`: every file shows as one owner — all squash, which
 * no idmapping can be — and only bindfs makes it.
 */
export type ViewPlan = { readonly kind: 'idmap'; readonly maps: ViewMaps } | { readonly kind: 'force'; readonly uid: number; readonly gid: number };

/**
 * The view of a context whose ids reach the host through `host` (its chain already composed).
 * identity: the context's own map. foreign: its squash applied. An idmapping works both ways, so
 * root squash leaves on-disk 0 unmapped — shown as the overflow id, never writable — rather than
 * mapping it to anonuid, which would hand root's files to anonuid.
 */
export function viewPlan(host: ViewMaps, squash: Squash, mode: ViewMode): ViewPlan {
  if (mode === 'identity' || squash.mode === 'none') return { kind: 'idmap', maps: { uid: host.uid, gid: host.gid } };
  if (squash.mode === 'all') return { kind: 'force', uid: squash.anonuid, gid: squash.anongid };
  return { kind: 'idmap', maps: { uid: withoutInside(host.uid, 0), gid: withoutInside(host.gid, 0) } };
}

/** The map without one inside id: the extent holding it is cut in two (or shrinks at an end). */
export function withoutInside(map: IdMap, id: number): IdMap {
  const out: IdMap[number][] = [];
  for (const e of map) {
    if (id < e.inside || id >= e.inside + e.count) {
      out.push(e);
      continue;
    }
    const before = id - e.inside;
    const after = e.count - before - 1;
    if (before > 0) out.push({ inside: e.inside, outside: e.outside, count: before });
    if (after > 0) out.push({ inside: id + 1, outside: e.outside + before + 1, count: after });
  }
  return out;
}

/**
 * bindfs options that show the plan on a filesystem the kernel cannot idmap, or null when bindfs
 * cannot express it: its --uid-offset shifts every id by one amount, so only a map of one extent
 * starting at on-disk 0 is an offset (root squash cuts 0 out of it, so it is not). The view is
 * read-only: an offset also shifts ids past the context's range, and under force every process
 * running as anonuid would own every file — neither may ever write.
 */
export function bindfsOptions(plan: ViewPlan): string[] | null {
  if (plan.kind === 'force') return ['-o', 'ro', `--force-user=${plan.uid}`, `--force-group=${plan.gid}`];
  const offset = (m: IdMap) => (m.length === 1 && m[0].inside === 0 ? m[0].outside : null);
  const uid = offset(plan.maps.uid);
  const gid = offset(plan.maps.gid);
  if (uid === null || gid === null) return null;
  return ['-o', 'ro', `--uid-offset=${uid}`, `--gid-offset=${gid}`];
}

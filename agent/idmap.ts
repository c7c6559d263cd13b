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
  for (let i = 0; i < ids.length; i++) out[i] = mapId(from, to, kind, ids[i]!, overflow);
  return out;
}

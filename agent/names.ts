// Names for mapped ids (SPEC §7, userdb): a host id in a context's range is named LABEL.N, N being
// the id inside the context. Pure: built from the contexts in force, answered from memory.
import { lookup, sortBy } from '../config/extents.ts';
import { HOST_LABEL } from '../config/types.ts';
import type { IdMap } from '../config/types.ts';
import type { IdKind } from './idmap.ts';

export type NamedId = { readonly label: string; readonly inside: number; readonly host: number; readonly name: string };

/** What the index needs of a context: its label, its parent, and its maps composed down to host ids. */
export type NamedContext = { readonly label: string; readonly parent: string; readonly uid: IdMap; readonly gid: IdMap };

type Span = { readonly start: number; readonly end: number; readonly label: string; readonly inside: number };
type Maps = { readonly spans: Span[]; readonly byLabel: Map<string, IdMap> };

/** LABEL.N: a label never holds "/" or ":" and N is decimal, so the last "." splits it. */
export function idName(label: string, inside: number): string {
  return `${label}.${inside}`;
}

/** The label and inside id a name says, or null when it is not of the form LABEL.N (N canonical decimal). */
export function parseIdName(name: string): { label: string; inside: number } | null {
  const dot = name.lastIndexOf('.');
  if (dot <= 0) return null;
  const digits = name.slice(dot + 1);
  if (!/^(0|[1-9][0-9]{0,9})$/.test(digits)) return null;
  const inside = Number(digits);
  return inside < 0xffffffff ? { label: name.slice(0, dot), inside } : null;
}

/**
 * Host id -> name, and name -> host id, for the top-level contexts: their host ranges are disjoint
 * (the configuration refuses overlaps), and a nested context's ids lie inside its top-level
 * context's range, so each host id has exactly one name — its top-level context's.
 */
export class NameIndex {
  private readonly maps: Record<IdKind, Maps>;

  constructor(contexts: Iterable<NamedContext>) {
    const build = (kind: IdKind): Maps => {
      const spans: Span[] = [];
      const byLabel = new Map<string, IdMap>();
      for (const c of contexts) {
        if (c.parent !== HOST_LABEL) continue;
        byLabel.set(c.label, sortBy(c[kind], 'inside'));
        for (const e of c[kind]) spans.push({ start: e.outside, end: e.outside + e.count, label: c.label, inside: e.inside });
      }
      spans.sort((a, b) => a.start - b.start);
      return { spans, byLabel };
    };
    this.maps = { uid: build('uid'), gid: build('gid') };
  }

  /** The name of a host id, or null when no top-level context maps it. */
  byHost(kind: IdKind, host: number): NamedId | null {
    const spans = this.maps[kind].spans;
    let lo = 0;
    let hi = spans.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const s = spans[mid];
      if (host < s.start) hi = mid - 1;
      else if (host >= s.end) lo = mid + 1;
      else {
        const inside = s.inside + (host - s.start);
        return { label: s.label, inside, host, name: idName(s.label, inside) };
      }
    }
    return null;
  }

  /** The host id a name stands for, or null when it names no id of a top-level context. */
  byName(kind: IdKind, name: string): NamedId | null {
    const parsed = parseIdName(name);
    if (!parsed) return null;
    const map = this.maps[kind].byLabel.get(parsed.label);
    const host = map ? lookup(map, 'inside', parsed.inside) : null;
    return host === null ? null : { ...parsed, host, name };
  }

  /** The host id of the same inside id in the other kind's map (a user's primary group), or null. */
  sibling(kind: IdKind, id: NamedId): number | null {
    const map = this.maps[kind === 'uid' ? 'gid' : 'uid'].byLabel.get(id.label);
    return map ? lookup(map, 'inside', id.inside) : null;
  }
}

// Who a caller is for the limits (SPEC §12, "limits count people"): a host uid inside a context's
// range is one of that context's ids, which its owner can become at will (enter, setpriv), so it
// counts as the owner — else an owner would hold a share of every limit per id it maps.
import type { Context } from '../config/types.ts';
import { HOST_LABEL } from '../config/types.ts';

/** The key a limit counts under: "uid N" for a person, "context L" for the ids of a root-owned context. */
export type Person = string;

/** The most changes People.follow makes one by one. */
const FOLLOW_MAX = 256;

type Extent = { readonly start: number; readonly end: number; readonly person: Person };

/** The host uid extents a context stands for, appended to `out`: a top-level one's (a nested context's ids lie inside its top-level ancestor's). */
function extentsOf(c: Context, out: Extent[] = []): Extent[] {
  if (c.parent !== HOST_LABEL) return out;
  const person = c.owner.uid !== 0 ? `uid ${c.owner.uid}` : `context ${c.label}`;
  for (const e of c.uidMap) out.push({ start: e.outside, end: e.outside + e.count, person });
  return out;
}

export class People {
  /** Top-level contexts' host uid extents, sorted by start. */
  private extents: Extent[] = [];

  /** The contexts in force changed (start, reload): who counts as whom follows. */
  rebuild(contexts: Iterable<Context>): void {
    const out: Extent[] = [];
    for (const c of contexts) extentsOf(c, out);
    this.extents = out.sort((a, b) => a.start - b.start);
  }

  /**
   * The contexts in force went from `from` to `to`, differing only at `labels` (Registry.changedSince):
   * the extents of those follow, each taken out or put in at its place, without a sort of them all.
   */
  follow(from: ReadonlyMap<string, Context>, to: ReadonlyMap<string, Context>, labels: ReadonlySet<string>): void {
    // Each change moves the extents after it (a splice): 256 of them among 65,535 cost what one sort of all does (about 50 ms).
    if (labels.size > FOLLOW_MAX) return this.rebuild(to.values());
    const xs = this.extents;
    for (const label of labels) {
      const was = from.get(label);
      const now = to.get(label);
      if (was === now) continue;
      if (was)
        for (const e of extentsOf(was)) {
          let i = this.firstAt(e.start);
          while (i < xs.length && xs[i].start === e.start && (xs[i].end !== e.end || xs[i].person !== e.person)) i++;
          if (i < xs.length && xs[i].start === e.start) xs.splice(i, 1);
        }
      if (now) for (const e of extentsOf(now)) xs.splice(this.firstAt(e.start + 1), 0, e);
    }
  }

  /** The place of the first extent that starts at `start` or later. */
  private firstAt(start: number): number {
    const xs = this.extents;
    let lo = 0;
    let hi = xs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (xs[mid].start < start) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The person a peer uid counts as (root is itself, and never limited by the callers of this). */
  of(uid: number): Person {
    const xs = this.extents;
    let lo = 0;
    let hi = xs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (xs[mid].end <= uid) lo = mid + 1;
      else hi = mid;
    }
    const e = xs[lo];
    return e !== undefined && e.start <= uid ? e.person : `uid ${uid}`;
  }

  /** How a refusal names the caller: "uid 100005 (counted as uid 1000, whose context maps it)". */
  describe(uid: number): string {
    const p = this.of(uid);
    return p === `uid ${uid}` ? p : `uid ${uid} (counted as ${p}: ${p.startsWith('context') ? 'its ids' : 'the owner of the context that maps it'})`;
  }
}

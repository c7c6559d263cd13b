// Who a caller is for the limits (SPEC §12, "limits count people"): a host uid inside a context's
// range is one of that context's ids, which its owner can become at will (enter, setpriv), so it
// counts as the owner — else an owner would hold a share of every limit per id it maps.
import type { Context } from '../config/types.ts';
import { HOST_LABEL } from '../config/types.ts';

/** The key a limit counts under: "uid N" for a person, "context L" for the ids of a root-owned context. */
export type Person = string;

export class People {
  /** Top-level contexts' host uid extents, sorted by start: [start, end, person]. */
  private extents: { start: number; end: number; person: Person }[] = [];

  /** The contexts in force changed (start, reload): who counts as whom follows. */
  rebuild(contexts: Iterable<Context>): void {
    const out: { start: number; end: number; person: Person }[] = [];
    for (const c of contexts) {
      if (c.parent !== HOST_LABEL) continue; // a nested context's ids lie inside its top-level ancestor's
      const person = c.owner.uid !== 0 ? `uid ${c.owner.uid}` : `context ${c.label}`;
      for (const e of c.uidMap) out.push({ start: e.outside, end: e.outside + e.count, person });
    }
    this.extents = out.sort((a, b) => a.start - b.start);
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

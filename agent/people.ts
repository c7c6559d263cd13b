// Who a caller is for the limits (SPEC §12, "limits count people"): a host uid inside a context's
// range is one of that context's ids, which its owner can become at will (enter, setpriv), so it
// counts as the owner — else an owner would hold a share of every limit per id it maps.
import type { Context } from '../config/types.ts';
import { HOST_LABEL } from '../config/types.ts';

/** The key a limit counts under: "uid N" for a person, "context L" for the ids of a root-owned context. */
export type Person = string;

/** The most changes People.follow makes one by one. */
const FOLLOW_MAX = 256;

/** Who the ids of a top-level context count as. */
const personOf = (c: Context): Person => (c.owner.uid !== 0 ? `uid ${c.owner.uid}` : `context ${c.label}`);

/**
 * Top-level contexts' host uid extents, sorted by start, as three columns: the first id, one past the
 * last, and the context (whose person is named when asked). An object per extent, with its person's
 * name made ahead, was about 120 bytes of each of 65,535 contexts; these are 24.
 */
type Extents = { starts: number[]; ends: number[]; of: Context[] };

/** The host uid extents a context stands for, appended to `out`: a top-level one's (a nested context's ids lie inside its top-level ancestor's). */
function extentsOf(c: Context, out: Extents): void {
  if (c.parent !== HOST_LABEL) return;
  for (const e of c.uidMap) {
    out.starts.push(e.outside);
    out.ends.push(e.outside + e.count);
    out.of.push(c);
  }
}

const noExtents = (): Extents => ({ starts: [], ends: [], of: [] });

export class People {
  private extents: Extents = noExtents();

  /** The contexts in force changed (start, reload): who counts as whom follows. */
  rebuild(contexts: Iterable<Context>): void {
    const all = noExtents();
    for (const c of contexts) extentsOf(c, all);
    const order = Array.from(all.starts, (_, i) => i).sort((a, b) => all.starts[a] - all.starts[b]);
    this.extents = { starts: order.map((i) => all.starts[i]), ends: order.map((i) => all.ends[i]), of: order.map((i) => all.of[i]) };
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
      if (was) {
        const gone = noExtents();
        extentsOf(was, gone);
        for (const start of gone.starts) {
          let i = this.firstAt(start);
          while (i < xs.starts.length && xs.starts[i] === start && xs.of[i].label !== label) i++;
          if (i < xs.starts.length && xs.starts[i] === start) {
            xs.starts.splice(i, 1);
            xs.ends.splice(i, 1);
            xs.of.splice(i, 1);
          }
        }
      }
      if (now) {
        const come = noExtents();
        extentsOf(now, come);
        come.starts.forEach((start, j) => {
          const i = this.firstAt(start + 1);
          xs.starts.splice(i, 0, start);
          xs.ends.splice(i, 0, come.ends[j]);
          xs.of.splice(i, 0, now);
        });
      }
    }
  }

  /** The place of the first extent that starts at `start` or later. */
  private firstAt(start: number): number {
    const xs = this.extents.starts;
    let lo = 0;
    let hi = xs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (xs[mid] < start) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The person a peer uid counts as (root is itself, and never limited by the callers of this). */
  of(uid: number): Person {
    const { starts, ends, of } = this.extents;
    let lo = 0;
    let hi = ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ends[mid] <= uid) lo = mid + 1;
      else hi = mid;
    }
    return lo < starts.length && starts[lo] <= uid ? personOf(of[lo]) : `uid ${uid}`;
  }

  /** How a refusal names the caller: "uid 100005 (counted as uid 1000, whose context maps it)". */
  describe(uid: number): string {
    const p = this.of(uid);
    return p === `uid ${uid}` ? p : `uid ${uid} (counted as ${p}: ${p.startsWith('context') ? 'its ids' : 'the owner of the context that maps it'})`;
  }
}

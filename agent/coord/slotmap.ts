// What one agent knows of the shared pool's slots (issue 26), pure: a bit per slot of one size, read
// once from the index (its keys alone) and kept up to date by what this agent's own reads and writes
// see. It guides a label's search to the first slot it believes free, so the search reads that slot
// alone where it read a window of WINDOW_SLOTS: in a pool 92% full the free slot is about 78 slots
// from a label's hash slot (linear probing's clusters), and the window's keys were the cost that
// grew with the pool.
//
// It decides nothing. The index read at the slot, and the write's compare, decide as before: a
// stale map (another host allocated or forgot meanwhile) costs a read, never an overlap. A search
// that misses GUIDED_MISSES times, or that the map says has nothing left to try, starts again from
// its hash slot window by window, as with no map; so a pool is found full only by reading it.
import { firstEndingAfter } from '../../config/extents.ts';
import type { Interval } from '../../config/extents.ts';
import type { Pool } from '../../config/types.ts';
import { poolSlots } from './allocate.ts';
import { advanceProbe, freeSlot, probeWindow } from './poolkeys.ts';
import type { IndexEntry, Probe } from './poolkeys.ts';

/** Guided reads that find their slot taken before a search goes window by window. */
export const GUIDED_MISSES = 3;
/** Misses a map may cost in all before the coordinator reads the index anew. */
export const STALE_MISSES = 64;

export class SlotMap {
  readonly first: number;
  readonly count: number;
  readonly size: number;
  /** One bit per slot: set when the slot is taken (as far as this agent has seen). */
  private readonly bits: Uint8Array;
  /** Slots the map said free that a read found taken, since the map was read. */
  misses = 0;

  constructor(pool: Pool, size: number, taken: Iterable<Interval> = []) {
    const { first, count } = poolSlots(pool, size);
    this.first = first;
    this.count = count;
    this.size = size;
    this.bits = new Uint8Array(Math.ceil(count / 8));
    for (const i of taken) this.mark(i, true);
  }

  taken(k: number): boolean {
    return (this.bits[k >> 3] & (1 << (k & 7))) !== 0;
  }

  /** The slots ids i.start..i.end-1 touch: slot numbers from..to-1 (empty when outside the pool). */
  private slotsOf(i: Interval): { from: number; to: number } {
    const from = Math.max(0, Math.floor((i.start - this.first) / this.size));
    const to = Math.min(this.count, Math.ceil((i.end - this.first) / this.size));
    return { from, to: Math.max(from, to) };
  }

  private set(k: number, taken: boolean): void {
    if (taken) this.bits[k >> 3] |= 1 << (k & 7);
    else this.bits[k >> 3] &= ~(1 << (k & 7));
  }

  /** Every slot ids i.start..i.end-1 touch, taken (an allocation, a key read) or free (a forget). */
  mark(i: Interval, taken: boolean): void {
    const { from, to } = this.slotsOf(i);
    for (let k = from; k < to; k++) this.set(k, taken);
  }

  /**
   * What a read of ids from..to-1 found: the index keys ending in them and the first after. A slot
   * wholly inside is taken exactly when one of those keys touches it.
   */
  learn(from: number, to: number, keys: readonly Interval[]): void {
    const first = Math.ceil((from - this.first) / this.size);
    const last = Math.floor((to - this.first) / this.size);
    for (let k = Math.max(0, first); k < Math.min(this.count, last); k++) this.set(k, false);
    for (const i of keys) this.mark(i, true);
  }

  /** The first slot from..to-1 not known taken and not refused by `skip`; -1 when there is none. */
  nextFree(from: number, to: number, skip: (k: number) => boolean): number {
    for (let k = from; k < Math.min(to, this.count); k++) {
      if ((k & 7) === 0 && this.bits[k >> 3] === 0xff) {
        k += 7; // eight taken slots at once
        continue;
      }
      if (!this.taken(k) && !skip(k)) return k;
    }
    return -1;
  }
}

/** A label's search for a free slot of `size` ids: its probe, and whether the map still guides it. */
export type Search = { readonly probe: Probe; readonly size: number; readonly guided: boolean; readonly misses: number };

/** A search from the label's hash slot: guided when there is a map for its size. */
export const newSearch = (probe: Probe, size: number, map: SlotMap | null): Search => ({ probe, size, guided: map !== null, misses: 0 });

/** The same search from its hash slot, window by window, the map aside. */
const unguided = (s: Search): Search => ({ ...s, probe: { ...s.probe, next: s.probe.hash, wrapped: false, window: undefined }, guided: false });

/**
 * Where the search reads next: the one slot the map believes free (from where the probe is, to the
 * end of the pool, then from its first slot to the hash slot), or its next window. `skip`: slots not
 * to choose (this host's system ids, slots others of the same round chose). A null window: every
 * slot was read and found taken.
 */
export function searchLook(s: Search, map: SlotMap | null, skip: (k: number) => boolean): { search: Search; window: ReturnType<typeof probeWindow> } {
  if (s.guided && map) {
    const p = s.probe;
    let k = map.nextFree(p.next, p.wrapped ? p.hash : p.count, skip);
    let wrapped = p.wrapped;
    if (k < 0 && !wrapped) {
      k = map.nextFree(0, p.hash, skip);
      wrapped = true;
    }
    if (k >= 0) {
      const probe: Probe = { ...p, next: k, wrapped, window: 1 };
      return { search: { ...s, probe }, window: probeWindow(probe, s.size) };
    }
  }
  if (s.guided) s = unguided(s);
  return { search: s, window: probeWindow(s.probe, s.size) };
}

/**
 * What the read of the search's window found (`around`: the index keys there; `taken`: this host's
 * system ids and this round's claims): the free slot's first id, or the search moved on. The map
 * learns what was read either way.
 */
export function searchStep(s: Search, map: SlotMap | null, around: readonly IndexEntry[], taken: readonly Interval[]): { slot: number } | { search: Search } {
  const w = probeWindow(s.probe, s.size);
  if (w && map) map.learn(w.from, w.to, around);
  const slot = freeSlot(s.probe, s.size, around, taken);
  if (slot !== null) return { slot };
  if (!s.guided) return { search: { ...s, probe: advanceProbe(s.probe) } };
  if (map && around.some((e) => w && e.end > w.from && e.start < w.to)) map.misses++;
  const misses = s.misses + 1;
  if (misses >= GUIDED_MISSES) return { search: unguided({ ...s, misses }) };
  return { search: { ...s, misses, probe: advanceProbe(s.probe) } };
}

/** Whether slot k of `map`'s size touches ids in `sorted` (merged intervals). */
export function slotTouches(map: { first: number; size: number }, sorted: readonly Interval[], k: number): boolean {
  const start = map.first + k * map.size;
  const hit = sorted[firstEndingAfter(sorted, start)];
  return hit !== undefined && hit.start < start + map.size;
}

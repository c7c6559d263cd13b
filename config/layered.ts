// A map of 65,535 contexts changed in a few places, for the cost of the few: the judgement's
// accepted contexts once handed out (judge.ts own()).

/** Changes made by indexOf in copies of the base's keys and values (entriesInOrder). */
const FEW_CHANGES = 32;

/**
 * A Map made of another one, its base (never changed through it: a map handed out to others), and
 * of what was set and deleted since: it holds what `new Map(base)` followed by the same calls would
 * hold, in the same order (a key set again keeps its place, a new one or one deleted and set again
 * comes last), without copying the base. Copying 65,535 contexts took 9-36 ms of a reload that
 * changed one of them.
 *
 * Reads cost a few lookups in the small maps of changes before the base's. A layer's changes are
 * copied into the next (copyOf): the base is always a plain map, and once the changes are more than
 * a sixteenth of it the whole is copied into a new base, so a long run of reloads costs about what
 * it changed. Its entries are iterated from two arrays made at the first iteration after a change
 * (1-2 ms for 65,535 entries and a few changes, then as fast as a Map's own iteration): so unlike a
 * Map's, an iteration does not see what is set or deleted while it runs. The judgement never changes
 * a map it iterates, and a map handed out is never changed.
 */
export class LayeredMap<K, V> extends Map<K, V> {
  /** Base keys set again, in their place. */
  private readonly replaced: Map<K, V>;
  /** Base keys deleted (some may be set again: then they are in `added`). */
  private readonly removed: Set<K>;
  /** Keys not in the base, or deleted from it and set again, in the order they were set. */
  private readonly added: Map<K, V>;

  private readonly base: ReadonlyMap<K, V>;
  /** The keys and values in order, once iterated since the last change. */
  private flat: { readonly keys: K[]; readonly values: V[] } | null = null;

  private constructor(base: ReadonlyMap<K, V>, from: LayeredMap<K, V> | null) {
    super();
    this.base = base;
    this.replaced = new Map(from?.replaced);
    this.removed = new Set(from?.removed);
    this.added = new Map(from?.added);
  }

  /** A map to change that holds what `m` holds, `m` left as it is. */
  static copyOf<K, V>(m: ReadonlyMap<K, V>): LayeredMap<K, V> {
    if (!(m instanceof LayeredMap)) return new LayeredMap(m, null);
    const l = m as LayeredMap<K, V>;
    if ((l.replaced.size + l.removed.size + l.added.size) * 16 <= l.base.size) return new LayeredMap(l.base, l);
    return new LayeredMap(new Map(l), null);
  }

  override get size(): number {
    return this.base.size - this.removed.size + this.added.size;
  }

  override get(key: K): V | undefined {
    if (this.added.has(key)) return this.added.get(key);
    if (this.replaced.has(key)) return this.replaced.get(key);
    return this.removed.has(key) ? undefined : this.base.get(key);
  }

  override has(key: K): boolean {
    return this.added.has(key) || (!this.removed.has(key) && this.base.has(key));
  }

  override set(key: K, value: V): this {
    this.flat = null;
    if (this.added.has(key) || this.removed.has(key) || !this.base.has(key)) this.added.set(key, value);
    else this.replaced.set(key, value);
    return this;
  }

  override delete(key: K): boolean {
    if (this.added.delete(key)) {
      this.flat = null;
      return true;
    }
    if (this.removed.has(key) || !this.base.has(key)) return false;
    this.flat = null;
    this.removed.add(key);
    this.replaced.delete(key);
    return true;
  }

  override clear(): void {
    this.flat = null;
    for (const k of this.base.keys()) this.removed.add(k);
    this.replaced.clear();
    this.added.clear();
  }

  /**
   * The keys and values in order. A few changes are made in copies of the base's own (each key found
   * by indexOf: a scan of pointers); more, in one pass over the base.
   */
  private entriesInOrder(): { readonly keys: K[]; readonly values: V[] } {
    if (this.flat) return this.flat;
    let keys: K[];
    let values: V[];
    if (this.replaced.size + this.removed.size <= FEW_CHANGES) {
      keys = [...this.base.keys()];
      values = [...this.base.values()];
      for (const [k, v] of this.replaced) values[keys.indexOf(k)] = v;
      for (const k of this.removed) {
        const i = keys.indexOf(k);
        keys.splice(i, 1);
        values.splice(i, 1);
      }
    } else {
      keys = [];
      values = [];
      this.base.forEach((v, k) => {
        if (this.removed.has(k)) return;
        keys.push(k);
        values.push(this.replaced.has(k) ? this.replaced.get(k)! : v);
      });
    }
    for (const [k, v] of this.added) {
      keys.push(k);
      values.push(v);
    }
    return (this.flat = { keys, values });
  }

  override *entries(): MapIterator<[K, V]> {
    const { keys, values } = this.entriesInOrder();
    for (let i = 0; i < keys.length; i++) yield [keys[i], values[i]];
  }

  override keys(): MapIterator<K> {
    return this.entriesInOrder().keys.values();
  }

  override values(): MapIterator<V> {
    return this.entriesInOrder().values.values();
  }

  override [Symbol.iterator](): MapIterator<[K, V]> {
    return this.entries();
  }

  override forEach(fn: (value: V, key: K, map: Map<K, V>) => void, thisArg?: unknown): void {
    const { keys, values } = this.entriesInOrder();
    for (let i = 0; i < keys.length; i++) fn.call(thisArg, values[i], keys[i], this);
  }
}

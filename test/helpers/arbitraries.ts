// fast-check generators for id maps and contexts, shared by the property tests.
import fc from 'fast-check';
import type { Extent, IdMap } from '../../config/types.ts';

/**
 * A valid map: extents disjoint on both sides. Inside and outside ranges are laid out left to right
 * with gaps, then the outside ranges are shuffled so extents do not all keep order.
 */
export function arbMap(opts: { maxExtents?: number; insideBase?: number; outsideBase?: number; maxCount?: number } = {}): fc.Arbitrary<IdMap> {
  const { maxExtents = 5, insideBase = 0, outsideBase = 100000, maxCount = 5000 } = opts;
  return fc
    .array(fc.record({ count: fc.integer({ min: 1, max: maxCount }), gapIn: fc.integer({ min: 0, max: 3000 }), gapOut: fc.integer({ min: 0, max: 3000 }) }), {
      minLength: 1,
      maxLength: maxExtents,
    })
    .chain((parts) =>
      fc
        .shuffledSubarray(
          parts.map((_, i) => i),
          { minLength: parts.length, maxLength: parts.length },
        )
        .map((order) => {
          let inAt = insideBase;
          const insides = parts.map((p) => {
            const s = inAt + p.gapIn;
            inAt = s + p.count;
            return s;
          });
          let outAt = outsideBase;
          const outsides = new Array<number>(parts.length);
          for (const i of order) {
            const s = outAt + parts[i].gapOut;
            outsides[i] = s;
            outAt = s + parts[i].count;
          }
          return parts.map((p, i): Extent => ({ inside: insides[i], outside: outsides[i], count: p.count }));
        }),
    );
}

/** The definition, read off the raw extents: the oracle implementations are checked against. */
export function oracleLookup(map: IdMap, from: 'inside' | 'outside', id: number): number | null {
  const to = from === 'inside' ? 'outside' : 'inside';
  for (const e of map) if (id >= e[from] && id < e[from] + e.count) return e[to] + (id - e[from]);
  return null;
}

/** An id that is likely inside one of the map's extents (and sometimes not). */
export function arbIdNear(map: IdMap, side: 'inside' | 'outside'): fc.Arbitrary<number> {
  return fc.oneof(
    fc.constantFrom(...map).chain((e) => fc.integer({ min: e[side], max: e[side] + e.count - 1 })),
    // An extent's edges and one past each: where an off-by-one maps into the neighbour's ids.
    fc.constantFrom(...map).chain((e) => fc.constantFrom(e[side], e[side] + e.count - 1, e[side] + e.count, Math.max(0, e[side] - 1))),
    fc.integer({ min: 0, max: 400000 }),
  );
}

/**
 * A map as a context file writes it ("inside outside count, ..."): extents of whole thousands laid
 * left to right from inside 0 and outside `from`, each after a gap of up to a few thousand ids.
 */
export function mapText(from: number, extents: readonly { readonly gap: number; readonly count: number }[]): string {
  let [inside, outside] = [0, from];
  return extents
    .map((e) => {
      outside += e.gap * 1000;
      const text = `${inside} ${outside} ${e.count * 1000}`;
      inside += e.count * 1000;
      outside += e.count * 1000;
      return text;
    })
    .join(', ');
}

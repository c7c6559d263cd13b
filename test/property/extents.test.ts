// The extent algebra against its definition: composition, lookup, parsing and validation.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { composeMaps, formatExtents, lookup, parseExtents, sortBy, uncovered, validateExtents } from '../../config/extents.ts';
import { arbIdNear, arbMap, oracleLookup } from '../helpers/arbitraries.ts';

describe('property: extents', () => {
  it('generated maps are valid and survive format -> parse', () => {
    fc.assert(
      fc.property(arbMap(), (m) => {
        assert.equal(validateExtents(m), null);
        assert.deepEqual(parseExtents(formatExtents(m)), m);
      }),
    );
  });

  it('any text parses as the general rule says: comma-separated extents of three decimal ids each, whitespace between (the plain one-extent form is parsed apart)', () => {
    // The rule, written out plainly: the model the parse is held to.
    const ID = /^(0|[1-9][0-9]{0,9})$/;
    const model = (text: string): { inside: number; outside: number; count: number }[] | null => {
      const out = [];
      for (const part of text.split(',').map((p) => p.trim())) {
        const fields = part.split(/\s+/);
        if (fields.length !== 3 || !fields.every((f) => ID.test(f) && Number(f) <= 0xffffffff)) return null;
        const [inside, outside, count] = fields.map(Number);
        out.push({ inside, outside, count });
      }
      return validateExtents(out) === null ? out : null;
    };
    const id = fc.oneof(
      fc.integer({ min: 0, max: 2 ** 32 + 5 }).map(String),
      fc.constantFrom('0', '00', '01', '4294967295', '4294967296', '99999999999', '-1', '1e3', ''),
    );
    const space = fc.constantFrom(' ', '  ', '\t', ' \t ', '\u00a0', '', '\n');
    const extent = fc.tuple(space, id, space, id, space, id, space).map((xs) => xs.join(''));
    fc.assert(
      fc.property(fc.array(extent, { minLength: 1, maxLength: 3 }), (extents) => {
        const text = extents.join(',');
        const parsed = parseExtents(text);
        const want = model(text);
        if (want === null) assert.equal(typeof parsed, 'string', `${JSON.stringify(text)}: refused`);
        else assert.deepEqual(parsed, want, JSON.stringify(text));
      }),
      { numRuns: 2000 },
    );
  });

  it('lookup agrees with the definition, both ways', () => {
    fc.assert(
      fc.property(
        arbMap().chain((m) => fc.tuple(fc.constant(m), arbIdNear(m, 'inside'), arbIdNear(m, 'outside'))),
        ([m, i, o]) => {
          assert.equal(lookup(sortBy(m, 'inside'), 'inside', i), oracleLookup(m, 'inside', i));
          assert.equal(lookup(sortBy(m, 'outside'), 'outside', o), oracleLookup(m, 'outside', o));
        },
      ),
    );
  });

  it('composition maps an id exactly as the two maps one after the other', () => {
    const pair = arbMap({ outsideBase: 0, maxCount: 3000 }).chain((child) =>
      fc.tuple(fc.constant(child), arbMap({ insideBase: 0, maxCount: 8000 }), arbIdNear(child, 'inside')),
    );
    fc.assert(
      fc.property(pair, ([child, parent, id]) => {
        const mid = oracleLookup(child, 'inside', id);
        const expected = mid === null ? null : oracleLookup(parent, 'inside', mid);
        assert.equal(oracleLookup(composeMaps(child, parent), 'inside', id), expected);
      }),
    );
  });

  it('uncovered returns exactly the ids no extent covers', () => {
    fc.assert(
      fc.property(arbMap({ maxCount: 50 }), fc.integer({ min: 0, max: 2000 }), fc.integer({ min: 1, max: 500 }), (m, start, len) => {
        const gaps = uncovered(m, 'inside', start, start + len);
        for (let id = start; id < start + len; id++) {
          const inGap = gaps.some((g) => id >= g.start && id < g.end);
          assert.equal(inGap, oracleLookup(m, 'inside', id) === null, `id ${id}`);
        }
      }),
    );
  });

  it('validation refuses any overlap on either side', () => {
    fc.assert(
      fc.property(arbMap({ maxExtents: 4 }), fc.nat(), fc.constantFrom('inside', 'outside'), (m, pick, side) => {
        const e = m[pick % m.length];
        const copy = { ...e, [side]: e[side] + Math.floor(e.count / 2), [side === 'inside' ? 'outside' : 'inside']: 4000000000 - e.count };
        assert.match(validateExtents([...m, copy]) ?? '', new RegExp(`overlap on the ${side} side`));
      }),
    );
  });
});

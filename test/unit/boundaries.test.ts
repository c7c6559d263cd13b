// The id space's edges, tested by name (issue 27): an extent's first and last id and one past both,
// id 0, 2^32 − 2 (the largest id) and 2^32 − 1 ((uid_t) −1, never an id), empty and full maps — for
// parsing, lookup, composition and the mapping between contexts. A property test may never draw
// these; each line here fails on the off-by-one it names.
import assert from 'node:assert/strict';
import { composeMaps, ID_LIMIT, kernelMapText, lookup, parseExtents, parseId, parseKernelMap, sameMap, sortBy, validateExtents } from '../../config/extents.ts';
import type { IdMap } from '../../config/types.ts';
import { HOST_VIEW, makeView, mapId } from '../../agent/idmap.ts';

const LARGEST = 2 ** 32 - 2;
const OVERFLOW = { uid: 65534, gid: 65534 };
const map = (text: string): IdMap => {
  const m = parseExtents(text);
  assert.ok(typeof m !== 'string', `${text}: ${m as string}`);
  return m;
};

describe('unit: the edges of the id space', () => {
  it('parses ids up to 2^32 − 1 as written, and nothing else as an id', () => {
    assert.equal(ID_LIMIT, 2 ** 32 - 1);
    assert.equal(parseId('0'), 0);
    assert.equal(parseId(String(LARGEST)), LARGEST);
    assert.equal(parseId(String(2 ** 32 - 1)), 2 ** 32 - 1, 'a count may reach it');
    for (const bad of [String(2 ** 32), '00', '01', '-1', '+1', '0x186a0', '1e3', '1.0', ' 1', '1 ', '', '１']) assert.equal(parseId(bad), null, bad);
  });

  it('refuses maps that are short of a field, empty, or run past the largest id', () => {
    for (const [text, why] of [
      ['0 100000', /must be three numbers/],
      ['0 100000 65536 1', /must be three numbers/],
      ['0 0x186a0 65536', /three non-negative decimal numbers/],
      ['0 1e3 65536', /three non-negative decimal numbers/],
      ['', /is empty/],
      ['0 100000 0', /count 0/],
      [`${LARGEST} 0 2`, /runs past the largest id 4294967294 on the inside/],
      [`0 ${LARGEST} 2`, /runs past the largest id 4294967294 on the outside/],
      ['0 0 4294967296', /non-negative decimal numbers/],
      ['0 0 10, 9 100 5', /extents 1 and 2 overlap on the inside side/],
      ['0 0 10, 20 9 5', /extents 1 and 2 overlap on the outside side/],
    ] as const) {
      const r = parseExtents(text);
      assert.equal(typeof r, 'string', text);
      assert.match(r as string, why, text);
    }
    assert.equal(validateExtents([]), 'has no extents');
  });

  it('accepts the full map and the largest id as the last of an extent', () => {
    assert.deepEqual(map('0 0 4294967295'), [{ inside: 0, outside: 0, count: 2 ** 32 - 1 }]);
    assert.deepEqual(map(`${LARGEST} 7 1`), [{ inside: LARGEST, outside: 7, count: 1 }]);
    assert.deepEqual(
      map('0 0 10, 10 10 5'),
      [
        { inside: 0, outside: 0, count: 10 },
        { inside: 10, outside: 10, count: 5 },
      ],
      'touching extents do not overlap',
    );
  });

  it("looks up an extent's first and last id, and misses one before and one past it, on both sides", () => {
    const m = map('0 100000 65536, 70000 300000 10');
    for (const [side, at, other] of [
      ['inside', 0, 100000],
      ['outside', 100000, 0],
    ] as const) {
      const s = sortBy(m, side);
      assert.equal(lookup(s, side, at), other, `${side}: first`);
      assert.equal(lookup(s, side, at + 65535), other + 65535, `${side}: last`);
      assert.equal(lookup(s, side, at + 65536), null, `${side}: one past the end maps nowhere, never into the next range`);
      if (at > 0) assert.equal(lookup(s, side, at - 1), null, `${side}: one before the start`);
    }
    const inside = sortBy(m, 'inside');
    assert.equal(lookup(inside, 'inside', 69999), null, 'the gap between extents');
    assert.equal(lookup(inside, 'inside', 70000), 300000);
    assert.equal(lookup(inside, 'inside', 70009), 300009);
    assert.equal(lookup(inside, 'inside', 70010), null);
    const full = map('0 0 4294967295');
    assert.equal(lookup(full, 'inside', 0), 0);
    assert.equal(lookup(full, 'inside', LARGEST), LARGEST);
    assert.equal(lookup(full, 'inside', 2 ** 32 - 1), null, '(uid_t) −1 is never an id');
    assert.equal(lookup([], 'inside', 0), null, 'an empty map maps nothing');
  });

  it("composes at the edges: what the parent maps of the child's range, to the id", () => {
    // Child 0..9 -> parent 95..104; the parent maps 100..199 only: child 5..9 survive, as 1000..1004.
    assert.deepEqual(composeMaps(map('0 95 10'), map('100 1000 100')), [{ inside: 5, outside: 1000, count: 5 }]);
    // Touching but not overlapping: nothing.
    assert.deepEqual(composeMaps(map('0 90 10'), map('100 1000 100')), []);
    assert.deepEqual(composeMaps(map('0 200 10'), map('100 1000 100')), []);
    // The child's last id is the parent's last mapped id.
    assert.deepEqual(composeMaps(map('0 190 10'), map('100 1000 100')), [{ inside: 0, outside: 1090, count: 10 }]);
    // Through the full map: unchanged.
    assert.deepEqual(composeMaps(map('0 100000 65536'), map('0 0 4294967295')), map('0 100000 65536'));
  });

  it("maps between contexts at the range's edges: the first past the range is the overflow id, root squashed as asked", () => {
    const squash = (mode: 'none' | 'root' | 'all') => ({ mode, anonuid: 65533, anongid: 65533 });
    const a = (mode: 'none' | 'root' | 'all') => makeView('a', squash(mode), map('0 100000 65536'), map('0 100000 65536'));
    const b = makeView('b', squash('none'), map('0 165536 65536'), map('0 165536 65536'));
    const none = a('none');
    assert.equal(mapId(none, HOST_VIEW, 'uid', 0, OVERFLOW), 100000);
    assert.equal(mapId(none, HOST_VIEW, 'uid', 65535, OVERFLOW), 165535);
    assert.equal(mapId(none, HOST_VIEW, 'uid', 65536, OVERFLOW), 65534, "not 165536, which is b's root");
    assert.equal(mapId(none, b, 'uid', 65535, OVERFLOW), 65534, "a's last id is nobody in b");
    assert.equal(mapId(HOST_VIEW, none, 'uid', 99999, OVERFLOW), 65534);
    assert.equal(mapId(HOST_VIEW, none, 'uid', 100000, OVERFLOW), 0);
    assert.equal(mapId(HOST_VIEW, none, 'uid', 165536, OVERFLOW), 65534);
    assert.equal(mapId(a('root'), HOST_VIEW, 'uid', 0, OVERFLOW), 65533, 'root squash: root is the anonymous id');
    assert.equal(mapId(a('root'), HOST_VIEW, 'uid', 1, OVERFLOW), 100001, 'only root');
    assert.equal(mapId(a('all'), HOST_VIEW, 'gid', 65535, OVERFLOW), 65533, 'all squash: everyone');
  });
});

describe('unit: the maps as the kernel writes and reads them', () => {
  it("writes one extent a line, and reads the kernel's padded columns back, lines of another shape skipped", () => {
    assert.equal(kernelMapText(map('0 100000 65536, 65536 1 1')), '0 100000 65536\n65536 1 1\n');
    assert.deepEqual(parseKernelMap('         0     100000      65536\n     65536          1          1\n'), map('0 100000 65536, 65536 1 1'));
    assert.deepEqual(parseKernelMap('\n  0 5 1 extra\n 7 8 9\n'), [{ inside: 7, outside: 8, count: 9 }]);
    assert.deepEqual(parseKernelMap(''), []);
  });

  it('compares maps as sets of extents: order does not matter, any difference does (drift is judged so)', () => {
    assert.equal(sameMap(map('0 100 10, 10 200 5'), map('10 200 5, 0 100 10')), true);
    assert.equal(sameMap(map('0 100 10'), map('0 100 11')), false);
    assert.equal(sameMap(map('0 100 10'), map('0 100 10, 10 200 5')), false);
    assert.equal(sameMap(map('0 100 10, 10 200 5'), map('0 100 10')), false);
    assert.equal(sameMap(map('0 100 10, 10 200 5'), map('0 100 10, 10 201 5')), false);
  });

  it('names the extent that is wrong in a map of several, and reads any run of blanks between numbers', () => {
    assert.equal(parseExtents('0 1 1, 5 6'), 'extent 2 ("5 6") must be three numbers "INSIDE OUTSIDE COUNT"');
    assert.equal(parseExtents('0 1 1,'), 'extent 2 ("") must be three numbers "INSIDE OUTSIDE COUNT"');
    assert.equal(parseExtents('0 1 1, 5 x 1'), 'extent 2 ("5 x 1") must be three non-negative decimal numbers');
    assert.equal(parseExtents('0 1 1, 5 6 0'), 'extent 2 (5 6 0) has count 0');
    assert.equal(parseExtents('5 6'), '"5 6" must be three numbers "INSIDE OUTSIDE COUNT"');
    assert.deepEqual(parseExtents('0   100000 \t 65536'), [{ inside: 0, outside: 100000, count: 65536 }]);
  });

  it("composes into a map sorted by inside id, whatever the child's order", () => {
    assert.deepEqual(composeMaps(map('100 1050 10, 0 1000 10'), map('1000 5000 100')), [
      { inside: 0, outside: 5000, count: 10 },
      { inside: 100, outside: 5050, count: 10 },
    ]);
  });
});

// The pure core's edges that mutation testing found no test for (issue 27, MUTATION.md): maps given
// out of order, an empty chain, an id past a view mapping host id 0, a squash that cuts a one-id
// extent, bindfs with one kind expressible and not the other, names that do not parse, a user's
// primary group, touching intervals. Each line fails on the mutant it names.
import assert from 'node:assert/strict';
import { intervalsOverlap, outsideIntervals, parseExtents, uncovered } from '../../config/extents.ts';
import { bindfsOptions, chainToHost, HOST_VIEW, makeView, mapId, withoutInside } from '../../agent/idmap.ts';
import { NameIndex } from '../../agent/names.ts';
import type { IdMap } from '../../config/types.ts';

const NONE = { mode: 'none', anonuid: 65534, anongid: 65534 } as const;
const OVERFLOW = { uid: 65534, gid: 65534 };
// Three extents written out of order: a binary search over them as given misses the first two.
const UNSORTED: IdMap = [
  { inside: 200, outside: 7000, count: 10 },
  { inside: 0, outside: 5000, count: 10 },
  { inside: 100, outside: 6000, count: 10 },
];

describe('unit: the pure core at the edges mutation testing found', () => {
  it('a view made from extents out of order still finds every id, both ways (compileMap sorts)', () => {
    const v = makeView('v', NONE, UNSORTED, UNSORTED);
    assert.deepEqual(
      [5, 105, 205].map((id) => mapId(v, HOST_VIEW, 'uid', id, OVERFLOW)),
      [5005, 6005, 7005],
    );
    assert.deepEqual(
      [5005, 6005, 7005].map((id) => mapId(HOST_VIEW, v, 'gid', id, OVERFLOW)),
      [5, 105, 205],
    );
  });

  it('an empty chain maps nothing', () => {
    assert.deepEqual(chainToHost([]), []);
  });

  it('an id its own context does not map is the overflow id in a context that maps host id 0', () => {
    const from = makeView('from', NONE, [{ inside: 0, outside: 5000, count: 10 }], [{ inside: 0, outside: 5000, count: 10 }]);
    const zero = makeView('zero', NONE, [{ inside: 0, outside: 0, count: 100 }], [{ inside: 0, outside: 0, count: 100 }]);
    assert.equal(mapId(from, zero, 'uid', 10, OVERFLOW), 65534);
  });

  it("root squash of a one-id extent leaves nothing of it, and of an extent's last id leaves the rest whole", () => {
    assert.deepEqual(withoutInside([{ inside: 0, outside: 1000, count: 1 }], 0), []);
    assert.deepEqual(withoutInside([{ inside: 0, outside: 1000, count: 10 }], 9), [{ inside: 0, outside: 1000, count: 9 }]);
    // And an id inside an extent cuts it in two, the second part shifted past it on both sides.
    assert.deepEqual(withoutInside([{ inside: 0, outside: 1000, count: 10 }], 3), [
      { inside: 0, outside: 1000, count: 3 },
      { inside: 4, outside: 1004, count: 6 },
    ]);
  });

  it('bindfs cannot show a view whose gid map is an offset but whose uid map is not, nor the reverse', () => {
    const offset = [{ inside: 0, outside: 1000, count: 10 }];
    const two = [
      { inside: 0, outside: 1000, count: 5 },
      { inside: 5, outside: 9000, count: 5 },
    ];
    assert.equal(bindfsOptions({ kind: 'idmap', maps: { uid: two, gid: offset } }), null);
    assert.equal(bindfsOptions({ kind: 'idmap', maps: { uid: offset, gid: two } }), null);
    assert.deepEqual(bindfsOptions({ kind: 'idmap', maps: { uid: offset, gid: offset } }), ['-o', 'ro', '--uid-offset=1000', '--gid-offset=1000']);
  });

  it("names: extents out of order, a name that is no id name, and a user's primary group from the gid map", () => {
    const names = new NameIndex([{ label: 'c', parent: 'host', uid: UNSORTED, gid: [{ inside: 0, outside: 90000, count: 300 }] }]);
    assert.equal(names.byName('uid', 'c.105')?.host, 6005);
    assert.equal(names.byName('uid', 'c.205')?.host, 7005);
    for (const bad of ['nonsense', 'c', 'c.', '.5', '']) assert.equal(names.byName('uid', bad), null, bad);
    const u = names.byName('uid', 'c.105')!;
    assert.equal(names.sibling('uid', u), 90105, "a uid's sibling is in the gid map");
    const g = names.byName('gid', 'c.105')!;
    assert.equal(names.sibling('gid', g), 6005, "a gid's sibling is in the uid map");
  });

  it('extents: a text of only commas is a broken first extent, not an empty map', () => {
    assert.equal(parseExtents(','), 'extent 1 ("") must be three numbers "INSIDE OUTSIDE COUNT"');
  });

  it("intervals: touching is not overlapping, either way round; a map's host ids are its outside side", () => {
    assert.equal(intervalsOverlap({ start: 0, end: 10 }, { start: 10, end: 20 }), false);
    assert.equal(intervalsOverlap({ start: 10, end: 20 }, { start: 0, end: 10 }), false);
    assert.equal(intervalsOverlap({ start: 0, end: 11 }, { start: 10, end: 20 }), true);
    assert.deepEqual(
      outsideIntervals([
        { inside: 0, outside: 1000, count: 10 },
        { inside: 10, outside: 50, count: 5 },
      ]),
      [
        { start: 1000, end: 1010 },
        { start: 50, end: 55 },
      ],
    );
  });

  it('uncovered: the gap between two extents, and nothing after the last that covers the end', () => {
    const m: IdMap = [
      { inside: 20, outside: 0, count: 10 },
      { inside: 0, outside: 100, count: 10 },
    ];
    assert.deepEqual(uncovered(m, 'inside', 0, 30), [{ start: 10, end: 20 }]);
    assert.deepEqual(uncovered(m, 'inside', 5, 25), [{ start: 10, end: 20 }]);
    assert.deepEqual(uncovered(m, 'inside', 0, 40), [
      { start: 10, end: 20 },
      { start: 30, end: 40 },
    ]);
  });
});

// The record of the contexts in force read back without valibot (plainInForceEntry) against valibot
// itself: whatever the plain check accepts, valibot accepts with the same output; an entry as the
// agent writes one (no [delegate], no children) is taken by the plain check.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { checkedInForceEntry, plainInForceEntry } from '../../agent/coord/state.ts';

const id = fc.oneof(fc.nat(0xfffffffe), fc.constantFrom(0, 65534, 0xfffffffe));
const extent = fc.record({ inside: id, outside: id, count: fc.integer({ min: 1, max: 0xffffffff }) });
const entry = fc.record(
  {
    label: fc.constantFrom('c00001', 'web', 'a-b'),
    file: fc.constantFrom('/etc/userns.d/c00001.conf', '/x'),
    parent: fc.constantFrom('host', 'web'),
    owner: fc.record({ uid: id, gid: id, name: fc.option(fc.constantFrom('root', 'alice'), { nil: null }) }),
    uidMap: fc.array(extent, { minLength: 1, maxLength: 3 }),
    gidMap: fc.array(extent, { minLength: 1, maxLength: 3 }),
    autoSize: fc.option(fc.integer({ min: 1, max: 0xffffffff }), { nil: null }),
    setgroups: fc.constantFrom('allow', 'deny'),
    create: fc.constantFrom('lazy', 'eager'),
    squash: fc.record({ mode: fc.constantFrom('none', 'root', 'all'), anonuid: id, anongid: id }),
    access: fc.record({ uids: fc.array(id, { maxLength: 3 }), gids: fc.array(id, { maxLength: 3 }) }),
    ownerIds: fc.constantFrom('delegated', 'any'),
    lines: fc.constant({ '': 1, uid_map: 2 }),
  },
  { requiredKeys: ['label', 'file', 'parent', 'owner', 'uidMap', 'gidMap', 'autoSize', 'setgroups', 'create', 'squash', 'access'] },
);

/** What a corrupted or hostile record may hold where a field should be. */
const junk = fc.oneof(
  fc.constantFrom(null, true, false, 0, -0, -1, 1.5, 0xffffffff, 2 ** 32, 2 ** 53, Number.NaN, '', 'x', '/x', 'allow', 'root', [], {}, [0], [{}], { uid: 0 }),
  fc.jsonValue({ maxDepth: 2 }),
  // One more than valibot's bounds: extents of a map, ids of an access list.
  fc.constant(Array.from({ length: 341 }, () => ({ inside: 0, outside: 0, count: 1 }))),
  fc.constant(Array.from({ length: 65537 }, () => 0)),
);
const paths = [
  ['label'],
  ['file'],
  ['parent'],
  ['owner'],
  ['owner', 'uid'],
  ['owner', 'gid'],
  ['owner', 'name'],
  ['owner', 'extra'],
  ['uidMap'],
  ['uidMap', 0],
  ['uidMap', 0, 'inside'],
  ['uidMap', 0, 'count'],
  ['uidMap', 0, 'extra'],
  ['gidMap', 0, 'outside'],
  ['autoSize'],
  ['setgroups'],
  ['create'],
  ['squash'],
  ['squash', 'mode'],
  ['squash', 'anonuid'],
  ['access'],
  ['access', 'uids'],
  ['access', 'gids', 0],
  ['ownerIds'],
  ['delegate'],
  ['children'],
  ['childRanges'],
  ['runtime'],
  ['extra'],
  ['__proto__'],
] as const;

/** `e` with the value at `path` replaced (undefined: the key removed). */
function corrupt(e: Record<string, unknown>, path: readonly (string | number)[], value: unknown): unknown {
  const copy = JSON.parse(JSON.stringify(e)) as Record<string, unknown>;
  let at: Record<string | number, unknown> = copy;
  for (const k of path.slice(0, -1)) {
    const next = at[k];
    if (typeof next !== 'object' || next === null) return copy;
    at = next as Record<string | number, unknown>;
  }
  const last = path[path.length - 1];
  if (value === undefined) delete at[last];
  else Object.defineProperty(at, last, { value, enumerable: true, writable: true, configurable: true });
  return copy;
}

describe('property: the record of contexts in force read back', () => {
  it("takes an entry as the agent writes one without valibot, with valibot's output", () => {
    fc.assert(
      fc.property(entry, (e) => {
        const plain = plainInForceEntry(e);
        assert.notEqual(plain, null, JSON.stringify(e));
        assert.deepStrictEqual(plain, checkedInForceEntry(e));
      }),
      { numRuns: 500 },
    );
  });

  it('accepts nothing valibot refuses, and gives what valibot gives for what it accepts, however the entry is corrupted', () => {
    const change = fc.tuple(fc.constantFrom(...paths), fc.option(junk, { nil: undefined, freq: 6 }));
    fc.assert(
      fc.property(entry, fc.array(change, { minLength: 1, maxLength: 3 }), (e, changes) => {
        let c: unknown = e;
        for (const [path, value] of changes) c = corrupt(c as Record<string, unknown>, path, value);
        const plain = plainInForceEntry(c);
        if (plain === null) return;
        const checked = checkedInForceEntry(c);
        // Said shortly: assert's diff of two entries with 65,537 ids each would not end.
        assert.ok(checked !== null, `valibot refuses what the plain check takes: ${JSON.stringify(c).slice(0, 400)}`);
        assert.deepStrictEqual(plain, checked, JSON.stringify(c).slice(0, 400));
      }),
      { numRuns: 3000 },
    );
  });
});

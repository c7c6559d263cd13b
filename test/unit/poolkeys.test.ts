// The shared pool's keys by example: what is read from etcd is input (SPEC §12), each entry and
// index key judged on its own, in the words an admin reads; layout 1's document as older agents
// keep it.
import assert from 'node:assert/strict';
import { EMPTY_DOC, parseDoc } from '../../agent/coord/pooldoc.ts';
import type { PoolDoc } from '../../agent/coord/pooldoc.ts';
import { CHUNK, idsKey, indexChunks, indexProblem, parseEntry, parseIndex } from '../../agent/coord/poolkeys.ts';
import type { IndexEntry } from '../../agent/coord/poolkeys.ts';

const P = '/usernsd/';
const key = (start: number, end: number, label: string, extra: Partial<IndexEntry> = {}): IndexEntry => ({ start, end, label, valid: true, ...extra });

describe('unit: the shared pool kept one key per label, by example', () => {
  it('reads an entry as an entry only: a label, JSON, a kind, ids that exist; a static entry merged', () => {
    assert.deepEqual(parseEntry('host', '{}'), { invalid: 'not a context label: "host" is reserved' });
    assert.deepEqual(parseEntry('x', '{'), { invalid: 'not JSON' });
    assert.match((parseEntry('x', '{"start":1,"size":2,"by":"a","at":"t"}') as { invalid: string }).invalid, /^kind: /);
    assert.match((parseEntry('x', '{"kind":"auto","start":-5,"size":2,"by":"a","at":"t"}') as { invalid: string }).invalid, /^start: /);
    assert.deepEqual(parseEntry('x', JSON.stringify({ kind: 'auto', start: 0xfffffff0, size: 65536, by: 'a', at: 't' })), {
      invalid: 'size: the range ends past the last id',
    });
    assert.deepEqual(
      parseEntry(
        'x',
        JSON.stringify({
          kind: 'static',
          intervals: [
            { start: 20, end: 30 },
            { start: 10, end: 20 },
          ],
          by: 'a',
          at: 't',
        }),
      ),
      { kind: 'static', intervals: [{ start: 10, end: 30 }], by: 'a', at: 't' },
    );
    assert.match(
      (parseEntry('x', JSON.stringify({ kind: 'static', intervals: [{ start: 10, end: 10 }], by: 'a', at: 't' })) as { invalid: string }).invalid,
      /must end after it starts/,
    );
  });

  it('reads an index key, named by the id after its interval: a key not named as one holds nothing; a value that cannot be read holds its last id', () => {
    assert.equal(idsKey(P, { start: 200, end: 300 }), '/usernsd/ids/0000012c-000000c8');
    assert.equal(parseIndex(P, '/usernsd/ids/junk', '{"label":"x"}'), null);
    assert.equal(parseIndex(P, '/usernsd/ids/0000012C-000000C8', '{"label":"x"}'), null, 'upper case is not the index');
    assert.equal(parseIndex(P, '/usernsd/ids/0000012c-0000012c', '{"label":"x"}'), null, 'no ids');
    assert.equal(parseIndex(P, '/usernsd/ids/0000012c', '{"label":"x"}'), null, 'no first id');
    assert.deepEqual(parseIndex(P, idsKey(P, { start: 200, end: 300 }), '{"label":"x","kind":"auto","by":"h"}'), key(200, 300, 'x', { kind: 'auto', by: 'h' }));
    assert.deepEqual(
      parseIndex(P, idsKey(P, { start: 200, end: 300 }), 'null'),
      { start: 200, end: 300, label: '', valid: false },
      'its ids held all the same',
    );
    assert.deepEqual(parseIndex(P, idsKey(P, { start: 200, end: 300 }), null), { start: 200, end: 300, label: '', valid: false }, 'read without its value');
    const big = CHUNK + 300;
    assert.deepEqual(parseIndex(P, idsKey(P, { start: 300, end: big }), '{"label":"x"}'), key(300, big, 'x', { kind: undefined, by: undefined }), 'CHUNK ids');
    assert.equal(parseIndex(P, idsKey(P, { start: 299, end: big }), '{"label":"x"}'), null, 'more than CHUNK ids is not a key of the index');
  });

  it("judges an entry's ids against the index around them, naming what is in the way", () => {
    const mine = [{ start: 100, end: 200 }];
    assert.equal(indexProblem('m', mine, [key(0, 100, 'o'), key(100, 200, 'm'), key(200, 300, 'p')]), null);
    assert.equal(
      indexProblem('m', mine, [key(0, 101, 'o', { kind: 'static', by: 'h1' }), key(100, 200, 'm')]),
      "it overlaps o's static range 0-100 (configured on h1)",
    );
    assert.equal(indexProblem('m', mine, [key(100, 200, 'o', { kind: 'auto', by: 'h2' })]), "it overlaps o's range 100-199 (allocated by h2)");
    assert.equal(indexProblem('m', mine, [key(150, 200, 'm')]), "it overlaps m's range 150-199", 'its own key with another start is not its own');
    assert.equal(indexProblem('m', mine, [key(100, 200, 'm'), key(150, 151, '', { valid: false })]), 'it overlaps ids 150 (an index key that is not valid)');
    assert.equal(indexProblem('m', mine, []), "the pool's index has no key for its ids 100-199");
    const wide = [{ start: 0, end: 2 * CHUNK + 5 }];
    assert.deepEqual(indexChunks(wide), [
      { start: 0, end: CHUNK },
      { start: CHUNK, end: 2 * CHUNK },
      { start: 2 * CHUNK, end: 2 * CHUNK + 5 },
    ]);
    assert.equal(
      indexProblem(
        'w',
        wide,
        indexChunks(wide)
          .slice(0, 2)
          .map((c) => key(c.start, c.end, 'w')),
      ),
      `the pool's index has no key for its ids ${2 * CHUNK}-${2 * CHUNK + 4}`,
    );
    assert.equal(
      indexProblem(
        'w',
        wide,
        indexChunks(wide).map((c) => key(c.start, c.end, 'w')),
      ),
      null,
    );
  });

  it("reads layout 1's document as older agents keep it: nothing is the empty document; another version or no JSON refuses it; a bad entry is set aside", () => {
    assert.deepEqual(parseDoc(null), EMPTY_DOC);
    assert.equal(parseDoc('{'), 'the shared pool document is not JSON');
    assert.match(parseDoc('{"version":2}') as string, /^the shared pool document is not version 1 of usernsd's \(written by a newer agent\?\)$/);
    const d = parseDoc(
      JSON.stringify({
        version: 1,
        ranges: { ok: { start: 65536, size: 65536, by: 'a', at: 't' }, nosize: { start: 0, by: 'a', at: 't' } },
        statics: { backwards: { intervals: [{ start: 10, end: 10 }], by: 'b', at: 't' } },
      }),
    ) as PoolDoc;
    assert.deepEqual(Object.keys(d.ranges), ['ok']);
    assert.deepEqual([...d.invalid!.ranges.keys(), ...d.invalid!.statics.keys()], ['nosize', 'backwards']);
    assert.equal(d.invalid!.statics.get('backwards')!.why, 'intervals.0: an interval must end after it starts');
  });
});

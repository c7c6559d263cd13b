// The shared pool's keys by example: what is read from etcd is input (SPEC §12), each entry and
// index key judged on its own, in the words an admin reads; layout 1's document as older agents
// keep it.
import assert from 'node:assert/strict';
import { EMPTY_DOC, parseDoc } from '../../agent/coord/pooldoc.ts';
import type { PoolDoc } from '../../agent/coord/pooldoc.ts';
import { idsKey, indexProblem, parseEntry, parseIndex } from '../../agent/coord/poolkeys.ts';
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

  it('reads an index key: a key not named as one holds nothing; a value that cannot be read holds its first id', () => {
    assert.equal(idsKey(P, 255), '/usernsd/ids/000000ff');
    assert.equal(parseIndex(P, '/usernsd/ids/junk', '{"end":5,"label":"x"}'), null);
    assert.equal(parseIndex(P, '/usernsd/ids/000000FF', '{"end":300,"label":"x"}'), null, 'upper case is not the index');
    assert.deepEqual(parseIndex(P, idsKey(P, 255), '{"end":300,"label":"x","kind":"auto","by":"h"}'), key(255, 300, 'x', { kind: 'auto', by: 'h' }));
    assert.deepEqual(parseIndex(P, idsKey(P, 255), '{"end":255,"label":"x"}'), { start: 255, end: 256, label: '', valid: false });
    assert.deepEqual(parseIndex(P, idsKey(P, 255), 'null'), { start: 255, end: 256, label: '', valid: false });
  });

  it("judges an entry's ids against the index around them, naming what is in the way", () => {
    const mine = [{ start: 100, end: 200 }];
    assert.equal(indexProblem('m', mine, key(0, 100, 'o'), [key(100, 200, 'm')]), null);
    assert.equal(
      indexProblem('m', mine, key(0, 101, 'o', { kind: 'static', by: 'h1' }), [key(100, 200, 'm')]),
      "it overlaps o's static range 0-100 (configured on h1)",
    );
    assert.equal(indexProblem('m', mine, null, [key(100, 200, 'o', { kind: 'auto', by: 'h2' })]), "it overlaps o's range 100-199 (allocated by h2)");
    assert.equal(indexProblem('m', mine, null, [key(100, 150, 'm')]), "it overlaps m's range 100-149", 'its own key with another end is not its own');
    assert.equal(indexProblem('m', mine, null, [key(100, 200, 'm'), key(150, 151, '', { valid: false })]), 'it overlaps an index key at 150 that is not valid');
    assert.equal(indexProblem('m', mine, null, []), "the pool's index has no key for its ids 100-199");
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

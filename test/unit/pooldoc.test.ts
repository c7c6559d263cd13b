// The shared pool document's decisions by example (issue 27: the mutants the property test let
// through): each conflict with the words an admin reads, the document read as untrusted input.
import assert from 'node:assert/strict';
import { decide, EMPTY_DOC, parseDoc, serializeDoc } from '../../agent/coord/pooldoc.ts';
import type { PoolDoc } from '../../agent/coord/pooldoc.ts';

const POOL = { start: 1_048_576, end: 1_048_576 + 8 * 65536 - 1, size: 65536 }; // 8 slots: 16*65536 .. 23*65536
const slot = (k: number) => 1_048_576 + k * 65536;
const doc = (d: object): PoolDoc => {
  const r = parseDoc(JSON.stringify({ version: 1, ranges: {}, statics: {}, ...d }));
  assert.ok(typeof r !== 'string', r as string);
  return r;
};

describe('unit: the shared pool document, by example', () => {
  it('reads nothing as the empty document, and refuses text that is not a document of this version', () => {
    assert.deepEqual(parseDoc(null), EMPTY_DOC);
    assert.equal(parseDoc('{'), 'the shared pool document is not JSON');
    assert.match(parseDoc('{"version":2}') as string, /^the shared pool document is not version 1 of usernsd's \(written by a newer agent\?\)$/);
    assert.match(parseDoc('[]') as string, /not version 1/);
  });

  it('keeps an entry that is not valid aside (an interval that ends before it starts, a range with no size), and writes it back as it was', () => {
    const raw = { version: 1, ranges: { ok: { start: slot(0), size: 65536, by: 'a', at: 't' }, nosize: { start: slot(1), by: 'a', at: 't' } }, statics: { backwards: { intervals: [{ start: 10, end: 10 }], by: 'b', at: 't' }, good: { intervals: [{ start: 10, end: 20 }, { start: 20, end: 30 }], by: 'b', at: 't' } } };
    const d = parseDoc(JSON.stringify(raw)) as PoolDoc;
    assert.deepEqual(Object.keys(d.ranges), ['ok']);
    assert.deepEqual(Object.keys(d.statics), ['good']);
    assert.deepEqual(d.statics.good.intervals, [{ start: 10, end: 30 }], 'touching intervals merged');
    assert.deepEqual([...d.invalid!.ranges.keys(), ...d.invalid!.statics.keys()], ['nosize', 'backwards']);
    assert.deepEqual(JSON.parse(serializeDoc(d)), { version: 1, ranges: { ok: raw.ranges.ok, nosize: raw.ranges.nosize }, statics: { good: { intervals: [{ start: 10, end: 30 }], by: 'b', at: 't' }, backwards: raw.statics.backwards } });
    const asked = decide(d, [{ label: 'nosize', size: 65536 }], [], POOL, [], 'c', 'now');
    assert.deepEqual(asked.conflicts.map((c) => c.label), ['nosize']);
    assert.match(asked.conflicts[0].message, /^the shared pool's entry for it is not valid \(.*\): it is used for nothing; fix it, or forget it \(usernsctl ranges forget nosize\) to have it allocated anew$/);
  });

  it('refuses a label asked with another size than the pool has, naming both and who allocated it', () => {
    const d = doc({ ranges: { x: { start: slot(2), size: 65536, by: 'hostA', at: 't' } } });
    const r = decide(d, [{ label: 'x', size: 131072 }], [], { ...POOL, size: 131072 }, [], 'hostB', 'now');
    assert.deepEqual(r.decided.size, 0);
    assert.equal(r.next, null);
    assert.deepEqual(r.conflicts, [{ label: 'x', message: 'the shared pool has it with 65536 ids (allocated by hostA), this host asks for 131072: give it the same size everywhere, or forget it (usernsctl ranges forget x) to have it allocated anew' }]);
  });

  it('judges a range another writer put in the pool as its own allocation: outside the pool, or over another label, is refused', () => {
    const outside = doc({ ranges: { far: { start: 65536, size: 65536, by: 'intruder', at: 't' } } });
    const r1 = decide(outside, [{ label: 'far', size: 65536 }], [], POOL, [], 'h', 'now');
    assert.match(r1.conflicts[0].message, /^the shared pool gives it 65536-131071 \(allocated by intruder\), which this host refuses: .*; fix the pool, or forget it \(usernsctl ranges forget far\) to have it allocated anew$/);
    const over = doc({ ranges: { a: { start: slot(3), size: 65536, by: 'h1', at: 't' } }, statics: { s: { intervals: [{ start: slot(3) + 100, end: slot(3) + 200 }], by: 'h2', at: 't' } } });
    const r2 = decide(over, [{ label: 'a', size: 65536 }], [], POOL, [], 'h', 'now');
    assert.match(r2.conflicts[0].message, new RegExp(`which this host refuses: it overlaps s's static range ${slot(3) + 100}-${slot(3) + 199} \\(configured on h2\\)`));
    assert.equal(r2.decided.size, 0);
  });

  it('keeps statics apart: another host\'s ids for the label, an overlap with a range, auto asked for a static label', () => {
    const d = doc({ ranges: { r: { start: slot(4), size: 65536, by: 'h1', at: 't' } }, statics: { s: { intervals: [{ start: 100, end: 200 }], by: 'h1', at: 't' } } });
    const r = decide(d, [{ label: 's', size: 65536 }], [{ label: 's', intervals: [{ start: 100, end: 300 }] }, { label: 't', intervals: [{ start: slot(4) + 10, end: slot(4) + 20 }] }, { label: 'u', intervals: [{ start: 500, end: 600 }] }], POOL, [], 'h2', 'now');
    assert.deepEqual(r.conflicts, [
      { label: 's', message: 'h1 has it with ids 100-199, this host with 100-299: hosts that share storage must give a label the same ids' },
      { label: 't', message: `its ids ${slot(4) + 10}-${slot(4) + 19} overlap r's range ${slot(4)}-${slot(4) + 65535} (allocated by h1) in the shared pool: one of the two files must change` },
      { label: 's', message: 'h1 configures it with static ids: a label is static everywhere or auto everywhere' },
    ]);
    assert.deepEqual(r.next?.statics.u, { intervals: [{ start: 500, end: 600 }], by: 'h2', at: 'now' }, 'the one claim that fits is registered');
    assert.deepEqual(decide(r.next, [], [{ label: 'u', intervals: [{ start: 500, end: 600 }] }], POOL, [], 'h3', 'later').next, null, 'the same claim again changes nothing');
  });

  it('says so when the pool is full, and gives nothing', () => {
    const full = doc({ ranges: Object.fromEntries(Array.from({ length: 8 }, (_, k) => [`l${k}`, { start: slot(k), size: 65536, by: 'h', at: 't' }])) });
    const r = decide(full, [{ label: 'more', size: 65536 }], [], POOL, [], 'h', 'now');
    assert.deepEqual(r.conflicts, [{ label: 'more', message: `the pool ${POOL.start}-${POOL.end} is exhausted: no free range of 65536 ids is left (widen [pool] range or remove contexts)` }]);
    assert.equal(r.next, null);
  });
});

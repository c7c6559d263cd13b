// What the agent reads from outside its memory (config/untrusted.ts, SPEC §12): each shape by the
// entry that must fail it — a control character in another host's text, an id map of the wrong
// shape, the reserved label — and the reason kept short. Found unguarded by mutation testing.
import assert from 'node:assert/strict';
import * as v from 'valibot';
import { ALLOCATION, checkEntries, IDMAP, issueText, TEXT } from '../../config/untrusted.ts';

describe('unit: untrusted input, entry by entry', () => {
  it('text from another host: any control character anywhere refuses it; plain text of at most 256 characters passes', () => {
    for (const bad of ['\x1b[31m', 'a\x1bb', 'ok\x7f', 'x\n', 'y'.repeat(257)]) assert.equal(v.safeParse(TEXT, bad).success, false, JSON.stringify(bad));
    for (const good of ['', 'host-a', '2026-12-05T21:00:00Z', 'é', 'y'.repeat(256)]) assert.equal(v.safeParse(TEXT, good).success, true, good);
  });

  it('an id map: three fields of ids per extent, at most 340 extents', () => {
    assert.equal(v.safeParse(IDMAP, [{ inside: 0, outside: 100000, count: 65536 }]).success, true);
    for (const bad of [
      [{}],
      [{ inside: 0, outside: 100000 }],
      [{ inside: -1, outside: 0, count: 1 }],
      [{ inside: 0, outside: 0, count: 0 }],
      Array.from({ length: 341 }, (_, k) => ({ inside: k, outside: k, count: 1 })),
    ]) {
      assert.equal(v.safeParse(IDMAP, bad).success, false, JSON.stringify(bad).slice(0, 60));
    }
  });

  it('entries under labels: "host", and anything that is no label, are bad entries with the reason, kept as they came', () => {
    const r = checkEntries(
      { host: { start: 0, size: 1 }, '../x': { start: 0, size: 1 }, ok: { start: 65536, size: 65536 }, worse: { start: 'x', size: 1 } },
      ALLOCATION,
    );
    assert.deepEqual([...r.good.keys()], ['ok']);
    assert.deepEqual(r.bad.get('host'), { why: 'not a context label: "host" is reserved', raw: { start: 0, size: 1 } });
    assert.match(r.bad.get('../x')!.why, /^not a context label: /);
    assert.equal(r.bad.get('worse')!.why, 'start: Invalid type: Expected number but received "x"');
  });

  it('a reason is cut at 200 characters, however long the value it quotes', () => {
    const r = v.safeParse(v.object({ k: v.literal('a') }), { k: 'b'.repeat(500) });
    assert.equal(r.success, false);
    const why = issueText(r.issues);
    assert.equal(why.length, 200);
    assert.ok(why.startsWith('k: Invalid type: Expected "a" but received "bbb'));
  });
});

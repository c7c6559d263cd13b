// LayeredMap against the Map it stands for: the same calls on both, over copies of copies, hold the
// same entries in the same order.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LayeredMap } from '../../config/layered.ts';

type Op = { op: 'set'; key: number; value: number } | { op: 'delete'; key: number } | { op: 'copy' } | { op: 'clear' };

describe('property: LayeredMap', () => {
  it('holds what a Map copied and changed the same way holds, in its order, over copies of copies', () => {
    const key = fc.nat(100);
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 6, arbitrary: fc.record({ op: fc.constant('set' as const), key, value: fc.nat(1000) }) },
      { weight: 3, arbitrary: fc.record({ op: fc.constant('delete' as const), key }) },
      { weight: 2, arbitrary: fc.constant({ op: 'copy' as const }) },
      { weight: 1, arbitrary: fc.constant({ op: 'clear' as const }) },
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(key, fc.nat(1000)), { maxLength: 120 }), fc.array(op, { maxLength: 150 }), (start, ops) => {
        const base = new Map(start);
        const frozen = [...base];
        let model = new Map(base);
        let layered: Map<number, number> = LayeredMap.copyOf(base);
        const copies: [Map<number, number>, [number, number][]][] = [];
        for (const o of ops) {
          if (o.op === 'set') {
            assert.equal(layered.set(o.key, o.value), layered);
            model.set(o.key, o.value);
          } else if (o.op === 'delete') assert.equal(layered.delete(o.key), model.delete(o.key), `delete ${o.key}`);
          else if (o.op === 'clear') {
            layered.clear();
            model.clear();
          } else {
            // The map copied is handed out: it must not change when its copy does.
            copies.push([layered, [...model]]);
            layered = LayeredMap.copyOf(layered);
            model = new Map(model);
          }
          assert.equal(layered.size, model.size);
          assert.deepEqual([...layered], [...model]);
          assert.deepEqual([...layered.keys()], [...model.keys()]);
          assert.deepEqual([...layered.values()], [...model.values()]);
          for (let k = 0; k <= 100; k++) {
            assert.equal(layered.has(k), model.has(k), `has ${k}`);
            assert.equal(layered.get(k), model.get(k), `get ${k}`);
          }
        }
        const seen: [number, number][] = [];
        layered.forEach((v, k, m) => {
          assert.equal(m, layered);
          seen.push([k, v]);
        });
        assert.deepEqual(seen, [...model]);
        assert.deepEqual(new Map(layered), model);
        for (const [m, had] of copies) assert.deepEqual([...m], had, 'a copy handed out stays as it was');
        assert.deepEqual([...base], frozen, 'the base is never changed');
      }),
      { numRuns: 500 },
    );
  });

  it('holds what a Map holds after many changes in one layer (its entries made in one pass over the base)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(100), fc.nat(1000)), { minLength: 60, maxLength: 120 }),
        fc.array(fc.tuple(fc.boolean(), fc.nat(100), fc.nat(1000)), { minLength: 40, maxLength: 150 }),
        (start, ops) => {
          const model = new Map(start);
          const layered = LayeredMap.copyOf(new Map(start));
          for (const [set, k, v] of ops) {
            if (set) {
              layered.set(k, v);
              model.set(k, v);
            } else assert.equal(layered.delete(k), model.delete(k));
          }
          assert.deepEqual([...layered], [...model]);
          assert.deepEqual([...layered.values()], [...model.values()]);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('keeps one layer: a copy of a copy shares the first base until the changes outgrow a sixteenth of it', () => {
    const base = new Map(Array.from({ length: 160 }, (_, i) => [i, i] as const));
    let m = LayeredMap.copyOf(base);
    for (let i = 0; i < 10; i++) m = LayeredMap.copyOf(m.set(i, -i));
    assert.equal((m as unknown as { base: unknown }).base, base, 'ten changes of 160: the same base');
    m = LayeredMap.copyOf(m.set(10, -10));
    assert.notEqual((m as unknown as { base: unknown }).base, base, 'eleven: copied into a new base');
    assert.deepEqual([...m].slice(0, 12), [...Array.from({ length: 11 }, (_, i) => [i, -i]), [11, 11]]);
  });
});

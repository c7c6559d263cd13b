// Status figures: nearest-rank percentiles and a bounded latency window.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LATENCY_WINDOW, percentile, Stats } from '../../agent/stats.ts';

describe('stats', () => {
  it('percentile is the nearest rank: at least p% of the samples are at or below it', () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: 0, max: 1e4, noNaN: true }), { minLength: 1, maxLength: 200 }), fc.integer({ min: 1, max: 100 }), (xs, p) => {
        const s = [...xs].sort((a, b) => a - b);
        const v = percentile(s, p);
        assert.ok(s.includes(v));
        assert.ok(s.filter((x) => x <= v).length >= (p / 100) * s.length);
        assert.ok(s.filter((x) => x < v).length < (p / 100) * s.length);
      }),
    );
    assert.equal(percentile([], 50), 0);
    assert.equal(percentile([1, 2, 3, 4], 50), 2);
    assert.equal(percentile([1, 2, 3, 4], 99), 4);
  });

  it('counts requests by method and errors by code, and keeps only the last window of latencies', () => {
    const s = new Stats();
    for (let i = 0; i < LATENCY_WINDOW + 10; i++) s.request('map', i % 2 ? 'E_INVALID' : null, i < 10 ? 1000 : 1);
    s.request('resolve', null, 5);
    assert.deepEqual(s.counterValues(), { 'errors.E_INVALID': (LATENCY_WINDOW + 10) / 2, 'requests.map': LATENCY_WINDOW + 10, 'requests.resolve': 1 });
    const l = s.latency();
    assert.equal(l.map.count, LATENCY_WINDOW + 10);
    assert.equal(l.map.max, 1, 'the ten slow early samples have left the window');
    assert.deepEqual(l.resolve, { count: 1, p50: 5, p90: 5, p99: 5, max: 5 });
  });
});

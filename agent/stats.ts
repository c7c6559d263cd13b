// Counters and request latency for status: per method and per error code, percentiles over a recent window.

/** Latencies kept per method: enough for stable percentiles, bounded memory under any load. */
export const LATENCY_WINDOW = 1024;

export type Percentiles = { readonly count: number; readonly p50: number; readonly p90: number; readonly p99: number; readonly max: number };

/** Nearest-rank percentile of a sorted list. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export class Stats {
  private readonly counters = new Map<string, number>();
  private readonly windows = new Map<string, { samples: number[]; next: number; total: number; key: string }>();

  count(name: string, by = 1): void {
    this.counters.set(name, (this.counters.get(name) ?? 0) + by);
  }

  /** One answered request: counted by method and, when it failed, by error code; its latency kept. */
  request(method: string, code: string | null, ms: number): void {
    let w = this.windows.get(method);
    if (!w) this.windows.set(method, (w = { samples: [], next: 0, total: 0, key: `requests.${method}` }));
    this.count(w.key);
    if (code) this.count(`errors.${code}`);
    if (w.samples.length < LATENCY_WINDOW) w.samples.push(ms);
    else w.samples[w.next] = ms;
    w.next = (w.next + 1) % LATENCY_WINDOW;
    w.total++;
  }

  counterValues(): Record<string, number> {
    return Object.fromEntries([...this.counters].sort(([a], [b]) => a.localeCompare(b)));
  }

  /** Milliseconds, over the last LATENCY_WINDOW requests of each method; count is all requests. */
  latency(): Record<string, Percentiles> {
    const out: Record<string, Percentiles> = {};
    for (const [method, w] of [...this.windows].sort(([a], [b]) => a.localeCompare(b))) {
      const s = [...w.samples].sort((a, b) => a - b);
      const r = (v: number) => +v.toFixed(3);
      out[method] = { count: w.total, p50: r(percentile(s, 50)), p90: r(percentile(s, 90)), p99: r(percentile(s, 99)), max: r(s.at(-1) ?? 0) };
    }
    return out;
  }
}

// Metrics in the Prometheus text format (prom-client), for the `metrics` method, `usernsctl
// metrics` and the optional HTTP listener. Every label value comes from a closed set — method
// names the agent serves, error codes, states — never from a client or a context label, so the
// number of series is bounded whatever clients send.
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import type { Counter, Metric, Registry } from 'prom-client';
import { ERROR_CODES } from './errors.ts';

const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5];
const CREATE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5];

/** The exposition's content type (prom-client's Registry.contentType, known before it is loaded). */
const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type DelegationStep = 'set_up' | 'tear_down' | 'reconcile' | 'exec_start' | 'exec_stop';

/** What the metrics read from the agent at scrape time. */
export type MetricsSource = {
  contextStates(): Record<string, number>;
  connections(): number;
  configErrors(): number;
  views(): { recorded: number; namespaces: number };
  /** null: the pool is this host's alone (coordinator = local). */
  coordinator(): { reachable: boolean; waiting: number } | null;
};

/** The agent's own counters, in the order they are exposed. */
const COUNTERS = {
  namespaces: ['usernsd_namespaces_total', 'User namespaces created and released.'],
  reloads: [
    'usernsd_reloads_total',
    'Reloads, by outcome: ok (put in force as written), partial (put in force, some context files refused) or failed (the settings file has errors: nothing changed).',
  ],
  upcalls: ['usernsd_upcalls_total', 'request-key upcalls that reached the agent, by outcome: answered or rejected.'],
  userdb: [
    'usernsd_userdb_lookups_total',
    'userdb lookups (nss-systemd), by kind (user, group, memberships, other) and outcome (found, none, bad; an id of a context the caller may not use counts as none).',
  ],
  delegationFailures: [
    'usernsd_delegation_failures_total',
    'Failures to set up, tear down or reconcile what contexts are given ([delegate]), by step (set_up, tear_down, reconcile, exec_start, exec_stop).',
  ],
  views: ['usernsd_views_total', 'Views made, by mechanism (idmapped, bindfs) and purpose (mount, enter).'],
} as const;
type CounterName = keyof typeof COUNTERS;

/** A histogram's buckets as plain numbers (not cumulative: summed at scrape time). */
type Buckets = { buckets: number[]; sum: number; count: number };
const emptyBuckets = (n: number): Buckets => ({ buckets: new Array<number>(n).fill(0), sum: 0, count: 0 });

function observeIn(h: Buckets, bounds: readonly number[], s: number): void {
  let i = 0;
  while (i < bounds.length && s > bounds[i]) i++;
  if (i < bounds.length) h.buckets[i]++;
  h.sum += s;
  h.count++;
}

/** A histogram's series as prom-client formats them: cumulative buckets, +Inf, sum and count. */
function histogramValues(name: string, bounds: readonly number[], h: Buckets, labels: Record<string, string> = {}): object[] {
  let acc = 0;
  return [
    ...bounds.map((le, i) => ({ labels: { le, ...labels }, value: (acc += h.buckets[i]), metricName: `${name}_bucket` })),
    { labels: { le: '+Inf', ...labels }, value: h.count, metricName: `${name}_bucket` },
    { labels, value: h.sum, metricName: `${name}_sum` },
    { labels, value: h.count, metricName: `${name}_count` },
  ];
}

/**
 * Every figure is counted here as plain numbers; prom-client (and the OpenTelemetry API it loads),
 * about 50 ms of every start, is loaded at the first scrape and reads them then. The process CPU
 * counters are given what was spent before it, so they count from the process' start; Node's
 * collection histogram (usernsd_nodejs_gc_duration_seconds) counts from the first scrape.
 */
export class Metrics {
  private readonly methods: ReadonlySet<string>;
  private readonly source: MetricsSource;
  /** Requests by "method code" and latency buckets by method: read at scrape time. */
  private readonly counts = new Map<string, { method: string; code: string; n: number }>();
  private readonly latency = new Map<string, Buckets>();
  /** The counters by name, each by its labels' values. */
  private readonly tallies = new Map<CounterName, Map<string, { labels: Record<string, string>; n: number }>>();
  private readonly createLatency = emptyBuckets(CREATE_BUCKETS.length);
  private registry: Promise<Registry> | null = null;

  constructor(methods: readonly string[], source: MetricsSource) {
    this.methods = new Set(methods);
    this.source = source;
    for (const name of Object.keys(COUNTERS) as CounterName[]) this.tallies.set(name, new Map());
    // Every series that can exist is there from the start, at zero: rates need no first event.
    for (const m of methods) this.counts.set(m, { method: m, code: 'ok', n: 0 });
    for (const event of ['created', 'released']) this.count('namespaces', { event }, 0);
    for (const outcome of ['ok', 'partial', 'failed']) this.count('reloads', { outcome }, 0);
    for (const outcome of ['answered', 'rejected']) this.count('upcalls', { outcome }, 0);
  }

  private count(name: CounterName, labels: Record<string, string>, by = 1): void {
    const tally = this.tallies.get(name)!;
    const key = Object.values(labels).join('\0');
    const t = tally.get(key);
    if (t) t.n += by;
    else tally.set(key, { labels, n: by });
  }

  /** One answered request: a map lookup and a few additions (this is on every request's path). */
  request(method: string, code: string | null, ms: number): void {
    const c = this.counts.get(code === null ? method : `${method} ${code}`) ?? this.countFor(method, code);
    c.n++;
    let h = this.latency.get(c.method);
    if (!h) this.latency.set(c.method, (h = emptyBuckets(LATENCY_BUCKETS.length)));
    observeIn(h, LATENCY_BUCKETS, ms / 1000);
  }

  /** The entry a request counts under: by its own name only when the agent serves it, never by a name a client sent. */
  private countFor(method: string, code: string | null): { method: string; code: string; n: number } {
    const m = this.methods.has(method) ? method : 'invalid';
    const k = code === null ? 'ok' : (ERROR_CODES as readonly string[]).includes(code) ? code : 'E_INTERNAL';
    const key = k === 'ok' ? m : `${m} ${k}`;
    let c = this.counts.get(key);
    if (!c) this.counts.set(key, (c = { method: m, code: k, n: 0 }));
    return c;
  }

  created(ms: number): void {
    this.count('namespaces', { event: 'created' });
    observeIn(this.createLatency, CREATE_BUCKETS, ms / 1000);
  }

  released(n = 1): void {
    this.count('namespaces', { event: 'released' }, n);
  }

  /** ok: put in force as written; partial: put in force, some context files refused (the CLI exits 1); failed: the settings file has errors. */
  reloaded(outcome: 'ok' | 'partial' | 'failed'): void {
    this.count('reloads', { outcome });
  }

  upcall(answered: boolean): void {
    this.count('upcalls', { outcome: answered ? 'answered' : 'rejected' });
  }

  userdbLookup(kind: string, outcome: string): void {
    this.count('userdb', { kind, outcome });
  }

  delegationFailed(step: DelegationStep): void {
    this.count('delegationFailures', { step });
  }

  view(mechanism: 'idmapped' | 'bindfs', purpose: 'mount' | 'enter'): void {
    this.count('views', { mechanism, purpose });
  }

  async text(): Promise<string> {
    // A build that failed (prom-client could not be loaded) is tried again at the next scrape.
    this.registry ??= this.build().catch((err: unknown) => {
      this.registry = null;
      throw err;
    });
    return (await this.registry).metrics();
  }

  get contentType(): string {
    return CONTENT_TYPE;
  }

  /** prom-client's registry, made at the first scrape: each family reads the figures above when scraped. */
  private async build(): Promise<Registry> {
    const { collectDefaultMetrics, Gauge, Registry } = await import('prom-client');
    const registry = new Registry();
    const registers = [registry];
    const plain = (name: string, help: string, type: 'counter' | 'histogram', values: () => object[]) =>
      registry.registerMetric({
        name,
        help,
        type,
        aggregator: 'sum',
        get: async () => ({ name, help, type, aggregator: 'sum', values: values() }),
        reset: () => {},
      } as unknown as Metric);
    plain(
      'usernsd_requests_total',
      'Requests answered, by method ("invalid" for a name the agent does not serve) and code ("ok" or the error code).',
      'counter',
      () => [...this.counts.values()].map((c) => ({ labels: { method: c.method, code: c.code }, value: c.n })),
    );
    const h = 'usernsd_request_duration_seconds';
    plain(h, 'Time from a request read to its reply written, by method.', 'histogram', () =>
      [...this.latency].flatMap(([method, l]) => histogramValues(h, LATENCY_BUCKETS, l, { method })),
    );
    const counter = (key: CounterName) => {
      const [name, help] = COUNTERS[key];
      plain(name, help, 'counter', () => [...this.tallies.get(key)!.values()].map((t) => ({ labels: t.labels, value: t.n })));
    };
    counter('namespaces');
    const c = 'usernsd_namespace_create_duration_seconds';
    plain(c, 'Time to create, map, check and pin one namespace.', 'histogram', () => histogramValues(c, CREATE_BUCKETS, this.createLatency));
    for (const key of ['reloads', 'upcalls', 'userdb', 'delegationFailures', 'views'] as const) counter(key);
    const source = this.source;
    new Gauge({
      name: 'usernsd_contexts',
      help: 'Contexts by state: not created, pinned, drift, stale, orphan.',
      labelNames: ['state'],
      registers,
      collect() {
        this.reset();
        for (const [state, n] of Object.entries(source.contextStates())) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'usernsd_connections',
      help: 'Connections open on the main socket.',
      registers,
      collect() {
        this.set(source.connections());
      },
    });
    new Gauge({
      name: 'usernsd_config_errors',
      help: 'Problems in the configuration as last loaded.',
      registers,
      collect() {
        this.set(source.configErrors());
      },
    });
    new Gauge({
      name: 'usernsd_views_recorded',
      help: 'Views made through the agent and recorded for view --list.',
      registers,
      collect() {
        this.set(source.views().recorded);
      },
    });
    new Gauge({
      name: 'usernsd_view_namespaces',
      help: "User namespaces carrying views' idmaps that the agent holds open.",
      registers,
      collect() {
        this.set(source.views().namespaces);
      },
    });
    new Gauge({
      name: 'usernsd_coordinator_reachable',
      help: 'coordinator = etcd: 1 when etcd answered the last request, else 0 (absent for a local pool).',
      registers,
      collect() {
        const c = source.coordinator();
        this.reset();
        if (c) this.set(c.reachable ? 1 : 0);
      },
    });
    new Gauge({
      name: 'usernsd_coordinator_waiting',
      help: 'coordinator = etcd: contexts waiting for their range from etcd.',
      registers,
      collect() {
        const c = source.coordinator();
        this.reset();
        if (c) this.set(c.waiting);
      },
    });
    // The CPU counters count from their registration: what the process spent before it is added.
    const before = process.cpuUsage();
    // Its event-loop delay histogram samples the loop on a timer (every 10 ms by default): an idle
    // agent woke 100 times a second for it. The timer is set to an hour, and the series it feeds
    // removed; usernsd_nodejs_eventloop_lag_seconds, measured at each scrape, stays.
    collectDefaultMetrics({ register: registry, prefix: 'usernsd_', eventLoopMonitoringPrecision: 3_600_000 });
    for (const s of ['min', 'max', 'mean', 'stddev', 'p50', 'p90', 'p99']) registry.removeSingleMetric(`usernsd_nodejs_eventloop_lag_${s}_seconds`);
    // prom-client also exports each of its per-type gauges summed, as a gauge named *_total, which
    // Prometheus reserves for counters (promtool check metrics rejects them). The sum is
    // sum(usernsd_nodejs_active_handles) in PromQL; the per-type gauges stay.
    for (const kind of ['handles', 'requests', 'resources']) registry.removeSingleMetric(`usernsd_nodejs_active_${kind}_total`);
    const cpu = (name: string, micros: number) => (registry.getSingleMetric(`usernsd_process_cpu_${name}_seconds_total`) as Counter).inc(micros / 1e6);
    cpu('user', before.user);
    cpu('system', before.system);
    // (prom-client names the sum process_cpu_seconds_total.)
    (registry.getSingleMetric('usernsd_process_cpu_seconds_total') as Counter).inc((before.user + before.system) / 1e6);
    return registry;
  }
}

/**
 * GET /metrics over HTTP, for a Prometheus that scrapes rather than reading node_exporter's textfile
 * collector. Anything else is 404; nothing but the metrics is served.
 */
export async function listenMetrics(metrics: Metrics, host: string, port: number, log: Logger): Promise<Server> {
  // Loaded here, for an agent that serves /metrics over HTTP: loading it is about 5 ms of a start. And
  // not `import from 'node:http'`: an ES import builds the module's whole namespace, whose lazy
  // getters load Node's fetch (undici), about 45 ms more.
  const { createServer } = process.getBuiltinModule('node:http');
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url !== '/metrics' && !req.url?.startsWith('/metrics?'))) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('usernsd serves /metrics only\n');
      return;
    }
    metrics.text().then(
      (body) => res.writeHead(200, { 'content-type': metrics.contentType }).end(body),
      (err: Error) => {
        log.error({ err: err.message }, 'Failed to collect metrics');
        res.writeHead(500).end();
      },
    );
  });
  server.requestTimeout = 5000;
  server.headersTimeout = 5000;
  server.maxConnections = 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}

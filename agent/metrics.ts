// Metrics in the Prometheus text format (prom-client), for the `metrics` method, `usernsctl
// metrics` and the optional HTTP listener. Every label value comes from a closed set — method
// names the agent serves, error codes, states — never from a client or a context label, so the
// number of series is bounded whatever clients send.
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Metric } from 'prom-client';
import { ERROR_CODES } from './errors.ts';

// Not `import from 'node:http'`: an ES import builds the module's whole namespace, whose lazy
// getters load Node's fetch (undici), about 45 ms of every start for a listener few configure.
const { createServer } = process.getBuiltinModule('node:http');

const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5];
const CREATE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5];

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

export class Metrics {
  readonly registry = new Registry();
  private readonly methods: ReadonlySet<string>;
  /** Requests by "method code" and latency buckets by method: plain numbers, read at scrape time. */
  private readonly counts = new Map<string, { method: string; code: string; n: number }>();
  private readonly latency = new Map<string, { buckets: number[]; sum: number; count: number }>();
  private readonly namespaces: Counter<'event'>;
  private readonly createLatency: Histogram;
  private readonly reloads: Counter<'outcome'>;
  private readonly upcalls: Counter<'outcome'>;
  private readonly userdb: Counter<'kind' | 'outcome'>;
  private readonly viewsMade: Counter<'mechanism' | 'purpose'>;
  private readonly delegationFailures: Counter<'step'>;

  constructor(methods: readonly string[], source: MetricsSource) {
    const registers = [this.registry];
    this.methods = new Set(methods);
    // The two figures every request touches are kept as plain numbers and handed to prom-client
    // only when scraped: its own counters hash their labels on every increment.
    const counts = this.counts;
    const latency = this.latency;
    const plain = (name: string, help: string, type: 'counter' | 'histogram', values: () => object[], reset: () => void) =>
      this.registry.registerMetric({
        name,
        help,
        type,
        aggregator: 'sum',
        get: async () => ({ name, help, type, aggregator: 'sum', values: values() }),
        reset,
      } as unknown as Metric);
    plain(
      'usernsd_requests_total',
      'Requests answered, by method ("invalid" for a name the agent does not serve) and code ("ok" or the error code).',
      'counter',
      () => [...counts.values()].map((c) => ({ labels: { method: c.method, code: c.code }, value: c.n })),
      () => counts.clear(),
    );
    const h = 'usernsd_request_duration_seconds';
    plain(
      h,
      'Time from a request read to its reply written, by method.',
      'histogram',
      () =>
        [...latency].flatMap(([method, l]) => {
          let acc = 0;
          return [
            ...LATENCY_BUCKETS.map((le, i) => ({ labels: { le, method }, value: (acc += l.buckets[i]), metricName: `${h}_bucket` })),
            { labels: { le: '+Inf', method }, value: l.count, metricName: `${h}_bucket` },
            { labels: { method }, value: l.sum, metricName: `${h}_sum` },
            { labels: { method }, value: l.count, metricName: `${h}_count` },
          ];
        }),
      () => latency.clear(),
    );
    this.namespaces = new Counter({ name: 'usernsd_namespaces_total', help: 'User namespaces created and released.', labelNames: ['event'], registers });
    this.createLatency = new Histogram({
      name: 'usernsd_namespace_create_duration_seconds',
      help: 'Time to create, map, check and pin one namespace.',
      buckets: CREATE_BUCKETS,
      registers,
    });
    this.reloads = new Counter({
      name: 'usernsd_reloads_total',
      help: 'Reloads, by outcome: ok (put in force as written), partial (put in force, some context files refused) or failed (the settings file has errors: nothing changed).',
      labelNames: ['outcome'],
      registers,
    });
    this.upcalls = new Counter({
      name: 'usernsd_upcalls_total',
      help: 'request-key upcalls that reached the agent, by outcome: answered or rejected.',
      labelNames: ['outcome'],
      registers,
    });
    this.userdb = new Counter({
      name: 'usernsd_userdb_lookups_total',
      help: 'userdb lookups (nss-systemd), by kind (user, group, memberships, other) and outcome (found, none, bad; an id of a context the caller may not use counts as none).',
      labelNames: ['kind', 'outcome'],
      registers,
    });
    this.delegationFailures = new Counter({
      name: 'usernsd_delegation_failures_total',
      help: 'Failures to set up, tear down or reconcile what contexts are given ([delegate]), by step (set_up, tear_down, reconcile, exec_start, exec_stop).',
      labelNames: ['step'],
      registers,
    });
    this.viewsMade = new Counter({
      name: 'usernsd_views_total',
      help: 'Views made, by mechanism (idmapped, bindfs) and purpose (mount, enter).',
      labelNames: ['mechanism', 'purpose'],
      registers,
    });
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
    // Its event-loop delay histogram samples the loop on a timer (every 10 ms by default): an idle
    // agent woke 100 times a second for it. The timer is set to an hour, and the series it feeds
    // removed; usernsd_nodejs_eventloop_lag_seconds, measured at each scrape, stays.
    collectDefaultMetrics({ register: this.registry, prefix: 'usernsd_', eventLoopMonitoringPrecision: 3_600_000 });
    for (const s of ['min', 'max', 'mean', 'stddev', 'p50', 'p90', 'p99']) this.registry.removeSingleMetric(`usernsd_nodejs_eventloop_lag_${s}_seconds`);
    // prom-client also exports each of its per-type gauges summed, as a gauge named *_total, which
    // Prometheus reserves for counters (promtool check metrics rejects them). The sum is
    // sum(usernsd_nodejs_active_handles) in PromQL; the per-type gauges stay.
    for (const kind of ['handles', 'requests', 'resources']) this.registry.removeSingleMetric(`usernsd_nodejs_active_${kind}_total`);
    // Every series that can exist is there from the start, at zero: rates need no first event.
    for (const m of methods) this.counts.set(m, { method: m, code: 'ok', n: 0 });
    for (const event of ['created', 'released']) this.namespaces.inc({ event }, 0);
    for (const outcome of ['ok', 'partial', 'failed']) this.reloads.inc({ outcome }, 0);
    for (const outcome of ['answered', 'rejected']) this.upcalls.inc({ outcome }, 0);
  }

  /** One answered request: a map lookup and a few additions (this is on every request's path). */
  request(method: string, code: string | null, ms: number): void {
    const c = this.counts.get(code === null ? method : `${method} ${code}`) ?? this.countFor(method, code);
    c.n++;
    this.observe(c.method, ms);
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

  private observe(method: string, ms: number): void {
    let h = this.latency.get(method);
    if (!h) this.latency.set(method, (h = { buckets: new Array<number>(LATENCY_BUCKETS.length).fill(0), sum: 0, count: 0 }));
    const s = ms / 1000;
    let i = 0;
    while (i < LATENCY_BUCKETS.length && s > LATENCY_BUCKETS[i]) i++;
    if (i < LATENCY_BUCKETS.length) h.buckets[i]++;
    h.sum += s;
    h.count++;
  }

  created(ms: number): void {
    this.namespaces.inc({ event: 'created' });
    this.createLatency.observe(ms / 1000);
  }

  released(n = 1): void {
    this.namespaces.inc({ event: 'released' }, n);
  }

  /** ok: put in force as written; partial: put in force, some context files refused (the CLI exits 1); failed: the settings file has errors. */
  reloaded(outcome: 'ok' | 'partial' | 'failed'): void {
    this.reloads.inc({ outcome });
  }

  upcall(answered: boolean): void {
    this.upcalls.inc({ outcome: answered ? 'answered' : 'rejected' });
  }

  userdbLookup(kind: string, outcome: string): void {
    this.userdb.inc({ kind, outcome });
  }

  delegationFailed(step: DelegationStep): void {
    this.delegationFailures.inc({ step });
  }

  view(mechanism: 'idmapped' | 'bindfs', purpose: 'mount' | 'enter'): void {
    this.viewsMade.inc({ mechanism, purpose });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/**
 * GET /metrics over HTTP, for a Prometheus that scrapes rather than reading node_exporter's textfile
 * collector. Anything else is 404; nothing but the metrics is served.
 */
export async function listenMetrics(metrics: Metrics, host: string, port: number, log: Logger): Promise<Server> {
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

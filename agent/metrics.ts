// Metrics in the Prometheus text format (prom-client), for the `metrics` method, `usernsctl
// metrics` and the optional HTTP listener. Every label value comes from a closed set — method
// names the agent serves, error codes, states — never from a client or a context label, so the
// number of series is bounded whatever clients send.
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { Logger } from 'pino';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { ERROR_CODES } from './errors.ts';

const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5];
const CREATE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5];

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
  private readonly requests: Counter<'method' | 'code'>;
  private readonly latency: Histogram<'method'>;
  private readonly namespaces: Counter<'event'>;
  private readonly createLatency: Histogram;
  private readonly reloads: Counter<'outcome'>;
  private readonly upcalls: Counter<'outcome'>;
  private readonly userdb: Counter<'kind' | 'outcome'>;
  private readonly viewsMade: Counter<'mechanism' | 'purpose'>;

  constructor(methods: readonly string[], source: MetricsSource) {
    const registers = [this.registry];
    this.methods = new Set(methods);
    this.requests = new Counter({ name: 'usernsd_requests_total', help: 'Requests answered, by method ("invalid" for a name the agent does not serve) and code ("ok" or the error code).', labelNames: ['method', 'code'], registers });
    this.latency = new Histogram({ name: 'usernsd_request_duration_seconds', help: 'Time from a request read to its reply written, by method.', labelNames: ['method'], buckets: LATENCY_BUCKETS, registers });
    this.namespaces = new Counter({ name: 'usernsd_namespaces_total', help: 'User namespaces created and released.', labelNames: ['event'], registers });
    this.createLatency = new Histogram({ name: 'usernsd_namespace_create_duration_seconds', help: 'Time to create, map, check and pin one namespace.', buckets: CREATE_BUCKETS, registers });
    this.reloads = new Counter({ name: 'usernsd_reloads_total', help: 'Reloads, by outcome: ok (put in force, maybe with errors in some context files) or failed (the settings file has errors).', labelNames: ['outcome'], registers });
    this.upcalls = new Counter({ name: 'usernsd_upcalls_total', help: 'request-key upcalls that reached the agent, by outcome: answered or rejected.', labelNames: ['outcome'], registers });
    this.userdb = new Counter({ name: 'usernsd_userdb_lookups_total', help: 'userdb lookups (nss-systemd), by kind (user, group, memberships, other) and outcome (found, none, refused, bad).', labelNames: ['kind', 'outcome'], registers });
    this.viewsMade = new Counter({ name: 'usernsd_views_total', help: 'Views made, by mechanism (idmapped, bindfs) and purpose (mount, enter).', labelNames: ['mechanism', 'purpose'], registers });
    new Gauge({ name: 'usernsd_contexts', help: 'Contexts by state: not created, pinned, drift, stale, orphan.', labelNames: ['state'], registers, collect() {
      this.reset();
      for (const [state, n] of Object.entries(source.contextStates())) this.set({ state }, n);
    } });
    new Gauge({ name: 'usernsd_connections', help: 'Connections open on the main socket.', registers, collect() { this.set(source.connections()); } });
    new Gauge({ name: 'usernsd_config_errors', help: 'Problems in the configuration as last loaded.', registers, collect() { this.set(source.configErrors()); } });
    new Gauge({ name: 'usernsd_views_recorded', help: 'Views made through the agent and recorded for view --list.', registers, collect() { this.set(source.views().recorded); } });
    new Gauge({ name: 'usernsd_view_namespaces', help: 'User namespaces carrying views\' idmaps that the agent holds open.', registers, collect() { this.set(source.views().namespaces); } });
    new Gauge({ name: 'usernsd_coordinator_reachable', help: 'coordinator = etcd: 1 when etcd answered the last request, else 0 (absent for a local pool).', registers, collect() { const c = source.coordinator(); this.reset(); if (c) this.set(c.reachable ? 1 : 0); } });
    new Gauge({ name: 'usernsd_coordinator_waiting', help: 'coordinator = etcd: contexts waiting for their range from etcd.', registers, collect() { const c = source.coordinator(); this.reset(); if (c) this.set(c.waiting); } });
    collectDefaultMetrics({ register: this.registry, prefix: 'usernsd_' });
    // Every series that can exist is there from the start, at zero: rates need no first event.
    for (const m of methods) this.requests.inc({ method: m, code: 'ok' }, 0);
    for (const event of ['created', 'released']) this.namespaces.inc({ event }, 0);
    for (const outcome of ['ok', 'failed']) this.reloads.inc({ outcome }, 0);
    for (const outcome of ['answered', 'rejected']) this.upcalls.inc({ outcome }, 0);
  }

  request(method: string, code: string | null, ms: number): void {
    const m = this.methods.has(method) ? method : 'invalid';
    const c = code === null ? 'ok' : (ERROR_CODES as readonly string[]).includes(code) ? code : 'E_INTERNAL';
    this.requests.inc({ method: m, code: c });
    this.latency.observe({ method: m }, ms / 1000);
  }

  created(ms: number): void {
    this.namespaces.inc({ event: 'created' });
    this.createLatency.observe(ms / 1000);
  }

  released(n = 1): void {
    this.namespaces.inc({ event: 'released' }, n);
  }

  reloaded(ok: boolean): void {
    this.reloads.inc({ outcome: ok ? 'ok' : 'failed' });
  }

  upcall(answered: boolean): void {
    this.upcalls.inc({ outcome: answered ? 'answered' : 'rejected' });
  }

  userdbLookup(kind: string, outcome: string): void {
    this.userdb.inc({ kind, outcome });
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
    metrics.text().then((body) => res.writeHead(200, { 'content-type': metrics.contentType }).end(body), (err: Error) => {
      log.error({ err: err.message }, 'Failed to collect metrics');
      res.writeHead(500).end();
    });
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

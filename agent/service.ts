// What the request handlers are given (handlers.ts's `Agent`): the registry, the range pool, the
// views, and what answers status, counts and logs a request. The lifecycle (manager.ts) makes it
// once and hands it the changes it runs one at a time (reloads, contexts made or forgotten from
// inside); the handlers never see the lifecycle, its servers or its timers.
import type { Logger } from 'pino';
import { formatConfigError } from '../config/ini.ts';
import type { IdMap } from '../config/types.ts';
import type { Agent } from './handlers.ts';
import { collected, invalidateIssuedKeys } from './kernel/keys.ts';
import type { Metrics } from './metrics.ts';
import type { People } from './people.ts';
import { isRoot, mayUse } from './policy.ts';
import type { RangePool } from './rangepool.ts';
import type { Registry, Resolved } from './registry.ts';
import { Stats } from './stats.ts';
import { VERSION } from './version.ts';
import type { Views } from './views.ts';
import type { UpcallWatch } from './wiring.ts';
import { LogLimiter } from './wire/loglimit.ts';
import type { Peer } from './wire/peer.ts';
import { PROTOCOL_VERSION } from './wire/protocol.ts';
import type { ReloadResult, StatusResult } from './wire/protocol.ts';

/** The changes the lifecycle serializes: the handlers ask for them, the lifecycle orders them. */
export type Changes = Pick<Agent, 'reload' | 'createChild' | 'forgetChildren'>;

export type ServiceParts = {
  readonly log: Logger;
  readonly registry: Registry;
  readonly views: Views;
  readonly metrics: Metrics;
  readonly pool: RangePool;
  /** Who counts as whom for the per-user log budget. */
  readonly people: People;
  /** Where request-key sends "userns:LABEL" keys, as last seen (status shows it). */
  readonly upcall: UpcallWatch;
  /** Connections open on the main socket now. */
  readonly connections: () => number;
  readonly changes: Changes;
};

function memoryMb(): { rss: number; heapUsed: number } {
  const m = process.memoryUsage();
  return { rss: +(m.rss / 2 ** 20).toFixed(1), heapUsed: +(m.heapUsed / 2 ** 20).toFixed(1) };
}

export class Service implements Agent {
  readonly log: Logger;
  readonly registry: Registry;
  readonly views: Views;
  readonly metrics: Metrics;
  readonly pool: RangePool;
  private readonly parts: ServiceParts;
  private readonly stats = new Stats();
  private readonly limiter: LogLimiter;
  private readonly startedAt = Date.now();
  private lastReload: string | null = null;

  constructor(parts: ServiceParts) {
    this.parts = parts;
    this.log = parts.log;
    this.registry = parts.registry;
    this.views = parts.views;
    this.metrics = parts.metrics;
    this.pool = parts.pool;
    this.limiter = new LogLimiter(parts.log, (uid) => parts.people.of(uid));
  }

  /** The per-uid log budget, shared with the servers' own refusals. */
  get logLimiter(): LogLimiter {
    return this.limiter;
  }

  reload(source: string): Promise<ReloadResult> {
    return this.parts.changes.reload(source);
  }

  createChild(peer: Peer, label: string, uidMap: IdMap, gidMap: IdMap, given: { cgroup: boolean }): Promise<Resolved> {
    return this.parts.changes.createChild(peer, label, uidMap, gidMap, given);
  }

  forgetChildren(label: string): Promise<string[]> {
    return this.parts.changes.forgetChildren(label);
  }

  /** A reload ran (whatever came of it): counted, and its time kept for status. */
  reloaded(): void {
    this.count('reloads');
    this.lastReload = new Date().toISOString();
  }

  count(name: string): void {
    this.stats.count(name);
    if (name === 'released') {
      this.metrics.released();
      this.pool.pinsChanged();
    }
  }

  /** Invalidate the upcall's cached answers for these labels; resolved once the kernel has collected them (keys.ts collected). */
  async invalidateKeys(labels: readonly string[], why: string): Promise<void> {
    if (labels.length === 0) return;
    let answers: number;
    let invalidated: number[];
    try {
      ({ answers, invalidated } = invalidateIssuedKeys(new Set(labels)));
    } catch (err) {
      this.log.debug({ labels, err: (err as Error).message }, "Cannot reach the upcall's keys (no persistent keyrings?): they stay until they expire");
      return;
    }
    if (answers === 0) return;
    const started = performance.now();
    const gone = await collected(invalidated);
    const ms = +(performance.now() - started).toFixed(1);
    if (gone) this.log.info({ labels, keys: answers, ms }, `Invalidated ${answers} cached upcall key(s): ${why}`);
    else
      this.log.warn(
        { labels, keys: answers, ms },
        `Invalidated ${answers} cached upcall key(s): ${why}; the kernel has not collected them yet, and a request meeting one fails with "Key has been revoked" until it does`,
      );
  }

  logClientFailure(peer: Peer, fields: Record<string, unknown>, msg: string, level: 'error' | 'warn' | 'info'): void {
    this.limiter.line(peer.uid, level, fields, msg);
  }

  served(method: string, code: string | null, ms: number): void {
    this.stats.request(method, code, ms);
    this.metrics.request(method, code, ms);
  }

  status(peer: Peer): StatusResult {
    const base = { version: VERSION, protocol: PROTOCOL_VERSION, uptimeSeconds: Math.floor((Date.now() - this.startedAt) / 1000) };
    if (!isRoot(peer)) {
      let visible = 0;
      for (const c of this.registry.all()) if (mayUse(peer, c, this.registry.ancestors(c))) visible++;
      return { ...base, contexts: visible, full: false };
    }
    const contextStates = this.registry.states(true); // one look at each pin, for both figures
    const pinned = contextStates.filter((c) => c.state === 'pinned' || c.state === 'drift' || c.state === 'stale').length;
    const spawner = this.registry.namespaces.spawner;
    return {
      ...base,
      contexts: this.registry.size,
      full: true,
      pid: process.pid,
      config: this.registry.agent.file,
      socket: this.registry.agent.socket,
      pinned,
      connections: this.parts.connections(),
      errors: this.registry.errors.map(formatConfigError),
      pins: this.registry.adoption.filter((a) => a.status !== 'ok').map((a) => ({ label: a.label, status: a.status, message: a.message })),
      counters: this.stats.counterValues(),
      latencyMs: this.stats.latency(),
      contextStates,
      lastReload: this.lastReload,
      memoryMb: memoryMb(),
      views: { recorded: this.views.list().length, namespaces: this.views.namespaces.size },
      coordinator: this.pool.state(),
      spawner: spawner ? { kind: 'native', pid: spawner.pid ?? null } : { kind: 'node', pid: null },
      upcall: this.parts.upcall.last ?? undefined,
    };
  }

  close(): void {
    this.limiter.close();
  }
}

// Who decides the auto ranges, one strategy each behind RangePool: this host alone (LocalPool: the
// allocations recorded in ranges.json) or the shared pool (SharedPool, coordinator = etcd: after
// every load, ask etcd for what the configuration waits on and check the cached ranges against the
// pool's; record what it decided before use, reload when that changed anything, retry while etcd is
// away, and publish what this host has pinned).
import type { Logger } from 'pino';
import type { Configuration, SystemIds } from './configure.ts';
import { ensureStateDir, readAllocations, syncChildRecords, writeAllocations } from './coord/state.ts';
import type { CoordinatorState, EtcdCoordinator } from './coord/etcd.ts';
import { UsernsError } from './errors.ts';
import { agentError } from './advice.ts';
import type { RangeRecord, RangesResult, StatusResult } from './wire/protocol.ts';
import { hostname } from 'node:os';

const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30_000;
const PUBLISH_DEBOUNCE_MS = 100;

export type SharedPoolHooks = {
  config(): Configuration;
  /** Load again, saying why: the shared pool's decisions are recorded (waiting contexts come in, refusals go out), or a range was forgotten. */
  reload(source: 'etcd' | 'ranges forget'): Promise<unknown>;
  pinned(): string[];
  systemIds: SystemIds;
};

/** What the agent asks of whoever decides its auto ranges. */
export interface RangePool {
  /** Labels the pool refuses as this host configures them, and why (an error each in the load). */
  readonly refused: ReadonlyMap<string, string>;
  /** Ask now for what the configuration waits on; true when nothing waits. */
  settle(): Promise<boolean>;
  /** This host's pins changed (a shared pool publishes them). */
  pinsChanged(): void;
  /** For status. */
  state(): NonNullable<StatusResult['coordinator']>;
  /** For the metrics: whether the coordinator answers and how many contexts wait; null for a local pool. */
  health(): { reachable: boolean; waiting: number } | null;
  /** usernsctl ranges, ranges import, ranges forget. */
  list(): Promise<RangesResult>;
  import(): Promise<{ imported: number }>;
  forget(label: string, pinnedHere: boolean): Promise<{ label: string; forgotten: boolean }>;
  /**
   * Contexts made from inside (SPEC §14): a shared pool keeps their records for every host sharing
   * it (E_INVALID when another host made the label first, E_UNAVAILABLE when etcd does not answer);
   * the local pool leaves them to the state directory alone.
   */
  recordChild(label: string, text: string): Promise<void>;
  forgetChildren(labels: readonly string[]): Promise<void>;
  close(): Promise<void>;
}

export type PoolMaker = (log: Logger, hooks: SharedPoolHooks) => RangePool;

/**
 * The pool the configuration asks for: this host's alone, or etcd's. etcd's client (gRPC, protobuf)
 * is loaded only for the shared pool: it is about a fifth of the CPU time of a small agent's start.
 */
export async function rangePool(config: Configuration): Promise<PoolMaker> {
  if (config.agent.coordinator !== 'etcd') return (_log, hooks) => new LocalPool(hooks);
  const { EtcdCoordinator } = await import('./coord/etcd.ts');
  return (log, hooks) => new SharedPool(new EtcdCoordinator(config.agent.etcd), log, hooks);
}

/** coordinator = local: this host allocates (configure.ts) and records in ranges.json; nothing waits. */
class LocalPool implements RangePool {
  readonly refused = new Map<string, string>();
  private readonly hooks: SharedPoolHooks;

  constructor(hooks: SharedPoolHooks) {
    this.hooks = hooks;
  }

  settle(): Promise<boolean> {
    return Promise.resolve(true);
  }

  pinsChanged(): void {}

  state(): NonNullable<StatusResult['coordinator']> {
    return { coordinator: 'local' };
  }

  health(): null {
    return null;
  }

  list(): Promise<RangesResult> {
    const host = hostname();
    const ranges: RangeRecord[] = [...readAllocations(this.stateDir())]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([label, a]) => ({ label, kind: 'auto', ranges: [{ start: a.start, end: a.start + a.size }], decided: 'local', by: host, at: null }));
    return Promise.resolve({ coordinator: 'local', ranges });
  }

  import(): Promise<{ imported: number }> {
    return Promise.reject(new UsernsError('E_CONFIG', 'this agent allocates alone ([pool] coordinator = local): there is no shared pool to import into'));
  }

  /** Forgetting a range changes what the next load allocates: the agent reloads, as an admin would. */
  async forget(label: string, pinnedHere: boolean): Promise<{ label: string; forgotten: boolean }> {
    if (pinnedHere) throw pinnedError(label);
    const recorded = readAllocations(this.stateDir());
    if (!recorded.delete(label)) return { label, forgotten: false };
    writeAllocations(this.stateDir(), recorded);
    await this.hooks.reload('ranges forget');
    return { label, forgotten: true };
  }

  recordChild(): Promise<void> {
    return Promise.resolve();
  }

  forgetChildren(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  private stateDir(): string {
    return this.hooks.config().agent.state;
  }
}

const pinnedError = (label: string) => new UsernsError('E_BUSY', `${label} is pinned on this host: release it first (usernsctl release ${label})`);

export class SharedPool implements RangePool {
  readonly coord: EtcdCoordinator;
  /** Labels the pool refuses as this host configures them, and why (an error in the load). */
  readonly refused = new Map<string, string>();
  private readonly log: Logger;
  private readonly hooks: SharedPoolHooks;
  private inflight: Promise<boolean> | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryMs = RETRY_FIRST_MS;
  private publishTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private wasReachable: boolean | null = null;

  constructor(coord: EtcdCoordinator, log: Logger, hooks: SharedPoolHooks) {
    this.coord = coord;
    this.log = log;
    this.hooks = hooks;
  }

  state(): CoordinatorState & { readonly waiting: number; readonly refused: number } {
    return { ...this.coord.state(), waiting: this.hooks.config().waiting.length, refused: this.refused.size };
  }

  health(): { reachable: boolean; waiting: number } {
    return { reachable: this.coord.state().reachable, waiting: this.hooks.config().waiting.length };
  }

  /** The shared pool's entries. */
  async list(): Promise<RangesResult> {
    const ranges: RangeRecord[] = [...(await this.coord.entries())].map(([label, e]): RangeRecord => ({
      label,
      kind: e.kind,
      ranges: e.kind === 'auto' ? [{ start: e.start, end: e.start + e.size }] : e.intervals.map((i) => ({ start: i.start, end: i.end })),
      decided: 'etcd',
      by: e.by,
      at: e.at,
    }));
    ranges.sort((a, b) => a.label.localeCompare(b.label) || a.kind.localeCompare(b.kind));
    return { coordinator: 'etcd', ranges };
  }

  /** This host's recorded allocations into the shared pool, all or none. */
  async import(): Promise<{ imported: number }> {
    const cfg = this.hooks.config();
    const r = await this.coord.importRanges(readAllocations(cfg.agent.state), cfg.agent.pool, this.hooks.systemIds(cfg.agent));
    if (r.conflicts.length > 0)
      throw new UsernsError(
        'E_CONFIG',
        `${r.imported === 0 ? 'nothing imported' : `${r.imported} imported, then another host's allocation came between`}: ${r.conflicts.map((c) => `${c.label}: ${c.message}`).join('; ')}`,
      );
    return { imported: r.imported };
  }

  /** Free a label's range, refused while it is pinned (anywhere: etcd knows every host's pins). */
  async forget(label: string, pinnedHere: boolean): Promise<{ label: string; forgotten: boolean }> {
    if (pinnedHere) throw pinnedError(label);
    return { label, forgotten: await this.coord.forgetRange(label) };
  }

  async recordChild(label: string, text: string): Promise<void> {
    if (!(await this.coord.putChild(label, text)))
      throw new UsernsError(
        'E_INVALID',
        `context "${label}" was made already on another host sharing the pool: choose another name (it is made here at the next reload)`,
      );
  }

  forgetChildren(labels: readonly string[]): Promise<void> {
    return this.coord.deleteChildren(labels);
  }

  /** One settle at a time; true when nothing waits for etcd any more. */
  settle(): Promise<boolean> {
    this.inflight ??= this.settleOnce().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  private async settleOnce(): Promise<boolean> {
    const cfg = this.hooks.config();
    // What this host recorded: where the pool is read first, and what its decisions are compared with (one settle at a time writes it).
    const recorded = readAllocations(cfg.agent.state);
    let r;
    try {
      r = await this.coord.settle(cfg.requests, cfg.statics, cfg.agent.pool, this.hooks.systemIds(cfg.agent), recorded);
    } catch (err) {
      const e = agentError(err);
      if (!e) throw err;
      if (this.wasReachable !== false) this.log.error({ coordinator: 'etcd', waiting: cfg.waiting.length }, `Shared pool: ${e.message}`);
      this.wasReachable = false;
      this.scheduleRetry();
      return false;
    }
    if (this.wasReachable === false) this.log.info({ coordinator: 'etcd' }, 'Shared pool: etcd answers again');
    const moved = this.coord.takeMigrated();
    if (moved > 0) this.log.info({ coordinator: 'etcd', labels: moved }, `Shared pool: moved the single document's ${moved} label(s) to one key per label`);
    this.wasReachable = true;
    this.retryMs = RETRY_FIRST_MS;
    // What etcd decided is recorded before anything uses it, as a local allocation would be.
    let changed = false;
    for (const [label, a] of r.decided) {
      const had = recorded.get(label);
      if (!had || had.start !== a.start || had.size !== a.size) {
        recorded.set(label, a);
        changed = true;
      }
    }
    if (changed) {
      ensureStateDir(cfg.agent.state);
      writeAllocations(cfg.agent.state, recorded);
    }
    const refused = new Map(r.conflicts.map((c) => [c.label, c.message]));
    const refusalsChanged = refused.size !== this.refused.size || [...refused].some(([l, m]) => this.refused.get(l) !== m);
    if (refusalsChanged) {
      for (const [label, why] of refused)
        if (this.refused.get(label) !== why) this.log.error({ label, coordinator: 'etcd' }, `Shared pool refuses context ${label}: ${why}`);
      this.refused.clear();
      for (const [l, m] of refused) this.refused.set(l, m);
    }
    // The contexts made from inside on any host sharing the pool are this host's too.
    let children = false;
    try {
      const synced = syncChildRecords(cfg.agent.state, await this.coord.readChildren());
      children = synced.changed;
      if (synced.bad.length > 0)
        this.log.error(
          { coordinator: 'etcd', keys: synced.bad },
          `Shared pool: records of contexts made from inside left out (not a label, or not a context file's text): ${synced.bad.join(', ')}`,
        );
    } catch (err) {
      const e = agentError(err);
      if (!e) throw err;
      this.log.warn({ coordinator: 'etcd' }, `Shared pool: contexts made from inside not read (the local records stay): ${e.message}`);
    }
    if (changed || children || refusalsChanged || cfg.waiting.some((l) => r.decided.has(l))) await this.hooks.reload('etcd');
    const left = this.hooks.config().waiting.filter((l) => !this.refused.has(l));
    if (left.length > 0) this.scheduleRetry();
    return left.length === 0;
  }

  private scheduleRetry(): void {
    if (this.closed || this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.settle();
    }, this.retryMs);
    this.retryTimer.unref();
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
  }

  /** Publish this host's pins soon (several changes in a row are one write). */
  pinsChanged(): void {
    if (this.closed || this.publishTimer) return;
    this.publishTimer = setTimeout(() => {
      this.publishTimer = null;
      this.coord
        .publishPinned(this.hooks.pinned())
        .catch((err: Error) => this.log.warn({ coordinator: 'etcd' }, `Shared pool: cannot publish this host's pins: ${err.message}`));
    }, PUBLISH_DEBOUNCE_MS);
    this.publishTimer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.publishTimer) clearTimeout(this.publishTimer);
    await this.inflight?.catch(() => undefined);
    await this.coord.close();
  }
}

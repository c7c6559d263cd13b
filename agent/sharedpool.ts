// The agent's side of a shared pool (coordinator = etcd): after every load, ask etcd for what the
// configuration waits on and check the cached ranges against the pool's; record what it decided
// before use (ranges.json), reload when that changed anything, retry while etcd is away, and
// publish what this host has pinned.
import type { Logger } from 'pino';
import type { Configuration, SystemIds } from './configure.ts';
import { ensureStateDir, readAllocations, writeAllocations } from './coord/state.ts';
import { EtcdCoordinator } from './coord/etcd.ts';
import type { CoordinatorState } from './coord/etcd.ts';
import { UsernsError } from './errors.ts';
import type { RangeRecord, RangesResult } from './wire/protocol.ts';

const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30_000;
const PUBLISH_DEBOUNCE_MS = 100;

export type SharedPoolHooks = {
  config(): Configuration;
  /** Load again (the decisions are recorded): the waiting contexts come in, refusals go out. */
  reload(): Promise<unknown>;
  pinned(): string[];
  systemIds: SystemIds;
};

export class SharedPool {
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

  /** One settle at a time; true when nothing waits for etcd any more. */
  settle(): Promise<boolean> {
    this.inflight ??= this.settleOnce().finally(() => { this.inflight = null; });
    return this.inflight;
  }

  private async settleOnce(): Promise<boolean> {
    const cfg = this.hooks.config();
    let r;
    try {
      r = await this.coord.settle(cfg.requests, cfg.statics, cfg.agent.pool, this.hooks.systemIds(cfg.agent));
    } catch (err) {
      if (!(err instanceof UsernsError)) throw err;
      if (this.wasReachable !== false) this.log.error({ coordinator: 'etcd', waiting: cfg.waiting.length }, `Shared pool: ${err.message}`);
      this.wasReachable = false;
      this.scheduleRetry();
      return false;
    }
    if (this.wasReachable === false) this.log.info({ coordinator: 'etcd' }, 'Shared pool: etcd answers again');
    this.wasReachable = true;
    this.retryMs = RETRY_FIRST_MS;
    // What etcd decided is recorded before anything uses it, as a local allocation would be.
    const recorded = readAllocations(cfg.agent.state);
    let changed = false;
    for (const [label, a] of r.decided) {
      const had = recorded.get(label);
      if (!had || had.start !== a.start || had.size !== a.size) { recorded.set(label, a); changed = true; }
    }
    if (changed) {
      ensureStateDir(cfg.agent.state);
      writeAllocations(cfg.agent.state, recorded);
    }
    const refused = new Map(r.conflicts.map((c) => [c.label, c.message]));
    const refusalsChanged = refused.size !== this.refused.size || [...refused].some(([l, m]) => this.refused.get(l) !== m);
    if (refusalsChanged) {
      for (const [label, why] of refused) if (this.refused.get(label) !== why) this.log.error({ label, coordinator: 'etcd' }, `Shared pool refuses context ${label}: ${why}`);
      this.refused.clear();
      for (const [l, m] of refused) this.refused.set(l, m);
    }
    if (changed || refusalsChanged || cfg.waiting.some((l) => r.decided.has(l))) await this.hooks.reload();
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
      this.coord.publishPinned(this.hooks.pinned()).catch((err: Error) => this.log.warn({ coordinator: 'etcd' }, `Shared pool: cannot publish this host's pins: ${err.message}`));
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

/** usernsctl ranges: the shared pool's document, or this host's record when it allocates alone. */
export async function listRanges(shared: SharedPool | null, stateDir: string, host: string): Promise<RangesResult> {
  if (!shared) {
    const ranges: RangeRecord[] = [...readAllocations(stateDir)].sort(([a], [b]) => a.localeCompare(b))
      .map(([label, a]) => ({ label, kind: 'auto', ranges: [{ start: a.start, end: a.start + a.size }], decided: 'local', by: host, at: null }));
    return { coordinator: 'local', ranges };
  }
  const { doc } = await shared.coord.read();
  const ranges: RangeRecord[] = [
    ...Object.entries(doc.ranges).map(([label, r]): RangeRecord => ({ label, kind: 'auto', ranges: [{ start: r.start, end: r.start + r.size }], decided: 'etcd', by: r.by, at: r.at })),
    ...Object.entries(doc.statics).map(([label, st]): RangeRecord => ({ label, kind: 'static', ranges: st.intervals.map((i) => ({ start: i.start, end: i.end })), decided: 'etcd', by: st.by, at: st.at })),
  ].sort((a, b) => a.label.localeCompare(b.label) || a.kind.localeCompare(b.kind));
  return { coordinator: 'etcd', ranges };
}

/** usernsctl ranges import: this host's recorded allocations into the shared pool, all or none. */
export async function importRanges(shared: SharedPool | null, stateDir: string): Promise<{ imported: number }> {
  if (!shared) throw new UsernsError('E_CONFIG', 'this agent allocates alone ([pool] coordinator = local): there is no shared pool to import into');
  const r = await shared.coord.importRanges(readAllocations(stateDir));
  if (r.conflicts.length > 0) throw new UsernsError('E_CONFIG', `nothing imported: ${r.conflicts.map((c) => `${c.label}: ${c.message}`).join('; ')}`);
  return { imported: r.imported };
}

/** usernsctl ranges forget LABEL: free its range, refused while it is pinned (anywhere, for a shared pool). */
export async function forgetRange(shared: SharedPool | null, stateDir: string, label: string, pinnedHere: boolean): Promise<{ label: string; forgotten: boolean }> {
  if (pinnedHere) throw new UsernsError('E_BUSY', `${label} is pinned on this host: release it first (usernsctl release ${label})`);
  if (shared) return { label, forgotten: await shared.coord.forgetRange(label) };
  const recorded = readAllocations(stateDir);
  if (!recorded.delete(label)) return { label, forgotten: false };
  writeAllocations(stateDir, recorded);
  return { label, forgotten: true };
}

// The etcd coordinator: the only file that talks to etcd (the etcd3 client). The shared pool is kept
// one key per label with an index of the ids each holds (poolkeys.ts), every change a transaction
// that compares what it read, so every host sees every decision in one order (linearizable) and an
// allocation costs the same in a pool of ten labels as in one of sixty thousand; what each host has
// pinned is published under PREFIX/pinned/HOST on a lease, so a dead host's claims expire. Fail
// closed: when etcd does not answer within the timeout, nothing is decided here, and nothing is
// decided alone.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { circuitBreaker, ConsecutiveBreaker, handleWhen } from 'cockatiel';
import { Etcd3, isRecoverableError } from 'etcd3';
import * as RPC from 'etcd3';
import type { Lease } from 'etcd3';
import type { Interval } from '../../config/extents.ts';
import type { EtcdConfig, Pool } from '../../config/types.ts';
import { Fault } from '../fault.ts';
import { mergeIntervals } from './allocate.ts';
import type { Allocation } from './allocate.ts';
import { parseDoc } from './pooldoc.ts';
import {
  CHUNK,
  claimProblem,
  compareSpan,
  entryIntervals,
  exhausted,
  fixedIntervals,
  idsFrom,
  idsKeyInterval,
  idsKey,
  idsPast,
  idsPrefix,
  indexChunks,
  judgeKnown,
  labelKey,
  labelsPrefix,
  MAX_INTERVALS,
  migrationKeys,
  parseEntry,
  parseIndex,
  POOL_LAYOUT,
  POOL_MARKER,
  poolKeyState,
  serializeEntry,
  serializeIndex,
  searchStart,
  startProbe,
} from './poolkeys.ts';
import type { Conflict, IndexEntry, PoolEntry, ReadEntry, Request, StaticClaim, Want } from './poolkeys.ts';
import { newSearch, searchLook, searchStep, SlotMap, slotTouches, STALE_MISSES } from './slotmap.ts';
import type { Search } from './slotmap.ts';

/** How long a host's published pins outlive it (the lease's TTL, renewed while it runs). */
export const PINNED_LEASE_TTL_S = 15;
/** Compare-and-swap rounds before giving up (each lost round means another host just wrote). */
const MAX_ROUNDS = 50;
/** Keys one transaction writes at most (etcd takes 128 operations in one by default). */
const TXN_KEYS = 100;
/** Labels settled in one batch (three reads each in one transaction), and batches in flight at once. */
const BATCH_LABELS = 40;
const IN_FLIGHT = 8;
/** Keys per page when the whole of a prefix is read (usernsctl ranges). */
const SCAN_PAGE = 2000;
/** Index keys read after an interval: the first the index's own is the next one. */
const NEXT_KEYS = 4;
/**
 * Index keys a slot map is made from at most: the whole id space holds 65,535 ranges, each at most
 * a few keys. An index past this holds keys that are not its own (etcd's data is input): the
 * searches then go window by window, and the agent's memory stays bounded.
 */
export const MAP_KEYS_MAX = 4 * 65_536;

export type CoordinatorState = {
  readonly coordinator: 'etcd';
  readonly endpoints: readonly string[];
  readonly reachable: boolean;
  readonly lastOk: string | null;
  readonly lastError: string | null;
  readonly host: string;
};

export type Settled = { readonly decided: Map<string, Allocation>; readonly conflicts: Conflict[] };

/** Every attempt lost to another host's change: the pool decided nothing this time. */
const contended = () => new Fault('changed', `the shared pool changed under every one of ${MAX_ROUNDS} attempts`, { object: 'pool' });

export class EtcdCoordinator {
  readonly host: string;
  private readonly cfg: EtcdConfig;
  private readonly client: Etcd3;
  private lease: Lease | null = null;
  private reachable = false;
  private lastOk: string | null = null;
  private lastError: string | null = null;
  private layoutReady = false;
  private migrated = 0;
  /** What this agent knows of the pool's slots, by pool and slot size (slotmap.ts): read at the first search that needs it. */
  private readonly maps = new Map<string, SlotMap>();
  /** When an index too large for a map (MAP_KEYS_MAX) may be read again for one. */
  private noMapUntil = 0;

  /** For tests: run between a round's reads and its write (a claim, a forget), where another host's write can land. */
  private readonly beforeWrite: (() => Promise<void>) | undefined;
  /** For tests: each transaction's answer (what a settle read, and how much). */
  private readonly observe: ((r: RPC.ITxnResponse) => void) | undefined;
  private readonly mapKeysMax: number;

  constructor(
    cfg: EtcdConfig,
    opts: { beforeWrite?: () => Promise<void>; observe?: (r: RPC.ITxnResponse) => void; /** For tests: MAP_KEYS_MAX. */ mapKeysMax?: number } = {},
  ) {
    this.cfg = cfg;
    this.beforeWrite = opts.beforeWrite;
    this.observe = opts.observe;
    this.mapKeysMax = opts.mapKeysMax ?? MAP_KEYS_MAX;
    this.host = cfg.name ?? hostname();
    const read = (f: string | null) => (f === null ? undefined : readFileSync(f));
    const ca = read(cfg.ca);
    this.client = new Etcd3({
      hosts: [...cfg.endpoints],
      dialTimeout: cfg.timeoutMs,
      ...(ca ? { credentials: { rootCertificate: ca, privateKey: read(cfg.key), certChain: read(cfg.cert) } } : {}),
      // Every call is bounded: a request waiting on allocation fails with E_UNAVAILABLE in time.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + cfg.timeoutMs }),
      // A member that fails is left out for a moment, not for etcd3's default 5 s: when etcd comes
      // back, allocation resumes within a second (the other members are tried meanwhile).
      faultHandling: { host: () => circuitBreaker(handleWhen(isRecoverableError), { halfOpenAfter: 500, breaker: new ConsecutiveBreaker(3) }) },
    });
  }

  private get poolKey(): string {
    return `${this.cfg.prefix}pool`;
  }

  /** Where the contexts made from inside are kept, one key each: PREFIX/children/LABEL, the record's text. */
  get childrenPrefix(): string {
    return `${this.cfg.prefix}children/`;
  }

  private pinnedKey(host: string): string {
    return `${this.cfg.prefix}pinned/${host}`;
  }

  state(): CoordinatorState {
    return { coordinator: 'etcd', endpoints: this.cfg.endpoints, reachable: this.reachable, lastOk: this.lastOk, lastError: this.lastError, host: this.host };
  }

  /** Run one etcd exchange within the timeout; its failure becomes E_UNAVAILABLE and is remembered for status. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const r = await Promise.race([
        fn(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${this.cfg.timeoutMs} ms`)), this.cfg.timeoutMs);
        }),
      ]);
      this.reachable = true;
      this.lastOk = new Date().toISOString();
      return r;
    } catch (err) {
      if (err instanceof Fault) throw err;
      this.reachable = false;
      this.lastError = `${new Date().toISOString()} ${what}: ${(err as Error).message}`;
      throw new Fault('undecided', `etcd (${this.cfg.endpoints.join(', ')}) did not ${what}: ${(err as Error).message}`, {
        object: 'pool',
        step: what,
        cause: err,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  /** One transaction, within the timeout (E_UNAVAILABLE when etcd does not answer). */
  private async txn(what: string, req: RPC.ITxnRequest): Promise<RPC.ITxnResponse> {
    const r = await this.call(what, () => this.client.kv.txn(req));
    this.observe?.(r);
    return r;
  }

  private get marker(): RPC.ICompare {
    return { key: Buffer.from(this.poolKey), target: RPC.CompareTarget.Value, result: RPC.CompareResult.Equal, value: Buffer.from(POOL_MARKER) };
  }

  /**
   * The pool in layout 2, made so when it is not: a new pool gets the marker; layout 1's single
   * document is migrated in place (frozen first, so older agents refuse it from then on, copied key
   * by key, then marked; an agent that finds it frozen finishes the copy); a layout this agent does
   * not know is refused.
   */
  private async ensureLayout(): Promise<void> {
    if (this.layoutReady) return;
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const r = await this.call('answer a read', () => this.client.get(this.poolKey).exec());
      const kv = r.kvs[0];
      const text = kv ? kv.value.toString('utf8') : null;
      const st = poolKeyState(text);
      if (st.state === 'marked') {
        this.layoutReady = true;
        return;
      }
      if (st.state === 'new')
        await this.txn('answer a write', {
          compare: [{ key: Buffer.from(this.poolKey), target: RPC.CompareTarget.Create, result: RPC.CompareResult.Equal, create_revision: 0 }],
          success: [{ request_put: { key: Buffer.from(this.poolKey), value: Buffer.from(POOL_MARKER) } }],
        });
      else if (st.state === 'layout1')
        // Frozen: the same document under a version older agents refuse, which no agent changes.
        await this.txn('answer a write', {
          compare: [{ key: Buffer.from(this.poolKey), target: RPC.CompareTarget.Mod, result: RPC.CompareResult.Equal, mod_revision: kv.mod_revision }],
          success: [{ request_put: { key: Buffer.from(this.poolKey), value: Buffer.from(JSON.stringify({ version: POOL_LAYOUT, migrating: st.doc })) } }],
        });
      else if (st.state === 'moving') await this.copyFrozen(text!, st.doc);
      else throw this.unknownLayout(st.why);
    }
    throw contended();
  }

  private unknownLayout(why: string): Fault {
    return new Fault('corrupt', `the shared pool at ${this.poolKey} ${why}`, { object: 'pool', subject: this.poolKey });
  }

  /** Layout 1's frozen document copied into keys (every key this agent finds missing), then the marker put in its place. */
  private async copyFrozen(frozen: string, doc: unknown): Promise<void> {
    const keys = migrationKeys(this.cfg.prefix, doc);
    const still: RPC.ICompare = {
      key: Buffer.from(this.poolKey),
      target: RPC.CompareTarget.Value,
      result: RPC.CompareResult.Equal,
      value: Buffer.from(frozen),
    };
    for (let i = 0; i < keys.length; i += TXN_KEYS) {
      const chunk = keys.slice(i, i + TXN_KEYS);
      const seen = await this.txn('answer a read', { compare: [still], success: chunk.map((k) => ({ request_range: { key: Buffer.from(k.key) } })) });
      if (!seen.succeeded) return; // another agent finished it
      const missing = chunk.filter((_, j) => seen.responses[j].response_range.kvs.length === 0);
      if (missing.length === 0) continue;
      const put = await this.txn('answer a write', {
        compare: [
          still,
          ...missing.map((k) => ({ key: Buffer.from(k.key), target: RPC.CompareTarget.Create, result: RPC.CompareResult.Equal, create_revision: 0 })),
        ],
        success: missing.map((k) => ({ request_put: { key: Buffer.from(k.key), value: Buffer.from(k.value) } })),
      });
      if (!put.succeeded) i -= TXN_KEYS; // another agent copies too: look at this chunk again
    }
    const done = await this.txn('answer a write', {
      compare: [still],
      success: [{ request_put: { key: Buffer.from(this.poolKey), value: Buffer.from(POOL_MARKER) } }],
    });
    if (done.succeeded) this.migrated += keys.filter((k) => k.key.startsWith(labelsPrefix(this.cfg.prefix))).length;
  }

  /** Labels migrated from layout 1's document by this agent since the last call (for the log). */
  takeMigrated(): number {
    const n = this.migrated;
    this.migrated = 0;
    return n;
  }

  /**
   * Every key under `prefix`, read in pages at one revision (`keysOnly`: their values left unread,
   * as ""); null when there are more than `max`.
   */
  private async scan(prefix: string, keysOnly: boolean, max: number): Promise<{ key: string; value: string; mod: string }[] | null>;
  private async scan(prefix: string, keysOnly?: boolean): Promise<{ key: string; value: string; mod: string }[]>;
  private async scan(prefix: string, keysOnly = false, max = Infinity): Promise<{ key: string; value: string; mod: string }[] | null> {
    const out: { key: string; value: string; mod: string }[] = [];
    const end = Buffer.from(prefixEnd(prefix));
    let from = Buffer.from(prefix);
    let revision: string | undefined;
    for (;;) {
      const r = await this.call('answer a read', () =>
        this.client.kv.range({ key: from, range_end: end, limit: SCAN_PAGE, keys_only: keysOnly, ...(revision ? { revision } : {}) }),
      );
      revision ??= r.header.revision;
      for (const kv of r.kvs) out.push({ key: kv.key.toString('utf8'), value: kv.value.toString('utf8'), mod: kv.mod_revision });
      if (out.length > max) return null;
      if (!r.more || r.kvs.length === 0) return out;
      from = Buffer.concat([r.kvs[r.kvs.length - 1].key, Buffer.from([0])]);
    }
  }

  /** Every valid entry of the pool (usernsctl ranges), by label. */
  async entries(): Promise<Map<string, PoolEntry>> {
    await this.ensureLayout();
    const out = new Map<string, PoolEntry>();
    const lp = labelsPrefix(this.cfg.prefix);
    for (const kv of await this.scan(lp)) {
      const label = kv.key.slice(lp.length);
      const e = parseEntry(label, kv.value);
      if (e !== null && !('invalid' in e)) out.set(label, e);
    }
    return out;
  }

  /** For check-config --etcd: the pool's layout and how many labels it holds, read without writing anything. */
  async survey(): Promise<string> {
    const kv = (await this.call('answer a read', () => this.client.get(this.poolKey).exec())).kvs[0];
    const text = kv?.value.toString('utf8') ?? null;
    if (text === POOL_MARKER || text === null) {
      const lp = labelsPrefix(this.cfg.prefix);
      const n = await this.call('answer a read', () => this.client.getAll().prefix(lp).count());
      return `${n} label(s) under ${lp}${text === null ? ' (a new pool: the first agent marks it)' : ''}`;
    }
    const st = poolKeyState(text);
    if (st.state === 'moving') return `the single document at ${this.poolKey} is being moved to one key per label (an agent finishes it at its next settle)`;
    if (st.state !== 'layout1') throw this.unknownLayout(st.state === 'unknown' ? st.why : 'changed while it was read');
    const parsed = parseDoc(text);
    if (typeof parsed === 'string') throw this.unknownLayout(parsed);
    return `${Object.keys(parsed.ranges).length} range(s) and ${Object.keys(parsed.statics).length} static range(s) in the single document at ${this.poolKey}, moved to one key per label by the first agent that settles`;
  }

  /** Register this host's static ranges and get every requested label its cluster-wide range. */
  async settle(
    requests: readonly Request[],
    statics: readonly StaticClaim[],
    pool: Pool,
    reserved: readonly Interval[],
    /** Where this host recorded each label: read there first (one exchange for a label the pool has there). */
    recorded: ReadonlyMap<string, Allocation> = new Map(),
  ): Promise<Settled> {
    await this.ensureLayout();
    const wants: Want[] = [
      ...statics.map((s): Want => ({ label: s.label, kind: 'static', intervals: mergeIntervals(s.intervals) })),
      ...requests
        .map((r) => ({ r, at: searchStart(r.label, r.size, pool) }))
        .sort((a, b) => a.at - b.at)
        .map(({ r }): Want => {
          const had = recorded.get(r.label);
          return { label: r.label, kind: 'auto', size: r.size, ...(had && had.size === r.size ? { hint: had.start } : {}) };
        }),
    ];
    const out: Settled = { decided: new Map(), conflicts: [] };
    const searching = wants.flatMap((w) => (w.kind === 'auto' && w.hint === undefined ? [w.size] : []));
    const maps = await this.slotMaps(pool, searching);
    await this.inBatches(wants, async (batch) => void (await this.settleBatch(batch, pool, mergeIntervals(reserved), true, out, maps)));
    for (const [key, map] of this.maps) if (map.misses > STALE_MISSES) this.maps.delete(key); // read anew at the next search
    return out;
  }

  /**
   * The slot maps for searches of these sizes: kept from earlier settles, or made now from one read
   * of the whole index, its keys alone (a pool of 60,000 labels: about 60,000 keys, once in the
   * agent's life).
   */
  private async slotMaps(pool: Pool, sizes: readonly number[]): Promise<Map<number, SlotMap>> {
    const out = new Map<number, SlotMap>();
    const key = (size: number) => `${pool.start}-${pool.end}/${size}`;
    const missing: number[] = [];
    for (const size of new Set(sizes)) {
      const had = this.maps.get(key(size));
      if (had) out.set(size, had);
      else missing.push(size);
    }
    if (missing.length === 0 || Date.now() < this.noMapUntil) return out;
    const keys = await this.scan(idsPrefix(this.cfg.prefix), true, this.mapKeysMax);
    if (keys === null) {
      this.noMapUntil = Date.now() + 10 * 60_000; // an index past any pool's size: the searches read windows, and it is not read whole again soon
      return out;
    }
    const taken = keys.flatMap((kv) => idsKeyInterval(this.cfg.prefix, kv.key) ?? []);
    for (const size of missing) {
      const map = new SlotMap(pool, size, taken);
      if (map.count === 0) continue;
      this.maps.set(key(size), map);
      out.set(size, map);
    }
    return out;
  }

  /** Every map learns ids taken (a claim) or freed (a forget). */
  private markMaps(intervals: readonly Interval[], taken: boolean): void {
    for (const map of this.maps.values()) for (const i of intervals) map.mark(i, taken);
  }

  /** Batches of wants, a few at a time (they do not wait on each other; two that meet retry as any two hosts would). */
  private async inBatches(wants: readonly Want[], each: (batch: Want[]) => Promise<void>): Promise<void> {
    const batches: Want[][] = [];
    let batch: Want[] = [];
    let puts = 0;
    for (const w of wants) {
      const n = 1 + Math.min(MAX_INTERVALS, indexChunks(fixedIntervals(w) ?? [{ start: 0, end: w.kind === 'auto' ? w.size : 1 }]).length);
      if (batch.length > 0 && (batch.length >= BATCH_LABELS || puts + n > TXN_KEYS)) {
        batches.push(batch);
        batch = [];
        puts = 0;
      }
      batch.push(w);
      puts += n;
    }
    if (batch.length > 0) batches.push(batch);
    // Each worker takes its own stretch of the batches: wants sorted by where their search starts
    // keep the batches in flight in different parts of the id space, where they do not meet.
    const workers = Math.min(IN_FLIGHT, batches.length);
    const worker = async (j: number) => {
      for (let k = Math.floor((j * batches.length) / workers); k < Math.floor(((j + 1) * batches.length) / workers); k++) await each(batches[k]);
    };
    await Promise.all(Array.from({ length: workers }, (_, j) => worker(j)));
  }

  /**
   * One batch of wants, in rounds: one read of each label's entry and of the index where it would
   * go (at one revision); for an entry whose ids lie elsewhere, a read of the index around them, in
   * a transaction that fails when the entry changed meanwhile; then the claims of the labels the
   * pool does not have, in a transaction that fails when a label was taken or an index key made or
   * changed where one could overlap a claim since the first read. A round that loses starts again
   * from what etcd has then. A new label costs two exchanges, a known one one.
   */
  private async settleBatch(
    wants: readonly Want[],
    pool: Pool,
    system: readonly Interval[],
    write: boolean,
    out: Settled,
    maps: ReadonlyMap<number, SlotMap> = new Map(),
  ): Promise<number> {
    const lk = (l: string) => Buffer.from(labelKey(this.cfg.prefix, l));
    const from = (end: number) => Buffer.from(idsFrom(this.cfg.prefix, end));
    const past = (end: number) => Buffer.from(idsPast(this.cfg.prefix, end));
    // The keys that can overlap ids from..to-1: those ending from+1 to `to`, and the first ones after
    // (only as far as a key overlapping `to` - 1 can end: etcd 3.4 walks the whole range before it
    // applies a limit). A search for a free slot reads the keys alone: they name the intervals.
    const readSpan = (sp: Interval, keysOnly: boolean): RPC.IRequestOp[] => [
      { request_range: { key: from(sp.start + 1), range_end: past(sp.end), keys_only: keysOnly } },
      { request_range: { key: from(sp.end + 1), range_end: past(Math.min(sp.end - 1 + CHUNK, 0xffffffff)), limit: NEXT_KEYS, keys_only: keysOnly } },
    ];
    const index = (r: RPC.IResponseOp, keysOnly: boolean) =>
      r.response_range.kvs.flatMap((kv) => {
        const e = parseIndex(this.cfg.prefix, kv.key.toString('utf8'), keysOnly ? null : kv.value.toString('utf8'));
        return e ? [{ ...e, mod: kv.mod_revision }] : [];
      });
    const seenOf = (sp: Interval, keysOnly: boolean, rs: RPC.IResponseOp[], k: number): Seen => {
      const after = index(rs[k + 1], keysOnly);
      return {
        span: sp,
        valued: !keysOnly,
        keys: index(rs[k], keysOnly),
        after: after.at(0) ?? null,
        hidden: rs[k + 1].response_range.kvs.length === NEXT_KEYS && after.length === 0,
      };
    };
    const spanOf = (is: readonly Interval[]): Interval => ({ start: is[0].start, end: is[is.length - 1].end });
    const hiddenMessage = (sp: Interval) =>
      `the shared pool's index holds ${NEXT_KEYS} keys that are not its own just after ${sp.end}: remove them (etcdctl get --prefix ${idsPrefix(this.cfg.prefix)} --keys-only)`;
    const searches = new Map<Want, Search>();
    /** Wants whose label was not where this host recorded it: they search from their hash slot. */
    const unhinted = new Set<Want>();
    let left = [...wants];
    let lost = 0;
    let claimed = 0;
    while (left.length > 0) {
      if (lost >= MAX_ROUNDS) throw contended();
      // Where each would go if the pool does not have it: its fixed ids, or the next read of its search
      // (two searches of one round never choose one slot of the map).
      const chosen = new Map<SlotMap, Set<number>>();
      const looks = left.map((w): { span: Interval; search: boolean } | string => {
        const fixed = fixedIntervals(w);
        if (fixed) return { span: spanOf(fixed), search: false };
        if (w.kind === 'auto' && w.hint !== undefined && !unhinted.has(w)) return { span: { start: w.hint, end: w.hint + w.size }, search: false };
        const size = w.kind === 'auto' ? w.size : 0; // (a static want always has fixed intervals)
        const map = maps.get(size) ?? null;
        let s = searches.get(w);
        if (!s) {
          const started = startProbe(w.label, size, pool);
          if (typeof started === 'string') return started;
          s = newSearch(started, size, map);
        }
        const mine = map ? (chosen.get(map) ?? chosen.set(map, new Set()).get(map)!) : new Set<number>();
        const look = searchLook(s, map, (k) => mine.has(k) || (map !== null && slotTouches(map, system, k)));
        searches.set(w, look.search);
        if (!look.window) return exhausted(pool, size);
        if (look.search.guided) mine.add(look.search.probe.next);
        return { span: { start: look.window.from, end: look.window.to }, search: true };
      });
      // 1: the entries and the index there.
      const ops: RPC.IRequestOp[] = [];
      const at: number[] = [];
      left.forEach((w, k) => {
        at.push(ops.length);
        ops.push({ request_range: { key: lk(w.label) } });
        const look = looks[k];
        if (typeof look !== 'string') ops.push(...readSpan(look.span, look.search));
      });
      const r1 = await this.txn('answer a read', { compare: [this.marker], success: ops });
      if (!r1.succeeded) {
        this.layoutReady = false;
        await this.ensureLayout();
        lost++;
        continue;
      }
      const revision = BigInt(r1.header.revision);
      const done = new Set<Want>();
      const conflict = (w: Want, message: string) => {
        out.conflicts.push({ label: w.label, message });
        done.add(w);
      };
      const judge = (w: Want, entry: Exclude<ReadEntry, null>, around: readonly IndexEntry[]) => {
        const j = judgeKnown(w, entry, around, pool, system);
        if ('conflict' in j) conflict(w, j.conflict);
        else {
          if (j.decided) out.decided.set(w.label, j.decided);
          done.add(w);
        }
      };
      const elsewhere: { w: Want; kv: RPC.IKeyValue; entry: PoolEntry; span: Interval }[] = [];
      const claimedHere: IndexEntry[] = [];
      const compare: RPC.ICompare[] = [this.marker];
      const puts: RPC.IRequestOp[] = [];
      const claims: { w: Want; a: Allocation | null }[] = [];
      left.forEach((w, k) => {
        const kv = r1.responses[at[k]].response_range.kvs[0];
        const entry = kv ? parseEntry(w.label, kv.value.toString('utf8')) : null;
        const look = looks[k];
        const seen = typeof look === 'string' ? null : seenOf(look.span, look.search, r1.responses, at[k] + 1);
        if (entry !== null) {
          if ('invalid' in entry) return judge(w, entry, []);
          const span = spanOf(entryIntervals(entry));
          const around = seen && seen.valued && !seen.hidden ? aroundWithin(seen, span) : null;
          if (around) judge(w, entry, around);
          else elsewhere.push({ w, kv: kv, entry, span });
          return;
        }
        if (seen === null) return conflict(w, look as string);
        if (seen.hidden) return conflict(w, hiddenMessage(seen.span));
        if (typeof look !== 'string' && !look.search && fixedIntervals(w) === null) return void unhinted.add(w); // not where recorded: search
        const around = [...seen.keys, ...(seen.after ? [seen.after] : [])];
        let intervals: readonly Interval[];
        const fixed = fixedIntervals(w);
        if (fixed) {
          const problem = claimProblem(w, fixed, around) ?? claimProblem(w, fixed, claimedHere);
          if (problem) return conflict(w, problem);
          intervals = fixed;
        } else {
          const size = w.kind === 'auto' ? w.size : 0;
          const step = searchStep(searches.get(w)!, maps.get(size) ?? null, around, [...system, ...claimedHere]);
          if ('search' in step) {
            searches.set(w, step.search);
            return; // the next read, next round
          }
          intervals = [{ start: step.slot, end: step.slot + size }];
        }
        const chunks = indexChunks(intervals);
        if (chunks.length > MAX_INTERVALS)
          return conflict(
            w,
            `its ids are ${chunks.length} pieces of the shared pool's index (each at most ${CHUNK} ids), more than the ${MAX_INTERVALS} one label may hold`,
          );
        if (!write) return void done.add(w);
        const entryOut: PoolEntry =
          w.kind === 'static'
            ? { kind: 'static', intervals, by: this.host, at: new Date().toISOString() }
            : { kind: 'auto', start: intervals[0].start, size: w.size, by: this.host, at: new Date().toISOString() };
        const span = compareSpan(intervals, around);
        // Nothing made or changed since the first read where a key that could overlap it would end, and the key after it as it was.
        compare.push(
          { key: lk(w.label), target: RPC.CompareTarget.Create, result: RPC.CompareResult.Equal, create_revision: 0 },
          {
            key: from(span.fromEnd),
            range_end: past(span.toEnd),
            target: RPC.CompareTarget.Mod,
            result: RPC.CompareResult.Less,
            mod_revision: String(revision + 1n),
          },
          ...(span.bound
            ? [
                {
                  key: Buffer.from(idsKey(this.cfg.prefix, span.bound)),
                  target: RPC.CompareTarget.Mod,
                  result: RPC.CompareResult.Equal,
                  mod_revision: span.bound.mod,
                },
              ]
            : []),
        );
        puts.push(
          { request_put: { key: lk(w.label), value: Buffer.from(serializeEntry(entryOut)) } },
          ...chunks.map((i) => ({ request_put: { key: Buffer.from(idsKey(this.cfg.prefix, i)), value: Buffer.from(serializeIndex(w.label, entryOut)) } })),
        );
        claimedHere.push(...intervals.map((i) => ({ ...i, label: w.label, valid: true, kind: entryOut.kind, by: this.host })));
        claims.push({ w, a: w.kind === 'auto' ? { start: intervals[0].start, size: w.size } : null });
      });
      // 2: the index around entries whose ids lie outside what was read, while the entries stay as read.
      if (elsewhere.length > 0) {
        const r2 = await this.txn('answer a read', {
          compare: [
            this.marker,
            ...elsewhere.map(({ w, kv }): RPC.ICompare => ({
              key: lk(w.label),
              target: RPC.CompareTarget.Mod,
              result: RPC.CompareResult.Equal,
              mod_revision: kv.mod_revision,
            })),
          ],
          success: elsewhere.flatMap((e) => readSpan(e.span, false)),
        });
        if (!r2.succeeded) lost++;
        else
          elsewhere.forEach(({ w, entry, span }, k) => {
            const seen = seenOf(span, false, r2.responses, 2 * k);
            if (seen.hidden) conflict(w, hiddenMessage(span));
            else judge(w, entry, aroundWithin(seen, span)!);
          });
      }
      // 3: the claims.
      if (claims.length > 0) {
        await this.beforeWrite?.();
        const r3 = await this.txn('answer a write', { compare, success: puts });
        if (!r3.succeeded) {
          lost++;
          await new Promise((r) => setTimeout(r, Math.random() * 5 * lost)); // another host wrote: read again
        } else {
          for (const c of claims) {
            if (c.a) out.decided.set(c.w.label, c.a);
            done.add(c.w);
          }
          this.markMaps(claimedHere, true);
          claimed += claims.length;
        }
      }
      left = left.filter((w) => !done.has(w));
    }
    return claimed;
  }

  /** ranges import: this host's recorded allocations into the pool, checked all first (nothing written when one conflicts). */
  async importRanges(local: ReadonlyMap<string, Allocation>, pool: Pool, reserved: readonly Interval[]): Promise<{ imported: number; conflicts: Conflict[] }> {
    await this.ensureLayout();
    const wants = [...local].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)).map(([label, a]): Want => ({ label, kind: 'auto', size: a.size, at: a.start }));
    const system = mergeIntervals(reserved);
    const check: Settled = { decided: new Map(), conflicts: [] };
    await this.inBatches(wants, async (b) => void (await this.settleBatch(b, pool, system, false, check)));
    if (check.conflicts.length > 0) return { imported: 0, conflicts: check.conflicts };
    const done: Settled = { decided: new Map(), conflicts: [] };
    let imported = 0;
    await this.inBatches(wants, async (b) => void (imported += await this.settleBatch(b, pool, system, true, done)));
    return { imported, conflicts: done.conflicts };
  }

  /**
   * Free a label's range cluster-wide, refused while any host publishes it as pinned. The pinned
   * keys read are part of the compare: a host that publishes its pins meanwhile makes the forget
   * read them again.
   */
  async forgetRange(label: string): Promise<boolean> {
    await this.ensureLayout();
    const key = Buffer.from(labelKey(this.cfg.prefix, label));
    const pinned = `${this.cfg.prefix}pinned/`;
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const r = await this.txn('answer a read', {
        compare: [this.marker],
        success: [{ request_range: { key } }, { request_range: { key: Buffer.from(pinned), range_end: Buffer.from(prefixEnd(pinned)) } }],
      });
      if (!r.succeeded) {
        this.layoutReady = false;
        await this.ensureLayout();
        continue;
      }
      // A value that cannot be read might hide the label: that host counts as holding it.
      const holders = r.responses[1].response_range.kvs
        .filter((x) => publishedLabels(x.value.toString('utf8'))?.includes(label) ?? true)
        .map((x) => x.key.toString('utf8').slice(pinned.length));
      if (holders.length > 0) throw new Fault('busy', `${label} is pinned on ${holders.join(', ')}`, { object: 'pin', label, step: 'forget' });
      const kv = r.responses[0].response_range.kvs[0];
      if (!kv) return false;
      const entry = parseEntry(label, kv.value.toString('utf8'));
      // Its index keys: where a valid entry says they are, else any that names it (a whole read of the index, rare).
      const named = (k: string, v: string) => parseIndex(this.cfg.prefix, k, v)?.label === label;
      let mine: { key: Buffer; mod_revision: string }[];
      if (entry !== null && !('invalid' in entry)) {
        const idx = await this.txn('answer a read', {
          compare: [],
          success: indexChunks(entryIntervals(entry)).map((i) => ({ request_range: { key: Buffer.from(idsKey(this.cfg.prefix, i)) } })),
        });
        mine = idx.responses.flatMap((x) => x.response_range.kvs).filter((x) => named(x.key.toString('utf8'), x.value.toString('utf8')));
      } else {
        mine = (await this.scan(idsPrefix(this.cfg.prefix)))
          .filter((x) => named(x.key, x.value))
          .map((x) => ({ key: Buffer.from(x.key), mod_revision: x.mod }));
      }
      await this.beforeWrite?.();
      const w = await this.txn('answer a write', {
        compare: [
          this.marker,
          { key, target: RPC.CompareTarget.Mod, result: RPC.CompareResult.Equal, mod_revision: kv.mod_revision },
          ...mine.map((x): RPC.ICompare => ({ key: x.key, target: RPC.CompareTarget.Mod, result: RPC.CompareResult.Equal, mod_revision: x.mod_revision })),
          // No host published its pins since they were read (one that pins the label now is asked again).
          {
            key: Buffer.from(pinned),
            range_end: Buffer.from(prefixEnd(pinned)),
            target: RPC.CompareTarget.Mod,
            result: RPC.CompareResult.Less,
            mod_revision: String(BigInt(r.header.revision) + 1n),
          },
        ],
        success: [{ request_delete_range: { key } }, ...mine.map((x) => ({ request_delete_range: { key: x.key } }))],
      });
      if (w.succeeded) {
        if (entry !== null && !('invalid' in entry)) this.markMaps(entryIntervals(entry), false);
        return true;
      }
    }
    throw contended();
  }

  /**
   * A context made from inside, for every host sharing the pool (SPEC §14): written only where no
   * record of its label is (a compare-and-swap on its creation). False: another host made it first.
   */
  async putChild(label: string, text: string): Promise<boolean> {
    const key = this.childrenPrefix + label;
    return this.call(
      'record a context made from inside',
      async () => (await this.client.if(key, 'Create', '==', 0).then(this.client.put(key).value(text)).commit()).succeeded,
    );
  }

  /** The records of contexts made from inside, each label's and those nested in it by name, removed for every host. */
  async deleteChildren(labels: readonly string[]): Promise<void> {
    if (labels.length === 0) return;
    await this.call('forget contexts made from inside', async () => {
      await Promise.all(
        labels.flatMap((l) => [
          this.client
            .delete()
            .key(this.childrenPrefix + l)
            .exec(),
          this.client.delete().prefix(`${this.childrenPrefix}${l}.`).exec(),
        ]),
      );
    });
  }

  /** Every record of a context made from inside, by label (the key's tail, as etcd holds it: input to check). */
  async readChildren(): Promise<Map<string, string>> {
    const all = await this.call('answer a read', () => this.client.getAll().prefix(this.childrenPrefix).strings());
    return new Map(Object.entries(all).map(([k, v]) => [k.slice(this.childrenPrefix.length), v]));
  }

  /** What this host has pinned, under a lease that a dead host's claims expire with. */
  async publishPinned(labels: readonly string[]): Promise<void> {
    await this.call("keep this host's pins", async () => {
      if (!this.lease) {
        const lease = this.client.lease(PINNED_LEASE_TTL_S, { autoKeepAlive: true });
        lease.on('lost', () => {
          if (this.lease === lease) this.lease = null;
        });
        this.lease = lease;
      }
      await this.lease.put(this.pinnedKey(this.host)).value(JSON.stringify([...labels].sort()));
    });
  }

  async close(): Promise<void> {
    try {
      await this.lease?.revoke();
    } catch {
      /* etcd away: the lease expires */
    }
    this.client.close();
  }
}

/** What one read of the index around ids `span` found: the keys ending in it, the first ending after it, and whether keys that are not the index's hid that one. */
type Seen = {
  readonly span: Interval;
  /** Read with the keys' values (labels): an entry can be judged by it. */
  readonly valued: boolean;
  readonly keys: readonly IndexEntry[];
  readonly after: IndexEntry | null;
  readonly hidden: boolean;
};

/** The keys that can overlap ids `sp`, from a read around a span holding it; null when it does not hold it. */
function aroundWithin(seen: Seen, sp: Interval): IndexEntry[] | null {
  if (sp.start < seen.span.start || sp.end > seen.span.end) return null;
  const keys = seen.keys.filter((e) => e.end > sp.start && e.end <= sp.end);
  const later = [...seen.keys.filter((e) => e.end > sp.end), ...(seen.after ? [seen.after] : [])];
  const first = later.reduce<IndexEntry | null>((m, e) => (m === null || e.end < m.end ? e : m), null);
  return first ? [...keys, first] : keys;
}

/** The key just past every key that starts with `prefix` (its last character + 1). */
const prefixEnd = (prefix: string) => prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);

/** What a host published as pinned (a JSON array of labels), or null when it is not that. */
function publishedLabels(text: string): readonly string[] | null {
  try {
    const v = JSON.parse(text) as unknown;
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
  } catch {
    /* not JSON */
  }
  return null;
}

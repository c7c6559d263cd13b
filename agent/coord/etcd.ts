// The etcd coordinator: the only file that talks to etcd (the etcd3 client). The shared pool is one
// document under PREFIX/pool, changed only by compare-and-swap on its revision, so every host sees
// every decision in one order (linearizable); what each host has pinned is published under
// PREFIX/pinned/HOST on a lease, so a dead host's claims expire. Fail closed: when etcd does not
// answer within the timeout, nothing is decided here, and nothing is decided alone.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { circuitBreaker, ConsecutiveBreaker, handleWhen } from 'cockatiel';
import { Etcd3, isRecoverableError } from 'etcd3';
import type { Lease } from 'etcd3';
import type { Interval } from '../../config/extents.ts';
import type { EtcdConfig, Pool } from '../../config/types.ts';
import { UsernsError } from '../errors.ts';
import type { Allocation } from './allocate.ts';
import { decide, forget, importAllocations, parseDoc, serializeDoc } from './pooldoc.ts';
import type { Conflict, PoolDoc, Request, StaticClaim } from './pooldoc.ts';

/** How long a host's published pins outlive it (the lease's TTL, renewed while it runs). */
export const PINNED_LEASE_TTL_S = 15;
/** Compare-and-swap rounds before giving up (each lost round means another host just wrote). */
const MAX_ROUNDS = 50;

export type CoordinatorState = {
  readonly coordinator: 'etcd';
  readonly endpoints: readonly string[];
  readonly reachable: boolean;
  readonly lastOk: string | null;
  readonly lastError: string | null;
  readonly host: string;
};

export type Settled = { readonly decided: Map<string, Allocation>; readonly conflicts: Conflict[] };

export class EtcdCoordinator {
  readonly host: string;
  private readonly cfg: EtcdConfig;
  private readonly client: Etcd3;
  private lease: Lease | null = null;
  private reachable = false;
  private lastOk: string | null = null;
  private lastError: string | null = null;

  constructor(cfg: EtcdConfig) {
    this.cfg = cfg;
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
      if (err instanceof UsernsError) throw err;
      this.reachable = false;
      this.lastError = `${new Date().toISOString()} ${what}: ${(err as Error).message}`;
      throw new UsernsError(
        'E_UNAVAILABLE',
        `etcd (${this.cfg.endpoints.join(', ')}) did not ${what}: ${(err as Error).message}; nothing is allocated without it (ranges already recorded keep working)`,
        err,
      );
    } finally {
      clearTimeout(timer);
    }
  }

  /** The document and its revision ("0" when there is none yet). */
  async read(): Promise<{ doc: PoolDoc; revision: string }> {
    return this.call('answer a read', async () => {
      const r = await this.client.get(this.poolKey).exec();
      const kv = r.kvs[0];
      const doc = parseDoc(kv ? kv.value.toString('utf8') : null);
      if (typeof doc === 'string') throw new UsernsError('E_CONFIG', `${doc} at ${this.poolKey}: fix or remove it (etcdctl get ${this.poolKey})`);
      return { doc, revision: kv ? kv.mod_revision : '0' };
    });
  }

  /**
   * Change the document with `change` until one compare-and-swap wins: re-read and re-decide after
   * each lost round, so the result always reflects every other host's last write.
   */
  private async update<T>(change: (doc: PoolDoc) => { next: PoolDoc | null; result: T }): Promise<T> {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const { doc, revision } = await this.read();
      const { next, result } = change(doc);
      if (next === null) return result;
      const body = serializeDoc(next);
      const ok = await this.call('answer a write', async () => {
        const cmp = revision === '0' ? this.client.if(this.poolKey, 'Create', '==', 0) : this.client.if(this.poolKey, 'Mod', '==', revision);
        return (await cmp.then(this.client.put(this.poolKey).value(body)).commit()).succeeded;
      });
      if (ok) return result;
      await new Promise((r) => setTimeout(r, Math.random() * 5 * (round + 1))); // another host wrote: read again
    }
    throw new UsernsError('E_UNAVAILABLE', `the shared pool changed under every one of ${MAX_ROUNDS} attempts: try again`);
  }

  /** Register this host's static ranges and get every requested label its cluster-wide range. */
  settle(requests: readonly Request[], statics: readonly StaticClaim[], pool: Pool, reserved: readonly Interval[]): Promise<Settled> {
    return this.update((doc) => {
      const d = decide(doc, requests, statics, pool, reserved, this.host, new Date().toISOString());
      return { next: d.next, result: { decided: d.decided, conflicts: d.conflicts } };
    });
  }

  async importRanges(local: ReadonlyMap<string, Allocation>): Promise<{ imported: number; conflicts: Conflict[] }> {
    return this.update((doc) => {
      const r = importAllocations(doc, local, this.host, new Date().toISOString());
      return {
        next: r.next,
        result: { imported: r.next ? local.size - Object.keys(doc.ranges).filter((l) => local.has(l)).length : 0, conflicts: r.conflicts },
      };
    });
  }

  /**
   * Free a label's range cluster-wide, refused while any host publishes it as pinned. The pinned
   * keys read are part of the compare: a host that pins it meanwhile makes the forget fail.
   */
  async forgetRange(label: string): Promise<boolean> {
    const pinnedBy = await this.call('answer a read', () => this.client.getAll().prefix(`${this.cfg.prefix}pinned/`).strings());
    // A value that cannot be read might hide the label: that host counts as holding it.
    const holders = Object.entries(pinnedBy)
      .filter(([, v]) => publishedLabels(v)?.includes(label) ?? true)
      .map(([k]) => k.slice(`${this.cfg.prefix}pinned/`.length));
    if (holders.length > 0) throw new UsernsError('E_BUSY', `${label} is pinned on ${holders.join(', ')}: release it there first (usernsctl release ${label})`);
    return this.update((doc) => {
      const next = forget(doc, label);
      return { next, result: next !== null };
    });
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

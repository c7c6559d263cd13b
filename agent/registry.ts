// Contexts ↔ pins: the configuration in force (with last-good versions kept across reloads), parent-first resolution, views for mapping.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { labelProblem } from '../config/schema.ts';
import { formatConfigError } from '../config/ini.ts';
import { sameInEffect } from '../config/judge.ts';
import { HostMapsOf } from '../config/judge.ts';
import type { HostMaps } from '../config/judge.ts';
import { LayeredMap } from '../config/layered.ts';
import { HOST_LABEL } from '../config/types.ts';
import type { ConfigError, Context, IdMap } from '../config/types.ts';
import type { Peer } from './wire/peer.ts';
import type { ContextState, Delegated } from './wire/protocol.ts';
import { HelperPrograms } from './kernel/helper.ts';
import { vethNames } from './kernel/netdelegate.ts';
import type { Configuration } from './configure.ts';
import { UsernsError } from './errors.ts';
import { agentError, said } from './advice.ts';
import { HOST_VIEW, makeView } from './idmap.ts';
import type { MapView, Overflow } from './idmap.ts';
import { NameIndex } from './names.ts';
import { Namespaces, pinMountNamespace, pinnedIno } from './kernel/userns.ts';
import { parentNsIno } from './kernel/sys.ts';
import type { AdoptEntry, ParentPin, Pin } from './kernel/userns.ts';
import { Delegations } from './kernel/delegate.ts';
import type { DelegationEvents, DelegationPlan } from './kernel/delegate.ts';

export type Resolved = { readonly ctx: Context; readonly pin: Pin };

/** What a reload changed, by label. */
export type ReloadDiff = {
  readonly added: string[];
  readonly changed: string[];
  readonly removed: string[];
  readonly kept: string[];
};

/** Told about every namespace created, ancestors included: who asked (null: the agent itself) and how long it took. */
export type OnCreate = (pin: Pin, ms: number, by: Peer | null) => void;

export class Registry {
  readonly namespaces: Namespaces;
  private readonly onCreate: OnCreate;
  private config: Configuration;
  /**
   * The configuration's own maps, never changed in place (a context made or forgotten from inside
   * replaces them with changed copies): a reload adopts the maps its load made, without copying them.
   */
  private contexts: ReadonlyMap<string, Context>;
  private hostMaps: ReadonlyMap<string, HostMaps>;
  /**
   * The last replacement of `contexts`: the map before (weakly: a caller that still holds it may ask
   * about it, and nobody else keeps 65,535 entries alive for it), the map after, the labels whose entry differs.
   */
  private lastChange: {
    readonly from: WeakRef<ReadonlyMap<string, Context>>;
    readonly to: ReadonlyMap<string, Context>;
    readonly labels: ReadonlySet<string>;
  } | null = null;
  private readonly views = new Map<string, MapView>();
  private nameIndex: NameIndex | null = null;
  /** The last start-up reconciliation, for status. */
  adoption: AdoptEntry[] = [];

  /** What contexts are given beyond ids (SPEC §13): set up on creation, torn down at release. */
  readonly delegations: Delegations;

  constructor(config: Configuration, onCreate: OnCreate = () => {}, events?: DelegationEvents) {
    this.onCreate = onCreate;
    this.config = config;
    this.contexts = config.contexts;
    this.hostMaps = config.hostMaps;
    this.namespaces = new Namespaces({
      pinsDir: config.agent.pins,
      mountNs: pinMountNamespace(config.agent.mountNamespace),
      spawner: config.agent.spawner,
      onPinned: async (ctx, pin) => {
        const plan = this.plan(ctx, pin);
        if (plan) await this.delegations.setUp(plan);
      },
    });
    this.delegations = new Delegations(
      this.namespaces.recordsDir,
      config.agent.cgroupRoot,
      { mountNs: this.namespaces.mountNs, helpers: new HelperPrograms(config.agent.pins) },
      events,
    );
  }

  /** The cgroup a context is given: under its parent's when the parent has one, else under cgroup_root. */
  cgroupOf(ctx: Context): string | null {
    if (!ctx.delegate?.cgroup) return null;
    const parent = ctx.parent === HOST_LABEL ? undefined : this.contexts.get(ctx.parent);
    const above = parent ? this.cgroupOf(parent) : null;
    return join(above ?? this.delegations.cgroupRoot, ctx.label);
  }

  /** What the context's pin is given, with the host ids of its root; null when it is given nothing. */
  plan(ctx: Context, pin: { path: string; ino: number }): DelegationPlan | null {
    if (!ctx.delegate) return null;
    const host = this.hostMaps.get(ctx.label)!;
    const rootOf = (m: IdMap) => m.find((e) => e.inside === 0)?.outside;
    const uid = rootOf(host.uid);
    const gid = rootOf(host.gid);
    if (uid === undefined || gid === undefined)
      throw new UsernsError('E_CONFIG', `context "${ctx.label}" is given resources ([delegate]) but does not map root (inside id 0) to receive them`);
    return {
      label: ctx.label,
      pin: pin.path,
      ino: pin.ino,
      root: { uid, gid },
      hostUid: host.uid,
      hostGid: host.gid,
      cgroup: this.cgroupOf(ctx),
      netns: this.netnsOf(ctx),
      setgroups: ctx.setgroups,
      delegate: ctx.delegate,
    };
  }

  /** Where the context's network namespace is pinned, when it gets one. */
  netnsOf(ctx: Context): string | null {
    return ctx.delegate?.netns ? join(this.config.agent.netnsDir, ctx.label) : null;
  }

  /** What a resolve tells a caller of the context's delegations (from the configuration). */
  delegated(ctx: Context): Delegated | null {
    const d = ctx.delegate;
    if (!d) return null;
    return {
      cgroup: this.cgroupOf(ctx),
      netns: this.netnsOf(ctx),
      veth: d.veth ? vethNames(ctx.label).host : null,
      tap: d.tap,
      devices: d.devices,
      directories: d.directories,
    };
  }

  /**
   * Delegations brought in line with the kernel (SPEC §13): every pinned context in force (or only
   * `labels`) gets what it is configured with; the records of pins that are gone are torn down.
   * Pins without a context (orphans) keep theirs until released. Returns what was done, and failures.
   */
  async reconcileDelegations(labels?: readonly string[]): Promise<{ done: string[]; failed: { label: string; message: string }[]; checked: number }> {
    const done: string[] = [];
    const failed: { label: string; message: string }[] = [];
    const recorded = new Set(this.delegations.labels());
    // A nested context's cgroup lies in its parent's: what a change moves, its descendants move with it.
    const named = labels
      ? [...labels, ...labels.flatMap((l) => this.descendants(l))]
      : [...[...this.contexts.values()].filter((c) => c.delegate).map((c) => c.label), ...recorded];
    const depth = (l: string) => {
      const c = this.contexts.get(l);
      return c ? this.ancestors(c).length : 0;
    };
    const todo = [...new Set(named)].sort((a, b) => depth(a) - depth(b));
    // Deepest first, what moved out of a parent's cgroup leaves it; what failed (a cgroup to be made
    // in a parent's not made yet) is tried again after, parents first.
    const again: string[] = [];
    for (const label of [...todo].reverse()) {
      try {
        done.push(...(await this.reconcileOne(label, recorded)));
      } catch {
        again.push(label);
      }
    }
    for (const label of again.reverse()) {
      try {
        done.push(...(await this.reconcileOne(label, recorded)));
      } catch (err) {
        failed.push({ label, message: said(err) });
      }
    }
    return { done, failed, checked: todo.length };
  }

  private async reconcileOne(label: string, recorded: ReadonlySet<string>): Promise<string[]> {
    const ctx = this.contexts.get(label);
    if (!this.isPinned(label)) {
      if (!recorded.has(label)) return [];
      const had = this.delegations.read(label) !== null; // an unreadable record is only removed
      await this.delegations.tearDown(label, false);
      return had ? [`${label}: its pin is gone: delegations torn down`] : [];
    }
    if (!ctx) return []; // an orphan pin keeps what it was given until it is released
    // Only what is served: a pin under an unpinned parent (stale) or in drift waits for its release.
    if (this.ancestors(ctx).some((a) => !this.isPinned(a.label))) return [];
    let pin: Pin;
    try {
      pin = (this.resolveKnown(label) ?? (await this.resolve(label))).pin; // a reload's new Context is checked anew
    } catch (err) {
      if (agentError(err)) return [];
      throw err;
    }
    return this.delegations.reconcile(this.plan(ctx, pin), label);
  }

  get agent() {
    return this.config.agent;
  }
  /** The configuration in force, as loaded. */
  get configuration(): Configuration {
    return this.config;
  }
  get errors(): readonly ConfigError[] {
    return this.config.errors;
  }
  get overflow(): Overflow {
    return { uid: this.config.agent.overflowuid, gid: this.config.agent.overflowgid };
  }

  get(label: string): Context | undefined {
    return this.contexts.get(label);
  }

  all(): IterableIterator<Context> {
    return this.contexts.values();
  }

  /**
   * The contexts in force by label: the map itself, which is never changed in place (a change makes
   * another), so a load compares with it and a record keeps it without a copy.
   */
  inForce(): ReadonlyMap<string, Context> {
    return this.contexts;
  }

  /**
   * The labels whose context may differ between `map` (a map in force earlier) and the map in force
   * now, every other label holding the very same object in both; null when the registry cannot say
   * (more than one change since `map`): then compare them all. The record of what is in force and
   * who counts as whom follow a reload at the cost of what it changed.
   */
  changedSince(map: ReadonlyMap<string, Context>): ReadonlySet<string> | null {
    const c = this.lastChange;
    return c && c.to === this.contexts && c.from.deref() === map ? c.labels : null;
  }

  get size(): number {
    return this.contexts.size;
  }

  /** The configuration problem of a label's file, when its context is missing because of one. */
  private errorOf(label: string): string | null {
    const file = join(this.config.agent.contexts, `${label}.conf`);
    const e = this.config.errors.find((x) => x.file === file);
    return e ? formatConfigError(e) : null;
  }

  /** Pinned labels no context claims (left by a removed file, or by hand). */
  orphans(): string[] {
    let names: string[];
    try {
      names = readdirSync(this.config.agent.pins);
    } catch {
      return [];
    }
    return names.filter((n) => !this.contexts.has(n) && labelProblem(n) === null && pinnedIno(join(this.config.agent.pins, n)) !== null).sort();
  }

  /**
   * Each context's state as the kernel shows it now: not created, pinned, drift (pinned, but not as
   * configured: found at start or at a resolve), stale (pinned under a parent in drift, stale or not
   * pinned); and pins without a context (orphans). Parents come before children in the registry.
   */
  states(withDelegations = false): ContextState[] {
    const drift = this.namespaces.drifted;
    const out: ContextState[] = [];
    const byLabel = new Map<string, ContextState>();
    for (const c of this.all()) {
      const pinned = this.isPinned(c.label);
      const parent = byLabel.get(c.parent);
      let s: ContextState;
      if (!pinned) s = { label: c.label, owner: c.owner, state: 'not created' };
      else if (drift.has(c.label)) s = { label: c.label, owner: c.owner, state: 'drift' };
      else if (parent && parent.state !== 'pinned') {
        const why = parent.state === 'not created' ? `its parent ${c.parent} is not pinned` : `its parent ${c.parent} is in ${parent.state}`;
        s = { label: c.label, owner: c.owner, state: 'stale', why: `${why}; release ${c.parent}, which releases what is nested in it too` };
      } else s = { label: c.label, owner: c.owner, state: 'pinned' };
      byLabel.set(c.label, s);
      out.push(withDelegations ? this.withDelegated(s) : s);
    }
    for (const label of this.orphans())
      out.push(withDelegations ? this.withDelegated({ label, owner: null, state: 'orphan' }) : { label, owner: null, state: 'orphan' });
    return out;
  }

  private withDelegated(s: ContextState): ContextState {
    const delegated = this.delegations.inspect(s.label);
    return delegated.length > 0 ? { ...s, delegated } : s;
  }

  isPinned(label: string): boolean {
    return pinnedIno(this.namespaces.pinPath(label)) !== null;
  }

  /** The context's namespace, its ancestors created first; concurrent calls share one creation each. */
  /** The context, or why there is none: its file has an error (E_CONFIG), or it is not configured. */
  context(label: string): Context {
    const ctx = this.contexts.get(label);
    if (ctx) return ctx;
    if (this.config.waiting.includes(label)) {
      throw new UsernsError(
        'E_UNAVAILABLE',
        `context "${label}" waits for its range from the shared pool (etcd), which has not answered: it is created once etcd answers (usernsctl status shows the coordinator)`,
      );
    }
    const why = this.errorOf(label);
    if (why) throw new UsernsError('E_CONFIG', `context "${label}" is not loaded because its file has an error: ${why}`);
    throw new UsernsError('E_NOT_FOUND', `no context "${label}" is configured (files in ${this.config.agent.contexts}; usernsctl list shows them)`);
  }

  /**
   * The context's namespace when it and its ancestors are pinned and checked already: no promise,
   * no microtask turn (most resolves); null when `resolve` must look (create, check, or fail).
   */
  resolveKnown(label: string): Resolved | null {
    const ctx = this.contexts.get(label);
    if (!ctx) return null;
    const parent = ctx.parent === HOST_LABEL ? null : this.resolveKnown(ctx.parent);
    if (parent === null && ctx.parent !== HOST_LABEL) return null;
    const pin = this.namespaces.known(ctx, this.parentPin(ctx, parent));
    return pin && { ctx, pin };
  }

  async resolve(label: string, by: Peer | null = null): Promise<Resolved> {
    const ctx = this.context(label);
    const parent = ctx.parent === HOST_LABEL ? null : await this.resolve(ctx.parent, by);
    const started = performance.now();
    const pin = await this.namespaces.ensure(ctx, this.parentPin(ctx, parent));
    if (pin.created) this.onCreate(pin, performance.now() - started, by);
    return { ctx, pin };
  }

  /** A nested context's parent as its namespace needs it (pin, inode, host maps); null under host. */
  private parentPin(ctx: Context, parent: Resolved | null): ParentPin | null {
    return parent && { pin: parent.pin.path, ino: parent.pin.ino, host: this.hostMaps.get(ctx.parent)! };
  }

  /** A context (or the host) compiled for the mapper; built once per configuration. */
  view(label: string): MapView {
    if (label === HOST_LABEL) return HOST_VIEW;
    let v = this.views.get(label);
    if (!v) {
      const ctx = this.context(label);
      const host = this.hostMaps.get(label)!;
      v = makeView(label, ctx.squash, host.uid, host.gid);
      this.views.set(label, v);
    }
    return v;
  }

  /** Names of the host ids of the contexts in force (userdb), built once per configuration. */
  names(): NameIndex {
    this.nameIndex ??= new NameIndex(
      [...this.contexts.values()].map((c) => ({
        label: c.label,
        parent: c.parent,
        uid: this.hostMaps.get(c.label)!.uid,
        gid: this.hostMaps.get(c.label)!.gid,
      })),
    );
    return this.nameIndex;
  }

  /** The host uid a context maps uid 0 to (its root), or null (no such context, or none). */
  rootUid(label: string | null | undefined): number | null {
    if (typeof label !== 'string') return null;
    return this.hostMaps.get(label)?.uid.find((e) => e.inside === 0)?.outside ?? null;
  }

  /** The caller as the policy judges it: with the context it runs in, when it is not on the host (SPEC §14). */
  caller(peer: Peer): Peer {
    return peer.host ? peer : { ...peer, inside: this.contextOfUserns(peer.userns) };
  }

  /**
   * The context a caller runs in: the innermost namespace of its chain (innermost first, from the
   * kernel) that is a context's pin the agent checked; null when none is (a namespace of its own).
   */
  contextOfUserns(chain: readonly number[]): string | null {
    for (const ino of chain) {
      const label = this.namespaces.labelOfIno(ino);
      if (label !== null && this.contexts.has(label)) return label;
    }
    return null;
  }

  async adopt(): Promise<AdoptEntry[]> {
    this.adoption = await this.namespaces.adopt(this.contexts);
    return this.adoption;
  }

  /** The contexts a context is nested in: its parent first, its top-level context last. */
  ancestors(ctx: Context): Context[] {
    const out: Context[] = [];
    for (let c = ctx; c.parent !== HOST_LABEL && out.length < 64;) {
      c = this.context(c.parent);
      out.push(c);
    }
    return out;
  }

  /** The ancestor whose parent is host (the context itself for a top-level one). */
  topLevel(ctx: Context): Context {
    return this.ancestors(ctx).pop() ?? ctx;
  }

  /** Contexts nested in `label`, at any depth, deepest first. */
  descendants(label: string): string[] {
    const out: string[] = [];
    const walk = (parent: string, depth: number) => {
      if (depth > 64) return;
      for (const c of this.contexts.values())
        if (c.parent === parent) {
          walk(c.label, depth + 1);
          out.push(c.label);
        }
    };
    walk(label, 0);
    return out;
  }

  /**
   * Unpin a context, and first every pinned context nested in it: a child left pinned would stay
   * inside the old parent namespace, and no longer be nested in the parent's next pin. So would an
   * orphan's pin (adopted at start, its file gone) that lies in its namespace: released too, deepest
   * first. Left there, it would keep host ids of the old parent in use that nothing reserves any more,
   * and the parent's next pin would be given them again (found by config-over-time, seed 24329887).
   */
  async release(label: string, kill = false): Promise<{ released: boolean; descendants: string[] }> {
    const inForce = this.descendants(label);
    const nested = [...this.orphansUnder(label, inForce), ...inForce];
    // Refused whole before anything is undone: a cgroup that holds processes, unless they are killed.
    for (const l of [...nested, label]) {
      const busy = this.delegations.releaseProblem(l, kill);
      if (busy) throw busy;
    }
    const descendants: string[] = [];
    for (const d of nested) {
      await this.delegations.tearDown(d, kill);
      if (await this.namespaces.release(d)) descendants.push(d);
    }
    await this.delegations.tearDown(label, kill);
    return { released: await this.namespaces.release(label), descendants };
  }

  /**
   * The orphans' pins whose namespaces lie in `label`'s pinned one, or in its pinned descendants'
   * (`nested`), at any depth, as the kernel says (NS_GET_PARENT): deepest first. Only orphans are
   * looked at, and only those adopted as such: the agent makes no orphan while it runs.
   */
  private orphansUnder(label: string, nested: readonly string[]): string[] {
    const orphans = this.adoption.filter((a) => a.status === 'orphan' && !this.contexts.has(a.label)).map((a) => a.label);
    if (orphans.length === 0) return [];
    const inside = new Set<number>();
    for (const l of [label, ...nested]) {
      const ino = pinnedIno(this.namespaces.pinPath(l));
      if (ino !== null) inside.add(ino);
    }
    const out: string[] = [];
    for (let grew = inside.size > 0; grew;) {
      grew = false;
      for (const o of orphans) {
        if (out.includes(o)) continue;
        const path = this.namespaces.pinPath(o);
        const ino = pinnedIno(path);
        const parent = ino === null ? null : parentNsIno(path);
        if (ino === null || parent === null || !inside.has(parent)) continue;
        out.push(o);
        inside.add(ino);
        grew = true;
      }
    }
    return out.reverse();
  }

  /**
   * A context made from inside, judged already (configure.ts judgeRuntimeChild): in force now, without
   * a reload. The map in force is layered over, not copied (65,535 contexts: 9-36 ms).
   */
  admit(ctx: Context, host: HostMaps): void {
    this.lastChange = { from: new WeakRef(this.contexts), to: LayeredMap.copyOf(this.contexts).set(ctx.label, ctx), labels: new Set([ctx.label]) };
    this.contexts = this.lastChange.to;
    this.hostMaps = HostMapsOf.changed(this.hostMaps, this.contexts, (m) => m.set(ctx.label, host));
    this.changedInPlace([ctx.label]);
  }

  /** Contexts made from inside, forgotten (their pins are released already): out of force now, without a reload. */
  forget(labels: readonly string[]): void {
    const contexts = LayeredMap.copyOf(this.contexts);
    for (const l of labels) contexts.delete(l);
    const hostMaps = HostMapsOf.changed(this.hostMaps, contexts, (m) => {
      for (const l of labels) m.delete(l);
    });
    this.lastChange = { from: new WeakRef(this.contexts), to: contexts, labels: new Set(labels) };
    this.contexts = contexts;
    this.hostMaps = hostMaps;
    this.changedInPlace(labels);
  }

  private changedInPlace(labels: readonly string[]): void {
    for (const l of labels) this.views.delete(l);
    this.nameIndex = null;
    this.config = { ...this.config, contexts: this.contexts, hostMaps: this.hostMaps };
  }

  /**
   * Put a freshly loaded configuration in force. The load has already decided everything: a context
   * whose file is now broken is in it at its last good version (Configuration.kept), and a context
   * in force kept its ids against newcomers. A context whose file is gone is removed (the caller
   * releases its pin). A changed context keeps its pin: if its maps changed, resolve reports drift
   * until root releases it.
   */
  apply(next: Configuration): ReloadDiff {
    const added: string[] = [];
    const changed: string[] = [];
    const removed: string[] = [];
    const was = this.contexts;
    const now = next.contexts;
    // The very map in force (a load whose judgement changed nothing here hands out the same): no diff.
    if (now !== was) {
      // What differs, as the judgement knows it when it changed the very map in force; else every label is looked at.
      const known = next.delta && next.delta.from === was && next.delta.to === now ? next.delta.labels : null;
      const labels = new Set<string>();
      const look = (label: string) => {
        const old = was.get(label);
        const c = now.get(label);
        if (old === c) return;
        labels.add(label);
        if (!c) removed.push(label);
        else if (!old) added.push(label);
        else if (!sameInEffect(old, c)) changed.push(label); // a comment moving its keys down is no change
      };
      if (known) for (const label of known) look(label);
      else {
        for (const label of now.keys()) look(label);
        for (const label of was.keys()) if (!now.has(label)) look(label);
      }
      this.lastChange = { from: new WeakRef(was), to: now, labels };
    }
    this.config = next.delta ? { ...next, delta: null } : next; // the delta's map before is not kept alive by it
    this.contexts = now;
    this.hostMaps = next.hostMaps;
    this.views.clear();
    this.nameIndex = null;
    return { added, changed, removed, kept: [...next.kept] };
  }
}

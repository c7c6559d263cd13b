// Contexts ↔ pins: the configuration in force (with last-good versions kept across reloads), parent-first resolution, views for mapping.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { labelProblem } from '../config/schema.ts';
import { formatConfigError } from '../config/ini.ts';
import type { HostMaps } from '../config/load.ts';
import { HOST_LABEL } from '../config/types.ts';
import type { ConfigError, Context } from '../config/types.ts';
import type { Peer } from './auth.ts';
import type { Configuration } from './configure.ts';
import { UsernsError } from './errors.ts';
import { HOST_VIEW, makeView } from './idmap.ts';
import type { MapView, Overflow } from './idmap.ts';
import { Namespaces, pinMountNamespace, pinnedIno } from './userns.ts';
import type { AdoptEntry, Pin } from './userns.ts';

export type Resolved = { readonly ctx: Context; readonly pin: Pin };

/** What a reload changed, by label. */
export type ReloadDiff = {
  readonly added: string[];
  readonly changed: string[];
  readonly removed: string[];
  readonly kept: string[];
};

function sameContext(a: Context, b: Context): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Told about every namespace created, ancestors included: who asked (null: the agent itself) and how long it took. */
export type OnCreate = (pin: Pin, ms: number, by: Peer | null) => void;

export class Registry {
  readonly namespaces: Namespaces;
  private readonly onCreate: OnCreate;
  private config: Configuration;
  private contexts: Map<string, Context>;
  private hostMaps: Map<string, HostMaps>;
  private readonly views = new Map<string, MapView>();
  /** The last start-up reconciliation, for status. */
  adoption: AdoptEntry[] = [];

  constructor(config: Configuration, onCreate: OnCreate = () => {}) {
    this.onCreate = onCreate;
    this.config = config;
    this.contexts = new Map(config.contexts);
    this.hostMaps = new Map(config.hostMaps);
    this.namespaces = new Namespaces({ pinsDir: config.agent.pins, stateDir: config.agent.state, mountNs: pinMountNamespace(config.agent.mountNamespace) });
  }

  get agent() { return this.config.agent; }
  get errors(): readonly ConfigError[] { return this.config.errors; }
  get overflow(): Overflow { return { uid: this.config.agent.overflowuid, gid: this.config.agent.overflowgid }; }

  get(label: string): Context | undefined {
    return this.contexts.get(label);
  }

  all(): IterableIterator<Context> {
    return this.contexts.values();
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

  isPinned(label: string): boolean {
    return pinnedIno(this.namespaces.pinPath(label)) !== null;
  }

  /** The context's namespace, its ancestors created first; concurrent calls share one creation each. */
  /** The context, or why there is none: its file has an error (E_CONFIG), or it is not configured. */
  context(label: string): Context {
    const ctx = this.contexts.get(label);
    if (ctx) return ctx;
    const why = this.errorOf(label);
    if (why) throw new UsernsError('E_CONFIG', `context "${label}" is not loaded because its file has an error: ${why}`);
    throw new UsernsError('E_NOT_FOUND', `no context "${label}" is configured (files in ${this.config.agent.contexts}; usernsctl list shows them)`);
  }

  async resolve(label: string, by: Peer | null = null): Promise<Resolved> {
    const ctx = this.context(label);
    const parent = ctx.parent === HOST_LABEL ? null : await this.resolve(ctx.parent, by);
    const started = performance.now();
    const pin = await this.namespaces.ensure(ctx, parent && { pin: parent.pin.path, host: this.hostMaps.get(ctx.parent)! });
    if (pin.created) this.onCreate(pin, performance.now() - started, by);
    return { ctx, pin };
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

  async adopt(): Promise<AdoptEntry[]> {
    this.adoption = await this.namespaces.adopt(this.contexts);
    return this.adoption;
  }

  release(label: string): Promise<boolean> {
    return this.namespaces.release(label);
  }

  /**
   * Put a freshly loaded configuration in force. A context whose file is now broken keeps its last
   * good version (while its parent stays), so one typo does not take a context away; a context
   * whose file is gone is removed and its pin released. A changed context keeps its pin: if its maps
   * changed, resolve reports drift until root releases it.
   */
  apply(next: Configuration): ReloadDiff {
    const broken = new Set(next.errors.map((e) => e.file));
    const merged = new Map<string, Context>();
    const hostMaps = new Map<string, HostMaps>();
    const kept: string[] = [];
    // Walk the new contexts and the old ones parents-first, so a kept child finds its parent.
    const order = [...next.contexts.values(), ...this.contexts.values()];
    for (let progress = true; progress;) {
      progress = false;
      for (const c of order) {
        if (merged.has(c.label)) continue;
        const fresh = next.contexts.get(c.label);
        const candidate = fresh ?? (broken.has(c.file) ? c : null);
        if (!candidate || candidate !== c) continue;
        if (candidate.parent !== HOST_LABEL && !merged.has(candidate.parent)) continue;
        merged.set(c.label, c);
        hostMaps.set(c.label, fresh ? next.hostMaps.get(c.label)! : this.hostMaps.get(c.label)!);
        if (!fresh) kept.push(c.label);
        progress = true;
      }
    }
    const added: string[] = [];
    const changed: string[] = [];
    for (const [label, c] of merged) {
      const old = this.contexts.get(label);
      if (!old) added.push(label);
      else if (!sameContext(old, c)) changed.push(label);
    }
    const removed = [...this.contexts.keys()].filter((l) => !merged.has(l));
    this.config = next;
    this.contexts = merged;
    this.hostMaps = hostMaps;
    this.views.clear();
    return { added, changed, removed, kept };
  }
}

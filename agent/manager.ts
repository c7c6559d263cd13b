// The agent's lifecycle: load and reconcile at start, eager creation, the sockets, reload, drain on
// stop. What the request handlers are given is the Service (service.ts), not this.
import type { Logger } from 'pino';
import type { Server as HttpServer } from 'node:http';
import { join } from 'node:path';
import { formatConfigError } from '../config/ini.ts';
import { keepStartOnly, ParseCache } from '../config/load.ts';
import type { AgentConfig, LogLevel, Nss } from '../config/types.ts';
import { mayUse } from './policy.ts';
import { loadConfiguration, loadConfigurationAsync, loadSettings, systemIds } from './configure.ts';
import type { Configuration, LoadMemo, LoadOptions, SystemIds } from './configure.ts';
import { Judgement } from '../config/judge.ts';
import { createChild, forgetChildren } from './children.ts';
import type { ChildrenParts } from './children.ts';
import { rangePool } from './rangepool.ts';
import type { PoolMaker, RangePool } from './rangepool.ts';
import { UsernsError } from './errors.ts';
import { agentError, said } from './advice.ts';
import { handleRequest, METHOD_NAMES } from './handlers.ts';
import type { ReloadResult } from './wire/protocol.ts';
import { Registry } from './registry.ts';
import { toHost } from './idmap.ts';
import { Service } from './service.ts';
import { IpcServer, loadIpcModule, prepareSocketPath } from './wire/server.ts';
import { FdServer } from './wire/fdsock.ts';
import { fdSocketPath } from './wire/protocol.ts';
import { UserdbServer } from './wire/userdb.ts';
import { listenMetrics, Metrics } from './metrics.ts';
import { Views } from './views.ts';
import { hasInForceRecord, newerStateFiles } from './coord/state.ts';
import { InForceRecorder } from './inforce.ts';
import { removeStaleTemps } from './kernel/files.ts';
import { holdDirectory } from './kernel/hold.ts';
import { newerRecordFormat, pinsDirectories, RECORDS_DIR } from './kernel/pinrecord.ts';
import { NativeReads } from './kernel/reads.ts';
import { ThreadReads } from '../config/readahead.ts';
import { growingYoung, settleMemory } from './memory.ts';
import { Supervisor } from './supervisor.ts';
import { VERSION } from './version.ts';
import { UpcallWatch } from './wiring.ts';
import { People } from './people.ts';

export type ManagerOptions = {
  /** null: DEFAULT_CONFIG_FILE if it exists, else the defaults. */
  readonly configFile: string | null;
  readonly log: Logger;
  /** --log-level: wins over the file's log_level, also after a reload. */
  readonly logLevel?: LogLevel;
  readonly nss?: Nss;
  readonly systemIds?: SystemIds;
  /** The supervisor's readiness channel; default sd_notify(3) to $NOTIFY_SOCKET, if set. */
  readonly notify?: (state: string) => void;
};

/** Eager contexts created at once at start-up. */
export const EAGER_CONCURRENCY = 8;
/** Pin records written at a time once the agent serves, the event loop running between pieces. */
const RECORDS_PIECE = 256;

/** How soon contexts.json follows a context made or forgotten from inside (a burst is written once). */
const IN_FORCE_DELAY_MS = 200;

/** A listing this long is read on the native library's thread at start (starting it costs tens of microseconds). */
const NATIVE_READ_MIN_FILES = 16;

/** How long SIGTERM waits for requests in flight before closing connections anyway. */
export const DRAIN_TIMEOUT_MS = 10_000;

export class Manager {
  readonly log: Logger;
  readonly registry: Registry;
  /** What the request handlers are given. */
  readonly service: Service;
  private readonly opts: ManagerOptions;
  private readonly server: IpcServer;
  private readonly fdServer: FdServer;
  private readonly userdb: UserdbServer | null;
  /** Who decides the auto ranges: this host alone, or the shared pool in etcd. */
  readonly pool: RangePool;
  readonly metrics: Metrics;
  private metricsHttp: HttpServer | null = null;
  readonly views: Views;
  private reloading: Promise<unknown> = Promise.resolve();
  private recordTimer: NodeJS.Timeout | null = null;
  private stopping: Promise<void> | null = null;
  /** The collection after a reload, once it has answered; one for reloads that come at once. */
  private settling: NodeJS.Immediate | null = null;
  /** Where request-key sends "userns:LABEL" keys, as last seen (status shows it). */
  private readonly upcall: UpcallWatch;
  /** The supervisor's readiness channel. */
  private readonly supervisor: Supervisor;
  /** Who counts as whom for the per-user limits: rebuilt with the contexts in force. */
  private readonly people = new People();
  /**
   * The context files as parsed at start and at each reload, and the last judgement across them: a
   * reload reads and parses what changed, and judges again what that can affect.
   */
  private readonly memo: LoadMemo;
  /** Namespaces made for eager contexts (parents included), and the time their creations took. */
  private readonly eagerMade = { count: 0, ms: 0 };
  /** The record of the contexts in force, kept as things change. */
  private readonly record: InForceRecorder;

  private constructor(opts: ManagerOptions, config: Configuration, memo: LoadMemo, makePool: PoolMaker) {
    this.memo = memo;
    this.opts = opts;
    this.log = opts.log;
    this.supervisor = new Supervisor(opts.log, opts.notify);
    this.upcall = new UpcallWatch(opts.log);
    this.metrics = new Metrics(METHOD_NAMES, {
      contextStates: () => {
        const out: Record<string, number> = { 'not created': 0, pinned: 0, drift: 0, stale: 0, orphan: 0 };
        for (const c of this.registry.states()) out[c.state] = (out[c.state] ?? 0) + 1;
        return out;
      },
      connections: () => this.server.connections,
      configErrors: () => this.registry.errors.length,
      views: () => ({ recorded: this.views.list().length, namespaces: this.views.namespaces.size }),
      coordinator: () => this.pool.health(),
    });
    this.registry = new Registry(
      config,
      (pin, ms, by) => {
        this.service.count('created');
        this.metrics.created(ms);
        this.pool.pinsChanged();
        const fields = { label: pin.label, ino: pin.ino, peerUid: by?.uid, peerPid: by?.pid, ms: +ms.toFixed(2) };
        // Eager ones one by one at debug: thousands at a start are said in one line (createEager).
        if (by) this.log.info(fields, 'Created user namespace');
        else {
          this.eagerMade.count++;
          this.eagerMade.ms += ms;
          this.log.debug(fields, 'Created user namespace (eager)');
        }
      },
      {
        hook: (h) => {
          const fields = { label: h.label, hook: h.hook, path: h.path, code: h.code, signal: h.signal, ms: h.ms, output: h.output || undefined };
          if (h.code === 0) this.log.info(fields, `Ran exec_${h.hook} of ${h.label}`);
          else {
            this.metrics.delegationFailed(`exec_${h.hook}`);
            this.log.error(fields, `exec_${h.hook} of ${h.label} failed`);
          }
        },
        failed: (step, label, err) => {
          this.metrics.delegationFailed(step);
          this.log.error({ label, step }, `Failed to ${step === 'set_up' ? 'set up' : 'tear down'} the delegations of ${label}: ${said(err)}`);
        },
      },
    );
    // What is in force and unchanged is the record's objects (config.recorded): nothing to write for it.
    this.record = new InForceRecorder(config.agent.state, this.registry, this.log, config.recorded);
    this.people.rebuild(config.contexts.values());
    this.views = new Views(config.agent.state, this.registry.namespaces.maker);
    this.pool = makePool(opts.log, {
      config: () => this.registry.configuration,
      reload: (source) => this.reload(source),
      pinned: () => [...this.registry.all()].filter((c) => this.registry.isPinned(c.label)).map((c) => c.label),
      systemIds: opts.systemIds ?? systemIds,
    });
    const children: ChildrenParts = {
      registry: this.registry,
      pool: this.pool,
      people: this.people,
      nss: opts.nss,
      recordSoon: () => this.recordInForceSoon(),
    };
    this.service = new Service({
      log: opts.log,
      registry: this.registry,
      views: this.views,
      metrics: this.metrics,
      pool: this.pool,
      people: this.people,
      upcall: this.upcall,
      connections: () => this.server.connections,
      changes: {
        reload: (source) => this.reload(source),
        createChild: (...args) => this.serially(() => createChild(children, ...args)),
        forgetChildren: (label) => this.serially(() => forgetChildren(children, label)),
      },
    });
    this.server = new IpcServer({
      path: config.agent.socket,
      log: opts.log,
      limiter: this.service.logLimiter,
      people: this.people,
      onRequest: (conn, data) => handleRequest(this.service, conn, data),
    });
    this.fdServer = new FdServer({
      path: fdSocketPath(config.agent.socket),
      log: opts.log,
      people: this.people,
      onRequest: (conn, data) => handleRequest(this.service, conn, data),
    });
    this.userdb = config.agent.userdb
      ? new UserdbServer({
          path: config.agent.userdbSocket,
          log: opts.log,
          people: this.people,
          source: {
            index: () => this.registry.names(),
            mayKnow: (peer, label) => {
              const ctx = this.registry.get(label);
              return ctx !== undefined && mayUse(this.registry.caller(peer), ctx, this.registry.ancestors(ctx));
            },
            served: (kind, outcome) => this.metrics.userdbLookup(kind, outcome),
            callerIds: (peer) => {
              const inside = this.registry.caller(peer).inside;
              if (typeof inside !== 'string') return null;
              const view = this.registry.view(inside);
              return { label: inside, toHost: (kind, id) => toHost(view, kind, id) };
            },
          },
        })
      : null;
  }

  /** The HTTP listener for Prometheus, when usernsd.conf asks for one; like userdb, never fatal. */
  private async listenMetricsHttp(): Promise<void> {
    const at = this.registry.agent.metricsListen;
    if (!at) return;
    try {
      this.metricsHttp = await listenMetrics(this.metrics, at.host, at.port, this.log);
      this.log.info({ host: at.host, port: at.port }, 'Serving metrics over HTTP at /metrics');
    } catch (err) {
      this.log.error(
        { host: at.host, port: at.port },
        `Failed to serve metrics over HTTP: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; usernsctl metrics still answers (under systemd, see usernsd.conf(5) for the drop-in a listener needs)`,
      );
    }
  }

  /** Names through userdb are a convenience: a socket that cannot be served is logged, never fatal. */
  private async listenUserdb(): Promise<void> {
    if (!this.userdb) return;
    try {
      await this.userdb.listen();
      this.log.info({ socket: this.registry.agent.userdbSocket, service: this.userdb.service }, 'Serving names through userdb');
    } catch (err) {
      this.log.error(
        { socket: this.registry.agent.userdbSocket },
        `Failed to serve names through userdb: ${(err as Error).message}; ids show as numbers (set userdb = no in usernsd.conf to stop trying)`,
      );
    }
  }

  /**
   * `inForce`: the contexts in force now (a reload); at start the state directory's record says.
   * At a reload the files are read off the event loop, so the requests being served do not wait
   * on the disk; at start nothing is served yet, and reading in one go is twice as fast.
   */
  private static load(
    opts: ManagerOptions,
    memo: LoadMemo,
    given: Pick<LoadOptions, 'inForce' | 'refused' | 'settings' | 'files' | 'texts'> = {},
  ): Promise<Configuration> {
    const o = { record: true, nss: opts.nss, systemIds: opts.systemIds, ...given, ...memo };
    return given.inForce ? loadConfigurationAsync(opts.configFile, o) : Promise.resolve(loadConfiguration(opts.configFile, o));
  }

  /** contexts.json rewritten once for a burst of contexts made or forgotten from inside (each is recorded on its own already). */
  private recordInForceSoon(): void {
    this.recordTimer ??= setTimeout(() => {
      this.recordTimer = null;
      this.record.record(false);
    }, IN_FORCE_DELAY_MS).unref();
  }

  /**
   * Load, adopt existing pins, create the eager contexts, then serve. A broken settings file stops the
   * start (the agent would not know where anything is); a broken context file only loses that context.
   */
  static async start(opts: ManagerOptions): Promise<Manager> {
    const memo: LoadMemo = { cache: new ParseCache(), judgement: new Judgement() };
    // The settings first, then the directories held: nothing is read or written in them (ranges
    // allocated, pins adopted, records rewritten) while another agent uses them.
    const settings = loadSettings(opts.configFile, opts.nss);
    if (settings.errors.length > 0) throw new UsernsError('E_CONFIG', settings.errors.map(formatConfigError).join('\n'));
    Manager.holdDirectories(settings.agent);
    Manager.refuseNewerFormats(settings.agent);
    // An agent with directories of its own on a socket another serves is refused as early (listen checks again).
    await prepareSocketPath(settings.agent.socket);
    const files = memo.cache.list(settings.agent.contexts);
    // Read on the native library's thread while this one parses, else on a thread of Node's (as
    // config/load.ts would), and a long listing's garbage in a young generation that may grow
    // (growingYoung) until settleMemory collects it and holds it at its size again.
    const reads = Array.isArray(files) ? ((files.length >= NATIVE_READ_MIN_FILES ? NativeReads.start(files) : null) ?? ThreadReads.forListing(files)) : null;
    let config: Configuration;
    try {
      const texts = Array.isArray(files) ? growingYoung(files.length, reads) : null;
      config = await Manager.load(opts, memo, { settings, files, texts: texts ?? undefined });
    } finally {
      void reads?.close();
    }
    const fatal = config.errors.filter((e) => e.file === config.agent.file);
    if (fatal.length > 0) throw new UsernsError('E_CONFIG', fatal.map(formatConfigError).join('\n'));
    opts.log.level = opts.logLevel ?? config.agent.logLevel;
    const m = new Manager(opts, config, memo, await rangePool(config));
    const stale = [...removeStaleTemps(config.agent.state), ...removeStaleTemps(m.registry.namespaces.recordsDir)];
    if (stale.length > 0) m.log.info({ files: stale }, `Removed ${stale.length} temporary file(s) left by an agent that did not finish writing them`);
    // A state directory with no record yet gets its first one once the agent serves (InForceRecorder.recordInPieces).
    const firstRecord = config.recorded === null && !hasInForceRecord(config.agent.state);
    if (!firstRecord) m.record.record();
    try {
      const leaf = m.registry.delegations.settle();
      if (leaf) m.log.info({ cgroup: leaf, cgroupRoot: m.registry.delegations.cgroupRoot }, "Moved into a leaf of the agent's delegated cgroup");
    } catch (err) {
      m.log.error({}, `${said(err)}: contexts' cgroup limits may be refused (the kernel's no-internal-processes rule)`);
    }
    // A shared pool first: what etcd decides (within its timeout) is in the configuration adopted and created.
    if (!(await m.pool.settle()))
      m.log.warn(
        { waiting: m.registry.configuration.waiting },
        "Starting without the shared pool's answer for some contexts: they are served once etcd answers",
      );
    const wiring = m.upcall.check(config.agent.socket); // a few ms in request-key, alongside adoption and creation
    for (const e of config.errors) m.log.warn({ file: e.file, key: e.key, line: e.line }, `Failed to load context: ${formatConfigError(e)}`);
    for (const n of config.notices) m.log.warn({ file: n.file, key: n.key }, `Context allowed beyond its owner's delegation: ${formatConfigError(n)}`);
    const started = performance.now();
    for (const a of await m.registry.adopt()) {
      if (a.status !== 'ok') m.log.warn({ label: a.label, status: a.status }, `Pin ${a.path}: ${a.message}`);
    }
    m.log.info(
      {
        contexts: config.contexts.size,
        pins: m.registry.adoption.length,
        mountNamespace: m.registry.namespaces.mountNs ?? 'own',
        ms: +(performance.now() - started).toFixed(1),
      },
      'Adopted existing pins',
    );
    await m.reconcileDelegations();
    // The pin records of the eager creations are written once the agent serves (recordPinsSoon).
    m.registry.namespaces.holdRecords();
    // node-ipc loads meanwhile, while the creations wait on the spawner (a failure is the listen's).
    loadIpcModule().catch(() => undefined);
    await m.createEager();
    await wiring;
    await m.server.listen();
    await m.fdServer.listen();
    await m.listenUserdb();
    await m.listenMetricsHttp();
    m.log.info({ socket: config.agent.socket, config: config.agent.file, version: VERSION }, 'Serving');
    // Only now: the socket listens and every eager context exists (or its failure is logged).
    m.supervisor.notify(`READY=1\nMAINPID=${process.pid}\nSTATUS=${m.statusLine()}`);
    // The load's garbage is collected once the agent serves, as after a reload: a start on 65,535
    // files is ready 0.3 s sooner, and its memory is back within that time.
    m.settleSoon('start');
    m.recordPinsSoon();
    if (firstRecord) m.record.recordInPieces();
    return m;
  }

  /**
   * One agent per state and pins directory, held until it exits (kernel/hold.ts): a second one,
   * whatever socket it is given, refuses here, naming the first, before it has done anything.
   */
  private static holdDirectories(agent: AgentConfig): void {
    holdDirectory([[agent.state, 0o700]], 'state directory');
    // The pins' lock lies in their records directory, which only root may enter (the pins directory is open to all).
    holdDirectory(pinsDirectories(agent.pins), 'pins directory');
  }

  /**
   * Before anything is written: state or pin records in a format a newer usernsd wrote stop the
   * start. Rewriting them in this build's format would lose what it cannot read (a downgrade must
   * be undone, or its files converted, by the admin: usernsd(8) UPGRADES).
   */
  private static refuseNewerFormats(agent: AgentConfig): void {
    const newer = [...newerStateFiles(agent.state), newerRecordFormat(join(agent.pins, RECORDS_DIR))].filter((p) => p !== null);
    if (newer.length === 0) return;
    throw new UsernsError(
      'E_CONFIG',
      `${newer.join('\n')}\nRefusing to start rather than guess: run the newer usernsd again, or see usernsd(8) UPGRADES for going back to an older one`,
    );
  }

  /** Delegations checked against the kernel (all of them at start; what changed at a reload), logged. */
  private async reconcileDelegations(labels?: readonly string[]): Promise<void> {
    const started = performance.now();
    const { done, failed, checked } = await this.registry.reconcileDelegations(labels);
    if (checked > 0)
      this.log.info(
        { contexts: checked, repaired: done.length, failed: failed.length, ms: +(performance.now() - started).toFixed(1) },
        'Reconciled delegations',
      );
    for (const d of done) this.log.info({}, `Delegations: ${d}`);
    for (const f of failed) {
      this.metrics.delegationFailed('reconcile');
      this.log.error({ label: f.label }, `Failed to reconcile the delegations of ${f.label}: ${f.message}`);
    }
  }

  /**
   * Eager contexts, EAGER_CONCURRENCY at a time: each creation mostly waits for its helper process,
   * so a few in parallel keep both the CPUs and the kernel busy. Parents are shared, not duplicated
   * (Registry.resolve creates each label once).
   */
  private async createEager(labels?: readonly string[]): Promise<void> {
    const among = labels ? labels.map((l) => this.registry.get(l)).filter((c) => c !== undefined) : [...this.registry.all()];
    const queue = among.filter((c) => c.create === 'eager');
    if (queue.length === 0) return;
    const started = performance.now();
    const before = { ...this.eagerMade };
    let failed = 0;
    let next = 0;
    const worker = async () => {
      for (let c = queue[next++]; c; c = queue[next++]) {
        try {
          await this.registry.resolve(c.label);
        } catch (err) {
          const e = agentError(err);
          failed++;
          this.log.error(
            { label: c.label, code: e?.code ?? 'E_INTERNAL', err: e ? undefined : err },
            `Failed to create eager context ${c.label}: ${said(err)}`,
          );
        }
      }
    };
    await Promise.all(Array.from({ length: EAGER_CONCURRENCY }, worker));
    const created = this.eagerMade.count - before.count;
    this.log.info(
      {
        contexts: queue.length,
        created,
        failed,
        ms: +(performance.now() - started).toFixed(1),
        // The agent's own time per namespace made, as each creation measured it (parents included).
        meanMs: created > 0 ? +((this.eagerMade.ms - before.ms) / created).toFixed(2) : undefined,
      },
      'Created eager contexts',
    );
  }

  private statusLine(): string {
    return `serving ${this.registry.size} context(s) on ${this.registry.agent.socket}`;
  }

  /** Reloads run one at a time, in order: SIGHUP and `reload` requests never interleave. */
  reload(source: string): Promise<ReloadResult> {
    return this.serially(() => this.reloadNow(source));
  }

  private async reloadNow(source: string): Promise<ReloadResult> {
    this.supervisor.notify('RELOADING=1');
    try {
      return await this.reloadConfig(source);
    } finally {
      this.supervisor.notify(`READY=1\nSTATUS=${this.statusLine()}`);
    }
  }

  private async reloadConfig(source: string): Promise<ReloadResult> {
    const started = performance.now();
    const before = this.registry.agent;
    // An admin who wired the upcall reloads to see it taken: request-key is asked alongside the load.
    const wiring = this.upcall.check(this.registry.agent.socket);
    await this.writePinRecords(); // the load weighs pins by their records
    const parsedBefore = this.memo.cache.counts.parsed;
    const partialBefore = this.memo.judgement.counts.partial;
    // What is in force, as it is: reloads and the contexts made and forgotten from inside run one at a time (serially).
    const config = await Manager.load(this.opts, this.memo, { inForce: this.registry.inForce(), refused: this.pool.refused });
    const errors = config.errors.map(formatConfigError);
    this.service.reloaded();
    if (config.errors.some((e) => e.file === config.agent.file)) {
      for (const e of errors) this.log.error({ source }, `Failed to reload: ${e}`);
      this.log.error({ source }, 'Failed to reload: the settings file has errors; everything stays as it was');
      this.metrics.reloaded('failed');
      await wiring;
      return { contexts: this.registry.size, added: [], changed: [], removed: [], kept: [], errors };
    }
    this.metrics.reloaded(config.errors.length > 0 ? 'partial' : 'ok');
    const { agent, waiting } = keepStartOnly(before, config.agent);
    for (const w of waiting) this.log.warn({ key: w.field, old: w.old, new: w.new }, `Setting ${w.field} changed: it takes effect at the next start`);
    const was = this.registry.inForce();
    const diff = this.registry.apply({ ...config, agent });
    if (diff.added.length + diff.changed.length + diff.removed.length > 0) {
      const labels = this.registry.changedSince(was);
      if (labels) this.people.follow(was, this.registry.inForce(), labels);
      else this.people.rebuild(this.registry.all());
    }
    this.record.record();
    // The files may wait on the shared pool, or have changed a static range it must hear of.
    if (source !== 'etcd') void this.pool.settle();
    for (const label of diff.removed) {
      try {
        // A removed context's children are removed with it (their parent is gone): each is in diff.removed.
        if ((await this.registry.release(label)).released) this.log.info({ label }, 'Released user namespace (context removed)');
      } catch (err) {
        this.log.error({ label }, `Failed to release removed context ${label}: ${said(err)}`);
      }
    }
    // A changed context that is pinned is looked at now, so status shows its drift at once rather
    // than at its next resolve (a pin's maps come from its record: no helper process). So is an added
    // one that finds a pin already there: an orphan left by an earlier version of its file, whose
    // maps may well differ (found by config-over-time, seed 1252771541).
    for (const label of [...diff.added, ...diff.changed]) {
      if (!this.registry.isPinned(label)) continue;
      try {
        await this.registry.resolve(label);
      } catch (err) {
        this.log.warn({ label, code: agentError(err)?.code ?? 'E_INTERNAL' }, `Context ${label} changed: ${said(err)}`);
      }
    }
    // Eager contexts a reload brings (a new file, a context made from inside on another host) are made now, as at start.
    await this.createEager(diff.added.filter((l) => !this.registry.isPinned(l)));
    // What a changed context is given follows its file (set up, or given back), now.
    await this.reconcileDelegations(diff.changed.filter((l) => this.registry.isPinned(l)));
    // The upcall's cached answers for what changed or went are stale now, for every requester.
    await this.service.invalidateKeys([...diff.changed, ...diff.removed], 'their contexts changed or were removed');
    for (const e of config.errors) this.log.warn({ file: e.file, key: e.key, line: e.line }, `Failed to load context: ${formatConfigError(e)}`);
    for (const n of config.notices) this.log.warn({ file: n.file, key: n.key }, `Context allowed beyond its owner's delegation: ${formatConfigError(n)}`);
    for (const label of diff.kept) this.log.warn({ label }, `Context ${label} keeps its last good version until its file is fixed`);
    await wiring;
    this.log.level = this.opts.logLevel ?? config.agent.logLevel;
    this.settleSoon('reload');
    this.log.info(
      {
        source,
        contexts: this.registry.size,
        ...diff,
        errors: errors.length,
        // Context files read and parsed again (the others were unchanged since they were read).
        parsed: this.memo.cache.counts.parsed - parsedBefore,
        // Judged again: only what the changes can affect (partial), or every context (whole).
        judged: this.memo.judgement.counts.partial > partialBefore ? 'partial' : 'whole',
        ms: +(performance.now() - started).toFixed(1),
      },
      'Reloaded configuration',
    );
    return { contexts: this.registry.size, ...diff, errors };
  }

  /**
   * The records of the pins made at start, written once the agent serves, a piece at a time
   * between requests: 5,000 eager contexts are ready about 0.1 s sooner. A reload and a stop write
   * what is left first (the load reads them: pinned ids are weighed by them).
   */
  private recordPinsSoon(): void {
    const started = performance.now();
    void this.writePinRecords(RECORDS_PIECE).then((r) => {
      if (r.written > 0) this.log.debug({ pins: r.written, ms: +(performance.now() - started).toFixed(1) }, 'Recorded the pins made at start');
    });
  }

  private async writePinRecords(piece?: number): Promise<{ written: number }> {
    const r = await this.registry.namespaces.writeHeldRecords(piece);
    if (r.failed > 0)
      this.log.warn({ failed: r.failed }, `Failed to record ${r.failed} pin(s) (${r.error}): their maps are read from the kernel when they are next looked at`);
    return r;
  }

  /**
   * Memory settled once the agent serves, or once the reload's reply is out (setImmediate runs
   * after the reply's write): the garbage of a load is given back at once, and neither the start's
   * readiness nor the reload's answer waits for it. One pending settles for both.
   */
  private settleSoon(how: 'start' | 'reload'): void {
    if (this.settling || this.stopping) return;
    this.settling = setImmediate(() => {
      this.settling = null;
      settleMemory(this.log, how);
    });
  }

  /**
   * One change to the configuration in force at a time, in order: reloads, and the contexts made and
   * forgotten from inside, so a reload never puts in force a picture older than a child just made.
   */
  private serially<T>(step: () => Promise<T>): Promise<T> {
    const next = this.reloading.then(step);
    this.reloading = next.catch(() => undefined);
    return next;
  }

  /** SIGTERM: stop accepting, let requests in flight finish, close, remove the socket. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info('Stopping: no new connections; finishing requests in flight');
      this.supervisor.notify('STOPPING=1\nSTATUS=draining');
      this.server.stopAccepting();
      // One turn of the event loop, so requests already received on open connections are taken in.
      await new Promise((r) => setImmediate(r));
      const drained = await this.server.drain(DRAIN_TIMEOUT_MS);
      if (!drained) this.log.warn({ timeoutMs: DRAIN_TIMEOUT_MS }, 'Requests still in flight at the drain deadline: closing anyway');
      await this.server.close();
      await this.fdServer.close();
      await this.pool.close();
      await this.userdb?.close();
      const http = this.metricsHttp;
      if (http)
        await new Promise((r) => {
          http.close(r);
          http.closeAllConnections();
        });
      if (this.recordTimer) {
        clearTimeout(this.recordTimer);
        this.recordTimer = null;
      }
      if (this.settling) clearImmediate(this.settling);
      this.record.record(true, true);
      await this.writePinRecords(); // the next start adopts its pins by them
      await this.record.settled(); // a first record in pieces given up, its temporary file removed, before the agent exits
      this.views.close();
      this.registry.namespaces.close();
      this.service.close();
      this.log.info('Stopped');
    })();
    return this.stopping;
  }
}

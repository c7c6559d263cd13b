// One function per method, behind one edge that checks the request, authorizes it, and translates errors.
import type { Logger } from 'pino';
import { HOST_LABEL } from '../config/types.ts';
import type { Context, IdMap } from '../config/types.ts';
import { isRoot, mayEnter, mayEnterFromInside, mayShape, mayUse, ownName } from './policy.ts';
import type { Peer } from './wire/peer.ts';
import { shown, shownName } from '../config/text.ts';
import { UsernsError } from './errors.ts';
import { agentError } from './advice.ts';
import { mapIds } from './idmap.ts';
import { parseExtents } from '../config/extents.ts';
import { findLabel, findLabelFrom, Reached } from './labels.ts';
import { explain } from './explain.ts';
import { fstatSync } from 'node:fs';
import * as P from './wire/protocol.ts';
import type { Method, ParamsOf, Reply, ResultOf } from './wire/protocol.ts';
import type { Registry, Resolved } from './registry.ts';
import type { Connection } from './wire/server.ts';
import type { Views } from './views.ts';
import type { RangePool } from './rangepool.ts';
import type { Metrics } from './metrics.ts';

/** What the handlers need from the agent beyond the registry. */
export type Agent = {
  readonly registry: Registry;
  readonly log: Logger;
  reload(source: string): Promise<ResultOf<typeof P.reload>>;
  status(peer: Peer): ResultOf<typeof P.status>;
  count(name: string): void;
  /** The upcall's cached answers for these labels are stale: invalidate them, for every requester. */
  invalidateKeys(labels: readonly string[], why: string): Promise<void>;
  /** One answered request, for status: method (or "invalid"), error code if it failed, latency. */
  served(method: string, code: string | null, ms: number): void;
  /** Views made through the agent, and the user namespaces that carry their idmaps. */
  readonly views: Views;
  readonly metrics: Metrics;
  /** Who decides the auto ranges (this host, or the shared pool): what waits on it, and usernsctl ranges. */
  readonly pool: Pick<RangePool, 'settle' | 'list' | 'import' | 'forget'>;
  /** A context made from inside (SPEC §14): recorded, loaded, created and pinned; undone whole if any step fails. */
  createChild(peer: Peer, label: string, uidMap: IdMap, gidMap: IdMap, given: { cgroup: boolean }): Promise<Resolved>;
  /** The records of contexts made from inside, for `label` and what is nested in it, removed and unloaded; returns those forgotten. */
  forgetChildren(label: string): Promise<string[]>;
  /** A failure a client caused, logged within the per-uid budget (LogLimiter). */
  logClientFailure(peer: Peer, fields: Record<string, unknown>, msg: string, level: 'error' | 'warn' | 'info'): void;
};

/** A result, or its JSON text made already (P.EncodedResult: a resolve answered again). */
type Handler<M> = (agent: Agent, peer: Peer, params: ParamsOf<M>, conn: Connection) => Promise<ResultOf<M>> | ResultOf<M> | P.EncodedResult;
type Entry = { method: Method<unknown, unknown>; fn: Handler<Method<unknown, unknown>> };

const table = new Map<string, Entry>();
/** Register a handler for a declared method: the compiler keeps params and result in step with protocol.ts. */
function handle<M extends Method<never, unknown>>(method: M, fn: Handler<M>): void {
  table.set(method.name, { method: method as unknown as Method<unknown, unknown>, fn: fn as unknown as Handler<Method<unknown, unknown>> });
}

/**
 * The context a non-root caller may use, or E_PERMISSION, with the same message whether it exists
 * or not: callers learn nothing about contexts they may not see.
 */
function usable(agent: Agent, peer: Peer, label: string): Context {
  if (isRoot(peer)) return agent.registry.context(label);
  const ctx = agent.registry.get(label);
  if (ctx && mayUse(peer, ctx, agent.registry.ancestors(ctx))) return ctx;
  throw new UsernsError('E_PERMISSION', `uid ${peer.uid} may not use context "${label}" (or there is none): ask root to add you to its [access] section`);
}

/** Whether the kernel lets this caller join the context: from the host (its owner's rule), or from inside its ancestor as that one's root. */
function enters(agent: Agent, peer: Peer, ctx: Context): boolean {
  if (mayEnter(peer, agent.registry.topLevel(ctx))) return true;
  return mayEnterFromInside(peer, ctx, agent.registry.ancestors(ctx), agent.registry.rootUid(peer.inside));
}

handle(P.resolve, (agent, peer, { label: given }) => {
  const label = ownName(peer, given);
  // Most resolves: a pin checked already, answered in this turn (see Registry.resolveKnown).
  const known = agent.registry.resolveKnown(label);
  if (known) {
    usable(agent, peer, label);
    return encodedResult(agent, peer, known);
  }
  return resolveSlow(agent, peer, label);
});

/**
 * A resolve's answer is the same for every request until the pin is checked anew (a new Pin
 * object) or the context changes: its JSON text is made once per pin and whether the caller may
 * enter, and goes into each reply frame as is.
 */
const encoded = new WeakMap<object, { ctx: Context; texts: [P.EncodedResult | null, P.EncodedResult | null] }>();
function encodedResult(agent: Agent, peer: Peer, r: Resolved): P.EncodedResult {
  let e = encoded.get(r.pin);
  if (e?.ctx !== r.ctx) {
    e = { ctx: r.ctx, texts: [null, null] };
    encoded.set(r.pin, e);
  }
  const enter = enters(agent, peer, r.ctx);
  return (e.texts[enter ? 1 : 0] ??= new P.EncodedResult(JSON.stringify(resolvedResult(agent, peer, r))));
}

async function resolveSlow(agent: Agent, peer: Peer, label: string): Promise<P.ResolveResult> {
  try {
    usable(agent, peer, label);
  } catch (err) {
    // A context waiting for the shared pool: ask etcd now (within its timeout), then once more.
    if (agentError(err)?.code !== 'E_UNAVAILABLE') throw err;
    await agent.pool.settle();
    usable(agent, peer, label);
  }
  return resolvedResult(agent, peer, await agent.registry.resolve(label, peer));
}

function resolvedResult(agent: Agent, peer: Peer, { ctx, pin }: Resolved): P.ResolveResult {
  return {
    label: ctx.label,
    path: pin.path,
    parent: ctx.parent,
    owner: ctx.owner,
    uidMap: ctx.uidMap,
    gidMap: ctx.gidMap,
    setgroups: ctx.setgroups,
    ino: pin.ino,
    created: pin.created,
    mayEnter: enters(agent, peer, ctx),
    delegated: agent.registry.delegated(ctx),
  };
}

handle(P.resolvePath, async (agent, peer, { path }) => {
  const found = findLabel(path, agent.registry.agent.labelXattr, peer);
  usable(agent, peer, found.label);
  return { ...resolvedResult(agent, peer, await agent.registry.resolve(found.label, peer)), labelledPath: found.at };
});

handle(P.map, (agent, peer, { from: f, to: t, uids = [], gids = [] }) => {
  // Inside a context its ids are the only ones the caller has: "host" there is its own namespace.
  const [from, to] = [f, t].map((l) => (l !== HOST_LABEL ? ownName(peer, l) : typeof peer.inside === 'string' ? peer.inside : l));
  for (const label of [from, to]) if (label !== HOST_LABEL) usable(agent, peer, label);
  const a = agent.registry.view(from);
  const b = agent.registry.view(to);
  const overflow = agent.registry.overflow;
  return { from, to, uids: mapIds(a, b, 'uid', uids, overflow), gids: mapIds(a, b, 'gid', gids, overflow) };
});

handle(P.list, (agent, peer) => {
  const contexts: P.ListEntry[] = [];
  for (const c of agent.registry.all()) {
    if (!mayUse(peer, c, agent.registry.ancestors(c))) continue;
    contexts.push({
      label: c.label,
      parent: c.parent,
      owner: c.owner,
      uidMap: c.uidMap,
      gidMap: c.gidMap,
      create: c.create,
      squash: c.squash.mode,
      pinned: agent.registry.isPinned(c.label),
      madeInside: c.runtime === true,
    });
  }
  return { contexts };
});

handle(P.status, (agent, peer) => agent.status(peer));

handle(P.reload, (agent) => agent.reload('request'));

handle(P.release, async (agent, peer, { label: given, kill = false }) => {
  const label = ownName(peer, given);
  if (!isRoot(peer)) {
    // From inside a context, its root releases what was made inside it (SPEC §14); nothing else.
    const ctx = agent.registry.get(label);
    const parent = ctx?.runtime ? agent.registry.get(ctx.parent) : undefined;
    if (!ctx || !parent || !mayShape(peer, parent, agent.registry.ancestors(parent), agent.registry.rootUid(peer.inside)))
      throw new UsernsError(
        'E_PERMISSION',
        typeof peer.inside === 'string'
          ? `uid ${peer.uid} may not release "${label}" (or there is none): from inside a context, its root releases the contexts made inside it`
          : 'release is for root only',
      );
  }
  const started = performance.now();
  const { released, descendants } = await agent.registry.release(label, kill);
  for (let i = 0; i < descendants.length + (released ? 1 : 0); i++) agent.count('released');
  // What was made from inside goes with the context it was made in: never created again.
  const forgotten = await agent.forgetChildren(label);
  const ms = +(performance.now() - started).toFixed(2);
  agent.log.info(
    { label, released, descendants, forgotten: forgotten.length > 0 ? forgotten : undefined, peerUid: peer.uid, peerPid: peer.pid, ms },
    released ? 'Released user namespace' : 'Release: nothing pinned',
  );
  await agent.invalidateKeys([...descendants, ...(released ? [label] : [])], 'a released pin');
  return { label, released, descendants };
});

handle(P.create, async (agent, peer, { label: given, uidMap, gidMap, cgroup = false }) => {
  const label = ownName(peer, given);
  const dot = label.lastIndexOf('.');
  const parent = dot > 0 ? agent.registry.get(label.slice(0, dot)) : undefined;
  if (!parent || !mayShape(peer, parent, agent.registry.ancestors(parent), agent.registry.rootUid(peer.inside))) {
    if (isRoot(peer))
      throw new UsernsError(
        'E_NOT_FOUND',
        `no context "${dot > 0 ? label.slice(0, dot) : ''}" to make "${label}" in: a context made at run time is nested in one (CONTEXT.CHILD); a top-level context is a file in ${agent.registry.agent.contexts}`,
      );
    throw new UsernsError(
      'E_PERMISSION',
      `uid ${peer.uid} may not create "${label}" (or its parent does not exist): the root of a context creates contexts nested in it, from inside it`,
    );
  }
  const started = performance.now();
  const r = await agent.createChild(peer, label, parseExtents(uidMap) as IdMap, parseExtents(gidMap) as IdMap, { cgroup });
  agent.log.info(
    { label, parent: parent.label, peerUid: peer.uid, peerPid: peer.pid, inside: peer.inside ?? undefined, ms: +(performance.now() - started).toFixed(2) },
    'Created a context from inside',
  );
  return resolvedResult(agent, peer, r);
});

handle(P.joinCgroup, (agent, peer, { label: given }) => {
  const label = ownName(peer, given);
  const ctx = usable(agent, peer, label);
  // Who may join the namespace may start its command in the cgroup the namespace's root manages.
  if (!enters(agent, peer, ctx)) throw new UsernsError('E_PERMISSION', `uid ${peer.uid} may not enter context "${label}", so not join its cgroup either`);
  const cgroup = agent.registry.cgroupOf(ctx);
  if (cgroup === null) throw new UsernsError('E_NOT_FOUND', `context "${label}" has no cgroup ([delegate] cgroup = yes in its file gives it one)`);
  agent.registry.delegations.join(label, peer.pid);
  agent.log.info({ label, cgroup, peerUid: peer.uid, peerPid: peer.pid }, 'Moved a process into a context cgroup');
  return { label, cgroup };
});

handle(P.view, async (agent, peer, params, conn) => {
  if (!conn.attach)
    throw new UsernsError(
      'E_INVALID',
      'view hands over a file descriptor: ask on the descriptor socket (usernsctl view and enter --view do; see usernsd-protocol(7))',
    );
  const source = agent.views.source(agent.registry, peer, params);
  const ctx = usable(agent, peer, source.label);
  const result = await agent.views.make(agent.registry, peer, conn, params, source, ctx);
  agent.log.info(
    {
      label: ctx.label,
      src: result.src,
      mode: result.mode,
      mechanism: result.mechanism,
      purpose: params.purpose ?? 'mount',
      peerUid: peer.uid,
      peerPid: peer.pid,
    },
    'Made a view',
  );
  agent.metrics.view(result.mechanism, params.purpose ?? 'mount');
  return result;
});

handle(P.explain, (agent, peer, { path }) => {
  // The file's own ids and its label, read through the descriptor of what the caller reached (labels.ts).
  const reached = Reached.as(peer, path);
  let st;
  let found: { label: string; at: string } | null = null;
  try {
    st = fstatSync(reached.fd);
    try {
      found = findLabelFrom(reached, path, agent.registry.agent.labelXattr);
    } catch (err) {
      if (!(err instanceof UsernsError && err.code === 'E_NOT_FOUND')) throw err;
    }
  } finally {
    reached.close();
  }
  const ctx = found ? (agent.registry.get(found.label) ?? null) : null;
  const usableCtx = ctx && mayUse(peer, ctx, agent.registry.ancestors(ctx)) ? ctx : null;
  // SPEC §12: to a caller who may not use it, a context looks like one that does not exist.
  const hidden = `${found?.at} is labelled ${found?.label}, a context you may not use (or there is none): its ids are shown as the host's`;
  const note =
    found && !usableCtx
      ? !isRoot(peer)
        ? hidden
        : ctx
          ? `${found.at} is labelled ${found.label}, a context you may not use: its ids are shown as the host's`
          : `${found.at} is labelled ${found.label}, but no context ${found.label} is configured: its ids are shown as the host's`
      : found
        ? null
        : "no label on this path or its ancestors (up to a mount point): its ids are the host's own";
  const callerLabel = peer.inside ?? HOST_LABEL;
  const explained = explain({
    path,
    onDisk: { uid: st.uid, gid: st.gid },
    labelledPath: found?.at ?? null,
    file: usableCtx ? { ctx: usableCtx, view: agent.registry.view(usableCtx.label) } : null,
    caller: agent.registry.view(callerLabel),
    overflow: agent.registry.overflow,
    note,
    nameOf: (kind, host) => {
      const n = agent.registry.names().byHost(kind, host);
      const owner = n ? agent.registry.get(n.label) : undefined;
      return n && owner && mayUse(peer, owner, agent.registry.ancestors(owner)) ? n.name : null;
    },
  });
  return { ...explained, delegated: usableCtx ? agent.registry.delegated(usableCtx) : null };
});

handle(P.ranges, (agent) => agent.pool.list());
handle(P.rangesImport, (agent) => agent.pool.import());
handle(P.rangesForget, (agent, _peer, { label }) => agent.pool.forget(label, agent.registry.isPinned(label)));

handle(P.views, (agent) => ({ views: agent.views.list() }));

handle(P.metrics, async (agent) => ({ text: await agent.metrics.text(), contentType: agent.metrics.contentType }));

/** Log level by error code: the agent's own failures are louder than a client's mistakes. */
function levelOf(code: string): 'error' | 'warn' | 'info' {
  return code === 'E_INTERNAL' ? 'error' : code === 'E_KERNEL' || code === 'E_CONFIG' ? 'warn' : 'info';
}

/**
 * The edge: every request gets exactly one reply with its id; every failure becomes {code, message}.
 * Synchronous when the handler is (a resolve of a pin checked already): no promise, no microtask.
 */
export function handleRequest(agent: Agent, conn: Connection, data: unknown): Reply | Promise<Reply> {
  const started = performance.now();
  // Where the caller runs, judged now (pins come and go): host callers cost one property read.
  const peer = agent.registry.caller(conn.peer);
  // What the request says of itself, as far as it was read: its id (null when it has none), its method.
  let id = P.requestIdOf(data);
  let method: string | undefined;
  try {
    const req = P.checkRequest(data);
    id = req.id;
    method = req.method;
    const entry = table.get(req.method); // a Map: "__proto__" or "constructor" is just an unknown name
    if (!entry) throw new UsernsError('E_INVALID', `unknown method ${shown(req.method)}: one of ${[...table.keys()].join(', ')}`);
    if (entry.method.rootOnly && !isRoot(peer))
      throw new UsernsError(
        'E_PERMISSION',
        peer.uid === 0 && peer.userns.length === 0
          ? `${req.method} is for root only, and the agent could not tell which user namespace this uid 0 runs in (it needs CAP_SYS_PTRACE: usernsd(8))`
          : `${req.method} is for root only`,
      );
    const params = P.checkParams(entry.method, req.params);
    const result = entry.fn(agent, peer, params, conn);
    if (result instanceof Promise)
      return result.then(
        (r) => succeeded(agent, peer, data, req.id, req.method, r, started),
        (err: unknown) => failed(agent, peer, data, req.id, req.method, err, started),
      );
    return succeeded(agent, peer, data, req.id, req.method, result, started);
  } catch (err) {
    return failed(agent, peer, data, id, method, err, started);
  }
}

function succeeded(agent: Agent, peer: Peer, data: unknown, id: P.RequestId, method: string, result: unknown, started: number): Reply {
  if (viaUpcall(data)) agent.metrics.upcall(true);
  const ms = performance.now() - started;
  agent.served(method, null, ms);
  if (agent.log.isLevelEnabled('debug')) agent.log.debug({ id, method, peerUid: peer.uid, peerPid: peer.pid, ms: +ms.toFixed(3) }, 'request');
  return { id, result };
}

function failed(agent: Agent, peer: Peer, data: unknown, id: P.RequestId | null, method: string | undefined, err: unknown, started: number): Reply {
  // Faults from below are said here, once (advice.ts); anything else thrown is a bug.
  const e = agentError(err) ?? new UsernsError('E_INTERNAL', 'internal error: see the agent log', err);
  if (viaUpcall(data)) agent.metrics.upcall(false);
  const elapsed = performance.now() - started;
  // Unknown method names are not counted under their own name: a client must not grow the table.
  agent.served(method !== undefined && table.has(method) ? method : 'invalid', e.code, elapsed);
  const ms = +elapsed.toFixed(3);
  // Nothing a client sent reaches the log unbounded: its method name only when it is one of ours.
  const known = method !== undefined && table.has(method) ? method : undefined;
  const fields = {
    id,
    method: known ?? (method === undefined ? undefined : shown(method)),
    peerUid: peer.uid,
    peerPid: peer.pid,
    code: e.code,
    ms,
    label: labelOf(data),
  };
  // The protocol declares each method's errors (protocol.ts, usernsd-protocol(7)): an answer outside them is a bug here.
  if (known !== undefined && !table.get(known)!.method.errors.has(e.code))
    agent.log.error({ ...fields, err }, `${P.UNDECLARED_ERROR}: ${known} answered ${e.code} (${e.message})`);
  if (e.code === 'E_INTERNAL') agent.log.error({ ...fields, err }, `Failed to serve ${known ?? 'a request'}: ${(err as Error)?.message ?? err}`);
  else agent.logClientFailure(peer, fields, `Failed to serve ${known ?? 'a request'}: ${e.message}`, levelOf(e.code));
  return { id, error: { code: e.code, message: e.message } };
}

/** A resolve the request-key handler sent (it says so: via = upcall), for the upcall metrics. */
function viaUpcall(data: unknown): boolean {
  const d = data as { method?: unknown; params?: { via?: unknown } } | null;
  return d?.method === 'resolve' && d.params?.via === 'upcall';
}

function labelOf(data: unknown): string | undefined {
  const p = (data as { params?: { label?: unknown } } | null)?.params;
  return typeof p?.label === 'string' ? shownName(p.label) : undefined;
}

export const METHOD_NAMES: readonly string[] = [...table.keys()];

// The wire contract, declared once for the agent and its clients: framing, envelope, methods, limits.
// usernsd-protocol(7) documents it for helpers written in other languages.
import { ID_LIMIT, parseExtents } from '../../config/extents.ts';
import { isPlainObject } from '../../config/json.ts';
import { labelProblem } from '../../config/schema.ts';
import { shown } from '../../config/text.ts';
import { DEFAULT_SOCKET, HOST_LABEL } from '../../config/types.ts';
import type { Extent, Owner } from '../../config/types.ts';
import { ERROR_CODES, isErrorCode, UsernsError } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';
import type { DelegatedObject } from '../kernel/delegate.ts';

export const PROTOCOL_VERSION = 1;

/**
 * The descriptor socket beside the main one: /run/usernsd/usernsd.sock -> /run/usernsd/usernsd.fd.sock.
 * Named here, not by the server, so that a client (usernsctl view) loads no server code.
 */
export function fdSocketPath(socket: string): string {
  return socket.endsWith('.sock') ? `${socket.slice(0, -'.sock'.length)}.fd.sock` : `${socket}.fd`;
}

/** Frames are UTF-8 JSON objects, each followed by a form feed (JSON escapes every U+000C inside). */
export const FRAME_DELIMITER = '\f';
export const REQUEST_TYPE = 'request';
export const REPLY_TYPE = 'reply';

export const LIMITS = {
  /** One frame, delimiter excluded; a longer one closes the connection. */
  MAX_MESSAGE_BYTES: 1024 * 1024,
  /** A started frame must be finished within this time, or the connection is closed. */
  MESSAGE_TIMEOUT_MS: 5000,
  /** A connection that sends nothing for this long is closed. */
  IDLE_TIMEOUT_MS: 60_000,
  /** Enough for every helper of a busy host to hold one open (the benchmark holds 1,000 idle). */
  MAX_CONNECTIONS: 4096,
  /** Connections one uid other than root may hold at once; more are refused with E_BUSY. */
  MAX_CONNECTIONS_PER_UID: 256,
  /** Of MAX_CONNECTIONS, the last ones are root's alone: no flood of other users locks root out. */
  ROOT_RESERVED_CONNECTIONS: 64,
  /** Replies queued to a client that does not read (one largest reply); beyond this the connection is closed. */
  MAX_PENDING_BYTES: 1024 * 1024,
  /** A path in resolvePath, in bytes (PATH_MAX). */
  MAX_PATH_BYTES: 4096,
  /** Requests of one connection being worked on at once; more get E_BUSY. */
  MAX_INFLIGHT_PER_CONNECTION: 64,
  /** Invalid requests (E_INVALID, frames of unknown type) one connection may send; then it is closed. */
  MAX_INVALID_PER_CONNECTION: 64,
  /** Ids in one `uids` or `gids` list of a map request. */
  MAX_IDS_PER_LIST: 32768,
  /** A string request id. */
  MAX_ID_CHARS: 64,
  /** How long usernsctl waits for a reply (a namespace creation takes milliseconds). */
  REQUEST_TIMEOUT_MS: 30_000,
} as const;

export type RequestId = number | string;
export type Request = { readonly id: RequestId; readonly method: string; readonly params: unknown };
export type WireError = { readonly code: ErrorCode; readonly message: string };
export type Reply = { readonly id: RequestId | null; readonly result: unknown } | { readonly id: RequestId | null; readonly error: WireError };

// ---- parameter kinds, checked at the edge so handlers get typed values ----

type Kind = 'label' | 'context' | 'ids' | 'path' | 'enum' | 'bool' | 'extents';
type Field = { readonly kind: Kind; readonly required: boolean; readonly values?: readonly string[] };
type ParamSpec = { readonly [name: string]: Field };

const label: Field = { kind: 'label', required: true };
const context: Field = { kind: 'context', required: true };
const ids: Field = { kind: 'ids', required: false };
const path: Field = { kind: 'path', required: true };
const optional = (f: Field): Field => ({ ...f, required: false });
const oneOf = (values: readonly string[]): Field => ({ kind: 'enum', required: false, values });
const bool: Field = { kind: 'bool', required: false };
const extents: Field = { kind: 'extents', required: true };

/** A method as a value: its name, parameters, and whether only root may call it. P and R are for the compiler. */
export type Method<P, R> = {
  readonly name: string;
  readonly params: ParamSpec;
  readonly rootOnly: boolean;
  /**
   * The codes this method may answer (usernsd-protocol(7) lists them under each method): its own,
   * and those of every method (ANY_METHOD_ERRORS; E_PERMISSION too when it is root's only). The
   * request edge logs an answer outside them as a bug (handlers.ts).
   */
  readonly errors: ReadonlySet<ErrorCode>;
  readonly _types?: (p: P) => R;
};
export type ParamsOf<M> = M extends Method<infer P, unknown> ? P : never;
export type ResultOf<M> = M extends Method<never, infer R> ? R : never;

export type { Owner };

export type ResolveResult = {
  readonly label: string;
  /** The pin: open it, or pass it to nsenter --user= / setns(2). */
  readonly path: string;
  readonly parent: string;
  readonly owner: Owner;
  /** As configured: outside ids are the parent's. */
  readonly uidMap: readonly Extent[];
  readonly gidMap: readonly Extent[];
  readonly setgroups: 'allow' | 'deny';
  /** The nsfs inode, as lsns(8) and /proc/PID/ns/user show it. */
  readonly ino: number;
  /** True when this request created the namespace. */
  readonly created: boolean;
  /**
   * Whether the kernel lets the caller join it from the initial namespace (setns(2)): root, and the
   * owner of its top-level context (itself when its parent is host) — the owner of a namespace holds
   * every capability in the namespaces nested in it.
   */
  readonly mayEnter: boolean;
  /**
   * What the context is given beyond ids (userns.d(5) [delegate]), as configured; null when
   * nothing. The cgroup is where `usernsctl enter` starts its command (joinCgroup).
   */
  readonly delegated: Delegated | null;
};
export type Delegated = {
  readonly cgroup: string | null;
  /** The network namespace's pin (`ip netns exec LABEL` when it is in /run/netns), the veth pair's host end, the tap. */
  readonly netns: string | null;
  readonly veth: string | null;
  readonly tap: string | null;
  readonly devices: readonly string[];
  readonly directories: readonly string[];
};
/** One delegated object as the kernel shows it now (status): its shape is the kernel module's. */
export type { DelegatedObject };
export type ResolvePathResult = ResolveResult & {
  /** The nearest ancestor of the path (or the path itself) that carries the label. */
  readonly labelledPath: string;
};
export type MapResult = { readonly from: string; readonly to: string; readonly uids: number[]; readonly gids: number[] };
export type ListEntry = {
  readonly label: string;
  readonly parent: string;
  readonly owner: Owner;
  /** As configured (allocated, for range = auto): outside ids are the parent's. */
  readonly uidMap: readonly Extent[];
  readonly gidMap: readonly Extent[];
  readonly create: 'lazy' | 'eager';
  readonly squash: 'none' | 'root' | 'all';
  readonly pinned: boolean;
  /** Made from inside its parent (usernsctl create), not by a file. */
  readonly madeInside: boolean;
};
export type ListResult = { readonly contexts: ListEntry[] };
/**
 * drift: pinned, but not as configured (other maps, or not nested in its parent's pin); stale:
 * pinned, but its parent is in drift or stale, or not pinned, so it cannot be resolved until that
 * is fixed (`why` says which).
 */
export type ContextState = {
  readonly label: string;
  readonly owner: Owner | null;
  readonly state: 'not created' | 'pinned' | 'drift' | 'stale' | 'orphan';
  readonly why?: string;
  /** What it was given (status, root only): each object and its state. */
  readonly delegated?: readonly DelegatedObject[];
};
export type PinReport = { readonly label: string; readonly status: string; readonly message: string };
export type StatusResult = {
  readonly version: string;
  readonly protocol: number;
  readonly uptimeSeconds: number;
  /** What the caller may resolve (everything, for root). */
  readonly contexts: number;
  /** Root only from here on. */
  readonly full: boolean;
  readonly pid?: number;
  readonly config?: string;
  readonly socket?: string;
  readonly pinned?: number;
  readonly connections?: number;
  readonly errors?: string[];
  readonly pins?: PinReport[];
  /** requests.METHOD, errors.CODE, created, released, reloads. */
  readonly counters?: Record<string, number>;
  /** Per method, over its last 1024 requests. */
  readonly latencyMs?: Record<string, { count: number; p50: number; p90: number; p99: number; max: number }>;
  readonly contextStates?: ContextState[];
  readonly lastReload?: string | null;
  /** Who decides range = auto allocations; for etcd, whether it answers and what waits for it. */
  readonly coordinator?: {
    readonly coordinator: 'local' | 'etcd';
    readonly endpoints?: readonly string[];
    readonly reachable?: boolean;
    readonly lastOk?: string | null;
    readonly lastError?: string | null;
    readonly host?: string;
    readonly waiting?: number;
    readonly refused?: number;
  };
  /** Who makes namespaces: usernsd-spawner (its pid, null until the first creation) or a helper forked each time. */
  readonly spawner?: { readonly kind: 'native' | 'node'; readonly pid: number | null };
  /** Views made through the agent (recorded for view --list) and the idmap user namespaces it holds open. */
  readonly views?: { readonly recorded: number; readonly namespaces: number };
  /** Resident set and V8 heap in use, MiB. */
  readonly memoryMb?: { readonly rss: number; readonly heapUsed: number };
  /** Where request-key sends "user" keys "userns:LABEL", as checked at start and at the last reload. */
  readonly upcall?: {
    readonly state: string;
    readonly rule: string | null;
    readonly handler: string[] | null;
    readonly message: string;
    /** Whether upcalls from requesters other than root reach request-key at all on this kernel. */
    readonly users?: { readonly state: 'ok' | 'refused' | 'unknown'; readonly message: string };
  };
};
export type ReloadResult = {
  readonly contexts: number;
  readonly added: string[];
  readonly changed: string[];
  readonly removed: string[];
  /** Contexts whose file became invalid: their last good version stays in use. */
  readonly kept: string[];
  readonly errors: string[];
};
/** How a view shows a tree: its map alone (identity) or with the context's squash (foreign). One declaration, idmap.ts's. */
export type { ViewMode } from '../idmap.ts';
import type { ViewMode } from '../idmap.ts';
/** Why a view is asked for: to mount it (root), or to enter the context with it (its owner). */
export type ViewPurpose = 'mount' | 'enter';
export type ViewParams = { path: string; context?: string; mode?: ViewMode; purpose?: ViewPurpose; target?: string; readOnly?: boolean };
/**
 * A view, made. idmapped: the reply carries one descriptor (SCM_RIGHTS), a detached mount to attach
 * with move_mount(2). bindfs: no descriptor; root runs `bindfs OPTIONS SRC DST` where it wants it.
 */
export type ViewResult = {
  readonly context: string;
  readonly mode: ViewMode;
  readonly mechanism: 'idmapped' | 'bindfs';
  /** The tree as the agent checked it (symlinks resolved). */
  readonly src: string;
  /** The label's inode, when the context came from one. */
  readonly labelledPath: string | null;
  readonly squash: 'none' | 'root' | 'all';
  /** On-disk id -> host id, as the view shows them (empty under all squash: every file shows as anon). */
  readonly uidMap: readonly Extent[];
  readonly gidMap: readonly Extent[];
  readonly bindfs: readonly string[] | null;
  /** For purpose "enter": the context's pin, to join before attaching. */
  readonly pin: string | null;
  readonly setgroups: 'allow' | 'deny' | null;
  /** Whether the view is read-only, and (for an owner's view made read-only though it asked for rw) why, with the advice. */
  readonly readOnly: boolean;
  readonly readOnlyWhy: string | null;
};
export type ViewRecord = {
  readonly src: string;
  readonly target: string;
  readonly context: string;
  readonly mode: ViewMode;
  readonly mechanism: 'idmapped' | 'bindfs';
  readonly readOnly: boolean;
  /** ISO 8601, when the agent made it. */
  readonly made: string;
};
export type ViewsResult = { readonly views: readonly ViewRecord[] };
export type RangeRecord = {
  readonly label: string;
  /** auto: a range = auto allocation; static: a host's configured range (shared pool only). */
  readonly kind: 'auto' | 'static';
  readonly ranges: readonly { readonly start: number; readonly end: number }[];
  /** Where it was decided: etcd (the shared pool) or local (this host alone). */
  readonly decided: 'etcd' | 'local';
  readonly by: string | null;
  readonly at: string | null;
};
export type RangesResult = { readonly coordinator: 'local' | 'etcd'; readonly ranges: readonly RangeRecord[] };
export type IdExplanation = {
  /** As stored on disk (what a plain mount shows, and what ls -n shows without a view). */
  readonly onDisk: number;
  /** The context's host id for it, or null when the context's map does not cover it. */
  readonly host: number | null;
  /** Its name through userdb (LABEL.N), or null. */
  readonly name: string | null;
  /** From the host, with the context's squash applied (what map --to host answers). */
  readonly fromHost: number;
  /** From the caller's context (the host, or the context whose namespace the caller runs in). */
  readonly fromCaller: number;
  /** Through an identity view and a foreign view ("anon": all squash shows every file as anonuid/anongid). */
  readonly identityView: number;
  readonly foreignView: number;
  /** One sentence per figure above that is the overflow id or a squash: why. */
  readonly why: string[];
};

/** usernsctl explain: see agent/explain.ts. */
export type Explanation = {
  readonly path: string;
  readonly labelledPath: string | null;
  readonly context: string | null;
  readonly parent: string | null;
  readonly squash: { readonly mode: string; readonly anonuid: number; readonly anongid: number } | null;
  readonly callerContext: string;
  /** A label that names no context the caller may use (or none configured), said plainly. */
  readonly note: string | null;
  readonly overflow: { readonly uid: number; readonly gid: number };
  readonly uid: IdExplanation;
  readonly gid: IdExplanation;
  /** What the file's context is given beyond ids ([delegate]), as resolve says it; null when nothing (or no context the caller may use). */
  readonly delegated?: Delegated | null;
};

/** `descendants`: the pinned contexts nested in it, released first (deepest first). */
export type ReleaseResult = { readonly label: string; readonly released: boolean; readonly descendants: readonly string[] };

/** How the agent's log says a method answered an error its declaration does not list (a bug; the tests look for it). */
export const UNDECLARED_ERROR = 'Answered an error the protocol does not declare for the method';

/** What any request may be answered: a malformed one, a limit reached, a bug. */
export const ANY_METHOD_ERRORS: readonly ErrorCode[] = ['E_INVALID', 'E_BUSY', 'E_INTERNAL'];

const method = <P, R>(name: string, params: ParamSpec, own: readonly ErrorCode[], rootOnly = false): Method<P, R> => ({
  name,
  params,
  rootOnly,
  errors: new Set([...ANY_METHOD_ERRORS, ...(rootOnly ? (['E_PERMISSION'] as const) : []), ...own]),
});

/** Errors of the methods that resolve, create or enter a context: the kernel and the shared pool may answer too. */
const CONTEXT_ERRORS: readonly ErrorCode[] = ['E_NOT_FOUND', 'E_PERMISSION', 'E_CONFIG', 'E_KERNEL', 'E_UNSUPPORTED', 'E_UNAVAILABLE'];

/** via: "upcall" when the request-key handler asks (counted in the metrics); nothing else changes. */
export const resolve = method<{ label: string; via?: 'upcall' }, ResolveResult>('resolve', { label, via: oneOf(['upcall']) }, CONTEXT_ERRORS);
export const resolvePath = method<{ path: string }, ResolvePathResult>('resolvePath', { path }, CONTEXT_ERRORS);
export const map = method<{ from: string; to: string; uids?: number[]; gids?: number[] }, MapResult>(
  'map',
  {
    from: context,
    to: context,
    uids: ids,
    gids: ids,
  },
  ['E_NOT_FOUND', 'E_PERMISSION', 'E_CONFIG', 'E_UNAVAILABLE'],
);
export const list = method<Record<string, never>, ListResult>('list', {}, []);
export const status = method<Record<string, never>, StatusResult>('status', {}, []);
export const reload = method<Record<string, never>, ReloadResult>('reload', {}, ['E_CONFIG'], true);
/**
 * kill: the processes in the context's cgroup (and those nested in it) are killed first (cgroup.kill).
 * Root's; and, from inside a context, its root's for the contexts made inside it (SPEC §14), whose
 * records go with them. Contexts made from inside under the released one are released and forgotten.
 */
export const release = method<{ label: string; kill?: boolean }, ReleaseResult>('release', { label, kill: bool }, [
  'E_NOT_FOUND',
  'E_PERMISSION',
  'E_CONFIG',
  'E_KERNEL',
  'E_UNAVAILABLE',
]);
/**
 * From inside a context, by its root (SPEC §14): a context nested in it, kept across restarts and
 * boots until it is released. `label` is the caller's name for it (CHILD makes CONTEXT.CHILD); the
 * maps' outside ids are its parent's, as in a nested context's file ("IN OUT COUNT, ..."). cgroup: a
 * cgroup of its own inside its parent's (which the parent must have), owned by its root.
 */
export const create = method<{ label: string; uidMap: string; gidMap: string; cgroup?: boolean }, ResolveResult>(
  'create',
  {
    label,
    uidMap: extents,
    gidMap: extents,
    cgroup: bool,
  },
  CONTEXT_ERRORS,
);
/** Moves the caller's own process (SO_PEERCRED) into the context's cgroup; for those who may enter it. */
export const joinCgroup = method<{ label: string }, { label: string; cgroup: string }>('joinCgroup', { label }, [
  'E_NOT_FOUND',
  'E_PERMISSION',
  'E_CONFIG',
  'E_KERNEL',
  'E_UNAVAILABLE',
]);

/** Served on the descriptor socket only: the reply carries a file descriptor. */
export const view = method<ViewParams, ViewResult>(
  'view',
  {
    path,
    context: optional(label),
    mode: oneOf(['identity', 'foreign']),
    purpose: oneOf(['mount', 'enter']),
    target: optional(path),
    readOnly: bool,
  },
  CONTEXT_ERRORS,
);
export const views = method<Record<string, never>, ViewsResult>('views', {}, [], true);
export const explain = method<{ path: string }, Explanation>('explain', { path }, ['E_NOT_FOUND', 'E_PERMISSION', 'E_CONFIG', 'E_KERNEL', 'E_UNAVAILABLE']);
export const ranges = method<Record<string, never>, RangesResult>('ranges', {}, ['E_CONFIG', 'E_UNAVAILABLE'], true);
export const rangesImport = method<Record<string, never>, { imported: number }>('rangesImport', {}, ['E_CONFIG', 'E_UNAVAILABLE'], true);
export const rangesForget = method<{ label: string }, { label: string; forgotten: boolean }>(
  'rangesForget',
  { label },
  ['E_NOT_FOUND', 'E_CONFIG', 'E_UNAVAILABLE'],
  true,
);
/** The Prometheus text exposition format, as the HTTP listener serves it. */
export const metrics = method<Record<string, never>, { text: string; contentType: string }>('metrics', {}, [], true);

export const METHODS: ReadonlyMap<string, Method<unknown, unknown>> = new Map(
  [resolve, resolvePath, map, list, status, reload, release, create, joinCgroup, view, views, explain, ranges, rangesImport, rangesForget, metrics].map((m) => [
    m.name,
    m as Method<unknown, unknown>,
  ]),
);

// ---- validation ----

function invalid(message: string): UsernsError {
  return new UsernsError('E_INVALID', message);
}

function checkField(method: string, name: string, field: Field, v: unknown): unknown {
  const where = `${method}: parameter "${name}"`;
  switch (field.kind) {
    case 'label':
    case 'context': {
      if (typeof v !== 'string') throw invalid(`${where} must be a string (a context label)`);
      if (field.kind === 'context' && v === HOST_LABEL) return v;
      const problem = labelProblem(v);
      if (problem) throw invalid(`${where}: ${problem}`);
      return v;
    }
    case 'path': {
      if (typeof v !== 'string') throw invalid(`${where} must be a string (an absolute path)`);
      if (!v.startsWith('/')) throw invalid(`${where} must be an absolute path (got ${shown(v)})`);
      if (v.includes('\0')) throw invalid(`${where} must not contain a NUL byte`);
      if (Buffer.byteLength(v) > LIMITS.MAX_PATH_BYTES) throw invalid(`${where} is longer than ${LIMITS.MAX_PATH_BYTES} bytes`);
      return v;
    }
    case 'enum': {
      if (typeof v !== 'string' || !field.values!.includes(v)) throw invalid(`${where} must be one of ${field.values!.join(', ')}`);
      return v;
    }
    case 'bool': {
      if (typeof v !== 'boolean') throw invalid(`${where} must be true or false`);
      return v;
    }
    case 'extents': {
      if (typeof v !== 'string') throw invalid(`${where} must be a string of extents "INSIDE OUTSIDE COUNT, ..."`);
      if (v.length > 8192) throw invalid(`${where} is longer than 8192 characters`);
      const m = parseExtents(v);
      if (typeof m === 'string') throw invalid(`${where} ${shown(v)} ${m}`);
      return v; // the handler parses it again (it is valid): the wire and the handler share one type
    }
    case 'ids': {
      if (!Array.isArray(v)) throw invalid(`${where} must be an array of ids`);
      if (v.length > LIMITS.MAX_IDS_PER_LIST) throw invalid(`${where} has ${v.length} ids; at most ${LIMITS.MAX_IDS_PER_LIST} per request`);
      for (const id of v) {
        // 4294967295 is (uid_t)-1, "no id", never a real one.
        if (!Number.isInteger(id) || id < 0 || id >= ID_LIMIT)
          throw invalid(`${where}: ${typeof id === 'number' ? String(id) : shown(String(JSON.stringify(id)))} is not an id (0 to ${ID_LIMIT - 1})`);
      }
      return v;
    }
  }
}

/**
 * Check a request's params against the method's table: an object with only known keys (so
 * `__proto__` and friends are refused, not merged), required ones present, each of its kind.
 * Returns a fresh null-prototype object holding only the checked values.
 */
export function checkParams<M extends Method<unknown, unknown>>(m: M, raw: unknown): ParamsOf<M> {
  const given = raw === undefined ? {} : raw;
  if (!isPlainObject(given)) throw invalid(`${m.name}: params must be a JSON object`);
  for (const key of Object.keys(given)) {
    if (!Object.hasOwn(m.params, key)) throw invalid(`${m.name}: unknown parameter ${shown(key)}`);
  }
  const out = Object.create(null) as Record<string, unknown>;
  for (const [name, field] of Object.entries(m.params)) {
    if (!Object.hasOwn(given, name)) {
      if (field.required) throw invalid(`${m.name}: parameter "${name}" is required`);
      continue;
    }
    out[name] = checkField(m.name, name, field, given[name]);
  }
  return out as ParamsOf<M>;
}

function isRequestId(v: unknown): v is RequestId {
  return (Number.isSafeInteger(v) && (v as number) >= 0) || (typeof v === 'string' && v.length > 0 && v.length <= LIMITS.MAX_ID_CHARS);
}

/** The id of a request, if it has a usable one: even a broken request gets its reply under its id. */
export function requestIdOf(data: unknown): RequestId | null {
  return isPlainObject(data) && isRequestId(data.id) ? data.id : null;
}

/** The envelope's `data` of a request frame, checked: a valid id, a method name, params (checked later). */
export function checkRequest(data: unknown): Request {
  if (!isPlainObject(data)) throw invalid('a request is a JSON object {id, method, params}');
  for (const key of Object.keys(data)) {
    if (key !== 'id' && key !== 'method' && key !== 'params') throw invalid(`unknown request field ${shown(key)}`);
  }
  if (!isRequestId(data.id)) throw invalid(`"id" must be a non-negative integer or a string of 1-${LIMITS.MAX_ID_CHARS} characters`);
  if (typeof data.method !== 'string') throw invalid('"method" must be a string');
  return { id: data.id, method: data.method, params: data.params };
}

/** A reply's `data`, checked on the client side. */
export function checkReply(data: unknown): Reply {
  if (!isPlainObject(data) || !('id' in data)) throw new Error('the agent sent a reply without an id');
  if ('error' in data) {
    const e = data.error;
    if (!isPlainObject(e) || !isErrorCode(e.code) || typeof e.message !== 'string') throw new Error('the agent sent a malformed error');
    return { id: data.id as RequestId | null, error: { code: e.code, message: e.message } };
  }
  if (!('result' in data)) throw new Error('the agent sent a reply with neither result nor error');
  return { id: data.id as RequestId | null, result: data.result };
}

// ---- framing, for clients (the agent's side is node-ipc's guarded parser, configured the same) ----

export function encodeFrame(type: string, data: unknown): string {
  return JSON.stringify({ type, data }) + FRAME_DELIMITER;
}

/**
 * A result whose JSON text is made already (a resolve answered again and again): the server puts
 * the text in the reply frame as is. Anywhere else it serializes as the value it stands for.
 */
export class EncodedResult {
  readonly json: string;
  constructor(json: string) {
    this.json = json;
  }
  toJSON(): unknown {
    return JSON.parse(this.json);
  }
}

/** The reply frame for `id` with an encoded result: the bytes encodeFrame(REPLY_TYPE, {id, result}) makes. */
export function encodeReplyFrame(id: RequestId | null, result: EncodedResult): string {
  return `{"type":"${REPLY_TYPE}","data":{"id":${JSON.stringify(id)},"result":${result.json}}}${FRAME_DELIMITER}`;
}

/** Splits a byte stream into frames; refuses one longer than MAX_MESSAGE_BYTES. */
export class FrameReader {
  private buffer = '';
  push(chunk: string): { type: unknown; data: unknown }[] {
    this.buffer += chunk;
    const out: { type: unknown; data: unknown }[] = [];
    let at: number;
    while ((at = this.buffer.indexOf(FRAME_DELIMITER)) >= 0) {
      const frame = this.buffer.slice(0, at);
      this.buffer = this.buffer.slice(at + 1);
      if (Buffer.byteLength(frame) > LIMITS.MAX_MESSAGE_BYTES) throw new Error('frame exceeds MAX_MESSAGE_BYTES');
      const msg = JSON.parse(frame) as unknown;
      if (!isPlainObject(msg)) throw new Error('a frame is not a JSON object');
      out.push({ type: msg.type, data: msg.data });
    }
    if (Buffer.byteLength(this.buffer) > LIMITS.MAX_MESSAGE_BYTES) throw new Error('frame exceeds MAX_MESSAGE_BYTES');
    return out;
  }
}

export { DEFAULT_SOCKET, ERROR_CODES };

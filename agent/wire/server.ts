// The socket: node-ipc 14 (guarded profile, explicit limits) walled off behind one small class; the only node-ipc importer.
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { makeDirs } from '../kernel/files.ts';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import os from 'node:os';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { shown } from '../../config/text.ts';
import { peerOf } from './peer.ts';
import type { Peer } from './peer.ts';
import { UsernsError } from '../errors.ts';
import type { LogLimiter } from './loglimit.ts';
import { unreadBytes } from '../kernel/sys.ts';
import { EncodedResult, encodeFrame, encodeReplyFrame, FRAME_DELIMITER, LIMITS, REPLY_TYPE, REQUEST_TYPE, requestIdOf } from './protocol.ts';
import type { Reply } from './protocol.ts';

/** The parts of node-ipc's server we touch. */
type IpcSocketServer = {
  server: { close(cb?: () => void): void } | false;
  start(): void;
  stop(): void;
  on(type: string, handler: (...args: never[]) => void): void;
  emit(socket: Socket, type: string, data: unknown): boolean;
  /** A frame as text, with the guarded parser's bound on pending bytes (maxPendingBytes). */
  write(socket: Socket, message: string): boolean;
  protocolFailure(socket: Socket, error: Error & { code?: string }): void;
};
type Ipc = { config: Record<string, unknown>; server: IpcSocketServer; serve(path: string, cb: () => void): void };

/**
 * node-ipc's defaults ask os.networkInterfaces() (its TCP host: getIPType) when the module loads and
 * again for every instance. That opens a netlink socket, which the unit's RestrictAddressFamilies=
 * AF_UNIX refuses (ERR_SYSTEM_ERROR): the agent could not even load. It never uses TCP, so for the
 * length of node-ipc's own set-up the list is empty, and no netlink socket is opened at all.
 */
function withoutInterfaceList<T>(fn: () => T): T {
  const real = os.networkInterfaces;
  const restore = () => {
    os.networkInterfaces = real;
  };
  os.networkInterfaces = () => ({});
  let result: T;
  try {
    result = fn();
  } catch (err) {
    restore();
    throw err;
  }
  // import() evaluates the module later: keep the empty list until it has.
  if (result instanceof Promise) return result.finally(restore) as T;
  restore();
  return result;
}

type IpcModuleClass = new () => Ipc;
let ipcModule: Promise<IpcModuleClass> | undefined;

/**
 * node-ipc, loaded once, when first asked: not while the agent starts (its import, with node:tls,
 * node:http and more that it loads, is about 30 ms of the start's one thread), but while its eager
 * contexts are made (Manager.start asks then) or at the latest when it listens.
 */
export function loadIpcModule(): Promise<IpcModuleClass> {
  // @ts-expect-error node-ipc 14 ships no type declarations; the little we use is typed below.
  return (ipcModule ??= withoutInterfaceList(() => import('node-ipc')).then((m: { IPCModule: IpcModuleClass }) => m.IPCModule));
}

/** node-ipc's local lifecycle events: never from the wire (the guarded parser refuses them there). */
const LIFECYCLE = new Set(['start', 'connect', 'disconnect', 'destroy', 'close', 'socket.disconnected', 'error', 'data']);

/** While draining, how often connections are checked for requests not read yet. */
const DRAIN_POLL_MS = 5;

/** At stop, how long a client gets to take its last replies before its connection is cut. */
const CLOSE_FLUSH_MS = 1000;

export type Connection = {
  readonly peer: Peer;
  inflight: number;
  /** Frames taken from this connection in the current turn of the event loop (see budget()). */
  framesThisTurn: number;
  /** Requests of this connection refused as invalid; past MAX_INVALID_PER_CONNECTION it is closed. */
  invalid: number;
  /**
   * Hand a descriptor to the client with the reply (SCM_RIGHTS); the connection closes it once
   * sent. Only the descriptor socket (fdsock.ts) can: absent on node-ipc's.
   */
  readonly attach?: (fd: number) => void;
};

/** Frames one connection may have handled per turn of the event loop before it waits for the next. */
const FRAMES_PER_TURN = 32;
/** Closes for cause (broken frames, too many invalid requests) one uid may cause in PENALTY_WINDOW_MS ... */
const CLOSES_BEFORE_PENALTY = 8;
const PENALTY_WINDOW_MS = 10_000;
/** ... before its new connections are refused for this long. Root is never refused. */
const PENALTY_MS = 1000;
/** A reply now (the common resolve), or later. */
export type RequestHandler = (conn: Connection, data: unknown) => Reply | Promise<Reply>;
export type ServerOptions = {
  readonly path: string;
  readonly log: Logger;
  readonly onRequest: RequestHandler;
  readonly limiter: LogLimiter;
  /** Who a uid counts as for the per-user limits (agent/people.ts): an owner and the ids it maps are one. */
  readonly people?: PersonLookup;
};

/** What the wire needs of agent/people.ts, declared here so the wire imports nothing above it. */
export type PersonLookup = { of(uid: number): string; describe(uid: number): string };

/**
 * The socket's directory belongs to root and is not writable by anyone else (so nobody can swap the
 * socket); the socket itself is 0666, because authorization is per request, by SO_PEERCRED.
 */
export async function prepareSocketPath(path: string): Promise<void> {
  const dir = dirname(path);
  makeDirs(dir, 0o755);
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new UsernsError('E_CONFIG', `socket directory ${dir} is not a directory (a symlink?): remove it`);
  if (st.uid !== process.geteuid!())
    throw new UsernsError('E_CONFIG', `socket directory ${dir} is owned by uid ${st.uid}, not by the agent: chown it or choose another socket`);
  if ((st.mode & 0o022) !== 0) throw new UsernsError('E_CONFIG', `socket directory ${dir} is writable by group or others: chmod go-w ${dir}`);
  let existing;
  try {
    existing = lstatSync(path);
  } catch {
    return;
  }
  if (!existing.isSocket()) throw new UsernsError('E_CONFIG', `${path} exists and is not a socket: remove it or choose another socket`);
  const alive = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (alive) throw new UsernsError('E_BUSY', `another agent is already serving ${path}: stop it first`);
  unlinkSync(path); // left by an agent that did not exit cleanly
}

export function fdOf(socket: Socket): number | null {
  return (socket as unknown as { _handle?: { fd?: number } })._handle?.fd ?? null;
}

function hasUnreadInput(socket: Socket): boolean {
  const fd = fdOf(socket);
  if (socket.destroyed || fd === null || fd < 0) return false;
  try {
    return unreadBytes(fd) > 0;
  } catch {
    return false;
  }
}

export class IpcServer {
  /** node-ipc's server, made when the agent listens. */
  private ipc: Ipc | null = null;
  private readonly opts: ServerOptions;
  private readonly conns = new Map<Socket, Connection>();
  /** Connections held per person (see People), for the per-user limit. */
  private readonly perUid = new Map<string, number>();
  /** Per person: connections closed for cause in the current window, and until when it is refused. */
  private readonly penalties = new Map<string, { since: number; closes: number; until: number }>();
  private readonly pending = new Set<Promise<void>>();
  private accepting = false;

  constructor(opts: ServerOptions) {
    this.opts = opts;
  }

  get connections(): number {
    return this.conns.size;
  }

  /** node-ipc's server, every default that matters set here on purpose. */
  private async made(): Promise<Ipc> {
    const IPCModule = await loadIpcModule();
    const ipc = withoutInterfaceList(() => new IPCModule());
    const opts = this.opts;
    Object.assign(ipc.config, {
      parser: 'guarded',
      encoding: 'utf8',
      delimiter: FRAME_DELIMITER,
      maxMessageSize: LIMITS.MAX_MESSAGE_BYTES,
      maxPendingBytes: LIMITS.MAX_PENDING_BYTES,
      messageTimeout: LIMITS.MESSAGE_TIMEOUT_MS,
      maxConnections: LIMITS.MAX_CONNECTIONS,
      maxEventNameLength: 64,
      allowReservedEvents: false,
      identifyPeer: false,
      logPayloads: false,
      silent: true,
      logger: () => {},
      // prepareSocketPath owns the directory and a stale socket: node-ipc must not chmod or unlink.
      socketRoot: dirname(opts.path) + '/',
      secureSocketRoot: false,
      unlink: false,
      readableAll: true,
      writableAll: true,
    });
    return ipc;
  }

  async listen(): Promise<void> {
    const { path, log } = this.opts;
    const ipc = (this.ipc = await this.made());
    await prepareSocketPath(path);
    await new Promise<void>((resolve, reject) => {
      ipc.serve(path, () => resolve());
      const server = ipc.server;
      server.on('error', (err: Error & { code?: string }) => {
        if (!this.accepting) reject(new UsernsError('E_CONFIG', `Failed to listen on ${path}: ${err.code ?? err.message}`, err));
        // Protocol failures are logged with their peer by protocolFailure below; the rest is a client gone.
        else if (err.name !== 'IPCProtocolError') log.debug({ err: err.message }, 'socket error');
      });
      server.on('connect', (socket: Socket) => this.accept(socket));
      server.on('close', (socket: Socket) => this.conns.delete(socket));
      server.on(REQUEST_TYPE, (data: unknown, socket: Socket) => this.request(socket, data));
      server.on('*', (type: string, data: unknown, socket: Socket) => {
        if (type !== REQUEST_TYPE && !LIFECYCLE.has(type)) this.unknownType(socket, type, data);
      });
      // Log every closed-for-cause connection once, with who it was.
      const failure = server.protocolFailure.bind(server);
      server.protocolFailure = (socket, error) => {
        const c = this.conns.get(socket);
        this.opts.limiter.line(
          c?.peer.uid ?? -1,
          'warn',
          { peerUid: c?.peer.uid, peerPid: c?.peer.pid, code: error.code },
          `Closed connection: ${shown(error.message, 200)}`,
          'connection',
        );
        this.closedForCause(c?.peer);
        failure(socket, error);
      };
      server.start();
    });
    chmodSync(path, 0o666); // readableAll/writableAll, made certain
    this.accepting = true;
  }

  private accept(socket: Socket): void {
    let peer: Peer;
    try {
      peer = peerOf(fdOf(socket) ?? -1);
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'Failed to read peer credentials: connection closed');
      socket.destroy();
      return;
    }
    const refusal = this.admission(peer);
    if (refusal !== null) {
      this.opts.limiter.line(
        peer.uid,
        'warn',
        { peerUid: peer.uid, peerPid: peer.pid, held: this.perUid.get(this.person(peer.uid)) ?? 0, connections: this.conns.size },
        `Refused a connection from uid ${peer.uid}: ${refusal}`,
        'connection',
      );
      // One line to say why, then close: a client that reads gets a reason, not a bare reset.
      socket.end(encodeFrame(REPLY_TYPE, { id: null, error: { code: 'E_BUSY', message: refusal } }));
      socket.destroy();
      return;
    }
    const person = this.person(peer.uid);
    this.perUid.set(person, (this.perUid.get(person) ?? 0) + 1);
    socket.once('close', () => {
      const n = (this.perUid.get(person) ?? 1) - 1;
      if (n > 0) this.perUid.set(person, n);
      else this.perUid.delete(person);
    });
    // Also while draining: the kernel accepted it before the listener closed, so it is served.
    const conn: Connection = { peer, inflight: 0, framesThisTurn: 0, invalid: 0 };
    this.conns.set(socket, conn);
    socket.setTimeout(LIMITS.IDLE_TIMEOUT_MS, () => {
      if (conn.inflight > 0) return;
      this.opts.log.debug({ peerUid: peer.uid, peerPid: peer.pid }, 'Closed idle connection');
      socket.destroy();
    });
  }

  /**
   * Why a new connection of this peer is refused, or null. Root is always let in (up to the
   * kernel's own MAX_CONNECTIONS); any other uid may hold MAX_CONNECTIONS_PER_UID connections, and
   * all of them together leave ROOT_RESERVED_CONNECTIONS free for root.
   */
  private admission(peer: Peer): string | null {
    if (peer.uid === 0) return null;
    const person = this.person(peer.uid);
    const who = this.opts.people?.describe(peer.uid) ?? `uid ${peer.uid}`;
    const penalty = this.penalties.get(person);
    if (penalty && penalty.until > Date.now())
      return `${who} had ${penalty.closes} connections closed for broken or invalid traffic in ${PENALTY_WINDOW_MS / 1000} s: its new connections are refused for ${PENALTY_MS} ms`;
    const held = this.perUid.get(person) ?? 0;
    if (held >= LIMITS.MAX_CONNECTIONS_PER_UID) return `${who} holds ${held} connections already, the most one user may (MAX_CONNECTIONS_PER_UID): close some`;
    if (this.conns.size >= LIMITS.MAX_CONNECTIONS - LIMITS.ROOT_RESERVED_CONNECTIONS)
      return `the agent holds ${this.conns.size} connections; the rest are kept for root: try again later`;
    return null;
  }

  /**
   * Fairness: a connection that has had FRAMES_PER_TURN frames handled in this turn of the event
   * loop is paused until the next one, so a client pipelining frames as fast as it can writes them
   * gets its share, not the whole agent (libuv would otherwise read it up to 32 times per turn).
   */
  private budget(socket: Socket, conn: Connection): void {
    if (++conn.framesThisTurn !== FRAMES_PER_TURN) return;
    socket.pause();
    setImmediate(() => {
      conn.framesThisTurn = 0;
      if (!socket.destroyed) socket.resume();
    });
  }

  private person(uid: number): string {
    return this.opts.people?.of(uid) ?? `uid ${uid}`;
  }

  /** A connection closed for cause counts against its person: too many, and it waits a while. */
  private closedForCause(peer: Peer | undefined): void {
    if (!peer || peer.uid === 0) return;
    const now = Date.now();
    const person = this.person(peer.uid);
    const p = this.penalties.get(person);
    if (!p || now - p.since > PENALTY_WINDOW_MS) this.penalties.set(person, { since: now, closes: 1, until: 0 });
    else if (++p.closes >= CLOSES_BEFORE_PENALTY) p.until = now + PENALTY_MS;
    if (this.penalties.size > 4096) for (const [uid, q] of this.penalties) if (now - q.since > PENALTY_WINDOW_MS) this.penalties.delete(uid);
  }

  private request(socket: Socket, data: unknown): void {
    const conn = this.conns.get(socket);
    if (!conn) return;
    this.budget(socket, conn);
    if (conn.inflight >= LIMITS.MAX_INFLIGHT_PER_CONNECTION) {
      this.reply(socket, {
        id: requestIdOf(data),
        error: { code: 'E_BUSY', message: `more than ${LIMITS.MAX_INFLIGHT_PER_CONNECTION} requests in flight on one connection: wait for replies` },
      });
      return;
    }
    const answer = this.opts.onRequest(conn, data);
    if (!(answer instanceof Promise)) {
      this.answered(socket, conn, answer);
      return;
    }
    conn.inflight++;
    const p = answer
      .then((reply) => this.answered(socket, conn, reply))
      .finally(() => {
        conn.inflight--;
        this.pending.delete(p);
      });
    this.pending.add(p);
  }

  private answered(socket: Socket, conn: Connection, reply: Reply): void {
    this.reply(socket, reply);
    if ('error' in reply && reply.error.code === 'E_INVALID' && ++conn.invalid >= LIMITS.MAX_INVALID_PER_CONNECTION) this.closeInvalid(socket, conn);
  }

  /** Too many invalid requests on one connection: a client that cannot speak the protocol is cut off. */
  private closeInvalid(socket: Socket, conn: Connection): void {
    if (socket.destroyed) return;
    this.opts.limiter.line(
      conn.peer.uid,
      'warn',
      { peerUid: conn.peer.uid, peerPid: conn.peer.pid, invalid: conn.invalid },
      `Closed connection: ${conn.invalid} invalid requests (MAX_INVALID_PER_CONNECTION)`,
      'connection',
    );
    this.closedForCause(conn.peer);
    socket.end();
    socket.destroy();
  }

  private unknownType(socket: Socket, type: string, data: unknown): void {
    const c = this.conns.get(socket);
    if (c) {
      this.budget(socket, c);
      if (++c.invalid >= LIMITS.MAX_INVALID_PER_CONNECTION) return this.closeInvalid(socket, c);
    }
    this.opts.limiter.line(c?.peer.uid ?? -1, 'info', { peerUid: c?.peer.uid, peerPid: c?.peer.pid, type: shown(type) }, 'Refused a frame of unknown type');
    this.reply(socket, {
      id: requestIdOf(data),
      error: { code: 'E_INVALID', message: `unknown frame type ${shown(type)}: send {"type":"${REQUEST_TYPE}","data":{id, method, params}}` },
    });
  }

  private reply(socket: Socket, reply: Reply): void {
    if (socket.destroyed) {
      this.opts.log.debug({ id: reply.id }, 'Client left before its reply');
      return;
    }
    try {
      // A result encoded already goes out as text, through node-ipc's bounded write all the same.
      const server = this.ipc!.server; // a request came through it
      if ('result' in reply && reply.result instanceof EncodedResult) server.write(socket, encodeReplyFrame(reply.id, reply.result));
      else server.emit(socket, REPLY_TYPE, reply);
    } catch (err) {
      // node-ipc refuses to encode a frame beyond maxMessageSize: say so instead of staying silent.
      this.ipc!.server.emit(socket, REPLY_TYPE, {
        id: reply.id,
        error: { code: 'E_BUSY', message: `the reply is larger than ${LIMITS.MAX_MESSAGE_BYTES} bytes: ask for less at once` },
      });
      this.opts.log.warn({ id: reply.id, err: (err as Error).message }, 'Failed to send a reply: too large');
    }
  }

  /** Stop accepting; connections stay open so replies in flight still go out. */
  stopAccepting(): void {
    this.accepting = false;
    const s = this.ipc?.server.server;
    if (s) s.close();
  }

  /**
   * Wait, at most `timeoutMs`, for requests in flight and for requests already sent but not yet
   * read (the kernel still holds them: FIONREAD), so a client that asked before the stop is answered.
   * True if everything was answered.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    // Until `ms` have passed (never past the deadline) or `done` settles; the timer goes with it. A
    // timer left behind held the stopped agent's event loop to the drain deadline: every stop with a
    // request in flight took DRAIN_TIMEOUT_MS to exit.
    const sleep = (ms: number, done?: Promise<unknown>) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(0, Math.min(ms, deadline - Date.now())));
        void done?.then(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    while (Date.now() < deadline) {
      if (this.pending.size > 0) {
        await sleep(deadline - Date.now(), Promise.allSettled([...this.pending]));
        continue;
      }
      if (![...this.conns.keys()].some(hasUnreadInput)) return true;
      await sleep(DRAIN_POLL_MS);
    }
    return this.pending.size === 0;
  }

  /** Close every connection (replies already written are flushed first) and remove the socket. */
  async close(): Promise<void> {
    this.accepting = false;
    const sockets = [...this.conns.keys()];
    await Promise.all(
      sockets.map(
        (s) =>
          new Promise<void>((resolve) => {
            if (s.destroyed) return resolve();
            const timer = setTimeout(() => {
              s.destroy();
              resolve();
            }, CLOSE_FLUSH_MS);
            s.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
            s.end();
          }),
      ),
    );
    this.ipc?.server.stop();
    this.conns.clear();
    try {
      if (lstatSync(this.opts.path).isSocket()) unlinkSync(this.opts.path);
    } catch {
      /* already gone */
    }
  }
}

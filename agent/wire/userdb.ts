// systemd's userdb over Varlink (io.systemd.UserDatabase): names for the host ids of the contexts in
// force, asked by nss-systemd for every `ls -l` and `getent`. JSON messages ended by a NUL byte on
// a socket in /run/systemd/userdb/, named after the service. Answers come from memory, on a socket
// of their own: nothing here waits behind the main protocol's requests.
import { chmodSync, existsSync, rmdirSync, unlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';
import { peerOf } from './peer.ts';
import type { Peer } from './peer.ts';
import { idName, parseIdName } from '../names.ts';
import type { NamedId, NameIndex } from '../names.ts';
import { fdOf, prepareSocketPath } from './server.ts';
import type { PersonLookup } from './server.ts';
import { ConnectionBook } from './connections.ts';

const IFACE = 'io.systemd.UserDatabase';
/** A lookup is a few hundred bytes; anything near this is not nss-systemd. */
export const USERDB_MAX_MESSAGE_BYTES = 64 * 1024;
/** Replies a connection may leave unread before the agent stops reading its lookups. */
export const USERDB_MAX_UNREAD_BYTES = 256 * 1024;
export const USERDB_MAX_CONNECTIONS = 1024;
export const USERDB_MAX_CONNECTIONS_PER_UID = 64;
export const USERDB_IDLE_TIMEOUT_MS = 30_000;

/** What the agent tells the server: the names, and whether a caller may learn a context's ids. */
export type UserdbSource = {
  index(): NameIndex;
  mayKnow(peer: Peer, label: string): boolean;
  /**
   * The ids the caller sees, when it runs inside a context (SPEC §14). Absent or null: a caller on
   * the host, whose ids are the host's.
   */
  callerIds?(peer: Peer): CallerIds | null;
  /** Lookups answered and refused, for metrics: kind user|group|memberships, outcome found|none|bad (an id of a context the caller may not use is none, as one of no context). */
  served?(kind: string, outcome: string): void;
};

type Reply = { parameters?: Record<string, unknown>; error?: string };

export type CallerIds = {
  /** The context the caller runs in: the outermost it sees, which names every id it has. */
  readonly label: string;
  /** The host id of one of its ids, or null when it does not map it. */
  toHost(kind: 'uid' | 'gid', id: number): number | null;
};

/** The service name a socket path means: its file name (io.usernsd for /run/systemd/userdb/io.usernsd). */
export function serviceName(socketPath: string): string {
  return basename(socketPath);
}

function userRecord(id: NamedId, uid: number, gid: number | null, service: string): Record<string, unknown> {
  return {
    userName: id.name,
    uid,
    ...(gid === null ? {} : { gid }),
    realName: `uid ${id.inside} of context ${id.label}`,
    homeDirectory: '/',
    shell: '/usr/sbin/nologin',
    disposition: 'container',
    locked: true,
    service,
  };
}

function groupRecord(id: NamedId, gid: number, service: string): Record<string, unknown> {
  return { groupName: id.name, gid, description: `gid ${id.inside} of context ${id.label}`, disposition: 'container', service };
}

/**
 * Names as a caller inside context C sees them: C is the outermost context it sees, so, as the host
 * names every id by its top-level context, every id C maps is C.N, N being the id in C (the ids of
 * what is nested in C included). `host` in what it returns is the caller's id.
 */
function callerIndex(ids: CallerIds): Pick<NameIndex, 'byHost' | 'byName' | 'sibling'> {
  const named = (id: number): NamedId => ({ label: ids.label, inside: id, host: id, name: idName(ids.label, id) });
  return {
    byHost: (kind, id) => (ids.toHost(kind, id) === null ? null : named(id)),
    byName: (kind, name) => {
      const p = parseIdName(name);
      return p && p.label === ids.label && ids.toHost(kind, p.inside) !== null ? named(p.inside) : null;
    },
    sibling: (kind, id) => (ids.toHost(kind === 'uid' ? 'gid' : 'uid', id.inside) === null ? null : id.inside),
  };
}

/** One Varlink call answered: a record, or the error nss-systemd expects. */
export function answer(source: UserdbSource, service: string, peer: Peer, call: unknown): Reply {
  const m = call as { method?: unknown; parameters?: Record<string, unknown> } | null;
  const method = typeof m?.method === 'string' ? m.method : '';
  const p = m?.parameters && typeof m.parameters === 'object' ? m.parameters : {};
  const none = (kind: string): Reply => {
    source.served?.(kind, 'none');
    return { error: `${IFACE}.NoRecordFound`, parameters: {} };
  };
  if (method !== `${IFACE}.GetUserRecord` && method !== `${IFACE}.GetGroupRecord` && method !== `${IFACE}.GetMemberships`) {
    source.served?.('other', 'bad');
    return { error: 'org.varlink.service.MethodNotFound', parameters: { method: method.slice(0, 100) } };
  }
  if (p.service !== service) {
    source.served?.('other', 'bad');
    return { error: `${IFACE}.BadService`, parameters: {} };
  }
  if (method === `${IFACE}.GetMemberships`) return none('memberships'); // no context id is a member of another's group
  const user = method === `${IFACE}.GetUserRecord`;
  const kind = user ? 'user' : 'group';
  const idKey = user ? 'uid' : 'gid';
  const nameKey = user ? 'userName' : 'groupName';
  const idKind = user ? 'uid' : 'gid';
  // Inside a context the ids asked and answered are the caller's own (ls -l there shows those).
  const ids = source.callerIds?.(peer) ?? null;
  const index = ids ? callerIndex(ids) : source.index();
  const byId = typeof p[idKey] === 'number' ? index.byHost(idKind, p[idKey]) : null;
  const byName = typeof p[nameKey] === 'string' ? index.byName(user ? 'uid' : 'gid', p[nameKey]) : null;
  // Enumeration (neither given) lists nothing: the pool holds millions of ids.
  const found = p[idKey] !== undefined && p[nameKey] !== undefined ? (byId && byName && byId.host === byName.host ? byId : null) : (byId ?? byName);
  if (!found) return none(kind);
  // Counted as "none": a metric that told them apart would say which ids hidden contexts hold.
  if (!source.mayKnow(peer, found.label)) {
    source.served?.(kind, 'none');
    return { error: `${IFACE}.NoRecordFound`, parameters: {} };
  }
  source.served?.(kind, 'found');
  const record = user ? userRecord(found, found.host, index.sibling('uid', found), service) : groupRecord(found, found.host, service);
  return { parameters: { record, incomplete: false } };
}

export type UserdbServerOptions = { readonly path: string; readonly log: Logger; readonly source: UserdbSource; readonly people?: PersonLookup };

export class UserdbServer {
  private readonly opts: UserdbServerOptions;
  readonly service: string;
  private server: Server | null = null;
  /** Whether listen() made the socket's directory (it is removed again at close, when empty). */
  private madeDir = false;
  private readonly book = new ConnectionBook(USERDB_MAX_CONNECTIONS, USERDB_MAX_CONNECTIONS_PER_UID);

  constructor(opts: UserdbServerOptions) {
    this.opts = opts;
    this.service = serviceName(opts.path);
  }

  async listen(): Promise<void> {
    // On a host without systemd nobody else made /run/systemd/userdb: then it is the agent's to remove.
    this.madeDir = !existsSync(dirname(this.opts.path));
    await prepareSocketPath(this.opts.path);
    const server = createServer((socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.path, () => resolve());
    });
    chmodSync(this.opts.path, 0o666); // nss-systemd asks as whoever runs ls
    this.server = server;
  }

  private accept(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    let peer: Peer;
    try {
      peer = peerOf(fdOf(socket) ?? -1);
    } catch {
      socket.destroy();
      return;
    }
    if (!this.book.admit(socket, peer.uid, this.opts.people?.of(peer.uid))) {
      socket.destroy(); // nss-systemd then answers from the other sources: the id shows as a number
      return;
    }
    socket.setTimeout(USERDB_IDLE_TIMEOUT_MS, () => socket.destroy());
    let pending: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      for (let end = pending.indexOf(0); end >= 0; end = pending.indexOf(0)) {
        const message = pending.subarray(0, end);
        pending = pending.subarray(end + 1);
        let reply: Reply;
        try {
          reply = answer(this.opts.source, this.service, peer, JSON.parse(message.toString('utf8')));
        } catch {
          reply = { error: 'org.varlink.service.InvalidParameter', parameters: { parameter: 'message' } };
        }
        // A client that sends lookups and never reads makes replies pile up here: past the bound,
        // stop reading it until they drain (its own sends then wait in the kernel's bounded buffer).
        if (!socket.write(JSON.stringify(reply) + '\0') && socket.writableLength >= USERDB_MAX_UNREAD_BYTES && !socket.isPaused()) {
          socket.pause();
          socket.once('drain', () => {
            if (!socket.destroyed) socket.resume();
          });
        }
      }
      if (pending.length > USERDB_MAX_MESSAGE_BYTES) socket.destroy();
    });
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (!server) return;
    await this.book.closeServer(server);
    try {
      unlinkSync(this.opts.path);
    } catch {
      /* removed by close already */
    }
    if (this.madeDir)
      try {
        rmdirSync(dirname(this.opts.path));
      } catch {
        /* another service's socket is there now */
      }
  }
}

// The descriptor socket: what node-ipc cannot carry. One request per connection, in the main
// socket's frames; the reply goes out in one sendmsg(2) with the descriptors the handler attached
// (SCM_RIGHTS). It serves only the methods that hand over a descriptor (view).
import { chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import type { Logger } from 'pino';
import { peerOf } from './peer.ts';
import { UsernsError } from '../errors.ts';
import { closeFd } from '../kernel/sys.ts';
import { sendWithFds } from '../kernel/unixsock.ts';
import { encodeFrame, FrameReader, LIMITS, REPLY_TYPE, REQUEST_TYPE } from './protocol.ts';
import { fdOf, prepareSocketPath } from './server.ts';
import type { Connection, PersonLookup, RequestHandler } from './server.ts';
import { ConnectionBook } from './connections.ts';

/** Connections at once: each holds a request being worked on, none idles. Root is never refused. */
export const MAX_FD_CONNECTIONS = 64;
/** Of them, what one uid other than root may hold. */
export const MAX_FD_CONNECTIONS_PER_UID = 8;

export type FdServerOptions = { readonly path: string; readonly log: Logger; readonly onRequest: RequestHandler; readonly people?: PersonLookup };

export class FdServer {
  private readonly opts: FdServerOptions;
  private server: Server | null = null;
  private readonly book = new ConnectionBook(MAX_FD_CONNECTIONS, MAX_FD_CONNECTIONS_PER_UID);

  constructor(opts: FdServerOptions) {
    this.opts = opts;
  }

  async listen(): Promise<void> {
    const { path } = this.opts;
    await prepareSocketPath(path);
    const server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(new UsernsError('E_CONFIG', `Failed to listen on ${path}: ${err.code ?? err.message}`, err)));
      server.listen(path, () => resolve());
    });
    chmodSync(path, 0o666); // every user may ask; each request is authorized by SO_PEERCRED
    this.server = server;
  }

  private accept(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    let conn: Connection;
    const fds: number[] = [];
    try {
      conn = { peer: peerOf(fdOf(socket) ?? -1), inflight: 0, framesThisTurn: 0, invalid: 0, attach: (fd) => fds.push(fd) };
    } catch {
      socket.destroy();
      return;
    }
    if (!this.book.admit(socket, conn.peer.uid, this.opts.people?.of(conn.peer.uid))) {
      socket.destroy(); // the client sees the connection closed: ECONNRESET, try again
      return;
    }
    const reader = new FrameReader();
    const timer = setTimeout(() => socket.destroy(), LIMITS.MESSAGE_TIMEOUT_MS);
    let taken = false;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      if (taken) return;
      let frames;
      try {
        frames = reader.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      const frame = frames[0];
      if (!frame) return;
      taken = true;
      clearTimeout(timer);
      socket.pause();
      const data = frame.type === REQUEST_TYPE ? frame.data : null;
      void Promise.resolve(this.opts.onRequest(conn, data)).then((reply) => {
        const fd = fdOf(socket);
        try {
          if (fd !== null && fd >= 0 && !socket.destroyed) sendWithFds(fd, Buffer.from(encodeFrame(REPLY_TYPE, reply)), 'error' in reply ? [] : fds);
        } catch (err) {
          this.opts.log.info({ peerUid: conn.peer.uid, err: (err as Error).message }, 'Could not send a reply on the descriptor socket');
        } finally {
          for (const f of fds) closeFd(f); // the client has its own copies now
          socket.end();
        }
      });
    });
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server) await this.book.closeServer(server);
  }
}

// The client side of the protocol over a plain UNIX socket (no node-ipc here): typed calls, two error kinds.
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { TransportError, UsernsError } from '../errors.ts';
import { checkReply, encodeFrame, FrameReader, LIMITS, REPLY_TYPE, REQUEST_TYPE } from './protocol.ts';
import type { Method, ParamsOf, RequestId, ResultOf } from './protocol.ts';

/** How long a connect that meets a full listen backlog (EAGAIN) is retried. */
export const CONNECT_RETRY_MS = 3000;

type Waiter = { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout };

/** One connection to the agent; many calls may be in flight on it. */
export class AgentClient {
  private readonly sock: Socket;
  private readonly path: string;
  private readonly reader = new FrameReader();
  private readonly waiting = new Map<RequestId, Waiter>();
  private nextId = 1;
  private broken: TransportError | null = null;

  private constructor(path: string, sock: Socket) {
    this.path = path;
    this.sock = sock;
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => this.receive(chunk));
    sock.on('error', (err: NodeJS.ErrnoException) =>
      this.fail(new TransportError(path, err.code ?? 'EIO', `connection to the agent at ${path} failed: ${err.code ?? err.message}`)),
    );
    sock.on('close', () => this.fail(new TransportError(path, 'ECONNRESET', `the agent at ${path} closed the connection`)));
  }

  /**
   * Connect. A full listen backlog (EAGAIN: the agent is busy accepting) is retried with backoff for
   * up to CONNECT_RETRY_MS before the agent counts as unreachable; any other failure is at once.
   */
  static async connect(path: string): Promise<AgentClient> {
    const deadline = Date.now() + CONNECT_RETRY_MS;
    for (let delay = 2; ; delay = Math.min(delay * 2, 100)) {
      try {
        return await new Promise<AgentClient>((resolve, reject) => {
          const sock = connect(path);
          sock.once('connect', () => {
            sock.removeAllListeners('error');
            resolve(new AgentClient(path, sock));
          });
          sock.once('error', (err: NodeJS.ErrnoException) =>
            reject(new TransportError(path, err.code ?? 'EIO', `cannot reach the agent at ${path}: ${err.code ?? err.message}`)),
          );
        });
      } catch (err) {
        if ((err as TransportError).code !== 'EAGAIN' || Date.now() + delay > deadline) throw err;
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** Call a declared method; a remote failure is a UsernsError with the agent's code. */
  call<M extends Method<never, unknown>>(method: M, params: ParamsOf<M>, timeoutMs: number = LIMITS.REQUEST_TIMEOUT_MS): Promise<ResultOf<M>> {
    if (this.broken) return Promise.reject(this.broken);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new TransportError(this.path, 'ETIMEDOUT', `the agent at ${this.path} did not answer ${method.name} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, { resolve: resolve, reject, timer });
      this.sock.write(encodeFrame(REQUEST_TYPE, { id, method: method.name, params }));
    });
  }

  close(): void {
    this.sock.removeAllListeners('close');
    this.sock.end();
    this.sock.destroy();
  }

  private receive(chunk: string): void {
    let frames;
    try {
      frames = this.reader.push(chunk);
    } catch (err) {
      this.fail(new TransportError(this.path, 'EPROTO', `the agent sent an unreadable frame: ${(err as Error).message}`));
      this.sock.destroy();
      return;
    }
    for (const f of frames) {
      if (f.type !== REPLY_TYPE) continue;
      const reply = checkReply(f.data);
      const w = reply.id === null ? undefined : this.waiting.get(reply.id);
      if (!w) continue;
      this.waiting.delete(reply.id!);
      clearTimeout(w.timer);
      if ('error' in reply) w.reject(new UsernsError(reply.error.code, reply.error.message));
      else w.resolve(reply.result);
    }
  }

  private fail(err: TransportError): void {
    this.broken ??= err;
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.waiting.clear();
  }
}

/** Connect, make one call, close. */
export async function callAgent<M extends Method<never, unknown>>(path: string, method: M, params: ParamsOf<M>): Promise<ResultOf<M>> {
  const c = await AgentClient.connect(path);
  try {
    return await c.call(method, params);
  } finally {
    c.close();
  }
}

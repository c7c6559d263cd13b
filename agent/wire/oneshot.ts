// One call to the agent on a blocking socket, for a process that makes exactly one and exits (the
// request-key handler): the same frames and reply checks as client.ts, without node:net.
import { TransportError, UsernsError } from '../errors.ts';
import { SysError } from '../kernel/ffi.ts';
import { checkReply, encodeFrame, FrameReader, LIMITS, REPLY_TYPE, REQUEST_TYPE } from './protocol.ts';
import type { Method, ParamsOf, ResultOf } from './protocol.ts';
import { closeDescriptor, exchange, exchangeWithFds } from '../kernel/unixsock.ts';

const DELIMITER = 0x0c; // FRAME_DELIMITER, a byte no UTF-8 sequence contains

/** Connect, make one call, close; a remote failure is a UsernsError, an unreachable agent a TransportError (as callAgent). */
export function callAgentOnce<M extends Method<never, unknown>>(
  path: string,
  method: M,
  params: ParamsOf<M>,
  timeoutMs: number = LIMITS.REQUEST_TIMEOUT_MS,
): ResultOf<M> {
  const received = transport(path, method, timeoutMs, () => exchange(path, requestFrame(method, params), timeoutMs, complete));
  return replyOf(path, method, received);
}

/**
 * The same, on the descriptor socket: the result and the descriptors attached to the reply
 * (SCM_RIGHTS), which the caller owns and closes.
 */
export function callAgentForFds<M extends Method<never, unknown>>(
  path: string,
  method: M,
  params: ParamsOf<M>,
  timeoutMs: number = LIMITS.REQUEST_TIMEOUT_MS,
): { result: ResultOf<M>; fds: number[] } {
  const { data, fds } = transport(path, method, timeoutMs, () => exchangeWithFds(path, requestFrame(method, params), timeoutMs, complete));
  try {
    return { result: replyOf(path, method, data), fds };
  } catch (err) {
    for (const f of fds) closeDescriptor(f);
    throw err;
  }
}

function requestFrame<M extends Method<never, unknown>>(method: M, params: ParamsOf<M>): Buffer {
  return Buffer.from(encodeFrame(REQUEST_TYPE, { id: 1, method: method.name, params }));
}

const complete = (soFar: Buffer) => soFar.includes(DELIMITER) || soFar.length > LIMITS.MAX_MESSAGE_BYTES;

function transport<T>(path: string, method: Method<never, unknown>, timeoutMs: number, call: () => T): T {
  try {
    return call();
  } catch (err) {
    if (!(err instanceof SysError)) throw err;
    if (err.code === 'ETIMEDOUT') throw new TransportError(path, err.code, `the agent at ${path} did not answer ${method.name} within ${timeoutMs} ms`);
    throw new TransportError(path, err.code, `cannot reach the agent at ${path}: ${err.code}`);
  }
}

function replyOf<M extends Method<never, unknown>>(path: string, method: M, received: Buffer): ResultOf<M> {
  const end = received.indexOf(DELIMITER);
  if (end < 0 && received.length > LIMITS.MAX_MESSAGE_BYTES)
    throw new TransportError(path, 'EPROTO', 'the agent sent an unreadable frame: frame exceeds MAX_MESSAGE_BYTES');
  if (end < 0) throw new TransportError(path, 'ECONNRESET', `the agent at ${path} closed the connection`);
  let frames;
  try {
    frames = new FrameReader().push(received.subarray(0, end + 1).toString('utf8'));
  } catch (err) {
    throw new TransportError(path, 'EPROTO', `the agent sent an unreadable frame: ${(err as Error).message}`);
  }
  const frame = frames[0];
  if (frame.type !== REPLY_TYPE) throw new TransportError(path, 'EPROTO', `the agent answered with a frame of type ${JSON.stringify(frame.type)}`);
  let reply;
  try {
    reply = checkReply(frame.data);
  } catch (err) {
    throw new TransportError(path, 'EPROTO', (err as Error).message);
  }
  if (reply.id !== 1) throw new TransportError(path, 'EPROTO', `the agent answered request 1 under id ${JSON.stringify(reply.id)}`);
  if ('error' in reply) throw new UsernsError(reply.error.code, reply.error.message);
  return reply.result as ResultOf<M>;
}

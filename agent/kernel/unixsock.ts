// Blocking AF_UNIX sockets through libc, where Node's event loop is in the way: sd_notify's datagram
// (Node has no datagram UNIX sockets) and the request-key handler's single request (node:net and
// its streams would cost that process ~2 ms of start-up). Failures throw SysError.
import { koffi, libc, SysError } from './ffi.ts';

const { constants, endianness } = process.getBuiltinModule('node:os');

const socketFn = libc.func('int socket(int domain, int type, int protocol)');
const connectFn = libc.func('int connect(int fd, const void *addr, uint32_t addrlen)');
const setsockoptFn = libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)');
const sendtoFn = libc.func('intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)');
const recvFn = libc.func('intptr_t recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)');
const closeFn = libc.func('int close(int fd)');

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const SO_SNDTIMEO = 21;
const MSG_NOSIGNAL = 0x4000;
const SUN_PATH_MAX = 107; // sun_path is 108 bytes with its NUL

/** struct sockaddr_un for a path, or "@name" in the abstract namespace. */
function unixAddress(socketPath: string, syscall: string): Buffer {
  const path = Buffer.from(socketPath);
  if (path[0] === 0x40) path[0] = 0;
  if (path.length > SUN_PATH_MAX) throw new SysError(syscall, constants.errno.ENAMETOOLONG, socketPath);
  const addr = Buffer.alloc(2 + path.length); // the length given, sun_path needs no NUL
  if (endianness() === 'LE') addr.writeUInt16LE(AF_UNIX, 0); // sa_family_t, in host order
  else addr.writeUInt16BE(AF_UNIX, 0);
  path.copy(addr, 2);
  return addr;
}

function openSocket(type: number): number {
  const fd = socketFn(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new SysError('socket', koffi.errno(), `AF_UNIX, ${type === SOCK_DGRAM ? 'SOCK_DGRAM' : 'SOCK_STREAM'}`);
  return fd;
}

/** One datagram to a UNIX socket (sd_notify). */
export function sendDatagram(socketPath: string, message: Buffer): void {
  const addr = unixAddress(socketPath, 'sendto');
  const fd = openSocket(SOCK_DGRAM);
  try {
    if (sendtoFn(fd, message, message.length, MSG_NOSIGNAL, addr, addr.length) < 0) throw new SysError('sendto', koffi.errno(), socketPath);
  } finally {
    closeFn(fd);
  }
}

/**
 * Connect to a stream socket, send `request` whole, and receive until `complete(received)` says the
 * answer is in or the peer closes. Each blocking call (the connect included, the kernel bounds it by
 * the send timeout) and the whole exchange are bounded by `timeoutMs`: past it, ETIMEDOUT.
 */
export function exchange(socketPath: string, request: Buffer, timeoutMs: number, complete: (received: Buffer) => boolean): Buffer {
  const deadline = Date.now() + timeoutMs;
  const addr = unixAddress(socketPath, 'connect');
  const fd = openSocket(SOCK_STREAM);
  try {
    const timeval = Buffer.alloc(16); // struct timeval { long tv_sec; long tv_usec; } on 64-bit, host order
    const write = endianness() === 'LE' ? timeval.writeBigInt64LE.bind(timeval) : timeval.writeBigInt64BE.bind(timeval);
    write(BigInt(Math.floor(timeoutMs / 1000)), 0);
    write(BigInt(Math.round(timeoutMs % 1000) * 1000), 8);
    for (const opt of [SO_RCVTIMEO, SO_SNDTIMEO]) {
      if (setsockoptFn(fd, SOL_SOCKET, opt, timeval, timeval.length) !== 0) throw new SysError('setsockopt', koffi.errno(), `fd ${fd}, SO_RCVTIMEO/SO_SNDTIMEO`);
    }
    retrying('connect', socketPath, deadline, () => connectFn(fd, addr, addr.length));
    for (let sent = 0; sent < request.length;) {
      sent += retrying('send', socketPath, deadline, () => sendtoFn(fd, request.subarray(sent), request.length - sent, MSG_NOSIGNAL, null, 0));
    }
    const chunks: Buffer[] = [];
    const buf = Buffer.alloc(64 * 1024);
    for (;;) {
      const n = retrying('recv', socketPath, deadline, () => recvFn(fd, buf, buf.length, 0));
      if (n === 0) break; // the peer closed
      chunks.push(Buffer.from(buf.subarray(0, n)));
      if (complete(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))) break;
    }
    return Buffer.concat(chunks);
  } finally {
    closeFn(fd);
  }
}

/** A blocking call, again after EINTR (a socket timeout makes calls fail with it whatever SA_RESTART says, signal(7)); EAGAIN from a timeout, or the deadline passed, is ETIMEDOUT. */
function retrying(syscall: string, what: string, deadline: number, call: () => number | bigint): number {
  for (;;) {
    const r = Number(call());
    const errno = r < 0 ? koffi.errno() : 0;
    if (r >= 0 && Date.now() <= deadline) return r;
    if (errno === constants.errno.EINTR && Date.now() <= deadline) continue;
    const timedOut = r >= 0 || errno === constants.errno.EAGAIN || errno === constants.errno.EINPROGRESS;
    throw new SysError(syscall, timedOut ? constants.errno.ETIMEDOUT : errno, what);
  }
}

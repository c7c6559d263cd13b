// Blocking AF_UNIX sockets through libc, where Node's event loop is in the way: sd_notify's datagram
// (Node has no datagram UNIX sockets), the request-key handler's single request (node:net and
// its streams would cost that process ~2 ms of start-up), and file descriptors passed with
// SCM_RIGHTS (Node cannot send or receive them on a UNIX socket). Failures throw SysError.
import { koffi, libc, SysError } from './ffi.ts';

const { constants, endianness } = process.getBuiltinModule('node:os');

const socketFn = libc.func('int socket(int domain, int type, int protocol)');
const connectFn = libc.func('int connect(int fd, const void *addr, uint32_t addrlen)');
const setsockoptFn = libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)');
const sendtoFn = libc.func('intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)');
const recvFn = libc.func('intptr_t recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)');
const closeFn = libc.func('int close(int fd)');
const socketpairFn = libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *fds)');
const sendmsgFn = libc.func('intptr_t sendmsg(int fd, void *msg, int flags)');
const recvmsgFn = libc.func('intptr_t recvmsg(int fd, void *msg, int flags)');

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
const SO_SNDTIMEO = 21;
const MSG_NOSIGNAL = 0x4000;
const MSG_DONTWAIT = 0x40;
const MSG_CTRUNC = 0x8;
const MSG_CMSG_CLOEXEC = 0x40000000;
const SCM_RIGHTS = 1;
const SUN_PATH_MAX = 107; // sun_path is 108 bytes with its NUL

/** struct sockaddr_un for a path, or "@name" in the abstract namespace. */
function unixAddress(socketPath: string, syscall: string): Buffer {
  const path = Buffer.from(socketPath);
  if (path[0] === 0x40) path[0] = 0;
  if (path.length > SUN_PATH_MAX) throw new SysError(syscall, constants.errno.ENAMETOOLONG, socketPath);
  const addr = Buffer.alloc(2 + path.length); // the length given, sun_path needs no NUL
  if (endianness() === 'LE')
    addr.writeUInt16LE(AF_UNIX, 0); // sa_family_t, in host order
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
  const buf = Buffer.alloc(64 * 1024);
  return converse(socketPath, request, timeoutMs, complete, (fd) => {
    const n = Number(recvFn(fd, buf, buf.length, 0));
    return n < 0 ? n : Buffer.from(buf.subarray(0, n));
  }).data;
}

/** exchange(), and the descriptors the peer attached (SCM_RIGHTS) to what it sent; the caller closes them. */
export function exchangeWithFds(
  socketPath: string,
  request: Buffer,
  timeoutMs: number,
  complete: (received: Buffer) => boolean,
): { data: Buffer; fds: number[] } {
  const fds: number[] = [];
  try {
    const { data } = converse(socketPath, request, timeoutMs, complete, (fd) => {
      try {
        const got = receiveWithFds(fd, true);
        fds.push(...got.fds);
        return got.data;
      } catch (err) {
        if (err instanceof SysError && err.code !== 'EMSGSIZE') return -1; // koffi.errno() still holds it
        throw err;
      }
    });
    return { data, fds };
  } catch (err) {
    for (const f of fds) closeFn(f);
    throw err;
  }
}

function converse(
  socketPath: string,
  request: Buffer,
  timeoutMs: number,
  complete: (received: Buffer) => boolean,
  receive: (fd: number) => Buffer | number,
): { data: Buffer } {
  const deadline = Date.now() + timeoutMs;
  const addr = unixAddress(socketPath, 'connect');
  const fd = openSocket(SOCK_STREAM);
  try {
    const timeval = Buffer.alloc(16); // struct timeval { long tv_sec; long tv_usec; } on 64-bit, host order
    const write = endianness() === 'LE' ? timeval.writeBigInt64LE.bind(timeval) : timeval.writeBigInt64BE.bind(timeval);
    write(BigInt(Math.floor(timeoutMs / 1000)), 0);
    write(BigInt(Math.round(timeoutMs % 1000) * 1000), 8);
    for (const opt of [SO_RCVTIMEO, SO_SNDTIMEO]) {
      if (setsockoptFn(fd, SOL_SOCKET, opt, timeval, timeval.length) !== 0)
        throw new SysError('setsockopt', koffi.errno(), `fd ${fd}, SO_RCVTIMEO/SO_SNDTIMEO`);
    }
    retrying('connect', socketPath, deadline, () => connectFn(fd, addr, addr.length));
    for (let sent = 0; sent < request.length;) {
      sent += retrying('send', socketPath, deadline, () => sendtoFn(fd, request.subarray(sent), request.length - sent, MSG_NOSIGNAL, null, 0));
    }
    const chunks: Buffer[] = [];
    for (;;) {
      let got: Buffer | null = null;
      retrying('recv', socketPath, deadline, () => {
        const r = receive(fd);
        if (typeof r === 'number') return r;
        got = r;
        return r.length;
      });
      const chunk = got as Buffer | null;
      if (chunk === null || chunk.length === 0) break; // the peer closed
      chunks.push(chunk);
      if (complete(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks))) break;
    }
    return { data: Buffer.concat(chunks) };
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

const SOCK_SEQPACKET = 5;

/**
 * A connected pair of sockets (close-on-exec): one end for a child process, one to keep. `seqpacket`:
 * messages keep their boundaries, each with its own descriptors (a stream may join two messages).
 */
export function socketPair(seqpacket = false): [number, number] {
  const fds = [0, 0];
  const type = seqpacket ? SOCK_SEQPACKET : SOCK_STREAM;
  if (socketpairFn(AF_UNIX, type | SOCK_CLOEXEC, 0, fds) !== 0)
    throw new SysError('socketpair', koffi.errno(), `AF_UNIX, ${seqpacket ? 'SOCK_SEQPACKET' : 'SOCK_STREAM'}`);
  return [fds[0], fds[1]];
}

export function closeDescriptor(fd: number): void {
  closeFn(fd);
}

/** Descriptors one message may carry; the cmsg area is sized for them. */
export const MAX_PASSED_FDS = 4;
const MSG_BYTES = 64 * 1024;
// struct msghdr (56 bytes), struct iovec (16), a cmsg area, and the data, in one block allocated
// once: the calls are synchronous and JavaScript runs one at a time. LP64 layout (x86-64, aarch64).
const HDR = 0;
const IOV = 64;
const CTL = 128;
const CTL_BYTES = 16 + 8 * MAX_PASSED_FDS; // CMSG_SPACE(MAX_PASSED_FDS * 4), with room to spare
const DATA = 256;
let block: { ptr: unknown; buf: Buffer; addr: bigint } | null = null;

function msgBlock(): { buf: Buffer; addr: bigint; ptr: unknown } {
  if (block === null) {
    const ptr = koffi.alloc('uint8_t', DATA + MSG_BYTES);
    block = { ptr, buf: Buffer.from(koffi.view(ptr, DATA + MSG_BYTES)), addr: koffi.address(ptr) };
  }
  return block;
}

/** Fill msghdr and iovec for `len` bytes of data and `ctlLen` bytes of control in the block. */
function prepare(len: number, ctlLen: number): { buf: Buffer; ptr: unknown } {
  const { buf, addr, ptr } = msgBlock();
  const le = endianness() === 'LE';
  const w64 = (v: bigint, at: number) => (le ? buf.writeBigUInt64LE(v, at) : buf.writeBigUInt64BE(v, at));
  buf.fill(0, 0, DATA);
  w64(addr + BigInt(DATA), IOV); // iov_base
  w64(BigInt(len), IOV + 8); // iov_len
  w64(addr + BigInt(IOV), HDR + 16); // msg_iov
  w64(1n, HDR + 24); // msg_iovlen
  if (ctlLen > 0) {
    w64(addr + BigInt(CTL), HDR + 32); // msg_control
    w64(BigInt(ctlLen), HDR + 40); // msg_controllen
  }
  return { buf, ptr };
}

/**
 * One message with descriptors attached (SCM_RIGHTS), sent whole or not at all: the data is small
 * (a reply frame), so a short send or EAGAIN on a non-blocking socket is reported as EAGAIN.
 */
export function sendWithFds(fd: number, data: Buffer, fds: readonly number[]): void {
  if (data.length > MSG_BYTES || fds.length > MAX_PASSED_FDS) throw new SysError('sendmsg', constants.errno.EMSGSIZE, `fd ${fd}`);
  const ctlLen = fds.length === 0 ? 0 : 16 + 8 * Math.ceil(fds.length / 2);
  const { buf, ptr } = prepare(data.length, ctlLen);
  data.copy(buf, DATA);
  if (fds.length > 0) {
    const le = endianness() === 'LE';
    if (le) buf.writeBigUInt64LE(BigInt(16 + 4 * fds.length), CTL);
    else buf.writeBigUInt64BE(BigInt(16 + 4 * fds.length), CTL); // cmsg_len
    if (le) {
      buf.writeInt32LE(SOL_SOCKET, CTL + 8);
      buf.writeInt32LE(SCM_RIGHTS, CTL + 12);
    } else {
      buf.writeInt32BE(SOL_SOCKET, CTL + 8);
      buf.writeInt32BE(SCM_RIGHTS, CTL + 12);
    }
    fds.forEach((f, i) => (le ? buf.writeInt32LE(f, CTL + 16 + 4 * i) : buf.writeInt32BE(f, CTL + 16 + 4 * i)));
  }
  for (;;) {
    const n = Number(sendmsgFn(fd, ptr, MSG_NOSIGNAL | MSG_DONTWAIT));
    if (n === data.length) return;
    const errno = n < 0 ? koffi.errno() : constants.errno.EAGAIN;
    if (errno !== constants.errno.EINTR) throw new SysError('sendmsg', errno, `fd ${fd}`);
  }
}

/**
 * One recvmsg(2): the bytes that came (empty when the peer closed) and the descriptors attached to
 * them, close-on-exec. `wait` false: MSG_DONTWAIT (EAGAIN when nothing is queued).
 */
export function receiveWithFds(fd: number, wait: boolean): { data: Buffer; fds: number[] } {
  const { buf, ptr } = prepare(MSG_BYTES, CTL_BYTES);
  let n: number;
  for (;;) {
    n = Number(recvmsgFn(fd, ptr, MSG_CMSG_CLOEXEC | (wait ? 0 : MSG_DONTWAIT)));
    if (n >= 0) break;
    const errno = koffi.errno();
    if (errno !== constants.errno.EINTR) throw new SysError('recvmsg', errno, `fd ${fd}`);
  }
  const le = endianness() === 'LE';
  const r64 = (at: number) => Number(le ? buf.readBigUInt64LE(at) : buf.readBigUInt64BE(at));
  const r32 = (at: number) => (le ? buf.readInt32LE(at) : buf.readInt32BE(at));
  const fds: number[] = [];
  const ctlLen = r64(HDR + 40);
  for (let at = CTL; at + 16 <= CTL + ctlLen;) {
    const len = r64(at);
    if (len < 16) break;
    if (r32(at + 8) === SOL_SOCKET && r32(at + 12) === SCM_RIGHTS) {
      for (let i = 0; i < Math.floor((len - 16) / 4); i++) fds.push(r32(at + 16 + 4 * i));
    }
    at += 16 + Math.ceil((len - 16) / 8) * 8;
  }
  const flags = r32(HDR + 48);
  const data = Buffer.from(buf.subarray(DATA, DATA + n));
  if (flags & MSG_CTRUNC) {
    for (const f of fds) closeFn(f);
    throw new SysError('recvmsg', constants.errno.EMSGSIZE, `fd ${fd}: more descriptors than ${MAX_PASSED_FDS}`);
  }
  return { data, fds };
}

// The few system calls Node lacks, through koffi: mount, umount2, the new mount API (open_tree, mount_setattr, move_mount), SO_PEERCRED, SO_PEERGROUPS, FIONREAD, xattrs, a datagram for sd_notify, malloc_trim. Failures throw SysError.
import { fstatSync, readdirSync } from 'node:fs';
import { constants } from 'node:os';
import { koffi, libc, SysError } from './ffi.ts';
import { closeDescriptor, sendDatagram } from './unixsock.ts';
import { O_PATH, viaFd } from './files.ts';

const mountFn = libc.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)');
const umount2Fn = libc.func('int umount2(const char *target, int flags)');
const mknodFn = libc.func('int mknod(const char *path, uint32_t mode, uint64_t dev)');
const S_IFREG = 0o100000;
const ucred = koffi.struct({ pid: 'int32_t', uid: 'uint32_t', gid: 'uint32_t' });
const getsockoptFn = libc.func('getsockopt', 'int', ['int', 'int', 'int', koffi.out(koffi.pointer(ucred)), koffi.inout(koffi.pointer('uint32_t'))]);
const ioctlIntFn = libc.func('int ioctl(int fd, unsigned long request, _Out_ int *value)');
const ioctlArgFn = libc.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']);
const fcntlFn = libc.func('fcntl', 'int', ['int', 'int', 'int']);
const lgetxattrFn = libc.func('intptr_t lgetxattr(const char *path, const char *name, void *value, size_t size)');
const getxattrFn = libc.func('intptr_t getxattr(const char *path, const char *name, void *value, size_t size)');
const lsetxattrFn = libc.func('int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)');
const lremovexattrFn = libc.func('int lremovexattr(const char *path, const char *name)');
const fstatatFn = libc.func('int fstatat(int dirfd, const char *path, _Out_ uint8_t *buf, int flags)');
const openFn = libc.func('int open(const char *path, int flags, int mode)');
const flockFn = libc.func('int flock(int fd, int operation)');
const getsockoptBufFn = libc.func('getsockopt', 'int', ['int', 'int', 'int', 'void *', koffi.inout(koffi.pointer('uint32_t'))]);
/** glibc's; another libc may not have it (then nothing is trimmed). */
const mallocTrimFn = (() => {
  try {
    return libc.func('int malloc_trim(size_t pad)');
  } catch {
    return null;
  }
})();
/** The new mount API through syscall(2): glibc before 2.36 has no wrappers. Numbers are the same on every architecture. */
const syscallFn = libc.func('long syscall(long nr, ...)');
const SYS_OPEN_TREE = 428;
const SYS_MOVE_MOUNT = 429;
const SYS_MOUNT_SETATTR = 442;
const OPEN_TREE_CLONE = 1;
const AT_EMPTY_PATH = 0x1000;
const MOUNT_ATTR_RDONLY = 0x1;
const MOUNT_ATTR_NOSUID = 0x2;
const MOUNT_ATTR_NODEV = 0x4;
const MOUNT_ATTR_IDMAP = 0x100000;
const MOVE_MOUNT_F_EMPTY_PATH = 0x4;
const AT_FDCWD = -100;

export const MS_BIND = 0x1000;
export const MNT_DETACH = 0x2;
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const SO_PEERGROUPS = 59;
const FIONREAD = 0x541b;
/** ioctl_ns(2): _IO(0xb7, 0x2), a new descriptor for the parent of a user namespace. */
const NS_GET_PARENT = 0xb702;

export function bindMount(source: string, target: string): void {
  if (mountFn(source, target, null, MS_BIND, null) !== 0) throw new SysError('mount', koffi.errno(), `${source} -> ${target}, MS_BIND`);
}

/**
 * An empty regular file made at `path` (mknod(2) with S_IFREG: the kernel's O_CREAT | O_EXCL,
 * a symbolic link there included, without a descriptor to open and close), its mode `mode` less
 * the umask. SysError with the errno otherwise (EEXIST: something is there).
 */
export function makeEmptyFile(path: string, mode: number): void {
  if (mknodFn(path, S_IFREG | mode, 0) !== 0) throw new SysError('mknod', koffi.errno(), path);
}

/** umount2(target, MNT_DETACH); false when nothing is mounted there (EINVAL) or the path is gone. */
export function detach(target: string): boolean {
  if (umount2Fn(target, MNT_DETACH) === 0) return true;
  const errno = koffi.errno();
  if (errno === constants.errno.EINVAL || errno === constants.errno.ENOENT) return false;
  throw new SysError('umount2', errno, `${target}, MNT_DETACH`);
}

/**
 * The nsfs inode of the parent of the user namespace pinned at `path` (ioctl_ns(2) NS_GET_PARENT),
 * or null when nothing is pinned there or the namespace is the initial one.
 */
export function parentNsIno(path: string): number | null {
  const fd = openFn(path, O_CLOEXEC, 0); // O_RDONLY
  if (fd < 0) return null;
  try {
    const parent = ioctlArgFn(fd, NS_GET_PARENT, 0);
    if (parent < 0) {
      const errno = koffi.errno();
      if (errno === constants.errno.EPERM || errno === constants.errno.ENOTTY || errno === constants.errno.EINVAL) return null;
      throw new SysError('ioctl', errno, `${path}, NS_GET_PARENT`);
    }
    try {
      return fstatSync(parent).ino;
    } finally {
      closeDescriptor(parent);
    }
  } finally {
    closeDescriptor(fd);
  }
}

export type PeerCred = { readonly pid: number; readonly uid: number; readonly gid: number };

/** The kernel's word on who is at the other end of a connected UNIX socket. */
export function peerCred(fd: number): PeerCred {
  const out = { pid: 0, uid: 0, gid: 0 };
  const len = [12];
  if (getsockoptFn(fd, SOL_SOCKET, SO_PEERCRED, out, len) !== 0) throw new SysError('getsockopt', koffi.errno(), `fd ${fd}, SO_PEERCRED`);
  return out;
}

/**
 * The peer's supplementary groups as the kernel recorded them at connect(2) (Linux 4.13+): unlike
 * /proc/PID/status, this cannot be raced by the peer exiting and its pid being reused.
 */
export function peerGroups(fd: number): number[] {
  let buf = Buffer.alloc(64 * 4);
  for (let attempt = 0; attempt < 2; attempt++) {
    const len = [buf.length];
    if (getsockoptBufFn(fd, SOL_SOCKET, SO_PEERGROUPS, buf, len) === 0) {
      // gid_t in the machine's byte order; Buffer.alloc is never pooled, so the offset is 0.
      return [...new Uint32Array(buf.buffer, buf.byteOffset, Math.floor(len[0] / 4))];
    }
    const errno = koffi.errno();
    if (errno !== constants.errno.ERANGE) throw new SysError('getsockopt', errno, `fd ${fd}, SO_PEERGROUPS`);
    buf = Buffer.alloc(len[0]); // the kernel said how much it needs
  }
  throw new SysError('getsockopt', constants.errno.ERANGE, `fd ${fd}, SO_PEERGROUPS`);
}

/** SO_PEERPIDFD (Linux 6.5): a pidfd of the peer as it was at connect(2), immune to pid reuse. */
const SO_PEERPIDFD = 77;
/** ioctl on a pidfd (linux/pidfd.h, Linux 6.11): _IO(PIDFS_IOCTL_MAGIC 0xFF, 9), its user namespace. */
const PIDFD_GET_USER_NAMESPACE = 0xff09;

/**
 * The user namespaces a connected peer runs in, innermost first, up to (and with) the agent's own
 * or the initial one: the nsfs inodes (what /proc/PID/ns/user and lsns show). From the peer's
 * pidfd (SO_PEERPIDFD, PIDFD_GET_USER_NAMESPACE), else from /proc/PID/ns/user of the pid
 * SO_PEERCRED gave (older kernels); each parent by NS_GET_PARENT. Empty when the kernel cannot say
 * (the peer is gone): the caller is then judged as from an unknown namespace, never as the host.
 */
export function peerUsernsChain(fd: number, pid: number, stopAt: number): number[] {
  let ns = -1;
  const buf = Buffer.alloc(4);
  const len = [4];
  if (getsockoptBufFn(fd, SOL_SOCKET, SO_PEERPIDFD, buf, len) === 0) {
    const pidfd = buf.readInt32LE(0);
    ns = ioctlArgFn(pidfd, PIDFD_GET_USER_NAMESPACE, 0);
    closeDescriptor(pidfd);
  }
  if (ns < 0 && pid > 0) ns = openFn(`/proc/${pid}/ns/user`, O_CLOEXEC, 0);
  const chain: number[] = [];
  while (ns >= 0 && chain.length < 33) {
    let ino: number;
    try {
      ino = fstatSync(ns).ino;
    } catch {
      closeDescriptor(ns);
      break;
    }
    chain.push(ino);
    const parent = ino === stopAt ? -1 : ioctlArgFn(ns, NS_GET_PARENT, 0); // EPERM at the top
    closeDescriptor(ns);
    ns = parent;
  }
  if (ns >= 0) closeDescriptor(ns);
  return chain;
}

/** Bytes the kernel holds for this socket that the process has not read yet (FIONREAD). */
export function unreadBytes(fd: number): number {
  const out = [0];
  if (ioctlIntFn(fd, FIONREAD, out) !== 0) throw new SysError('ioctl', koffi.errno(), `fd ${fd}, FIONREAD`);
  return out[0];
}

/**
 * sd_notify(3): one datagram to $NOTIFY_SOCKET (a path, or "@name" in the abstract namespace).
 * Node has no datagram UNIX sockets: unixsock.ts. Returns false when no supervisor asked for it.
 */
export function sdNotify(state: string, socketPath: string | undefined = process.env.NOTIFY_SOCKET): boolean {
  if (!socketPath || (socketPath[0] !== '/' && socketPath[0] !== '@')) return false;
  sendDatagram(socketPath, Buffer.from(state));
  return true;
}

/**
 * An extended attribute of the inode at `path` itself — never of a symlink's target (the l*
 * calls) — or null when it has none (ENODATA).
 */
export function getXattr(path: string, name: string): Buffer | null {
  return readXattr(lgetxattrFn, 'lgetxattr', path, name);
}

/**
 * An extended attribute of the inode a descriptor holds (an O_PATH one included, a symlink's own
 * too): getxattr(2) of /proc/self/fd/N follows that magic link to the inode itself, never by name.
 */
export function getXattrOf(fd: number, name: string): Buffer | null {
  return readXattr(getxattrFn, 'getxattr', viaFd(fd), name);
}

function readXattr(fn: typeof lgetxattrFn, call: string, path: string, name: string): Buffer | null {
  const buf = Buffer.alloc(256);
  const n = Number(fn(path, name, buf, buf.length));
  if (n >= 0) return buf.subarray(0, n);
  const errno = koffi.errno();
  if (errno === constants.errno.ENODATA) return null;
  throw new SysError(call, errno, `${path}, ${name}`);
}

export function setXattr(path: string, name: string, value: Buffer): void {
  if (lsetxattrFn(path, name, value, value.length, 0) !== 0) throw new SysError('lsetxattr', koffi.errno(), `${path}, ${name}`);
}

/** false when there was nothing to remove. */
export function removeXattr(path: string, name: string): boolean {
  if (lremovexattrFn(path, name) === 0) return true;
  const errno = koffi.errno();
  if (errno === constants.errno.ENODATA) return false;
  throw new SysError('lremovexattr', errno, `${path}, ${name}`);
}

const AT_SYMLINK_NOFOLLOW = 0x100;
const O_DIRECTORY = 0o200000;
const O_CLOEXEC = 0o2000000;
/**
 * struct stat is 144 bytes on x86-64 and 128 on aarch64; st_dev and st_ino are its first two 64-bit
 * fields on both, little-endian (the two architectures koffi ships for here).
 */
const statBuf = Buffer.alloc(256);

const waitidFn = libc.func('int waitid(int idtype, int id, _Out_ uint8_t *infop, int options)');
const P_PID = 1;
const WNOHANG = 1;
const WEXITED = 4;
const WNOWAIT = 0x01000000;
/** siginfo_t: 128 bytes; si_pid at 16 on the 64-bit architectures koffi ships for here. */
const siginfoBuf = Buffer.alloc(128);

/**
 * Whether our child `pid` has ended, though Node may not have reaped it yet (it does when its event
 * loop next runs): waitid(2) with WNOWAIT, which leaves the child to be reaped as usual. A child
 * already reaped (ECHILD) has ended too. One system call, no file read.
 */
export function childEnded(pid: number): boolean {
  siginfoBuf.fill(0, 0, 24);
  if (waitidFn(P_PID, pid, siginfoBuf, WEXITED | WNOHANG | WNOWAIT) !== 0) return true;
  return siginfoBuf.readInt32LE(16) === pid;
}

const LOCK_EX = 2;
const LOCK_NB = 4;

/**
 * flock(2) LOCK_EX | LOCK_NB on `fd`: true when taken, false when another open file holds it. The
 * kernel lets it go when the last descriptor of that open file closes, a crash included.
 */
export function lockExclusive(fd: number, what: string): boolean {
  if (flockFn(fd, LOCK_EX | LOCK_NB) === 0) return true;
  const errno = koffi.errno();
  if (errno === constants.errno.EWOULDBLOCK) return false;
  throw new SysError('flock', errno, what);
}

/** An O_PATH descriptor of a directory, for lookups relative to it; the caller closes it. */
export function openDirPath(path: string): number {
  const fd = openFn(path, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0) throw new SysError('open', koffi.errno(), `${path}, O_PATH`);
  return fd;
}

/** close(2), one binding for the agent and the upcall's bundle (unixsock.ts keeps it, as the bundle does not load this file). */
export { closeDescriptor as closeFd };

/**
 * {dev, ino} of `name` in the directory `dirFd`, without following a symlink, or null when absent.
 * One path component and no Stats object: the agent checks a pin this way on every resolve.
 */
export function statAt(dirFd: number, name: string): { dev: number; ino: number } | null {
  if (fstatatFn(dirFd, name, statBuf, AT_SYMLINK_NOFOLLOW) !== 0) return null;
  return { dev: Number(statBuf.readBigUInt64LE(0)), ino: Number(statBuf.readBigUInt64LE(8)) };
}

/**
 * A detached copy of the mount at `path` (open_tree(2) OPEN_TREE_CLONE, as mount --bind: not its
 * submounts): a descriptor of a mount that belongs to no namespace until move_mount(2) attaches it.
 */
export function openTreeClone(path: string): number {
  const fd = Number(syscallFn(SYS_OPEN_TREE, 'int', AT_FDCWD, 'const char *', path, 'unsigned int', OPEN_TREE_CLONE | O_CLOEXEC));
  if (fd < 0) throw new SysError('open_tree', koffi.errno(), `${path}, OPEN_TREE_CLONE`);
  return fd;
}

/**
 * mount_setattr(2) on a detached tree: MOUNT_ATTR_IDMAP with the user namespace `usernsFd` (on-disk
 * ids are taken as its inside ids and shown as its outside ids), and read-only when asked. EINVAL:
 * the filesystem cannot be idmapped (NFS, FUSE, …) or the tree is already attached.
 */
export function setMountAttrs(
  treeFd: number,
  attrs: { readonly usernsFd?: number; readonly readOnly?: boolean; readonly nosuid?: boolean; readonly nodev?: boolean },
): void {
  const attr = Buffer.alloc(32); // struct mount_attr { u64 attr_set, attr_clr, propagation, userns_fd; }
  let set = 0n;
  if (attrs.usernsFd !== undefined) {
    set |= BigInt(MOUNT_ATTR_IDMAP);
    attr.writeBigUInt64LE(BigInt(attrs.usernsFd), 24);
  }
  if (attrs.readOnly) set |= BigInt(MOUNT_ATTR_RDONLY);
  if (attrs.nosuid) set |= BigInt(MOUNT_ATTR_NOSUID);
  if (attrs.nodev) set |= BigInt(MOUNT_ATTR_NODEV);
  attr.writeBigUInt64LE(set, 0);
  if (Number(syscallFn(SYS_MOUNT_SETATTR, 'int', treeFd, 'const char *', '', 'unsigned int', AT_EMPTY_PATH, 'void *', attr, 'size_t', attr.length)) !== 0) {
    throw new SysError(
      'mount_setattr',
      koffi.errno(),
      `fd ${treeFd}${attrs.usernsFd !== undefined ? ', MOUNT_ATTR_IDMAP' : ''}${attrs.readOnly ? ', MOUNT_ATTR_RDONLY' : ''}`,
    );
  }
}

/** Attach a detached tree at `target` in the caller's mount namespace (move_mount(2)). */
export function moveMount(treeFd: number, target: string): void {
  if (
    Number(syscallFn(SYS_MOVE_MOUNT, 'int', treeFd, 'const char *', '', 'int', AT_FDCWD, 'const char *', target, 'unsigned int', MOVE_MOUNT_F_EMPTY_PATH)) !== 0
  ) {
    throw new SysError('move_mount', koffi.errno(), `fd ${treeFd} -> ${target}`);
  }
}

/** {dev, ino} of an open descriptor (O_PATH ones and open_tree's included). */
export function fdIdentity(fd: number): { dev: number; ino: number } {
  const st = fstatSync(fd);
  return { dev: st.dev, ino: st.ino };
}

const F_GETFD = 1;
const FD_CLOEXEC = 1;

/**
 * Node reads NODE_EXTRA_CA_CERTS on a thread of its own once node:tls is loaded (node-ipc loads it),
 * through a descriptor opened without O_CLOEXEC: closed under it, the read failed ("bad end line"),
 * and the number, reused by the agent's next file, was closed again by that thread. Asking for those
 * certificates waits for that read to end (about 10 ms, and only when the variable is set).
 */
function awaitNodeCertificates(): void {
  if (!process.env.NODE_EXTRA_CA_CERTS) return;
  try {
    process.getBuiltinModule('node:tls').getCACertificates('extra');
  } catch {
    /* a bundle Node cannot read: Node says so itself */
  }
}

/**
 * Close what the agent was started with beyond stdin, stdout and stderr: whoever started it (an
 * admin's shell, a supervisor) must not hand a descriptor on to what it runs. Node opens its own
 * with O_CLOEXEC, so a descriptor without FD_CLOEXEC this early was inherited. Returns those closed.
 */
export function closeInheritedDescriptors(): number[] {
  awaitNodeCertificates();
  const closed: number[] = [];
  for (const name of readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    if (!Number.isInteger(fd) || fd < 3) continue;
    const flags = fcntlFn(fd, F_GETFD, 0);
    if (flags < 0 || (flags & FD_CLOEXEC) !== 0) continue;
    closeDescriptor(fd);
    closed.push(fd);
  }
  return closed;
}

const setfsuidFn = libc.func('int setfsuid(uint32_t uid)');
const setfsgidFn = libc.func('int setfsgid(uint32_t gid)');
const getgroupsFn = libc.func('int getgroups(int size, _Out_ uint32_t *list)');
/** setgroups(2) and faccessat2(2) as raw system calls: glibc's setgroups would change every thread's groups. */
const SYS_SETGROUPS = process.arch === 'arm64' ? 159 : 116;
const SYS_FACCESSAT2 = 439;
const AT_EACCESS = 0x200;
const X_OK = 1;
/** getgroups(2)'s answer, up to NGROUPS_MAX; allocated once (the calls are synchronous). */
const groupsBuffer = new Uint32Array(65536);

function setThreadGroups(groups: readonly number[]): void {
  const list = new Uint32Array(groups.length || 1);
  groups.forEach((g, i) => {
    list[i] = g;
  });
  if (Number(syscallFn(SYS_SETGROUPS, 'int', groups.length, 'uint32_t *', list)) !== 0)
    throw new SysError('setgroups', koffi.errno(), `${groups.length} groups, this thread`);
}

/** Whose filesystem ids and groups a lookup runs with (a caller's, from the kernel: agent/wire/peer.ts). */
export type FsCreds = { readonly uid: number; readonly gid: number; readonly groups: readonly number[] };

/**
 * `fn` run with this thread's filesystem ids and groups set to `who`'s: every path it resolves
 * (through Node's synchronous fs calls, which run on this thread, or a system call) the kernel
 * resolves as `who` would — permissions, ACLs and their denials included — in the very lookup whose
 * result is used, so nothing a caller swaps in meanwhile is taken for what was checked. Only this
 * thread changes (setfsuid and the raw setgroups are per thread), and only until `fn` returns.
 */
export function asCaller<T>(who: FsCreds, fn: () => T): T {
  const own = groupsBuffer;
  const n = getgroupsFn(own.length, own);
  if (n < 0) throw new SysError('getgroups', koffi.errno(), 'this thread');
  const mine = [...own.subarray(0, n)];
  let uid = -1;
  let gid = -1;
  try {
    setThreadGroups(who.groups);
    gid = setfsgidFn(who.gid) as number;
    uid = setfsuidFn(who.uid) as number;
    return fn();
  } finally {
    if (uid !== -1) setfsuidFn(uid);
    if (gid !== -1) setfsgidFn(gid);
    setThreadGroups(mine);
  }
}

/**
 * May these credentials search `dir` (and every directory on the way)? Asked of the kernel itself
 * (asCaller, one faccessat2(2)): ACLs, and their denials, count as they would for the caller. null
 * when the kernel cannot be asked.
 */
export function searchableAs(dir: string, who: FsCreds): boolean | null {
  const errno = asCaller(who, () =>
    Number(syscallFn(SYS_FACCESSAT2, 'int', AT_FDCWD, 'const char *', dir, 'int', X_OK, 'int', AT_EACCESS)) === 0 ? 0 : koffi.errno(),
  );
  if (errno === constants.errno.ENOSYS) return null;
  return errno === 0;
}

/**
 * malloc_trim(3): give the C heap's free memory back to the system (what a burst of reading and
 * parsing left in glibc's arenas stays resident otherwise). True when some was given back.
 */
export function trimMalloc(): boolean {
  return mallocTrimFn !== null && (mallocTrimFn(0) as number) === 1;
}

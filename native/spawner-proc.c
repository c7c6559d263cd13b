/*
 * What runs in the processes usernsd-spawner makes: the holder (H), the owner's clone (O) and the
 * workers (W), each non-dumpable and none exec'ing. See usernsd-spawner.c for why each is safe.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "spawner.h"

static void send_report(int fd, int err, enum step step, pid_t pid, const char *text) {
	char buf[sizeof(struct report) + 2 * MAX_ENC];
	struct report r = { err, step, pid, text ? (int32_t)strlen(text) : 0 };
	if ((size_t)r.len > sizeof buf - sizeof r) r.len = 0;
	memcpy(buf, &r, sizeof r);
	if (r.len) memcpy(buf + sizeof r, text, (size_t)r.len);
	size_t n = sizeof r + (size_t)r.len, off = 0;
	while (off < n) {
		ssize_t w = write(fd, buf + off, n - off);
		if (w < 0 && errno == EINTR) continue;
		if (w <= 0) break;
		off += (size_t)w;
	}
}

static _Noreturn void fail_with(int fd, enum step step) {
	send_report(fd, errno ? errno : EIO, step, 0, NULL);
	_exit(1);
}

/* Close every descriptor but `keep` (up to three; -1 for none). */
void close_others(int a, int b, int c) {
	int keep[3] = { a, b, c };
	for (int i = 0; i < 3; i++) for (int j = i + 1; j < 3; j++) if (keep[j] < keep[i]) { int t = keep[i]; keep[i] = keep[j]; keep[j] = t; }
	unsigned lo = 0;
	for (int i = 0; i < 3; i++) {
		if (keep[i] < 0) continue;
		if ((unsigned)keep[i] > lo && syscall(SYS_close_range, lo, (unsigned)keep[i] - 1, 0) != 0) {
			for (unsigned fd = lo; fd < (unsigned)keep[i]; fd++) close((int)fd);
		}
		lo = (unsigned)keep[i] + 1;
	}
	if (syscall(SYS_close_range, lo, ~0U, 0) != 0) {
		struct rlimit rl = { 1024, 1024 };
		getrlimit(RLIMIT_NOFILE, &rl);
		rlim_t max = rl.rlim_cur > 65536 ? 65536 : rl.rlim_cur;
		for (unsigned fd = lo; fd < max; fd++) close((int)fd);
	}
}

static int write_file(const char *path, const char *text) {
	int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) return -1;
	size_t n = strlen(text);
	ssize_t w = write(fd, text, n);
	int e = errno;
	close(fd);
	if (w != (ssize_t)n) { errno = w < 0 ? e : EIO; return -1; }
	return 0;
}

/*
 * The holder, in its new namespace, on a stack of its own in a shared address space: it closes
 * every descriptor but its pipe (close_range(2): Linux 5.9, older than idmapped mounts) and waits
 * until the pipe's other end closes. It touches no memory but its stack: no stdio, no errno read.
 */
static int holder(void *arg) {
	int hold_r = (int)(intptr_t)arg;
	if (hold_r > 0) syscall(SYS_close_range, 0U, (unsigned)hold_r - 1, 0);
	syscall(SYS_close_range, (unsigned)hold_r + 1, ~0U, 0);
	char c;
	while (syscall(SYS_read, hold_r, &c, 1) > 0) {}
	syscall(SYS_exit, 0);
	return 0;
}

/* A stack for a clone(2) child; NULL on failure. */
void *new_stack(void) {
	void *s = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	return s == MAP_FAILED ? NULL : s;
}

/* H, cloned into a new user namespace owned by the current effective ids; -1 with errno on failure. */
pid_t clone_holder(int hold_r, void *stack) {
	return clone(holder, (char *)stack + STACK_SIZE, CLONE_VM | CLONE_NEWUSER | SIGCHLD, (void *)(intptr_t)hold_r);
}

/* setgroups before gid_map, each map in one write; 0, or the failed step with errno set. */
enum step write_maps(pid_t pid, const char *setgroups, const char *uid_map, const char *gid_map) {
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/setgroups", pid);
	if (write_file(path, setgroups) != 0) return S_SETGROUPS;
	snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
	if (write_file(path, uid_map) != 0) return S_UIDMAP;
	snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
	if (write_file(path, gid_map) != 0) return S_GIDMAP;
	return S_NONE;
}

/* O, in W's address space while W waits (CLONE_VFORK): the owner's ids, then H. */
struct owner_args { const struct create *q; int hold_r; void *stack; pid_t holder; int err; };
static int owner_main(void *arg) {
	struct owner_args *a = arg;
	/* Raw calls: the ids of this task alone (glibc's wrappers would act for a whole process). */
	if (syscall(SYS_setresgid, -1, a->q->gid, -1) != 0 || syscall(SYS_setresuid, -1, a->q->uid, -1) != 0) {
		a->err = errno;
		syscall(SYS_exit, 0);
	}
	a->holder = clone_holder(a->hold_r, a->stack);
	if (a->holder < 0) a->err = errno;
	syscall(SYS_exit, 0);
	return 0;
}

/* W, for a nested context: enter the parent's namespace, have O clone H there, write H's maps, report. */
_Noreturn void nested_worker(const struct create *q, int rep, int hold_r) {
	close_others(rep, hold_r, -1);
	int fd = open(q->parent, O_RDONLY | O_CLOEXEC);
	if (fd < 0) fail_with(rep, S_OPEN_PARENT);
	if (setns(fd, CLONE_NEWUSER) != 0) fail_with(rep, S_ENTER_PARENT);
	close(fd);
	struct owner_args a = { q, hold_r, new_stack(), 0, 0 };
	void *ostack = new_stack();
	if (!a.stack || !ostack) fail_with(rep, S_FORK);
	pid_t o = clone(owner_main, (char *)ostack + STACK_SIZE, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
	if (o < 0) fail_with(rep, S_FORK);
	while (waitpid(o, NULL, 0) < 0 && errno == EINTR) {}
	if (a.err) { errno = a.err; fail_with(rep, a.holder < 0 ? S_CLONE : S_OWNER); }
	/* H is the spawner's child now (O has exited, the spawner is the subreaper). */
	enum step failed = write_maps(a.holder, q->setgroups, q->uid_map, q->gid_map);
	if (failed) fail_with(rep, failed);
	send_report(rep, 0, S_NONE, a.holder, NULL);
	_exit(0);
}

int encode_map(const char *path, char *out, size_t cap) {
	/* Read whole: the kernel hands a map out a page at a time, and 340 extents take more than one. */
	static char raw[4 * MAX_MAP];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return 0;
	ssize_t n = 0, r;
	while ((r = read(fd, raw + n, sizeof raw - 1 - (size_t)n)) > 0 || (r < 0 && errno == EINTR)) if (r > 0) n += r;
	close(fd);
	if (r < 0 || (size_t)n >= sizeof raw - 1) return 0;
	size_t o = 0;
	int field = 0, in_num = 0;
	for (ssize_t i = 0; i < n; i++) {
		char c = raw[i];
		if (c >= '0' && c <= '9') {
			if (!in_num && field > 0) { if (o + 1 >= cap) return 0; out[o++] = field % 3 == 0 ? ',' : ':'; }
			if (o + 1 >= cap) return 0;
			out[o++] = c;
			if (!in_num) field++;
			in_num = 1;
		} else {
			in_num = 0;
		}
	}
	if (o == 0) { if (cap < 2) return 0; out[o++] = '-'; }
	out[o] = '\0';
	return 1;
}

/* W for "maps": enter the pinned namespace (non-dumpable, with root's ids) and read its maps. */
_Noreturn void maps_worker(const char *pin, int rep) {
	close_others(rep, -1, -1);
	int fd = open(pin, O_RDONLY | O_CLOEXEC);
	if (fd < 0) fail_with(rep, S_OPEN_PIN);
	if (setns(fd, CLONE_NEWUSER) != 0) fail_with(rep, S_ENTER_PIN);
	close(fd);
	char u[MAX_ENC], g[MAX_ENC], both[2 * MAX_ENC];
	if (!encode_map("/proc/self/uid_map", u, sizeof u) || !encode_map("/proc/self/gid_map", g, sizeof g)) fail_with(rep, S_READ_MAPS);
	snprintf(both, sizeof both, "%s %s", u, g);
	send_report(rep, 0, S_NONE, 0, both);
	_exit(0);
}

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#define OPEN_TREE_CLONE_ 1
#define MOUNT_ATTR_RDONLY_ 0x00000001ULL
#define MOUNT_ATTR_NOSUID_ 0x00000002ULL
#define MOUNT_ATTR_NODEV_ 0x00000004ULL
#define MOUNT_ATTR_IDMAP_ 0x00100000ULL
struct mount_attr_ { uint64_t attr_set, attr_clr, propagation, userns_fd; };

/* The report, with the tree's descriptor attached when there is one (SCM_RIGHTS on `rep`). */
static void send_tree(int rep, int err, enum step step, int fd) {
	struct report r = { err, step, 0, 0 };
	struct iovec iov = { &r, sizeof r };
	union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd >= 0) {
		memset(&ctl, 0, sizeof ctl);
		m.msg_control = ctl.buf;
		m.msg_controllen = sizeof ctl.buf;
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof fd);
	}
	while (sendmsg(rep, &m, MSG_NOSIGNAL) < 0 && errno == EINTR) {}
}

static _Noreturn void tree_fail(int rep, enum step step) {
	send_tree(rep, errno ? errno : EIO, step, -1);
	_exit(1);
}

/*
 * W for "tree", in place of a program run by nsenter: it never execs, so nothing it runs comes from
 * the caller's namespace. It joins the caller's mount namespace (where the path is resolved as the
 * caller has it, hostile: the copy must be the inode the agent checked), copies the one mount there
 * (as mount --bind, no submounts), gives the copy the view's idmap and flags, and hands it back.
 */
_Noreturn void tree_worker(const struct tree *t, int rep) {
	close_others(rep, t->mnt_fd, t->userns_fd);
	if (setns(t->mnt_fd, CLONE_NEWNS) != 0) tree_fail(rep, S_ENTER_MNT);
	close(t->mnt_fd);
	int tree = (int)syscall(SYS_open_tree, AT_FDCWD, t->path, OPEN_TREE_CLONE_ | O_CLOEXEC);
	if (tree < 0) tree_fail(rep, S_OPEN_TREE);
	struct stat st;
	if (fstat(tree, &st) != 0) tree_fail(rep, S_OPEN_TREE);
	if ((unsigned long long)st.st_dev != t->dev || (unsigned long long)st.st_ino != t->ino) { errno = ESTALE; tree_fail(rep, S_TREE_CHANGED); }
	struct mount_attr_ a = { MOUNT_ATTR_IDMAP_ | (t->read_only ? MOUNT_ATTR_RDONLY_ : 0) | MOUNT_ATTR_NOSUID_ | MOUNT_ATTR_NODEV_, 0, 0, (uint64_t)t->userns_fd };
	if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &a, sizeof a) != 0) tree_fail(rep, S_IDMAP);
	send_tree(rep, 0, S_NONE, tree);
	_exit(0);
}

/*
 * usernsd-spawner: the agent's long-lived, single-threaded maker of user namespaces. Started once
 * by the agent (stdin and stdout are pipes to it; it exits when stdin closes, or when the agent
 * dies). A namespace is held by a holder process (H) made by clone(2) with CLONE_NEWUSER while the
 * effective ids are the owner's, so the kernel makes the owner its owner; its maps are then
 * written, and H waits until the agent has pinned the namespace ("end"). H shares the address
 * space it was cloned from (CLONE_VM): fork(2) copies page tables, which costs ten times more than
 * the rest of a creation. A top-level namespace is made by the spawner itself, without a fork. A
 * nested one needs a writer in the parent namespace: a worker (W, forked) enters the parent's pin,
 * a vfork-like child of it (O) takes the owner's ids and clones H, and W writes H's maps.
 *
 * Who can touch what (why no helper program, and neither CAP_KILL nor CAP_DAC_OVERRIDE, is needed):
 *  - Only effective ids become the owner's; real and saved ids stay root's. The owner cannot
 *    signal the spawner, W or O, nor H before it is in its new namespace, which by then exists.
 *  - The spawner makes itself non-dumpable at start, and W before anything else; there is no exec.
 *    So /proc files of H (which shares one of their address spaces) are root's, only root in the
 *    initial namespace may trace any of them, and root's W writes H's maps; the owner cannot write
 *    them first. H keeps root's real id, so the spawner may SIGKILL it.
 *  - An owner may stop its holder, and a parent's owner a worker in its namespace: a worker has a
 *    deadline, after which its process group is killed and its request fails; others go on.
 *
 * With --mount-namespace PATH it works in that mount namespace (init's, when the agent runs in a
 * private one, as under systemd): pins are mounted there, from where they propagate back.
 *
 * Protocol (one line each way; the agent is the only peer):
 *   new ID UID GID allow|deny UIDMAP GIDMAP PARENT   -> ID ok PID INO UIDMAP GIDMAP | ID err ERRNO STEP
 *   pin ID PATH      (ID's namespace on the file)    -> ID pinned | ID err ERRNO STEP
 *   end ID                                           (the holder of ID is ended; no reply)
 *   unpin ID PATH    (a lazy unmount)                -> ID unpinned | ID err ERRNO STEP
 *   maps ID PIN                                      -> ID maps UIDMAP GIDMAP | ID err ERRNO STEP
 *   tree ID ro|rw DEV INO PATH                       -> ID tree | ID err ERRNO STEP
 * "tree" copies a view's tree in the caller's mount namespace (see tree_worker): just before the
 * line, the agent sends a message "ID" on fd 3 (its control socket, SOCK_SEQPACKET) carrying the
 * caller's mount namespace and the view's user namespace; the copy goes back to the agent on fd 3
 * as a message "ID" carrying it, sent before the reply line.
 * INO is the nsfs inode of the holder's namespace (what its pin will show), and the maps of "ok" are
 * the holder's, read back from /proc/PID/{uid,gid}_map once written, outside ids as the initial
 * namespace sees them (the agent checks them against the configuration); an "ok" without them (they
 * could not be read) leaves the agent to look itself.
 * A map is "INSIDE:OUTSIDE:COUNT" extents joined by ","; PARENT is "-" (the initial namespace) or
 * the parent's pin path, which, like PIN, is the rest of the line. UID and GID are the owner's ids
 * as seen from the parent namespace. ERRNO is a name (EPERM); STEP says what failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "spawner.h"

#define MAX_LINE 65536
#define MAX_JOBS 256
#define DEADLINE_MS 5000

static const char *const STEPS[] = {
	"", "start the namespace helper", "open the parent's pin", "enter the parent namespace",
	"take the owner's ids", "create the user namespace", "write setgroups", "write uid_map",
	"write gid_map", "open the pin", "enter the pinned namespace", "read the maps",
	"create the user namespace (the helper did not finish in time)", "start the namespace helper (it died)",
	"pin the namespace", "unmount the pin",
	"receive the namespaces of the view", "enter the caller's mount namespace", "copy the tree",
	"check the tree (it is not the directory that was checked)", "idmap the tree", "hand the tree over",
};

static const char *errno_name(int e) {
	switch (e) {
	case EPERM: return "EPERM"; case ENOENT: return "ENOENT"; case ESRCH: return "ESRCH";
	case EINTR: return "EINTR"; case EIO: return "EIO"; case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN"; case ENOMEM: return "ENOMEM"; case EACCES: return "EACCES";
	case EINVAL: return "EINVAL"; case ENFILE: return "ENFILE"; case EMFILE: return "EMFILE";
	case ENOSPC: return "ENOSPC"; case ENOTDIR: return "ENOTDIR"; case ELOOP: return "ELOOP";
	case EUSERS: return "EUSERS"; case ETIMEDOUT: return "ETIMEDOUT"; case ENOSYS: return "ENOSYS";
	case EOPNOTSUPP: return "EOPNOTSUPP"; case ENAMETOOLONG: return "ENAMETOOLONG";
	case EEXIST: return "EEXIST"; case EBUSY: return "EBUSY"; case EXDEV: return "EXDEV";
	case ENXIO: return "ENXIO"; case EFAULT: return "EFAULT"; case ECHILD: return "ECHILD";
	case ESTALE: return "ESTALE"; case EMSGSIZE: return "EMSGSIZE";
	default: return "EIO";
	}
}

/* "INSIDE:OUTSIDE:COUNT,..." as the kernel's map text; 0 when it is not well formed. */
static int kernel_map(const char *enc, char *out, size_t cap) {
	size_t n = strlen(enc);
	if (n == 0 || n + 2 > cap) return 0;
	for (size_t i = 0; i < n; i++) {
		char c = enc[i];
		if (c == ':') out[i] = ' ';
		else if (c == ',') out[i] = '\n';
		else if (c >= '0' && c <= '9') out[i] = c;
		else return 0;
	}
	out[n] = '\n';
	out[n + 1] = '\0';
	return 1;
}

/* ---- in the spawner ---- */

struct job {
	unsigned long id;
	pid_t worker;     /* W, leader of the process group of W, O and H; 0 once reaped */
	pid_t holder;     /* H once reported; 0 once reaped */
	int rep;          /* the worker's report pipe, or -1 once read */
	int hold_w;       /* closing it ends the holder; -1 for "maps" and "tree" */
	int is_tree;      /* a "tree" job: its report comes with a descriptor (rep is a SOCK_SEQPACKET) */
	int ended;        /* answered (and for "new", ended): freed once its processes are reaped */
	void *stack;      /* a top-level holder's stack, in our address space: unmapped once it is reaped */
	long long deadline;
	size_t got;
	char buf[sizeof(struct report) + 2 * MAX_ENC];
};

static struct job *jobs[MAX_JOBS];

static long long now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (fflush(stdout) != 0) _exit(0); /* the agent is gone */
}

/*
 * A pid is signalled only while it is our child and not reaped (so it cannot have been reused),
 * and children are reaped by pid: a holder reparented to us before its worker's report told us
 * its pid stays unreaped (a zombie at worst) until then.
 */
static void finish(struct job *j, int kill_group) {
	if (kill_group && j->worker > 0) kill(-j->worker, SIGKILL);
	if (j->rep >= 0) close(j->rep);
	if (j->hold_w >= 0) close(j->hold_w); /* the holder reads end-of-file and exits */
	j->rep = j->hold_w = -1;
	j->ended = 1;
}

static void forget(pid_t pid) {
	for (int i = 0; i < MAX_JOBS; i++) {
		if (jobs[i] && jobs[i]->worker == pid) jobs[i]->worker = 0;
		if (jobs[i] && jobs[i]->holder == pid) jobs[i]->holder = 0;
	}
}

static void reap(void) {
	int busy = 0;
	for (int i = 0; i < MAX_JOBS; i++) if (jobs[i] && jobs[i]->rep >= 0) busy = 1;
	pid_t pid;
	if (!busy) {
		/* With no report pending, every child is known: reap any. */
		while ((pid = waitpid(-1, NULL, WNOHANG)) > 0) forget(pid);
	} else {
		for (int i = 0; i < MAX_JOBS; i++) {
			struct job *j = jobs[i];
			if (j && j->worker > 0 && waitpid(j->worker, NULL, WNOHANG) == j->worker) j->worker = 0;
			if (j && j->holder > 0 && waitpid(j->holder, NULL, WNOHANG) == j->holder) j->holder = 0;
		}
	}
	for (int i = 0; i < MAX_JOBS; i++) {
		struct job *j = jobs[i];
		if (!j || !j->ended || j->worker != 0 || j->holder != 0) continue;
		if (j->stack) munmap(j->stack, STACK_SIZE);
		jobs[i] = NULL;
		free(j);
	}
}

static struct job *find(unsigned long id) {
	for (int i = 0; i < MAX_JOBS; i++) if (jobs[i] && jobs[i]->id == id && !jobs[i]->ended) return jobs[i];
	return NULL;
}

/*
 * "ok": the holder's pid, its namespace's nsfs inode and its maps as the kernel holds them now,
 * looked at here (a stat and two reads of /proc in C, where the agent's thread spent about 25 us a
 * creation on them, its stat of the pin contending with the mounts of the others).
 */
static void reply_made(unsigned long id, pid_t pid) {
	static char u[MAX_ENC], g[MAX_ENC];
	char path[64];
	struct stat st;
	snprintf(path, sizeof path, "/proc/%d/ns/user", pid);
	int got = stat(path, &st) == 0;
	snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
	got = got && encode_map(path, u, sizeof u);
	snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
	got = got && encode_map(path, g, sizeof g);
	if (got) reply("%lu ok %d %llu %s %s\n", id, pid, (unsigned long long)st.st_ino, u, g);
	else reply("%lu ok %d\n", id, pid);
}

/*
 * A top-level namespace, made here: our effective ids become the owner's for the clone(2) only
 * (real and saved ids stay root's, so they come back); then we, root, write H's maps.
 */
static void create_here(struct job *j, const struct create *q, int hold_r) {
	gid_t egid = getegid();
	enum step failed = S_NONE;
	j->stack = new_stack();
	if (!j->stack) failed = S_FORK;
	else if (setresgid((gid_t)-1, q->gid, (gid_t)-1) != 0) failed = S_OWNER;
	else if (setresuid((uid_t)-1, q->uid, (uid_t)-1) != 0) failed = S_OWNER;
	else {
		pid_t h = clone_holder(hold_r, j->stack);
		int e = errno;
		if (setresuid((uid_t)-1, 0, (uid_t)-1) != 0) { perror("usernsd-spawner: cannot take back uid 0"); abort(); }
		if (h < 0) { errno = e; failed = S_CLONE; }
		else j->holder = h;
	}
	int e = errno;
	if (setresgid((gid_t)-1, egid, (gid_t)-1) != 0) { perror("usernsd-spawner: cannot take back its gid"); abort(); }
	if (!failed) failed = write_maps(j->holder, q->setgroups, q->uid_map, q->gid_map);
	if (failed) {
		reply("%lu err %s %s\n", j->id, errno_name(failed == S_SETGROUPS || failed >= S_UIDMAP ? errno : e), STEPS[failed]);
		finish(j, 0);
	} else {
		reply_made(j->id, j->holder);
	}
}

/* One request: a top-level namespace at once, or a worker started; replies at once when it cannot. */
static void start(unsigned long id, const struct create *q, const char *pin, const struct tree *t) {
	int slot = -1;
	for (int pass = 0; pass < 2 && slot < 0; pass++) {
		if (pass) reap(); /* full: perhaps of ended holders not reaped yet */
		for (int i = 0; i < MAX_JOBS && slot < 0; i++) if (!jobs[i]) slot = i;
	}
	if (slot < 0 || find(id)) { reply("%lu err %s %s\n", id, slot < 0 ? "EAGAIN" : "EINVAL", STEPS[S_FORK]); return; }
	struct job *j = calloc(1, sizeof *j);
	int rep[2] = { -1, -1 }, hold[2] = { -1, -1 };
	int made = 0;
	if (j && !(q && !q->parent)) {
		made = t ? socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, rep) : pipe2(rep, O_CLOEXEC | O_NONBLOCK);
	}
	if (!j || (q && pipe2(hold, O_CLOEXEC) != 0) || made != 0) {
		int e = errno;
		for (int i = 0; i < 2; i++) { if (rep[i] >= 0) close(rep[i]); if (hold[i] >= 0) close(hold[i]); }
		free(j);
		reply("%lu err %s %s\n", id, errno_name(e), STEPS[S_FORK]);
		return;
	}
	*j = (struct job){ .id = id, .rep = -1, .hold_w = hold[1], .is_tree = t != NULL };
	jobs[slot] = j;
	if (q && !q->parent) {
		create_here(j, q, hold[0]);
		close(hold[0]);
		return;
	}
	pid_t w = fork();
	if (w == 0) {
		/* First of all: nobody but root may trace what follows (it may enter an owner's namespace). */
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		setpgid(0, 0);
		signal(SIGPIPE, SIG_DFL);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		fcntl(rep[1], F_SETFL, fcntl(rep[1], F_GETFL) & ~O_NONBLOCK);
		if (q) nested_worker(q, rep[1], hold[0]);
		if (t) tree_worker(t, rep[1]);
		maps_worker(pin, rep[1]);
	}
	int e = errno;
	close(rep[1]);
	if (hold[0] >= 0) close(hold[0]);
	j->rep = rep[0];
	if (w < 0) {
		reply("%lu err %s %s\n", id, errno_name(e), STEPS[S_FORK]);
		finish(j, 0);
		return;
	}
	setpgid(w, w); /* on both sides, so that a kill of the group cannot miss it */
	j->worker = w;
	j->deadline = now_ms() + DEADLINE_MS;
}

/* The copy goes to the agent as a message "ID" carrying it, before the reply line says so. */
static int hand_over(unsigned long id, int fd) {
	char text[32];
	int len = snprintf(text, sizeof text, "%lu", id);
	struct iovec iov = { text, (size_t)len };
	union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl;
	memset(&ctl, 0, sizeof ctl);
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof fd);
	ssize_t r;
	while ((r = sendmsg(AGENT_FD, &m, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0 && errno == EINTR) {}
	return r < 0 ? -1 : 0;
}

/* A message and at most one descriptor (close-on-exec), from a SOCK_SEQPACKET; -1 with errno. */
static ssize_t receive_fds(int sock, void *buf, size_t len, int *fds, int max) {
	struct iovec iov = { buf, len };
	union { char buf[CMSG_SPACE(4 * sizeof(int))]; struct cmsghdr align; } ctl;
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf };
	ssize_t n;
	while ((n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | MSG_DONTWAIT)) < 0 && errno == EINTR) {}
	int got = 0;
	for (struct cmsghdr *c = n >= 0 ? CMSG_FIRSTHDR(&m) : NULL; c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
		int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			if (got < max) fds[got++] = fd; else close(fd);
		}
	}
	if (n >= 0 && (m.msg_flags & (MSG_CTRUNC | MSG_TRUNC))) {
		for (int i = 0; i < got; i++) close(fds[i]);
		errno = EMSGSIZE;
		return -1;
	}
	for (int i = got; i < max; i++) fds[i] = -1;
	return n;
}

/* A "tree" worker's report (one message, the copy attached) or its end: the copy goes to the agent. */
static void tree_readable(struct job *j) {
	struct report r = { EIO, S_WORKER, 0, 0 };
	int fd = -1;
	ssize_t n = receive_fds(j->rep, &r, sizeof r, &fd, 1);
	if (n < 0 && errno == EAGAIN) return;
	if (n != (ssize_t)sizeof r) r = (struct report){ EIO, S_WORKER, 0, 0 };
	if (r.step < 0 || (size_t)r.step >= sizeof STEPS / sizeof *STEPS) r.step = S_WORKER;
	close(j->rep);
	j->rep = -1;
	if (!r.err && fd < 0) r = (struct report){ EIO, S_HAND_OVER, 0, 0 };
	if (!r.err && hand_over(j->id, fd) != 0) r = (struct report){ errno, S_HAND_OVER, 0, 0 };
	if (fd >= 0) close(fd);
	if (r.err) reply("%lu err %s %s\n", j->id, errno_name(r.err), STEPS[r.step]);
	else reply("%lu tree\n", j->id);
	finish(j, 0);
}

/* A worker's report arrived (or its pipe closed): answer the agent. */
static void readable(struct job *j) {
	if (j->is_tree) { tree_readable(j); return; }
	ssize_t n;
	struct report r;
	while ((n = read(j->rep, j->buf + j->got, sizeof j->buf - j->got)) > 0) j->got += (size_t)n;
	if (n < 0 && errno == EAGAIN) {
		if (j->got < sizeof r) return;
		memcpy(&r, j->buf, sizeof r);
		if (r.len >= 0 && j->got < sizeof r + (size_t)r.len) return;
	}
	r = (struct report){ EIO, S_WORKER, 0, 0 };
	if (j->got >= sizeof r) memcpy(&r, j->buf, sizeof r);
	if (r.len < 0 || (size_t)r.len > sizeof j->buf - sizeof r || j->got < sizeof r + (size_t)r.len) r = (struct report){ EIO, S_WORKER, 0, 0 };
	if (r.step < 0 || (size_t)r.step >= sizeof STEPS / sizeof *STEPS) r.step = S_WORKER;
	close(j->rep);
	j->rep = -1;
	if (r.err) {
		reply("%lu err %s %s\n", j->id, errno_name(r.err), STEPS[r.step]);
		finish(j, 0);
	} else if (j->hold_w < 0) {
		reply("%lu maps %.*s\n", j->id, (int)r.len, j->buf + sizeof r);
		finish(j, 0);
	} else {
		j->holder = r.pid;
		reply_made(j->id, r.pid);
	}
}

/* A bind mount of the holder's namespace on the pin file (opened without following a symlink). */
static void pin(unsigned long id, const char *path) {
	struct job *j = find(id);
	if (!j || j->holder <= 0) { reply("%lu err ESRCH %s\n", id, STEPS[S_PIN]); return; }
	int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		int e = fd < 0 ? errno : ENOTDIR;
		if (fd >= 0) close(fd);
		reply("%lu err %s %s\n", id, errno_name(e), STEPS[S_PIN]);
		return;
	}
	char src[64], dst[64];
	snprintf(src, sizeof src, "/proc/%d/ns/user", j->holder);
	snprintf(dst, sizeof dst, "/proc/self/fd/%d", fd);
	int r = mount(src, dst, NULL, MS_BIND, NULL);
	int e = errno;
	close(fd);
	if (r != 0) reply("%lu err %s %s\n", id, errno_name(e), STEPS[S_PIN]);
	else reply("%lu pinned\n", id);
}

static void unpin(unsigned long id, const char *path) {
	if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) != 0) reply("%lu err %s %s\n", id, errno_name(errno), STEPS[S_UNPIN]);
	else reply("%lu unpinned\n", id);
}

static void end(unsigned long id) {
	struct job *j = find(id);
	if (!j) return;
	if (j->holder > 0) kill(j->holder, SIGKILL); /* even if its owner stopped it */
	finish(j, 0);
}

/*
 * "tree ID ro|rw DEV INO PATH": the namespaces came just before on fd 3, in a message "ID" (the
 * agent sends it, then writes the line, so it is queued by now).
 */
static void tree_request(unsigned long id, char *rest) {
	char *save = NULL;
	char *mode = strtok_r(rest, " ", &save), *dev = strtok_r(NULL, " ", &save), *ino = strtok_r(NULL, " ", &save);
	char text[32] = "";
	int fds[2] = { -1, -1 };
	ssize_t n = receive_fds(AGENT_FD, text, sizeof text - 1, fds, 2);
	int e = n < 0 ? errno : EINVAL;
	char *end1 = NULL, *end2 = NULL, *end3 = NULL;
	unsigned long long d = dev ? strtoull(dev, &end1, 10) : 0, i = ino ? strtoull(ino, &end2, 10) : 0;
	if (n > 0) text[n] = '\0';
	int ok = n > 0 && strtoul(text, &end3, 10) == id && *end3 == '\0' && fds[0] >= 0 && fds[1] >= 0
		&& mode && (strcmp(mode, "ro") == 0 || strcmp(mode, "rw") == 0) && dev && *end1 == '\0' && ino && *end2 == '\0'
		&& save && *save == '/';
	if (!ok) {
		for (int k = 0; k < 2; k++) if (fds[k] >= 0) close(fds[k]);
		reply("%lu err %s %s\n", id, errno_name(e), STEPS[S_TREE_FDS]);
		return;
	}
	struct tree t = { save, d, i, strcmp(mode, "ro") == 0, fds[0], fds[1] };
	start(id, NULL, NULL, &t);
	close(fds[0]);
	close(fds[1]);
}

static void request(char *line) {
	char *save = NULL;
	char *verb = strtok_r(line, " ", &save);
	char *ids = strtok_r(NULL, " ", &save);
	char *endp = NULL;
	unsigned long id = ids ? strtoul(ids, &endp, 10) : 0;
	if (!verb || !ids || *endp != '\0') { fprintf(stderr, "usernsd-spawner: malformed request ignored\n"); return; }
	if (strcmp(verb, "end") == 0) { end(id); return; }
	if (strcmp(verb, "pin") == 0 || strcmp(verb, "unpin") == 0) {
		if (!save || *save != '/') { reply("%lu err EINVAL %s\n", id, STEPS[verb[0] == 'p' ? S_PIN : S_UNPIN]); return; }
		if (verb[0] == 'p') pin(id, save); else unpin(id, save);
		return;
	}
	if (strcmp(verb, "maps") == 0) {
		if (!save || *save != '/') { reply("%lu err EINVAL %s\n", id, STEPS[S_OPEN_PIN]); return; }
		start(id, NULL, save, NULL);
		return;
	}
	if (strcmp(verb, "tree") == 0) {
		tree_request(id, save);
		return;
	}
	if (strcmp(verb, "new") != 0) { reply("%lu err EINVAL %s\n", id, STEPS[S_NONE]); return; }
	static struct create q;
	char *uid = strtok_r(NULL, " ", &save), *gid = strtok_r(NULL, " ", &save), *sg = strtok_r(NULL, " ", &save);
	char *um = strtok_r(NULL, " ", &save), *gm = strtok_r(NULL, " ", &save);
	char *e1 = NULL, *e2 = NULL;
	unsigned long u = uid ? strtoul(uid, &e1, 10) : 0, g = gid ? strtoul(gid, &e2, 10) : 0;
	if (!uid || !gid || !sg || !um || !gm || !save || *e1 || *e2 || u >= UINT32_MAX || g >= UINT32_MAX
	    || (strcmp(sg, "allow") != 0 && strcmp(sg, "deny") != 0)
	    || !kernel_map(um, q.uid_map, sizeof q.uid_map) || !kernel_map(gm, q.gid_map, sizeof q.gid_map)
	    || (strcmp(save, "-") != 0 && *save != '/')) {
		reply("%lu err EINVAL %s\n", id, STEPS[S_NONE]);
		return;
	}
	q.uid = (uid_t)u;
	q.gid = (gid_t)g;
	q.setgroups = sg;
	q.parent = strcmp(save, "-") == 0 ? NULL : save;
	start(id, &q, NULL, NULL);
}

int main(int argc, char **argv) {
	if (argc == 3 && strcmp(argv[1], "--mount-namespace") == 0) {
		int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNS) != 0) {
			fprintf(stderr, "usernsd-spawner: cannot enter mount namespace %s: %s\n", argv[2], strerror(errno));
			return 1;
		}
		close(fd);
	} else if (argc > 1) {
		int help = strcmp(argv[1], "--help") == 0;
		fprintf(help ? stdout : stderr, "usage: usernsd-spawner [--mount-namespace PATH] (started by usernsd itself: see usernsd(8))\n");
		return help ? 0 : 2;
	}
	/* Nothing inherited but the agent's pipes and control socket (0-3): no descriptor of whoever started the agent reaches a worker. */
	if (syscall(SYS_close_range, (unsigned)AGENT_FD + 1, ~0U, 0) != 0) for (int fd = AGENT_FD + 1; fd < 1024; fd++) close(fd);
	/* Dies with the agent, and every holder is reparented here to be reaped. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	signal(SIGPIPE, SIG_IGN);
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) { perror("usernsd-spawner: signalfd"); return 1; }
	fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	static char in[MAX_LINE];
	size_t have = 0;
	int open_in = 1;
	while (open_in) {
		struct pollfd fds[2 + MAX_JOBS];
		struct job *of[2 + MAX_JOBS];
		nfds_t n = 0;
		fds[n++] = (struct pollfd){ .fd = 0, .events = POLLIN };
		fds[n++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		long long now = now_ms(), next = -1;
		for (int i = 0; i < MAX_JOBS; i++) {
			struct job *j = jobs[i];
			if (!j || j->rep < 0) continue;
			if (j->deadline <= now) {
				reply("%lu err ETIMEDOUT %s\n", j->id, STEPS[S_TIMEOUT]);
				finish(j, 1);
				continue;
			}
			if (next < 0 || j->deadline < next) next = j->deadline;
			of[n] = j;
			fds[n++] = (struct pollfd){ .fd = j->rep, .events = POLLIN };
		}
		if (poll(fds, n, next < 0 ? -1 : (int)(next - now)) < 0 && errno != EINTR) { perror("usernsd-spawner: poll"); break; }
		/* Reports first: a holder's pid is known before it can be reaped. */
		for (nfds_t i = 2; i < n; i++) if (fds[i].revents) readable(of[i]);
		if (fds[1].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) > 0) {}
		}
		reap();
		if (fds[0].revents) {
			/* One read per turn: the reaping above runs between them, however fast requests come. */
			ssize_t r = read(0, in + have, sizeof in - have);
			if (r > 0) {
				have += (size_t)r;
				char *nl;
				while ((nl = memchr(in, '\n', have)) != NULL) {
					*nl = '\0';
					request(in);
					have -= (size_t)(nl + 1 - in);
					memmove(in, nl + 1, have);
				}
				if (have == sizeof in) { fprintf(stderr, "usernsd-spawner: request too long, dropped\n"); have = 0; }
			}
			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) open_in = 0;
		}
	}
	/* The agent closed our stdin: end every holder and worker, and wait for them. */
	for (int i = 0; i < MAX_JOBS; i++) {
		struct job *j = jobs[i];
		if (!j) continue;
		if (j->holder > 0) kill(j->holder, SIGKILL);
		finish(j, 1);
	}
	while (wait(NULL) > 0 || errno == EINTR) {}
	return 0;
}

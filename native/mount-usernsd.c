/*
 * mount.usernsd: the helper mount(8) runs for "-t usernsd" and fstab lines of type usernsd, in C,
 * so that a view costs what a bind mount costs rather than a Node start (a boot with fifty fstab
 * views waited seconds for Node). The same contract as `usernsctl mount-helper` (mount.usernsd(8)):
 * one "view" request on the agent's descriptor socket, then the detached tree it sends back is
 * moved onto DST (move_mount(2)), or bindfs is run with the options the agent chose. libc only.
 *
 *   mount.usernsd SRC DST [-sfnvr] [-N NS] [-t TYPE] [-o OPTIONS]
 *
 * Exit status as mount(8)'s: 1 usage or permissions, 32 mount failure.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"

#define DEFAULT_SOCKET "/run/usernsd/usernsd.sock"
#define MAX_REPLY (1024 * 1024)
#define MAX_FDS 8
#define MAX_BINDFS_ARGS 64
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif

#define EXIT_USAGE 1
#define EXIT_FAILURE_ 32
#define BINDFS_INSTALL_HINT "bindfs is not installed: install it (Debian: apt-get install bindfs) — it makes the views the kernel cannot (all squash, NFS, FUSE)"

static int usage(const char *msg) {
	fprintf(stderr, "mount.usernsd: %s\n", msg);
	return EXIT_USAGE;
}

static int failed(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int failed(const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	fputs("mount.usernsd: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return EXIT_FAILURE_;
}

static const char *errname(int e) {
	const char *n = strerrorname_np(e);
	return n ? n : strerror(e);
}

/* An absolute path made from PATH as path.resolve makes it: from the working directory, ".", ".." and "//" folded. */
static char *absolute(const char *path) {
	char cwd[PATH_MAX];
	struct buf in = { malloc(256), 0, 256 };
	if (!in.s) return NULL;
	if (path[0] != '/') {
		if (!getcwd(cwd, sizeof cwd) || bprintf(&in, "%s/", cwd)) { free(in.s); return NULL; }
	}
	if (bprintf(&in, "%s", path)) { free(in.s); return NULL; }
	char *out = malloc(in.len + 2);
	if (!out) { free(in.s); return NULL; }
	size_t o = 0;
	for (char *seg = strtok(in.s, "/"); seg; seg = strtok(NULL, "/")) {
		if (!strcmp(seg, ".")) continue;
		if (!strcmp(seg, "..")) {
			while (o > 0 && out[o - 1] != '/') o--;
			if (o > 0) o--;
			continue;
		}
		out[o++] = '/';
		size_t n = strlen(seg);
		memcpy(out + o, seg, n);
		o += n;
	}
	if (o == 0) out[o++] = '/';
	out[o] = '\0';
	free(in.s);
	return out;
}

/* A mount point must be an existing, empty directory: a view never hides what is there. */
static int check_target(const char *target) {
	struct stat st;
	if (stat(target, &st) != 0) return failed("E_INVALID: %s: %s: a view is mounted on an existing empty directory", target, errname(errno));
	if (!S_ISDIR(st.st_mode)) return failed("E_INVALID: %s is not a directory: a view is mounted on an empty directory", target);
	DIR *d = opendir(target);
	if (!d) return failed("E_INVALID: %s: %s: a view is mounted on an existing empty directory", target, errname(errno));
	int empty = 1;
	for (struct dirent *e; (e = readdir(d));) {
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) { empty = 0; break; }
	}
	closedir(d);
	if (!empty) return failed("E_INVALID: %s is not empty: a view is mounted on an empty directory, so that it hides nothing", target);
	return 0;
}

/* /run/usernsd/usernsd.sock -> /run/usernsd/usernsd.fd.sock (as fdSocketPath in agent/wire/fdsock.ts). */
static char *fd_socket_path(const char *socket_path) {
	size_t n = strlen(socket_path);
	struct buf b = { malloc(n + 16), 0, n + 16 };
	if (!b.s) return NULL;
	int r = n >= 5 && !strcmp(socket_path + n - 5, ".sock") ? bprintf(&b, "%.*s.fd.sock", (int)(n - 5), socket_path) : bprintf(&b, "%s.fd", socket_path);
	if (r) { free(b.s); return NULL; }
	return b.s;
}


/* bindfs OPTIONS… SRC DST, its stderr kept for the message; 0, or the exit status to return. */
static int run_bindfs(const struct jv *opts, const char *src, const char *target) {
	const char *argv[MAX_BINDFS_ARGS + 4];
	int n = 0;
	struct buf shown = { malloc(256), 0, 256 };
	if (!shown.s) return failed("E_INTERNAL: out of memory");
	argv[n++] = "bindfs";
	for (const struct jv *o = opts->child; o; o = o->next) {
		if (n > MAX_BINDFS_ARGS || o->kind != J_STR) { free(shown.s); return failed("E_INTERNAL: the agent's bindfs options are malformed"); }
		argv[n++] = o->str;
		bprintf(&shown, "%s%s", n > 2 ? " " : "", o->str);
	}
	argv[n++] = src;
	argv[n++] = target;
	argv[n] = NULL;
	int errpipe[2], execpipe[2];
	if (pipe2(errpipe, O_CLOEXEC) || pipe2(execpipe, O_CLOEXEC)) { free(shown.s); return failed("E_INTERNAL: pipe: %s", errname(errno)); }
	pid_t pid = fork();
	if (pid < 0) { free(shown.s); return failed("E_INTERNAL: fork: %s", errname(errno)); }
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);
		if (null >= 0) dup2(null, 0);
		dup2(errpipe[1], 2);
		execvp("bindfs", (char *const *)argv);
		int e = errno;
		if (write(execpipe[1], &e, sizeof e) < 0) _exit(127);
		_exit(127);
	}
	close(errpipe[1]);
	close(execpipe[1]);
	char err[4096];
	size_t elen = 0;
	for (ssize_t r; (r = read(errpipe[0], err + elen, sizeof err - 1 - elen)) != 0;) {
		if (r < 0) { if (errno == EINTR) continue; break; }
		elen += (size_t)r;
		if (elen == sizeof err - 1) break;
	}
	err[elen] = '\0';
	int exec_errno = 0;
	ssize_t er = read(execpipe[0], &exec_errno, sizeof exec_errno);
	close(errpipe[0]);
	close(execpipe[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
	int rc = 0;
	if (er == (ssize_t)sizeof exec_errno) {
		rc = exec_errno == ENOENT ? failed("E_UNSUPPORTED: %s", BINDFS_INSTALL_HINT) : failed("E_UNSUPPORTED: cannot run bindfs: %s", errname(exec_errno));
	} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		while (elen > 0 && (err[elen - 1] == '\n' || err[elen - 1] == ' ')) err[--elen] = '\0';
		char code[32];
		snprintf(code, sizeof code, "exit %d", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
		rc = failed("E_KERNEL: bindfs %s %s %s failed: %s", shown.s, src, target, elen > 0 ? err : code);
	}
	free(shown.s);
	return rc;
}

/* Options of mount -t usernsd (as mountHelperOptions in agent/cli/mounthelper.ts); 0, or the exit status. */
struct view_opts { const char *context, *mode, *socket; int read_only; /* -1: not said */ };

static int parse_options(char *text, struct view_opts *o) {
	static const char *const generic[] = { "defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users", "owner", "noowner", "group", "comment", NULL };
	for (char *save = NULL, *opt = strtok_r(text, ",", &save); opt; opt = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(opt, '=');
		const char *value = eq && eq[1] ? eq + 1 : NULL;
		size_t klen = eq ? (size_t)(eq - opt) : strlen(opt);
		if (klen == 7 && !strncmp(opt, "context", 7) && value) o->context = value;
		else if (klen == 4 && !strncmp(opt, "mode", 4) && value && (!strcmp(value, "identity") || !strcmp(value, "foreign"))) o->mode = value;
		else if (klen == 6 && !strncmp(opt, "socket", 6) && value) o->socket = value;
		else if (!eq && (!strcmp(opt, "ro") || !strcmp(opt, "rw"))) o->read_only = !strcmp(opt, "ro");
		else if (!strncmp(opt, "x-", 2)) continue;
		else {
			int known = 0;
			for (const char *const *g = generic; *g; g++) if (strlen(*g) == klen && !strncmp(opt, *g, klen)) known = 1;
			if (known) continue;
			fprintf(stderr, "mount.usernsd: unknown option \"%s\": mount -t usernsd takes context=LABEL, mode=identity|foreign, ro, rw, socket=PATH\n", opt);
			return EXIT_USAGE;
		}
	}
	return 0;
}

int main(int argc, char **argv) {
	const char *pos[2];
	int npos = 0;
	struct buf options = { calloc(1, 64), 0, 64 };
	if (!options.s) return failed("E_INTERNAL: out of memory");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-o")) { if (bprintf(&options, "%s%s", options.len ? "," : "", i + 1 < argc ? argv[++i] : "")) return failed("E_INTERNAL: out of memory"); }
		else if (!strcmp(a, "-t") || !strcmp(a, "-N")) i++;
		else if (a[0] == '-' && a[1] && strspn(a + 1, "sfnvr") == strlen(a + 1)) continue;
		else if (npos == 2) return usage("mount.usernsd takes SRC and DST");
		else pos[npos++] = a;
	}
	if (npos != 2) return usage("mount.usernsd takes SRC and DST");
	struct view_opts o = { NULL, NULL, NULL, -1 };
	int rc = parse_options(options.s, &o);
	if (rc) return rc;
	if (geteuid() != 0) return failed("E_PERMISSION: views are mounted by root");
	const char *env = getenv("USERNSD_SOCKET");
	const char *socket_path = o.socket ? o.socket : env && *env ? env : DEFAULT_SOCKET;
	char *src = absolute(pos[0]), *target = absolute(pos[1]), *fdsock = fd_socket_path(socket_path);
	if (!src || !target || !fdsock) return failed("E_INTERNAL: out of memory");
	if ((rc = check_target(target))) return rc;

	struct buf req = { malloc(512), 0, 512 };
	if (!req.s || bprintf(&req, "{\"type\":\"request\",\"data\":{\"id\":1,\"method\":\"view\",\"params\":{\"path\":") || bjson(&req, src)
	    || bprintf(&req, ",\"purpose\":\"mount\",\"target\":") || bjson(&req, target)
	    || (o.context && (bprintf(&req, ",\"context\":") || bjson(&req, o.context)))
	    || (o.mode && bprintf(&req, ",\"mode\":\"%s\"", o.mode))
	    || (o.read_only >= 0 && bprintf(&req, ",\"readOnly\":%s", o.read_only ? "true" : "false"))
	    || bprintf(&req, "}}}\f")) return failed("E_INTERNAL: out of memory");

	static char reply[MAX_REPLY];
	int fds[MAX_FDS], nfds;
	ssize_t len = agent_call(fdsock, req.s, req.len, reply, sizeof reply, fds, MAX_FDS, &nfds);
	if (len < 0) {
		if (errno == ETIMEDOUT) return failed("the agent at %s did not answer view within %d ms", fdsock, REQUEST_TIMEOUT_S * 1000);
		if (errno == ECONNRESET) return failed("the agent at %s closed the connection", fdsock);
		return failed("cannot reach the agent at %s: %s", fdsock, errname(errno));
	}
	struct parser ps = { reply, reply + len, 0 };
	struct jv *root = jvalue(&ps);
	ws(&ps);
	const struct jv *data = jget(root, "data"), *type = jget(root, "type");
	unsigned long long id;
	if (!root || ps.p != ps.end || !type || type->kind != J_STR || strcmp(type->str, "reply") || jid(jget(data, "id"), 1, &id) || id != 1) {
		rc = failed("the agent sent an unreadable frame");
		goto done;
	}
	const struct jv *err = jget(data, "error");
	if (err) {
		const char *code = jline(jget(err, "code")), *msg = jline(jget(err, "message"));
		rc = failed("%s: %s", code ? code : "E_INTERNAL", msg ? msg : "(no message)");
		goto done;
	}
	const struct jv *result = jget(data, "result");
	const char *mechanism = jline(jget(result, "mechanism"));
	if (mechanism && !strcmp(mechanism, "idmapped")) {
		if (nfds != 1) { rc = failed("E_INTERNAL: the agent sent %d descriptors for one idmapped view", nfds); goto done; }
		if (syscall(SYS_move_mount, fds[0], "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) != 0) rc = failed("move_mount: %s (fd %d -> %s)", errname(errno), fds[0], target);
	} else if (mechanism && !strcmp(mechanism, "bindfs")) {
		const struct jv *opts = jget(result, "bindfs"), *vsrc = jget(result, "src");
		if (!opts || opts->kind != J_ARR || !vsrc || vsrc->kind != J_STR) { rc = failed("E_INTERNAL: the agent's bindfs view lacks its options or source"); goto done; }
		rc = run_bindfs(opts, vsrc->str, target);
	} else rc = failed("E_INTERNAL: the agent answered with an unknown mechanism");
done:
	for (int i = 0; i < nfds; i++) close(fds[i]);
	jfree(root);
	return rc;
}

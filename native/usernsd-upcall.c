/*
 * usernsd-upcall: the request-key handler for "user" keys "userns:LABEL", in C, so that an upcall
 * costs what nfsidmap's does rather than a Node start. The same contract as `usernsctl upcall`
 * (usernsd-protocol(7), UPCALL): one resolve asked with the requester's identity over the agent's
 * socket, the key instantiated with the same payload and expiry, or rejected for 10 seconds.
 * libc only; keyctl through syscall(2). See usernsctl(1), upcall.
 *
 *   usernsd-upcall [-t SECONDS] [-s|--socket PATH] [--log FILE] KEY DESCRIPTION
 *   usernsd-upcall --parse-reply       (tests: a reply frame on stdin, the payload on stdout)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

#define KEY_PREFIX "userns:"
#define RING_PREFIX "usernsd:"
#define DEFAULT_SOCKET "/run/usernsd/usernsd.sock"
#define DEFAULT_TIMEOUT_S 600
#define NEGATIVE_TIMEOUT_S 10
#define RING_SLACK_S 5
#define MAX_REPLY (1024 * 1024)
#define MAX_EXTENTS 340
#define EKEYREJECTED_ 129

#define KEYCTL_DESCRIBE 6
#define KEYCTL_INSTANTIATE 12
#define KEYCTL_SET_TIMEOUT 15
#define KEYCTL_REJECT 19
#define KEYCTL_INVALIDATE 21
#define KEYCTL_GET_PERSISTENT 22
#define KEY_SPEC_PROCESS_KEYRING (-2)

static long keyctl(int op, unsigned long a, unsigned long b, unsigned long c, unsigned long d) {
	return syscall(SYS_keyctl, op, a, b, c, d);
}

static int extents(struct buf *b, const char *name, const struct jv *arr) {
	if (!arr || arr->kind != J_ARR) return -1;
	if (bprintf(b, "%s=", name)) return -1;
	int n = 0;
	for (const struct jv *e = arr->child; e; e = e->next) {
		unsigned long long in, out, count;
		if (++n > MAX_EXTENTS || jid(jget(e, "inside"), 4294967295.0, &in) || jid(jget(e, "outside"), 4294967295.0, &out) || jid(jget(e, "count"), 4294967295.0, &count)) return -1;
		if (bprintf(b, "%s%llu %llu %llu", n > 1 ? ", " : "", in, out, count)) return -1;
	}
	return bprintf(b, "\n");
}

/*
 * One reply frame (without its form feed) -> the key's payload, or NULL with *why set: the agent's
 * error (code: message), or what is wrong with the frame. The same lines, in the same order, as
 * formatPayload in agent/upcall.ts.
 */
static char *payload_of(const char *frame, size_t len, char *why, size_t whylen, int *agent_error) {
	struct parser ps = { frame, frame + len, 0 };
	struct jv *root = jvalue(&ps);
	char *out = NULL;
	*agent_error = 0;
	ws(&ps);
	if (!root || ps.p != ps.end) { snprintf(why, whylen, "the agent sent an unreadable frame"); goto done; }
	const struct jv *type = jget(root, "type"), *data = jget(root, "data");
	unsigned long long id;
	if (!type || type->kind != J_STR || strcmp(type->str, "reply") || jid(jget(data, "id"), 1, &id) || id != 1) {
		snprintf(why, whylen, "the agent answered with something other than the reply to request 1");
		goto done;
	}
	const struct jv *err = jget(data, "error");
	if (err) {
		const char *code = jline(jget(err, "code")), *msg = jline(jget(err, "message"));
		snprintf(why, whylen, "%s: %s", code ? code : "E_INTERNAL", msg ? msg : "(no message)");
		*agent_error = 1;
		goto done;
	}
	const struct jv *r = jget(data, "result");
	const struct jv *owner = jget(r, "owner");
	const char *path = jline(jget(r, "path")), *label = jline(jget(r, "label")), *parent = jline(jget(r, "parent")), *setgroups = jline(jget(r, "setgroups"));
	unsigned long long uid, gid, ino;
	if (!path || !label || !parent || !setgroups || jid(jget(owner, "uid"), 4294967295.0, &uid) || jid(jget(owner, "gid"), 4294967295.0, &gid) || jid(jget(r, "ino"), 9007199254740991.0, &ino)) {
		snprintf(why, whylen, "the agent's reply lacks a field of the payload");
		goto done;
	}
	struct buf b = { malloc(512), 0, 512 };
	if (!b.s || bprintf(&b, "path=%s\nlabel=%s\nparent=%s\nowner=%llu:%llu\nsetgroups=%s\nino=%llu\n", path, label, parent, uid, gid, setgroups, ino)
	    || extents(&b, "uid_map", jget(r, "uidMap")) || extents(&b, "gid_map", jget(r, "gidMap"))) {
		free(b.s);
		snprintf(why, whylen, "the agent's reply has a malformed map");
		goto done;
	}
	out = b.s;
done:
	jfree(root);
	return out;
}

/* ---- the upcall ---- */

static int log_fd = -1;

static void log_failure(const char *fmt, ...) {
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "usernsctl upcall: %s\n", line);
	if (log_fd >= 0) {
		char stamp[64];
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
		dprintf(log_fd, "%s.%03ldZ usernsctl upcall: %s\n", stamp, ts.tv_nsec / 1000000, line);
	}
	openlog("usernsctl", LOG_PID, LOG_DAEMON);
	syslog(LOG_WARNING, "usernsctl upcall: %s", line);
	closelog();
}

static long key_serial;
static long ring_serial;
static const char *key_description;

/*
 * The description as a log may carry it: the kernel lets a requester put any byte in it, and a
 * newline there would forge a log line. Control bytes, quotes and backslashes become \xHH, and the
 * text is cut at 200 bytes (what a label can be, and then some).
 */
static const char *shown_description(void) {
	static char out[4 * 200 + 4];
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)(key_description ? key_description : ""); *p && o + 5 < sizeof out; p++) {
		if (p - (const unsigned char *)key_description >= 200) { memcpy(out + o, "...", 3); o += 3; break; }
		if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\') o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", *p);
		else out[o++] = (char)*p;
	}
	out[o] = '\0';
	return out;
}

static int fail(int err, const char *fmt, ...) {
	char why[1600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	/* Rejected first: the requester is waiting; the log can come after. */
	int rejected = keyctl(KEYCTL_REJECT, (unsigned long)key_serial, NEGATIVE_TIMEOUT_S, (unsigned long)err, 0) == 0;
	int reject_errno = errno;
	if (ring_serial > 0) keyctl(KEYCTL_INVALIDATE, (unsigned long)ring_serial, 0, 0, 0);
	log_failure("key %ld \"%s\": rejected: %s", key_serial, shown_description(), why);
	if (!rejected) log_failure("key %ld: cannot reject it: %s", key_serial, strerror(reject_errno));
	return 1;
}

static int valid_label(const char *s) {
	size_t n = strlen(s);
	if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-') return 0;
	for (size_t i = 0; i < n; i++) if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", s[i])) return 0;
	return 1;
}

/* One resolve asked of the agent; the reply frame's length, or -1 with errno on failure. */
static ssize_t ask(const char *socket_path, const char *label, char *reply, size_t cap) {
	char req[256];
	int n = snprintf(req, sizeof req, "{\"type\":\"request\",\"data\":{\"id\":1,\"method\":\"resolve\",\"params\":{\"label\":\"%s\",\"via\":\"upcall\"}}}\f", label);
	return agent_call(socket_path, req, (size_t)n, reply, cap, NULL, 0, NULL);
}

static int usage(const char *msg) {
	/* The key is left alone: when the handler exits without an answer, the kernel negates it. */
	fprintf(stderr, "usernsd-upcall: %s\nTry 'usernsctl --help'.\n", msg);
	return 2;
}

static int parse_reply_mode(void) {
	static char in[MAX_REPLY];
	size_t len = fread(in, 1, sizeof in, stdin);
	char *ff = memchr(in, '\f', len);
	char why[1600];
	int agent_error;
	char *p = payload_of(in, ff ? (size_t)(ff - in) : len, why, sizeof why, &agent_error);
	if (!p) { printf("%s: %s\n", agent_error ? "agent-error" : "refused", why); return 1; }
	fputs(p, stdout);
	free(p);
	return 0;
}

int main(int argc, char **argv) {
	const char *socket_path = getenv("USERNSD_SOCKET") && *getenv("USERNSD_SOCKET") ? getenv("USERNSD_SOCKET") : DEFAULT_SOCKET;
	const char *log_file = NULL;
	long timeout_s = DEFAULT_TIMEOUT_S;
	const char *pos[2];
	int npos = 0;
	if (argc == 2 && !strcmp(argv[1], "--parse-reply")) return parse_reply_mode();
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = NULL;
		if ((!strcmp(a, "-t") || !strcmp(a, "--timeout") || !strcmp(a, "-s") || !strcmp(a, "--socket") || !strcmp(a, "--log"))) {
			if (++i >= argc) return usage("an option lacks its value");
			val = argv[i];
		} else if (!strncmp(a, "--timeout=", 10)) { val = a + 10; a = "-t"; }
		else if (!strncmp(a, "--socket=", 9)) { val = a + 9; a = "-s"; }
		else if (!strncmp(a, "--log=", 6)) { val = a + 6; a = "--log"; }
		else if (a[0] == '-' && a[1] != '\0') return usage("unknown option");
		else { if (npos == 2) return usage("upcall takes KEY DESCRIPTION (request-key's %k %d)"); pos[npos++] = a; continue; }
		if (!strcmp(a, "-t") || !strcmp(a, "--timeout")) {
			char *end;
			errno = 0;
			timeout_s = strtol(val, &end, 10);
			if (*val == '\0' || *end || errno || timeout_s < 0 || timeout_s > UINT32_MAX) return usage("-t takes whole seconds");
		} else if (!strcmp(a, "-s") || !strcmp(a, "--socket")) socket_path = val;
		else log_file = val;
	}
	if (npos != 2) return usage("upcall takes KEY DESCRIPTION (request-key's %k %d)");
	char *end;
	errno = 0;
	key_serial = strtol(pos[0], &end, 10);
	if (*pos[0] == '\0' || *end || errno || key_serial <= 0 || key_serial > INT32_MAX) return usage("KEY must be a key serial number");
	key_description = pos[1];
	if (log_file) log_fd = open(log_file, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640); /* while still root */

	if (strncmp(key_description, KEY_PREFIX, strlen(KEY_PREFIX))) return fail(EKEYREJECTED_, "the description must be %sLABEL", KEY_PREFIX);
	const char *label = key_description + strlen(KEY_PREFIX);
	if (!valid_label(label)) return fail(EKEYREJECTED_, "invalid label: a label is 1-64 of letters, digits, \".\", \"_\" and \"-\", not starting with \".\" or \"-\"");

	/* The key being built belongs to its requester: ask as that uid and gid (and the user's groups). */
	char desc[4096];
	long n = keyctl(KEYCTL_DESCRIBE, (unsigned long)key_serial, (unsigned long)desc, sizeof desc, 0);
	if (n <= 0 || (size_t)n > sizeof desc) return fail(EKEYREJECTED_, "internal error: keyctl describe: %s", strerror(errno));
	desc[sizeof desc - 1] = '\0';
	unsigned long uid, gid;
	if (sscanf(desc, "%*[^;];%lu;%lu;", &uid, &gid) != 2) return fail(EKEYREJECTED_, "internal error: cannot read the key's owner");

	/* While root: the ring where root finds this answer again to invalidate it (agent/kernel/keys.ts). */
	if (timeout_s > 0) {
		long persistent = keyctl(KEYCTL_GET_PERSISTENT, 0, (unsigned long)KEY_SPEC_PROCESS_KEYRING, 0, 0);
		if (persistent > 0) {
			char name[64];
			snprintf(name, sizeof name, "%s%ld", RING_PREFIX, key_serial);
			ring_serial = syscall(SYS_add_key, "keyring", name, NULL, 0, (int32_t)persistent);
			if (ring_serial > 0) keyctl(KEYCTL_SET_TIMEOUT, (unsigned long)ring_serial, (unsigned long)(timeout_s + RING_SLACK_S), 0, 0);
			else ring_serial = 0;
		}
	}
	if (uid != 0) {
		struct passwd *pw = getpwuid((uid_t)uid);
		gid_t g = (gid_t)gid;
		if (!(pw && initgroups(pw->pw_name, g) == 0) && setgroups(1, &g) != 0) return fail(EKEYREJECTED_, "internal error: setgroups: %s", strerror(errno));
		if (setresgid(g, g, g) != 0 || setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0) return fail(EKEYREJECTED_, "internal error: cannot become uid %lu: %s", uid, strerror(errno));
	}

	static char reply[MAX_REPLY];
	ssize_t len = ask(socket_path, label, reply, sizeof reply);
	if (len < 0) {
		int e = errno;
		if (e == ETIMEDOUT) return fail(ECONNREFUSED, "the agent at %s did not answer resolve within %d s (is usernsd running?)", socket_path, REQUEST_TIMEOUT_S);
		const char *name = strerrorname_np(e); /* ENOENT, ECONNREFUSED…: as usernsctl upcall says it */
		return fail(ECONNREFUSED, "cannot reach the agent at %s: %s (is usernsd running?)", socket_path, name ? name : strerror(e));
	}
	char why[1600];
	int agent_error;
	char *payload = payload_of(reply, (size_t)len, why, sizeof why, &agent_error);
	if (!payload) return agent_error ? fail(EKEYREJECTED_, "uid %lu: %s", uid, why) : fail(ECONNREFUSED, "%s (is usernsd running?)", why);
	/* First: instantiating gives up the authority that allows setting the expiry. */
	if (keyctl(KEYCTL_SET_TIMEOUT, (unsigned long)key_serial, (unsigned long)timeout_s, 0, 0) != 0) { free(payload); return fail(EKEYREJECTED_, "internal error: keyctl set_timeout: %s", strerror(errno)); }
	size_t plen = strlen(payload);
	if (keyctl(KEYCTL_INSTANTIATE, (unsigned long)key_serial, (unsigned long)payload, plen, (unsigned long)ring_serial) != 0
	    && (ring_serial == 0 || keyctl(KEYCTL_INSTANTIATE, (unsigned long)key_serial, (unsigned long)payload, plen, 0) != 0)) {
		free(payload);
		return fail(EKEYREJECTED_, "internal error: keyctl instantiate: %s", strerror(errno));
	}
	free(payload);
	if (log_fd >= 0) close(log_fd);
	return 0;
}

/* The protocol client of proto.h: one call, and the JSON reader. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "proto.h"

void jfree(struct jv *v) {
	while (v) {
		struct jv *n = v->next;
		jfree(v->child);
		free(v->str);
		free(v->key);
		free(v);
		v = n;
	}
}

void ws(struct parser *ps) {
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static int hex4(const char *s, unsigned *out) {
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		char c = s[i];
		v <<= 4;
		if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
		else return -1;
	}
	*out = v;
	return 0;
}

/* A string, decoded to UTF-8 (escapes and surrogate pairs); NULL on any malformation. */
static char *jstring(struct parser *ps) {
	if (ps->p >= ps->end || *ps->p != '"') return NULL;
	ps->p++;
	size_t cap = 32, len = 0;
	char *out = malloc(cap);
	if (!out) return NULL;
	while (ps->p < ps->end && *ps->p != '"') {
		unsigned cp;
		unsigned char c = (unsigned char)*ps->p++;
		if (c < 0x20) goto bad;
		if (c != '\\') {
			cp = c; /* raw bytes pass through (UTF-8 stays UTF-8) */
			if (len + 1 >= cap) { char *n = realloc(out, cap *= 2); if (!n) goto bad; out = n; }
			out[len++] = (char)c;
			continue;
		}
		if (ps->p >= ps->end) goto bad;
		char e = *ps->p++;
		switch (e) {
		case '"': cp = '"'; break;
		case '\\': cp = '\\'; break;
		case '/': cp = '/'; break;
		case 'b': cp = '\b'; break;
		case 'f': cp = '\f'; break;
		case 'n': cp = '\n'; break;
		case 'r': cp = '\r'; break;
		case 't': cp = '\t'; break;
		case 'u':
			if (ps->end - ps->p < 4 || hex4(ps->p, &cp)) goto bad;
			ps->p += 4;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				unsigned lo;
				if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' || hex4(ps->p + 2, &lo) || lo < 0xdc00 || lo > 0xdfff) goto bad;
				ps->p += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			} else if (cp >= 0xdc00 && cp <= 0xdfff) goto bad;
			break;
		default: goto bad;
		}
		if (len + 5 >= cap) { char *n = realloc(out, cap *= 2); if (!n) goto bad; out = n; }
		if (cp < 0x80) out[len++] = (char)cp;
		else if (cp < 0x800) { out[len++] = (char)(0xc0 | (cp >> 6)); out[len++] = (char)(0x80 | (cp & 0x3f)); }
		else if (cp < 0x10000) { out[len++] = (char)(0xe0 | (cp >> 12)); out[len++] = (char)(0x80 | ((cp >> 6) & 0x3f)); out[len++] = (char)(0x80 | (cp & 0x3f)); }
		else { out[len++] = (char)(0xf0 | (cp >> 18)); out[len++] = (char)(0x80 | ((cp >> 12) & 0x3f)); out[len++] = (char)(0x80 | ((cp >> 6) & 0x3f)); out[len++] = (char)(0x80 | (cp & 0x3f)); }
	}
	if (ps->p >= ps->end) goto bad;
	ps->p++;
	out[len] = '\0';
	if (strlen(out) != len) goto bad; /* an escaped NUL: never in a reply of ours */
	return out;
bad:
	free(out);
	return NULL;
}

struct jv *jvalue(struct parser *ps);

static struct jv *jnew(enum kind k) {
	struct jv *v = calloc(1, sizeof *v);
	if (v) v->kind = k;
	return v;
}

struct jv *jvalue(struct parser *ps) {
	ws(ps);
	if (ps->p >= ps->end || ++ps->depth > MAX_DEPTH) return NULL;
	struct jv *v = NULL;
	char c = *ps->p;
	if (c == '{' || c == '[') {
		int obj = c == '{';
		v = jnew(obj ? J_OBJ : J_ARR);
		if (!v) return NULL;
		ps->p++;
		ws(ps);
		struct jv **tail = &v->child;
		if (ps->p < ps->end && *ps->p == (obj ? '}' : ']')) { ps->p++; ps->depth--; return v; }
		for (;;) {
			char *key = NULL;
			if (obj) {
				ws(ps);
				if (!(key = jstring(ps))) goto bad;
				ws(ps);
				if (ps->p >= ps->end || *ps->p++ != ':') { free(key); goto bad; }
			}
			struct jv *m = jvalue(ps);
			if (!m) { free(key); goto bad; }
			m->key = key;
			*tail = m;
			tail = &m->next;
			ws(ps);
			if (ps->p >= ps->end) goto bad;
			if (*ps->p == ',') { ps->p++; continue; }
			if (*ps->p++ == (obj ? '}' : ']')) break;
			goto bad;
		}
	} else if (c == '"') {
		v = jnew(J_STR);
		if (!v || !(v->str = jstring(ps))) goto bad;
	} else if (c == 't' && ps->end - ps->p >= 4 && !memcmp(ps->p, "true", 4)) {
		v = jnew(J_BOOL); if (!v) return NULL; v->num = 1; ps->p += 4;
	} else if (c == 'f' && ps->end - ps->p >= 5 && !memcmp(ps->p, "false", 5)) {
		v = jnew(J_BOOL); if (!v) return NULL; ps->p += 5;
	} else if (c == 'n' && ps->end - ps->p >= 4 && !memcmp(ps->p, "null", 4)) {
		v = jnew(J_NULL); if (!v) return NULL; ps->p += 4;
	} else if (c == '-' || (c >= '0' && c <= '9')) {
		char buf[64];
		size_t n = 0;
		while (ps->p < ps->end && n < sizeof buf - 1 && strchr("+-0123456789.eE", *ps->p)) buf[n++] = *ps->p++;
		buf[n] = '\0';
		char *endp;
		errno = 0;
		double d = strtod(buf, &endp);
		if (n == 0 || *endp != '\0' || errno) return NULL;
		v = jnew(J_NUM); if (!v) return NULL; v->num = d;
	} else return NULL;
	ps->depth--;
	return v;
bad:
	jfree(v);
	return NULL;
}

const struct jv *jget(const struct jv *obj, const char *key) {
	if (!obj || obj->kind != J_OBJ) return NULL;
	for (const struct jv *m = obj->child; m; m = m->next) if (!strcmp(m->key, key)) return m;
	return NULL;
}

/* A whole number in [0, max], as JSON holds it. */
int jid(const struct jv *v, double max, unsigned long long *out) {
	if (!v || v->kind != J_NUM || v->num < 0 || v->num > max || v->num != (double)(unsigned long long)v->num) return -1;
	*out = (unsigned long long)v->num;
	return 0;
}

/* A string for one payload line: no control character may break the line format. */
const char *jline(const struct jv *v) {
	if (!v || v->kind != J_STR) return NULL;
	for (const unsigned char *s = (const unsigned char *)v->str; *s; s++) if (*s < 0x20 || *s == 0x7f) return NULL;
	return v->str;
}


int bprintf(struct buf *b, const char *fmt, ...) {
	va_list ap;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) return -1;
		if ((size_t)n < b->cap - b->len) { b->len += (size_t)n; return 0; }
		size_t cap = b->cap * 2 + (size_t)n;
		char *s = realloc(b->s, cap);
		if (!s) return -1;
		b->s = s;
		b->cap = cap;
	}
}

int bjson(struct buf *b, const char *s) {
	if (bprintf(b, "\"")) return -1;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\') { if (bprintf(b, "\\%c", *p)) return -1; }
		else if (*p < 0x20 || *p == 0x7f) { if (bprintf(b, "\\u%04x", *p)) return -1; }
		else if (bprintf(b, "%c", *p)) return -1;
	}
	return bprintf(b, "\"");
}

ssize_t agent_call(const char *path, const char *req, size_t reqlen, char *reply, size_t cap, int *fds, int max_fds, int *nfds) {
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (nfds) *nfds = 0;
	if (strlen(path) >= sizeof addr.sun_path) { errno = ENAMETOOLONG; return -1; }
	strcpy(addr.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) return -1;
	struct timeval tv = { REQUEST_TIMEOUT_S, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	ssize_t got = -1;
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) goto out;
	for (size_t sent = 0; sent < reqlen;) {
		ssize_t w = send(fd, req + sent, reqlen - sent, MSG_NOSIGNAL);
		if (w < 0) { if (errno == EINTR) continue; goto out; }
		sent += (size_t)w;
	}
	size_t len = 0;
	for (;;) {
		if (len == cap) { errno = EMSGSIZE; goto out; }
		union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int) * 8)]; } ctl;
		struct iovec iov = { reply + len, cap - len };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl.b };
		ssize_t r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
		if (r < 0) { if (errno == EINTR) continue; if (errno == EAGAIN) errno = ETIMEDOUT; goto out; }
		for (struct cmsghdr *m = CMSG_FIRSTHDR(&msg); m; m = CMSG_NXTHDR(&msg, m)) {
			if (m->cmsg_level != SOL_SOCKET || m->cmsg_type != SCM_RIGHTS) continue;
			size_t n = (m->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			int passed[8];
			memcpy(passed, CMSG_DATA(m), n * sizeof(int));
			for (size_t i = 0; i < n; i++) {
				if (fds && nfds && *nfds < max_fds) fds[(*nfds)++] = passed[i];
				else close(passed[i]);
			}
		}
		if (r == 0) { errno = ECONNRESET; goto out; }
		char *ff = memchr(reply + len, '\f', (size_t)r);
		len += (size_t)r;
		if (ff) { got = ff - reply; break; }
	}
out:;
	int e = errno;
	close(fd);
	errno = e;
	return got;
}

/*
 * The client side of the agent's protocol for the C programs that speak it (usernsd-upcall,
 * mount.usernsd): one call on a socket, and a small JSON reader for the reply frame — every
 * input bounded and checked, nothing more.
 */
#ifndef USERNSD_PROTO_H
#define USERNSD_PROTO_H
#include <stddef.h>
#include <sys/types.h>

/* How long a call may take to send and to answer. */
#define REQUEST_TIMEOUT_S 30

/*
 * Connect to the socket at `path`, send `req` (a whole frame, form feed included), read one reply
 * frame into `reply` (up to its form feed) and, when `fds` is given, up to `max_fds` descriptors
 * that came with it (close-on-exec; any beyond are closed). The frame's length, or -1 with errno
 * (ETIMEDOUT for a silent agent, ECONNRESET for one that closed without a frame).
 */
ssize_t agent_call(const char *path, const char *req, size_t len, char *reply, size_t cap, int *fds, int max_fds, int *nfds);

#define MAX_DEPTH 32

enum kind { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };
struct jv {
	enum kind kind;
	double num;
	char *str;          /* J_STR: decoded, NUL-terminated; J_OBJ member: its key */
	struct jv *child;   /* J_ARR, J_OBJ: first element or member */
	struct jv *next;    /* the next element or member */
	char *key;
};

struct parser { const char *p, *end; int depth; };

void jfree(struct jv *v);
void ws(struct parser *ps);
/* One value at ps->p; NULL on any malformation (the caller checks nothing is left after it). */
struct jv *jvalue(struct parser *ps);
const struct jv *jget(const struct jv *obj, const char *key);
/* A whole number in [0, max], as JSON holds it. */
int jid(const struct jv *v, double max, unsigned long long *out);
/* A string for one line of output: no control character. */
const char *jline(const struct jv *v);

/* A growing string. */
struct buf { char *s; size_t len, cap; };
int bprintf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A string as a JSON string literal, quotes included (control characters escaped). */
int bjson(struct buf *b, const char *s);

#endif

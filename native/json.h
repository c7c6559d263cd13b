/*
 * A small JSON reader for the agent's reply frames, shared by the C programs that speak the
 * protocol (usernsd-upcall, mount.usernsd): every input bounded and checked, nothing more.
 */
#ifndef USERNSD_JSON_H
#define USERNSD_JSON_H
#include <stddef.h>

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

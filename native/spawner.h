/*
 * usernsd-spawner's two halves share this: the spawner (usernsd-spawner.c: its requests, jobs and
 * loop) and what runs in the processes it makes (spawner-proc.c: the holder, the owner's clone,
 * the workers). See usernsd-spawner.c for the design and the protocol.
 */
#ifndef USERNSD_SPAWNER_H
#define USERNSD_SPAWNER_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MAX_MAP 8192          /* the kernel takes a map in one write below a page; ours may be larger */
#define MAX_ENC 12288         /* a map read back, encoded: 340 extents of up to 33 bytes "I:O:C," */
#define STACK_SIZE (64 * 1024)

enum step {
	S_NONE, S_FORK, S_OPEN_PARENT, S_ENTER_PARENT, S_OWNER, S_CLONE, S_SETGROUPS, S_UIDMAP, S_GIDMAP,
	S_OPEN_PIN, S_ENTER_PIN, S_READ_MAPS, S_TIMEOUT, S_WORKER, S_PIN, S_UNPIN,
	S_TREE_FDS, S_ENTER_MNT, S_OPEN_TREE, S_TREE_CHANGED, S_IDMAP, S_HAND_OVER,
};

/* The agent's control socket (SOCK_SEQPACKET), fd 3 of the spawner: descriptors both ways. */
#define AGENT_FD 3

/* A view's tree as asked: copied in the caller's mount namespace, checked, idmapped. */
struct tree { const char *path; unsigned long long dev, ino; int read_only, mnt_fd, userns_fd; };

/* What a worker tells the spawner: an errno and the step (0 and the holder's pid on success),
 * then `len` bytes of text (the maps, for "maps"). */
struct report { int32_t err, step, pid, len; };

/* A creation as asked: the owner's ids as the parent sees them, setgroups, the kernel's map text, the parent's pin or NULL. */
struct create { uid_t uid; gid_t gid; const char *setgroups; char uid_map[MAX_MAP], gid_map[MAX_MAP]; const char *parent; };

/* Close every descriptor but `a`, `b` and `c` (-1 for none). */
void close_others(int a, int b, int c);
/* A stack for a clone(2) child, STACK_SIZE bytes; NULL on failure. */
void *new_stack(void);
/* H, cloned into a new user namespace owned by the current effective ids; -1 with errno on failure. */
pid_t clone_holder(int hold_r, void *stack);
/* setgroups before gid_map, each map in one write; S_NONE, or the failed step with errno set. */
enum step write_maps(pid_t pid, const char *setgroups, const char *uid_map, const char *gid_map);
/* W for a nested context: enter the parent, have O clone H there, write its maps, report on `rep`. */
_Noreturn void nested_worker(const struct create *q, int rep, int hold_r);
/* A map file of /proc (the kernel's text, outside ids as the reader's namespace sees them) as
 * "INSIDE:OUTSIDE:COUNT,...", or "-" for none; 0 when it cannot be read or does not fit. */
int encode_map(const char *path, char *out, size_t cap);
/* W for "maps": enter the pinned namespace and report its maps on `rep`. */
_Noreturn void maps_worker(const char *pin, int rep);
/* W for "tree": enter the caller's mount namespace, copy and idmap the tree, hand it back on `rep`. */
_Noreturn void tree_worker(const struct tree *t, int rep);

#endif

/*
 * The reads of a start's context files, on a thread of this library's own (agent/kernel/reads.ts
 * loads it with koffi): while the agent's thread parses file i, this one has already opened, looked
 * at and read the files after it.
 *
 * Each file is read the way config/ini.ts readConfigFile reads it: opened without following a
 * symbolic link (O_NOFOLLOW, and O_NONBLOCK so a FIFO planted there cannot stall the thread), looked
 * at on the opened descriptor (fstat), and, when it is a regular file no larger than the limit, read
 * with one read(2) into a buffer one byte larger than its size (a file that grew fills it: the agent
 * refuses it). The agent judges the stamp and the bytes itself (statProblem, textOf); this thread
 * only reads. It never waits for the agent, and the agent never waits for it: a file not read yet
 * is read by the agent (usernsd_reads_take says so), and the thread skips the files the agent has
 * passed. It stays at most WINDOW files ahead, so what waits here is bounded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* What one stamp is, in order, as native/stamps.c gives it: ino, ctimeMs, mtimeMs, size, dev, mode, uid, gid. */
#define STAMP_FIELDS 8
/* Files read ahead of the agent at most (at about 100 bytes a context file, well under a megabyte). */
#define WINDOW 4096

struct usernsd_reads;
struct usernsd_reads *usernsd_reads_start(int dirfd, const char *names, uint32_t count, uint32_t limit);
int32_t usernsd_reads_take(struct usernsd_reads *r, uint32_t i, double *stamp, int32_t *err, uint8_t *buf, uint32_t cap);
void usernsd_reads_end(struct usernsd_reads *r);
uint32_t usernsd_reads_ahead(struct usernsd_reads *r);

/* One file's read: `state` is 0 until the thread has written the rest, then 1 (read) or 2 (skipped). */
struct file {
	_Atomic int state;
	int err;          /* errno of the open, fstat or read; 0 */
	int64_t n;        /* bytes read; -1 when not read (an error, not a regular file, too large); -3 when the open failed */
	double stamp[STAMP_FIELDS];
	uint8_t *data;
};

struct usernsd_reads {
	int dirfd;
	uint32_t count, limit;
	const char **names;
	char *copy;       /* the names, one after another */
	struct file *files;
	_Atomic uint32_t asked; /* the agent's place: files before it are not read */
	_Atomic uint32_t at;    /* the thread's place: files before it are read or passed */
	_Atomic int stop;
	_Atomic int waiting;    /* the thread waits for the caller to move */
	pthread_mutex_t lock;   /* with `moved`: the thread waits here when WINDOW files ahead */
	pthread_cond_t moved;
	pthread_t thread;
	int started;
};

/* Node's msFromTimeSpec: sec * 1e3 + nsec / 1e6, in doubles, in that order (no fused multiply-add). */
static double ms(const struct timespec *t) {
	return (double)t->tv_sec * 1e3 + (double)t->tv_nsec / 1e6;
}

static void read_one(struct usernsd_reads *r, struct file *f, const char *name) {
	f->n = -1;
	int fd = openat(r->dirfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) { f->err = errno; f->n = -3; return; }
	struct stat st;
	if (fstat(fd, &st) != 0) { f->err = errno; close(fd); return; }
	double *o = f->stamp;
	o[0] = (double)st.st_ino;
	o[1] = ms(&st.st_ctim);
	o[2] = ms(&st.st_mtim);
	o[3] = (double)st.st_size;
	o[4] = (double)makedev(major(st.st_dev), minor(st.st_dev)); /* as libuv gives Node's Stats.dev */
	o[5] = (double)st.st_mode;
	o[6] = (double)st.st_uid;
	o[7] = (double)st.st_gid;
	/* What the agent refuses by the stamp alone is not read. */
	if (S_ISREG(st.st_mode) && st.st_size >= 0 && (uint64_t)st.st_size <= r->limit) {
		size_t want = (size_t)st.st_size + 1;
		uint8_t *data = malloc(want);
		if (!data) f->err = ENOMEM;
		else {
			ssize_t n;
			while ((n = read(fd, data, want)) < 0 && errno == EINTR) {}
			if (n < 0) { f->err = errno; free(data); }
			else { f->n = n; f->data = data; }
		}
	}
	close(fd);
}

static void *reader(void *arg) {
	struct usernsd_reads *r = arg;
	uint32_t i = 0;
	while (i < r->count && !atomic_load(&r->stop)) {
		uint32_t asked = atomic_load(&r->asked);
		if (i < asked) { i = asked; atomic_store(&r->at, i); continue; } /* passed: the agent has read those itself */
		if (i >= asked + WINDOW) {
			pthread_mutex_lock(&r->lock);
			atomic_store(&r->waiting, 1);
			while (!atomic_load(&r->stop) && i >= atomic_load(&r->asked) + WINDOW) pthread_cond_wait(&r->moved, &r->lock);
			atomic_store(&r->waiting, 0);
			pthread_mutex_unlock(&r->lock);
			continue;
		}
		read_one(r, &r->files[i], r->names[i]);
		atomic_store(&r->files[i].state, 1);
		atomic_store(&r->at, ++i);
	}
	return NULL;
}

/*
 * Read `count` files, named in `names` one after another (each ended by NUL, relative to `dirfd`,
 * which stays open until usernsd_reads_end), on a thread of their own. `limit`: the largest file read.
 * NULL when the thread cannot start (the agent reads every file).
 */
struct usernsd_reads *usernsd_reads_start(int dirfd, const char *names, uint32_t count, uint32_t limit) {
	struct usernsd_reads *r = calloc(1, sizeof *r);
	if (!r) return NULL;
	r->dirfd = dirfd;
	r->count = count;
	r->limit = limit;
	r->names = calloc(count ? count : 1, sizeof *r->names);
	r->files = calloc(count ? count : 1, sizeof *r->files);
	/* The names, copied: the caller's buffer need not outlive this call. */
	size_t len = 0;
	for (uint32_t i = 0; i < count; i++) len += strlen(names + len) + 1;
	r->copy = malloc(len ? len : 1);
	if (!r->names || !r->files || !r->copy) goto fail;
	memcpy(r->copy, names, len);
	for (size_t i = 0, at = 0; i < count; i++) {
		r->names[i] = r->copy + at;
		at += strlen(r->copy + at) + 1;
	}
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->moved, NULL);
	if (pthread_create(&r->thread, NULL, reader, r) != 0) {
		pthread_cond_destroy(&r->moved);
		pthread_mutex_destroy(&r->lock);
		goto fail;
	}
	r->started = 1;
	return r;
fail:
	free(r->copy);
	free(r->names);
	free(r->files);
	free(r);
	return NULL;
}

/*
 * File i, when the thread has read it: its bytes into `buf` (at most `cap`) and their count, its
 * stamp into `stamp` (8 doubles) and 0 into `err`. Otherwise -3 (the open failed: errno in `err`),
 * -1 (opened and looked at, stamp given: `err` says why fstat or read failed, or is 0 when the stamp
 * shows a file that is not read: not regular, or larger than the limit), or -2 when the thread has
 * not read it (not yet, or passed): the caller reads it itself. The caller's place moves to i.
 */
int32_t usernsd_reads_take(struct usernsd_reads *r, uint32_t i, double *stamp, int32_t *err, uint8_t *buf, uint32_t cap) {
	if (!r || i >= r->count) return -2;
	if (atomic_load(&r->asked) < i + 1) {
		atomic_store(&r->asked, i + 1);
		if (atomic_load(&r->waiting)) { /* for room: there is some now */
			pthread_mutex_lock(&r->lock);
			pthread_cond_signal(&r->moved);
			pthread_mutex_unlock(&r->lock);
		}
	}
	struct file *f = &r->files[i];
	if (atomic_load(&f->state) != 1) return -2;
	int32_t n = (int32_t)f->n;
	*err = f->err;
	memcpy(stamp, f->stamp, sizeof f->stamp);
	if (n > 0 && (uint32_t)n > cap) { *err = EFBIG; n = -1; }
	if (n > 0) memcpy(buf, f->data, (size_t)n);
	free(f->data);
	f->data = NULL;
	atomic_store(&f->state, 2);
	return n;
}

/* How far the thread has come: the files before this one are read (or were passed). */
uint32_t usernsd_reads_ahead(struct usernsd_reads *r) {
	return r ? atomic_load(&r->at) : 0;
}

/* The thread stopped and joined, everything freed (files not taken too). */
void usernsd_reads_end(struct usernsd_reads *r) {
	if (!r) return;
	atomic_store(&r->stop, 1);
	pthread_mutex_lock(&r->lock);
	pthread_cond_signal(&r->moved);
	pthread_mutex_unlock(&r->lock);
	if (r->started) pthread_join(r->thread, NULL);
	pthread_cond_destroy(&r->moved);
	pthread_mutex_destroy(&r->lock);
	for (uint32_t i = 0; i < r->count; i++) free(r->files[i].data);
	free(r->copy);
	free(r->names);
	free(r->files);
	free(r);
}

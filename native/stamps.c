/*
 * libusernsd-stamps.so: the stamps of many files of one directory at once, for the agent's reload
 * (agent/kernel/stamps.ts loads it with koffi and calls it off the event loop).
 *
 * A reload of 65,535 context files looks at every file's stamp to find the few that changed. One
 * statx(2) at a time from JavaScript costs about 2.6 us a file here (the call through koffi, the
 * buffer read back field by field); the same loop in C 1.6 us, and split between the CPUs the
 * process may run on (two on the machines measured) about 1 us. Each stamp is written as the eight
 * numbers config/ini.ts stampOf takes from a Node Stats, computed as Node computes them (the same
 * doubles, so that JavaScript compares them with ===).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

/* What one stamp is, in order: ino, ctimeMs, mtimeMs, size, dev, mode, uid, gid. */
#define STAMP_FIELDS 8
/* No thread of its own for fewer files than this each: starting one costs tens of microseconds. */
#define PER_THREAD_MIN 1024
#define MAX_THREADS 8

int usernsd_stamps(int dirfd, const char *names, uint32_t count, double *out, uint32_t max_threads);

struct part {
	int dirfd;
	const char *names; /* the first name of this part; each ends with NUL, the next follows */
	uint32_t count;
	double *out;
};

/* Node's msFromTimeSpec: sec * 1e3 + nsec / 1e6, in doubles, in that order (no fused multiply-add). */
static double ms(const struct statx_timestamp *t) {
	return (double)t->tv_sec * 1e3 + (double)t->tv_nsec / 1e6;
}

static void *stamp_part(void *arg) {
	const struct part *p = arg;
	const char *name = p->names;
	for (uint32_t i = 0; i < p->count; i++) {
		double *o = p->out + (size_t)i * STAMP_FIELDS;
		struct statx sx;
		if (statx(p->dirfd, name, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx) == 0) {
			o[0] = (double)sx.stx_ino;
			o[1] = ms(&sx.stx_ctime);
			o[2] = ms(&sx.stx_mtime);
			o[3] = (double)sx.stx_size;
			o[4] = (double)makedev(sx.stx_dev_major, sx.stx_dev_minor);
			o[5] = (double)sx.stx_mode;
			o[6] = (double)sx.stx_uid;
			o[7] = (double)sx.stx_gid;
		} else {
			for (int f = 0; f < STAMP_FIELDS; f++) o[f] = NAN; /* gone, or unreadable: the caller looks the usual way */
		}
		name += strlen(name) + 1;
	}
	return NULL;
}

/* The CPUs this process may run on (its affinity mask, which a cgroup's cpuset narrows). */
static uint32_t cpus(void) {
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
	int n = CPU_COUNT(&set);
	return n > 0 ? (uint32_t)n : 1;
}

/*
 * The stamps of `count` names (relative to `dirfd`, symbolic links not followed), `names` holding
 * them one after another, each ended by NUL. out[i * 8 ...] gets name i's stamp, or eight NaNs when
 * statx failed. Split between at most `max_threads` threads (this one among them). Returns the
 * number of threads used.
 */
int usernsd_stamps(int dirfd, const char *names, uint32_t count, double *out, uint32_t max_threads) {
	uint32_t n = cpus();
	if (n > max_threads) n = max_threads;
	if (n > MAX_THREADS) n = MAX_THREADS;
	if (n > count / PER_THREAD_MIN) n = count / PER_THREAD_MIN;
	if (n < 1) n = 1;
	struct part parts[MAX_THREADS];
	pthread_t threads[MAX_THREADS];
	int started[MAX_THREADS] = {0};
	const char *name = names;
	uint32_t at = 0;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t end = (uint32_t)((uint64_t)count * (k + 1) / n);
		parts[k] = (struct part){.dirfd = dirfd, .names = name, .count = end - at, .out = out + (size_t)at * STAMP_FIELDS};
		for (; at < end; at++) name += strlen(name) + 1;
	}
	/* Part 0 is this thread's; a thread that cannot start leaves its part to this one too. */
	for (uint32_t k = 1; k < n; k++) started[k] = pthread_create(&threads[k], NULL, stamp_part, &parts[k]) == 0;
	stamp_part(&parts[0]);
	int used = 1;
	for (uint32_t k = 1; k < n; k++) {
		if (started[k]) {
			pthread_join(threads[k], NULL);
			used++;
		} else {
			stamp_part(&parts[k]);
		}
	}
	return used;
}

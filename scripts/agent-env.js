// What the installed agent's wrapper (scripts/install.js) sets for glibc, which reads it at exec
// only; the benchmarks start the agent the same way (bench/report.ts timeToReady).

/**
 * One malloc arena for all of the agent's threads. glibc gives each thread that mallocs an arena of
 * its own (up to eight per core); what a reload of 65,535 context files left fragmented in the
 * arenas of V8's and libuv's threads, malloc_trim(3) could not give back: 8-23 MiB more resident
 * after ten reloads with an arena each, 9-14 with two, 3-5 with one (in four of five runs; the
 * fifth, 15). The agent's own thread does nearly all the work, so the arena is seldom contended:
 * the start was no slower in alternating runs (1.99 times the read-and-parse floor, against 2.12
 * with two).
 */
export const AGENT_TUNABLES = 'glibc.malloc.arena_max=1';

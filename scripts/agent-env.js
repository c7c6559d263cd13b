// What the installed agent's wrapper (scripts/install.js) sets for glibc, which reads it at exec
// only; the benchmarks start the agent the same way (bench/report.ts timeToReady).

/**
 * At most two malloc arenas for the agent's threads. glibc gives each thread that mallocs an arena of
 * its own (up to eight per core); what a reload of 65,535 context files left fragmented in V8's and
 * libuv's threads' arenas, malloc_trim(3) could not give back: 8-23 MiB more resident after ten
 * reloads, against 8 with two.
 */
export const AGENT_TUNABLES = 'glibc.malloc.arena_max=2';

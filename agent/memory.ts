// The agent's V8 heap around a load: the young generation a start's load may grow, and the
// collection after each load (start, reload) that gives back what the burst grew the heaps by.
import type { Logger } from 'pino';
import { getHeapSpaceStatistics, getHeapStatistics, setFlagsFromString } from 'node:v8';
import type { ReadAhead } from '../config/readahead.ts';
import { trimMalloc } from './kernel/sys.ts';

/**
 * Below this much committed V8 heap after a load there is little to give back (about 5,000 context
 * files make it): the collection, 35-40 ms even for one file, is skipped.
 */
export const SETTLE_HEAP_BYTES = 32 * 2 ** 20;

/** V8's young generation (new space) now, in bytes. */
const newSpaceBytes = () => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
/** The young generation's size between loads (bin/usernsd.js holds it there): a larger one is collected back. */
const HELD_NEW_SPACE_BYTES = 2 * 2 ** 20;
/**
 * Context files from which a start lets the young generation grow while it loads them: below, the
 * garbage is little, and the collection that shrinks it back would cost more than the scavenges it
 * saved (17 ms for a start on 3 files, whose young generation grew to 4 MiB).
 */
export const GROW_YOUNG_MIN_FILES = 2048;
/**
 * How far a start's load lets the young generation grow. V8 doubles it under the load's garbage, and
 * left to itself went to 128 MiB for 65,535 files, all of it resident at the load's peak (295-318 MiB
 * against 190-207 held at 16). The start is no slower for it: 1.81 times the read-and-parse floor
 * against 2.03 (medians of four alternating starts each, bench/scale.ts's files). 5,000 files grow it
 * to 16 MiB by themselves.
 */
export const GROWN_NEW_SPACE_BYTES = 16 * 2 ** 20;
/** Files taken between two looks at the young generation's size (a look costs microseconds; V8 grows it a doubling at a time). */
const LOOK_EVERY = 128;

/**
 * A start's reads of a listing of `files`, handed to the load as it is, or (a long listing: see
 * GROW_YOUNG_MIN_FILES) through a look at the young generation every LOOK_EVERY files: it may grow
 * (V8's own factor) until it holds GROWN_NEW_SPACE_BYTES, and is held from there. settleMemory
 * shrinks it back once the agent serves.
 */
export function growingYoung(files: number, reads: ReadAhead | null): ReadAhead | null {
  if (files < GROW_YOUNG_MIN_FILES) return reads;
  setFlagsFromString('--semi-space-growth-factor=2');
  let taken = 0;
  let grown = false;
  return {
    get(file) {
      if (!grown && ++taken % LOOK_EVERY === 0 && newSpaceBytes() >= GROWN_NEW_SPACE_BYTES) {
        setFlagsFromString('--semi-space-growth-factor=1');
        grown = true;
      }
      return reads?.get(file);
    },
  };
}

/**
 * After a load (start, reload): its garbage collected and the memory it grew the heaps by given back.
 * A load of many files is a burst the agent then idles after; V8 and glibc would otherwise keep the
 * heaps at the burst's size for good (twice the live size after ten reloads of 65,535 files).
 * `gc` is there when the agent runs as bin/usernsd.js starts it. Logged with `collected` (false: the
 * heap was under SETTLE_HEAP_BYTES and the young generation at its held size), at info when it
 * collected.
 *
 * The start's load of a long listing may grow the young generation (growingYoung: fewer, cheaper
 * scavenges of that garbage: 178 instead of 1,150 for 65,535 files held at 16 MiB, 45 when it grew
 * unbounded, 0.2 s less of the agent's thread); this collection shrinks it back, and from then on it is held at its size again (V8 reads
 * the growth factor each time new space would grow), so the burst leaves no larger young generation
 * resident.
 */
export function settleMemory(log: Logger, how: 'start' | 'reload'): void {
  const started = performance.now();
  const heap = getHeapStatistics().total_heap_size;
  const young = newSpaceBytes();
  const collected = heap >= SETTLE_HEAP_BYTES || young > HELD_NEW_SPACE_BYTES;
  if (collected) {
    // V8's last-resort collection (repeated until nothing more is freed, new space and fragmented
    // pages given back): 65,535 files settle in 179 MiB, not 223, for about 0.3 s. It runs once the
    // agent serves, or once the reload has answered (Manager.settleSoon): neither waits for it, and
    // memory is back where it was within that time, not when V8's memory reducer gets to it.
    globalThis.gc?.({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    trimMalloc();
  }
  if (how === 'start') setFlagsFromString('--semi-space-growth-factor=1');
  const after = getHeapStatistics();
  const fields = {
    gc: typeof globalThis.gc === 'function',
    collected,
    heapMb: +(heap / 2 ** 20).toFixed(1),
    // The young generation the load left, before the collection.
    newSpaceBeforeMb: +(young / 2 ** 20).toFixed(1),
    // After the collection: the heap V8 keeps, and the live data in it.
    heapAfterMb: +(after.total_heap_size / 2 ** 20).toFixed(1),
    liveMb: +(after.used_heap_size / 2 ** 20).toFixed(1),
    newSpaceMb: +(newSpaceBytes() / 2 ** 20).toFixed(1),
    rssMb: +(process.memoryUsage.rss() / 2 ** 20).toFixed(1),
    ms: +(performance.now() - started).toFixed(1),
  };
  const msg = how === 'start' ? 'Settled memory after the load' : 'Settled memory after the reload';
  if (collected) log.info(fields, msg);
  else log.debug(fields, msg);
}

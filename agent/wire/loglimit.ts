// Bounded logging of what clients cause: a burst of lines per uid, then one summary per window.
import type { Logger } from 'pino';

/** Lines one uid's failures may log per window before they are only counted. */
export const LOG_BURST_PER_UID = 20;
export const LOG_WINDOW_MS = 10_000;
/** At most this many uids are tracked at once; beyond, failures are counted under "other uids". */
const MAX_TRACKED_UIDS = 1024;

type Level = 'error' | 'warn' | 'info' | 'debug';
type Bucket = { windowStart: number; logged: number; suppressed: number };

/**
 * A hostile client can make the agent fail as fast as it can send frames; logging each failure
 * at info level once wrote 3.2 GB in 90 s. Each line stays bounded (the fields and messages are
 * cut by shown()), and past LOG_BURST_PER_UID lines in a window a uid's failures are counted
 * and said in one line: "N more like this from uid U".
 */
export class LogLimiter {
  private readonly buckets = new Map<string, Bucket>();
  /** Runs only while some uid has a window open: an idle agent holds no timer. */
  private timer: NodeJS.Timeout | null = null;
  private readonly log: Logger;

  /** Who a uid counts as (agent/people.ts): an owner's failures and its contexts' ids share one budget. */
  private readonly personOf: (uid: number) => string;

  constructor(log: Logger, personOf: (uid: number) => string = (uid) => `uid ${uid}`) {
    this.log = log;
    this.personOf = personOf;
  }

  /** Whether a window is open, and so its timer runs. */
  get ticking(): boolean {
    return this.timer !== null;
  }

  /**
   * One line about a failure `uid` caused, of a `kind` ("request": refused requests; "connection":
   * refused and closed connections) — each kind has its own budget, so a flood of one does not
   * hide the other.
   */
  line(uid: number, level: Level, fields: Record<string, unknown>, msg: string, kind: 'request' | 'connection' = 'request'): void {
    const id = `${uid < 0 ? 'unknown' : this.personOf(uid)}/${kind}`;
    const key = this.buckets.has(id) || this.buckets.size < MAX_TRACKED_UIDS ? id : 'other';
    const now = Date.now();
    let b = this.buckets.get(key);
    if (!b) this.buckets.set(key, (b = { windowStart: now, logged: 0, suppressed: 0 }));
    if (this.timer === null) {
      this.timer = setInterval(() => this.flush(false), LOG_WINDOW_MS);
      this.timer.unref();
    }
    if (now - b.windowStart >= LOG_WINDOW_MS) this.roll(key, b, now);
    if (b.logged < LOG_BURST_PER_UID) {
      b.logged++;
      this.log[level](fields, msg);
    } else {
      b.suppressed++;
    }
  }

  private roll(key: string, b: Bucket, now: number): void {
    if (b.suppressed > 0) {
      const [person, kind] = key.split('/');
      this.log.warn(
        { person: key === 'other' ? undefined : person, kind, suppressed: b.suppressed, windowMs: LOG_WINDOW_MS },
        `${b.suppressed} more like this from ${key === 'other' ? 'other uids' : person} (client failures past ${LOG_BURST_PER_UID} lines of a kind in ${LOG_WINDOW_MS / 1000} s are only counted)`,
      );
    }
    b.windowStart = now;
    b.logged = 0;
    b.suppressed = 0;
  }

  /** Say what was suppressed in windows that have ended; forget quiet uids. `all`: also the current ones (at stop). */
  flush(all: boolean): void {
    const now = Date.now();
    for (const [key, b] of this.buckets) {
      if (!all && now - b.windowStart < LOG_WINDOW_MS) continue;
      this.roll(key, b, now);
      this.buckets.delete(key);
    }
    if (this.buckets.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  close(): void {
    this.flush(true);
  }
}

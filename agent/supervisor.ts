// The supervisor's readiness channel (sd_notify(3): READY=1, RELOADING=1, STOPPING=1, STATUS=…).
import type { Logger } from 'pino';
import { sdNotify } from './kernel/sys.ts';

export class Supervisor {
  private readonly log: Logger;
  private readonly send: (state: string) => void;
  /** The supervisor's notify socket went away: nothing more is sent. */
  private gone = false;

  /** `send`: default sd_notify(3) to $NOTIFY_SOCKET, if set. */
  constructor(log: Logger, send?: (state: string) => void) {
    this.log = log;
    this.send =
      send ??
      ((state) => {
        sdNotify(state);
      });
  }

  /**
   * Tell the supervisor; a broken notify socket is logged, never fatal. A socket that is gone
   * (ENOENT, ECONNREFUSED) means a supervisor that only waited for READY=1, as start-stop-daemon
   * --notify-await does: said once, and not tried again.
   */
  notify(state: string): void {
    if (this.gone) return;
    try {
      this.send(state);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ECONNREFUSED') {
        this.gone = true;
        this.log.info({ err: (err as Error).message }, "The supervisor's notify socket is gone (it waited for readiness only): no further notifications");
        return;
      }
      this.log.warn({ err: (err as Error).message }, 'Failed to notify the supervisor (NOTIFY_SOCKET)');
    }
  }
}

// The per-uid log budget (agent/wire/loglimit.ts): a burst of lines, then one summary per window; and
// a timer only while a window is open, so that an idle agent is never woken for it.
import assert from 'node:assert/strict';
import pino from 'pino';
import { LOG_BURST_PER_UID, LogLimiter } from '../../agent/wire/loglimit.ts';

type Line = { level: number; msg: string } & Record<string, unknown>;

describe('unit: the per-uid log budget (LogLimiter)', () => {
  it('logs a burst per uid, then counts, says the count once, and holds a timer only while a window is open', () => {
    const lines: Line[] = [];
    const limiter = new LogLimiter(pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Line) }));
    assert.equal(limiter.ticking, false, 'no timer before any client failed');
    for (let i = 0; i < LOG_BURST_PER_UID + 5; i++) limiter.line(1000, 'info', { i }, 'Failed to serve resolve');
    limiter.line(1001, 'info', {}, 'Failed to serve map');
    assert.equal(limiter.ticking, true);
    assert.equal(lines.length, LOG_BURST_PER_UID + 1, 'the burst of uid 1000, and uid 1001 on its own budget');
    limiter.flush(false);
    assert.equal(limiter.ticking, true, 'the windows are still open');
    limiter.close();
    const summary = lines.filter((l) => /more like this/.test(l.msg));
    assert.deepEqual(
      summary.map((l) => l.msg),
      [`5 more like this from uid 1000 (client failures past ${LOG_BURST_PER_UID} lines of a kind in 10 s are only counted)`],
    );
    assert.equal(limiter.ticking, false, 'every window said and closed: no timer left');
  });
});

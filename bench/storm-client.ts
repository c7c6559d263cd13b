// A hostile local user, as one process: every kind of abuse the agent must shrug off, for SECONDS, then a report on stdout.
// Usage: [STORM_KINDS=a,b] [STORM_FLOOD=N] node bench/storm-client.ts SOCKET SECONDS  (as the uid to blame: setpriv --reuid=UID ...)
import { connect } from 'node:net';
import type { Socket } from 'node:net';

const [socket, secondsText] = process.argv.slice(2);
const seconds = Number(secondsText ?? 5);
const until = Date.now() + seconds * 1000;
const report = { invalidFrames: 0, oversize: 0, halfFrames: 0, neverReading: 0, vanished: 0, flood: { admitted: 0, refused: 0 }, errors: 0 };

function openOnce(): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(socket);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** A connection, retrying a full backlog (EAGAIN) as a determined attacker would. */
async function open(): Promise<Socket> {
  for (let i = 0; ; i++) {
    try {
      return await openOnce();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || i >= 200 || Date.now() >= until) throw err;
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const frame = (data: unknown) => JSON.stringify({ type: 'request', data }) + '\f';

/** Pipelined frames that parse but are wrong: unknown methods with long names, bad params, unknown types. */
async function pipelined(): Promise<void> {
  const garbage = [
    frame({ id: 1, method: '\u001b[2J' + 'x'.repeat(2000), params: {} }),
    frame({ id: 2, method: 'resolve', params: { ['p'.repeat(2000)]: 1 } }),
    frame({ id: 3, method: 'map', params: { from: 'a', to: 'host', uids: [-1] } }),
    JSON.stringify({ type: 'nonsense', data: { id: 4 } }) + '\f',
  ].join('');
  while (Date.now() < until) {
    let s: Socket;
    try {
      s = await open();
    } catch {
      report.errors++;
      await sleep(10);
      continue;
    }
    s.on('data', () => {});
    s.on('error', () => {});
    // As fast as the socket takes them, honouring backpressure (a real attacker's best rate).
    while (Date.now() < until && !s.destroyed) {
      const more = s.write(garbage.repeat(25));
      report.invalidFrames += 100;
      if (!more)
        await new Promise((r) => {
          s.once('drain', r);
          s.once('close', r);
        });
    }
    s.destroy();
  }
}

/** Frames larger than the limit: each closes its connection. */
async function oversize(): Promise<void> {
  const big = 'x'.repeat(1024 * 1024 + 16);
  while (Date.now() < until) {
    try {
      const s = await open();
      s.on('error', () => {});
      s.write(big);
      report.oversize++;
      await new Promise((r) => {
        s.once('close', r);
        setTimeout(r, 500);
      });
      s.destroy();
    } catch {
      report.errors++;
      await sleep(10);
    }
  }
}

/** Frames begun and never finished: the agent closes them after MESSAGE_TIMEOUT_MS. */
async function halfFrames(): Promise<void> {
  const held: Socket[] = [];
  while (Date.now() < until && held.length < 50) {
    try {
      const s = await open();
      s.on('error', () => {});
      s.write('{"type":"request","data":{"id":1,"method":"res');
      held.push(s);
      report.halfFrames++;
    } catch {
      report.errors++;
    }
    await sleep(20);
  }
  await sleep(Math.max(0, until - Date.now()));
  for (const s of held) s.destroy();
}

/** Valid requests whose replies are never read: the agent closes them past MAX_PENDING_BYTES. */
async function neverReading(): Promise<void> {
  const req = frame({ id: 1, method: 'list', params: {} }).repeat(64);
  while (Date.now() < until) {
    try {
      const s = await open();
      s.on('error', () => {});
      s.pause();
      for (let i = 0; i < 200 && !s.destroyed && Date.now() < until; i++) {
        s.write(req);
        await sleep(5);
      }
      report.neverReading++;
      s.destroy();
    } catch {
      report.errors++;
      await sleep(10);
    }
  }
}

/** Connect and go at once. */
async function vanish(): Promise<void> {
  while (Date.now() < until) {
    try {
      const s = await open();
      s.destroy();
      report.vanished++;
    } catch {
      report.errors++;
    }
    await sleep(1);
  }
}

/** More connections than one user may hold, held to the end. */
async function flood(n: number): Promise<void> {
  const held: { s: Socket; closed: boolean }[] = [];
  for (let i = 0; i < n && Date.now() < until; i++) {
    try {
      const s = await open();
      const h = { s, closed: false };
      s.on('error', () => {});
      s.on('close', () => {
        h.closed = true;
      });
      s.resume(); // read, so the agent's close is seen
      held.push(h);
    } catch {
      report.errors++;
    }
  }
  await sleep(Math.max(0, until - Date.now() - 200));
  // Admitted: still open at the end (idle connections are kept for IDLE_TIMEOUT_MS); refused: closed by the agent.
  for (const h of held)
    if (h.closed) report.flood.refused++;
    else report.flood.admitted++;
  for (const h of held) h.s.destroy();
}

// STORM_KINDS picks some (comma-separated names below); STORM_FLOOD sets the flood's size.
const kinds: Record<string, () => Promise<void>> = {
  pipelined: () => Promise.all([pipelined(), pipelined()]).then(() => {}),
  oversize,
  halfFrames,
  neverReading,
  vanish,
  flood: () => flood(Number(process.env.STORM_FLOOD ?? 300)),
};
const chosen = (process.env.STORM_KINDS ?? Object.keys(kinds).join(',')).split(',');
await Promise.all(chosen.map((k) => kinds[k]()));
process.stdout.write(JSON.stringify(report) + '\n');
process.exit(0);

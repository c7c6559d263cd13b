// The socket server at a stop (IpcServer.drain, as Manager.stop calls it): a request in flight is
// answered, and once it is, nothing of the drain is left to keep the process alive. In this process:
// the server, a client and a request whose answer the test holds back.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { AgentClient } from '../../agent/wire/client.ts';
import { LogLimiter } from '../../agent/wire/loglimit.ts';
import * as P from '../../agent/wire/protocol.ts';
import { IpcServer } from '../../agent/wire/server.ts';

/** The process's timers: what would keep a stopped agent from exiting. */
const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

describe('unit: draining the socket server at a stop', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'usernsd-drain-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('stops one that never listened (a start that failed first): nothing to drain, close, or unlink', async () => {
    const log = pino({ level: 'silent' });
    const server = new IpcServer({ path: join(dir, 's.sock'), log, limiter: new LogLimiter(log), onRequest: () => Promise.reject(new Error('no request')) });
    server.stopAccepting();
    assert.equal(await server.drain(1000), true);
    await server.close();
    assert.equal(server.connections, 0);
  });

  it('waits for a request in flight, returns once it is answered, and leaves no timer behind', async () => {
    const log = pino({ level: 'silent' });
    let answer!: () => void;
    let seen!: () => void;
    const asked = new Promise<void>((r) => (seen = r));
    const path = join(dir, 's.sock');
    const server = new IpcServer({
      path,
      log,
      limiter: new LogLimiter(log),
      onRequest: (_conn, data) =>
        new Promise<P.Reply>((reply) => {
          answer = () => reply({ id: (data as { id: number }).id, result: { held: true } });
          seen();
        }),
    });
    await server.listen();
    const client = await AgentClient.connect(path);
    try {
      const before = timers();
      const reply = client.call(P.status, {});
      await asked;
      let drained: boolean | undefined;
      const drain = server.drain(60_000).then((d) => (drained = d));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(drained, undefined, 'the drain waits while the request is in flight');
      answer();
      assert.equal(await drain, true);
      assert.deepEqual(await reply, { held: true });
      assert.equal(timers(), before, "the drain's timer goes with it (one left behind held a stopped agent to the drain deadline)");
    } finally {
      client.close();
      await server.close();
    }
  });
});

// The client against a listener whose backlog is full: it retries briefly instead of calling the agent unreachable.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentClient, CONNECT_RETRY_MS } from '../../agent/wire/client.ts';
import type { TransportError } from '../../agent/errors.ts';
import { PYTHON } from '../helpers/agent.ts';

/** A listener with a full backlog (backlog 0, filled by its own connections) that starts accepting after `acceptAfterMs`, or never. */
const LISTENER = `
import socket, sys, time, threading
path, after = sys.argv[1], float(sys.argv[2])
l = socket.socket(socket.AF_UNIX); l.bind(path); l.listen(0)
fill = []
while True:
    c = socket.socket(socket.AF_UNIX); c.setblocking(False)
    try:
        c.connect(path); fill.append(c)
    except BlockingIOError:
        break
print("full", flush=True)
if after >= 0:
    time.sleep(after)
    def serve():
        while True:
            l.accept()
    threading.Thread(target=serve, daemon=True).start()
sys.stdin.read()
`;

function listener(path: string, acceptAfterMs: number) {
  const child = spawn(PYTHON, ['-c', LISTENER, path, String(acceptAfterMs / 1000)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const full = new Promise<void>((resolve) =>
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (d.toString().includes('full')) resolve();
    }),
  );
  return {
    full,
    stop: () => {
      child.stdin.end();
      child.kill();
    },
  };
}

describe('AgentClient.connect on a full listen backlog (EAGAIN)', function () {
  this.timeout(20_000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'usernsd-eagain-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('retries with backoff and connects once the listener accepts again', async () => {
    const l = listener(join(dir, 's'), 300);
    try {
      await l.full;
      const started = performance.now();
      const c = await AgentClient.connect(join(dir, 's'));
      c.close();
      assert.ok(performance.now() - started >= 250, 'it waited for the backlog to drain');
    } finally {
      l.stop();
    }
  });

  it('gives up after CONNECT_RETRY_MS with EAGAIN when the backlog stays full', async () => {
    const l = listener(join(dir, 's'), -1);
    try {
      await l.full;
      const started = performance.now();
      await assert.rejects(AgentClient.connect(join(dir, 's')), (e: TransportError) => e.code === 'EAGAIN');
      const ms = performance.now() - started;
      assert.ok(ms >= CONNECT_RETRY_MS - 200 && ms < CONNECT_RETRY_MS + 2000, `${ms} ms`);
    } finally {
      l.stop();
    }
  });
});

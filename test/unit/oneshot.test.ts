// callAgentOnce, the request-key handler's blocking client, against a scripted server in another
// process (the call blocks this one): answers split anywhere, remote errors, and every way of not answering.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TransportError, UsernsError } from '../../agent/errors.ts';
import { callAgentOnce } from '../../agent/wire/oneshot.ts';
import * as P from '../../agent/wire/protocol.ts';

/** A server that reads one request, then behaves as `mode` says; it prints "ready" once it listens. */
const SERVER = `
const net = require('node:net');
const [path, mode] = process.argv.slice(1);
const reply = (id, body) => JSON.stringify({ type: 'reply', data: { id, ...body } }) + '\\f';
net.createServer((s) => {
  let got = '';
  s.on('data', (d) => {
    got += d;
    if (!got.includes('\\f')) return;
    const req = JSON.parse(got.slice(0, got.indexOf('\\f')));
    const id = req.data.id;
    if (mode === 'ok') {
      // The label echoed back, in pieces that cut a multi-byte character in two.
      const bytes = Buffer.from(reply(id, { result: { echo: req.data.params.label, note: 'é€😀' } }));
      let at = 0;
      const next = () => { if (at >= bytes.length) return; s.write(bytes.subarray(at, at += 3)); setTimeout(next, 1); };
      next();
    } else if (mode === 'error') s.write(reply(id, { error: { code: 'E_NOT_FOUND', message: 'no context "x"' } }));
    else if (mode === 'close') s.destroy();
    else if (mode === 'garbage') s.write('{not json\\f');
    else if (mode === 'wrong-id') s.write(reply(id + 1, { result: {} }));
    // 'silent': never answers
  });
}).listen(path, () => console.log('ready'));
`;

describe("callAgentOnce (the upcall's blocking client)", () => {
  let dir: string;
  let server: ChildProcess | null = null;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'usernsd-oneshot-'));
  });
  afterEach(async () => {
    await stopServer();
    rmSync(dir, { recursive: true, force: true });
  });

  async function stopServer(): Promise<void> {
    if (server && server.exitCode === null && server.signalCode === null) {
      const gone = new Promise((r) => server!.once('exit', r));
      server.kill();
      await gone;
    }
    server = null;
    rmSync(join(dir, 's.sock'), { force: true });
  }

  async function serve(mode: string): Promise<string> {
    const path = join(dir, 's.sock');
    server = spawn(process.execPath, ['-e', SERVER, path, mode], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      server!.stdout!.once('data', () => resolve());
      server!.once('exit', (code) => reject(new Error(`test server exited ${code}`)));
    });
    return path;
  }

  const transport = (code: string, message?: RegExp) => (err: unknown) => {
    assert.ok(err instanceof TransportError, `a TransportError, not ${String(err)}`);
    assert.equal(err.code, code);
    if (message) assert.match(err.message, message);
    return true;
  };

  it('returns the result of an answer that arrives in pieces, multi-byte characters cut in two', async () => {
    const path = await serve('ok');
    const r = callAgentOnce(path, P.resolve, { label: 'web' }) as unknown as { echo: string; note: string };
    assert.deepEqual(r, { echo: 'web', note: 'é€😀' });
  });

  it("throws the agent's error as a UsernsError with its code", async () => {
    const path = await serve('error');
    assert.throws(
      () => callAgentOnce(path, P.resolve, { label: 'x' }),
      (err: unknown) => err instanceof UsernsError && err.code === 'E_NOT_FOUND' && /no context "x"/.test(err.message),
    );
  });

  it('gives up on a silent agent after its timeout, with ETIMEDOUT', async () => {
    const path = await serve('silent');
    const t0 = Date.now();
    assert.throws(() => callAgentOnce(path, P.resolve, { label: 'x' }, 300), transport('ETIMEDOUT', /did not answer resolve within 300 ms/));
    assert.ok(Date.now() - t0 >= 250, 'it waited for the timeout');
  });

  it('reports a connection closed without an answer, an unreadable frame and a reply to another request', async () => {
    for (const [mode, code, message] of [
      ['close', 'ECONNRESET', /closed the connection/],
      ['garbage', 'EPROTO', /unreadable frame/],
      ['wrong-id', 'EPROTO', /under id 2/],
    ] as const) {
      await stopServer();
      const path = await serve(mode);
      assert.throws(() => callAgentOnce(path, P.resolve, { label: 'x' }), transport(code, message), mode);
    }
  });

  it('names the errno when there is no agent: no socket, nobody listening, a path too long', async () => {
    assert.throws(
      () => callAgentOnce(join(dir, 'none.sock'), P.resolve, { label: 'x' }),
      transport('ENOENT', /cannot reach the agent at .*none\.sock: ENOENT/),
    );
    const path = await serve('silent');
    const gone = new Promise((r) => server!.once('exit', r));
    server!.kill('SIGKILL'); // a killed agent leaves its socket file behind
    await gone;
    assert.throws(() => callAgentOnce(path, P.resolve, { label: 'x' }), transport('ECONNREFUSED'));
    assert.throws(() => callAgentOnce(`${dir}/${'x'.repeat(120)}`, P.resolve, { label: 'x' }), transport('ENAMETOOLONG'));
  });
});

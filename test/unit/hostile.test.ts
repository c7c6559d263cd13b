// Hostile and broken clients against the agent's socket server and request edge, in the test's own
// process (IpcServer and the agent's Service on a configuration: no kernel object is made): each
// gets an error reply or a closed connection, is logged once, and nobody else notices. The caller is
// this process, as SO_PEERCRED says. What needs a namespace made (a client that leaves while its
// context is created) is in test/e2e/agent.test.ts.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { handleRequest } from '../../agent/handlers.ts';
import type { Service } from '../../agent/service.ts';
import { AgentClient } from '../../agent/wire/client.ts';
import * as P from '../../agent/wire/protocol.ts';
import { IpcServer } from '../../agent/wire/server.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { mountsUnder, unmountAll } from '../helpers/kernel.ts';
import { serviceOf } from '../helpers/service.ts';
import type { LogLine } from '../helpers/service.ts';

type Raw = {
  sock: Socket;
  replies: unknown[];
  closed: Promise<void>;
  send(text: string): void;
  reply(): Promise<{ id: unknown; error?: { code: string; message: string }; result?: unknown }>;
};

function raw(path: string): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    const replies: unknown[] = [];
    const waiting: ((v: never) => void)[] = [];
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      let at;
      while ((at = buf.indexOf('\f')) >= 0) {
        const msg = JSON.parse(buf.slice(0, at)) as { type: string; data: never };
        buf = buf.slice(at + 1);
        assert.equal(msg.type, 'reply');
        const w = waiting.shift();
        if (w) w(msg.data);
        else replies.push(msg.data);
      }
    });
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    sock.on('error', () => {});
    sock.once('connect', () =>
      resolve({
        sock,
        replies,
        closed,
        send: (text) => {
          sock.write(text);
        },
        reply: () => (replies.length > 0 ? Promise.resolve(replies.shift() as never) : new Promise((r) => waiting.push(r))),
      }),
    );
    sock.once('error', reject);
  });
}

const frame = (data: unknown, type = 'request') => JSON.stringify({ type, data }) + '\f';

describe('unit: hostile and broken clients, in-process (the socket server and the request edge)', function () {
  let tree: Tree;
  let service: Service;
  let server: IpcServer;
  let logs: LogLine[];
  let socket: string;
  let good: AgentClient;
  /** The well-behaved client asks after every hostile act, and must always be answered. */
  const stillServing = async () => {
    const r = await good.call(P.map, { from: 'a', to: 'host', uids: [1] });
    assert.deepEqual(r.uids, [100001]);
  };

  before(async function () {
    if (process.getuid!() !== 0) this.skip(); // the configuration files must be root's
    tree = makeTree();
    tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    ({ service, logs } = await serviceOf(tree));
    socket = service.registry.agent.socket;
    server = new IpcServer({ path: socket, log: service.log, limiter: service.logLimiter, onRequest: (conn, data) => handleRequest(service, conn, data) });
    await server.listen();
    good = await AgentClient.connect(socket);
  });
  after(async () => {
    good?.close();
    await server?.close();
    service?.close();
    service?.registry.namespaces.close();
    if (!tree) return;
    unmountAll(tree.dir); // were a bug to let a request through to the kernel: nothing is left behind
    tree.remove();
  });
  afterEach(stillServing);

  const closedFor = (code: string, since = 0) => logs.slice(since).filter((l) => l.msg.startsWith('Closed connection') && l.code === code);

  for (const [name, text, code] of [
    ['a frame that is not JSON', 'this is not json\f', 'ERR_IPC_INVALID_JSON'],
    ['a frame that is a JSON array', '[1,2,3]\f', 'ERR_IPC_INVALID_MESSAGE'],
    ['a frame typed "__proto__"', frame({ id: 1 }, '__proto__'), 'ERR_IPC_INVALID_EVENT'],
    ['a frame typed "constructor"', frame({ id: 1 }, 'constructor'), 'ERR_IPC_INVALID_EVENT'],
    ['a frame typed as a local lifecycle event', frame({ id: 1 }, 'connect'), 'ERR_IPC_RESERVED_EVENT'],
    ['a frame larger than MAX_MESSAGE_BYTES', 'x'.repeat(P.LIMITS.MAX_MESSAGE_BYTES + 10), 'ERR_IPC_FRAME_TOO_LARGE'],
  ] as const) {
    it(`closes the connection on ${name}, logging it once with the peer`, async () => {
      const since = logs.length;
      const c = await raw(socket);
      c.send(text);
      await c.closed;
      assert.deepEqual(c.replies, []);
      const lines = closedFor(code, since);
      assert.equal(lines.length, 1, JSON.stringify(logs.filter((l) => l.msg.startsWith('Closed'))));
      assert.equal(lines[0].peerUid, process.getuid!());
      assert.equal(typeof lines[0].peerPid, 'number');
      assert.equal(lines[0].level, 40);
    });
  }

  it('closes a connection whose frame is never finished, after MESSAGE_TIMEOUT_MS', async function () {
    this.timeout(P.LIMITS.MESSAGE_TIMEOUT_MS + 10_000);
    const c = await raw(socket);
    const started = Date.now();
    c.send('{"type":"request","data":{"id":1,"meth');
    await stillServing(); // meanwhile everyone else is answered
    await c.closed;
    assert.ok(Date.now() - started >= P.LIMITS.MESSAGE_TIMEOUT_MS - 100);
    assert.equal(closedFor('ERR_IPC_MESSAGE_TIMEOUT').length, 1);
  });

  for (const [name, data, id, re] of [
    ['an unknown method', { id: 7, method: 'frobnicate', params: {} }, 7, /unknown method "frobnicate"/],
    ['a method named like an Object property', { id: 8, method: 'constructor', params: {} }, 8, /unknown method "constructor"/],
    ['a label of the wrong type', { id: 9, method: 'resolve', params: { label: 5 } }, 9, /parameter "label" must be a string/],
    ['a label with a path in it', { id: 10, method: 'resolve', params: { label: 'a/../../etc' } }, 10, /may contain only letters/],
    ['a missing parameter', { id: 11, method: 'resolve', params: {} }, 11, /parameter "label" is required/],
    ['ids that are not ids', { id: 12, method: 'map', params: { from: 'a', to: 'host', uids: [1, -1] } }, 12, /-1 is not an id/],
    ['the no-id (uid_t)-1', { id: 13, method: 'map', params: { from: 'a', to: 'host', gids: [4294967295] } }, 13, /4294967295 is not an id/],
    [
      'too many ids',
      { id: 14, method: 'map', params: { from: 'a', to: 'host', uids: Array(P.LIMITS.MAX_IDS_PER_LIST + 1).fill(0) } },
      14,
      /at most 32768 per request/,
    ],
    ['params that are an array', { id: 15, method: 'list', params: [] }, 15, /params must be a JSON object/],
    ['an unknown parameter', { id: 16, method: 'list', params: { all: true } }, 16, /unknown parameter "all"/],
    ['a request without an id', { method: 'list', params: {} }, null, /"id" must be a non-negative integer/],
    ['an id that is an object', { id: { x: 1 }, method: 'list' }, null, /"id" must be/],
    ['a request that is a string', 'resolve a', null, /a request is a JSON object/],
  ] as const) {
    it(`answers ${name} with E_INVALID under its id`, async () => {
      const c = await raw(socket);
      c.send(frame(data));
      const r = await c.reply();
      assert.equal(r.id, id);
      assert.equal(r.error?.code, 'E_INVALID');
      assert.match(r.error.message, re);
      c.sock.destroy();
    });
  }

  it('refuses "__proto__" keys in params and in the request instead of merging them', async () => {
    const c = await raw(socket);
    c.send('{"type":"request","data":{"id":20,"method":"resolve","params":{"label":"a","__proto__":{"polluted":1}}}}\f');
    c.send('{"type":"request","data":{"id":21,"method":"resolve","params":{"label":"a"},"__proto__":{"rootOnly":false}}}\f');
    const r1 = await c.reply();
    const r2 = await c.reply();
    assert.deepEqual([r1.id, r1.error?.code, r2.id, r2.error?.code], [20, 'E_INVALID', 21, 'E_INVALID']);
    assert.match(r1.error!.message, /unknown parameter "__proto__"/);
    assert.match(r2.error!.message, /unknown request field "__proto__"/);
    // The agent's code runs in this process: its prototypes are these.
    for (const proto of [Object.prototype, Array.prototype, Function.prototype]) {
      assert.equal((proto as Record<string, unknown>).polluted, undefined);
      assert.equal(Object.hasOwn(proto, 'rootOnly'), false);
    }
    c.sock.destroy();
  });

  it('answers a frame of an unknown type with E_INVALID, under the id it carries', async () => {
    const c = await raw(socket);
    c.send(frame({ id: 30 }, 'hello'));
    const r = await c.reply();
    assert.equal(r.id, 30);
    assert.equal(r.error?.code, 'E_INVALID');
    assert.match(r.error.message, /unknown frame type "hello"/);
    c.sock.destroy();
  });

  it('answers pipelined requests in one write, each under its own id', async () => {
    const c = await raw(socket);
    c.send(Array.from({ length: 50 }, (_, i) => frame({ id: i, method: 'map', params: { from: 'a', to: 'host', uids: [i] } })).join(''));
    const got = new Map<unknown, unknown>();
    for (let i = 0; i < 50; i++) {
      const r = await c.reply();
      got.set(r.id, (r.result as P.MapResult).uids[0]);
    }
    for (let i = 1; i < 50; i++) assert.equal(got.get(i), 100000 + i);
    assert.equal(got.get(0), 65534, 'root squash of the default mode');
    c.sock.destroy();
  });

  it('made no namespace: no request here reached the kernel', () => {
    assert.deepEqual(mountsUnder(tree.dir), []);
  });

  it('logged no internal error', () => {
    assert.deepEqual(
      logs.filter((l) => l.level >= 50),
      [],
    );
  });
});

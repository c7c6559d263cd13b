// Hostile input, generated: fast-check frames from many clients at once, slow clients, a connection flood — while a well-behaved client keeps its answers.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import fc from 'fast-check';
import { AgentClient } from '../../agent/wire/client.ts';
import * as P from '../../agent/wire/protocol.ts';
import { cleanup, startAgent } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot } from '../helpers/kernel.ts';

/** Bounded, not fast: CI machines are shared, and a hang or a lost answer is what this catches. */
const ANSWER_WITHIN_MS = 5000;

const frame = (data: unknown, type = 'request') => JSON.stringify({ type, data }) + '\f';
const nested = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);

/** Frames a broken or hostile client might send. */
const hostileFrame: fc.Arbitrary<string> = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b).toString('latin1')),
  fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b).toString('latin1') + '\f'),
  fc.string({ maxLength: 200 }).map((s) => s + '\f'),
  fc.json().map((j) => j + '\f'),
  fc.integer({ min: 1, max: 5000 }).map((d) => `{"type":"request","data":${nested(d)}}\f`),
  fc.constantFrom('__proto__', 'constructor', 'toString', 'hasOwnProperty', 'connect', 'error').map((t) => frame({ id: 1 }, t)),
  fc
    .record({
      id: fc.oneof(fc.integer(), fc.string(), fc.constant(null)),
      method: fc.oneof(fc.constantFrom(...P.METHODS.keys(), '__proto__', 'constructor', 'nope'), fc.string()),
      params: fc.anything(),
    })
    .map((d) => frame(d)),
  fc
    .constantFrom(...P.METHODS.keys())
    .chain((m) =>
      fc
        .dictionary(fc.constantFrom('label', 'from', 'to', 'uids', 'gids', 'path', '__proto__'), fc.anything())
        .map((params) => frame({ id: 2, method: m, params })),
    ),
  fc.constant(frame({ id: 3, method: 'map', params: { from: 'a', to: 'host', uids: Array(P.LIMITS.MAX_IDS_PER_LIST + 1).fill(1) } })),
  fc.constant(frame({ id: 4, method: 'resolve', params: { label: 'a' } }).slice(0, 30)), // truncated
);

function open(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    s.on('error', () => {});
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

async function openRetrying(path: string): Promise<Socket | null> {
  for (let i = 0; i < 50; i++) {
    try {
      return await open(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return null;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  return null;
}

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

describe('e2e: a storm of generated hostile input (root)', function () {
  this.timeout(180_000);
  let tree: Tree;
  let agent: RunningAgent;
  let good: AgentClient;
  /** The well-behaved client: a correct answer, within a bounded time. */
  const answered = async () => {
    const t0 = performance.now();
    const r = await good.call(P.resolve, { label: 'a' }, ANSWER_WITHIN_MS);
    assert.equal(r.label, 'a');
    return performance.now() - t0;
  };

  before(async function () {
    if (!isRoot) this.skip(); // the agent pins namespaces: root
    tree = makeTree();
    tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    agent = await startAgent(tree, ['--log-level', 'info']);
    good = await AgentClient.connect(agent.socket);
    await answered();
  });
  after(async () => {
    good?.close();
    await cleanup(tree);
  });

  it('answers the good client within a bounded time while 8 clients at a time send generated frames', async () => {
    const rssBefore = rssMb(agent.child.pid!);
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(hostileFrame, { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 8 }), async (perClient) => {
        const socks = await Promise.all(perClient.map(() => open(agent.socket)));
        socks.forEach((s, i) => {
          for (const f of perClient[i]) s.write(f);
        });
        await answered(); // within ANSWER_WITHIN_MS, or the call's own timeout fails the run
        for (const s of socks) s.destroy();
      }),
      { numRuns: 60, seed: 20261129 },
    );
    await answered();
    assert.equal(agent.child.exitCode, null, 'the agent is alive');
    assert.deepEqual(
      agent.logs.filter((l) => l.level >= 50),
      [],
      'no internal error, no crash',
    );
    assert.ok(rssMb(agent.child.pid!) - rssBefore < 100, 'memory stays bounded');
  });

  it('keeps answering while slow clients hold half-sent frames and a flood goes past the connection limit', async () => {
    const rssBefore = rssMb(agent.child.pid!);
    const slow = await Promise.all(Array.from({ length: 50 }, () => open(agent.socket)));
    for (const s of slow) s.write('{"type":"request","data":{"id":1,"meth');
    await answered();
    const flood: Socket[] = [];
    for (let i = 0; i < P.LIMITS.MAX_CONNECTIONS + 200; i += 100) {
      const batch = await Promise.all(Array.from({ length: 100 }, () => openRetrying(agent.socket)));
      flood.push(...batch.filter((s): s is Socket => s !== null));
    }
    await new Promise((r) => setTimeout(r, 500));
    const ms = await answered();
    assert.ok(ms < ANSWER_WITHIN_MS, `answered in ${ms} ms during the flood`);
    const st = await good.call(P.status, {});
    assert.ok(st.connections! <= P.LIMITS.MAX_CONNECTIONS, `${st.connections} connections held, at most ${P.LIMITS.MAX_CONNECTIONS}`);
    for (const s of [...flood, ...slow]) s.destroy();
    await new Promise((r) => setTimeout(r, 500));
    await answered();
    assert.ok(rssMb(agent.child.pid!) - rssBefore < 150, 'memory stays bounded');
    assert.deepEqual(
      agent.logs.filter((l) => l.level >= 50),
      [],
    );
  });
});

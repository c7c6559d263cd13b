// A hostile local user cannot lock root out, flood the log or leave the agent unable to start.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AgentClient } from '../../agent/wire/client.ts';
import { LOG_BURST_PER_UID } from '../../agent/wire/loglimit.ts';
import * as P from '../../agent/wire/protocol.ts';
import { cleanup, PYTHON, startAgent } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser } from '../helpers/kernel.ts';
import { runStorm } from '../../bench/storm.ts';

/**
 * A process of `uid` that opens `n` connections, says how many the agent admitted (silent, open)
 * and refused (an E_BUSY line, then closed), and holds them until its standard input closes.
 */
const HOLDER = `
import json, socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    socks.append(s)
time.sleep(1.0)
admitted = refused = 0
for s in socks:
    s.setblocking(False)
    try:
        d = s.recv(65536)
        refused += 1 if b"E_BUSY" in d else 0
        admitted += 0 if b"E_BUSY" in d else 1
    except BlockingIOError:
        admitted += 1
print(json.dumps({"admitted": admitted, "refused": refused}), flush=True)
sys.stdin.read()
`;

type Holder = { child: ChildProcess; counts: Promise<{ admitted: number; refused: number }>; release(): Promise<void> };

function holdConnections(socket: string, uid: number, n: number): Holder {
  const child = spawn('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--', PYTHON, '-c', HOLDER, socket, String(n)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const counts = new Promise<{ admitted: number; refused: number }>((resolve, reject) => {
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('\n')) resolve(JSON.parse(out) as { admitted: number; refused: number });
    });
    child.on('exit', (code) => reject(new Error(`holder of uid ${uid} exited (${code}) before counting: ${err}`)));
  });
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  return {
    child,
    counts,
    release: async () => {
      child.stdin.end();
      await exited;
    },
  };
}

describe('e2e: abuse by a local user (root)', function () {
  this.timeout(120_000);
  let tree: Tree;
  let agent: RunningAgent;
  const holders: Holder[] = [];

  beforeEach(async function () {
    if (!isRoot) this.skip();
    tree = makeTree();
    tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
  });
  afterEach(async () => {
    for (const h of holders.splice(0)) {
      h.child.kill('SIGKILL');
      await h.release().catch(() => {});
    }
    await cleanup(tree);
  });

  const rootServed = async () => {
    const c = await AgentClient.connect(agent.socket);
    try {
      assert.equal((await c.call(P.resolve, { label: 'a' })).label, 'a');
    } finally {
      c.close();
    }
  };

  it('admits MAX_CONNECTIONS_PER_UID connections of one user, refuses the rest with a reason, and logs that within its budget', async () => {
    agent = await startAgent(tree, ['--log-level', 'info']);
    const uid = 61_001;
    const h = holdConnections(agent.socket, uid, P.LIMITS.MAX_CONNECTIONS_PER_UID + 40);
    holders.push(h);
    assert.deepEqual(await h.counts, { admitted: P.LIMITS.MAX_CONNECTIONS_PER_UID, refused: 40 });
    await rootServed();
    const refusedLines = agent.logs.filter((l) => l.msg.startsWith(`Refused a connection from uid ${uid}:`));
    assert.ok(refusedLines.length >= 1 && refusedLines.length <= LOG_BURST_PER_UID, `${refusedLines.length} lines`);
    assert.match(refusedLines[0].msg, /holds 256 connections already, the most one user may/);
  });

  it('keeps the last ROOT_RESERVED_CONNECTIONS for root while other users hold every other connection', async () => {
    agent = await startAgent(tree, ['--log-level', 'info']);
    const per = P.LIMITS.MAX_CONNECTIONS_PER_UID;
    const users = Math.ceil(P.LIMITS.MAX_CONNECTIONS / per);
    for (let i = 0; i < users; i++) holders.push(holdConnections(agent.socket, 62_000 + i, per));
    const counts = await Promise.all(holders.map((h) => h.counts));
    const admitted = counts.reduce((n, c) => n + c.admitted, 0);
    assert.equal(admitted, P.LIMITS.MAX_CONNECTIONS - P.LIMITS.ROOT_RESERVED_CONNECTIONS);
    // Root, every time, on fresh connections, while the others hold theirs.
    for (let i = 0; i < 10; i++) await rootServed();
  });

  it('bounds what hostile frames write to the log, and escapes what they carry', async () => {
    agent = await startAgent(tree, ['--log-level', 'info']);
    // What the start still logs once it serves (its first record, written then) is not the frames'.
    await agent.waitForLog((l) => l.msg === 'Recorded the contexts in force');
    const before = agent.logs.length;
    const c = await import('node:net').then((net) => net.connect(agent.socket));
    await new Promise((r) => c.once('connect', r));
    let replies = 0;
    let replyBytes = 0;
    c.on('error', () => {});
    const closed = new Promise((r) => c.once('close', r));
    c.on('data', (d: Buffer) => {
      replyBytes += d.length;
      replies += d.toString().split('\f').length - 1;
    });
    const name = '\u001b[31m' + 'm'.repeat(20_000);
    const n = 1000;
    let text = '';
    for (let i = 0; i < n; i++) text += JSON.stringify({ type: 'request', data: { id: i, method: name, params: { ['\u009b' + 'p'.repeat(5000)]: 1 } } }) + '\f';
    c.write(text);
    await closed; // after MAX_INVALID_PER_CONNECTION invalid requests
    assert.ok(replies >= P.LIMITS.MAX_INVALID_PER_CONNECTION && replies <= n, `${replies} replies`);
    assert.ok(replyBytes < replies * 1024, `each reply is bounded: ${replyBytes / replies} bytes each`);
    await rootServed();
    const lines = agent.logs.slice(before).map((l) => JSON.stringify(l));
    const bytes = lines.reduce((s, l) => s + l.length + 1, 0);
    assert.ok(lines.length <= LOG_BURST_PER_UID + 2, `${lines.length} lines logged for ${n} hostile frames`);
    assert.ok(bytes <= (LOG_BURST_PER_UID + 2) * 1024, `${bytes} bytes logged for ${n} hostile frames of 25 KB`);
    assert.ok(!/\\u001b\[31m|\u001b/.test(lines.join('\n').replace(/\\\\u001b/g, '')), 'no raw escape sequence reaches the log');
  });

  it('gives the owner no way into a helper before its maps are written (300 creations under a tamperer)', async function () {
    const owner = makeUser();
    try {
      tree.delegate(owner.name, 400000, 1000);
      tree.context('owned.conf', `[context]\nowner = ${owner.name}\nuid_map = 0 400000 1000\ngid_map = 0 400000 1000\n`);
      agent = await startAgent(tree, ['--log-level', 'info']);
      // As the owner: find every process of ours and try to write its uid_map first, as fast as it can.
      const TAMPER = `
import os, sys, threading
uid = os.getuid(); wrote = tried = 0; stop = False
def watch():
    global stop
    sys.stdin.read(); stop = True
threading.Thread(target=watch, daemon=True).start()
while not stop:
    for p in os.listdir("/proc"):
        if not p.isdigit(): continue
        try:
            if os.stat("/proc/" + p).st_uid != uid: continue
            if open("/proc/%s/comm" % p).read().strip() not in ("unshare", "cat"): continue
            tried += 1
            with open("/proc/%s/uid_map" % p, "w") as f: f.write("0 %d 1" % uid)
            wrote += 1
        except OSError:
            pass
print(wrote, tried, flush=True)
`;
      const tamperer = spawn('setpriv', [`--reuid=${owner.uid}`, `--regid=${owner.gid}`, '--clear-groups', '--', PYTHON, '-c', TAMPER], {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      let out = '';
      tamperer.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
      });
      const done = new Promise<void>((r) => tamperer.on('exit', () => r()));
      const c = await AgentClient.connect(agent.socket);
      const failures: string[] = [];
      try {
        for (let i = 0; i < 300; i++) {
          try {
            await c.call(P.resolve, { label: 'owned' });
          } catch (err) {
            failures.push((err as Error).message);
          }
          await c.call(P.release, { label: 'owned' });
        }
      } finally {
        c.close();
        tamperer.stdin.end();
        await done;
      }
      const [wrote] = out.trim().split(' ').map(Number);
      assert.equal(wrote, 0, "the owner wrote a helper's uid_map");
      assert.deepEqual(failures, [], 'no creation failed');
    } finally {
      owner.remove();
    }
  });

  it('closes a connection after MAX_INVALID_PER_CONNECTION invalid requests, and makes a uid that keeps at it wait', async () => {
    agent = await startAgent(tree, ['--log-level', 'info']);
    const net = await import('node:net');
    const burst = async () => {
      const s = net.connect(agent.socket);
      await new Promise((r) => s.once('connect', r));
      let text = '';
      s.setEncoding('utf8').on('data', (d: string) => {
        text += d;
      });
      s.on('error', () => {});
      const closed = new Promise((r) => s.once('close', r));
      s.write(Array.from({ length: 100 }, (_, i) => JSON.stringify({ type: 'request', data: { id: i, method: 'nope', params: {} } }) + '\f').join(''));
      await closed;
      // Those past MAX_INFLIGHT_PER_CONNECTION are answered E_BUSY at once; the invalid ones up to the budget.
      return text.split('\f').filter((f) => f.includes('"E_INVALID"')).length;
    };
    assert.equal(await burst(), P.LIMITS.MAX_INVALID_PER_CONNECTION, 'answered up to the budget, then closed');
    assert.ok(agent.logs.some((l) => /^Closed connection: 64 invalid requests/.test(l.msg)));
    // Root is never penalized: the same again and again is still served each time.
    for (let i = 0; i < 10; i++) await burst();
    await rootServed();
    // A uid other than root that keeps at it: after 8 such closes in 10 s its new connections are
    // refused (E_BUSY, closed) for a second, while root is served; a second later it is served again.
    const user = makeUser();
    try {
      const script = `
import json, socket, sys, time
path = sys.argv[1]
# The agent closes a connection it is done with (64 invalid requests; a refusal) while the client
# may still be sending: a send then fails with EPIPE and a read after with ECONNRESET, as for any
# client; what the agent wrote before closing is read first.
GONE = (BrokenPipeError, ConnectionResetError)
def burst():
    s = socket.socket(socket.AF_UNIX); s.connect(path)
    try:
        s.sendall(b"".join(json.dumps({"type": "request", "data": {"id": i, "method": "nope", "params": {}}}).encode() + b"\\f" for i in range(100)))
        while s.recv(65536): pass
    except GONE:
        pass
    s.close()
def ask():
    s = socket.socket(socket.AF_UNIX); s.connect(path)
    got = b""
    try:
        s.sendall(json.dumps({"type": "request", "data": {"id": 1, "method": "list", "params": {}}}).encode() + b"\\f")
    except GONE:
        pass
    try:
        while b"\\f" not in got:
            d = s.recv(65536)
            if not d: break
            got += d
    except GONE:
        pass
    s.close()
    return "busy" if b"E_BUSY" in got else "served" if b'"result"' in got else "closed"
for _ in range(8): burst()
print(ask(), flush=True)
sys.stdin.readline()
print(ask(), flush=True)
time.sleep(1.2)
print(ask(), flush=True)
`;
      const child = spawn(PYTHON, ['-c', script, agent.socket], { uid: user.uid, gid: user.gid, stdio: ['pipe', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
      });
      const line = async (n: number) => {
        for (let i = 0; i < 200 && out.split('\n').length <= n; i++) await new Promise((r) => setTimeout(r, 25));
      };
      await line(1);
      await rootServed(); // while the user waits
      child.stdin.write('\n');
      await new Promise((r) => child.once('exit', r));
      assert.deepEqual(out.trim().split('\n'), ['busy', 'busy', 'served'], 'refused for a second, then served');
      assert.ok(
        agent.logs.some((l) =>
          l.msg.includes(`uid ${user.uid} had 8 connections closed for broken or invalid traffic in 10 s: its new connections are refused for 1000 ms`),
        ),
        'and the agent says why',
      );
    } finally {
      user.remove();
    }
  });

  it('removes the temporary files a crashed agent left, at start', async () => {
    const records = join(tree.pins, '.usernsd-records');
    mkdirSync(records, { recursive: true, mode: 0o700 });
    mkdirSync(tree.state, { recursive: true, mode: 0o700 });
    const stale = [join(tree.state, '.ranges.json.99999999.tmp'), join(tree.state, '.contexts.json.99999998.tmp'), join(records, '.a.json.99999997.tmp')];
    for (const f of stale) writeFileSync(f, '{', { mode: 0o600 });
    const notOurs = join(tree.state, 'notes.tmp');
    writeFileSync(notOurs, 'x');
    agent = await startAgent(tree);
    for (const f of stale) assert.equal(existsSync(f), false, `${f} is removed`);
    assert.equal(existsSync(notOurs), true, 'files not named like ours are left alone');
    assert.ok(agent.logs.some((l) => /^Removed 3 temporary file/.test(l.msg)));
  });
});

describe('e2e: a storm of every kind of abuse at once, against a well-behaved client (root)', function () {
  this.timeout(120_000);
  before(function () {
    if (!isRoot) this.skip();
  });

  // Timing is the benchmark's (npm run bench: bench/storm.ts, BENCHMARKS.md); this asserts what must hold on any machine.
  it('serves root every time, answers every good request, keeps the log and memory bounded', async () => {
    const r = await runStorm(4);
    assert.ok((r.hostile[0].invalidFrames as number) > 1000, `the storm happened: ${JSON.stringify(r.hostile[0])}`);
    assert.equal(r.rootFailed, 0, 'root was refused or went unanswered');
    // How often root got through in the storm's three seconds is the scheduler's (CI saw 7 where this
    // machine sees 40): the count asserted is only that root's loop ran, each time on a new connection.
    const seen = `root served ${r.rootServed} times; good client ${JSON.stringify(r.storm)}`;
    assert.ok(r.rootServed >= 3, seen);
    assert.equal(r.storm.errors, 0, 'a good request went unanswered');
    assert.ok(r.storm.count > 50, `the good client got ${r.storm.count} answers in the storm (${seen})`);
    assert.ok(r.logBytesStorm < 256 * 1024, `${r.logBytesStorm} bytes logged in the storm`);
    assert.ok(r.rssAfterMb < 300, `${r.rssAfterMb} MiB resident after the storm`);
    const flood = r.hostile[1].flood as { admitted: number };
    assert.ok(flood.admitted <= P.LIMITS.MAX_CONNECTIONS_PER_UID, `one uid held ${flood.admitted} connections`);
  });
});

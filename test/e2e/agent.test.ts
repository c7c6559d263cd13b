// The agent as a process on a temporary tree, driven by usernsctl: resolve, concurrency, authorization, enter, reload, drain.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { AgentClient } from '../../agent/wire/client.ts';
import { UsernsError } from '../../agent/errors.ts';
import * as P from '../../agent/wire/protocol.ts';
import { DRAIN_TIMEOUT_MS } from '../../agent/manager.ts';
import { GROWN_NEW_SPACE_BYTES, SETTLE_HEAP_BYTES } from '../../agent/memory.ts';
import { checkoutReachableBy, cleanup, makeCheckoutReachable, PYTHON, rootAgentSuite, startAgent, USERNSD, usernsctl, usernsctlAt } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { kernelMaps, makeUser, mountsUnder } from '../helpers/kernel.ts';
import { NATIVE_SPAWNER } from '../helpers/unit.ts';

const A = '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n';

/**
 * usernsd started by hand on `config`, as an admin would beside whatever runs: its exit status, its
 * stderr, and what it logged before it ended (each message up to its first colon; the descriptors
 * it closed at start, SPEC §12, left out).
 */
function startByHand(config: string): { status: number | null; stderr: string; logged: string[] } {
  const r = spawnSync(process.execPath, [USERNSD, '--config', config], { encoding: 'utf8', timeout: 15000 });
  const logged = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => (JSON.parse(l) as { msg: string }).msg)
    .filter((m) => !/^Closed \d+ inherited descriptor/.test(m))
    .map((m) => m.replace(/:.*/s, ''));
  return { status: r.status, stderr: r.stderr, logged };
}

describe('e2e: usernsctl without an agent', () => {
  it('exits 3 and says which socket and how to start the agent', async () => {
    const r = await usernsctl(['--socket', '/nonexistent/usernsd.sock', 'list']);
    assert.equal(r.code, 3);
    assert.match(r.err, /cannot reach the agent at \/nonexistent\/usernsd\.sock: ENOENT/);
    assert.match(r.err, /systemctl start usernsd/);
  });

  it('exits 2 on usage errors, naming the problem', async () => {
    for (const [args, re] of [
      [['resolve'], /resolve takes one LABEL/],
      [['map', '--from', 'a'], /map needs --from LABEL and --to LABEL/],
      [['frobnicate'], /unknown command "frobnicate"/],
      [['map', '--from', 'a', '--to', 'b', '--uid', 'x'], /--uid x: not a number/],
    ] as const) {
      const r = await usernsctl([...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, re);
    }
  });
});

describe('e2e: the agent, driven by usernsctl (root)', function () {
  let tree: Tree;
  let agent: RunningAgent;
  const ctl = (args: string[], opts: Parameters<typeof usernsctl>[1] = {}) => usernsctlAt(agent.socket, args, opts);

  rootAgentSuite((t) => (tree = t)); // the agent pins namespaces: root

  it('resolve creates the namespace once, then reuses the pin', async () => {
    tree.context('a.conf', A);
    agent = await startAgent(tree);
    const first = await ctl(['--json', 'resolve', 'a']);
    assert.equal(first.code, 0, first.err);
    const r1 = JSON.parse(first.out) as P.ResolveResult;
    assert.equal(r1.created, true);
    assert.equal(r1.path, `${tree.pins}/a`);
    assert.deepEqual(kernelMaps(r1.path), { uid: '0 100000 65536', gid: '0 100000 65536' });
    assert.equal(statSync(r1.path).ino, r1.ino);
    const second = JSON.parse((await ctl(['resolve', 'a', '--json'])).out) as P.ResolveResult;
    assert.equal(second.created, false);
    assert.equal(second.ino, r1.ino);
    assert.equal(mountsUnder(tree.pins).length, 1);
    const human = await ctl(['resolve', 'a']);
    assert.match(
      human.out,
      new RegExp(`^a: ${tree.pins}/a\\n  parent host, owner root \\(0:0\\), setgroups allow, nsfs inode ${r1.ino}\\n  uid_map 0 100000 65536\\n`),
    );
    assert.equal((await ctl(['resolve', '--pin', 'a'])).out, `${tree.pins}/a\n`);
    const created = agent.logs.filter((l) => l.msg === 'Created user namespace');
    assert.equal(created.length, 1);
    assert.equal(created[0].label, 'a');
    assert.equal(typeof created[0].ms, 'number');
    const missing = await ctl(['resolve', 'nope']);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /^usernsctl: E_NOT_FOUND: no context "nope" is configured/);
    assert.equal((await ctl(['release', 'a'])).out, 'released a\n');
    assert.equal(existsSync(r1.path), false);
    assert.equal(mountsUnder(tree.pins).length, 0);
    assert.equal((await ctl(['release', 'a'])).out, 'a: nothing was pinned\n');
    assert.equal((JSON.parse((await ctl(['--json', 'resolve', 'a'])).out) as P.ResolveResult).created, true, 'created anew after a release');
  });

  it("releases, with a context, the orphans left in its namespace (their files gone while the agent was down): none keeps the old parent's ids in use", async () => {
    tree.context('proj.conf', '[context]\nuid_map = 0 4000000 10\ngid_map = 0 4000000 10\n');
    tree.context('kid.conf', '[context]\nparent = proj\nuid_map = 0 0 5\ngid_map = 0 0 5\n');
    tree.context('other.conf', A);
    agent = await startAgent(tree);
    assert.equal((await ctl(['resolve', 'kid'])).code, 0);
    assert.equal((await ctl(['resolve', 'other'])).code, 0);
    assert.equal(await agent.stop(), 0);
    rmSync(`${tree.contexts}/kid.conf`);
    agent = await startAgent(tree);
    assert.ok(
      agent.logs.some((l) => l.status === 'orphan' && l.label === 'kid'),
      'kid is adopted as an orphan',
    );
    const r = await ctl(['release', 'proj']);
    assert.equal(r.out, 'released kid (nested in proj)\nreleased proj\n', r.err);
    assert.deepEqual(
      mountsUnder(tree.pins).map((m) => m.split('/').pop()),
      ['other'],
      'only the pin outside it is left',
    );
  });

  it('finishes the work of a client that vanishes mid-request, and drops its reply', async () => {
    tree.context('lazy.conf', '[context]\nuid_map = 0 300000 1000\ngid_map = 0 300000 1000\n');
    agent = await startAgent(tree);
    const sock = connect(agent.socket);
    await new Promise((r) => sock.once('connect', r));
    sock.write(`${JSON.stringify({ type: 'request', data: { id: 40, method: 'resolve', params: { label: 'lazy' } } })}\f`);
    sock.destroy();
    await agent.waitForLog((l) => l.msg === 'Client left before its reply' && l.id === 40);
    assert.equal(existsSync(`${tree.pins}/lazy`), true, 'the namespace was created all the same');
    assert.equal((JSON.parse((await ctl(['--json', 'resolve', 'lazy'])).out) as P.ResolveResult).created, false);
  });

  it('creates exactly one namespace for many concurrent resolves, nested ones too', async () => {
    tree.context('a.conf', A);
    tree.context('b.conf', '[context]\nparent = a\nuid_map = 0 1000 5000\ngid_map = 0 1000 5000\n');
    agent = await startAgent(tree);
    const clients = await Promise.all(Array.from({ length: 40 }, () => AgentClient.connect(agent.socket)));
    try {
      // Stopped, the agent cannot answer: every request is queued in the kernel, so all arrive together.
      agent.child.kill('SIGSTOP');
      const calls = clients.map((c, i) => c.call(P.resolve, { label: i % 2 ? 'a' : 'b' }));
      await new Promise((r) => setTimeout(r, 100));
      agent.child.kill('SIGCONT');
      const replies = await Promise.all(calls);
      for (const label of ['a', 'b']) {
        const mine = replies.filter((r) => r.label === label);
        assert.equal(mine.length, 20);
        assert.equal(new Set(mine.map((r) => r.ino)).size, 1, `one namespace for ${label}`);
        // a is created by one of its own resolves, or as b's parent: at most one reply says so.
        assert.equal(mine.filter((r) => r.created).length, label === 'b' ? 1 : Math.min(1, mine.filter((r) => r.created).length));
      }
      assert.deepEqual(
        agent.logs
          .filter((l) => l.msg === 'Created user namespace')
          .map((l) => l.label)
          .sort(),
        ['a', 'b'],
        'a and b created once each',
      );
      assert.equal(mountsUnder(tree.pins).length, 2);
      assert.deepEqual(kernelMaps(`${tree.pins}/b`), { uid: '0 1000 5000', gid: '0 1000 5000' });
    } finally {
      for (const c of clients) c.close();
    }
    // And through usernsctl processes, all at once: the same pin for every one.
    const runs = await Promise.all(Array.from({ length: 8 }, () => ctl(['--json', 'resolve', 'b'])));
    assert.deepEqual(new Set(runs.map((r) => (JSON.parse(r.out) as P.ResolveResult).ino)).size, 1);
  });

  it('map answers with squash, list and status show the contexts', async () => {
    tree.context('a.conf', A + '[squash]\nmode = root\nanonuid = 65534\nanongid = 65534\n');
    tree.context('b.conf', '[context]\nuid_map = 0 300000 1000\ngid_map = 0 300000 1000\n[squash]\nmode = none\n');
    agent = await startAgent(tree);
    const m = await ctl(['map', '--from', 'b', '--to', 'host', '--uid', '0', '--uid', '5', '--uid', '4000', '--gid', '7']);
    assert.equal(m.code, 0, m.err);
    assert.equal(m.out, 'uid 0 -> 300000\nuid 5 -> 300005\nuid 4000 -> 65534\ngid 7 -> 300007\n');
    const j = JSON.parse((await ctl(['--json', 'map', '--from', 'a', '--to', 'host', '--uid', '0', '--uid', '1'])).out) as P.MapResult;
    assert.deepEqual(j, { from: 'a', to: 'host', uids: [65534, 100001], gids: [] });
    const list = await ctl(['list']);
    assert.match(list.out, /^LABEL\s+PARENT\s+OWNER\s+PINNED\s+CREATE\s+SQUASH\na\s+host\s+root\s+no\s+lazy\s+root\nb\s+host\s+root\s+no\s+lazy\s+none\n$/);
    const st = JSON.parse((await ctl(['--json', 'status'])).out) as P.StatusResult;
    assert.equal(st.full, true);
    assert.equal(st.contexts, 2);
    assert.equal(st.pinned, 0);
    assert.deepEqual(st.errors, []);
    assert.equal(st.counters?.['requests.map'], 2);
    assert.equal(st.counters?.['requests.list'], 1);
    assert.equal(st.latencyMs?.map?.count, 2);
    assert.ok(st.latencyMs.map.p50 > 0 && st.latencyMs.map.p50 <= st.latencyMs.map.p99);
    assert.deepEqual(st.contextStates, [
      { label: 'a', owner: { uid: 0, gid: 0, name: 'root' }, state: 'not created' },
      { label: 'b', owner: { uid: 0, gid: 0, name: 'root' }, state: 'not created' },
    ]);
    assert.deepEqual(st.spawner, NATIVE_SPAWNER ? { kind: 'native', pid: null } : { kind: 'node', pid: null }, 'the spawner starts at the first creation');
    assert.equal((await ctl(['map', '--from', 'nope', '--to', 'host', '--uid', '1'])).code, 1);
    await ctl(['resolve', 'a']);
    const human = (await ctl(['status'])).out;
    assert.match(human, /^usernsd \S+ \(protocol 1\), up \d+s\npid: +\d+\n/);
    if (NATIVE_SPAWNER) {
      const pid = /\nspawner: +usernsd-spawner \(pid (\d+)\)\n/.exec(human)?.[1];
      assert.ok(pid, human);
      assert.equal(readFileSync(`/proc/${pid}/status`, 'utf8').match(/^PPid:\s+(\d+)/m)?.[1], String(agent.child.pid), "the agent's child");
    }
    assert.match(human, /\nCONTEXT +OWNER +STATE\na +root \(0:0\) +pinned\nb +root \(0:0\) +not created\n/);
    assert.match(human, /\nMETHOD +REQUESTS +P50_MS +P90_MS +P99_MS +MAX_MS\nlist +1 /);
    assert.match(human, /counters: +created=1 errors\.E_NOT_FOUND=1 requests\.list=1 requests\.map=3 requests\.resolve=1 requests\.status=1/);
  });

  it('lets a user resolve, map and enter its own and [access] contexts, and refuses the others', async function () {
    const user = makeUser();
    const other = makeUser();
    const group = `unsdg${process.pid % 100000}`;
    const restoreModes = makeCheckoutReachable();
    try {
      const unreachable = checkoutReachableBy(user.uid, user.gid);
      if (unreachable) throw new Error(`${unreachable}: the checkout itself must be readable by other users`);
      execFileSync('groupadd', ['--system', group]);
      execFileSync('usermod', ['-a', '-G', group, user.name]);
      tree.delegate(user.name, 200000, 2000);
      tree.delegate(other.name, 204000, 1000);
      tree.context('own.conf', `[context]\nowner = ${user.name}\nuid_map = 0 200000 1000\ngid_map = 0 200000 1000\nsetgroups = deny\n`);
      tree.context('own2.conf', `[context]\nowner = ${user.name}\nuid_map = 0 201000 1000\ngid_map = 0 201000 1000\nsetgroups = allow\n`);
      tree.context('byuser.conf', `[context]\nuid_map = 0 202000 1000\ngid_map = 0 202000 1000\n[access]\nusers = ${user.name}\n`);
      tree.context('bygroup.conf', `[context]\nuid_map = 0 203000 1000\ngid_map = 0 203000 1000\n[access]\ngroups = ${group}\n`);
      tree.context('theirs.conf', `[context]\nowner = ${other.name}\nuid_map = 0 204000 1000\ngid_map = 0 204000 1000\n`);
      agent = await startAgent(tree);
      const as = { user: { uid: user.uid, gid: user.gid } };
      for (const label of ['own', 'byuser', 'bygroup']) {
        const r = await ctl(['--json', 'resolve', label], as);
        assert.equal(r.code, 0, `${label}: ${r.err}`);
        assert.equal((JSON.parse(r.out) as P.ResolveResult).label, label);
      }
      const denied = await ctl(['resolve', 'theirs'], as);
      assert.equal(denied.code, 1);
      assert.match(denied.err, new RegExp(`^usernsctl: E_PERMISSION: uid ${user.uid} may not use context "theirs"`));
      // The same answer whether the context exists or not: nothing is learned about others' contexts.
      const ghost = await ctl(['resolve', 'no-such'], as);
      assert.equal(ghost.err.replace('no-such', 'theirs'), denied.err);
      assert.equal(existsSync(`${tree.pins}/theirs`), false, 'a refused resolve creates nothing');
      const mapDenied = await ctl(['map', '--from', 'theirs', '--to', 'host', '--uid', '0'], as);
      assert.equal(mapDenied.code, 1);
      assert.match(mapDenied.err, /E_PERMISSION/);
      const mapped = await ctl(['map', '--from', 'own', '--to', 'host', '--uid', '1'], as);
      assert.equal(mapped.out, 'uid 1 -> 200001\n');
      const list = await ctl(['--json', 'list'], as);
      assert.deepEqual((JSON.parse(list.out) as P.ListResult).contexts.map((c) => c.label).sort(), ['bygroup', 'byuser', 'own', 'own2']);
      const st = JSON.parse((await ctl(['--json', 'status'], as)).out) as P.StatusResult;
      assert.equal(st.full, false);
      assert.equal(st.contexts, 4);
      assert.equal(st.errors, undefined);
      for (const cmd of [['reload'], ['release', 'own']]) {
        const r = await ctl(cmd, as);
        assert.equal(r.code, 1);
        assert.match(r.err, new RegExp(`^usernsctl: E_PERMISSION: ${cmd[0]} is for root only`));
      }
      // enter, without root: uid 0 and gid 0 inside, with setgroups deny as well as allow.
      for (const label of ['own', 'own2']) {
        const e = await ctl(['enter', label, '--', 'sh', '-c', 'id -u; id -g; cat /proc/self/uid_map; cat /proc/self/setgroups'], as);
        assert.equal(e.code, 0, `${label}: ${e.err}`);
        const [uid, gid, map, sg] = e.out
          .trim()
          .split('\n')
          .map((s) => s.trim().split(/\s+/).join(' '));
        assert.equal(uid, '0');
        assert.equal(gid, '0');
        assert.equal(map, label === 'own' ? '0 200000 1000' : '0 201000 1000');
        assert.equal(sg, label === 'own' ? 'deny' : 'allow');
      }
      const status = await ctl(['enter', 'own', '--', 'sh', '-c', 'exit 7'], as);
      assert.equal(status.code, 7, 'enter passes on the exit status of the command');
      const notOwner = await ctl(['enter', 'byuser', '--', 'true'], as);
      assert.equal(notOwner.code, 1);
      assert.match(
        notOwner.err,
        /^usernsctl: E_PERMISSION: the kernel lets only root and a namespace's owner join it from here; \[access\] users may resolve and map "byuser", not enter it/,
      );
    } finally {
      await cleanup(undefined);
      restoreModes();
      user.remove();
      other.remove();
      spawnSync('groupdel', [group]);
    }
  });

  it('reload: a broken file keeps its last good version, a removed one is released, SIGHUP works too', async () => {
    tree.context('a.conf', A);
    tree.context('b.conf', '[context]\nuid_map = 0 300000 1000\ngid_map = 0 300000 1000\n');
    agent = await startAgent(tree);
    assert.equal((await ctl(['resolve', 'a'])).code, 0);
    assert.equal((await ctl(['resolve', 'b'])).code, 0);
    const broken = tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = banana\n');
    rmSync(`${tree.contexts}/b.conf`);
    tree.context('c.conf', '[context]\nuid_map = 0 400000 1000\ngid_map = 0 400000 1000\n');
    const r = await ctl(['reload']);
    assert.equal(r.code, 1, 'errors in the configuration make reload exit 1');
    assert.match(r.out, /^reloaded: 2 context\(s\)\n/);
    assert.match(r.out, / {2}added: c\n/);
    assert.match(r.out, / {2}removed: b\n/);
    assert.match(r.out, / {2}kept: a \(file has errors: last good version stays\)\n/);
    assert.match(r.err, new RegExp(`^${broken}: \\[context\\] gid_map: `));
    assert.equal((await ctl(['resolve', 'a'])).code, 0, 'a keeps working on its last good version');
    assert.equal(existsSync(`${tree.pins}/b`), false, 'the removed context is released');
    assert.match((await ctl(['resolve', 'b'])).err, /E_NOT_FOUND/);
    const st = JSON.parse((await ctl(['--json', 'status'])).out) as P.StatusResult;
    assert.equal(st.errors!.length, 1);
    assert.match(st.errors![0], /gid_map/);
    assert.ok(
      agent.logs.some((l) => l.level === 40 && /Failed to load context: .*a\.conf.*gid_map/.test(l.msg)),
      'the error is logged',
    );
    tree.context('d.conf', '[context]\nuid_map = 0 500000 1000\ngid_map = 0 500000 1000\n');
    agent.child.kill('SIGHUP');
    await agent.waitForLog((l) => l.msg === 'Reloaded configuration' && l.source === 'SIGHUP');
    assert.equal((await ctl(['resolve', 'd'])).code, 0);
  });

  it('sleeps when idle: its main thread is not woken by a timer of its own (an idle daemon costs nothing)', async () => {
    tree.context('a.conf', A);
    agent = await startAgent(tree);
    // Its event loop is its main thread: each wakeup is a voluntary context switch there.
    const switches = () =>
      Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${agent!.child.pid}/task/${agent!.child.pid}/status`, 'utf8'))![1]);
    await new Promise((r) => setTimeout(r, 500)); // what the start left to finish (its log lines, a first collection)
    const before = switches();
    await new Promise((r) => setTimeout(r, 2000));
    // prom-client's event-loop histogram woke it every 10 ms: about 200 here.
    assert.ok(switches() - before < 40, `woke ${switches() - before} times in 2 s of idling`);
  });

  it("a start on a long listing lets V8's young generation grow while it loads, to GROWN_NEW_SPACE_BYTES at most, then collects it back and holds it there: a reload of every file does not grow it", async () => {
    // Past GROW_YOUNG_MIN_FILES (memory.ts), and enough garbage that V8, left to itself, grows the
    // young generation past the bound (to 32 MiB for 10,000 files; 128 for 65,535).
    const n = 10_000;
    const text = (i: number, extra = '') => `[context]\nuid_map = 0 ${(i + 1) * 65536} 65536\ngid_map = 0 ${(i + 1) * 65536} 65536\n${extra}`;
    for (let i = 0; i < n; i++) tree.context(`m${i}.conf`, text(i));
    agent = await startAgent(tree);
    // Once it serves: the start's readiness does not wait for the collection.
    const start = await agent.waitForLog((l) => l.msg === 'Settled memory after the load');
    assert.ok(agent.logs.indexOf(start) > agent.logs.findIndex((l) => l.msg === 'Serving'), 'the start served first');
    assert.ok(start.gc === true && start.collected === true, JSON.stringify(start));
    assert.ok((start.newSpaceBeforeMb as number) > 2, `the load grew the young generation: ${JSON.stringify(start)}`);
    assert.ok((start.newSpaceBeforeMb as number) <= GROWN_NEW_SPACE_BYTES / 2 ** 20, `no further than the bound: ${JSON.stringify(start)}`);
    assert.ok((start.newSpaceMb as number) <= 2, `and the collection shrank it back: ${JSON.stringify(start)}`);
    // Many files changed: a reload whose garbage would grow a young generation left free to grow.
    for (let i = 0; i < 2100; i++) tree.context(`m${i}.conf`, text(i, '# edited\n'));
    assert.equal((await ctl(['reload'])).code, 0);
    const reload = await agent.waitForLog((l) => l.msg === 'Settled memory after the reload');
    assert.ok((reload.newSpaceBeforeMb as number) <= 2, `the reload found it held at its size: ${JSON.stringify(reload)}`);
  });

  it('a reload reads the files that changed and journals what changed; a stop writes the record whole, and a start on it writes nothing', async () => {
    tree.context('a.conf', A);
    tree.context('b.conf', '[context]\nuid_map = 0 300000 1000\ngid_map = 0 300000 1000\n');
    await new Promise((r) => setTimeout(r, 1100)); // older than the racy window: kept after the first read
    agent = await startAgent(tree);
    // A first start writes its record once it serves.
    await agent.waitForLog((l) => l.msg === 'Recorded the contexts in force');
    const whole = readFileSync(`${tree.state}/contexts.json`, 'utf8');
    tree.context('b.conf', '[context]\nuid_map = 0 310000 1000\ngid_map = 0 310000 1000\n');
    tree.context('c.conf', '[context]\nuid_map = 0 400000 1000\ngid_map = 0 400000 1000\n');
    assert.equal((await ctl(['reload'])).code, 0);
    const line = agent.logs.findLast((l) => l.msg === 'Reloaded configuration')!;
    assert.equal(line.parsed, 2, 'only the changed and the new file are read and parsed');
    // After each load the agent settles its memory (settleMemory), with gc exposed and V8's young
    // generation kept at its first size (bin/usernsd.js), as its own V8 says; after a reload, once
    // the reload has answered (Manager.settleSoon). Three files leave a small heap: nothing collected
    // (bench/scale.ts sees 65,535 collected).
    const afterReload = await agent.waitForLog((l) => l.msg === 'Settled memory after the reload');
    assert.ok(agent.logs.indexOf(afterReload) > agent.logs.indexOf(line), 'the reload answered first');
    const settled = [...agent.logs.filter((l) => l.msg === 'Settled memory after the load'), afterReload];
    assert.equal(settled.length, 2, 'at start and after the reload');
    for (const l of settled) {
      assert.ok(l.gc === true && typeof l.newSpaceMb === 'number' && l.newSpaceMb <= 2, JSON.stringify(l));
      assert.ok(l.collected === false && typeof l.heapMb === 'number' && l.heapMb * 2 ** 20 < SETTLE_HEAP_BYTES, JSON.stringify(l));
    }
    assert.equal(readFileSync(`${tree.state}/contexts.json`, 'utf8'), whole, 'contexts.json is not rewritten for two changes');
    const journal = readFileSync(`${tree.state}/contexts.journal`, 'utf8').trimEnd().split('\n');
    assert.deepEqual(
      journal.slice(1).map((l) => (JSON.parse(l) as { set: { label: string } }).set.label),
      ['b', 'c'],
    );
    await agent.stop();
    assert.equal(existsSync(`${tree.state}/contexts.journal`), false, 'written whole at stop, for an older usernsd');
    const recorded = JSON.parse(readFileSync(`${tree.state}/contexts.json`, 'utf8')) as { contexts: { label: string; uidMap: { outside: number }[] }[] };
    assert.deepEqual(
      recorded.contexts.map((c) => [c.label, c.uidMap[0].outside]),
      [
        ['a', 100000],
        ['b', 310000],
        ['c', 400000],
      ],
    );
    // Started again on the same files: what is in force is the record's, and nothing is written.
    const text = readFileSync(`${tree.state}/contexts.json`, 'utf8');
    const mtime = statSync(`${tree.state}/contexts.json`).mtimeMs;
    agent = await startAgent(tree);
    assert.equal(readFileSync(`${tree.state}/contexts.json`, 'utf8'), text);
    assert.equal(statSync(`${tree.state}/contexts.json`).mtimeMs, mtime, 'not rewritten');
    assert.equal(existsSync(`${tree.state}/contexts.journal`), false);
    // One file changed while it was down: journaled at start, not written whole.
    await agent.stop();
    tree.context('c.conf', '[context]\nuid_map = 0 410000 1000\ngid_map = 0 410000 1000\n');
    agent = await startAgent(tree);
    assert.equal(statSync(`${tree.state}/contexts.json`).mtimeMs, mtime, 'not rewritten');
    const lines = readFileSync(`${tree.state}/contexts.journal`, 'utf8').trimEnd().split('\n').slice(1);
    assert.deepEqual(
      lines.map((l) => (JSON.parse(l) as { set: { label: string; uidMap: { outside: number }[] } }).set).map((c) => [c.label, c.uidMap[0].outside]),
      [['c', 410000]],
    );
  });

  it('SIGTERM finishes requests in flight, removes the socket and exits 0, without waiting out the drain deadline', async () => {
    // Each creation runs an exec_start hook that waits until the test lets it go: the eight requests
    // are in flight when the stop begins, whatever order the agent's event loop takes the signal in.
    const gate = `${tree.dir}/gate`;
    const hook = `${tree.dir}/hold.sh`;
    writeFileSync(hook, `#!/bin/sh\ntouch "${tree.dir}/started.$USERNS_LABEL"\nwhile [ ! -e "${gate}" ]; do sleep 0.01; done\n`, { mode: 0o755 });
    for (const l of 'abcdefgh')
      tree.context(
        `${l}.conf`,
        `[context]\nuid_map = 0 ${100000 + l.charCodeAt(0) * 1000} 1000\ngid_map = 0 ${100000 + l.charCodeAt(0) * 1000} 1000\n[delegate]\nexec_start = ${hook}\n`,
      );
    agent = await startAgent(tree);
    const client = await AgentClient.connect(agent.socket);
    let stopAt: number;
    try {
      const calls = [...'abcdefgh'].map((label) => client.call(P.resolve, { label }));
      for (const l of 'abcdefgh') while (!existsSync(`${tree.dir}/started.${l}`)) await new Promise((r) => setTimeout(r, 10));
      stopAt = Date.now();
      agent.child.kill('SIGTERM');
      await agent.waitForLog((l) => l.msg === 'Stopping: no new connections; finishing requests in flight');
      writeFileSync(gate, '');
      const replies = await Promise.all(calls);
      assert.deepEqual(
        replies.map((r) => r.created),
        Array(8).fill(true),
      );
    } finally {
      writeFileSync(gate, '');
      client.close();
    }
    assert.deepEqual(await agent.exited, { code: 0, signal: null });
    // A timer of the drain left behind held the process to the drain deadline (DRAIN_TIMEOUT_MS, 10 s).
    assert.ok(Date.now() - stopAt < DRAIN_TIMEOUT_MS, `exited ${Date.now() - stopAt} ms after SIGTERM: the drain deadline was waited out`);
    assert.equal(existsSync(agent.socket), false, 'the socket is removed');
    const msgs = agent.logs.map((l) => l.msg);
    assert.ok(
      msgs.indexOf('Stopping: no new connections; finishing requests in flight') < msgs.indexOf('Created user namespace'),
      'work finished after the stop began',
    );
    assert.equal(msgs.filter((m) => m === 'Created user namespace').length, 8);
    assert.equal(msgs.at(-1), 'Stopped');
    const after = await ctl(['status']);
    assert.equal(after.code, 3);
  });

  it("refuses to start on a running agent's socket (with directories of its own), and on a broken settings file", async () => {
    tree.context('a.conf', A);
    agent = await startAgent(tree);
    const own = `${tree.dir}/own.conf`;
    const conf0 = readFileSync(tree.config, 'utf8');
    writeFileSync(own, conf0.replace(/^state = .*$/m, `state = ${tree.dir}/own-state`).replace(/^pins = .*$/m, `pins = ${tree.dir}/own-pins`), { mode: 0o644 });
    const second = startByHand(own);
    assert.equal(second.status, 1, second.stderr);
    assert.deepEqual(second.logged, ['Failed to start'], 'refused before the load');
    assert.match(second.stderr, /another agent is already serving .*usernsd\.sock: stop it first/);
    assert.equal((await ctl(['list'])).code, 0, 'the first agent is untouched');
    await agent.stop();
    const conf = readFileSync(tree.config, 'utf8');
    tree.context('../usernsd.conf', conf + 'bogus_key = 1\n');
    const broken = startByHand(tree.config);
    assert.equal(broken.status, 1);
    assert.match(broken.stderr, /usernsd: .*usernsd\.conf: \[agent\] bogus_key: /);
  });

  it('a second agent on the same state and pins directories refuses before it touches anything, naming the first, whatever socket it is given', async () => {
    // An eager context the first made, and a record of what is in force: what a second agent would
    // adopt, reconcile, create and rewrite before it found the socket taken.
    tree.context('a.conf', `${A}create = eager\n`);
    agent = await startAgent(tree);
    await agent.waitForLog((l) => l.msg === 'Recorded the contexts in force');
    const before = statSync(`${tree.state}/contexts.json`, { bigint: true });
    const pid = agent.child.pid!;
    const conf = readFileSync(tree.config, 'utf8');
    const other = `${tree.dir}/other.conf`;
    writeFileSync(other, conf.replace(/^socket = .*$/m, `socket = ${tree.dir}/other.sock`), { mode: 0o644 });
    for (const config of [tree.config, other]) {
      const second = startByHand(config);
      assert.equal(second.status, 1, `${config}: ${second.stderr}`);
      assert.match(second.stderr, new RegExp(`usernsd: another usernsd \\(pid ${pid}\\) is using the state directory ${tree.state}: stop it first`));
      // Nothing done before the refusal: nothing logged but the refusal.
      assert.deepEqual(second.logged, ['Failed to start'], second.stderr);
    }
    assert.equal(existsSync(`${tree.dir}/other.sock`), false, 'the second agent never listened');
    assert.equal(statSync(`${tree.state}/contexts.json`, { bigint: true }).mtimeNs, before.mtimeNs, 'the record is as the first agent wrote it');
    assert.equal((await ctl(['list'])).code, 0, 'the first agent is untouched');
    await agent.stop();
    // Once it is gone, the directories are free: an agent starts on them at once.
    agent = await startAgent(tree);
    assert.equal((await ctl(['resolve', 'a'])).code, 0);
  });

  it('an unprivileged user cannot keep the agent from starting by taking its lock: it can lock nothing the agent locks', async () => {
    tree.context('a.conf', A);
    agent = await startAgent(tree);
    await agent.stop(); // the directories exist now, as on a host where the agent is stopped for an upgrade
    const user = makeUser();
    try {
      // As the user: an exclusive flock on everything it can open in the state and pins directories, held.
      const script = [
        'import fcntl, os, sys',
        'held = []',
        'for d in sys.argv[1:]:',
        '    for root, dirs, files in os.walk(d):',
        '        for p in [root] + [os.path.join(root, f) for f in files]:',
        '            try:',
        '                fd = os.open(p, os.O_RDONLY)',
        '                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)',
        '                held.append(p)',
        '            except OSError:',
        '                pass',
        'print("\\n".join(held), flush=True)',
        'sys.stdin.read()',
      ].join('\n');
      const locker = spawn('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', '--', PYTHON, '-c', script, tree.state, tree.pins], {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      const held = await new Promise<string>((done, fail) => {
        locker.stdout.setEncoding('utf8').once('data', done);
        locker.once('close', (code) => fail(new Error(`the user's locker exited (${code}) before it said what it holds`)));
      });
      try {
        assert.ok(held.split('\n').includes(tree.pins), `the user holds a lock on what it can open (${held.trim()}): the test tests something`);
        agent = await startAgent(tree);
        assert.equal((await ctl(['resolve', 'a'])).code, 0);
      } finally {
        locker.stdin.end();
        await new Promise((done) => locker.once('close', done));
      }
    } finally {
      user.remove();
    }
  });

  it('refuses to start on state or pin records a newer usernsd wrote, and rewrites none of them', async () => {
    tree.context('a.conf', A);
    agent = await startAgent(tree);
    assert.equal((await ctl(['resolve', 'a'])).code, 0);
    await agent.stop();
    const records = `${tree.pins}/.usernsd-records`;
    assert.equal(readFileSync(`${records}/format`, 'utf8'), '1\n', 'the records directory says its format');
    assert.equal((JSON.parse(readFileSync(`${records}/a.json`, 'utf8')) as { format: number }).format, 1, 'and so does each record');
    // Every file that carries a format, each in turn at a newer one than this build knows.
    writeFileSync(`${tree.state}/ranges.json`, JSON.stringify({ version: 1, allocations: {} }));
    writeFileSync(`${tree.state}/views.json`, JSON.stringify({ version: 1, views: [] }));
    const files: [string, string, string][] = [
      [
        `${tree.state}/ranges.json`,
        JSON.stringify({ version: 2, allocations: {}, more: 'of a newer usernsd' }),
        'format 2, written by a newer usernsd; this one reads format 1',
      ],
      [`${tree.state}/contexts.json`, JSON.stringify({ version: 7, contexts: [] }), 'format 7, written by a newer usernsd'],
      [`${tree.state}/views.json`, JSON.stringify({ version: 2, views: [{ target: '/x' }] }), 'format 2, written by a newer usernsd'],
      [`${records}/format`, '3\n', 'says format 3, written by a newer usernsd; this one reads format 1'],
    ];
    for (const [file, newer, said] of files) {
      const before = readFileSync(file, 'utf8');
      writeFileSync(file, newer);
      const r = spawnSync(process.execPath, [new URL('../../bin/usernsd.js', import.meta.url).pathname, '--config', tree.config], {
        encoding: 'utf8',
        timeout: 15000,
      });
      assert.equal(r.status, 1, `${file}: ${r.stderr}`);
      assert.ok(r.stderr.includes(`${file} `) && r.stderr.includes(said), `${file}: ${r.stderr}`);
      assert.match(r.stderr, /Refusing to start rather than guess: .*usernsd\(8\) UPGRADES/);
      assert.equal(readFileSync(file, 'utf8'), newer, `${file} is left as the newer usernsd wrote it`);
      assert.equal(existsSync(`${tree.dir}/usernsd.sock`), false, 'nothing served');
      writeFileSync(file, before);
    }
    // Back at this build's formats: it starts, and the pin made before is adopted.
    agent = await startAgent(tree);
    assert.equal((JSON.parse((await ctl(['--json', 'resolve', 'a'])).out) as P.ResolveResult).created, false);
  });

  it('a local pool lists, refuses to import, and forgets only what is not pinned, then allocates anew (usernsctl ranges)', async () => {
    tree.context('auto.conf', '[context]\nrange = auto\nsize = 65536\n');
    agent = await startAgent(tree);
    const start = (JSON.parse((await ctl(['--json', 'resolve', 'auto'])).out) as P.ResolveResult).uidMap[0].outside;
    const listed = JSON.parse((await ctl(['--json', 'ranges'])).out) as P.RangesResult;
    assert.equal(listed.coordinator, 'local');
    assert.deepEqual(
      listed.ranges.map((r) => [r.label, r.kind, r.ranges, r.decided]),
      [['auto', 'auto', [{ start, end: start + 65536 }], 'local']],
    );
    const imported = await ctl(['ranges', 'import']);
    assert.equal(imported.code, 1);
    assert.match(imported.err, /E_CONFIG: this agent allocates alone \(\[pool\] coordinator = local\): there is no shared pool to import into/);
    const busy = await ctl(['ranges', 'forget', 'auto']);
    assert.equal(busy.code, 1);
    assert.match(busy.err, /E_BUSY: auto is pinned on this host: release it first \(usernsctl release auto\)/);
    assert.equal((await ctl(['release', 'auto'])).code, 0);
    const reloads = () => agent.logs.filter((l) => l.msg === 'Reloaded configuration' && l.source === 'ranges forget').length;
    const forgot = await ctl(['--json', 'ranges', 'forget', 'auto']);
    assert.equal(forgot.code, 0, forgot.err);
    assert.deepEqual(JSON.parse(forgot.out), { label: 'auto', forgotten: true });
    assert.equal(reloads(), 1, 'the agent reloaded, as an admin would');
    // The same label hashes to the same free slot: allocated anew, and recorded again.
    assert.equal((JSON.parse((await ctl(['--json', 'resolve', 'auto'])).out) as P.ResolveResult).uidMap[0].outside, start);
    assert.deepEqual(JSON.parse((await ctl(['--json', 'ranges', 'forget', 'nosuch'])).out), { label: 'nosuch', forgotten: false });
  });

  it('creates eager contexts at start', async () => {
    tree.context('e.conf', A + 'create = eager\n');
    agent = await startAgent(tree);
    assert.equal(mountsUnder(tree.pins).length, 1);
    assert.ok(
      agent.logs.some((l) => l.msg === 'Created user namespace (eager)' && l.label === 'e' && l.level === 20),
      'one by one at debug',
    );
    const summary = agent.logs.find((l) => l.msg === 'Created eager contexts')!;
    assert.deepEqual([summary.level, summary.contexts, summary.created, summary.failed], [30, 1, 1, 0], 'all of them in one line at info');
    assert.equal((JSON.parse((await ctl(['--json', 'resolve', 'e'])).out) as P.ResolveResult).created, false);
    // And at a reload that brings one (userns.d(5): "created when the agent starts and on reload").
    tree.context('f.conf', '[context]\nuid_map = 0 300000 1000\ngid_map = 0 300000 1000\ncreate = eager\n');
    tree.context('g.conf', '[context]\nuid_map = 0 400000 1000\ngid_map = 0 400000 1000\n');
    assert.equal((await ctl(['reload'])).code, 0);
    assert.deepEqual(
      mountsUnder(tree.pins)
        .map((m) => m.split('/').pop())
        .sort(),
      ['e', 'f'],
      'the eager one is pinned, the lazy one is not',
    );
    // The start's pins are recorded once it serves, the reload's as they are made: each record names its pin.
    for (const label of ['e', 'f'])
      assert.equal(
        (JSON.parse(readFileSync(`${tree.pins}/.usernsd-records/${label}.json`, 'utf8')) as { ino: number }).ino,
        statSync(`${tree.pins}/${label}`).ino,
        `${label}'s record`,
      );
  });

  it("loads etcd's client only for a shared pool, prom-client only when scraped, and never Node's fetch (gRPC and protobuf were a fifth of a small start, fetch a tenth, prom-client a sixth)", async () => {
    tree.context('a.conf', A);
    const loads = `${tree.dir}/loads`;
    const hook = new URL('../helpers/record-loads.ts', import.meta.url).pathname;
    agent = await startAgent(tree, [], { env: { USERNSD_TEST_LOADS: loads, NODE_OPTIONS: `--import=${hook}` } });
    assert.equal((await ctl(['resolve', 'a'])).code, 0);
    assert.equal(await agent.stop(), 0);
    const loaded = readFileSync(loads, 'utf8').split('\n');
    // pino is bundled into dist/usernsd.js (scripts/bundle.js); node-ipc and koffi are loaded from node_modules.
    assert.ok(loaded.includes('node-ipc') && loaded.includes('koffi') && loaded.includes('builtin:net'), `the record is the agent's: ${loaded.join(', ')}`);
    assert.deepEqual(
      loaded.filter((p) => /^etcd3$|^@grpc\/|^protobufjs$|^prom-client$|^@opentelemetry\/|^builtin:internal\/deps\/undici\//.test(p)),
      [],
    );
  });

  it("a remote error is a UsernsError with the agent's code", async () => {
    agent = await startAgent(tree);
    const c = await AgentClient.connect(agent.socket);
    try {
      await assert.rejects(c.call(P.resolve, { label: 'x' }), (e: unknown) => e instanceof UsernsError && e.code === 'E_NOT_FOUND');
    } finally {
      c.close();
    }
  });
});

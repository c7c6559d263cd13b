// Hosts that share storage agree: three agents, one real 3-member etcd cluster on loopback, the
// same pool. Identical ranges for the same labels, none overlapping, through member failures, a
// whole-cluster outage and an agent killed mid-allocation; import refusing conflicts by name.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { callAgent } from '../../agent/wire/client.ts';
import * as P from '../../agent/wire/protocol.ts';
import { UsernsError } from '../../agent/errors.ts';
import { cleanup, makeCheckoutReachable, runInside, runningChildren, startAgent, USERNSCTL, usernsctl, usernsctlHere } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { hasEtcd, poolEntries, readPrefix, startCluster } from '../helpers/etcd.ts';
import type { Cluster } from '../helpers/etcd.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot } from '../helpers/kernel.ts';

const N = Number(process.env.USERNSD_SHARED_CONTEXTS ?? 1000);
/** Agents at once in the many-hosts test: as many as this machine runs comfortably beside the suite. */
const HOSTS = Number(process.env.USERNSD_SHARED_HOSTS ?? 8);
const POOL = '[pool]\ncoordinator = etcd\nrange = 100000000-499999999\nsize = 65536\n';

describe('e2e: ranges shared through etcd, 3 agents, a 3-member cluster (root)', function () {
  this.timeout(300_000);
  let cluster: Cluster;
  let trees: Tree[] = [];
  let agents: RunningAgent[] = [];
  let test = 0;
  let prefix = '';

  before(async function () {
    if (!isRoot) this.skip();
    if (!hasEtcd) {
      if (process.env.CI) throw new Error('etcd and etcdctl are missing: .ci/run installs etcd-server and etcd-client');
      this.skip();
    }
    cluster = await startCluster(3);
  });
  after(async () => {
    await cluster?.stop();
  });
  beforeEach(() => {
    prefix = `/usernsd-test-${process.pid}-${++test}/`;
  });
  afterEach(async () => {
    for (const t of trees) await cleanup(t);
    trees = [];
    agents = [];
  });

  const tree = (i: number) => {
    const t = makeTree(`${POOL}[etcd]\nendpoints = ${cluster.endpoints.join(', ')}\nprefix = ${prefix}\nname = host${i}\ntimeout = 1500\n`);
    trees.push(t);
    return t;
  };
  const autos = (t: Tree, labels: string[]) => {
    for (const l of labels) t.context(`${l}.conf`, '[context]\nrange = auto\n');
  };
  const labels = (p: string, n = N) => Array.from({ length: n }, (_, k) => `${p}${String(k).padStart(4, '0')}`);
  const doc = () => poolEntries(cluster, prefix);
  const recorded = (t: Tree) =>
    (JSON.parse(readFileSync(join(t.state, 'ranges.json'), 'utf8')) as { allocations: Record<string, { start: number; size: number }> }).allocations;
  /** Every range and static range of the pool, sorted: none may overlap another. */
  const assertDisjoint = (d: ReturnType<typeof doc>) => {
    const all = [
      ...Object.entries(d.ranges).map(([l, r]) => ({ l, s: r.start, e: r.start + r.size })),
      ...Object.entries(d.statics).flatMap(([l, st]) => st.intervals.map((i) => ({ l, s: i.start, e: i.end }))),
    ].sort((a, b) => a.s - b.s);
    for (let k = 1; k < all.length; k++) assert.ok(all[k - 1].e <= all[k].s, `${all[k - 1].l} and ${all[k].l} overlap`);
    return all.length;
  };
  const waitSettled = async (a: RunningAgent, timeoutMs = 60_000) => {
    for (const t0 = Date.now(); Date.now() - t0 < timeoutMs;) {
      const s = await callAgent(a.socket, P.status, {});
      if (s.coordinator?.waiting === 0 && s.coordinator.reachable) return s;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error('the agent still waits for the shared pool');
  };
  const startAll = async (ts: Tree[]) => (agents = await Promise.all(ts.map((t) => startAgent(t, ['--log-level', 'info'], { readyTimeoutMs: 60_000 }))));

  it(`(a) the same ${N} auto contexts loaded by three agents at once get identical ranges everywhere, none overlapping`, async () => {
    const ts = [0, 1, 2].map(tree);
    for (const t of ts) autos(t, labels('same'));
    await startAll(ts);
    for (const a of agents) await waitSettled(a);
    const d = doc();
    assert.equal(Object.keys(d.ranges).length, N);
    assertDisjoint(d);
    for (const t of ts) {
      const r = recorded(t);
      assert.equal(Object.keys(r).length, N);
      for (const [l, x] of Object.entries(d.ranges)) assert.deepEqual(r[l], { start: x.start, size: x.size }, `${l} on ${t.dir}`);
    }
    // And the kernel agrees: one context resolved on two hosts maps the same ids.
    const [r0, r2] = await Promise.all([
      callAgent(agents[0].socket, P.resolve, { label: 'same0042' }),
      callAgent(agents[2].socket, P.resolve, { label: 'same0042' }),
    ]);
    assert.deepEqual(r0.uidMap, r2.uidMap);
  });

  it(`(b) disjoint sets of ${N} labels per agent, at once: ${3 * N} ranges, none overlapping`, async () => {
    const ts = [0, 1, 2].map(tree);
    ts.forEach((t, i) => autos(t, labels(`h${i}-`)));
    await startAll(ts);
    for (const a of agents) await waitSettled(a);
    const d = doc();
    assert.equal(assertDisjoint(d), 3 * N);
    ts.forEach((t, i) => {
      const r = recorded(t);
      for (const l of labels(`h${i}-`)) assert.deepEqual(r[l], { start: d.ranges[l].start, size: d.ranges[l].size });
    });
  });

  it('(c) one etcd member killed during allocation: every allocation still succeeds', async () => {
    const ts = [0, 1, 2].map(tree);
    await startAll(ts);
    ts.forEach((t, i) => autos(t, labels(`c${i}-`)));
    try {
      const reloads = agents.map((a) => callAgent(a.socket, P.reload, {}));
      await cluster.kill(0);
      await Promise.all(reloads);
      for (const a of agents) await waitSettled(a);
    } finally {
      await cluster.start(0);
    }
    assert.equal(assertDisjoint(doc()), 3 * N);
    for (const a of agents)
      assert.equal(
        (await callAgent(a.socket, P.resolve, { label: a === agents[0] ? 'c0-0007' : a === agents[1] ? 'c1-0007' : 'c2-0007' })).label.slice(-4),
        '0007',
      );
  });

  it('(d) the whole cluster down: recorded contexts resolve, new ones fail fast with E_UNAVAILABLE, then succeed once etcd is back', async () => {
    const t = tree(0);
    autos(t, ['kept']);
    await startAll([t]);
    const a = agents[0];
    await waitSettled(a);
    for (let i = 0; i < 3; i++) await cluster.kill(i);
    try {
      autos(t, ['fresh']);
      await callAgent(a.socket, P.reload, {});
      assert.equal((await callAgent(a.socket, P.resolve, { label: 'kept' })).label, 'kept', 'recorded: served from ranges.json');
      const t0 = Date.now();
      await assert.rejects(
        callAgent(a.socket, P.resolve, { label: 'fresh' }),
        (e: unknown) => e instanceof UsernsError && e.code === 'E_UNAVAILABLE' && /shared pool/.test(e.message),
      );
      assert.ok(Date.now() - t0 < 1500 + 1000, `failed within the timeout (${Date.now() - t0} ms)`);
      assert.equal((await callAgent(a.socket, P.status, {})).coordinator?.reachable, false);
      assert.match((await usernsctlHere(['--socket', a.socket, 'status'])).out, /coordinator: etcd .*NOT reachable, as host0; 1 context\(s\) waiting/);
      const down = await usernsctl(['check-config', '--config', t.config, '--etcd']);
      assert.equal(down.code, 1);
      assert.match(down.err, /^etcd: etcd \(.*\) did not answer a read/m);
    } finally {
      await Promise.all([0, 1, 2].map((i) => cluster.start(i)));
    }
    for (let t0 = Date.now(); ; await new Promise((r) => setTimeout(r, 250))) {
      try {
        assert.equal((await callAgent(a.socket, P.resolve, { label: 'fresh' })).label, 'fresh');
        break;
      } catch (err) {
        if (Date.now() - t0 > 20_000) throw err;
      }
    }
    assert.ok(doc().ranges.fresh, 'decided in etcd, not alone');
    const up = await usernsctl(['check-config', '--config', t.config, '--etcd']);
    assert.equal(up.code, 0, up.err);
    assert.match(up.out, /answers; 2 label\(s\) under \/usernsd-test-[^ ]*\/labels\/$/m);
  });

  it('(e) an agent SIGKILLed mid-allocation and restarted: no label with two ranges, nothing blocked', async () => {
    const ts = [0, 1].map(tree);
    autos(ts[0], labels('e'));
    autos(ts[1], labels('e').slice(0, N / 2));
    const killed = startAgent(ts[0], ['--log-level', 'info'], { readyTimeoutMs: 60_000 }).catch(() => null);
    await new Promise((r) => setTimeout(r, 400));
    for (const c of [...runningChildren()]) c.kill('SIGKILL');
    await killed;
    await startAll(ts);
    for (const a of agents) await waitSettled(a);
    const d = doc();
    assert.equal(Object.keys(d.ranges).length, N);
    assertDisjoint(d);
    for (const t of ts) for (const [l, x] of Object.entries(recorded(t))) assert.deepEqual(x, { start: d.ranges[l].start, size: d.ranges[l].size }, l);
    assert.equal((await callAgent(agents[0].socket, P.resolve, { label: 'e0999'.slice(0, 5) })).label, 'e0999'.slice(0, 5));
  });

  it(`(g) many hosts: ${HOSTS} agents, each its own [etcd] name, started at once on overlapping sets of labels in a pool of the older layout: every host agrees, nothing overlaps, nothing is lost`, async () => {
    // The pool as an older usernsd left it (one document), so the agents also move it while they allocate.
    const old = { version: 1, ranges: { legacy: { start: 400000000 - (400000000 % 65536), size: 65536, by: 'old', at: 't' } }, statics: {} };
    cluster.ctl(['put', `${prefix}pool`, JSON.stringify(old)]);
    // Host i has labels i*S .. i*S + 2S - 1: each overlaps its neighbours' halves, and every host has "legacy".
    const S = 100;
    const sets = Array.from({ length: HOSTS }, (_, i) => [...Array.from({ length: 2 * S }, (_, k) => `m${String(i * S + k).padStart(4, '0')}`), 'legacy']);
    const ts = sets.map((_, i) => tree(i));
    ts.forEach((t, i) => autos(t, sets[i]));
    await startAll(ts);
    for (const a of agents) await waitSettled(a, 120_000);
    const d = doc();
    const wanted = new Set(sets.flat());
    assert.deepEqual(Object.keys(d.ranges).sort(), [...wanted].sort(), 'every label any host asked for is in the pool, and nothing else');
    assert.equal(assertDisjoint(d), wanted.size);
    assert.equal(d.ranges.legacy.start, old.ranges.legacy.start, "the older layout's range is kept");
    ts.forEach((t, i) => {
      const r = recorded(t);
      for (const l of sets[i]) assert.deepEqual(r[l], { start: d.ranges[l].start, size: d.ranges[l].size }, `host${i}'s ${l} is the pool's`);
    });
    const index = Object.keys(readPrefix(cluster, `${prefix}ids/`)).length;
    assert.equal(index, wanted.size, 'one index key per range');
    assert.match(cluster.ctl(['get', `${prefix}pool`, '--print-value-only']).out, /"version":2,"layout"/);
  });

  it('(f) ranges import refuses a local record that conflicts, naming both labels; a clean one goes in', async () => {
    const t = tree(0);
    autos(t, ['theirs']);
    await startAll([t]);
    await waitSettled(agents[0]);
    const theirs = doc().ranges.theirs;
    // This host's older record: "mine" where etcd now has "theirs".
    mkdirSync(t.state, { recursive: true });
    const local = { version: 1, allocations: { theirs: { start: theirs.start, size: theirs.size }, mine: { start: theirs.start, size: 65536 } } };
    writeFileSync(join(t.state, 'ranges.json'), JSON.stringify(local));
    const r = await usernsctl(['--socket', agents[0].socket, 'ranges', 'import']);
    assert.equal(r.code, 1);
    assert.match(r.err, /E_CONFIG: nothing imported: mine: this host's mine at \d+-\d+ overlaps theirs's range/);
    assert.equal(doc().ranges.mine, undefined, 'all or nothing');
    writeFileSync(
      join(t.state, 'ranges.json'),
      JSON.stringify({ version: 1, allocations: { theirs: local.allocations.theirs, mine: { start: 400000000 - (400000000 % 65536), size: 65536 } } }),
    );
    assert.match((await usernsctl(['--socket', agents[0].socket, 'ranges', 'import'])).out, /imported 1 allocation/);
    const listed = await usernsctl(['--socket', agents[0].socket, 'ranges']);
    assert.match(listed.out, /^mine\s+auto\s+\d+-\d+\s+etcd\s+host0\s+\S+$/m);
  });

  it("a static range overlapping another host's is refused by the later host, naming the other; forget is refused while pinned anywhere", async () => {
    const [t0, t1] = [0, 1].map(tree);
    t0.context('s1.conf', '[context]\nuid_map = 0 5000000 65536\ngid_map = 0 5000000 65536\n');
    agents = [await startAgent(t0, ['--log-level', 'info'])];
    await waitSettled(agents[0]);
    t1.context('s2.conf', '[context]\nuid_map = 0 5030000 65536\ngid_map = 0 5030000 65536\n');
    agents.push(await startAgent(t1, ['--log-level', 'info']));
    await waitSettled(agents[1]);
    await assert.rejects(
      callAgent(agents[1].socket, P.resolve, { label: 's2' }),
      (e: unknown) =>
        e instanceof UsernsError &&
        /refused by the shared pool: its ids 5030000-5095535 overlap s1's static range 5000000-5065535 \(configured on host0\)/.test(e.message),
    );
    // A pinned range cannot be forgotten from another host.
    autos(t0, ['pinned']);
    await callAgent(agents[0].socket, P.reload, {});
    await waitSettled(agents[0]);
    await callAgent(agents[0].socket, P.resolve, { label: 'pinned' });
    await new Promise((r) => setTimeout(r, 500)); // the pins are published a moment after
    await assert.rejects(callAgent(agents[1].socket, P.rangesForget, { label: 'pinned' }), /pinned on host0: release it there first/);
    await callAgent(agents[0].socket, P.release, { label: 'pinned' });
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(await callAgent(agents[1].socket, P.rangesForget, { label: 'pinned' }), { label: 'pinned', forgotten: true });
    assert.equal(doc().ranges.pinned, undefined);
    rmSync(join(t0.contexts, 'pinned.conf'));
  });

  it('a static context kept at its last good version (its file broken) keeps its claim: a forget of it is undone at the next settle', async () => {
    const t0 = tree(0);
    t0.context('kept.conf', '[context]\nuid_map = 0 6000000 65536\ngid_map = 0 6000000 65536\n');
    agents = [await startAgent(t0, ['--log-level', 'info'])];
    await waitSettled(agents[0]);
    assert.deepEqual(doc().statics.kept?.intervals, [{ start: 6000000, end: 6065536 }]);
    t0.context('kept.conf', '[context]\nuid_map = 0 6000000\n'); // broken: the context stays in force as it was
    await callAgent(agents[0].socket, P.reload, {});
    assert.ok(agents[0].logs.some((l) => l.msg === 'Context kept keeps its last good version until its file is fixed'));
    assert.deepEqual(await callAgent(agents[0].socket, P.rangesForget, { label: 'kept' }), { label: 'kept', forgotten: true });
    // Its ids are this host's while the context is in force here: the next settle claims them again,
    // as it does a healthy file's, so no host is given them meanwhile for long.
    await callAgent(agents[0].socket, P.reload, {});
    for (const t = Date.now(); doc().statics.kept === undefined; await new Promise((r) => setTimeout(r, 100)))
      assert.ok(Date.now() - t < 10_000, 'the kept context claims its ids again');
    assert.deepEqual(doc().statics.kept?.intervals, [{ start: 6000000, end: 6065536 }]);
    assertDisjoint(doc());
  });

  it('a hostile pool document (out of the pool, overlapping, malformed, prototype-named entries), moved to one key per label, harms only its own labels: the agent stays up, nothing bad is used or recorded', async () => {
    const slot = (k: number) => 100000000 - (100000000 % 65536) + 65536 * (k + 2);
    const entry = (start: number) => ({ start, size: 65536, by: 'elsewhere', at: 'then' });
    // What a hostile etcd (or any host that can write the key) puts there: host ids 1-65536 for
    // "low" (another user's files, /etc/shadow's group), one range for two labels, garbage, and
    // valid entries under labels that name Object.prototype's members.
    const hostile = {
      version: 1,
      junk: null,
      ranges: {
        low: entry(1),
        constructor: entry(slot(0)),
        ['__proto__']: entry(slot(1)),
        hasOwnProperty: entry(slot(4)),
        twin: entry(slot(4)),
        bad: null,
        neg: { start: -5, size: 65536, by: 'x', at: 'y' },
        'not a label': entry(slot(3)),
      },
      statics: { weird: { intervals: 'no', by: 'x', at: 'y' } },
    };
    cluster.ctl(['put', `${prefix}pool`, JSON.stringify(hostile)]);
    const t = tree(0);
    for (const l of ['low', 'constructor', '__proto__', 'twin', 'bad', 'neg', 'fresh']) t.context(`${l}.conf`, '[context]\nrange = auto\n');
    agents = [await startAgent(t, ['--log-level', 'info'], { readyTimeoutMs: 60_000 })];
    const st = await waitSettled(agents[0]);
    const errors = st.errors!.join('\n');
    assert.match(errors, /low\.conf: .*gives it 1-65536 \(allocated by elsewhere\), which this host refuses: it lies outside the pool 100000000-499999999/);
    assert.match(errors, /twin\.conf: .*which this host refuses: it overlaps hasOwnProperty's range/);
    assert.match(errors, /bad\.conf: .*the shared pool's entry for it is not valid/);
    assert.match(errors, /neg\.conf: .*the shared pool's entry for it is not valid \(start: /);
    const mapOf = async (label: string) => (await callAgent(agents[0].socket, P.resolve, { label })).uidMap[0].outside;
    assert.equal(await mapOf('constructor'), slot(0));
    assert.equal(await mapOf('__proto__'), slot(1));
    const fresh = await mapOf('fresh');
    assert.ok(fresh >= 100000000 && fresh <= 499999999 - 65535 && ![slot(0), slot(1), slot(3), slot(4)].includes(fresh), `fresh: ${fresh}`);
    for (const l of ['low', 'twin', 'bad', 'neg'])
      await assert.rejects(callAgent(agents[0].socket, P.resolve, { label: l }), /is not loaded because its file has an error.*refused by the shared pool/, l);
    const rec = recorded(t);
    assert.deepEqual(Object.keys(rec).sort(), ['__proto__', 'constructor', 'fresh'].sort(), 'nothing refused was recorded');
    // The document was moved to one key per label as it was: the entries this host could not read
    // left as it found them, its own beside them.
    const after = doc();
    assert.deepEqual(
      [after.raw.bad, after.raw['not a label'], after.raw.weird],
      [null, { kind: 'auto', ...entry(slot(3)) }, { kind: 'static', ...hostile.statics.weird }],
    );
    assert.equal(after.ranges.fresh.start, fresh);
    // And the agent goes on: a reload, a forget of a bad entry, the label allocated anew in the pool.
    assert.deepEqual(await callAgent(agents[0].socket, P.rangesForget, { label: 'low' }), { label: 'low', forgotten: true });
    await callAgent(agents[0].socket, P.reload, {});
    // The reload asks the pool again in the background, and reloads once more when it answers.
    let low = 0;
    for (const t0 = Date.now(); Date.now() - t0 < 20_000 && low === 0; await new Promise((r) => setTimeout(r, 200))) low = await mapOf('low').catch(() => 0);
    assert.ok(low >= 100000000, `low now ${low}`);
  });

  it('contexts made from inside are kept in the pool: every host sharing it makes them, one host per label, and forgets them at a release anywhere', async () => {
    const restore = makeCheckoutReachable(); // usernsctl runs as the contexts' roots
    try {
      await madeFromInside();
    } finally {
      restore();
    }
  });

  async function madeFromInside(): Promise<void> {
    const ts = [0, 1].map(tree);
    // The same context on both hosts (one range = auto label: one range everywhere), children allowed.
    for (const t of ts) t.context('L.conf', '[context]\nrange = auto\nchildren = 2\n');
    await startAll(ts);
    const [a, b] = agents;
    for (const x of agents) await waitSettled(x);
    const pin = (t: Tree) => join(t.pins, 'L');
    for (const x of agents) await callAgent(x.socket, P.resolve, { label: 'L' });
    const inside = (t: Tree, x: RunningAgent, args: string[]) => runInside([pin(t)], [process.execPath, USERNSCTL, '--socket', x.socket, ...args]);
    const made = await inside(ts[0], a, ['create', 'x', '--uid-map', '0 1000 100']);
    assert.equal(made.code, 0, made.err);
    assert.match(cluster.ctl(['get', `${prefix}children/L.x`, '--print-value-only']).out, /^label = L\.x$/m);
    // The other host: made at its next reload, eagerly; the label is taken there.
    await callAgent(b.socket, P.reload, {});
    const pinnedOn = async (x: RunningAgent, l: string) => (await callAgent(x.socket, P.list, {})).contexts.find((c) => c.label === l)?.pinned ?? false;
    for (let t0 = Date.now(); !(await pinnedOn(b, 'L.x')); await new Promise((r) => setTimeout(r, 200)))
      assert.ok(Date.now() - t0 < 20_000, 'L.x is made on the other host');
    const again = await inside(ts[1], b, ['create', 'x', '--uid-map', '0 2000 100']);
    assert.match(again.err, /E_INVALID: context "L\.x" exists already/);
    // Two hosts making one new label at once: exactly one wins, cluster-wide.
    const both = await Promise.all([inside(ts[0], a, ['create', 'y', '--uid-map', '0 3000 10']), inside(ts[1], b, ['create', 'y', '--uid-map', '0 4000 10'])]);
    assert.equal(both.filter((r) => r.code === 0).length, 1, both.map((r) => r.err).join(' | '));
    assert.match(both.find((r) => r.code !== 0)!.err, /E_INVALID: context "L\.y" was made already on another host/);
    // Released from inside on one host: forgotten in the pool, so gone from the other at its next reload.
    assert.equal((await inside(ts[1], b, ['release', 'x'])).code, 0);
    assert.equal(cluster.ctl(['get', `${prefix}children/L.x`, '--print-value-only']).out.trim(), '');
    await callAgent(a.socket, P.reload, {});
    for (let t0 = Date.now(); (await callAgent(a.socket, P.list, {})).contexts.some((c) => c.label === 'L.x'); await new Promise((r) => setTimeout(r, 200)))
      assert.ok(Date.now() - t0 < 20_000, 'L.x is gone from the other host');
    // Root's release of L forgets what was made inside it everywhere, read or not.
    assert.equal((await usernsctlHere(['--socket', a.socket, 'release', 'L'])).code, 0);
    assert.equal(cluster.ctl(['get', '--prefix', `${prefix}children/`, '--keys-only']).out.trim(), '');
    // A hostile pool entry (not a label) is left out, and the agent stays up.
    cluster.ctl(['put', `${prefix}children/../../etc/x`, '[context]\nlabel = L.z\nparent = L\nuid_map = 0 0 1\ngid_map = 0 0 1\n']);
    await callAgent(a.socket, P.reload, {});
    await a.waitForLog((l) => /records of contexts made from inside left out/.test(l.msg));
    assert.equal(readdirSync(join(ts[0].state, 'children')).length, 0);
    assert.equal((await callAgent(a.socket, P.status, {})).coordinator?.reachable, true);
  }
});

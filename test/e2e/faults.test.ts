// Faults: the agent killed mid-creation and restarted, corrupt state, pins taken away behind its back, the namespace limit reached.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { AgentClient } from '../../agent/wire/client.ts';
import * as P from '../../agent/wire/protocol.ts';
import { rootAgentSuite, startAgent, USERNSD, usernsctlAt, usernsctlHere } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { kernelMaps, mountsUnder, unmountAll } from '../helpers/kernel.ts';
import { pinnedIno } from '../../agent/kernel/pinrecord.ts';
import { readInForceRecord } from '../../agent/coord/state.ts';

const STATIC = 20;
const AUTO = 10;
const labels = [...Array.from({ length: STATIC }, (_, i) => `s${i}`), ...Array.from({ length: AUTO }, (_, i) => `auto${i}`)];

function writeContexts(tree: Tree): void {
  for (let i = 0; i < STATIC; i++) tree.context(`s${i}.conf`, `[context]\nuid_map = 0 ${100000 + i * 10000} 1000\ngid_map = 0 ${100000 + i * 10000} 1000\n`);
  for (let i = 0; i < AUTO; i++) tree.context(`auto${i}.conf`, '[context]\nrange = auto\nsize = 65536\n');
}

/**
 * A second usernsd started beside `agent` that shares only its `shared` directory (the other one and
 * the socket are its own) is refused at once, naming the first.
 */
function assertRefusedBeside(tree: Tree, agent: RunningAgent, shared: 'state' | 'pins'): void {
  const own = shared === 'state' ? 'pins' : 'state';
  const beside = `${tree.dir}/beside.conf`;
  writeFileSync(
    beside,
    readFileSync(tree.config, 'utf8')
      .replace(new RegExp(`^${own} = .*$`, 'm'), `${own} = ${tree.dir}/beside-${own}`)
      .replace(/^socket = .*$/m, `socket = ${tree.dir}/beside.sock`),
  );
  const other = spawnSync(process.execPath, [USERNSD, '--config', beside], { encoding: 'utf8', timeout: 15000 });
  assert.equal(other.status, 1, `the second agent ran beside the first (${other.signal ?? other.status}): ${other.stderr}`);
  assert.match(other.stderr, new RegExp(`another usernsd \\(pid ${agent.child.pid}\\) is using the ${shared} directory ${tree[shared]}`));
}

describe('e2e: faults (root)', function () {
  this.timeout(120_000);
  let tree: Tree;
  rootAgentSuite((t) => (tree = t)); // the agent pins namespaces: root

  it('killed at random moments while creating under load, restarts with every pin complete or absent and no range given twice', async () => {
    writeContexts(tree);
    // Deterministic "random" moments, spread over the creation of the 30 namespaces.
    for (const delayMs of [3, 11, 27, 45, 80]) {
      const agent = await startAgent(tree, ['--log-level', 'info']);
      const clients = await Promise.all(Array.from({ length: 6 }, () => AgentClient.connect(agent.socket)));
      const load = clients.map((c, k) => Promise.allSettled(labels.filter((_, i) => i % clients.length === k).map((label) => c.call(P.resolve, { label }))));
      await new Promise((r) => setTimeout(r, delayMs));
      agent.child.kill('SIGKILL');
      await agent.exited;
      await Promise.all(load);
      for (const c of clients) c.close();

      const again = await startAgent(tree, ['--log-level', 'info']);
      const adopted = again.logs.filter((l) => typeof l.status === 'string');
      assert.deepEqual(
        adopted.filter((l) => l.status !== 'removed').map((l) => `${String(l.label)}: ${String(l.status)}`),
        [],
        `after a kill at ${delayMs} ms, every pin is complete (an empty pin file is the only leftover)`,
      );
      const c = await AgentClient.connect(again.socket);
      try {
        for (const label of labels) await c.call(P.resolve, { label });
      } finally {
        c.close();
      }
      const ranges = JSON.parse(readFileSync(`${tree.state}/ranges.json`, 'utf8')) as { allocations: Record<string, { start: number; size: number }> };
      // The kernel's own view of every pin is what the test configured (static) or what ranges.json
      // recorded (auto): never the agent's word for it.
      for (const [i, label] of labels.entries()) {
        const start = i < STATIC ? 100000 + i * 10000 : ranges.allocations[label].start;
        const count = i < STATIC ? 1000 : 65536;
        assert.deepEqual(kernelMaps(`${tree.pins}/${label}`), { uid: `0 ${start} ${count}`, gid: `0 ${start} ${count}` }, label);
      }
      const spans = Object.values(ranges.allocations).sort((a, b) => a.start - b.start);
      assert.equal(spans.length, AUTO);
      for (let i = 1; i < spans.length; i++)
        assert.ok(spans[i - 1].start + spans[i - 1].size <= spans[i].start, `ranges ${JSON.stringify(spans)} do not overlap`);
      assert.equal(mountsUnder(tree.pins).length, labels.length);
      assert.equal(await again.stop(), 0);
      // Half the time start from nothing pinned, half from everything pinned.
      if (delayMs % 2 === 1) {
        unmountAll(tree.pins);
        rmSync(tree.pins, { recursive: true, force: true });
      }
    }
  });

  it('refuses to allocate from a corrupt state file, says how to recover, and keeps serving static contexts', async () => {
    writeContexts(tree);
    const agent = await startAgent(tree, ['--log-level', 'info']);
    assert.equal((await usernsctlHere(['--socket', agent.socket, 'resolve', 'auto0'])).code, 0);
    await agent.stop();
    const before = readFileSync(`${tree.state}/ranges.json`, 'utf8');
    writeFileSync(`${tree.state}/ranges.json`, before.slice(0, before.length / 2)); // torn
    const again = await startAgent(tree, ['--log-level', 'info']);
    const r = await usernsctlHere(['--socket', again.socket, 'resolve', 'auto1']);
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      /E_CONFIG: context "auto1" is not loaded because its file has an error: .*ranges\.json is corrupt \(not JSON\): no range will be allocated until it is fixed\. Restore it from a backup/,
    );
    assert.equal((await usernsctlHere(['--socket', again.socket, 'resolve', 's3'])).code, 0, 'static contexts are not affected');
    assert.equal(readFileSync(`${tree.state}/ranges.json`, 'utf8'), before.slice(0, before.length / 2), 'the corrupt file is left as it is, for the admin');
  });

  it('notices a pin unmounted, or the whole pins directory removed, behind its back, and makes them anew', async () => {
    writeContexts(tree);
    const agent = await startAgent(tree, ['--log-level', 'info']);
    const c = await AgentClient.connect(agent.socket);
    try {
      const first = await c.call(P.resolve, { label: 's1' });
      execFileSync('umount', ['--lazy', first.path]);
      await new Promise((r) => setTimeout(r, 5));
      const second = await c.call(P.resolve, { label: 's1' });
      assert.equal(second.created, true, 'the unmounted pin is created anew');
      // Not its inode: the old namespace is freed with its last mount, and nsfs may give its number again.
      assert.equal(pinnedIno(second.path), second.ino, 'the new pin is mounted and is the namespace the agent reports');
      assert.deepEqual(mountsUnder(tree.pins), [second.path]);
      unmountAll(tree.pins);
      rmSync(tree.pins, { recursive: true });
      await new Promise((r) => setTimeout(r, 5));
      const third = await c.call(P.resolve, { label: 's1' });
      assert.equal(third.created, true);
      assert.deepEqual(mountsUnder(tree.pins), [third.path]);
      // Its lock went with the directory: the agent holds the one it made again, so a second agent is still refused.
      assertRefusedBeside(tree, agent, 'pins');
    } finally {
      c.close();
    }
  });

  it('holds the state directory it makes again after it was removed behind its back: a second agent is still refused', async () => {
    tree.context('a.conf', '[context]\nuid_map = 0 100000 1000\ngid_map = 0 100000 1000\n');
    const agent = await startAgent(tree, ['--log-level', 'info']);
    // Its first record is written once it serves: removed after that, not while it writes it.
    await agent.waitForLog((l) => l.msg === 'Recorded the contexts in force');
    rmSync(tree.state, { recursive: true });
    // A change in force is recorded: the agent makes its state directory again to write it.
    tree.context('b.conf', '[context]\nuid_map = 0 110000 1000\ngid_map = 0 110000 1000\n');
    assert.equal((await usernsctlHere(['--socket', agent.socket, 'reload'])).code, 0);
    // Whole: a journal of the change alone would leave the record without a.
    assert.deepEqual([...readInForceRecord(tree.state).contexts.keys()].sort(), ['a', 'b'], 'the record is written whole in the directory made again');
    assertRefusedBeside(tree, agent, 'state');
  });

  it('turns the namespace limit into E_KERNEL with what to change, while existing contexts keep resolving', async () => {
    tree.context('p.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    tree.context('kid.conf', '[context]\nparent = p\nuid_map = 0 1000 1000\ngid_map = 0 1000 1000\n');
    const agent = await startAgent(tree, ['--log-level', 'info']);
    const ctl = (...args: string[]) => usernsctlAt(agent.socket, args);
    const p = JSON.parse((await ctl('--json', 'resolve', 'p')).out) as P.ResolveResult;
    // The limit of namespaces inside p: lowered to 0 there (the host-wide one needs CAP_SYS_RESOURCE in the initial namespace).
    const limit = (n: number) =>
      execFileSync('nsenter', [
        `--user=${p.path}`,
        '--preserve-credentials',
        '-S',
        '0',
        '-G',
        '0',
        '--',
        'sh',
        '-c',
        `echo ${n} > /proc/sys/user/max_user_namespaces`,
      ]);
    limit(0);
    const refused = await ctl('resolve', 'kid');
    assert.equal(refused.code, 1);
    assert.match(
      refused.err,
      /^usernsctl: E_KERNEL: Failed to create the user namespace for context "kid": ENOSPC\b.*raise \/proc\/sys\/user\/max_user_namespaces or release contexts/,
    );
    assert.equal((await ctl('resolve', 'p')).code, 0, 'the parent keeps resolving');
    assert.deepEqual(mountsUnder(tree.pins), [p.path], 'the failed creation left no pin');
    limit(100);
    assert.equal((await ctl('resolve', 'kid')).code, 0, 'and it works again once the limit allows');
  });
});

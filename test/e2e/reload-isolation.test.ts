// Reloads and restarts never leave two contexts sharing ids, and a parent's release takes its nested pins with it.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { callAgent } from '../../agent/wire/client.ts';
import type { UsernsError } from '../../agent/errors.ts';
import * as P from '../../agent/wire/protocol.ts';
import { cleanup, startAgent, usernsctl, usernsctlHere } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot } from '../helpers/kernel.ts';

/** ioctl_ns(2) NS_GET_PARENT through Python's standard library: the kernel's answer, not the agent's. */
function parentIno(pin: string): number {
  return Number(
    execFileSync('python3', ['-c', 'import os,fcntl,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nprint(os.fstat(fcntl.ioctl(fd,0xb702)).st_ino)', pin], {
      encoding: 'utf8',
    }).trim(),
  );
}

describe('e2e: isolation across reloads and restarts, and releases of parents (root)', function () {
  this.timeout(60_000);
  let tree: Tree;
  let agent: RunningAgent;

  beforeEach(function () {
    if (!isRoot) this.skip();
    tree = makeTree();
  });
  afterEach(async () => {
    await cleanup(tree);
  });

  const proj = '[context]\nuid_map = 0 4000000 65536\ngid_map = 0 4000000 65536\n';
  const overlap = '[context]\nuid_map = 0 4000100 10\ngid_map = 0 4000100 10\n';

  it('refuses a new file that sorts first and overlaps a context in force — at the reload, after a restart, and in check-config', async () => {
    tree.context('proj.conf', proj);
    agent = await startAgent(tree);
    await callAgent(agent.socket, P.resolve, { label: 'proj' });
    tree.context('aa-overlap.conf', overlap);
    const r = await callAgent(agent.socket, P.reload, {});
    assert.deepEqual(r.added, []);
    assert.deepEqual(r.kept, [], 'proj.conf is untouched: nothing of it is "kept"');
    assert.match(r.errors.join('\n'), /aa-overlap\.conf: \[context\] uid_map: host uids 4000100-4000109 are already used by context "proj"/);
    assert.doesNotMatch(r.errors.join('\n'), /proj\.conf:/);
    await assert.rejects(callAgent(agent.socket, P.map, { from: 'aa-overlap', to: 'proj', uids: [5] }), (e: UsernsError) => e.code === 'E_CONFIG');
    const check = await usernsctl(['check-config', '--config', tree.config]);
    assert.equal(check.code, 1);
    assert.deepEqual(
      [
        ...new Set(
          check.err
            .trim()
            .split('\n')
            .map((l) => l.split(': ')[0]),
        ),
      ],
      [`${tree.contexts}/aa-overlap.conf`],
      'check-config blames the file the agent blames',
    );
    assert.equal(await agent.stop(), 0);
    agent = await startAgent(tree);
    const after = await callAgent(agent.socket, P.resolve, { label: 'proj' });
    assert.equal(after.created, false, 'after a restart proj is still in force and adopts its pin');
    const status = await callAgent(agent.socket, P.status, {});
    assert.deepEqual([...new Set((status.errors ?? []).map((l) => l.split(': ')[0]))], [`${tree.contexts}/aa-overlap.conf`]);
  });

  it('refuses a new static file on a recorded range = auto allocation, also after a restart', async () => {
    tree.context('images.conf', '[context]\nrange = auto\n');
    agent = await startAgent(tree);
    const images = await callAgent(agent.socket, P.resolve, { label: 'images' });
    const start = images.uidMap[0].outside;
    tree.context('aa.conf', `[context]\nuid_map = 0 ${start + 10} 5\ngid_map = 0 ${start + 10} 5\n`);
    const r = await callAgent(agent.socket, P.reload, {});
    assert.match(r.errors.join('\n'), /aa\.conf: .*already used by context "images"/);
    assert.equal(await agent.stop(), 0);
    agent = await startAgent(tree);
    const again = await callAgent(agent.socket, P.resolve, { label: 'images' });
    assert.equal(again.uidMap[0].outside, start);
    assert.equal(again.created, false);
  });

  it("never allocates the ids of a namespace still pinned: one in drift, or an orphan's (its file removed while the agent was down)", async () => {
    // A pool of one slot, A, which the static context x has.
    const one = makeTree('[pool]\nrange = 3997696-4063231\n');
    const A = 3997696;
    const refused = (label: string) =>
      assert.rejects(
        callAgent(agent.socket, P.resolve, { label }),
        (e: UsernsError) => e.code === 'E_CONFIG' && new RegExp(`the pool ${A}-4063231 is exhausted.*release the pins`).test(e.message),
      );
    const state = async (label: string) => (await callAgent(agent.socket, P.status, {})).contextStates?.find((c) => c.label === label)?.state;
    try {
      one.context('x.conf', `[context]\nuid_map = 0 ${A} 65536\ngid_map = 0 ${A} 65536\n`);
      agent = await startAgent(one);
      await callAgent(agent.socket, P.resolve, { label: 'x' });
      // x moves to ids out of the pool while pinned: its pin, in drift, still holds A. y asks for a range.
      one.context('x.conf', '[context]\nuid_map = 0 5000000 65536\ngid_map = 0 5000000 65536\n');
      one.context('y.conf', '[context]\nrange = auto\nsize = 65536\n');
      await callAgent(agent.socket, P.reload, {});
      assert.equal(await state('x'), 'drift');
      await refused('y');
      // x's file removed while the agent is down: its pin, an orphan now, still holds A.
      assert.equal(await agent.stop(), 0);
      rmSync(`${one.contexts}/x.conf`);
      agent = await startAgent(one);
      assert.equal(await state('x'), 'orphan');
      await refused('y');
      // Released by root, A is free: the next reload gives it to y.
      await callAgent(agent.socket, P.release, { label: 'x' });
      await callAgent(agent.socket, P.reload, {});
      assert.equal((await callAgent(agent.socket, P.resolve, { label: 'y' })).uidMap[0].outside, A);
    } finally {
      await cleanup(one);
    }
  });

  it("never gives a static context the ids of an orphan's pinned namespace (its file removed while the agent was down), top-level or nested: not at start, a reload or in check-config; once root releases it, yes", async () => {
    tree.context('proj.conf', proj);
    tree.context('old.conf', '[context]\nuid_map = 0 5000000 65536\ngid_map = 0 5000000 65536\n');
    tree.context('oldkid.conf', '[context]\nparent = proj\nuid_map = 0 100 100\ngid_map = 0 100 100\n');
    agent = await startAgent(tree);
    await callAgent(agent.socket, P.resolve, { label: 'old' });
    await callAgent(agent.socket, P.resolve, { label: 'oldkid' });
    assert.equal(await agent.stop(), 0);
    // While the agent is down, the two files go and two others take their ids: the pins stay (orphans).
    rmSync(`${tree.contexts}/old.conf`);
    rmSync(`${tree.contexts}/oldkid.conf`);
    tree.context('new.conf', '[context]\nuid_map = 0 5000010 5\ngid_map = 0 5000010 5\n');
    tree.context('newkid.conf', '[context]\nparent = proj\nuid_map = 0 150 10\ngid_map = 0 150 10\n');
    agent = await startAgent(tree);
    const status = await callAgent(agent.socket, P.status, {});
    const states = Object.fromEntries((status.contextStates ?? []).map((c) => [c.label, c.state]));
    assert.equal(states.old, 'orphan');
    assert.equal(states.oldkid, 'orphan');
    const orphanUse = (label: string, ids: string, whose: string) =>
      new RegExp(
        `${label}\\.conf: \\[context\\] uid_map: ${whose} uids ${ids} are already used by the pinned namespace of "${label === 'newkid' ? 'oldkid' : 'old'}", whose file is gone \\(an orphan: release it first, usernsctl release`,
      );
    const errors = (status.errors ?? []).join('\n');
    assert.match(errors, orphanUse('new', '5000010-5000014', 'host'));
    assert.match(errors, orphanUse('newkid', '150-159', 'parent "proj"'));
    for (const label of ['new', 'newkid']) await assert.rejects(callAgent(agent.socket, P.resolve, { label }), (e: UsernsError) => e.code === 'E_CONFIG');
    const check = await usernsctl(['check-config', '--config', tree.config]);
    assert.equal(check.code, 1);
    assert.match(check.err, orphanUse('new', '5000010-5000014', 'host'));
    // A file added at a reload meets the orphan too (the judgement of what changed).
    tree.context('new2.conf', '[context]\nuid_map = 0 5000020 5\ngid_map = 0 5000020 5\n');
    const r = await callAgent(agent.socket, P.reload, {});
    assert.match(r.errors.join('\n'), /new2\.conf: \[context\] uid_map: host uids 5000020-5000024 are already used by the pinned namespace of "old"/);
    // Released by root, the ids are free: the next reload accepts all three.
    await callAgent(agent.socket, P.release, { label: 'old' });
    await callAgent(agent.socket, P.release, { label: 'oldkid' });
    const after = await callAgent(agent.socket, P.reload, {});
    assert.deepEqual(after.errors, []);
    for (const label of ['new', 'new2', 'newkid']) assert.equal((await callAgent(agent.socket, P.resolve, { label })).created, true, label);
  });

  it('releasing a parent releases its pinned children first, and a child left under an old parent is drift', async () => {
    tree.context('proj.conf', proj);
    tree.context('kid.conf', '[context]\nparent = proj\nuid_map = 0 0 100\ngid_map = 0 0 100\n');
    agent = await startAgent(tree);
    await callAgent(agent.socket, P.resolve, { label: 'kid' });
    const rel = await callAgent(agent.socket, P.release, { label: 'proj' });
    assert.deepEqual(rel.descendants, ['kid']);
    assert.throws(() => statSync(`${tree.pins}/kid`), /ENOENT/);
    const kid = await callAgent(agent.socket, P.resolve, { label: 'kid' });
    assert.equal(kid.created, true);
    assert.equal(parentIno(kid.path), statSync(`${tree.pins}/proj`).ino, 'the new child lies in the new parent');

    // Behind the agent's back: the parent unmounted and made anew, the child left where it was.
    assert.equal(await agent.stop(), 0);
    execFileSync('umount', ['--lazy', `${tree.pins}/proj`]);
    execFileSync('rm', [`${tree.pins}/proj`, `${tree.pins}/.usernsd-records/proj.json`]);
    agent = await startAgent(tree);
    let status = await callAgent(agent.socket, P.status, {});
    const state = (l: string) => status.contextStates!.find((c) => c.label === l);
    assert.equal(state('kid')?.state, 'drift', JSON.stringify(status.contextStates));
    assert.match(status.pins!.find((p) => p.label === 'kid')?.message ?? '', /not nested in its parent's pin: its parent "proj" is not pinned/);
    await callAgent(agent.socket, P.resolve, { label: 'proj' });
    await assert.rejects(
      callAgent(agent.socket, P.resolve, { label: 'kid' }),
      (e: UsernsError) => e.code === 'E_CONFIG' && /pin .* is not nested in its parent's pin \(drift\)/.test(e.message),
    );
    status = await callAgent(agent.socket, P.status, {});
    assert.equal(state('kid')?.state, 'drift');
    await callAgent(agent.socket, P.release, { label: 'kid' });
    const fresh = await callAgent(agent.socket, P.resolve, { label: 'kid' });
    assert.equal(parentIno(fresh.path), statSync(`${tree.pins}/proj`).ino);
  });

  it('shows a pinned child of a parent in drift as stale, and says what to do', async () => {
    tree.context('proj.conf', proj);
    tree.context('kid.conf', '[context]\nparent = proj\nuid_map = 0 0 100\ngid_map = 0 0 100\n');
    agent = await startAgent(tree);
    await callAgent(agent.socket, P.resolve, { label: 'kid' });
    tree.context('proj.conf', '[context]\nuid_map = 0 4000000 1000\ngid_map = 0 4000000 1000\n');
    await callAgent(agent.socket, P.reload, {});
    // At once, before anyone resolves it: the pin no longer holds proj's maps.
    const status = await callAgent(agent.socket, P.status, {});
    assert.equal(status.contextStates!.find((c) => c.label === 'proj')!.state, 'drift');
    await assert.rejects(callAgent(agent.socket, P.resolve, { label: 'proj' }), /drift/);
    const kid = status.contextStates!.find((c) => c.label === 'kid')!;
    assert.equal(kid.state, 'stale');
    assert.match(kid.why ?? '', /its parent proj is in drift; release proj/);
    const text = await usernsctlHere(['--socket', agent.socket, 'status']);
    assert.match(text.out, /^kid\s+root \(0:0\)\s+stale \(its parent proj is in drift/m);
  });

  it('a reload that adds a context whose label is already pinned (an orphan of an older file) checks that pin: other maps are drift, at once', async () => {
    tree.context('proj.conf', overlap);
    agent = await startAgent(tree);
    await callAgent(agent.socket, P.resolve, { label: 'proj' });
    // The file goes while the agent is down: at the next start the pin is an orphan.
    execFileSync('rm', [`${tree.contexts}/proj.conf`]);
    assert.equal(await agent.stop(), 0);
    agent = await startAgent(tree);
    const orphan = await callAgent(agent.socket, P.status, {});
    assert.equal(orphan.contextStates?.find((c) => c.label === 'proj')?.state, 'orphan');
    // It comes back with other ids: the pin holds the old ones, so status must say drift, not pinned.
    tree.context('proj.conf', proj);
    const r = await callAgent(agent.socket, P.reload, {});
    assert.deepEqual(r.added, ['proj']);
    const st = await callAgent(agent.socket, P.status, {});
    assert.equal(st.contextStates?.find((c) => c.label === 'proj')?.state, 'drift');
    await assert.rejects(callAgent(agent.socket, P.resolve, { label: 'proj' }), (e: UsernsError) => e.code === 'E_CONFIG' && /\(drift\)/.test(e.message));
  });

  it("calls a context changed when what it does changed, not when the admin's note moves its keys down", async () => {
    tree.context('proj.conf', proj);
    agent = await startAgent(tree);
    const pin = await callAgent(agent.socket, P.resolve, { label: 'proj' });
    tree.context('proj.conf', `# proj: see the ticket\n\n${proj}`);
    const noted = await callAgent(agent.socket, P.reload, {});
    assert.deepEqual([noted.added, noted.changed, noted.removed], [[], [], []]);
    tree.context('proj.conf', `# proj: see the ticket\n\n${proj}[squash]\nmode = none\n`);
    const squashed = await callAgent(agent.socket, P.reload, {});
    assert.deepEqual([squashed.added, squashed.changed, squashed.removed], [[], ['proj'], []]);
    const again = await callAgent(agent.socket, P.resolve, { label: 'proj' });
    assert.deepEqual([again.ino, again.created], [pin.ino, false], 'the same pin throughout');
  });

  it('a reload whose settings file has errors changes nothing, the state included: a context added meanwhile gets its range once the file is fixed', async () => {
    const pooled = makeTree('[pool]\nrange = 3997696-4325375\n');
    try {
      pooled.context('a.conf', '[context]\nrange = auto\n');
      agent = await startAgent(pooled);
      const ranges = () => readFileSync(`${pooled.state}/ranges.json`, 'utf8');
      const before = ranges();
      // The admin adds a context and, in the same edit, mistypes the pool.
      pooled.context('b.conf', '[context]\nrange = auto\n');
      const conf = readFileSync(pooled.config, 'utf8');
      writeFileSync(pooled.config, conf.replace('range = 3997696-4325375', 'range = 3997696-4325375x'));
      const r = await callAgent(agent.socket, P.reload, {});
      assert.deepEqual([r.added, r.changed, r.removed], [[], [], []]);
      assert.match(r.errors.join('\n'), /usernsd\.conf: .*"3997696-4325375x"/);
      assert.equal(ranges(), before, 'nothing recorded by the refused reload');
      assert.deepEqual(
        (await callAgent(agent.socket, P.list, {})).contexts.map((c) => c.label),
        ['a'],
      );
      writeFileSync(pooled.config, conf);
      const fixed = await callAgent(agent.socket, P.reload, {});
      assert.deepEqual(fixed.added, ['b']);
      assert.deepEqual(fixed.errors, []);
      const b = (JSON.parse(ranges()) as { allocations: Record<string, { start: number; size: number }> }).allocations.b;
      assert.ok(b.start >= 3997696 && b.start + b.size - 1 <= 4325375, `b in the pool: ${JSON.stringify(b)}`);
    } finally {
      await cleanup(pooled);
    }
  });
});

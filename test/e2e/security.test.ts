// Security: what an unprivileged user can and cannot do or learn, hostile labels, planted symlinks, unsafe files.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RECORDS_DIR } from '../../agent/kernel/pinrecord.ts';
import { AgentClient } from '../../agent/wire/client.ts';
import { UsernsError } from '../../agent/errors.ts';
import * as P from '../../agent/wire/protocol.ts';
import { cleanup, makeCheckoutReachable, startAgent, usernsctlAt, usernsctlHere, USERNSD } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser, mountsUnder } from '../helpers/kernel.ts';

describe('e2e: security (root)', function () {
  let tree: Tree;
  let agent: RunningAgent | undefined;
  before(function () {
    if (!isRoot) this.skip();
  }); // throwaway users, root-owned configuration: root
  beforeEach(() => {
    tree = makeTree();
    tree.context('secret.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
  });
  afterEach(async () => {
    await cleanup(tree);
    agent = undefined;
  });

  it('an unprivileged user can do nothing with a context it has no right to, and learns nothing about it', async () => {
    const user = makeUser();
    const restore = makeCheckoutReachable();
    try {
      agent = await startAgent(tree);
      const as = { user: { uid: user.uid, gid: user.gid } };
      const ctl = (...args: string[]) => usernsctlAt(agent!.socket, args, as);
      const pinsBefore = existsSync(tree.pins) ? readdirSync(tree.pins) : [];
      const answers = new Map<string, string>();
      for (const [name, args] of [
        ['resolve', ['resolve', 'secret']],
        ['map', ['map', '--from', 'secret', '--to', 'host', '--uid', '0']],
        ['map to', ['map', '--from', 'host', '--to', 'secret', '--uid', '0']],
        ['enter', ['enter', 'secret', '--', 'true']],
        ['reload', ['reload']],
        ['release', ['release', 'secret']],
      ] as const) {
        const r = await ctl(...args);
        assert.equal(r.code, 1, `${name}: ${r.out}`);
        assert.match(r.err, /^usernsctl: E_PERMISSION: /, name);
        answers.set(name, r.err);
      }
      // Same words for a context that does not exist: nothing to tell them apart.
      assert.equal((await ctl('resolve', 'nonexistent')).err, answers.get('resolve')!.replace('secret', 'nonexistent'));
      const list = JSON.parse((await ctl('--json', 'list')).out) as P.ListResult;
      assert.deepEqual(list.contexts, []);
      const st = JSON.parse((await ctl('--json', 'status')).out) as P.StatusResult;
      assert.deepEqual(Object.keys(st).sort(), ['contexts', 'full', 'protocol', 'uptimeSeconds', 'version']);
      assert.equal(st.contexts, 0);
      assert.deepEqual(existsSync(tree.pins) ? readdirSync(tree.pins) : [], pinsBefore, 'nothing was created on their behalf');
      const log = agent.logs.filter((l) => l.code === 'E_PERMISSION');
      assert.ok(log.length >= 6 && log.every((l) => l.peerUid === user.uid), 'each refusal is logged with the caller the kernel named');
    } finally {
      restore();
      user.remove();
    }
  });

  it('refuses hostile labels at the protocol edge, before any file is touched', async () => {
    agent = await startAgent(tree);
    const c = await AgentClient.connect(agent.socket);
    try {
      for (const label of ['../x', 'a/b', '', 'x'.repeat(65), 'a\0b', 'a\nb', '.hidden', '-rf', 'a b', '..']) {
        await assert.rejects(c.call(P.resolve, { label }), (e: unknown) => e instanceof UsernsError && e.code === 'E_INVALID', JSON.stringify(label));
        await assert.rejects(c.call(P.release, { label }), (e: unknown) => e instanceof UsernsError && e.code === 'E_INVALID', JSON.stringify(label));
      }
    } finally {
      c.close();
    }
    assert.equal(existsSync(join(tree.dir, 'x')), false);
    // Nothing but the agent's own records directory (where its lock is): no pin, no file named by a label.
    assert.deepEqual(existsSync(tree.pins) ? readdirSync(tree.pins).filter((n) => n !== RECORDS_DIR) : [], []);
    assert.deepEqual(
      readdirSync(join(tree.pins, RECORDS_DIR)).filter((n) => n.endsWith('.json')),
      [],
      'and no pin record',
    );
    assert.equal(agent.logs.filter((l) => l.msg.startsWith('Created')).length, 0);
  });

  it('refuses a symlink planted at the socket, at a pin, and at the state file', async () => {
    // Socket path: a symlink is not a socket, and is never unlinked or followed.
    const target = join(tree.dir, 'elsewhere.sock');
    writeFileSync(target, '');
    symlinkSync(target, join(tree.dir, 'usernsd.sock'));
    const r = spawnSync(process.execPath, [USERNSD, '--config', tree.config], { encoding: 'utf8', timeout: 15000 });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /usernsd\.sock exists and is not a socket: remove it/);
    assert.equal(existsSync(target), true, "the symlink's target is untouched");
    rmSync(join(tree.dir, 'usernsd.sock'));

    // Pin path: a symlink to a live namespace must not pass for a pin.
    mkdirSync(tree.pins, { recursive: true });
    symlinkSync('/proc/self/ns/user', join(tree.pins, 'secret'));
    agent = await startAgent(tree);
    const pin = await usernsctlHere(['--socket', agent.socket, 'resolve', 'secret']);
    assert.equal(pin.code, 1);
    assert.match(pin.err, /E_CONFIG: .*pins\/secret is a symbolic link, not a pin: someone planted it; remove it/);
    assert.deepEqual(mountsUnder(tree.pins), []);
    await agent.stop();

    // State file: read with O_NOFOLLOW, so a symlink is an error, never someone else's file.
    tree.context('auto.conf', '[context]\nrange = auto\n');
    mkdirSync(tree.state, { recursive: true });
    symlinkSync('/etc/passwd', join(tree.state, 'ranges.json'));
    agent = await startAgent(tree);
    const st = JSON.parse((await usernsctlHere(['--socket', agent.socket, '--json', 'status'])).out) as P.StatusResult;
    assert.ok(
      st.errors!.some((e) => /auto\.conf: \[context\] range: cannot read .*ranges\.json: ELOOP/.test(e)),
      st.errors!.join('\n'),
    );
  });

  it('ignores a context file others may write, and one that gives a user host root, with the reason in status', async () => {
    const user = makeUser();
    try {
      tree.context('open.conf', '[context]\nuid_map = 0 300000 1000\ngid_map = 0 300000 1000\n', 0o666);
      chmodSync(join(tree.contexts, 'open.conf'), 0o666);
      tree.context('rooty.conf', `[context]\nowner = ${user.name}\nuid_map = 0 0 1\ngid_map = 0 0 1\n`);
      agent = await startAgent(tree);
      const st = JSON.parse((await usernsctlHere(['--socket', agent.socket, '--json', 'status'])).out) as P.StatusResult;
      assert.ok(
        st.errors!.some((e) => e.startsWith(`${join(tree.contexts, 'open.conf')}:`) && /writable by group or others/.test(e)),
        st.errors!.join('\n'),
      );
      assert.ok(
        st.errors!.some((e) => e.startsWith(`${join(tree.contexts, 'rooty.conf')}:`) && /host uid 0 \(root\)/.test(e)),
        st.errors!.join('\n'),
      );
      for (const label of ['open', 'rooty']) {
        const r = await usernsctlHere(['--socket', agent.socket, 'resolve', label]);
        assert.equal(r.code, 1);
        assert.match(r.err, /E_CONFIG: context ".*" is not loaded because its file has an error/);
      }
    } finally {
      user.remove();
    }
  });
});

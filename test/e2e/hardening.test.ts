// The systemd unit's hardening, for real: the agent with only the unit's capability bounding set and no_new_privs, in a private (slave) mount namespace like ProtectSystem= gives it.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import type * as P from '../../agent/wire/protocol.ts';
import { cleanup, makeCheckoutReachable, startAgent, usernsctl, usernsctlAt, usernsctlHere } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import { installedUnit, NATIVE_SPAWNER } from '../helpers/unit.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser, mountsUnder } from '../helpers/kernel.ts';

/** CapabilityBoundingSet= of the unit as make install writes it, as setpriv spells capabilities. */
function unitCapabilities(): string[] {
  const line = installedUnit()
    .split('\n')
    .find((l) => l.startsWith('CapabilityBoundingSet='))!;
  return line
    .slice('CapabilityBoundingSet='.length)
    .trim()
    .split(/\s+/)
    .map((c) => c.replace(/^CAP_/, '').toLowerCase());
}

/** What systemd does to the unit's process, reproduced: bounding set, no_new_privs, a slave mount namespace. */
const confined = (caps: string[]) => [
  'unshare',
  '--mount',
  '--propagation',
  'slave',
  '--',
  'setpriv',
  '--no-new-privs',
  `--bounding-set=-all,${caps.map((c) => `+${c}`).join(',')}`,
  '--',
];

describe('e2e: the agent as the systemd unit confines it (root)', function () {
  let tree: Tree;
  let user: ReturnType<typeof makeUser> | undefined;
  let restore: (() => void) | undefined;
  before(function () {
    if (!isRoot) this.skip();
  }); // capability sets and mount namespaces: root
  beforeEach(() => {
    // Pins go to the test's own mount namespace, as they would go to init's under systemd.
    tree = makeTree(`mount_namespace = /proc/${process.pid}/ns/mnt\n`);
    // Shared here, so the agent's slave copy receives what is mounted here (systemd's /run is shared too).
    execFileSync('mount', ['--bind', tree.dir, tree.dir]);
    execFileSync('mount', ['--make-shared', tree.dir]);
    user = makeUser();
    restore = makeCheckoutReachable();
    tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    tree.context('b.conf', '[context]\nparent = a\nuid_map = 0 1000 100\ngid_map = 0 1000 100\n');
    tree.delegate(user.name, 300000, 100);
    tree.context('c.conf', `[context]\nowner = ${user.name}\nuid_map = 0 300000 100\ngid_map = 0 300000 100\nsetgroups = deny\n`);
  });
  afterEach(async () => {
    await cleanup(tree);
    restore?.();
    user?.remove();
  });

  it("creates, nests, pins for another owner and releases with only the unit's capabilities; the pins reach the host", async () => {
    const caps = unitCapabilities();
    assert.deepEqual(caps, ['sys_admin', 'sys_chroot', 'setuid', 'setgid', 'sys_ptrace', ...(NATIVE_SPAWNER ? [] : ['chown'])]);
    const agent = await startAgent(tree, ['--log-level', 'info'], { wrap: confined(caps) });
    const ctl = (...args: string[]) => usernsctlAt(agent.socket, args);
    for (const label of ['a', 'b', 'c']) {
      const r = await ctl('--json', 'resolve', label);
      assert.equal(r.code, 0, `${label}: ${r.err}`);
      assert.equal((JSON.parse(r.out) as P.ResolveResult).created, true);
    }
    // Mounted in this (the "host") mount namespace, not only in the agent's private one.
    assert.deepEqual(mountsUnder(tree.pins).sort(), [`${tree.pins}/a`, `${tree.pins}/b`, `${tree.pins}/c`]);
    // And the agent sees them through propagation: no second creation.
    assert.equal((JSON.parse((await ctl('--json', 'resolve', 'c')).out) as P.ResolveResult).created, false);
    // The owner enters its namespace without root, through the pin the host sees.
    const e = await usernsctl(['--socket', agent.socket, 'enter', 'c', '--', 'id', '-u'], { user });
    assert.equal(e.out, '0\n', e.err);
    assert.equal((await ctl('release', 'b')).out, 'released b\n');
    assert.deepEqual(mountsUnder(tree.pins).sort(), [`${tree.pins}/a`, `${tree.pins}/c`]);
    assert.equal(await agent.stop(), 0);
    assert.deepEqual(
      agent.logs.filter((l) => l.level >= 50),
      [],
    );
  });

  it('needs each of those capabilities: without any one, creating a context owned by another user, or a nested one, fails with E_KERNEL', async function () {
    this.timeout(60_000);
    const caps = unitCapabilities();
    for (const missing of caps) {
      const agent = await startAgent(tree, ['--log-level', 'info'], { wrap: confined(caps.filter((c) => c !== missing)) });
      const owned = await usernsctlHere(['--socket', agent.socket, 'resolve', 'c']);
      const nested = await usernsctlHere(['--socket', agent.socket, 'resolve', 'b']);
      const failed = [owned, nested].filter((r) => r.code === 1);
      assert.ok(failed.length > 0, `without ${missing} both were created: ${owned.out}${nested.out}`);
      // Without CAP_SYS_PTRACE the agent cannot even tell where its callers run (their user
      // namespace, from their pidfd), so it takes none of them for root: refused before the kernel is asked.
      const expected = missing === 'sys_ptrace' ? /^usernsctl: E_(KERNEL|PERMISSION): / : /^usernsctl: E_KERNEL: /;
      for (const r of failed) assert.match(r.err, expected, `without ${missing}`);
      assert.equal(await agent.stop(), 0);
      await usernsctlHere(['--socket', agent.socket, 'release', 'a']).catch(() => {});
      for (const label of ['b', 'a', 'c']) spawnSync('umount', ['-l', `${tree.pins}/${label}`]);
      spawnSync('sh', ['-c', `rm -f ${tree.pins}/a ${tree.pins}/b ${tree.pins}/c ${tree.pins}/.usernsd-records/*.json`]);
      assert.deepEqual(mountsUnder(tree.pins), [], `without ${missing}: nothing is left mounted`);
    }
  });

  it('with mount_namespace = self in a private mount namespace, pins would never reach the host (why auto exists)', async () => {
    const conf = readFileSync(tree.config, 'utf8').replace(/^mount_namespace = .*$/m, 'mount_namespace = self');
    tree.context('../usernsd.conf', conf);
    const agent = await startAgent(tree, ['--log-level', 'info'], { wrap: confined(unitCapabilities()) });
    const r = await usernsctlHere(['--socket', agent.socket, 'resolve', '--pin', 'a']);
    assert.equal(r.code, 0, r.err);
    assert.equal(existsSync(`${tree.pins}/a`), true, 'the pin file is there…');
    assert.deepEqual(mountsUnder(tree.pins), [], '…but nothing is mounted on it out here');
    assert.equal(await agent.stop(), 0);
    spawnSync('rm', ['-f', `${tree.pins}/a`]);
  });
});

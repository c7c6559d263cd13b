// Labels on inodes and resolve by path: real xattrs, a real mount point, a real symlink, a real unprivileged caller.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type * as P from '../../agent/wire/protocol.ts';
import { cleanup, makeCheckoutReachable, startAgent, usernsctl, usernsctlAt } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser } from '../helpers/kernel.ts';

describe('e2e: labels on inodes and resolve --path (root)', function () {
  let tree: Tree;
  let agent: RunningAgent;
  let data: string;
  const ctl = (args: string[], opts: Parameters<typeof usernsctl>[1] = {}) => usernsctlAt(agent.socket, args, opts);
  const label = (args: string[], opts: Parameters<typeof usernsctl>[1] = {}) => usernsctl(['label', ...args, '--config', tree.config], opts);

  before(function () {
    if (!isRoot) this.skip();
  }); // trusted.* attributes and pins: root
  beforeEach(async () => {
    tree = makeTree();
    tree.context('backups.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    data = join(tree.dir, 'data');
    mkdirSync(join(data, 'srv', 'deep', 'er'), { recursive: true });
    writeFileSync(join(data, 'srv', 'deep', 'er', 'file'), 'x');
    agent = await startAgent(tree);
  });
  afterEach(async () => {
    await cleanup(tree);
  });

  it('sets, gets and clears a label, refusing bad labels and symlinks', async () => {
    const srv = join(data, 'srv');
    assert.equal((await label(['set', srv, 'backups'])).out, `${srv}: backups\n`);
    assert.equal((await label(['get', srv])).out, 'backups\n');
    assert.equal(
      execFileSync('getfattr', ['--absolute-names', '--only-values', '-n', 'trusted.userns', srv], { encoding: 'utf8' }),
      'backups',
      'the attribute as getfattr(1) sees it',
    );
    for (const bad of ['../x', 'a/b', '', 'x'.repeat(65)]) {
      const r = await label(['set', srv, bad]);
      assert.equal(r.code, 1, bad);
      assert.match(r.err, /^usernsctl: E_INVALID: invalid label/);
    }
    symlinkSync(srv, join(data, 'link'));
    const sl = await label(['set', join(data, 'link'), 'backups']);
    assert.equal(sl.code, 1);
    assert.match(sl.err, /is a symbolic link/);
    assert.equal((await label(['clear', srv])).out, `${srv}: label removed\n`);
    const none = await label(['get', srv]);
    assert.equal(none.code, 1);
    assert.match(none.err, /has no label \(trusted\.userns\)/);
    const missing = await label(['get', join(data, 'nope')]);
    assert.match(missing.err, /E_NOT_FOUND: .*nope: no such file or directory/);
  });

  it('resolves the nearest labelled ancestor, creating the namespace', async () => {
    await label(['set', join(data, 'srv'), 'backups']);
    const r = await ctl(['--json', 'resolve', '--path', join(data, 'srv', 'deep', 'er', 'file')]);
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out) as P.ResolvePathResult;
    assert.equal(j.label, 'backups');
    assert.equal(j.labelledPath, join(data, 'srv'));
    assert.equal(j.path, `${tree.pins}/backups`);
    assert.equal(j.created, true);
    const human = await ctl(['resolve', '--path', join(data, 'srv', 'deep')]);
    assert.match(human.out, new RegExp(`^${join(data, 'srv')}: labelled backups\nbackups: ${tree.pins}/backups\n`));
    // A nearer label wins.
    tree.context('other.conf', '[context]\nuid_map = 0 200000 1000\ngid_map = 0 200000 1000\n');
    await ctl(['reload']);
    await label(['set', join(data, 'srv', 'deep'), 'other']);
    assert.equal((await ctl(['resolve', '--pin', '--path', join(data, 'srv', 'deep', 'er')])).out, `${tree.pins}/other\n`);
  });

  it('does not cross a mount point, and does not follow a symlink for the label', async () => {
    await label(['set', data, 'backups']);
    const mnt = join(data, 'srv', 'mnt');
    mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', mnt]);
    mkdirSync(join(mnt, 'inside'));
    const r = await ctl(['resolve', '--path', join(mnt, 'inside')]);
    assert.equal(r.code, 1);
    assert.match(r.err, new RegExp(`E_NOT_FOUND: no trusted\\.userns label on ${mnt}/inside or its ancestors up to ${mnt} \\(a mount point`));
    // A symlink into a labelled tree, from an unlabelled one: the link's own (absent) label counts.
    const elsewhere = join(tree.dir, 'elsewhere');
    mkdirSync(elsewhere);
    const labelled = join(tree.dir, 'labelled');
    mkdirSync(labelled);
    await label(['set', labelled, 'backups']);
    symlinkSync(labelled, join(elsewhere, 'link'));
    const viaLink = await ctl(['resolve', '--path', join(elsewhere, 'link')]);
    assert.equal(viaLink.code, 1, viaLink.out);
    assert.match(viaLink.err, /E_NOT_FOUND/);
    // …but ancestors are taken as they really are: a path through a symlinked directory finds its label.
    const through = await ctl(['resolve', '--pin', '--path', join(elsewhere, 'link', 'x')]);
    assert.equal(through.code, 1, 'x does not exist');
    mkdirSync(join(labelled, 'x'));
    assert.equal((await ctl(['resolve', '--pin', '--path', join(elsewhere, 'link', 'x')])).out, `${tree.pins}/backups\n`);
  });

  it('tells an unprivileged caller nothing about paths it cannot reach or contexts it may not use', async function () {
    const user = makeUser();
    const restore = makeCheckoutReachable();
    try {
      await label(['set', join(data, 'srv'), 'backups']);
      const as = { user: { uid: user.uid, gid: user.gid } };
      const refused = await ctl(['resolve', '--path', join(data, 'srv', 'deep')], as);
      assert.equal(refused.code, 1);
      assert.match(refused.err, new RegExp(`E_PERMISSION: uid ${user.uid} may not use context "backups"`));
      chmodSync(join(data, 'srv'), 0o700);
      const hidden = await ctl(['resolve', '--path', join(data, 'srv', 'deep', 'er')], as);
      const ghost = await ctl(['resolve', '--path', join(data, 'srv', 'no-such')], as);
      assert.match(hidden.err, new RegExp(`E_PERMISSION: uid ${user.uid} cannot reach ${data}/srv/deep/er`));
      assert.equal(ghost.err.replace('no-such', 'deep/er'), hidden.err, 'the same answer whether the path exists or not');
      const setByUser = await label(['set', join(tree.dir), 'backups'], as);
      assert.equal(setByUser.code, 1);
      assert.match(setByUser.err, /E_PERMISSION: .*trusted\.\* attributes need root/);
    } finally {
      restore();
      user.remove();
    }
  });

  it('refuses relative and oversized paths at the protocol edge', async () => {
    const r = await ctl(['resolve', '--path', 'x'.repeat(5000)]);
    assert.equal(r.code, 1);
    assert.match(r.err, /E_INVALID: resolvePath: parameter "path" is longer than 4096 bytes/);
  });
});

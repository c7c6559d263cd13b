// The client from a checkout, as the README says to run it: by any user, on the system's Node, and finding the dev configuration.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanup, makeCheckoutReachable, startAgent, USERNSCTL } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser } from '../helpers/kernel.ts';

const ROOT = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');

describe('e2e: usernsctl from a checkout (root, and a throwaway user)', function () {
  this.timeout(60_000);
  let tree: Tree | undefined;
  let user: ReturnType<typeof makeUser> | undefined;
  let home: string | undefined;
  let restoreModes: () => void = () => {};

  before(function () {
    if (!isRoot) this.skip();
    restoreModes = makeCheckoutReachable();
    user = makeUser();
    home = mkdtempSync(join(tmpdir(), 'usernsd-home-'));
    chownSync(home, user.uid, user.gid);
  });
  after(async () => {
    await cleanup(tree);
    user?.remove();
    if (home) rmSync(home, { recursive: true, force: true });
    restoreModes();
  });

  /** As the user, with a login-like environment: the system's PATH (its node first), nothing of ours. */
  const asUser = (cmd: string, env: Record<string, string> = {}) =>
    spawnSync(
      'setpriv',
      [
        `--reuid=${user!.uid}`,
        `--regid=${user!.gid}`,
        '--clear-groups',
        '--',
        'env',
        '-i',
        'PATH=/usr/local/bin:/usr/bin:/bin',
        `HOME=${home}`,
        ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
        'sh',
        '-c',
        `cd ${ROOT} && ${cmd}`,
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );

  it("./bin/usernsctl.js works for a user who is not root, on the system's older Node, and reaches the dev agent", async () => {
    tree = makeTree();
    tree.delegate(user!.name, 300000, 100);
    tree.context('mine.conf', `[context]\nowner = ${user!.name}\nuid_map = 0 300000 100\ngid_map = 0 300000 100\n`);
    const agent = await startAgent(tree);
    const direct = asUser('./bin/usernsctl.js --version');
    assert.equal(direct.status, 0, direct.stderr);
    assert.match(direct.stdout, /^usernsctl \d+\.\d+\.\d+$/m);
    const listed = asUser('./bin/usernsctl.js list', { USERNSD_SOCKET: agent.socket });
    assert.equal(listed.status, 0, listed.stderr);
    assert.match(listed.stdout, /^mine\b/m);
    // (npx is not the way for them: it links the checkout into the user's npx cache and chmods the
    // checkout's bin files, which only their owner may: EPERM. README says ./bin/usernsctl.js.)
  });

  it('check-config without --config reads $USERNSD_CONFIG, as the client reads $USERNSD_SOCKET', () => {
    tree ??= makeTree();
    tree.context('x.conf', '[context]\nuid_map = 0 310000 10\ngid_map = 0 310000 10\n');
    const r = spawnSync(process.execPath, [USERNSCTL, 'check-config', '--verbose'], { encoding: 'utf8', env: { ...process.env, USERNSD_CONFIG: tree.config } });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^${tree.config}: \\d+ valid context`, 'm'));
    assert.match(r.stdout, /^x: /m);
  });
});

// Nesting, every combination: parent owned or not, setgroups allow or deny, child owned or not, child setgroups default or allow.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cleanup, makeCheckoutReachable, startAgent, USERNSCTL, usernsctl, usernsctlHere } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser } from '../helpers/kernel.ts';

type Combo = { i: number; parentOwned: boolean; parentSetgroups: 'allow' | 'deny'; childOwned: boolean; childSetgroups: 'default' | 'allow' };

const combos: Combo[] = [];
for (const parentOwned of [false, true]) {
  for (const parentSetgroups of ['allow', 'deny'] as const) {
    for (const childOwned of [false, true]) {
      for (const childSetgroups of ['default', 'allow'] as const) combos.push({ i: combos.length, parentOwned, parentSetgroups, childOwned, childSetgroups });
    }
  }
}

/** Each combination gets its own host range; the child's owner is a host uid its parent maps. */
const base = (c: Combo) => 5_000_000 + c.i * 65536;
const childOwnerUid = (c: Combo) => base(c) + 7;
const name = (c: Combo) => `p${c.i}${c.parentOwned ? 'o' : ''}${c.parentSetgroups[0]}-c${c.childOwned ? 'o' : ''}${c.childSetgroups[0]}`;

describe('e2e: nesting, every combination check-config accepts resolves and can be entered as the pages say (root)', function () {
  this.timeout(120_000);
  let tree: Tree;
  let agent: RunningAgent;
  let owner: ReturnType<typeof makeUser>;
  let restoreModes: () => void = () => {};
  let check = '';

  before(async function () {
    if (!isRoot) this.skip();
    restoreModes = makeCheckoutReachable();
    owner = makeUser();
    tree = makeTree();
    for (const c of combos) {
      const b = base(c);
      // What each owner was given (SPEC §12): the parent's owner its range, the child's owner the child's ids.
      if (c.parentOwned) tree.delegate(owner.name, b, 65536);
      if (c.childOwned) tree.delegate(String(childOwnerUid(c)), b, 1000);
      tree.context(
        `P-${name(c)}.conf`,
        `[context]\nlabel = P-${name(c)}\n${c.parentOwned ? `owner = ${owner.name}\n` : ''}setgroups = ${c.parentSetgroups}\nuid_map = 0 ${b} 65536\ngid_map = 0 ${b} 65536\n`,
      );
      tree.context(
        `C-${name(c)}.conf`,
        `[context]\nlabel = C-${name(c)}\nparent = P-${name(c)}\n${c.childOwned ? `owner = ${childOwnerUid(c)}\n` : ''}${c.childSetgroups === 'allow' ? 'setgroups = allow\n' : ''}uid_map = 0 0 1000\ngid_map = 0 0 1000\n`,
      );
    }
    check = (await usernsctl(['check-config', '--config', tree.config])).err;
    agent = await startAgent(tree);
  });

  after(async () => {
    await cleanup(tree);
    owner?.remove();
    restoreModes();
  });

  /** `usernsctl enter LABEL -- id -u` as a user, from the initial namespace. */
  const enterAs = (label: string, uid: number, gid: number) =>
    spawnSync(
      'setpriv',
      [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--', process.execPath, USERNSCTL, '--socket', agent.socket, 'enter', label, '--', 'id', '-u'],
      { encoding: 'utf8' },
    );

  for (const c of combos) {
    it(`${name(c)}: parent ${c.parentOwned ? 'owned by a user' : 'owned by root'} with setgroups ${c.parentSetgroups}, child ${c.childOwned ? 'owned by a uid the parent maps' : "owned by the parent's root"} with setgroups ${c.childSetgroups}`, async () => {
      const child = `C-${name(c)}`;
      const parent = `P-${name(c)}`;
      const refusedByCheck = check.split('\n').filter((l) => l.includes(`/C-${name(c)}.conf:`));
      const statusErrors = (await usernsctlHere(['--socket', agent.socket, '--json', 'status'])).out;
      if (c.parentSetgroups === 'deny' && c.childSetgroups === 'allow') {
        // The one combination the kernel refuses: check-config says so, and says why.
        assert.equal(refusedByCheck.length, 1, check);
        assert.match(refusedByCheck[0], /setgroups: cannot be allow: parent ".*" has setgroups = deny, and the kernel refuses allow under deny/);
        assert.match(statusErrors, new RegExp(`C-${name(c)}\\.conf: \\[context\\] setgroups: cannot be allow`), 'the agent refuses it too');
        return;
      }
      assert.deepEqual(refusedByCheck, [], 'check-config accepts it');
      // Accepted, so it resolves: the kernel takes what the configuration admitted.
      const r = await usernsctlHere(['--socket', agent.socket, '--json', 'resolve', child]);
      assert.equal(r.code, 0, r.err);
      const resolved = JSON.parse(r.out) as { setgroups: string; path: string };
      // userns.d(5): as written; else deny under a deny parent; else deny for a non-root owner, allow for root.
      const expected = c.childSetgroups === 'allow' ? 'allow' : c.parentSetgroups === 'deny' || c.childOwned ? 'deny' : 'allow';
      assert.equal(resolved.setgroups, expected, 'setgroups as userns.d(5) says');
      const sg = spawnSync('nsenter', [`--user=${resolved.path}`, '--preserve-credentials', 'cat', '/proc/self/setgroups'], { encoding: 'utf8' });
      assert.equal(sg.stdout.trim(), resolved.setgroups, 'the kernel holds the setgroups the agent reports');
      // Root enters it.
      const asRoot = await usernsctl(['--socket', agent.socket, 'enter', child, '--', 'id', '-u']);
      assert.equal(asRoot.code, 0, asRoot.err);
      assert.equal(asRoot.out.trim(), '0');
      // The owner of its top-level context enters it from the host, without root.
      if (c.parentOwned) {
        const e = enterAs(child, owner.uid, owner.gid);
        assert.equal(e.status, 0, e.stderr);
        assert.equal(e.stdout.trim(), '0');
      }
      // Its own owner is refused from the host with the reason, and enters from inside the parent.
      if (c.childOwned) {
        const e = enterAs(child, childOwnerUid(c), childOwnerUid(c));
        assert.equal(e.status, 1);
        assert.match(e.stderr, /E_PERMISSION: .*nested, so it is entered by the owner of its top-level context, or by its own owner from inside its parent/);
        const inside = String(childOwnerUid(c) - base(c));
        const parentPin = `${tree.pins}/${parent}`;
        const viaParent = spawnSync(
          'nsenter',
          [
            `--user=${parentPin}`,
            '--preserve-credentials',
            '-S',
            inside,
            '-G',
            inside,
            '--',
            'nsenter',
            `--user=${resolved.path}`,
            '--preserve-credentials',
            '-S',
            '0',
            '-G',
            '0',
            '--',
            'id',
            '-u',
          ],
          { encoding: 'utf8' },
        );
        assert.equal(viaParent.status, 0, viaParent.stderr);
        assert.equal(viaParent.stdout.trim(), '0');
      }
    });
  }
});

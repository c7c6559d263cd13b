// Paths a caller names (resolve --path, explain, the label of a view's tree), looked at by the agent
// as root, against a caller who swaps a directory of hers for a symlink into a place she cannot reach
// while the agent looks (SPEC §12: a caller learns nothing of paths it could not reach itself). A
// real race on the real filesystem: her process swaps as fast as it can, the agent's lookups run
// meanwhile, in-process, as for her.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findLabel } from '../../agent/labels.ts';
import { setXattr } from '../../agent/kernel/sys.ts';
import type { Peer } from '../../agent/wire/peer.ts';
import { isRoot } from '../helpers/kernel.ts';

const ALICE = 6_300_000 + (process.pid % 1000);
const XATTR = 'trusted.userns';
/** The system's Python: a test user cannot run the one a version manager keeps under /root. */
const PYTHON = '/usr/bin/python3';

/** Her loop: `sw` a directory of hers holding `f`, then a symlink to the secret directory, then again. */
const SWAPPER = `
import os, sys
home, secret = sys.argv[1], sys.argv[2]
sw, aside = os.path.join(home, 'sw'), os.path.join(home, 'aside')
while True:
    try:
        os.rename(sw, aside)
        os.symlink(secret, sw)
        os.unlink(sw)
        os.rename(aside, sw)
    except OSError:
        pass
`;

describe('paths a caller names, against a caller swapping them while the agent looks (real filesystem, root)', function () {
  this.timeout(120_000);
  let top = '';
  let swapper: ChildProcess | null = null;
  before(function () {
    if (!isRoot) this.skip();
  });
  afterEach(async () => {
    if (swapper && swapper.exitCode === null) {
      const gone = new Promise((r) => swapper!.once('exit', r));
      swapper.kill('SIGKILL');
      await gone;
    }
    swapper = null;
    if (top) rmSync(top, { recursive: true, force: true });
  });

  it('the label of a file behind a directory she cannot search is never told her, however often she swaps a symlink in', async () => {
    top = mkdtempSync('/tmp/usernsd-caller-');
    chmodSync(top, 0o755);
    // Root's: a directory no one else may search, a labelled file in it.
    const secret = join(top, 'secret');
    mkdirSync(secret, { mode: 0o700 });
    writeFileSync(join(secret, 'f'), '');
    setXattr(join(secret, 'f'), XATTR, Buffer.from('hidden'));
    // Hers: her home, a directory in it with a file of the same name, labelled as hers.
    const home = join(top, 'home');
    mkdirSync(home, { mode: 0o755 });
    mkdirSync(join(home, 'sw'), { mode: 0o755 });
    writeFileSync(join(home, 'sw', 'f'), '');
    setXattr(join(home, 'sw', 'f'), XATTR, Buffer.from('mine'));
    for (const p of [home, join(home, 'sw'), join(home, 'sw', 'f')]) chownSync(p, ALICE, ALICE);
    assert.equal(lstatSync(join(home, 'sw')).isDirectory(), true);

    const alice: Peer = { pid: process.pid, uid: ALICE, gid: ALICE, groups: [], userns: [], host: true };
    // Without the race, as the agent answers her: her own label; the secret one is out of reach.
    assert.equal(findLabel(join(home, 'sw', 'f'), XATTR, alice).label, 'mine');
    assert.throws(() => findLabel(join(secret, 'f'), XATTR, alice), /cannot reach/);

    swapper = spawn('setpriv', [`--reuid=${ALICE}`, `--regid=${ALICE}`, '--clear-groups', PYTHON, '-c', SWAPPER, home, secret], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(swapper.exitCode, null, 'her swapping loop runs');
    const told = new Map<string, number>();
    const until = performance.now() + 3000;
    let asked = 0;
    while (performance.now() < until) {
      asked++;
      let said: string;
      try {
        said = findLabel(join(home, 'sw', 'f'), XATTR, alice).label;
      } catch (err) {
        said = (err as Error).message.replace(/.*(cannot reach|no trusted).*/, '$1');
      }
      told.set(said, (told.get(said) ?? 0) + 1);
      // Now and then let her loop run on this machine's two cores.
      if (asked % 64 === 0) await new Promise((r) => setImmediate(r));
    }
    assert.equal(told.get('hidden') ?? 0, 0, `told her the secret file's label: ${JSON.stringify([...told])} in ${asked} lookups`);
    assert.ok((told.get('mine') ?? 0) > 0, `the lookups ran and answered: ${JSON.stringify([...told])}`);
    assert.ok((told.get('cannot reach') ?? 0) > 0, `her swaps were met (a lookup through her symlink is refused): ${JSON.stringify([...told])}`);
  });
});

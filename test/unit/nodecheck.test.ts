// On a Node older than package.json's engines field, both programs refuse in one line, not a stack trace.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = new URL('../..', import.meta.url).pathname;
const engines = (JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { engines: { node: string } }).engines.node;

/** An installed Node older than the engines field (Debian 12's is 20), or null. */
function oldNode(): string | null {
  for (const candidate of ['/usr/bin/node', '/usr/local/bin/node', '/usr/bin/nodejs']) {
    const r = spawnSync(candidate, ['-p', 'process.versions.node'], { encoding: 'utf8' });
    if (r.status !== 0) continue;
    const [maj, min] = r.stdout.trim().split('.').map(Number);
    if (maj < 22 || (maj === 22 && min < 13)) return candidate;
  }
  return null;
}

describe('the Node version check', () => {
  it(`agrees with the engines field (${engines})`, () => {
    const check = readFileSync(`${ROOT}bin/node-check.js`, 'utf8');
    const [maj, min] = /\[(\d+), (\d+)\]/.exec(check)!.slice(1);
    assert.equal(`>=${maj}.${min}`, engines);
  });

  it('usernsd exits 1 with one line naming the version needed (init must see its own pid: never re-run)', function () {
    const node = oldNode();
    if (!node) this.skip(); // needs a Node older than 22.13 installed (Debian 12's /usr/bin/node is 20)
    const r = spawnSync(node, [`${ROOT}bin/usernsd.js`, '--version'], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr.split('\n').length, 2, 'one line');
    assert.match(r.stderr, /^usernsd: needs Node\.js >= 22\.13, this is v\d+/);
  });

  it("usernsctl runs on the checkout's own Node when started with an older one, exit status and all", function () {
    const node = oldNode();
    if (!node) this.skip();
    const ok = spawnSync(node, [`${ROOT}bin/usernsctl.js`, '--version'], { encoding: 'utf8' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /^usernsctl \d+\.\d+\.\d+\n$/);
    const usage = spawnSync(node, [`${ROOT}bin/usernsctl.js`, '--no-such-option'], { encoding: 'utf8' });
    assert.equal(usage.status, 2, 'the exit status of the re-run is passed on');
  });

  it('usernsctl without a checkout Node beside it exits 1 with one line naming the version needed', function () {
    const node = oldNode();
    if (!node) this.skip();
    const dir = mkdtempSync(join(tmpdir(), 'usernsd-nodecheck-'));
    try {
      mkdirSync(join(dir, 'bin'));
      for (const f of ['usernsctl.js', 'node-check.js']) copyFileSync(`${ROOT}bin/${f}`, join(dir, 'bin', f));
      writeFileSync(join(dir, 'package.json'), '{"type":"module"}\n');
      const r = spawnSync(node, [join(dir, 'bin', 'usernsctl.js'), '--version'], { encoding: 'utf8' });
      assert.equal(r.status, 1);
      assert.equal(r.stderr.split('\n').length, 2, 'one line');
      assert.match(r.stderr, /^usernsctl: needs Node\.js >= 22\.13, this is v\d+/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

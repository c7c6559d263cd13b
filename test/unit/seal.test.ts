// Whether a tree is sealed from host users (agent/seal.ts): every raw path under a root-only directory.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostReach, rawPaths, sealingDirectory } from '../../agent/seal.ts';

describe("seal: a tree out of every non-root host user's reach", () => {
  let dir: string;
  beforeEach(function () {
    if (process.getuid?.() !== 0) this.skip(); // root-owned directories are made here
    dir = mkdtempSync(join(tmpdir(), 'usernsd-seal-'));
    chmodSync(dir, 0o755);
  });
  afterEach(() => {
    if (dir) {
      spawnSync('umount', ['-R', join(dir, 'alias')]);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const tree = (parentMode: number) => {
    const parent = join(dir, `p${parentMode.toString(8)}`);
    mkdirSync(join(parent, 'tree'), { recursive: true });
    chmodSync(parent, parentMode);
    const t = join(parent, 'tree');
    const st = statSync(t);
    return { t, dev: st.dev, ino: st.ino, parent };
  };

  it("is sealed under a root directory without search for group (root's group may hold users) and others, and only then", () => {
    for (const [mode, sealed] of [
      [0o700, true],
      [0o750, false],
      [0o710, false],
      [0o701, false],
      [0o755, false],
    ] as const) {
      const { t, dev, ino, parent } = tree(mode);
      const r = hostReach(t, dev, ino, undefined, true);
      assert.equal(r.sealed, sealed, `mode ${mode.toString(8)}: ${JSON.stringify(r)}`);
      if (r.sealed) assert.equal(r.by, parent);
    }
  });

  it('counts an ACL entry that grants search, and is never sealed when hard links are not protected', () => {
    const { t, dev, ino, parent } = tree(0o700);
    assert.equal(hostReach(t, dev, ino, undefined, false).sealed, false, 'fs.protected_hardlinks = 0');
    assert.equal(spawnSync('setfacl', ['-m', 'u:65534:x', parent]).status, 0, 'setfacl (the acl package)');
    assert.equal(sealingDirectory(t), null, 'a named user may search it');
    assert.equal(hostReach(t, dev, ino, undefined, true).sealed, false);
  });

  it('finds the tree again through another mount of its filesystem, which must be sealed too', () => {
    const { t, dev, ino } = tree(0o700);
    const alias = join(dir, 'alias');
    mkdirSync(alias);
    assert.equal(spawnSync('mount', ['--bind', t, alias]).status, 0);
    assert.ok(rawPaths(t, dev, ino).includes(alias), JSON.stringify(rawPaths(t, dev, ino)));
    const r = hostReach(t, dev, ino, undefined, true);
    assert.equal(r.sealed, false, 'the bind mount in a 0755 directory reaches it');
    assert.match((r as { why: string }).why, new RegExp(`${alias} is reachable`));
  });
});

// /proc/self/mountinfo read a piece at a time (agent/kernel/mountinfo.ts firstMount): the first mount
// a predicate takes, the same as the whole file parsed gives, whatever the pieces cut through (a line,
// a character of several bytes), and no further read once it is found.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { firstMount, mountTable } from '../../agent/kernel/mountinfo.ts';
import type { MountEntry } from '../../agent/kernel/mountinfo.ts';
import { cgroup2Mount } from '../../agent/kernel/delegate.ts';

const line = (id: number, point: string, fs: string) => `${id} 1 0:${id} / ${point} rw,relatime shared:${id} - ${fs} ${fs}-src rw`;

describe('unit: mountinfo read a piece at a time', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'usernsd-mountinfo-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('finds the first mount a predicate takes, as the whole text parsed gives it, for any piece size', () => {
    // Mount points with escaped spaces and characters of two to four bytes; several of one type.
    const points = ['/', '/sys/fs/cgroup', '/run/userns/a\\040b', '/srv/é', '/srv/日本', '/srv/😀', '/run/userns/x'];
    const fsTypes = ['ext4', 'cgroup2', 'nsfs', 'tmpfs', 'cgroup2', 'nsfs'];
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom(...points), fc.constantFrom(...fsTypes)), { minLength: 0, maxLength: 40 }),
        fc.integer({ min: 1, max: 300 }),
        fc.constantFrom('cgroup2', 'nsfs', 'tmpfs', 'none'),
        (mounts, chunk, fsType) => {
          const text = mounts.map(([p, f], i) => line(i + 20, p, f)).join('\n') + (mounts.length > 0 ? '\n' : '');
          const file = join(dir, 'mountinfo');
          writeFileSync(file, text);
          const pred = (m: MountEntry) => m.fsType === fsType;
          const expected =
            text
              .split('\n')
              .flatMap((l) => [...mountTable(l).values()])
              .find(pred) ?? null;
          assert.deepEqual(firstMount(pred, undefined, { path: file, chunk }), expected);
          assert.deepEqual(firstMount(pred, text), expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("this machine's own mountinfo: each mount found where the whole file has it, and the unified hierarchy where cgroup2 is mounted first", () => {
    const text = readFileSync('/proc/self/mountinfo', 'utf8');
    const entries = text.split('\n').flatMap((l) => [...mountTable(l).values()]);
    assert.ok(entries.length > 0, 'no mount read');
    for (const e of entries)
      assert.deepEqual(
        firstMount((m) => m.id === e.id),
        e,
      );
    assert.equal(cgroup2Mount(), entries.find((m) => m.fsType === 'cgroup2')?.mountPoint ?? null);
    assert.equal(cgroup2Mount(line(7, '/sys/fs/cgroup\\040x', 'cgroup2')), '/sys/fs/cgroup x', 'the mount point as the kernel escapes it, unescaped');
  });
});

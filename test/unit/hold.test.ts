// One agent per state and pins directory (agent/kernel/hold.ts): a flock(2) on the directory, the
// holder named from /proc/locks. The kernel's own locks, taken and refused in this process.
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Fault } from '../../agent/fault.ts';
import { holdDirectory, lockHolder } from '../../agent/kernel/hold.ts';

describe('unit: holding a directory', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'usernsd-hold-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is refused while held (a flock is per open file: even this process is refused), naming the holder; free once its descriptor closes', () => {
    const state = join(dir, 'state', 'deeper');
    const fd = holdDirectory(state, 0o700, 'state directory');
    assert.equal(statSync(state).mode & 0o777, 0o700, 'made with its mode');
    assert.throws(
      () => holdDirectory(state, 0o700, 'state directory'),
      (err: unknown) =>
        err instanceof Fault &&
        err.kind === 'busy' &&
        err.object === 'directory' &&
        err.step === 'hold' &&
        err.message === `another usernsd (pid ${process.pid}) is using the state directory ${state}`,
    );
    closeSync(fd);
    closeSync(holdDirectory(state, 0o700, 'state directory'));
  });

  it('refuses a symbolic link where the directory should be, and holds nothing through it', () => {
    const real = join(dir, 'real');
    const fd = holdDirectory(real, 0o755, 'pins directory');
    closeSync(fd);
    symlinkSync(real, join(dir, 'link'));
    assert.throws(
      () => holdDirectory(join(dir, 'link'), 0o755, 'pins directory'),
      (err: unknown) => err instanceof Fault && err.kind === 'in-the-way',
    );
  });

  it('reads the holder of an inode from /proc/locks: its device as glibc encodes dev_t, waiting lockers and other locks ignored', () => {
    const locks = [
      '1: POSIX  ADVISORY  WRITE 77 00:1f:4242 0 EOF',
      '2: FLOCK  ADVISORY  WRITE 88 00:20:4242 0 EOF',
      '2: -> FLOCK  ADVISORY  WRITE 99 00:1f:4242 0 EOF',
      '3: FLOCK  ADVISORY  WRITE 1234 00:1f:4242 0 EOF',
      '4: FLOCK  ADVISORY  WRITE 555 103:05:77 0 EOF',
      '5: FLOCK  ADVISORY  WRITE 666 fd:100:88 0 EOF',
    ].join('\n');
    assert.equal(lockHolder(0x1f, 4242, locks), 1234, 'device 0:31');
    assert.equal(lockHolder((0x103 << 8) | 0x05, 77, locks), 555, 'major 259, minor 5');
    // Minor 256 and over: its high bits sit at bits 20-31 of dev_t.
    assert.equal(lockHolder((0xfd << 8) | ((0x100 & ~0xff) << 12), 88, locks), 666, 'major 253, minor 256');
    assert.equal(lockHolder(0x1f, 9999, locks), null, 'no lock on that inode');
  });
});

// One agent per state and pins directory (agent/kernel/hold.ts): a flock(2) on a lock file of the
// agent's own, the holder named from /proc/locks. The kernel's own locks, taken and refused in this process.
import assert from 'node:assert/strict';
import { chmodSync, closeSync, existsSync, fstatSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Fault } from '../../agent/fault.ts';
import { holdAgain, holdAnew, holdDirectory, LOCK_FILE, lockHolder } from '../../agent/kernel/hold.ts';
import { lockExclusive } from '../../agent/kernel/sys.ts';

describe('unit: holding a directory', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'usernsd-hold-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const busy = (role: string, path: string) => (err: unknown) =>
    err instanceof Fault &&
    err.kind === 'busy' &&
    err.object === 'directory' &&
    err.step === 'hold' &&
    err.message === `another usernsd (pid ${process.pid}) is using the ${role} ${path}`;

  it('is refused while held (a flock is per open file: even this process is refused), naming the holder; free once its descriptor closes', () => {
    const state = join(dir, 'state', 'deeper');
    const fd = holdDirectory([[state, 0o700]], 'state directory');
    assert.equal(statSync(state).mode & 0o777, 0o700, 'made with its mode');
    assert.equal(statSync(join(state, LOCK_FILE)).mode & 0o777, 0o600, 'the lock file is closed to others');
    assert.throws(() => holdDirectory([[state, 0o700]], 'state directory'), busy('state directory', state));
    closeSync(fd);
    closeSync(holdDirectory([[state, 0o700]], 'state directory'));
  });

  it('makes each directory of the way with its own mode, and names the first in its refusal', () => {
    const pins = join(dir, 'pins');
    const records = join(pins, '.records');
    const fd = holdDirectory(
      [
        [pins, 0o755],
        [records, 0o700],
      ],
      'pins directory',
    );
    assert.deepEqual([statSync(pins).mode & 0o777, statSync(records).mode & 0o777], [0o755, 0o700]);
    assert.throws(
      () =>
        holdDirectory(
          [
            [pins, 0o755],
            [records, 0o700],
          ],
          'pins directory',
        ),
      busy('pins directory', pins),
    );
    // The directory itself stays free: a lock on it (which anyone who may open it can take) stops nothing.
    const onDir = openSync(pins, 'r');
    assert.equal(lockExclusive(onDir, pins), true);
    closeSync(onDir);
    closeSync(fd);
  });

  it('refuses a lock file that is not its own: a symbolic link planted there, or a file open to others', () => {
    const a = join(dir, 'a');
    mkdirSync(a, { mode: 0o700 });
    symlinkSync('/etc/passwd', join(a, LOCK_FILE));
    assert.throws(
      () => holdDirectory([[a, 0o700]], 'state directory'),
      (err: unknown) => err instanceof Fault && err.kind === 'in-the-way',
    );
    const b = join(dir, 'b');
    mkdirSync(b, { mode: 0o700 });
    writeFileSync(join(b, LOCK_FILE), '');
    chmodSync(join(b, LOCK_FILE), 0o644);
    assert.throws(
      () => holdDirectory([[b, 0o700]], 'state directory'),
      (err: unknown) => err instanceof Fault && err.kind === 'in-the-way' && /not the agent's own lock file/.test(err.message),
    );
  });

  it('holds a directory made anew after it was removed, lets go of the removed one, and leaves alone what it never held', () => {
    const state = join(dir, 'state');
    const first = holdDirectory([[state, 0o700]], 'state directory');
    rmSync(state, { recursive: true });
    const again = holdAgain(state)!;
    assert.throws(() => holdDirectory([[state, 0o700]], 'state directory'), busy('state directory', state));
    closeSync(again);
    assert.throws(() => fstatSync(first), /EBADF/, 'the lock on the removed directory is let go');
    // Never held by this process: not made, not held.
    const other = join(dir, 'other');
    assert.equal(holdAgain(other), null);
    assert.equal(existsSync(other), false);
    // Made anew by whoever holds it (the pins, kernel/userns.ts): held, whether held before or not.
    const anew = holdAnew([[other, 0o700]], 'pins directory');
    assert.throws(() => holdDirectory([[other, 0o700]], 'pins directory'), busy('pins directory', other));
    closeSync(anew);
  });

  it('never closes a descriptor that is no longer its lock: closed by its caller, its number reused by another file', () => {
    const state = join(dir, 'state');
    const fd = holdDirectory([[state, 0o700]], 'state directory');
    closeSync(fd);
    writeFileSync(join(dir, 'unrelated'), 'x');
    const reused = openSync(join(dir, 'unrelated'), 'r');
    assert.equal(reused, fd, 'the lowest free number: the one just closed');
    try {
      rmSync(state, { recursive: true });
      closeSync(holdAgain(state)!);
      assert.equal(fstatSync(reused).size, 1, 'the unrelated file is still open');
    } finally {
      closeSync(reused);
    }
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

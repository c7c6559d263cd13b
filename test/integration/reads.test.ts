// The start's reads on the native library's thread (agent/kernel/reads.ts, native/reads.c): each
// file, whatever it is, read and judged exactly as readConfigFile reads and judges it.
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { STAMPS_LIBRARY } from '../../agent/kernel/stamps.ts';
import { NativeReads, nativeReadCounts, useNativeReads } from '../../agent/kernel/reads.ts';
import { MAX_CONFIG_FILE_BYTES, readConfigFile } from '../../config/ini.ts';
import { isRoot } from '../helpers/kernel.ts';

/** What a listing's entry is: every kind readConfigFile tells apart. */
type Entry =
  | { kind: 'file'; bytes: Uint8Array; mode: number; owner: number }
  | { kind: 'large'; extra: number }
  | { kind: 'symlink' }
  | { kind: 'fifo' }
  | { kind: 'dir' }
  | { kind: 'gone' };

const entry: fc.Arbitrary<Entry> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('file' as const),
      // Text, and bytes that are not UTF-8 (decoded with replacement characters, as readConfigFile does).
      bytes: fc.oneof(
        fc.string({ maxLength: 300 }).map((s) => new TextEncoder().encode(s)),
        fc.uint8Array({ maxLength: 300 }),
      ),
      mode: fc.constantFrom(0o644, 0o600, 0o664, 0o646, 0o444),
      owner: fc.constantFrom(0, 0, 0, 1000),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('large' as const), extra: fc.constantFrom(-1, 0, 1, 100) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'symlink' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'fifo' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'dir' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'gone' as const }) },
);

function make(dir: string, entries: readonly Entry[]): string[] {
  return entries.map((e, i) => {
    const path = join(dir, `c${String(i).padStart(4, '0')}.conf`);
    if (e.kind === 'file') {
      writeFileSync(path, e.bytes);
      chmodSync(path, e.mode);
      if (isRoot && e.owner !== 0) chownSync(path, e.owner, e.owner);
    } else if (e.kind === 'large') writeFileSync(path, Buffer.alloc(MAX_CONFIG_FILE_BYTES + e.extra, 'a'));
    else if (e.kind === 'symlink') {
      writeFileSync(`${path}.target`, '[context]\n');
      symlinkSync(`${path}.target`, path);
    } else if (e.kind === 'fifo') execFileSync('mkfifo', [path]);
    else if (e.kind === 'dir') mkdirSync(path);
    // 'gone': listed, never made (removed before it was read)
    return path;
  });
}

/** Until the reader has come `n` files into its listing (at most 10 s: a loaded machine is slow). */
async function readerAt(reads: NativeReads, n: number): Promise<void> {
  for (let i = 0; i < 1000 && reads.ahead < n; i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(reads.ahead >= n, `the reader came ${reads.ahead} files, not ${n}`);
}

/**
 * Every file taken in order, each once the reader has come past it (so each is the thread's): what
 * it handed over, and how many. A caller never waits so in the agent; here it shows the thread
 * goes on past its window as the caller moves.
 */
async function readAll(files: readonly string[]): Promise<{ got: unknown[]; handed: number }> {
  const reads = NativeReads.start(files);
  assert.ok(reads, 'the library started a reader');
  try {
    const before = nativeReadCounts.handed;
    const got: unknown[] = [];
    for (let i = 0; i < files.length; i++) {
      if (reads.ahead <= i) await readerAt(reads, i + 1);
      got.push(reads.get(files[i]) ?? readConfigFile(files[i]));
    }
    return { got, handed: nativeReadCounts.handed - before };
  } finally {
    reads.close();
  }
}

describe('integration: the start reads its context files on the native library thread', () => {
  let dir: string;
  before(() => {
    assert.ok(existsSync(STAMPS_LIBRARY), `${STAMPS_LIBRARY} is missing: npm run build makes it with a C compiler (apt-get install gcc libc6-dev)`);
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'usernsd-reads-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('hands over each file exactly as readConfigFile reads and judges it: text, stamp, or the same error (fast-check)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { minLength: 1, maxLength: 12 }), async (entries) => {
        rmSync(dir, { recursive: true, force: true });
        mkdirSync(dir);
        const files = make(dir, entries);
        const { got, handed } = await readAll(files);
        assert.equal(handed, files.length, 'every file came from the thread');
        assert.deepEqual(
          got,
          files.map((f) => readConfigFile(f)),
        );
      }),
      { numRuns: 60 },
    );
  });

  it('stays a bounded window ahead, and goes on as the caller moves; passed and out-of-order files are left to the caller', async () => {
    const files = make(
      dir,
      Array.from({ length: 5000 }, (_, i) => ({ kind: 'file' as const, bytes: new TextEncoder().encode(`[context]\n# ${i}\n`), mode: 0o644, owner: 0 })),
    );
    // The thread stops a window (4,096 files) ahead of a caller that has not moved...
    const waiting = NativeReads.start(files)!;
    try {
      await readerAt(waiting, 4096);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(waiting.ahead, 4096, 'no further while the caller stays');
    } finally {
      waiting.close();
    }
    // ...and goes on as it moves: every file is the thread's.
    const { got, handed } = await readAll(files);
    assert.equal(handed, files.length, `the thread handed over ${handed} of ${files.length}`);
    assert.deepEqual(
      got,
      files.map((f) => readConfigFile(f)),
    );
    // A caller that skips ahead gets nothing for the skipped file out of order, and its own place read.
    const reads = NativeReads.start(files)!;
    try {
      await readerAt(reads, 2);
      assert.equal(reads.get(files[1]), undefined, 'out of order: left to the caller');
      assert.deepEqual(reads.get(files[0]), readConfigFile(files[0]));
      assert.deepEqual(reads.get(files[1]), readConfigFile(files[1]));
    } finally {
      reads.close();
    }
    assert.equal(reads.get(files[2]), undefined, 'closed: every file is left to the caller');
  });

  it('starts no reader without the library, or for a listing not all in one directory', () => {
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'a.conf'), '');
    writeFileSync(join(dir, 'sub', 'b.conf'), '');
    assert.equal(NativeReads.start([join(dir, 'a.conf'), join(dir, 'sub', 'b.conf')]), null);
    useNativeReads(false);
    try {
      assert.equal(NativeReads.start([join(dir, 'a.conf')]), null);
    } finally {
      useNativeReads(true);
    }
  });
});

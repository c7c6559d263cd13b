// Context files read on a second thread (issue 26: a start with 65,535 files): whatever is asked,
// in whatever order, the reader hands over exactly what readConfigFile reads of that file, or
// nothing (the caller then reads it); and a load of a long listing through the thread is the load
// made without it.
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { readConfigFile } from '../../config/ini.ts';
import { loadContextDefs } from '../../config/load.ts';
import { THREAD_READ_MIN_FILES, threadCounts, ThreadReads } from '../../config/readahead.ts';
import { makeTree, testNss } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';

const text = (n: number) => `[context]\nuid_map = 0 ${4_000_000 + n * 1000} 1000\ngid_map = 0 ${4_000_000 + n * 1000} 1000\n`;

describe('unit: context files read on a second thread (ThreadReads)', function () {
  this.timeout(60_000);
  let tree: Tree;
  /** Names of every kind readConfigFile meets: good, a symbolic link, writable by others, a directory, too large, empty, missing. */
  let names: string[];

  before(() => {
    tree = makeTree();
    names = [];
    const add = (name: string, make: (path: string) => void) => {
      make(join(tree.contexts, name));
      names.push(join(tree.contexts, name));
    };
    for (let i = 0; i < 40; i++) add(`good${i}.conf`, (p) => writeFileSync(p, text(i), { mode: 0o644 }));
    add('link.conf', (p) => symlinkSync(join(tree.contexts, 'good0.conf'), p));
    add('open.conf', (p) => {
      writeFileSync(p, text(99));
      chmodSync(p, 0o666);
    });
    add('dir.conf', (p) => mkdirSync(p));
    add('large.conf', (p) => writeFileSync(p, `# ${'x'.repeat(70_000)}\n`, { mode: 0o644 }));
    add('empty.conf', (p) => writeFileSync(p, '', { mode: 0o644 }));
    add('missing.conf', () => {});
  });

  after(() => tree.remove());

  it('hands over what readConfigFile reads, in the listing order; nothing out of order or after close; every file once the thread has read them', async () => {
    // Listings across batches of 256, asked in order with other asks and a close put in between:
    // at once (the thread may not have read a file yet: the caller reads it), or once the thread has read every file.
    const listing = fc.array(fc.integer({ min: 0, max: 45 }), { maxLength: 700, size: 'max' });
    const between = fc.array(fc.record({ at: fc.nat(), close: fc.boolean(), which: fc.nat() }), { maxLength: 6 });
    const handed = threadCounts.handed;
    await fc.assert(
      fc.asyncProperty(listing, between, fc.boolean(), async (picks, asides, wait) => {
        const files = picks.map((i) => names[i]);
        const reads = ThreadReads.start(files);
        if (reads === null) throw new Error('the thread did not start');
        try {
          if (wait) await reads.ended;
          let open = true;
          for (let next = 0; next < files.length; next++) {
            for (const a of asides.filter((x) => x.at % files.length === next)) {
              if (a.close) {
                await reads.close();
                open = false;
              } else if (names[a.which % names.length] !== files[next])
                assert.equal(reads.get(names[a.which % names.length]), undefined, `asked out of order when ${files[next]} was next`);
            }
            const got: unknown = reads.get(files[next]);
            if (!open) assert.equal(got, undefined, `asked ${files[next]} after close`);
            else if (got !== undefined || wait) assert.deepEqual(got, readConfigFile(files[next]), `file ${next} of ${files.length}: ${files[next]}`);
          }
        } finally {
          await reads.close();
        }
      }),
      { numRuns: 30, interruptAfterTimeLimit: 20_000 },
    );
    assert.ok(threadCounts.handed > handed, 'files came from the thread');
  });

  it('a load of a listing long enough for the thread is the load made without it', () => {
    // Good files, broken ones, some refused for their mode.
    for (let i = 0; i < THREAD_READ_MIN_FILES + 10; i++) {
      const name = `c${String(i).padStart(5, '0')}.conf`;
      if (i % 500 === 7) writeFileSync(join(tree.contexts, name), '[context\nuid_map = 0 1 1\n', { mode: 0o644 });
      else writeFileSync(join(tree.contexts, name), text(100 + i), { mode: i % 500 === 9 ? 0o666 : 0o644 });
    }
    const started = threadCounts.started;
    const threaded = loadContextDefs(tree.contexts, testNss, 65536);
    assert.equal(threadCounts.started, started + 1, 'the files were read on a thread');
    const inline = loadContextDefs(tree.contexts, testNss, 65536, new Map());
    assert.equal(threadCounts.started, started + 1, 'read ahead (a reload): no thread');
    assert.ok(threaded.defs.length > THREAD_READ_MIN_FILES && threaded.errors.length > 10, 'good files and broken ones among them');
    assert.deepEqual(threaded, inline);
  });
});

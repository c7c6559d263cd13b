// The listing's paths are built without node:path's per-name work (config/load.ts: listContextFiles,
// fileName), which must give what join(dir, name) and basename(path) give, for any directory and
// any name a directory can list (no "/", none starting with "." kept).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import fc from 'fast-check';
import { fileName, listContextFiles } from '../../config/load.ts';

const segment = fc.oneof(fc.constantFrom('', '.', '..', 'a', 'b.conf', 'x y', 'é'), fc.string({ unit: fc.constantFrom('a', '.', '-', 'z') }));
const path = fc.array(segment, { maxLength: 6 }).chain((parts) => fc.constantFrom(parts.join('/'), `/${parts.join('/')}`, `${parts.join('/')}/`));

describe('paths of a listing, built without node:path for each name', () => {
  it('fileName(path) is basename(path), for any path', () => {
    fc.assert(
      fc.property(path, (p) => assert.equal(fileName(p), basename(p), JSON.stringify(p))),
      { numRuns: 2000 },
    );
  });

  it('listContextFiles names each file join(dir, name) would, however the directory is written', () => {
    const root = mkdtempSync(join(tmpdir(), 'usernsd-test-paths-'));
    try {
      const names = ['a.conf', 'b c.conf', 'é.conf', '.hidden.conf', 'x.conf.example'];
      for (const n of names) writeFileSync(join(root, n), '');
      const base = root.split('/').pop()!;
      for (const dir of [root, `${root}/`, `${root}//`, `${root}/.`, `${root}/../${base}`, `${root}/./`]) {
        assert.deepEqual(
          listContextFiles(dir),
          ['a.conf', 'b c.conf', 'é.conf'].map((n) => join(dir, n)),
          dir,
        );
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

// The built agent reads a long listing of context files on a second thread (config/readahead.ts):
// the thread's program is found beside the built module (a .js file there, a .ts one in the
// checkout), and what the load reads through it is what it reads without it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { THREAD_READ_MIN_FILES } from '../../config/readahead.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { assertBuiltFromCurrentSources } from '../helpers/fresh.ts';

const ROOT = new URL('../..', import.meta.url).pathname;

describe('the built agent reads a long listing on a second thread', function () {
  this.timeout(60_000);
  let tree: Tree;
  before(() => {
    assertBuiltFromCurrentSources('dist/agent/main.js', ['agent', 'config'], /\.ts$/);
    tree = makeTree();
    for (let i = 0; i < THREAD_READ_MIN_FILES + 1; i++) {
      const at = 4_000_000 + i * 1000;
      writeFileSync(join(tree.contexts, `c${i}.conf`), `[context]\nuid_map = 0 ${at} 1000\ngid_map = 0 ${at} 1000\n`, { mode: 0o644 });
    }
  });
  after(() => tree.remove());

  it('starts the thread from dist/ and loads every file through it, as without it', () => {
    const program = `
      const { loadContextDefs } = await import(${JSON.stringify(`${ROOT}dist/config/load.js`)});
      const { threadCounts } = await import(${JSON.stringify(`${ROOT}dist/config/readahead.js`)});
      const nss = { userByName: () => null, userById: () => null, groupByName: () => null };
      const threaded = loadContextDefs(${JSON.stringify(tree.contexts)}, nss, 65536);
      const inline = loadContextDefs(${JSON.stringify(tree.contexts)}, nss, 65536, new Map());
      console.log(JSON.stringify({ started: threadCounts.started, defs: threaded.defs.length, errors: threaded.errors, same: JSON.stringify(threaded) === JSON.stringify(inline) }));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', program], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { started: 1, defs: THREAD_READ_MIN_FILES + 1, errors: [], same: true });
  });
});

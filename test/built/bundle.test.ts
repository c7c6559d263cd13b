// The agent as bin/usernsd.js runs it: bundled by scripts/bundle.js into dist/usernsd.js, its reading
// thread's program and their shared and on-demand chunks beside it. A file the bundle names beside
// itself must be there (a reading thread whose program is missing fails silently: the agent reads
// on its own thread, slower), and it must not reach back into the unbundled dist/agent/.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { distOf, DIST } from '../../agent/kernel/built.ts';
import { SPAWNER_PATH } from '../../agent/kernel/spawner.ts';
import { STAMPS_LIBRARY } from '../../agent/kernel/stamps.ts';
import { assertBuiltFromCurrentSources } from '../helpers/fresh.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const dist = join(ROOT, 'dist');
/** What the bundle may import from outside itself: Node, and the packages scripts/bundle.js leaves out. */
const OUTSIDE = /^(node:|koffi$|node-ipc$|etcd3$|prom-client$)/;

/** The bundle's own files: every .js file directly in dist/ but the upcall (a bundle of its own, test/built/startup.test.ts). */
const files = () => readdirSync(dist).filter((f) => f.endsWith('.js') && f !== 'upcall.js');

describe('the agent, bundled (scripts/bundle.js)', () => {
  before(() => assertBuiltFromCurrentSources('dist/usernsd.js', ['agent', 'config'], /\.ts$/));

  it('bin/usernsd.js runs dist/usernsd.js, and the bundle imports only itself, Node and the packages left out', () => {
    assert.match(readFileSync(join(ROOT, 'bin', 'usernsd.js'), 'utf8'), /import\('\.\.\/dist\/usernsd\.js'\)/);
    assert.ok(files().includes('usernsd.js') && files().includes('readworker.js'), files().join(', '));
    for (const f of files()) {
      const code = readFileSync(join(dist, f), 'utf8');
      // esbuild writes each static import at the start of a line; a dynamic one is import("…").
      const named = [...code.matchAll(/^(?:import|export)\b[^;"]*?(?:from)?\s*"([^"]+)";/gm), ...code.matchAll(/\bimport\(\s*"([^"]+)"\s*\)/g)].map(
        (m) => m[1],
      );
      assert.ok(named.length > 0 || f.startsWith('chunk-'), `${f} imports something`);
      for (const s of named) {
        if (OUTSIDE.test(s)) continue;
        assert.match(s, /^\.\/[\w.-]+\.js$/, `${f} imports ${s}: neither Node, a package left out, nor a file of the bundle`);
        assert.ok(existsSync(join(dist, s)), `${f} imports ${s}, which is not in dist/`);
      }
    }
  });

  it("every file the bundle names beside itself is there (the reading thread's program), and none is named above it", () => {
    let beside = 0;
    for (const f of files()) {
      const code = readFileSync(join(dist, f), 'utf8');
      for (const m of code.matchAll(/"(\.\.?\/[\w./-]+\.js)"/g)) {
        assert.ok(m[1].startsWith('./'), `${f} names ${m[1]}, outside dist/`);
        assert.ok(existsSync(join(dist, m[1])), `${f} names ${m[1]}, which is not in dist/`);
        if (m[1] === './readworker.js') beside++;
      }
    }
    assert.ok(beside > 0, "the reading thread's program is named by the bundle (config/readahead.ts)");
  });

  it('finds dist/ from the sources, from the compiled tree and from the bundle, and the programs it builds are there', () => {
    assert.equal(DIST, dist, 'from the sources (the tests)');
    assert.equal(distOf(pathToFileURL(join(dist, 'agent', 'kernel', 'spawner.js')).href), dist, 'compiled');
    assert.equal(distOf(pathToFileURL(join(dist, 'usernsd.js')).href), dist, 'bundled');
    assert.equal(distOf(pathToFileURL(join(dist, 'chunk-X.js')).href), dist, 'a chunk of the bundle');
    for (const p of [SPAWNER_PATH, STAMPS_LIBRARY]) assert.ok(p.startsWith(`${dist}/`) && existsSync(p), p);
  });
});

// What keeps the request-key handler's start-up small (BENCHMARKS.md "upcall"), checked by what it
// loads rather than by timing: koffi opened directly, one bundled file, no node:net (a blocking
// socket through libc instead), no costly built-in namespaces.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { KOFFI_VERSION, koffiLoader } from '../../agent/kernel/ffi.ts';
import { assertBuiltFromCurrentSources } from '../helpers/fresh.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const json = (path: string) => JSON.parse(readFileSync(`${ROOT}${path}`, 'utf8')) as { version: string; dependencies: Record<string, string> };

describe('the upcall start-up', () => {
  before(() => assertBuiltFromCurrentSources('dist/upcall.js', ['agent', 'config'], /\.ts$/));

  it("opens koffi's native module directly, at the version package.json pins", () => {
    assert.equal(json('package.json').dependencies.koffi, KOFFI_VERSION, 'agent/ffi.ts KOFFI_VERSION follows package.json');
    assert.equal(json('node_modules/koffi/package.json').version, KOFFI_VERSION);
    if (process.platform === 'linux' && ['x64', 'arm64'].includes(process.arch)) assert.equal(koffiLoader, 'direct');
  });

  it('is one bundled file that imports nothing of ours', () => {
    const bundle = readFileSync(`${ROOT}dist/upcall.js`, 'utf8');
    const imports = [...bundle.matchAll(/\bimport\s*(?:[\w*{}\s,]+from\s*)?\(?\s*["']([^"']+)["']/g)].map((m) => m[1]);
    assert.deepEqual(
      imports.filter((s) => !s.startsWith('node:') && s !== 'koffi'),
      [],
    );
    assert.match(bundle, /export\s*{[^}]*\bupcallMain\b/);
  });

  it('loads neither node:net nor fs.promises nor worker_threads (what an ESM import of node:fs or node:util drags in)', () => {
    const r = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', `await import(${JSON.stringify(`${ROOT}dist/upcall.js`)}); console.log(process.moduleLoadList.join('\\n'))`],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    const loaded = r.stdout.split('\n');
    assert.ok(loaded.includes('NativeModule os'), 'the list is the real one: the handler uses node:os');
    for (const costly of [
      'NativeModule net',
      'NativeModule stream',
      'NativeModule internal/fs/promises',
      'NativeModule worker_threads',
      'NativeModule internal/readline/interface',
    ]) {
      assert.ok(!loaded.includes(costly), `${costly} is loaded`);
    }
  });
});

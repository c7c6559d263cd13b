// What keeps the request-key handler's start-up small (BENCHMARKS.md "upcall"), checked by what it
// loads rather than by timing: koffi opened directly, one bundled file, no node:net (a blocking
// socket through libc instead), no costly built-in namespaces.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KOFFI_VERSION, koffiLoader } from '../../agent/kernel/ffi.ts';
import { childEnv } from '../helpers/agent.ts';
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

/** The packages `usernsctl ARGS` loaded (test/helpers/record-loads.ts), on a socket where no agent listens. */
function cliLoads(args: string[]): Set<string> {
  const dir = mkdtempSync(join(tmpdir(), 'usernsd-test-loads-'));
  try {
    const out = join(dir, 'loads');
    const r = spawnSync(process.execPath, [`${ROOT}bin/usernsctl.js`, '--socket', join(dir, 'none.sock'), ...args], {
      encoding: 'utf8',
      env: childEnv({ USERNSD_TEST_LOADS: out, NODE_OPTIONS: `--import=${ROOT}test/helpers/record-loads.ts` }),
    });
    assert.match(r.stderr, /cannot reach the agent/, `usernsctl ${args.join(' ')} got as far as the socket`);
    return new Set(readFileSync(out, 'utf8').split('\n').filter(Boolean));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// Every usernsctl call is a process start (scripts, the tests, mount helpers): what a command does
// not use, it does not load. koffi (libc calls) is for views and NSS, node-ipc for the agent's
// server, etcd's client (gRPC, protobuf) for the shared pool's own commands, prom-client and pino for
// the agent, Node's fetch (undici) for nothing: about 50 ms of every call together.
describe('the usernsctl start-up', () => {
  before(() => assertBuiltFromCurrentSources('dist/agent/cli/main.js', ['agent', 'config'], /\.ts$/));
  const AGENT_SIDE = /koffi|^node-ipc$|^etcd3$|^@grpc\/|^protobufjs$|^prom-client$|^pino$|^builtin:internal\/deps\/undici\//;

  for (const args of [['status'], ['list'], ['resolve', 'a'], ['map', '--from', 'a', '--to', 'host', '--uid', '0'], ['release', 'a'], ['reload']]) {
    it(`usernsctl ${args[0]} loads none of the agent's libraries`, () => {
      const loads = [...cliLoads(args)];
      assert.ok(loads.includes('builtin:net'), `the record is the command's: ${loads.join(', ')}`);
      assert.deepEqual(
        loads.filter((p) => AGENT_SIDE.test(p)),
        [],
      );
    });
  }

  it('usernsctl view and explain load koffi, which they use (a check of the check)', () => {
    for (const args of [
      ['view', '--list'],
      ['explain', '/'],
    ]) {
      const loads = [...cliLoads(args)];
      assert.ok(
        loads.some((p) => p.includes('koffi')),
        `${args.join(' ')}: ${loads.join(', ')}`,
      );
    }
  });
});

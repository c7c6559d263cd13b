// Range allocations on disk: recorded before use, the same after a restart, a corrupt file refused.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeDirs } from '../../agent/kernel/files.ts';
import { loadConfiguration } from '../../agent/configure.ts';
import { formatConfigError } from '../../config/ini.ts';
import { makeTree, staticContext } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';

describe('state: recorded allocations', () => {
  let tree: Tree;
  beforeEach(() => {
    tree = makeTree();
    tree.context('auto.conf', '[context]\nrange = auto\n');
  });
  afterEach(() => tree.remove());
  const load = (record: boolean) => loadConfiguration(tree.config, { record, systemIds: () => [] });

  it('records a fresh allocation atomically before use and gives it back after a restart', () => {
    const checkOnly = load(false);
    assert.ok(checkOnly.unrecorded.has('auto'));
    assert.equal(existsSync(`${tree.state}/ranges.json`), false, 'check-config writes nothing');
    const first = load(true);
    const a = first.allocations.get('auto')!;
    const onDisk = JSON.parse(readFileSync(`${tree.state}/ranges.json`, 'utf8')) as unknown;
    assert.deepEqual(onDisk, { version: 1, allocations: { auto: { start: a.start, size: 65536 } } });
    assert.equal(statSync(`${tree.state}/ranges.json`).mode & 0o777, 0o600);
    assert.deepEqual(first.contexts.get('auto')!.uidMap, [{ inside: 0, outside: a.start, count: 65536 }]);
    assert.deepEqual(load(true).allocations.get('auto'), a, 'the same range after a restart');
  });

  it('refuses to allocate from a corrupt state file and says how to recover', () => {
    load(true);
    writeFileSync(`${tree.state}/ranges.json`, '{"version":1,"allocations":{"auto":{"start":');
    const cfg = load(true);
    assert.equal(cfg.contexts.has('auto'), false);
    assert.match(
      cfg.errors.map(formatConfigError).join('\n'),
      /auto\.conf: \[context\] range: .*ranges\.json is corrupt \(not JSON\): no range will be allocated until it is fixed\. Restore it from a backup/,
    );
  });

  it('refuses a recorded range this host would never allocate (outside the pool, off its slots, over system ids), naming why, and keeps the others', () => {
    tree.context('constructor.conf', '[context]\nrange = auto\n');
    tree.context('slanted.conf', '[context]\nrange = auto\n');
    tree.context('system.conf', '[context]\nrange = auto\n');
    const first = load(true);
    const ok = first.allocations.get('constructor')!;
    const pool = first.agent.pool;
    writeFileSync(
      `${tree.state}/ranges.json`,
      JSON.stringify({
        version: 1,
        allocations: {
          auto: { start: 1, size: 65536 },
          constructor: ok,
          slanted: { start: ok.start + 65536 * 3 + 7, size: 65536 },
          system: { start: ok.start + 65536 * 5, size: 65536 },
        },
      }),
    );
    const cfg = loadConfiguration(tree.config, { record: true, systemIds: () => [{ start: ok.start + 65536 * 5 + 100, end: ok.start + 65536 * 5 + 101 }] });
    const text = cfg.errors.map(formatConfigError).join('\n');
    assert.match(
      text,
      new RegExp(
        `auto\\.conf: \\[context\\] range: the recorded range 1-65536 of "auto" \\(ranges\\.json\\) is refused: it lies outside the pool ${pool.start}-${pool.end}; usernsctl ranges forget auto allocates it anew`,
      ),
    );
    assert.match(text, /slanted\.conf: .* is refused: it does not start on one of the pool's slots of 65536 ids/);
    assert.match(text, new RegExp(`system\\.conf: .* is refused: it overlaps host ids ${ok.start + 65536 * 5 + 100}, which belong to the system`));
    assert.deepEqual([...cfg.contexts.keys()], ['constructor'], 'a label named like an Object member is a label');
    assert.deepEqual(cfg.allocations.get('constructor'), ok);
  });

  it('refuses a ranges.json entry that is not an allocation (null, negative, fractional, past 2^32, a bad label), as a corrupt file', () => {
    load(true);
    for (const [entries, why] of [
      ['{"auto": null}', /bad entry for "auto": Invalid type: Expected Object but received null/],
      ['{"auto": {"start": -1, "size": 65536}}', /bad entry for "auto": start: Invalid value/],
      ['{"auto": {"start": 1.5, "size": 65536}}', /bad entry for "auto": start: /],
      ['{"auto": {"start": 4294967295, "size": 1}}', /bad entry for "auto": start: /],
      ['{"../x": {"start": 1000000, "size": 65536}}', /bad entry for "\.\.\/x": not a context label/],
    ] as const) {
      writeFileSync(`${tree.state}/ranges.json`, `{"version":1,"allocations":${entries}}`);
      const cfg = load(true);
      assert.equal(cfg.contexts.has('auto'), false, entries);
      assert.match(cfg.errors.map(formatConfigError).join('\n'), why, entries);
    }
  });
});

describe("state: directories made under the unit's UMask=0077", () => {
  it('makeDirs gives every directory it makes its mode, whatever the umask, and leaves existing ones alone', () => {
    const tree = makeTree();
    const old = process.umask(0o077);
    try {
      chmodSync(tree.dir, 0o750); // an existing directory: not the function's to change
      const leaf = join(tree.dir, 'run', 'userns');
      makeDirs(leaf, 0o755);
      assert.equal(statSync(join(tree.dir, 'run')).mode & 0o777, 0o755);
      assert.equal(statSync(leaf).mode & 0o777, 0o755, 'other users reach the pins');
      assert.equal(statSync(tree.dir).mode & 0o777, 0o750);
      makeDirs(leaf, 0o700); // exists: left as it is
      assert.equal(statSync(leaf).mode & 0o777, 0o755);
    } finally {
      process.umask(old);
      tree.remove();
    }
  });
});

describe('state: the contexts in force keep what they are given', () => {
  let tree: Tree;
  beforeEach(() => (tree = makeTree()));
  afterEach(() => tree.remove());
  const ctx = (delegate: unknown) => ({ ...staticContext('a', 3000000, 10), ...(delegate === undefined ? {} : { delegate }) });
  const good = {
    cgroup: true,
    cgroupLimits: [{ file: 'pids.max', value: '10' }],
    netns: true,
    veth: true,
    tap: 'tap0',
    devices: ['/dev/loop7'],
    directories: [],
    execStart: null,
    execStop: '/usr/lib/x',
    execTimeoutMs: 30000,
  };

  it('reads a delegation back as written, and refuses one that names a path it could not have come from', async () => {
    const { readInForce, writeInForce } = await import('../../agent/coord/state.ts');
    makeDirs(tree.state, 0o700);
    writeInForce(tree.state, [ctx(good)] as never);
    assert.deepEqual(readInForce(tree.state).get('a')?.delegate, good);
    writeInForce(tree.state, [ctx(undefined)] as never);
    assert.equal(readInForce(tree.state).get('a')?.delegate, undefined);
    for (const bad of [
      { ...good, devices: ['/dev/../etc/shadow'] },
      { ...good, directories: ['srv'] },
      { ...good, execStop: '/x\0y' },
      { ...good, cgroupLimits: [{ file: 'cgroup.procs/../x', value: '1' }] },
      { ...good, execTimeoutMs: 0 },
      { ...good, tap: 'a/b' },
    ]) {
      writeFileSync(join(tree.state, 'contexts.json'), JSON.stringify({ version: 1, contexts: [ctx(bad)] }));
      assert.throws(() => readInForce(tree.state), /contexts\.json is corrupt \(a bad entry/, JSON.stringify(bad));
    }
  });
});

describe('state: files a newer usernsd wrote', () => {
  let tree: Tree;
  beforeEach(() => {
    tree = makeTree();
    makeDirs(tree.state, 0o700);
  });
  afterEach(() => tree.remove());

  it('are found by the version they start with, or wherever it stands, and only when it is newer', async () => {
    const { newerStateFiles } = await import('../../agent/coord/state.ts');
    for (const [name, text, newer] of [
      ['contexts.json', JSON.stringify({ version: 2, contexts: [] }), true],
      ['ranges.json', JSON.stringify({ version: 3, allocations: {} }, null, 1), true],
      ['views.json', JSON.stringify({ views: [], version: 4 }), true],
      ['contexts.json', JSON.stringify({ version: 1, contexts: [] }), false],
      ['contexts.json', '{"version":1', false],
      ['contexts.json', '{"version":12345678901234567890}', false],
    ] as const) {
      writeFileSync(join(tree.state, name), text);
      const found = newerStateFiles(tree.state);
      assert.equal(found.length, newer ? 1 : 0, `${name}: ${text}`);
      if (newer) assert.match(found[0], new RegExp(`${name.replace('.', '\\.')} is in format \\d, written by a newer usernsd`));
      writeFileSync(join(tree.state, name), JSON.stringify({ version: 1 }));
    }
  });
});

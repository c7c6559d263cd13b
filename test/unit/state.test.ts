// Range allocations on disk: recorded before use, the same after a restart, a corrupt file refused.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { loadConfiguration } from '../../agent/configure.ts';
import { formatConfigError } from '../../config/ini.ts';
import { makeTree } from '../helpers/fixtures.ts';
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
    const onDisk = JSON.parse(readFileSync(`${tree.state}/ranges.json`, 'utf8'));
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
    assert.match(cfg.errors.map(formatConfigError).join('\n'), /auto\.conf: \[context\] range: .*ranges\.json is corrupt \(not JSON\): no range will be allocated until it is fixed\. Restore it from a backup/);
  });
});

// The views recorded in the state directory (views.json) are input like any state file (SPEC §12).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { namespaceMaker } from '../../agent/kernel/makers.ts';
import { Views, VIEWS_FILE } from '../../agent/views.ts';

describe('views.json: records read as untrusted input', () => {
  it('keeps the records that are records and leaves out the rest, prototype keys and all', () => {
    const dir = mkdtempSync(join(tmpdir(), 'usernsd-views-'));
    try {
      const good = {
        src: '/srv/a',
        target: '/mnt/a',
        context: 'backups',
        mode: 'foreign',
        mechanism: 'idmapped',
        readOnly: false,
        made: '2026-12-05T00:00:00Z',
      };
      const bad = [
        null,
        7,
        { ...good, target: 'relative' },
        { ...good, context: '../x' },
        { ...good, mode: 'both' },
        { ...good, src: '/a\nb' },
        JSON.parse('{"__proto__": {"polluted": true}, "target": "/x"}') as unknown,
      ];
      writeFileSync(join(dir, VIEWS_FILE), JSON.stringify({ version: 1, views: [...bad, good] }));
      const list = new Views(dir, namespaceMaker('node', null, dir)).list(); // no namespace is made here
      assert.deepEqual(list, [good]);
      assert.equal(({} as { polluted?: boolean }).polluted, undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// The request handlers look at a path a caller names only as the caller reaches it (labels.ts,
// Reached: the caller's own filesystem ids, the very lookup whose result is used). A lookup by name
// as root (lstat, stat, realpath, exists, access) in a handler is the next race of the kind
// test/integration/caller-paths.test.ts shows: a directory swapped for a symlink between a check and
// the look. This fails naming the call.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const BY_NAME = ['lstatSync', 'statSync', 'realpathSync', 'existsSync', 'accessSync', 'lstat', 'stat', 'realpath', 'access'];

describe("unit: the handlers look at a caller's paths only as the caller reaches them", () => {
  it('agent/handlers.ts imports no lookup by name from node:fs', () => {
    const text = readFileSync(new URL('../../agent/handlers.ts', import.meta.url), 'utf8');
    const imported = [...text.matchAll(/import\s*\{([^}]*)\}\s*from\s*'node:fs(?:\/promises)?'/g)].flatMap((m) => m[1].split(',').map((s) => s.trim()));
    assert.ok(!/from\s*'node:fs'/.test(text) || imported.length > 0, 'node:fs is imported by name (a check of the check)');
    assert.ok(!/import\s+\*\s+as\s+\w+\s+from\s*'node:fs/.test(text), 'node:fs imported whole: name what is used');
    assert.deepEqual(
      imported.filter((name) => BY_NAME.includes(name.split(/\s+as\s+/)[0])),
      [],
      'a lookup by name as root in a handler: reach the path with Reached.as (labels.ts)',
    );
  });
});

// The request handlers and views look at a path a caller names only as the caller reaches it
// (labels.ts, Reached: the caller's own filesystem ids, the very lookup whose result is used). A
// lookup by name as root (lstat, stat, exists, access) there is the next race of the kind
// test/integration/caller-paths.test.ts shows: a directory swapped for a symlink between a check and
// the look. This fails naming the file.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const BY_NAME = ['lstatSync', 'statSync', 'realpathSync', 'existsSync', 'accessSync', 'lstat', 'stat', 'realpath', 'access'];

/** What each file may still look up by name, and why that tells the caller nothing. */
const ALLOWED: Record<string, string[]> = {
  'agent/handlers.ts': [],
  // The tree's path for messages, the agent's own directories and the sealed-tree decision; its
  // identity and label come from Reached, and makeTree refuses another inode at that path.
  'agent/views.ts': ['realpathSync'],
};

describe("unit: the handlers and views look at a caller's paths only as the caller reaches them", () => {
  for (const [file, allowed] of Object.entries(ALLOWED)) {
    it(`${file} imports no other lookup by name from node:fs`, () => {
      const text = readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8');
      assert.ok(!/import\s+\*\s+as\s+\w+\s+from\s*'node:fs/.test(text), 'node:fs imported whole: name what is used');
      const imported = [...text.matchAll(/import\s*\{([^}]*)\}\s*from\s*'node:fs(?:\/promises)?'/g)].flatMap((m) =>
        m[1].split(',').map((s) => s.trim().split(/\s+as\s+/)[0]),
      );
      assert.ok(imported.length > 0 || !text.includes("'node:fs'"), 'what node:fs gives is read (a check of the check)');
      assert.deepEqual(
        imported.filter((name) => BY_NAME.includes(name) && !allowed.includes(name)),
        [],
        'a lookup by name as root: reach the path with Reached.as (labels.ts)',
      );
    });
  }
});

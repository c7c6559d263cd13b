// Tests of a built artefact (dist/) must not pass on a stale one: after an edit, `mocha` alone
// would test yesterday's build. This fails with what to run instead.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = new URL('../..', import.meta.url).pathname;

function newest(dir: string, ext: RegExp): { path: string; mtime: number } {
  let best = { path: '', mtime: 0 };
  for (const e of readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || !ext.test(e.name)) continue;
    const path = join(e.parentPath, e.name);
    const mtime = statSync(path).mtimeMs;
    if (mtime > best.mtime) best = { path, mtime };
  }
  return best;
}

/** Throws when `artefact` (relative to the checkout) is older than any source in `dirs` matching `ext`. */
export function assertBuiltFromCurrentSources(artefact: string, dirs: readonly string[], ext: RegExp): void {
  // Under Stryker the sources are its instrumented copies, newer than any build, and the mutants
  // live in them, not in dist/: what these tests check of the build is not what it mutates.
  if ('__stryker__' in globalThis) return;
  const built = statSync(join(ROOT, artefact)).mtimeMs;
  for (const dir of dirs) {
    const n = newest(dir, ext);
    if (n.mtime > built)
      throw new Error(`${artefact} is older than ${n.path.slice(ROOT.length)}: run npm run build (npm test does) before testing the built files`);
  }
}

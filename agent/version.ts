// The version usernsd and usernsctl report: package.json's, found from the source or the built tree.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findPackageJson(): string | null {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const f = join(dir, 'package.json');
    if (existsSync(f)) return f;
    if (dirname(dir) === dir) return null;
  }
}

export const VERSION: string = (() => {
  const f = findPackageJson();
  return f ? (JSON.parse(readFileSync(f, 'utf8')) as { version: string }).version : 'unknown';
})();

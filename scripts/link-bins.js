// npm ci (prepare): link this checkout's own programs into node_modules/.bin, as npm does for a
// dependency's. `npx usernsctl` then runs the checkout's client at once, for any user who can read
// the checkout, instead of installing the checkout into that user's npx cache and rebuilding it.
import { readFileSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const binDir = join(root, 'node_modules', '.bin');
const { bin } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
for (const [name, target] of Object.entries(bin)) {
  const link = join(binDir, name);
  rmSync(link, { force: true });
  symlinkSync(relative(binDir, join(root, target)), link);
}

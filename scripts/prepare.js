// npm's prepare (after npm ci, and when `npx usernsctl` in a checkout installs the checkout into
// the user's npx cache), and the first step of npm test: build dist/ only when a source is newer
// than it. A user who cannot write the checkout then runs the build its owner made, instead of
// failing on it, and nobody waits for a rebuild of what is already built (npm ci && npm test
// built it twice).
import { spawnSync } from 'node:child_process';
import { accessSync, constants, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));

function newest(dir) {
  let t = 0;
  for (const e of readdirSync(join(root, dir), { withFileTypes: true, recursive: true })) {
    if (e.isFile() && /\.(ts|c|h)$/.test(e.name)) t = Math.max(t, statSync(join(e.parentPath, e.name)).mtimeMs);
  }
  return t;
}

function builtAt() {
  try {
    return Math.min(...['dist/agent/main.js', 'dist/agent/cli/main.js', 'dist/upcall.js', 'dist/usernsd.js'].map((f) => statSync(join(root, f)).mtimeMs));
  } catch {
    return 0; // not built
  }
}

const sources = Math.max(
  newest('agent'),
  newest('config'),
  newest('native'),
  ...['package.json', 'tsconfig.json', 'tsconfig.build.json', 'scripts/build-native.js', 'scripts/bundle.js'].map((f) => statSync(join(root, f)).mtimeMs),
);
if (builtAt() >= sources) process.exit(0);
try {
  accessSync(root, constants.W_OK);
} catch {
  process.stderr.write(
    `usernsd: dist/ in ${root} is missing or older than its sources, and this user cannot rebuild it: run "npm run build" there as its owner\n`,
  );
  process.exit(1);
}
const r = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);

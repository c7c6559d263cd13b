// Where `npm run build` puts what it builds beside the agent's code: dist/ (the C programs, the
// stamps library), however this module runs.
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * dist/ as seen from a module's URL: from the sources (a .ts file in agent/kernel/, the tests), the
 * checkout's dist/; compiled (dist/agent/kernel/), two levels up; bundled (dist/usernsd.js, what
 * bin/usernsd.js runs), its own directory.
 */
export function distOf(moduleUrl: string): string {
  const here = dirname(fileURLToPath(moduleUrl));
  if (moduleUrl.endsWith('.ts')) return join(dirname(dirname(here)), 'dist');
  return basename(here) === 'kernel' && basename(dirname(here)) === 'agent' ? dirname(dirname(here)) : here;
}

/** dist/ for this process. */
export const DIST = distOf(import.meta.url);

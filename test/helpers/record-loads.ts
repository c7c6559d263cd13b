// Preloaded into a usernsd or usernsctl process (NODE_OPTIONS=--import=THIS) by the tests of what a
// start loads: at exit, appends the packages of node_modules the process resolved, one per line, to
// the file $USERNSD_TEST_LOADS names.
import { appendFileSync } from 'node:fs';
import { registerHooks } from 'node:module';

const out = process.env.USERNSD_TEST_LOADS;
const seen = new Set<string>();
registerHooks({
  resolve(specifier, context, next) {
    const r = next(specifier, context);
    const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(r.url)?.[1];
    if (pkg) seen.add(pkg);
    return r;
  },
});
if (out) process.on('exit', () => appendFileSync(out, [...seen].map((p) => `${p}\n`).join('')));

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
// And Node's own modules it loaded, as "builtin:NAME" (internal ones included: internal/deps/undici/undici).
const builtins = () =>
  (process as unknown as { moduleLoadList: string[] }).moduleLoadList
    .filter((m) => m.startsWith('NativeModule '))
    .map((m) => `builtin:${m.slice('NativeModule '.length)}`);
if (out) process.on('exit', () => appendFileSync(out, [...seen, ...builtins()].map((p) => `${p}\n`).join('')));

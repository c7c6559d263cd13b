// The second step of `npm run build`, after tsc: the programs Node starts, each bundled (esbuild)
// from what tsc wrote to dist/, so that a start compiles and links a few files instead of about a
// hundred (a module's resolution, read and link cost more than its code).
//
//   dist/agent/upcall.js -> dist/upcall.js     the Node upcall, one file for a process request-key
//                                              starts per key (only koffi beside it)
//   dist/agent/main.js   -> dist/usernsd.js    the agent (bin/usernsd.js runs it): 0.05 s less of
//   dist/config/readworker.js                  every start; its reading thread's program beside it
//                        -> dist/readworker.js (config/readahead.ts finds it there), and beside
//                                              them what both share and what is loaded on demand
//                                              (the shared pool's client): dist/chunk-*.js. All in
//                                              one directory, so that a file one of them names
//                                              beside itself is there whichever holds the code.
//
// Left out, loaded from node_modules as before: koffi (a native module), node-ipc (pinned exactly,
// the version npm audits is the one that runs), and the packages loaded only on demand (etcd's
// client, prom-client).
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = join(dirname(dirname(fileURLToPath(import.meta.url))), 'dist');
const common = { bundle: true, platform: 'node', format: 'esm', logLevel: 'warning', absWorkingDir: dirname(dist) };

await build({ ...common, entryPoints: [join(dist, 'agent', 'upcall.js')], external: ['koffi'], outfile: join(dist, 'upcall.js') });

await build({
  ...common,
  entryPoints: { usernsd: join(dist, 'agent', 'main.js'), readworker: join(dist, 'config', 'readworker.js') },
  outdir: dist,
  splitting: true,
  chunkNames: '[name]-[hash]',
  external: ['koffi', 'node-ipc', 'etcd3', 'prom-client'],
  // pino and its helpers are CommonJS: their require() of Node's modules, from an ES module.
  banner: { js: "import { createRequire as usernsdCreateRequire } from 'node:module';\nconst require = usernsdCreateRequire(import.meta.url);" },
});

#!/usr/bin/env node
import './node-check.js';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';

// A small young generation: with V8's default, new space grows to 32 MiB under the garbage of
// loading 10,000 context files and stays resident (146 MiB against 99 at ready). V8 reads the
// semi-space sizes only at start, but the growth factor each time new space would grow: at 1, set
// before anything is loaded, new space keeps its first size (2 MiB, what --max-semi-space-size=1
// gives) without the agent re-executing itself for the flag (0.14 s of CPU at every start). The
// start's own load lets it grow, and collects it back (manager.ts settleMemory).
// And gc(), which the agent calls after each load (start, reload: settleMemory).
v8.setFlagsFromString('--semi-space-growth-factor=1');
v8.setFlagsFromString('--expose-gc');
globalThis.gc ??= runInNewContext('gc');

const { runAgent } = await import('../dist/usernsd.js').catch((err) => {
  process.stderr.write(`usernsd: cannot load the built program (${err.code ?? err.message}): run "npm ci" or "npm run build" first\n`);
  process.exit(1);
});
process.exitCode = await runAgent(process.argv.slice(2));

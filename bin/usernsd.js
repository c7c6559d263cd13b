#!/usr/bin/env node
import './node-check.js';

// A small young generation: with V8's default semi-spaces, the garbage of loading 10,000 context
// files stays resident for good (118 MiB against 90 here). And gc(), which the agent calls after
// each load (start, reload) so that the heap it grew by goes back to the system (manager.ts
// settleMemory). V8 reads the flags only at start, so the agent re-executes itself once with
// them — same pid, so init and pid files see no difference.
const SEMI_SPACE = '--max-semi-space-size=1';
const EXPOSE_GC = '--expose-gc';
if (!process.execArgv.includes(SEMI_SPACE) && typeof process.execve === 'function') {
  process.execve(process.execPath, [process.execPath, SEMI_SPACE, EXPOSE_GC, ...process.execArgv, ...process.argv.slice(1)], process.env);
}

const { runAgent } = await import('../dist/agent/main.js').catch((err) => {
  process.stderr.write(`usernsd: cannot load the built program (${err.code ?? err.message}): run "npm ci" or "npm run build" first\n`);
  process.exit(1);
});
process.exitCode = await runAgent(process.argv.slice(2));

#!/usr/bin/env node
import './node-check.js';

const { runAgent } = await import('../dist/agent/main.js').catch((err) => {
  process.stderr.write(`usernsd: cannot load the built program (${err.code ?? err.message}): run "npm ci" or "npm run build" first\n`);
  process.exit(1);
});
process.exitCode = await runAgent(process.argv.slice(2));

#!/usr/bin/env node
import './node-check.js';

const { runCli } = await import('../dist/agent/cli.js').catch((err) => {
  process.stderr.write(`usernsctl: cannot load the built program (${err.code ?? err.message}): run "npm ci" or "npm run build" first\n`);
  process.exit(1);
});
process.exitCode = await runCli(process.argv.slice(2));

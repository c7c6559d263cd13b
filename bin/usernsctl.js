#!/usr/bin/env node
import './node-check.js';

const fail = (err) => {
  process.stderr.write(`usernsctl: cannot load the built program (${err.code ?? err.message}): run "npm ci" or "npm run build" first\n`);
  process.exit(1);
};
if (process.argv[2] === 'upcall') {
  // request-key starts one process per key: the upcall loads only its own modules.
  const { upcallMain } = await import('../dist/agent/upcall.js').catch(fail);
  process.exitCode = await upcallMain(process.argv.slice(3));
} else {
  const { runCli } = await import('../dist/agent/cli.js').catch(fail);
  process.exitCode = await runCli(process.argv.slice(2));
}

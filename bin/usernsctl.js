#!/usr/bin/env node
import './node-check.js';

const fail = (err) => {
  process.stderr.write(`usernsctl: cannot load the built program (${err.code ?? err.message}): run "npm ci" or "npm run build" first\n`);
  process.exit(1);
};
if (process.argv[2] === 'upcall') {
  // request-key starts one process per key: the upcall loads only its own code, bundled into one
  // file by "npm run build" (esbuild) — ten ES modules cost it ~4 ms more to resolve and link.
  const { upcallMain } = await import('../dist/upcall.js').catch(fail);
  process.exitCode = await upcallMain(process.argv.slice(3));
} else if (process.argv[2] === 'mount-helper') {
  // mount.usernsd (installed by make install), run by mount(8) for "-t usernsd" and fstab lines.
  const { mountHelperMain } = await import('../dist/agent/cli/mounthelper.js').catch(fail);
  process.exitCode = mountHelperMain(process.argv.slice(3), { out: (s) => process.stdout.write(s + '\n'), err: (s) => process.stderr.write(s + '\n') });
} else {
  const { runCli } = await import('../dist/agent/cli/main.js').catch(fail);
  process.exitCode = await runCli(process.argv.slice(2));
}

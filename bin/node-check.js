// Refuse, in one line, to run on a Node older than package.json's engines field — or, for the
// client, run again on the checkout's own Node (node_modules/node, from npm ci), so that
// ./bin/usernsctl.js works for any user whose default node is the system's older one. The agent is
// never re-run that way: init must see the agent's own pid and signal it directly.
// Plain old JavaScript on purpose: this file must parse on the old Node it is about to reject.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

var need = [22, 13];
var have = process.versions.node.split('.').map(Number);
if (have[0] < need[0] || (have[0] === need[0] && have[1] < need[1])) {
  var prog = process.argv[1].split('/').pop().replace(/\.js$/, '');
  var own = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  if (prog === 'usernsctl' && existsSync(own) && !process.env.USERNSD_REEXEC) {
    var env = Object.assign({}, process.env, { USERNSD_REEXEC: '1' });
    var r = spawnSync(own, process.argv.slice(1), { stdio: 'inherit', env: env });
    if (r.error) {
      process.stderr.write('usernsctl: cannot run ' + own + ': ' + r.error.message + '\n');
      process.exit(1);
    }
    if (r.signal) process.kill(process.pid, r.signal);
    process.exit(r.status === null ? 1 : r.status);
  }
  process.stderr.write(
    prog +
      ': needs Node.js >= ' +
      need.join('.') +
      ', this is ' +
      process.version +
      ' (' +
      process.execPath +
      "); run it with the Node from the project's npm ci, or install a newer Node\n",
  );
  process.exit(1);
}

// npm start: run usernsd on the configuration embedded in this checkout (etc/), with its runtime
// (socket, pins, state) under run/ in the checkout, so a newcomer sees it work at once.
import { spawn, spawnSync } from 'node:child_process';
import { AGENT_TUNABLES } from './agent-env.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const run = join(root, 'run');
mkdirSync(run, { recursive: true, mode: 0o755 });
const config = join(run, 'usernsd.conf');
writeFileSync(
  config,
  [
    '# Written by npm start: the embedded default configuration with a repo-local runtime.',
    '[agent]',
    `socket = ${join(run, 'usernsd.sock')}`,
    `contexts = ${join(root, 'etc', 'userns.d')}`,
    `pins = ${join(run, 'userns')}`,
    `state = ${join(run, 'state')}`,
    'log_level = info',
    // Names through systemd's userdb, beside (never instead of) an installed agent's io.usernsd.
    `userdb = ${process.getuid() === 0 ? 'yes' : 'no'}`,
    'userdb_socket = /run/systemd/userdb/io.usernsd.dev',
    '',
  ].join('\n'),
  { mode: 0o644 },
);

const node = process.execPath;
const check = spawnSync(node, [join(root, 'bin', 'usernsctl.js'), 'check-config', '--config', config, '--verbose'], { stdio: 'inherit' });
if (check.status !== 0) process.exit(check.status ?? 1);
const socket = join(run, 'usernsd.sock');
process.stderr.write(`\nStarting usernsd --config ${config} (Ctrl-C stops it; pins stay under ${join(run, 'userns')})
In another shell, in this directory (as any user: ./bin/usernsctl.js works as npx usernsctl does):
  export USERNSD_SOCKET=${socket} USERNSD_CONFIG=${config}
  npx usernsctl check-config
  npx usernsctl list
  npx usernsctl resolve backups
  npx usernsctl map --from backups --to host --uid 0 --uid 1000
  getent passwd 2001000       # backups.1000: names through userdb (as root)
To wire the kernel's upcall to this agent (as root; remove the file afterwards):
  echo 'create user userns:* * ${node} ${join(root, 'bin', 'usernsctl.js')} upcall --socket ${socket} %k %d' > /etc/request-key.d/usernsd-dev.conf
  npx usernsctl reload && keyctl session - sh -c 'keyctl pipe "$(keyctl request2 user userns:backups "" @s)"'

`);
// The environment the installed wrapper gives the agent (scripts/install.js).
const tunables = [process.env.GLIBC_TUNABLES, AGENT_TUNABLES].filter(Boolean).join(':');
const agent = spawn(node, [join(root, 'bin', 'usernsd.js'), '--config', config], { stdio: 'inherit', env: { ...process.env, GLIBC_TUNABLES: tunables } });
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => agent.kill(sig));
agent.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));

// usernsd: the entry point. Parses the command line and hands over to the manager.
import { parseArgs } from 'node:util';
import { LOG_LEVELS } from '../config/types.ts';
import { VERSION } from './version.ts';

const USAGE = `Usage: usernsd [--config FILE] [--log-level LEVEL]

The usernsd agent: answers "which user namespace does this label mean?" over a
UNIX socket, creating and pinning namespaces from /etc/userns.d/*.conf.
Runs in the foreground, as init expects; logs JSON to stderr.

Options:
  -c, --config FILE      settings file (default /etc/usernsd.conf)
  -l, --log-level LEVEL  ${LOG_LEVELS.join(', ')} (default: the file's log_level, else info)
  -h, --help             show this help
  -V, --version          show the version

Signals: SIGHUP reloads the configuration; SIGTERM drains and exits.
See usernsd(8), usernsd.conf(5), userns.d(5).`;

export async function runAgent(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        'log-level': { type: 'string', short: 'l' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'V' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    process.stderr.write(`usernsd: ${(err as Error).message}\nTry 'usernsd --help'.\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  if (values.version) {
    process.stdout.write(`usernsd ${VERSION}\n`);
    return 0;
  }
  const level = values['log-level'];
  if (level !== undefined && !(LOG_LEVELS as readonly string[]).includes(level)) {
    process.stderr.write(`usernsd: --log-level must be one of ${LOG_LEVELS.join(', ')}\n`);
    return 2;
  }
  process.stderr.write('usernsd: the agent is not built yet in this version; use usernsctl check-config\n');
  return 1;
}

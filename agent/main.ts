// usernsd: the entry point. Parses the command line and hands over to the manager.
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { DEFAULT_CONFIG_FILE } from '../config/types.ts';
import { LOG_LEVELS } from '../config/types.ts';
import type { LogLevel } from '../config/types.ts';
import { agentError, said } from './advice.ts';
import { closeInheritedDescriptors } from './kernel/sys.ts';
import { Manager } from './manager.ts';
import { VERSION } from './version.ts';

const USAGE = `Usage: usernsd [--config FILE] [--log-level LEVEL]

The usernsd agent: answers "which user namespace does this label mean?" over a
UNIX socket, creating and pinning namespaces from /etc/userns.d/*.conf.
Runs in the foreground, as init expects; logs JSON to stderr.

Options:
  -c, --config FILE      settings file (default ${DEFAULT_CONFIG_FILE}; $USERNSD_CONFIG sets it)
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
  return serve(values.config ?? null, level as LogLevel | undefined);
}

/** Run until SIGTERM (or SIGINT); SIGHUP reloads. Resolves to the exit status. */
async function serve(configFile: string | null, logLevel: LogLevel | undefined): Promise<number> {
  // Nothing the agent was started with reaches what it starts (SPEC §12): only 0, 1 and 2 stay.
  const inherited = closeInheritedDescriptors();
  // JSON lines on stderr, written synchronously so nothing is lost when init stops us.
  const log = pino({ base: { pid: process.pid }, level: logLevel ?? 'info' }, pino.destination({ dest: 2, sync: true }));
  if (inherited.length > 0) log.info({ fds: inherited }, `Closed ${inherited.length} inherited descriptor(s)`);
  // Signals are caught before anything else happens: "Serving" must mean a SIGTERM is handled.
  let manager: Manager | null = null;
  const stop = new Promise<void>((resolve) => {
    // `on`, not `once`: Ctrl-C reaches both npm start and the agent, and a second signal must not kill the drain.
    for (const sig of ['SIGTERM', 'SIGINT'] as const)
      process.on(sig, () => {
        log.info({ signal: sig }, 'Signal received');
        resolve();
      });
  });
  process.on('SIGHUP', () => {
    if (!manager) return log.warn('SIGHUP during start-up: the configuration is being loaded already');
    manager.reload('SIGHUP').catch((err: unknown) => log.error({ err }, 'Failed to reload'));
  });
  try {
    manager = await Manager.start({ configFile, log, logLevel });
  } catch (err) {
    const e = agentError(err);
    log.fatal({ code: e?.code ?? 'E_INTERNAL', err: e ? undefined : err }, `Failed to start: ${said(err)}`);
    process.stderr.write(`usernsd: ${said(err)}\n`);
    return 1;
  }
  await stop;
  await manager.stop();
  return 0;
}

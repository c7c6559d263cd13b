// usernsctl: the command-line client for admins, scripts and filesystem helpers.
import { parseArgs } from 'node:util';
import { formatExtents } from '../config/extents.ts';
import { formatConfigError } from '../config/ini.ts';
import { loadConfiguration } from './configure.ts';
import { VERSION } from './version.ts';

/** Exit codes, usernsctl(1). */
export const EXIT = { OK: 0, ERROR: 1, USAGE: 2, UNREACHABLE: 3 } as const;

const USAGE = `Usage: usernsctl [--json] COMMAND [ARGS]

Commands:
  check-config [--config FILE] [--verbose]
                     validate /etc/usernsd.conf and every context file without
                     an agent; one line per error, exit 1 if there is any
  help               show this help
  version            show the version

Options:
  -h, --help         show this help
  -V, --version      show the version

Exit status: 0 ok, 1 an error was found or reported, 2 usage error, 3 agent unreachable.
See usernsctl(1), userns.d(5), usernsd.conf(5).`;

type Io = { out: (s: string) => void; err: (s: string) => void };
const stdio: Io = { out: (s) => process.stdout.write(s + '\n'), err: (s) => process.stderr.write(s + '\n') };

class UsageError extends Error {}

function checkConfig(args: string[], io: Io): number {
  const { values } = parseArgs({
    args,
    options: { config: { type: 'string', short: 'c' }, verbose: { type: 'boolean', short: 'v' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    io.out('Usage: usernsctl check-config [--config FILE] [--verbose]');
    return EXIT.OK;
  }
  const cfg = loadConfiguration(values.config ?? null, { record: false });
  for (const e of cfg.errors) io.err(formatConfigError(e));
  if (values.verbose) {
    for (const c of cfg.contexts.values()) {
      const a = cfg.allocations.get(c.label);
      const range = a ? ` range=auto:${a.start}-${a.start + a.size - 1}${cfg.unrecorded.has(c.label) ? '(not yet recorded)' : ''}` : '';
      io.out(`${c.label}: parent=${c.parent} owner=${c.owner.name ?? c.owner.uid} uid_map="${formatExtents(c.uidMap)}" gid_map="${formatExtents(c.gidMap)}"${range} setgroups=${c.setgroups} create=${c.create} squash=${c.squash.mode} file=${c.file}`);
    }
    io.out(`${cfg.agent.file}: ${cfg.contexts.size} valid context(s), ${cfg.errors.length} error(s)`);
  }
  return cfg.errors.length > 0 ? EXIT.ERROR : EXIT.OK;
}

export async function runCli(argv: string[], io: Io = stdio): Promise<number> {
  const first = argv.findIndex((a) => !a.startsWith('-'));
  const globals = first < 0 ? argv : argv.slice(0, first);
  const command = first < 0 ? null : argv[first]!;
  const rest = first < 0 ? [] : argv.slice(first + 1);
  try {
    const { values } = parseArgs({
      args: globals,
      options: { help: { type: 'boolean', short: 'h' }, version: { type: 'boolean', short: 'V' }, json: { type: 'boolean' } },
      strict: true,
    });
    if (values.help || command === 'help') {
      io.out(USAGE);
      return EXIT.OK;
    }
    if (values.version || command === 'version') {
      io.out(`usernsctl ${VERSION}`);
      return EXIT.OK;
    }
    switch (command) {
      case 'check-config':
        return checkConfig(rest, io);
      case null:
        throw new UsageError('a command is required');
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.err(`usernsctl: ${(err as Error).message}\nTry 'usernsctl --help'.`);
      return EXIT.USAGE;
    }
    throw err;
  }
}

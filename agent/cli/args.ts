// What every usernsctl command shares: exit codes, output, options, usage errors.
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import type { ParseArgsConfig } from 'node:util';
import type { Owner } from '../wire/protocol.ts';

/** Exit codes, usernsctl(1). */
export const EXIT = { OK: 0, ERROR: 1, USAGE: 2, UNREACHABLE: 3 } as const;

export type Io = { out: (s: string) => void; err: (s: string) => void };
export const stdio: Io = { out: (s) => process.stdout.write(s + '\n'), err: (s) => process.stderr.write(s + '\n') };
export class UsageError extends Error {}

export type Globals = { socket: string; json: boolean };

/** Options every command also accepts after its name. */
export const COMMON = {
  socket: { type: 'string', short: 's' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

export function parseCommand<O extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: O, globals: Globals) {
  const r = parseArgs({ args, options: { ...COMMON, ...options }, strict: true, allowPositionals: true });
  const v = r.values as Record<string, unknown>;
  if (typeof v.socket === 'string') globals.socket = v.socket;
  if (v.json === true) globals.json = true;
  return r;
}

export function oneLabel(positionals: string[], command: string): string {
  if (positionals.length !== 1) throw new UsageError(`${command} takes one LABEL`);
  return positionals[0];
}

export const who = (o: Owner) => `${o.name ?? o.uid} (${o.uid}:${o.gid})`;

export function printTable(io: Io, rows: string[][]): void {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) io.out(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  '));
}

function signalNumber(name: NodeJS.Signals): number {
  return ({ SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGSEGV: 11, SIGPIPE: 13, SIGTERM: 15 } as Record<string, number>)[name] ?? 0;
}

/**
 * nsenter ARGV on the terminal (and `fds` as descriptors 3, 4, …, closed here once it has them):
 * its exit status, or 128 + the signal that ended it, as a shell says it.
 */
export function runNsenter(argv: string[], io: Io, fds: number[] = [], closeFd: (fd: number) => void = () => {}): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn('nsenter', argv, { stdio: ['inherit', 'inherit', 'inherit', ...fds] });
    for (const f of fds.splice(0)) closeFd(f); // the child has them now
    child.on('error', (err) => {
      io.err(`usernsctl: cannot run nsenter: ${(err as NodeJS.ErrnoException).code}: install util-linux`);
      resolve(EXIT.ERROR);
    });
    child.on('exit', (code, signal) => resolve(code ?? 128 + (signal ? signalNumber(signal) : 0)));
  });
}

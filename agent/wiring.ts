// Is the kernel upcall wired to us? Asked of request-key(8) itself, in its debug mode, which reads
// the rules the way it does for a real key and says which program it would run, without running it.
// nfsidmap's users find an unwired upcall only as files owned by 4294967295; we say it at start and in status.
import { execFile, spawn } from 'node:child_process';
import { accessSync, constants as fsc, existsSync } from 'node:fs';
import { basename } from 'node:path';
import type { Logger } from 'pino';
import { DEFAULT_SOCKET } from '../config/types.ts';

/** The program the kernel runs for every key it cannot find (compiled into the kernel). */
export const REQUEST_KEY = '/sbin/request-key';
/** The probe key's description (a rule for `userns:*` matches it as it matches any label) and serial (request-key -d touches no key). */
const PROBE = 'userns:wiring-check';
const PROBE_KEY = '999999999';

export type UpcallState =
  | 'ok' // `usernsctl upcall` asking this agent's socket
  | 'other-socket' // `usernsctl upcall` asking another socket
  | 'elsewhere' // another program
  | 'broken' // the rule's program does not exist or is not executable
  | 'missing' // no rule for user keys userns:LABEL
  | 'no-request-key' // keyutils not installed
  | 'no-keys' // a kernel without the key service
  | 'unknown'; // request-key answered something this check does not understand
export type UpcallWiring = {
  readonly state: UpcallState;
  /** The rule's file and line, as request-key names them ("usernsd.conf:6"), when one matched. */
  readonly rule: string | null;
  /** The program and its arguments as request-key would run them (%k %d filled with a probe key). */
  readonly handler: string[] | null;
  /** One sentence for the admin: what is wrong and what to do, or what is right. */
  readonly message: string;
  /** Whether the kernel runs request-key(8) for a requester that is not root (probeUserUpcalls). */
  readonly users?: UserUpcalls;
};

/**
 * ok: a requester without CAP_SYS_ADMIN reaches request-key(8); refused: the kernel fails its
 * request_key(2) with ENOENT before request-key runs (seen on some kernel builds, where only a
 * requester with CAP_SYS_ADMIN gets an upcall); unknown: the probe could not tell.
 */
export type UserUpcalls = { readonly state: 'ok' | 'refused' | 'unknown'; readonly message: string };

/** The probe runs as the overflow user: no capability, no key of anyone else's touched. */
const PROBE_UID = 65534;

/**
 * Ask the kernel for a key nobody answers, as an unprivileged user in a throwaway session keyring:
 * when request-key(8) runs, the request fails with "Required key not available" or "rejected" (its
 * catch-all negates the key); when the kernel never calls it, request_key(2) says ENOENT. The
 * description matches no usernsd rule (userns:*), so no handler runs for it.
 */
export function probeUserUpcalls(opts: { readonly uid?: number; readonly timeoutMs?: number } = {}): Promise<UserUpcalls> {
  const uid = opts.uid ?? PROBE_UID;
  const desc = `usernsd-probe:${process.pid}-${Date.now()}`;
  return new Promise((resolve) => {
    let out = '';
    let child;
    try {
      child = spawn('keyctl', ['session', '-', 'keyctl', 'request2', 'user', desc, 'x', '@s'], {
        uid,
        gid: uid,
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: opts.timeoutMs ?? 5000,
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
      });
    } catch (err) {
      resolve({ state: 'unknown', message: `cannot run keyctl as uid ${uid}: ${(err as Error).message}` });
      return;
    }
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.on('error', (err) => resolve({ state: 'unknown', message: `cannot run keyctl as uid ${uid}: ${err.message}` }));
    child.on('close', (code) => {
      const said = out.trim().split('\n').pop() ?? '';
      if (/No such file or directory/.test(said)) {
        resolve({
          state: 'refused',
          message: `this kernel fails request_key(2) with ENOENT before request-key(8) runs when the requester lacks CAP_SYS_ADMIN: root's upcalls reach the handler, other users' never do (they can ask with usernsctl resolve)`,
        });
      } else if (code === 0 || /Required key not available|rejected|expired/.test(said)) {
        resolve({ state: 'ok', message: 'requests from users reach request-key(8)' });
      } else {
        resolve({ state: 'unknown', message: `keyctl as uid ${uid} said: ${said || `exit ${code}`}` });
      }
    });
  });
}

type Options = {
  /** Read request-key.d/ and request-key.conf from this directory instead of /etc (request-key -l): tests. */
  readonly configDir?: string;
  readonly requestKey?: string;
  readonly timeoutMs?: number;
};

/** Ask request-key which program a key `user` `userns:LABEL` would go to, and whether that reaches `socket`. */
export async function checkUpcallWiring(socket: string, opts: Options = {}): Promise<UpcallWiring> {
  const requestKey = opts.requestKey ?? REQUEST_KEY;
  if (!existsSync('/proc/keys'))
    return result('no-keys', null, null, 'this kernel has no key service (CONFIG_KEYS): the request-key upcall cannot work; usernsctl resolve still does');
  if (!existsSync(requestKey))
    return result('no-request-key', null, null, `${requestKey} is not installed: the kernel cannot call any upcall handler (apt-get install keyutils)`);
  // -d: debug, touch no key and run nothing; -n: not to syslog; -v: say which line and program; -D: the key's description.
  const args = [...(opts.configDir ? ['-l'] : []), '-d', '-n', '-v', '-D', `user;0;0;3f010000;${PROBE}`, 'create', PROBE_KEY, '0', '0', '0', '0', '0', '-'];
  const { code, out } = await new Promise<{ code: number | string; out: string }>((resolve) => {
    execFile(requestKey, args, { cwd: opts.configDir, timeout: opts.timeoutMs ?? 5000, encoding: 'utf8', env: {} }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as NodeJS.ErrnoException).code ?? 1) : 0, out: `${stdout}${stderr}` });
    });
  });
  const ruleMatch = /^(\S+:\d+): Line matches/m.exec(out);
  const rule = ruleMatch ? ruleMatch[1] : null;
  if (/No matching action/.test(out)) {
    return result(
      'missing',
      null,
      null,
      `no request-key rule sends "user" keys "userns:LABEL" to a handler, so every upcall fails: make install places /etc/request-key.d/usernsd.conf (the line is in usernsctl(1), upcall)`,
    );
  }
  const program = /^Run (\S+)/m.exec(out)?.[1];
  if (code !== 0 || !program)
    return result('unknown', rule, null, `${requestKey} -d did not say which program it would run (exit ${code}): ${out.trim().split('\n').pop() ?? ''}`);
  // As the rule reads: the probe's serial and description shown as the %k and %d they came from.
  const handler = [
    program,
    ...[...out.matchAll(/^- argv\[(\d+)\] = "(.*)"$/gm)].slice(1).map((m) => (m[2] === PROBE_KEY ? '%k' : m[2] === PROBE ? '%d' : m[2])),
  ];
  const where = rule ? ` (${rule})` : '';
  try {
    accessSync(program, fsc.X_OK);
  } catch (err) {
    return result(
      'broken',
      rule,
      handler,
      `the request-key rule${where} runs ${program}, which is ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'not there' : 'not executable'}: fix the rule's path`,
    );
  }
  // Ours: the C handler (usernsd-upcall ARGS), or usernsctl upcall ARGS (the Node one).
  const isC = basename(handler[0]) === 'usernsd-upcall';
  const upcallAt = isC ? 0 : handler.indexOf('upcall');
  const isUsernsctl = isC || (upcallAt > 0 && handler.slice(0, upcallAt).some((a) => /^usernsctl(\.js)?$/.test(basename(a))));
  if (!isUsernsctl)
    return result('elsewhere', rule, handler, `"user" keys "userns:LABEL" go to ${handler.join(' ')}${where}, not to usernsd-upcall or usernsctl upcall`);
  const asks = socketOption(handler.slice(upcallAt + 1)) ?? DEFAULT_SOCKET; // what usernsctl asks without --socket
  if (asks !== socket)
    return result(
      'other-socket',
      rule,
      handler,
      `the request-key handler${where} asks the agent at ${asks}, but this agent listens on ${socket}: add --socket ${socket} to the rule`,
    );
  return result('ok', rule, handler, `request-key sends "user" keys "userns:LABEL" to ${handler.join(' ')}${where}`);
}

function result(state: UpcallState, rule: string | null, handler: string[] | null, message: string): UpcallWiring {
  return { state, rule, handler, message };
}

/** --socket PATH, --socket=PATH or -s PATH among `usernsctl upcall`'s arguments (request-key does not honour quotes). */
function socketOption(args: string[]): string | null {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if ((a === '--socket' || a === '-s') && i + 1 < args.length) return args[i + 1];
    if (a.startsWith('--socket=')) return a.slice('--socket='.length);
    if (a === '--') break;
  }
  return null;
}

/**
 * Where request-key sends "userns:LABEL" keys, asked at start and at each reload: said once in the
 * log when it changes (a warning unless it reaches this agent), and kept for status.
 */
export class UpcallWatch {
  private readonly log: Logger;
  /** The last answer; null before the first. */
  last: UpcallWiring | null = null;

  constructor(log: Logger) {
    this.log = log;
  }

  async check(socket: string): Promise<void> {
    let w: UpcallWiring;
    try {
      // Whether users' upcalls reach request-key is the kernel's to say, once per boot: asked again only when it could not tell.
      const known = this.last?.users?.state === 'ok' || this.last?.users?.state === 'refused' ? this.last.users : null;
      const [wiring, users] = await Promise.all([checkUpcallWiring(socket), known ?? probeUserUpcalls()]);
      w = { ...wiring, users };
    } catch (err) {
      w = { state: 'unknown', rule: null, handler: null, message: `cannot ask request-key: ${(err as Error).message}` };
    }
    const changed = this.last === null || this.last.message !== w.message;
    const usersChanged = this.last?.users?.state !== w.users?.state;
    this.last = w;
    if (changed) {
      if (w.state === 'ok') this.log.info({ rule: w.rule }, `Upcall: ${w.message}`);
      else this.log.warn({ upcall: w.state, rule: w.rule }, `Upcall: ${w.message}`);
    }
    if (usersChanged && w.users?.state === 'refused') this.log.warn({ upcallUsers: 'refused' }, `Upcall: ${w.users.message}`);
  }
}

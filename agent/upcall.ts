// The request-key handler (SPEC §7): a `user` key "userns:LABEL" is answered by the agent's resolve, asked with the requester's identity.
import { formatExtents } from '../config/extents.ts';
import { labelProblem } from '../config/schema.ts';
import { TransportError, UsernsError } from './errors.ts';
import { answerRing, describeKey, EKEYREJECTED, instantiateKey, invalidateKey, KEY_PREFIX, rejectKey, setKeyTimeout } from './kernel/keys.ts';
import { callAgentOnce } from './wire/oneshot.ts';
import * as P from './wire/protocol.ts';
import type { ResolveResult } from './wire/protocol.ts';

// Built-ins through process.getBuiltinModule on the upcall's path: an ESM `import from 'node:fs'`
// or 'node:util' builds the module's whole namespace (fs.promises, streams, worker_threads…),
// ~2 ms each of a handler that request-key starts once per key.
const { parseArgs } = process.getBuiltinModule('node:util');
const { closeSync, constants: fsc, openSync, writeSync } = process.getBuiltinModule('node:fs');
const { constants } = process.getBuiltinModule('node:os');

/** Like nfsidmap's -t default. */
export const DEFAULT_KEY_TIMEOUT_S = 600;
/** An answer's registry keyring outlives the answer by this much. */
const RING_SLACK_S = 5;
/** A refused request is remembered this long, so a retry loop does not hammer the agent. */
export const NEGATIVE_KEY_TIMEOUT_S = 10;

/**
 * The key's payload, usernsd-protocol(7) "UPCALL": one `name=value` per line, in this order.
 * Maps are extents "INSIDE OUTSIDE COUNT" separated by ", ", outside ids the parent's.
 */
export function formatPayload(r: ResolveResult): string {
  return (
    [
      `path=${r.path}`,
      `label=${r.label}`,
      `parent=${r.parent}`,
      `owner=${r.owner.uid}:${r.owner.gid}`,
      `setgroups=${r.setgroups}`,
      `ino=${r.ino}`,
      `uid_map=${formatExtents(r.uidMap)}`,
      `gid_map=${formatExtents(r.gidMap)}`,
    ].join('\n') + '\n'
  );
}

export type UpcallOptions = {
  readonly key: number;
  readonly description: string;
  readonly timeoutS: number;
  readonly socket: string;
  /** Also append failures here (request-key gives its handlers no stderr worth reading). */
  readonly logFile?: string;
};

/** Failures go to syslog (logger(1), if there is one), to stderr, and to --log FILE. */
/**
 * The description as a log may carry it (the C handler does the same): a requester may put any
 * byte in it, and a newline would forge a log line. Control bytes, quotes and backslashes become
 * \\xHH; at most 200 characters.
 */
export function shownDescription(d: string): string {
  const cut = d.length > 200 ? `${d.slice(0, 200)}...` : d;
  return cut.replace(/[\x00-\x1f\x7f"\\]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

async function logFailure(opts: UpcallOptions, logFd: number | null, line: string): Promise<void> {
  const text = `usernsctl upcall: ${line}`;
  process.stderr.write(text + '\n');
  if (logFd !== null) {
    try {
      writeSync(logFd, `${new Date().toISOString()} ${text}\n`);
    } catch {
      /* the log is best effort */
    }
  }
  try {
    // Loaded only on this path: node:child_process costs every upcall ~2 ms of start-up.
    const { spawn } = await import('node:child_process');
    spawn('logger', ['-t', 'usernsctl', '-p', 'daemon.warning', '--', text], { stdio: 'ignore', detached: true })
      .on('error', () => {})
      .unref();
  } catch {
    /* no logger */
  }
}

/**
 * Answer one key: instantiate it with the context's payload and an expiry, or reject it (a negative
 * key that fails the requester at once, with an errno it can show). Returns the exit status.
 */
export async function runUpcall(opts: UpcallOptions): Promise<number> {
  // Opened while still root: the log may be root's only.
  let logFd: number | null = null;
  if (opts.logFile) {
    try {
      logFd = openSync(opts.logFile, fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT | fsc.O_NOFOLLOW, 0o640);
    } catch {
      /* best effort */
    }
  }
  let ring = 0;
  const fail = async (errno: number, why: string): Promise<number> => {
    // Rejected first: the requester is waiting; the log can come after.
    let rejectError: string | null = null;
    try {
      rejectKey(opts.key, NEGATIVE_KEY_TIMEOUT_S, errno);
    } catch (err) {
      rejectError = (err as Error).message;
    }
    if (ring !== 0)
      try {
        invalidateKey(ring);
      } catch {
        /* it expires anyway */
      }
    await logFailure(opts, logFd, `key ${opts.key} "${shownDescription(opts.description)}": rejected: ${why}`);
    if (rejectError) await logFailure(opts, logFd, `key ${opts.key}: cannot reject it: ${rejectError}`);
    return 1;
  };
  try {
    if (!opts.description.startsWith(KEY_PREFIX)) return fail(EKEYREJECTED, `the description must be ${KEY_PREFIX}LABEL`);
    const label = opts.description.slice(KEY_PREFIX.length);
    const problem = labelProblem(label);
    if (problem) return fail(EKEYREJECTED, `invalid label: ${problem}`);
    // request-key runs handlers as root; the agent must judge the requester, not us. The key being
    // built belongs to its requester, so ask with that uid and gid (and the user's groups).
    const owner = describeKey(opts.key);
    // While root: the ring where root finds this answer again to invalidate it (keys.ts), living as
    // long as the answer (a little longer: never gone before it). Best effort: without it the key
    // still answers, it only waits for its expiry when its context changes. A key without expiry
    // (-t 0) is not registered: the registry would keep it alive for ever.
    if (opts.timeoutS > 0)
      try {
        ring = answerRing(opts.key, opts.timeoutS + RING_SLACK_S);
      } catch {
        /* no persistent keyrings */
      }
    if (owner.uid !== 0) {
      try {
        process.initgroups!(owner.uid, owner.gid);
      } catch {
        process.setgroups!([owner.gid]); // no passwd entry: the primary group only
      }
      process.setgid!(owner.gid);
      process.setuid!(owner.uid);
    }
    let r: ResolveResult;
    try {
      r = callAgentOnce(opts.socket, P.resolve, { label, via: 'upcall' });
    } catch (err) {
      if (err instanceof TransportError) return fail(constants.errno.ECONNREFUSED, `${err.message} (is usernsd running?)`);
      if (err instanceof UsernsError) return fail(EKEYREJECTED, `uid ${owner.uid}: ${err.code}: ${err.message}`);
      throw err;
    }
    const payload = Buffer.from(formatPayload(r));
    setKeyTimeout(opts.key, opts.timeoutS); // first: instantiating gives up the authority that allows it
    try {
      instantiateKey(opts.key, payload, ring);
    } catch (err) {
      if (ring === 0) throw err;
      instantiateKey(opts.key, payload); // the ring refused the link: answer unregistered
    }
    return 0;
  } catch (err) {
    return fail(EKEYREJECTED, `internal error: ${(err as Error).message}`);
  } finally {
    if (logFd !== null) closeSync(logFd);
  }
}

/**
 * `usernsctl upcall [-t SECONDS] [--socket PATH] [--log FILE] KEY DESCRIPTION`, parsed here and not
 * in cli.ts: request-key starts a process per key, and bin/usernsctl.js comes straight here so an
 * upcall loads only what it uses (usernsctl's other commands cost it ~8 ms of module loading).
 */
export async function upcallMain(argv: string[], socket: string = process.env.USERNSD_SOCKET || P.DEFAULT_SOCKET): Promise<number> {
  let values;
  let positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: { timeout: { type: 'string', short: 't' }, log: { type: 'string' }, socket: { type: 'string', short: 's' } },
      strict: true,
      allowPositionals: true,
    }));
  } catch (err) {
    return usage((err as Error).message);
  }
  if (positionals.length !== 2) return usage("upcall takes KEY DESCRIPTION (request-key's %k %d)");
  const key = Number(positionals[0]);
  if (!Number.isInteger(key) || key <= 0) return usage(`upcall: KEY must be a key serial number (got "${positionals[0]}")`);
  const timeoutS = values.timeout === undefined ? DEFAULT_KEY_TIMEOUT_S : Number(values.timeout);
  if (!Number.isInteger(timeoutS) || timeoutS < 0) return usage(`upcall: -t takes whole seconds (got "${values.timeout}")`);
  return runUpcall({ key, description: positionals[1], timeoutS, socket: values.socket ?? socket, logFile: values.log });
}

function usage(message: string): number {
  // The key is left alone: when the handler exits without an answer, the kernel negates it.
  process.stderr.write(`usernsctl: ${message}\nTry 'usernsctl --help'.\n`);
  return 2;
}

// The agent's one error class — a stable code from a closed set, a message for the admin, the cause
// kept — and the client's: the agent was not reached, so nothing was answered.

export const ERROR_CODES = [
  'E_NOT_FOUND', // no such context, pin or label
  'E_PERMISSION', // the caller may not do this
  'E_INVALID', // malformed request or argument
  'E_CONFIG', // the configuration (or state) does not allow it
  'E_KERNEL', // the kernel refused
  'E_BUSY', // limits reached, or shutting down
  'E_UNSUPPORTED', // the kernel, the filesystem or a missing program cannot do this here
  'E_UNAVAILABLE', // the coordinator (etcd) that must decide this did not answer in time
  'E_INTERNAL', // a bug or an unexpected failure; details in the log
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export class UsernsError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'UsernsError';
    this.code = code;
  }
}

export function isErrorCode(v: unknown): v is ErrorCode {
  return typeof v === 'string' && (ERROR_CODES as readonly string[]).includes(v);
}

/** The agent could not be reached, or the connection broke: nothing was answered. */
export class TransportError extends Error {
  readonly code: string;
  readonly socket: string;
  constructor(socket: string, code: string, message: string) {
    super(message);
    this.name = 'TransportError';
    this.code = code;
    this.socket = socket;
  }
}

// What went wrong below the request edge, said as facts: the kind of fault, the step and the object,
// the errno the kernel gave. kernel/ and coord/ throw these (the syscall wrappers' SysError aside,
// which their callers there turn into faults); they never choose a protocol code or tell anyone
// what to do. The edge (agent/advice.ts) turns a fault
// into the protocol's code and the advice, once, whichever caller met it.

/** The kinds of fault, each one protocol code at the edge (advice.ts, CODE_OF). */
export const FAULT_KINDS = [
  'refused', // the kernel (or a program run for a step) refused it: errno says why
  'in-the-way', // something not the agent's is where the agent's goes (a planted symlink, another tap)
  'drift', // a pin disagrees with the configuration it was made from
  'misconfigured', // the configuration or the build asks for what cannot be done here
  'missing', // what the step needs is not there
  'busy', // in use, or still there when the wait ended
  'unsupported', // this kernel, cgroup hierarchy or build cannot do it
  'invalid', // a name that is not well formed
  'changed', // what was checked changed before it was used
  'corrupt', // a record that cannot be read as one
  'newer', // a record written by a newer usernsd
  'undecided', // the shared pool did not answer, or changed under every attempt
  'unrecorded', // the agent could not write or read its own state
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** What a fault is about, for the advice: which kind of object (its name is the fault's `subject`). */
export const FAULT_OBJECTS = [
  'namespace', // a user namespace being made, its maps, its helper
  'pin',
  'cgroup',
  'cgroup-root',
  'device',
  'directory',
  'hook',
  'netns',
  'tap',
  'view',
  'mount-namespace',
  'spawner',
  'pool',
  'state-file',
  'ranges-file',
  'in-force-file',
  'journal',
] as const;
export type FaultObject = (typeof FAULT_OBJECTS)[number];

export type FaultFacts = {
  readonly object: FaultObject;
  /** The context it happened for, when there is one. */
  readonly label?: string | null;
  /** The kernel's errno name (EPERM, ENOSPC, ...), when the kernel said one. */
  readonly errno?: string | null;
  /** The step, as a verb phrase ("write uid_map", "pin the namespace"): the advice for some errnos depends on it. */
  readonly step?: string | null;
  /** The object's own name where the advice names it (a path, a tap, a pool key). */
  readonly subject?: string | null;
  readonly cause?: unknown;
};

export class Fault extends Error {
  readonly kind: FaultKind;
  readonly object: FaultObject;
  readonly label: string | null;
  readonly errno: string | null;
  readonly step: string | null;
  readonly subject: string | null;

  /** `fact`: what happened, in one sentence without advice; the log shows it as it is. */
  constructor(kind: FaultKind, fact: string, facts: FaultFacts) {
    super(fact, facts.cause === undefined ? undefined : { cause: facts.cause });
    this.name = 'Fault';
    this.kind = kind;
    this.object = facts.object;
    this.label = facts.label ?? null;
    this.errno = facts.errno ?? null;
    this.step = facts.step ?? null;
    this.subject = facts.subject ?? null;
  }
}

/** The kernel refused a step: "Failed to STEP[ for [context ]"LABEL"]: ERRNO[ (detail)]" ("context" for a namespace or a pin). */
export function refused(
  object: FaultObject,
  step: string,
  errno: string,
  o: { label?: string | null; detail?: string; cause?: unknown; subject?: string } = {},
): Fault {
  const forLabel = o.label ? ` for ${object === 'namespace' || object === 'pin' ? 'context ' : ''}"${o.label}"` : '';
  return new Fault('refused', `Failed to ${step}${forLabel}: ${errno}${o.detail ? ` (${o.detail})` : ''}`, {
    object,
    step,
    errno,
    label: o.label,
    subject: o.subject,
    cause: o.cause,
  });
}

/** The errno name of a Node error (EACCES, ...), or EIO when it has none. */
export function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | null)?.code ?? 'EIO';
}

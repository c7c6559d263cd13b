// The edge where a fault from below (agent/fault.ts: kernel/ and coord/) becomes what the caller
// and the log read: the protocol's code, and what to do. One table, so a fault reads the same
// whichever method, reload or start met it (as systemd's Varlink services map -errno once, at the
// method). Every reply's error passes here (handlers.ts), and every log line about a fault.
import { UsernsError } from './errors.ts';
import type { ErrorCode } from './errors.ts';
import { Fault } from './fault.ts';
import type { FaultKind } from './fault.ts';

const CODE_OF: Record<FaultKind, ErrorCode> = {
  refused: 'E_KERNEL',
  'in-the-way': 'E_CONFIG',
  drift: 'E_CONFIG',
  misconfigured: 'E_CONFIG',
  missing: 'E_NOT_FOUND',
  busy: 'E_BUSY',
  unsupported: 'E_UNSUPPORTED',
  invalid: 'E_INVALID',
  changed: 'E_INVALID',
  corrupt: 'E_CONFIG',
  newer: 'E_CONFIG',
  undecided: 'E_UNAVAILABLE',
  unrecorded: 'E_INTERNAL',
};

/** The protocol's code for a fault: by its kind, but the shared pool's lost race is the pool not deciding. */
export function codeOf(f: Fault): ErrorCode {
  if (f.kind === 'changed' && f.object === 'pool') return 'E_UNAVAILABLE';
  return CODE_OF[f.kind];
}

/** What the kernel's refusal to make a namespace means, and what the admin can change, by errno. */
function namespaceAdvice(errno: string | null, step: string): string | null {
  if (step.startsWith('prepare the namespace helper'))
    return errno === 'EPERM' ? "handing them to a nested context's parent root needs CAP_CHOWN (see usernsd(8))" : null;
  if (step.startsWith('verify')) return null;
  if (step.includes("owner's ids") && errno === 'EINVAL')
    return "the owner's uid or gid is not mapped in the parent namespace (for owner root: the parent must map id 0)";
  switch (errno) {
    case 'ENOSPC':
      return 'the limit of user namespaces is reached: raise /proc/sys/user/max_user_namespaces or release contexts';
    case 'EPERM':
      return step.includes('map')
        ? 'the kernel refused the map: outside ids must be mapped in the parent namespace, and nested maps are written from inside the parent'
        : 'the kernel refused: check that unprivileged user namespaces are enabled (sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces) and the owner is mapped in the parent';
    case 'EINVAL':
      return 'the kernel rejected the map: extents overlap, run past 2^32, or exceed 340 lines';
    case 'EUSERS':
      return 'the nesting depth limit (32) is reached';
    case 'EACCES':
      return 'the agent lacks a privilege it needs (CAP_SYS_ADMIN, CAP_SYS_CHROOT, CAP_SETUID, CAP_SETGID, CAP_SYS_PTRACE, CAP_CHOWN: see usernsd(8)); under systemd, check CapabilityBoundingSet=';
    default:
      return 'see the agent log';
  }
}

/** What to do about a fault, or null when its fact says all there is. */
export function adviceFor(f: Fault): string | null {
  const step = f.step ?? '';
  switch (f.kind) {
    case 'refused':
      if (f.object === 'namespace') return namespaceAdvice(f.errno, step);
      if (f.object === 'mount-namespace') return `check mount_namespace in usernsd.conf and that ${f.subject} exists there`;
      return null;
    case 'in-the-way':
      switch (f.object) {
        case 'pin':
          return 'someone planted it; remove it (the agent never follows it)';
        case 'directory':
          // The agent's own directories are removed and made again; a context's is data: never removed for it.
          if (f.label === null) return 'remove it';
          return step === 'chown' ? 'chown it or remove it' : null;
        case 'netns':
          return `remove it (ip netns delete ${f.label})`;
        case 'tap':
          return `name another, or delete it (ip tuntap del dev ${f.subject} mode tap)`;
        default:
          return null;
      }
    case 'drift':
      return `release it (usernsctl release ${f.label}) to have it created anew`;
    case 'misconfigured':
      if (f.object === 'spawner') return 'install a C compiler (apt-get install gcc libc6-dev) and run "make", or set spawner = auto';
      if (f.object === 'namespace')
        return step === 'write the nested maps'
          ? "a nested context's maps are written as its parent's root"
          : 'a nested namespace can only be owned by a user its parent maps';
      return null;
    case 'busy':
      if (f.object === 'cgroup' && step === 'release') return 'stop them, or release with --kill (writes cgroup.kill)';
      if (f.object === 'pin') return `release it there first (usernsctl release ${f.label})`;
      if (f.object === 'directory' && step === 'hold')
        return 'stop it first (systemctl stop usernsd), or give this agent a state and a pins directory of its own (state = and pins = in usernsd.conf)';
      return null;
    case 'unsupported':
      if (f.object === 'cgroup-root')
        return 'set cgroup_root in usernsd.conf to a directory under the unified hierarchy (/sys/fs/cgroup/unified/usernsd on a hybrid layout)';
      if (f.object === 'view') return "make the view from the agent's mount namespace, or build usernsd-spawner (see spawner in usernsd.conf(5))";
      return null;
    case 'changed':
      return 'try again';
    case 'corrupt':
      switch (f.object) {
        case 'ranges-file':
          return "no range will be allocated until it is fixed. Restore it from a backup, or rebuild it from the pins' maps (usernsctl list shows them) and remove the file only if no auto-range namespace exists";
        case 'in-force-file':
          return 'contexts are admitted in file order until the agent rewrites it';
        case 'journal':
          return 'remove it (the contexts in force are then those of contexts.json)';
        case 'pool':
          return `fix or remove it (etcdctl get ${f.subject})`;
        default:
          return null;
      }
    case 'newer':
      return 'run the newer usernsd again (usernsd(8) UPGRADES)';
    case 'undecided':
      return 'nothing is allocated without it (ranges already recorded keep working)';
    case 'missing':
    case 'invalid':
    case 'unrecorded':
      return null;
  }
}

/** A fault as the protocol says it: its code, its fact and what to do. */
export function fromFault(f: Fault): UsernsError {
  const advice = adviceFor(f);
  return new UsernsError(codeOf(f), advice === null ? f.message : `${f.message}: ${advice}`, f);
}

/** An agent error from anything thrown: a fault said at this edge, an error of the agent's own as it is, else null (a bug). */
export function agentError(err: unknown): UsernsError | null {
  if (err instanceof Fault) return fromFault(err);
  return err instanceof UsernsError ? err : null;
}

/** The text a log line or a configuration error shows for anything thrown: a fault with its advice. */
export function said(err: unknown): string {
  return agentError(err)?.message ?? (err as Error)?.message ?? String(err);
}

// A context's network (SPEC §13, userns.d(5) [delegate] netns, veth, tap): a network namespace
// owned by its user namespace, pinned where `ip netns` looks; a veth pair whose inner end is host0
// in it; a persistent tap device whose owner is the context's root. Host ends live in init's
// network namespace, whichever the agent runs in (systemd's PrivateNetwork= gives it its own).
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, constants, lstatSync, mkdirSync, openSync, readlinkSync, unlinkSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname } from 'node:path';
import { errnoOf, Fault, refused } from '../fault.ts';
import type { HelperPrograms } from './helper.ts';
import { lstatOrNull } from './files.ts';
import { NSFS_DEV } from './pinrecord.ts';
import { errnoFromText, PATH_ENV, reap, run } from './spawn.ts';
import { bindMount, detach } from './sys.ts';

/**
 * The pid whose network namespace is the host's, where the host ends of veth pairs and taps go:
 * init's when the agent runs in another (systemd's PrivateNetwork=), else the agent's own (also
 * where init's cannot be looked at: a container).
 */
function hostNetPid(): number {
  try {
    return readlinkSync('/proc/1/ns/net') === readlinkSync('/proc/self/ns/net') ? process.pid : 1;
  } catch {
    return process.pid;
  }
}
const HOST_NET_PID = hostNetPid();
const HOST_NET = `/proc/${HOST_NET_PID}/ns/net`;

/** The name of the veth pair's inner end, in the context's network namespace. */
export const INNER_VETH = 'host0';

/** A name the kernel accepts for an interface (IFNAMSIZ: at most 15 bytes). */
export const IFNAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/;

/** Names and addresses derived from the label: stable across boots, the same on every host. */
export function vethNames(label: string): { host: string; hostMac: string; innerMac: string } {
  const h = createHash('sha256').update(`usernsd veth ${label}`).digest('hex');
  // 02: a locally administered unicast address.
  const mac = (hex: string) => `02:${hex.match(/../g)!.slice(0, 5).join(':')}`;
  return { host: `vu${h.slice(0, 12)}`, hostMac: mac(h.slice(12, 22)), innerMac: mac(h.slice(22, 32)) };
}

/** Is a network namespace mounted on this path? */
export function netnsPinned(path: string): boolean {
  try {
    return lstatSync(path).dev === NSFS_DEV;
  } catch {
    return false;
  }
}

/** `ip` in init's network namespace (or in `net`), as root; stderr kept for the error. */
function ip(args: string[], net = HOST_NET): Promise<{ code: number | null; stdout: string; stderr: string }> {
  // No nsenter where the agent's own network namespace is init's: one process fewer.
  if (net === HOST_NET && HOST_NET_PID === process.pid) return run('ip', args);
  return run('nsenter', [`--net=${net}`, '--', 'ip', ...args]);
}

/** Whether an interface exists in init's network namespace (status). */
export function linkExists(name: string): boolean {
  // In the host's network namespace, sysfs answers without a process (status asks for each link).
  if (HOST_NET_PID === process.pid) return lstatOrNull(`/sys/class/net/${name}`) !== null;
  const argv = ['ip', '-o', 'link', 'show', 'dev', name];
  const [cmd, ...args] = HOST_NET_PID === process.pid ? argv : ['nsenter', `--net=${HOST_NET}`, '--', ...argv];
  return spawnSync(cmd, args, { env: PATH_ENV, stdio: 'ignore' }).status === 0;
}

function fail(label: string, step: string, r: { code: number | null; stderr: string }): Fault {
  return new Fault('refused', `Failed to ${step} for "${label}": ${r.stderr || `exit ${r.code}`}`, {
    object: 'netns',
    label,
    step,
    errno: errnoFromText(r.stderr),
  });
}

/**
 * A network namespace owned by the context's user namespace, bind-mounted on `path` in the pins'
 * mount namespace (`mountNs`, null for the agent's own). Made by a process that joined the user
 * namespace as its root (execute-only programs: not dumpable, so the context's owner cannot trace
 * it) and unshared a network namespace there; the process ends once it is pinned.
 */
export async function pinNetns(o: {
  label: string;
  userPin: string;
  path: string;
  setgroups: 'allow' | 'deny';
  mountNs: string | null;
  helpers: HelperPrograms;
  /** Add the veth pair while the helper holds the namespace (one process fewer than addVeth). */
  veth?: boolean;
}): Promise<void> {
  const { nsenter, unshare, cat } = o.helpers.for(0, 0);
  const child: ChildProcess = spawn(
    nsenter,
    [`--user=${o.userPin}`, ...(o.setgroups === 'deny' ? ['--preserve-credentials'] : []), '-S', '0', '-G', '0', '--', unshare, '--net', '--', cat],
    { env: PATH_ENV, stdio: ['pipe', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  try {
    const own = readlinkSync('/proc/self/ns/net');
    const source = `/proc/${child.pid}/ns/net`;
    for (let i = 0; ; i++) {
      if (child.exitCode !== null || child.signalCode !== null || i > 500)
        throw new Fault('refused', `Failed to make the network namespace of "${o.label}": ${stderr.trim() || 'the helper did not start'}`, {
          object: 'netns',
          label: o.label,
          errno: errnoFromText(stderr),
        });
      let now: string | null = null;
      try {
        now = readlinkSync(source);
      } catch {
        /* not yet */
      }
      if (now !== null && now !== own) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    if (o.mountNs === null) {
      mkdirSync(dirname(o.path), { recursive: true, mode: 0o755 });
      closeSync(openSync(o.path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o444));
      try {
        bindMount(source, o.path);
      } catch (err) {
        unlinkSync(o.path);
        throw new Fault('refused', `Failed to pin the network namespace of "${o.label}" at ${o.path}: ${(err as Error).message}`, {
          object: 'netns',
          label: o.label,
          errno: errnoOf(err),
        });
      }
    } else {
      // In the pins' mount namespace, where `ip netns` looks: the file made there too.
      const r = await run('nsenter', [
        `--mount=${o.mountNs}`,
        '--',
        'sh',
        '-c',
        'mkdir -p "$(dirname "$2")" && set -C && : > "$2" && mount --bind "$1" "$2" || { rm -f "$2"; exit 1; }',
        'sh',
        source,
        o.path,
      ]);
      if (r.code !== 0) throw fail(o.label, `pin its network namespace at ${o.path}`, r);
    }
    if (o.veth) await addVethInto(o.label, child.pid!);
  } finally {
    await reap(child);
  }
}

/** Every layer unmounted and the file removed; idempotent. */
export async function unpinNetns(path: string, mountNs: string | null): Promise<void> {
  if (mountNs === null) {
    for (let i = 0; i < 16 && netnsPinned(path); i++) detach(path);
    try {
      unlinkSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw refused('netns', `remove ${path}`, errnoOf(err));
    }
    return;
  }
  await run('nsenter', [`--mount=${mountNs}`, '--', 'sh', '-c', 'while umount --lazy "$1" 2>/dev/null; do :; done; rm -f "$1"', 'sh', path]);
}

/** The veth pair: host0 in the context's namespace, its peer in init's; both addresses from the label. */
export async function addVeth(label: string, netns: string): Promise<void> {
  const n = vethNames(label);
  const r = await ip(
    ['link', 'add', INNER_VETH, 'address', n.innerMac, 'type', 'veth', 'peer', 'name', n.host, 'address', n.hostMac, 'netns', String(HOST_NET_PID)],
    netns,
  );
  if (r.code !== 0 && !/File exists/.test(r.stderr)) throw fail(label, `add the veth pair ${n.host}/${INNER_VETH}`, r);
}

/** The same pair made from the host's side, into the network namespace process `pid` is in. */
async function addVethInto(label: string, pid: number): Promise<void> {
  const n = vethNames(label);
  const add = ['link', 'add', n.host, 'address', n.hostMac, 'type', 'veth', 'peer', 'name', INNER_VETH, 'address', n.innerMac, 'netns', String(pid)];
  let r = await ip(add);
  if (r.code !== 0 && /File exists/.test(r.stderr)) {
    // A host end left by a crash between the pair and the record: its namespace is gone (or going).
    await deleteLink(label, n.host);
    r = await ip(add);
  }
  if (r.code !== 0) throw fail(label, `add the veth pair ${n.host}/${INNER_VETH}`, r);
}

/** Deleting either end deletes the pair; gone already is fine. */
export async function deleteLink(label: string, name: string): Promise<void> {
  const r = await ip(['link', 'del', 'dev', name]);
  if (r.code !== 0 && !/Cannot find device|does not exist/.test(r.stderr)) throw fail(label, `delete ${name}`, r);
}

/** A persistent tap in init's network namespace whose owner and group are the context's root (TUNSETOWNER, TUNSETGROUP). */
export async function addTap(label: string, name: string, root: { uid: number; gid: number }): Promise<void> {
  const r = await ip(['tuntap', 'add', 'dev', name, 'mode', 'tap', 'user', String(root.uid), 'group', String(root.gid)]);
  if (r.code === 0) return;
  if (/File exists|Device or resource busy/.test(r.stderr) && linkExists(name))
    throw new Fault('in-the-way', `tap ${name} for "${label}" exists already and is not this context's`, { object: 'tap', label, subject: name });
  throw fail(label, `add tap ${name}`, r);
}

export async function deleteTap(label: string, name: string): Promise<void> {
  if (!linkExists(name)) return;
  const r = await ip(['tuntap', 'del', 'dev', name, 'mode', 'tap']);
  if (r.code !== 0) throw fail(label, `delete tap ${name}`, r);
}

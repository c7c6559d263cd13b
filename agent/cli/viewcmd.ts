// usernsctl view and enter --view: views asked of the agent on its descriptor socket and
// attached here, in the caller's mount namespace, as mount(8) would (mounthelper.ts: mount.usernsd).
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { resolve as absolute } from 'node:path';
import { formatExtents } from '../../config/extents.ts';
import { EXIT, parseCommand, printTable, runNsenter, UsageError } from './args.ts';
import type { Globals, Io } from './args.ts';
import { UsernsError } from '../errors.ts';
import { isIdmapped, mountTable } from '../kernel/mountinfo.ts';
import type { MountEntry } from '../kernel/mountinfo.ts';
import { closeFd, moveMount } from '../kernel/sys.ts';
import { callAgent } from '../wire/client.ts';
import { callAgentForFds } from '../wire/oneshot.ts';
import * as P from '../wire/protocol.ts';

export const BINDFS_INSTALL_HINT =
  'bindfs is not installed: install it (Debian: apt-get install bindfs) — it makes the views the kernel cannot (all squash, NFS, FUSE)';

/** A mount point must be an empty directory: a view never hides what is there. */
export function checkTarget(dst: string): string {
  const path = absolute(dst);
  let entries: string[];
  try {
    if (!statSync(path).isDirectory()) throw new UsernsError('E_INVALID', `${path} is not a directory: a view is mounted on an empty directory`);
    entries = readdirSync(path);
  } catch (err) {
    if (err instanceof UsernsError) throw err;
    throw new UsernsError('E_INVALID', `${path}: ${(err as NodeJS.ErrnoException).code}: a view is mounted on an existing empty directory`);
  }
  if (entries.length > 0) throw new UsernsError('E_INVALID', `${path} is not empty: a view is mounted on an empty directory, so that it hides nothing`);
  return path;
}

export type ViewOptions = { readonly context?: string; readonly mode?: P.ViewMode; readonly readOnly?: boolean };

/** Ask for a view of SRC and mount it at DST here: move_mount(2) of the agent's tree, or bindfs. */
export function mountView(socket: string, src: string, dst: string, opts: ViewOptions): P.ViewResult {
  const target = checkTarget(dst);
  const params: P.ViewParams = { path: absolute(src), purpose: 'mount', target, ...opts };
  const { result, fds } = callAgentForFds(P.fdSocketPath(socket), P.view, params);
  try {
    if (result.mechanism === 'idmapped') {
      if (fds.length !== 1) throw new UsernsError('E_INTERNAL', `the agent sent ${fds.length} descriptors for one idmapped view`);
      moveMount(fds[0], target);
      return result;
    }
    const r = spawnSync('bindfs', [...result.bindfs!, result.src, target], { stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8' });
    if (r.error)
      throw new UsernsError(
        'E_UNSUPPORTED',
        (r.error as NodeJS.ErrnoException).code === 'ENOENT' ? BINDFS_INSTALL_HINT : `cannot run bindfs: ${r.error.message}`,
      );
    if (r.status !== 0)
      throw new UsernsError('E_KERNEL', `bindfs ${result.bindfs!.join(' ')} ${result.src} ${target} failed: ${r.stderr.trim() || `exit ${r.status}`}`);
    return result;
  } finally {
    for (const f of fds) closeFd(f);
  }
}

function describe(r: P.ViewResult, dst: string): string {
  const maps =
    r.mechanism === 'idmapped' || r.uidMap.length > 0 ? `uid ${formatExtents(r.uidMap)}, gid ${formatExtents(r.gidMap)}` : 'every file as the anonymous owner';
  return `${r.src} on ${dst}: context ${r.context}, ${r.mode} (squash ${r.squash}), ${r.mechanism}${r.bindfs ? ` (bindfs ${r.bindfs.join(' ')})` : ''}; on-disk -> host: ${maps}`;
}

export async function viewCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    {
      identity: { type: 'boolean' },
      foreign: { type: 'boolean' },
      context: { type: 'string', short: 'c' },
      'read-only': { type: 'boolean', short: 'r' },
      list: { type: 'boolean', short: 'l' },
    },
    g,
  );
  if (values.list) {
    if (positionals.length > 0) throw new UsageError('view --list takes no arguments');
    return listViews(g, io);
  }
  if (positionals.length !== 2) throw new UsageError('view takes SRC and DST (or --list)');
  if (values.identity && values.foreign) throw new UsageError('--identity and --foreign exclude each other');
  const mode: P.ViewMode | undefined = values.identity ? 'identity' : values.foreign ? 'foreign' : undefined;
  const r = mountView(g.socket, positionals[0], positionals[1], { context: values.context, mode, readOnly: values['read-only'] });
  io.out(g.json ? JSON.stringify(r) : describe(r, absolute(positionals[1])));
  return EXIT.OK;
}

/** A record's mount, if its target still holds a view of that kind in this mount namespace. */
function liveMount(v: P.ViewRecord, mounts: Map<string, MountEntry>): MountEntry | null {
  const m = mounts.get(v.target);
  if (!m) return null;
  return v.mechanism === 'idmapped' ? (isIdmapped(m) ? m : null) : m.fsType.startsWith('fuse') ? m : null;
}

/** Views made through the agent that are mounted in this mount namespace (views are ordinary mounts: they outlive the agent). */
export async function mountedViews(socket: string): Promise<P.ViewRecord[]> {
  const { views } = await callAgent(socket, P.views, {});
  const mounts = mountTable();
  return views.filter((v) => liveMount(v, mounts) !== null);
}

export async function listViews(g: Globals, io: Io): Promise<number> {
  const live = await mountedViews(g.socket);
  if (g.json) {
    io.out(JSON.stringify({ views: live }));
    return EXIT.OK;
  }
  if (live.length === 0) {
    io.out('no views mounted here');
    return EXIT.OK;
  }
  printTable(io, [
    ['SRC', 'DST', 'CONTEXT', 'MODE', 'MECHANISM', 'ACCESS'],
    ...live.map((v) => [v.src, v.target, v.context, v.mode, v.mechanism, v.readOnly ? 'ro' : 'rw']),
  ]);
  return EXIT.OK;
}

/** The context's cgroup for what enter starts, when it has one ([delegate] cgroup = yes). */
async function joinCgroupIfAny(socket: string, label: string): Promise<void> {
  try {
    await callAgent(socket, P.joinCgroup, { label });
  } catch (err) {
    if (!(err instanceof UsernsError && err.code === 'E_NOT_FOUND')) throw err;
  }
}

/**
 * enter LABEL --view SRC:DST…: each view asked for as the context's owner (identity, idmapped), then
 * nsenter into the context as uid 0, a new mount namespace (owned by the context's user namespace),
 * each tree moved onto its DST there, and CMD run. The trees arrive as descriptors 3, 4, …
 */
export async function enterWithViews(socket: string, label: string, specs: string[], argvTail: string[], io: Io): Promise<number> {
  const fds: number[] = [];
  const targets: string[] = [];
  let resolved: P.ViewResult | null = null;
  try {
    for (const spec of specs) {
      const colon = spec.lastIndexOf(':');
      if (colon <= 0 || colon === spec.length - 1) throw new UsageError(`--view takes SRC:DST (got "${spec}")`);
      const target = checkTarget(spec.slice(colon + 1));
      const { result, fds: got } = callAgentForFds(P.fdSocketPath(socket), P.view, { path: absolute(spec.slice(0, colon)), context: label, purpose: 'enter' });
      fds.push(...got);
      if (got.length !== 1) throw new UsernsError('E_INTERNAL', `the agent sent ${got.length} descriptors for one view`);
      if (result.readOnlyWhy) io.err(`usernsctl: the view of ${result.src} is ${result.readOnlyWhy}`);
      targets.push(target);
      resolved = result;
    }
    const r = resolved!;
    await joinCgroupIfAny(socket, label);
    // Inside: mount(8) moves each descriptor's tree (its /proc/self/fd link, not canonicalized, no
    // mtab) onto its target, closes it, and execs CMD. Paths arrive as arguments, never as code.
    const script =
      'n=$1; shift; i=0; while [ "$i" -lt "$n" ]; do fd=$((3 + i)); mount -n -c --move /proc/self/fd/$fd "$1" || exit 125; eval "exec $fd>&-"; shift; i=$((i + 1)); done; exec "$@"';
    const argv = [
      `--user=${r.pin}`,
      ...(r.setgroups === 'deny' ? ['--preserve-credentials'] : []),
      '-S',
      '0',
      '-G',
      '0',
      '--',
      'unshare',
      '--mount',
      '--propagation',
      'private',
      '--',
      'sh',
      '-c',
      script,
      'sh',
      String(targets.length),
      ...targets,
      ...argvTail,
    ];
    return await runNsenter(argv, io, fds, closeFd);
  } finally {
    for (const f of fds) closeFd(f);
  }
}

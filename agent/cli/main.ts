// usernsctl: the command-line client for admins, scripts and filesystem helpers.
import { lstatSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { parseArgs } from 'node:util';
import { formatExtents } from '../../config/extents.ts';
import { formatConfigError } from '../../config/ini.ts';
import { DEFAULT_CONFIG_FILE } from '../../config/types.ts';
import { labelProblem } from '../../config/schema.ts';
import { callAgent } from '../wire/client.ts';
import { TransportError, UsernsError } from '../errors.ts';
import { agentError } from '../advice.ts';
import * as P from '../wire/protocol.ts';
import { VERSION } from '../version.ts';
import { checkEtcd, rangesCmd } from './ranges.ts';
import { COMMON, EXIT, oneLabel, parseCommand, printTable, runNsenter, stdio, UsageError, who } from './args.ts';
import type { Globals, Io } from './args.ts';

export { EXIT } from './args.ts';

const USAGE = `Usage: usernsctl [--socket PATH] [--json] COMMAND [ARGS]

Commands (answered by the agent):
  resolve LABEL [--pin]    the context's pinned namespace, created if missing;
                           --pin prints only the pin path
  resolve --path PATH [--pin]
                           the same for the context labelled on PATH's nearest
                           labelled ancestor (not crossing a mount point)
  map --from A --to B [--uid N]... [--gid N]...
                           ids of files owned in context A, as seen from B
                           ("host" names the host), with A's squash applied
  list                     the contexts you may use, and whether they are pinned
  status [LABEL]           version, uptime, contexts; errors and counters for root;
                           LABEL: that context's state and what it was given
                           ([delegate]: cgroup, network, devices, directories,
                           hooks) (root)
  reload                   re-read the configuration (root; like SIGHUP)
  release [--kill] LABEL   unmount and remove a pin, and first the pins of the
                           contexts nested in it, tearing down what they were
                           given (root; from inside a context, its root for what
                           was made inside it, which is then forgotten); refused
                           while a context's cgroup holds processes, which
                           --kill kills first (cgroup.kill)
  create CHILD --uid-map 'IN OUT COUNT' [--gid-map 'IN OUT COUNT'] [--cgroup]
                           from inside a context, as its root: make the context
                           CHILD nested in it (CONTEXT.CHILD), kept across
                           restarts until released; OUT ids are the parent's;
                           --gid-map defaults to --uid-map; within the file's
                           children = (see userns.d(5)); --cgroup: a cgroup of
                           its own inside the context's (when it has one)
  enter LABEL [--view SRC:DST]... [-- CMD [ARG]...]
                           run CMD (default: your shell) in the namespace as its
                           root, uid 0 and gid 0 inside; root, and without root
                           the owner of its top-level context (the kernel's rule);
                           in the context's cgroup when it has one;
                           --view: SRC (labelled LABEL) shown at DST with its raw
                           ids, in a mount namespace of CMD's own
  view [--identity|--foreign] [--context LABEL] [--read-only] SRC DST
                           mount a view of SRC on the empty directory DST (root):
                           SRC's on-disk ids are its context's (its label, or
                           --context); foreign (default) applies the context's
                           squash; idmapped mount, or bindfs where it cannot be
  view --list              the views made through the agent mounted here (root)
  explain PATH             what a file's ids mean: its context, the ids inside it
                           and on the host, names, and why one shows as the
                           overflow id
  ranges                   range = auto allocations (and, for a shared pool, every
                           host's static ranges): label, ids, where decided, when
                           (root)
  ranges import            push this host's recorded allocations into the shared
                           pool (etcd), refusing and naming conflicts (root)
  ranges forget LABEL      free LABEL's range (cluster-wide for a shared pool),
                           refused while it is pinned anywhere (root)
  metrics                  the agent's metrics in the Prometheus text format
                           (root; for node_exporter's textfile collector)

Kernel upcall and labels:
  upcall [-t SECONDS] [--log FILE] KEY DESCRIPTION
                           the request-key handler for "user" keys "userns:LABEL"
                           (etc/request-key.d/usernsd.conf); expiry default 600 s
  keys list | keys clear [LABEL]
                           the userns: keys you can see (root: every user's) /
                           invalidate them
  label set PATH LABEL | label get PATH | label clear PATH
                           the context label on an inode (xattr trusted.userns)

Commands (no agent needed):
  check-config [--config FILE] [--verbose] [--etcd]
                           validate the settings file (default
                           \${DEFAULT_CONFIG_FILE}; $USERNSD_CONFIG sets it)
                           and every context file;
                           one line per error, exit 1 if there is any;
                           --etcd: also read the shared pool once
  help, version

Options:
  -s, --socket PATH  the agent's socket (default: $USERNSD_SOCKET, else
                     ${P.DEFAULT_SOCKET})
      --json         print the agent's answer as JSON (stable; see usernsd-protocol(7))
  -h, --help         show this help
  -V, --version      show the version

Exit status: 0 ok, 1 the agent answered an error (or check-config found one),
2 usage error, 3 the agent is unreachable.
See usernsctl(1), usernsd(8), usernsd-protocol(7), userns.d(5).`;

// `usernsctl status | head`: a reader that goes away ends us quietly, as SIGPIPE ends C tools
// (Node ignores SIGPIPE, so the write fails with EPIPE instead); 141 is the shell's 128 + SIGPIPE.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(141);
  throw err;
});

async function checkConfig(args: string[], io: Io): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string', short: 'c' },
      verbose: { type: 'boolean', short: 'v' },
      etcd: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    io.out('Usage: usernsctl check-config [--config FILE] [--verbose] [--etcd]');
    return EXIT.OK;
  }
  const { loadConfiguration } = await import('../configure.ts'); // NSS through koffi: only here
  const cfg = loadConfiguration(values.config ?? null, { record: false });
  for (const e of cfg.errors) io.err(formatConfigError(e));
  // Allowed on purpose, but the admin should see it every time: not an error, the exit status stays.
  for (const n of cfg.notices) io.err(`${formatConfigError(n)} [notice]`);
  if (values.verbose) {
    for (const c of cfg.contexts.values()) {
      const a = cfg.allocations.get(c.label);
      const range = a ? ` range=auto:${a.start}-${a.start + a.size - 1}${cfg.unrecorded.has(c.label) ? '(not yet recorded)' : ''}` : '';
      io.out(
        `${c.label}: parent=${c.parent} owner=${c.owner.name ?? c.owner.uid} uid_map="${formatExtents(c.uidMap)}" gid_map="${formatExtents(c.gidMap)}"${range} setgroups=${c.setgroups} create=${c.create} squash=${c.squash.mode} file=${c.file}`,
      );
    }
    io.out(
      `${cfg.agent.file}: ${cfg.contexts.size} valid context(s), ${cfg.errors.length} error(s)${cfg.waiting.length ? `, ${cfg.waiting.length} waiting for the shared pool` : ''}`,
    );
  }
  if (values.etcd) return (await checkEtcd(cfg.agent, io)) && cfg.errors.length === 0 ? EXIT.OK : EXIT.ERROR;
  return cfg.errors.length > 0 ? EXIT.ERROR : EXIT.OK;
}

async function resolveCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const { values, positionals } = parseCommand(args, { pin: { type: 'boolean' }, path: { type: 'string' } }, g);
  let r: P.ResolveResult;
  if (values.path !== undefined) {
    if (positionals.length > 0) throw new UsageError('resolve takes a LABEL or --path PATH, not both');
    const found = await callAgent(g.socket, P.resolvePath, { path: resolvePath(values.path) });
    if (!values.pin && !g.json) io.out(`${found.labelledPath}: labelled ${found.label}`);
    r = found;
  } else {
    r = await callAgent(g.socket, P.resolve, { label: oneLabel(positionals, 'resolve') });
  }
  if (g.json) io.out(JSON.stringify(r));
  else if (values.pin) io.out(r.path);
  else {
    io.out(`${r.label}: ${r.path}${r.created ? ' (created now)' : ''}`);
    io.out(`  parent ${r.parent}, owner ${who(r.owner)}, setgroups ${r.setgroups}, nsfs inode ${r.ino}`);
    io.out(`  uid_map ${formatExtents(r.uidMap)}`);
    io.out(`  gid_map ${formatExtents(r.gidMap)}`);
    const d = r.delegated;
    if (d?.cgroup) io.out(`  cgroup ${d.cgroup}`);
    if (d?.netns) io.out(`  netns ${d.netns}${d.veth ? `, veth ${d.veth} (host0 inside)` : ''}`);
    if (d?.tap) io.out(`  tap ${d.tap}`);
    for (const dev of d?.devices ?? []) io.out(`  device ${dev}`);
    for (const dir of d?.directories ?? []) io.out(`  directory ${dir}`);
  }
  return EXIT.OK;
}

function parseIds(list: string[] | undefined, kind: string): number[] {
  return (list ?? []).map((s) => {
    if (!/^\d+$/.test(s)) throw new UsageError(`--${kind} ${s}: not a number`);
    return Number(s);
  });
}

async function mapCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const { values, positionals } = parseCommand(
    args,
    {
      from: { type: 'string', short: 'f' },
      to: { type: 'string', short: 't' },
      uid: { type: 'string', short: 'u', multiple: true },
      gid: { type: 'string', short: 'g', multiple: true },
    },
    g,
  );
  if (positionals.length > 0) throw new UsageError(`map takes no positional arguments (got "${positionals[0]}")`);
  if (!values.from || !values.to) throw new UsageError('map needs --from LABEL and --to LABEL ("host" names the host)');
  const uids = parseIds(values.uid, 'uid');
  const gids = parseIds(values.gid, 'gid');
  if (uids.length + gids.length === 0) throw new UsageError('map needs at least one --uid N or --gid N');
  const r = await callAgent(g.socket, P.map, { from: values.from, to: values.to, uids, gids });
  if (g.json) io.out(JSON.stringify(r));
  else {
    uids.forEach((id, i) => io.out(`uid ${id} -> ${r.uids[i]}`));
    gids.forEach((id, i) => io.out(`gid ${id} -> ${r.gids[i]}`));
  }
  return EXIT.OK;
}

/** The commands that take no arguments of their own: list, status, reload. */
function callWithoutArguments<M extends P.Method<Record<string, never>, unknown>>(args: string[], g: Globals, method: M): Promise<P.ResultOf<M>> {
  const { positionals } = parseCommand(args, {}, g);
  if (positionals.length > 0) throw new UsageError(`${method.name} takes no arguments`);
  return callAgent(g.socket, method, {} as P.ParamsOf<M>);
}

async function listCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const r = await callWithoutArguments(args, g, P.list);
  if (g.json) io.out(JSON.stringify(r));
  else if (r.contexts.length === 0) io.out('no contexts you may use');
  // A nested context without an owner line belongs to its parent's root (whoever owns the parent), not to host root.
  else
    printTable(io, [
      ['LABEL', 'PARENT', 'OWNER', 'PINNED', 'CREATE', 'SQUASH'],
      ...r.contexts.map((c) => [
        c.label,
        c.parent,
        c.parent !== 'host' && c.owner.uid === 0 ? `${c.parent}'s root` : (c.owner.name ?? String(c.owner.uid)),
        c.pinned ? 'yes' : 'no',
        c.madeInside ? `${c.create}, made inside` : c.create,
        c.squash,
      ]),
    ]);
  return EXIT.OK;
}

function duration(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${d ? `${d}d ` : ''}${d || h ? `${h}h ` : ''}${d || h || m ? `${m}m ` : ''}${s % 60}s`;
}

/** The states of a delegated object that are as they should be (the GIVEN column names only the kind). */
const AS_GIVEN = new Set(['ok', 'given', 'empty', 'in use', 'runs at release', 'pinned', 'present']);

/** `status LABEL`: one context's state and each object it was given, as the kernel shows them now. */
function contextStatus(r: P.StatusResult, label: string, g: Globals, io: Io): number {
  if (!r.full) throw new UsernsError('E_PERMISSION', `the state of "${label}" is for root; usernsctl resolve ${label} shows what it is given`);
  const c = r.contextStates?.find((x) => x.label === label);
  if (!c) throw new UsernsError('E_NOT_FOUND', `no context "${label}" is configured or pinned (usernsctl list shows them)`);
  if (g.json) io.out(JSON.stringify(c));
  else {
    io.out(`${c.label}: ${c.state}${c.why ? ` (${c.why})` : ''}${c.owner ? `, owner ${who(c.owner)}` : ''}`);
    if (!c.delegated?.length) io.out('  given nothing beyond its ids');
    else printTable(io, [['  GIVEN', 'PATH', 'STATE'], ...c.delegated.map((d) => [`  ${d.kind}`, d.path, d.state])]);
  }
  return EXIT.OK;
}

async function statusCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const { positionals } = parseCommand(args, {}, g);
  if (positionals.length > 1) throw new UsageError('status takes at most one LABEL');
  const r = await callAgent(g.socket, P.status, {});
  if (positionals.length === 1) return contextStatus(r, oneLabel(positionals, 'status'), g, io);
  if (g.json) {
    io.out(JSON.stringify(r));
    return EXIT.OK;
  }
  io.out(`usernsd ${r.version} (protocol ${r.protocol}), up ${duration(r.uptimeSeconds)}`);
  if (!r.full) {
    io.out(`contexts: ${r.contexts} you may use (details are for root)`);
    return EXIT.OK;
  }
  io.out(`pid:         ${r.pid}`);
  io.out(`config:      ${r.config}`);
  io.out(`socket:      ${r.socket}`);
  io.out(`contexts:    ${r.contexts} (${r.pinned} pinned)`);
  io.out(`connections: ${r.connections}`);
  const co = r.coordinator;
  if (co)
    io.out(
      `coordinator: ${co.coordinator}${co.coordinator === 'etcd' ? ` (${co.endpoints?.join(', ')}): ${co.reachable ? 'reachable' : 'NOT reachable'}, as ${co.host}; ${co.waiting} context(s) waiting, ${co.refused} refused${co.lastError ? `; last error ${co.lastError}` : ''}` : ''}`,
    );
  if (r.spawner)
    io.out(
      `spawner:     ${r.spawner.kind === 'native' ? `usernsd-spawner (${r.spawner.pid === null ? 'started at the first creation' : `pid ${r.spawner.pid}`})` : 'a helper forked per namespace (no usernsd-spawner: see spawner in usernsd.conf(5))'}`,
    );
  if (r.views)
    io.out(
      `views:       ${(await (await viewCommands()).mountedViews(g.socket)).length} mounted here of ${r.views.recorded} made (usernsctl view --list); ${r.views.namespaces} idmap namespace(s) held`,
    );
  if (r.memoryMb) io.out(`memory:      ${r.memoryMb.rss} MiB resident, ${r.memoryMb.heapUsed} MiB heap in use`);
  io.out(`last reload: ${r.lastReload ?? 'never'}`);
  if (r.upcall) io.out(`upcall:      ${r.upcall.state}: ${r.upcall.message}`);
  if (r.upcall?.users && r.upcall.users.state !== 'ok') io.out(`  users:     ${r.upcall.users.state}: ${r.upcall.users.message}`);
  io.out(
    `counters:    ${
      Object.entries(r.counters ?? {})
        .map(([k, v]) => `${k}=${v}`)
        .join(' ') || 'none'
    }`,
  );
  const states = r.contextStates ?? [];
  if (states.length > 0) {
    io.out('');
    // GIVEN only where a context was given something ([delegate]): the table is otherwise as it was.
    const given = states.some((c) => c.delegated?.length);
    const givenCell = (c: P.ContextState) =>
      c.delegated?.length ? c.delegated.map((d) => (AS_GIVEN.has(d.state) ? d.kind : `${d.kind} ${d.state}`)).join(', ') : '-';
    printTable(io, [
      ['CONTEXT', 'OWNER', 'STATE', ...(given ? ['GIVEN'] : [])],
      ...states.map((c) => [c.label, c.owner ? who(c.owner) : '-', c.why ? `${c.state} (${c.why})` : c.state, ...(given ? [givenCell(c)] : [])]),
    ]);
  }
  const latency = Object.entries(r.latencyMs ?? {});
  if (latency.length > 0) {
    io.out('');
    printTable(io, [
      ['METHOD', 'REQUESTS', 'P50_MS', 'P90_MS', 'P99_MS', 'MAX_MS'],
      ...latency.map(([m, l]) => [m, String(l.count), String(l.p50), String(l.p90), String(l.p99), String(l.max)]),
    ]);
  }
  io.out('');
  io.out(`configuration errors: ${r.errors?.length ?? 0}`);
  for (const e of r.errors ?? []) io.out(`  ${e}`);
  for (const p of r.pins ?? []) io.out(`pin ${p.label}: ${p.status}: ${p.message}`);
  return EXIT.OK;
}

async function metricsCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const r = await callWithoutArguments(args, g, P.metrics);
  io.out(g.json ? JSON.stringify(r) : r.text.trimEnd());
  return EXIT.OK;
}

async function reloadCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const r = await callWithoutArguments(args, g, P.reload);
  if (g.json) io.out(JSON.stringify(r));
  else {
    io.out(`reloaded: ${r.contexts} context(s)`);
    for (const k of ['added', 'changed', 'removed', 'kept'] as const)
      if (r[k].length > 0) io.out(`  ${k}: ${r[k].join(', ')}${k === 'kept' ? ' (file has errors: last good version stays)' : ''}`);
  }
  for (const e of r.errors) io.err(e);
  return r.errors.length > 0 ? EXIT.ERROR : EXIT.OK;
}

async function releaseCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const { positionals, values } = parseCommand(args, { kill: { type: 'boolean' } }, g);
  const r = await callAgent(g.socket, P.release, { label: oneLabel(positionals, 'release'), ...(values.kill ? { kill: true } : {}) });
  if (g.json) io.out(JSON.stringify(r));
  else {
    // Nested contexts go first: a child left pinned would stay inside the old parent namespace.
    for (const d of r.descendants) io.out(`released ${d} (nested in ${r.label})`);
    io.out(r.released ? `released ${r.label}` : `${r.label}: nothing was pinned`);
  }
  return EXIT.OK;
}

async function createCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const { positionals, values } = parseCommand(args, { 'uid-map': { type: 'string' }, 'gid-map': { type: 'string' }, cgroup: { type: 'boolean' } }, g);
  const label = oneLabel(positionals, 'create');
  const uidMap = values['uid-map'];
  if (uidMap === undefined) throw new UsageError("create needs --uid-map 'INSIDE OUTSIDE COUNT' (OUTSIDE: ids of the context it is made in)");
  const r = await callAgent(g.socket, P.create, { label, uidMap, gidMap: values['gid-map'] ?? uidMap, ...(values.cgroup ? { cgroup: true } : {}) });
  if (g.json) io.out(JSON.stringify(r));
  else {
    io.out(`${r.label}: ${r.path}${r.created ? ' (created now)' : ''}`);
    io.out(`  parent ${r.parent}, setgroups ${r.setgroups}, nsfs inode ${r.ino}`);
    io.out(`  uid_map ${formatExtents(r.uidMap)}`);
    io.out(`  gid_map ${formatExtents(r.gidMap)}`);
    if (r.delegated?.cgroup) io.out(`  cgroup ${r.delegated.cgroup}`);
  }
  return EXIT.OK;
}

/**
 * nsenter as the caller: uid 0 and gid 0 inside, like nsenter's default. With setgroups allow the
 * supplementary groups are dropped; with deny the kernel forbids setgroups(2), so they are kept
 * (they show as the overflow group inside).
 */
async function enterCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const dash = args.indexOf('--');
  const own = dash < 0 ? args : args.slice(0, dash);
  const cmd = dash < 0 ? [] : args.slice(dash + 1);
  const { positionals, values } = parseCommand(own, { view: { type: 'string', multiple: true } }, g);
  const label = oneLabel(positionals, 'enter');
  const shell = cmd.length > 0 ? cmd : [process.env.SHELL || '/bin/sh'];
  if (values.view?.length) return (await viewCommands()).enterWithViews(g.socket, label, values.view, shell, io);
  const r = await callAgent(g.socket, P.resolve, { label });
  // The kernel lets root and the owner of the top-level context setns into it: say so plainly
  // instead of nsenter's "Operation not permitted". [access] gives resolve and map, not entry.
  if (!r.mayEnter) {
    const nested =
      r.parent !== 'host' ? `; "${label}" is nested, so it is entered by the owner of its top-level context, or by its own owner from inside its parent` : '';
    throw new UsernsError(
      'E_PERMISSION',
      `the kernel lets only root and a namespace's owner join it from here${nested}; [access] users may resolve and map "${label}", not enter it`,
    );
  }
  // nsenter is our child: in the context's cgroup from its start, as every process it makes.
  if (r.delegated?.cgroup) await callAgent(g.socket, P.joinCgroup, { label });
  const argv = [`--user=${r.path}`, ...(r.setgroups === 'deny' ? ['--preserve-credentials'] : []), '-S', '0', '-G', '0', '--', ...shell];
  return runNsenter(argv, io);
}

/** Usually reached straight from bin/usernsctl.js; here when global options come first. */
async function upcallCmd(args: string[], g: Globals): Promise<number> {
  const { upcallMain } = await import('../upcall.ts');
  return upcallMain(
    args.filter((a) => a !== '--json'),
    g.socket,
  );
}

async function keysCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const { positionals } = parseCommand(args, {}, g);
  const [verb, label, ...extra] = positionals;
  const { answerRings, collected, invalidateKey, issuedKeysRing, keyState, ourKeys } = await import('../kernel/keys.ts');
  // Root also sees (and clears) the keys the upcall answered for other users: they are in root's
  // persistent keyring, which this makes ours to read.
  if (process.getuid!() === 0)
    try {
      issuedKeysRing();
    } catch {
      /* no persistent keyrings: only root's own keys */
    }
  const ours = ourKeys();
  if (verb === 'list' && extra.length === 0 && label === undefined) {
    const rows = ours.map((k) => ({ id: k.id, label: k.label, uid: k.uid, timeout: k.timeout, state: keyState(k) }));
    if (g.json) io.out(JSON.stringify({ keys: rows }));
    else if (rows.length === 0) io.out('no userns: keys you can see');
    else printTable(io, [['KEY', 'LABEL', 'UID', 'EXPIRES', 'STATE'], ...rows.map((r) => [String(r.id), r.label, String(r.uid), r.timeout, r.state])]);
    return EXIT.OK;
  }
  if (verb === 'clear' && extra.length === 0) {
    if (label !== undefined && labelProblem(label)) throw new UsageError(`keys clear: invalid label "${label}": ${labelProblem(label)}`);
    let cleared = 0;
    let failed = 0;
    const invalidated: number[] = [];
    const rings = answerRings();
    for (const k of ours) {
      if (label !== undefined && k.label !== label) continue;
      try {
        invalidateKey(k.id);
        invalidated.push(k.id);
        cleared++;
        // The answer's own keyring in root's registry goes with it, rather than waiting empty for its expiry.
        const ring = rings.get(k.id);
        if (ring !== undefined)
          try {
            invalidateKey(ring);
            invalidated.push(ring);
          } catch {
            /* expired meanwhile */
          }
      } catch (err) {
        io.err(`usernsctl: cannot invalidate key ${k.id} (${k.description}): ${(err as Error).message}`);
        failed++;
      }
    }
    // Done when the next request makes an upcall: until the kernel collects them, one fails with EKEYREVOKED.
    if (!(await collected(invalidated)))
      io.err('usernsctl: the kernel has not collected the invalidated keys yet: a request meeting one fails with "Key has been revoked" until it does');
    if (g.json) io.out(JSON.stringify({ cleared, failed }));
    else io.out(`cleared ${cleared} key(s)`);
    return failed > 0 ? EXIT.ERROR : EXIT.OK;
  }
  throw new UsageError('keys takes "list" or "clear [LABEL]"');
}

/** The xattr name: --xattr, else label_xattr of the settings file (--config, default DEFAULT_CONFIG_FILE). */
async function labelXattrName(xattr: string | undefined, config: string | undefined): Promise<string> {
  if (xattr !== undefined) return xattr;
  const { AGENT_DEFAULTS, loadAgentConfig } = await import('../../config/load.ts');
  const { systemNss } = await import('../../config/nss.ts');
  const file = config ?? DEFAULT_CONFIG_FILE;
  const r = loadAgentConfig(file, systemNss());
  if (r.errors.length > 0 && (config !== undefined || !r.errors[0].message.includes('ENOENT'))) {
    throw new UsernsError('E_CONFIG', `cannot read label_xattr from ${file}: ${r.errors[0].message}`);
  }
  return r.errors.length > 0 ? AGENT_DEFAULTS.labelXattr : r.config.labelXattr;
}

async function labelCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const { values, positionals } = parseCommand(args, { xattr: { type: 'string' }, config: { type: 'string', short: 'c' } }, g);
  const [verb, path, label, ...extra] = positionals;
  if (!path || extra.length > 0 || (verb === 'set') !== (label !== undefined) || !['set', 'get', 'clear'].includes(verb ?? '')) {
    throw new UsageError('label takes "set PATH LABEL", "get PATH" or "clear PATH"');
  }
  const name = await labelXattrName(values.xattr, values.config);
  const { getXattr, removeXattr, setXattr } = await import('../kernel/sys.ts');
  try {
    if (verb === 'set') {
      const problem = labelProblem(label);
      if (problem) throw new UsernsError('E_INVALID', `invalid label "${label}": ${problem}`);
      if (lstatSync(path).isSymbolicLink()) throw new UsernsError('E_INVALID', `${path} is a symbolic link: label the directory or file itself`);
      setXattr(path, name, Buffer.from(label));
      if (!g.json) io.out(`${path}: ${label}`);
      else io.out(JSON.stringify({ path, label }));
    } else if (verb === 'get') {
      const v = getXattr(path, name)?.toString() ?? null;
      if (g.json) io.out(JSON.stringify({ path, label: v }));
      else if (v === null) {
        io.err(`usernsctl: ${path} has no label (${name})`);
        return EXIT.ERROR;
      } else io.out(v);
    } else {
      const removed = removeXattr(path, name);
      if (g.json) io.out(JSON.stringify({ path, removed }));
      else io.out(removed ? `${path}: label removed` : `${path}: had no label`);
    }
  } catch (err) {
    // lstat's ErrnoException and the xattr calls' SysError both carry the errno name in `code`.
    const code = err instanceof UsernsError ? undefined : (err as { code?: string }).code;
    if (code === undefined) throw err;
    if (code === 'ENOENT') throw new UsernsError('E_NOT_FOUND', `${path}: no such file or directory`);
    const hint =
      code === 'EPERM' && name.startsWith('trusted.')
        ? ': trusted.* attributes need root (CAP_SYS_ADMIN)'
        : code === 'ENOTSUP' || code === 'EOPNOTSUPP'
          ? ': this filesystem does not support that extended attribute'
          : '';
    throw new UsernsError(code === 'EPERM' || code === 'EACCES' ? 'E_PERMISSION' : 'E_KERNEL', `${path}: ${code}${hint}`);
  }
  return EXIT.OK;
}

/**
 * Views move mounts and pass descriptors (koffi, libc): loaded only by the commands that make or
 * list them, so that every other command starts without them (as explain, which reads NSS).
 */
const viewCommands = () => import('./viewcmd.ts');

const COMMANDS: Record<string, (args: string[], g: Globals, io: Io) => Promise<number>> = {
  resolve: resolveCmd,
  map: mapCmd,
  list: listCmd,
  status: statusCmd,
  reload: reloadCmd,
  release: releaseCmd,
  create: createCmd,
  enter: enterCmd,
  view: async (...a) => (await viewCommands()).viewCmd(...a),
  explain: async (...a) => (await import('./explain.ts')).explainCmd(...a), // reads NSS through koffi
  ranges: rangesCmd,
  metrics: metricsCmd,
  upcall: upcallCmd,
  keys: keysCmd,
  label: labelCmd,
};

/** Every command usernsctl(1) documents. */
export const COMMAND_NAMES: readonly string[] = [...Object.keys(COMMANDS), 'check-config', 'help', 'version'];

/** Global options before the command: --socket PATH takes a value, so the command is found by walking. */
function splitGlobals(argv: string[]): { globals: string[]; command: string | null; rest: string[] } {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--socket' || a === '-s') i++;
    else if (!a.startsWith('-')) return { globals: argv.slice(0, i), command: a, rest: argv.slice(i + 1) };
  }
  return { globals: argv, command: null, rest: [] };
}

export async function runCli(argv: string[], io: Io = stdio): Promise<number> {
  const { globals, command, rest } = splitGlobals(argv);
  try {
    const { values } = parseArgs({
      args: globals,
      options: { ...COMMON, version: { type: 'boolean', short: 'V' } },
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
    const g: Globals = { socket: values.socket ?? (process.env.USERNSD_SOCKET || P.DEFAULT_SOCKET), json: values.json ?? false };
    if (command === null) throw new UsageError('a command is required');
    if (command === 'check-config') return await checkConfig(rest, io);
    const run = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
    if (!run) throw new UsageError(`unknown command "${command}"`);
    const own = rest.includes('--') ? rest.slice(0, rest.indexOf('--')) : rest; // after "--": the command's own
    if (own.includes('-h') || own.includes('--help')) {
      io.out(USAGE);
      return EXIT.OK;
    }
    return await run(rest, g, io);
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.err(`usernsctl: ${(err as Error).message}\nTry 'usernsctl --help'.`);
      return EXIT.USAGE;
    }
    const e = agentError(err);
    if (e) {
      io.err(`usernsctl: ${e.code}: ${e.message}`);
      return EXIT.ERROR;
    }
    if (err instanceof TransportError) {
      const hint =
        err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
          ? ` (is usernsd running? start it with "systemctl start usernsd", or "npm start" in a checkout; or pass --socket PATH)`
          : err.code === 'EACCES'
            ? ' (the socket or its directory is not accessible to you)'
            : '';
      io.err(`usernsctl: ${err.message}${hint}`);
      return EXIT.UNREACHABLE;
    }
    throw err;
  }
}

// usernsctl explain PATH: the agent's explanation of a file's ids, printed for people. A path inside
// a view made through the agent is explained as the file on disk behind it (the view's source).
import { lstatSync } from 'node:fs';
import { dirname, join, relative, resolve as absolute } from 'node:path';
import { groupName, systemNss } from '../../config/nss.ts';
import { EXIT, parseCommand, UsageError } from './args.ts';
import type { Globals, Io } from './args.ts';
import { isIdmapped, mountTable } from '../kernel/mountinfo.ts';
import type { MountEntry } from '../kernel/mountinfo.ts';
import { callAgent } from '../wire/client.ts';
import * as P from '../wire/protocol.ts';

/** The mount a path is on: the longest mount point that is an ancestor of it (or itself). */
function mountOf(path: string, mounts: Map<string, MountEntry>): MountEntry | null {
  for (let p = path; ; p = dirname(p)) {
    const m = mounts.get(p);
    if (m) return m;
    if (p === '/') return null;
  }
}

/**
 * When PATH is inside a view made through the agent — an idmapped mount, or a bindfs one (FUSE,
 * whose ids are bindfs's and not on disk either) — the view, and the file on disk behind PATH.
 */
async function behindView(g: Globals, path: string): Promise<{ view: P.ViewRecord; onDisk: string } | null> {
  const mounts = mountTable();
  const m = mountOf(path, mounts);
  const mechanism = !m ? null : isIdmapped(m) ? 'idmapped' : m.fsType.startsWith('fuse') ? 'bindfs' : null;
  if (!m || mechanism === null) return null;
  let views: readonly P.ViewRecord[];
  try {
    views = (await callAgent(g.socket, P.views, {})).views; // root only: others see the view's ids as they are
  } catch {
    return null;
  }
  const view = views.find((v) => v.target === m.mountPoint && v.mechanism === mechanism);
  return view ? { view, onDisk: join(view.src, relative(m.mountPoint, path)) } : null;
}

function idLines(kind: 'uid' | 'gid', e: P.IdExplanation, r: P.Explanation, shown: number | null): string[] {
  const ov = r.overflow[kind];
  const ovNote = (n: number) => (n === ov ? ` (the overflow ${kind})` : '');
  const out: string[] = [];
  const ctx = r.context;
  if (shown !== null) out.push(`${kind}: shown here as ${shown}${ovNote(shown)}; on disk ${e.onDisk}`);
  else out.push(`${kind}: on disk ${e.onDisk}${ctx ? ` = ${kind} ${e.onDisk} inside ${ctx}` : ''}`);
  if (ctx) {
    out.push(`  host ${kind}:        ${e.host === null ? `none: not in ${ctx}'s map` : `${e.host}${e.name ? ` (${e.name})` : ''}`}`);
    out.push(
      `  from the host:   ${e.fromHost}${ovNote(e.fromHost)}${e.fromHost !== e.host && r.squash && r.squash.mode !== 'none' ? ` (squash ${r.squash.mode})` : ''}`,
    );
    if (r.callerContext !== 'host') out.push(`  from ${r.callerContext} (yours): ${e.fromCaller}${ovNote(e.fromCaller)}`);
    out.push(`  identity view:   ${e.identityView}${ovNote(e.identityView)}`);
    out.push(`  foreign view:    ${e.foreignView}${ovNote(e.foreignView)}`);
    const hostName = kind === 'uid' ? systemNss().userById(e.onDisk)?.name : groupName(e.onDisk);
    out.push(
      `  without a view:  ${e.onDisk}${hostName ? ` (host ${kind === 'uid' ? 'user' : 'group'} ${hostName})` : ''}: the on-disk id read as if it were a host ${kind}`,
    );
  } else {
    out.push(`  a host ${kind}${e.name ? `, named ${e.name} (in a context's range)` : ''}`);
    if (r.callerContext !== 'host') out.push(`  from ${r.callerContext} (yours): ${e.fromCaller}${ovNote(e.fromCaller)}`);
  }
  for (const w of e.why) out.push(`  why: ${w}`);
  return out;
}

export async function explainCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const { positionals } = parseCommand(args, {}, g);
  if (positionals.length !== 1) throw new UsageError('explain takes one PATH');
  const path = absolute(positionals[0]);
  const behind = await behindView(g, path);
  const r = await callAgent(g.socket, P.explain, { path: behind?.onDisk ?? path });
  let shown: { uid: number; gid: number } | null = null;
  if (behind) {
    const st = lstatSync(path);
    shown = { uid: st.uid, gid: st.gid };
  }
  if (g.json) {
    io.out(JSON.stringify(behind ? { ...r, view: { ...behind.view, path, shown } } : r));
    return EXIT.OK;
  }
  io.out(path);
  if (behind) io.out(`view:    a ${behind.view.mode} view of ${behind.view.src} (context ${behind.view.context}): on disk this is ${behind.onDisk}`);
  if (r.labelledPath && r.context) io.out(`label:   ${r.context} (on ${r.labelledPath})`);
  if (r.note) io.out(`note:    ${r.note}`);
  if (r.context && r.squash)
    io.out(`context: ${r.context}, parent ${r.parent}; squash ${r.squash.mode} (anonuid ${r.squash.anonuid}, anongid ${r.squash.anongid})`);
  const d = r.delegated;
  if (d) {
    const given = [d.cgroup && `cgroup ${d.cgroup}`, d.netns && `netns ${d.netns}`, d.tap && `tap ${d.tap}`, ...d.devices, ...d.directories].filter(Boolean);
    if (given.length > 0) io.out(`given:   ${given.join(', ')}`);
  }
  for (const kind of ['uid', 'gid'] as const) for (const line of idLines(kind, r[kind], r, shown && shown[kind])) io.out(line);
  return EXIT.OK;
}

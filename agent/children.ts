// Contexts made from inside (SPEC §14): the record judged as a reload would judge it, written,
// put in force and pinned, or undone whole; and the records of what was made inside a context,
// forgotten with it. The lifecycle runs each of these one at a time with the reloads.
import { join } from 'node:path';
import { existsSync, readdirSync } from 'node:fs';
import { quotaHolder } from '../config/load.ts';
import { formatExtents } from '../config/extents.ts';
import type { IdMap, Nss } from '../config/types.ts';
import { judgeRuntimeChild } from './configure.ts';
import { CHILDREN_DIR, removeChildRecords, writeChildRecord } from './coord/state.ts';
import { UsernsError } from './errors.ts';
import { said } from './advice.ts';
import type { People } from './people.ts';
import type { RangePool } from './rangepool.ts';
import type { Registry, Resolved } from './registry.ts';
import type { Peer } from './wire/peer.ts';

export type ChildrenParts = {
  readonly registry: Registry;
  readonly pool: RangePool;
  readonly people: People;
  readonly nss?: Nss;
  /** The contexts in force changed: contexts.json follows soon (a burst is written once). */
  readonly recordSoon: () => void;
};

/**
 * The record is judged first as a reload would judge it (same parser, same rules over its
 * ancestors and siblings), then written whole, put in force, and its namespace made and pinned. A
 * creation that fails removes the record and the context again: nothing is left behind.
 */
export async function createChild(
  parts: ChildrenParts,
  peer: Peer,
  label: string,
  uidMap: IdMap,
  gidMap: IdMap,
  given: { cgroup: boolean },
): Promise<Resolved> {
  const reg = parts.registry;
  const parent = label.slice(0, label.lastIndexOf('.'));
  const fileOfLabel = join(reg.agent.contexts, `${label}.conf`);
  if (reg.get(label) || reg.configuration.errors.some((e) => e.file === fileOfLabel) || existsSync(fileOfLabel))
    throw new UsernsError('E_INVALID', `context "${label}" exists already: choose another name, or release it first`);
  const all = new Map([...reg.all()].map((c) => [c.label, c] as const));
  const holder = quotaHolder(parent, all);
  const made = holder ? [...all.values()].filter((c) => c.runtime && quotaHolder(c.label, all) === holder).length : 0;
  if (!holder || made >= (holder.children ?? 0))
    throw new UsernsError(
      'E_BUSY',
      `context "${holder?.label ?? parent}" allows ${holder?.children ?? 0} context(s) made from inside it${made > 0 ? `, and has ${made}` : ''}: ${made > 0 ? 'release one first (usernsctl release CHILD), or ' : ''}ask root to raise children = in its file`,
    );
  const record = [
    `# Made from inside ${peer.inside ?? 'the host'} by uid ${peer.uid} (pid ${peer.pid}) at ${new Date().toISOString()}.`,
    '# Kept by usernsd across restarts; usernsctl release removes it. A file of the same label in the',
    '# contexts directory wins over it.',
    '[context]',
    `label = ${label}`,
    `parent = ${parent}`,
    `uid_map = ${formatExtents(uidMap)}`,
    `gid_map = ${formatExtents(gidMap)}`,
    'create = eager',
    ...(given.cgroup ? ['[delegate]', 'cgroup = yes'] : []),
    '',
  ].join('\n');
  const judged = judgeRuntimeChild(reg.agent, all, join(reg.agent.state, CHILDREN_DIR, `${label}.conf`), record, parts.nss);
  if ('errors' in judged) {
    const why = judged.errors.map((e) => (e.key ? `${e.key}: ${e.message}` : e.message));
    throw new UsernsError('E_CONFIG', `cannot create context "${label}": ${why.join('; ') || 'refused (see the agent log)'}`);
  }
  // A shared pool keeps it for every host first: made nowhere unless etcd says it is the first.
  await parts.pool.recordChild(label, record);
  try {
    writeChildRecord(reg.agent.state, label, record);
  } catch (err) {
    await parts.pool.forgetChildren([label]).catch(() => undefined);
    throw err;
  }
  reg.admit(judged.context, judged.host);
  try {
    const r = await reg.resolve(label, peer);
    parts.recordSoon(); // the record above is what must outlive a power loss
    return r;
  } catch (err) {
    await parts.pool.forgetChildren([label]).catch(() => undefined);
    removeChildRecords(reg.agent.state, [label]);
    reg.forget([label]);
    throw err;
  }
}

/** The records of contexts made from inside, for `label` and what is nested in it, removed and unloaded; returns those forgotten. */
export async function forgetChildren(parts: ChildrenParts, label: string): Promise<string[]> {
  const reg = parts.registry;
  let names: string[] = [];
  try {
    names = readdirSync(join(reg.agent.state, CHILDREN_DIR));
  } catch {
    /* none here */
  }
  // The context itself, what is nested in it by name (its records), and by parent (what is loaded).
  const nested = new Set([label, ...reg.descendants(label)]);
  const labels = names
    .filter((n) => n.endsWith('.conf') && !n.startsWith('.'))
    .map((n) => n.slice(0, -'.conf'.length))
    .filter((l) => nested.has(l) || l.startsWith(`${label}.`));
  // A shared pool may hold records this host has not read yet: asked whenever the label may have any.
  const all = new Map([...reg.all()].map((c) => [c.label, c] as const));
  if (labels.length === 0 && !((quotaHolder(label, all)?.children ?? 0) > 0)) return [];
  // The shared pool's first: a record removed here but kept there would come back at the next settle.
  try {
    await parts.pool.forgetChildren([label, ...labels]);
  } catch (err) {
    throw new UsernsError(
      'E_UNAVAILABLE',
      `released here, but ${said(err)}: the records of what was made inside ${label} stay, and are made again at the next start unless released again once etcd answers`,
    );
  }
  const removed = removeChildRecords(reg.agent.state, labels);
  // Out of force with what is nested in them; their pins went with the release before this.
  const gone = removed.filter((l) => reg.get(l)?.runtime);
  const out = [...new Set([...gone, ...gone.flatMap((l) => reg.descendants(l))])];
  if (out.length > 0) {
    reg.forget(out);
    parts.people.rebuild(reg.all());
    parts.recordSoon();
  }
  return removed;
}

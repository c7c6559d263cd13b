// Views (SPEC §7): which context a tree belongs to, which view of it a caller gets, and how it is
// made — an idmapped tree handed over as a descriptor, or bindfs options where the kernel cannot.
import { constants, fstatSync, readFileSync, realpathSync } from 'node:fs';
import type { Stats } from 'node:fs';
import * as v from 'valibot';
import { labelProblem } from '../config/schema.ts';
import { dirname, join, sep } from 'node:path';
import type { Context } from '../config/types.ts';
import { isRoot, mayEnter } from './policy.ts';
import { OWN_USERNS } from './wire/peer.ts';
import type { Peer } from './wire/peer.ts';
import { ensureStateDir, STATE_VERSION, VIEWS_FILE } from './coord/state.ts';
import { writeFileAtomic } from './kernel/files.ts';
import { UsernsError } from './errors.ts';
import { agentError } from './advice.ts';
import { bindfsOptions, viewPlan } from './idmap.ts';
import type { ViewMode } from './idmap.ts';
import { ViewNamespaces, makeTree } from './kernel/idmapped.ts';
import type { NamespaceMaker } from './kernel/makers.ts';
import { findLabelFrom, notReachable, peerCanReach, Reached, unreachableBy } from './labels.ts';
import { hostReach, SEAL_ADVICE } from './seal.ts';
import type { Registry } from './registry.ts';
import type { ViewParams, ViewRecord, ViewResult } from './wire/protocol.ts';
import type { Connection } from './wire/server.ts';

export { VIEWS_FILE } from './coord/state.ts';

const PATH = v.pipe(v.string(), v.startsWith('/'), v.maxLength(4096), v.regex(/^[^\n\0]*$/u));
const VIEW_RECORD = v.object({
  src: PATH,
  target: PATH,
  context: v.pipe(
    v.string(),
    v.check((l) => labelProblem(l) === null, 'not a label'),
  ),
  mode: v.picklist(['identity', 'foreign']),
  mechanism: v.picklist(['idmapped', 'bindfs']),
  readOnly: v.boolean(),
  made: v.pipe(v.string(), v.maxLength(64)),
});
/** Views remembered for `usernsctl view --list`; a view made on a target already recorded replaces it. */
export const MAX_VIEW_RECORDS = 1024;

/** Trees no view may be made of: the kernel's own, and the agent's. */
const KERNEL_TREES = ['/proc', '/sys', '/dev'];

export type ViewSource = { readonly src: string; readonly dev: number; readonly ino: number; readonly label: string; readonly labelledPath: string | null };

const under = (path: string, dir: string) => path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);

/** The label walk as the agent itself does it, for a tree sealed away from the caller. */
const AS_ROOT: Peer = { pid: process.pid, uid: 0, gid: 0, groups: [], userns: [OWN_USERNS], host: true };

export class Views {
  readonly namespaces: ViewNamespaces;
  private readonly stateDir: string;
  private records: ViewRecord[] | null = null;

  /** `maker`: the agent's namespace maker (Namespaces.maker), which makes the views' idmap namespaces too. */
  constructor(stateDir: string, maker: NamespaceMaker) {
    this.stateDir = stateDir;
    this.namespaces = new ViewNamespaces(maker);
  }

  /**
   * The tree and the context it belongs to: the one named (root only; an owner's tree must carry
   * the label), else the nearest label. The tree must be a directory outside /proc, /sys, /dev and
   * the agent's own directories.
   */
  source(registry: Registry, peer: Peer, params: ViewParams): ViewSource {
    const unreachable = () => unreachableBy(peer, params.path);
    let src: string;
    try {
      src = realpathSync(params.path);
    } catch (err) {
      throw notReachable(peer, params.path, err);
    }
    // A caller who is not root learns nothing about paths it could not reach itself — except that a
    // tree sealed away from host users (see seal.ts) is its own context's, when it may enter that one:
    // the owner reaches such a tree through the view only, as a machine's tree under /var/lib/machines.
    const sealedOwnTree = !isRoot(peer) && !peerCanReach(peer, dirname(src));
    if (sealedOwnTree && params.purpose !== 'enter') throw unreachable();
    const agent = registry.agent;
    const forbidden = [...KERNEL_TREES, agent.pins, agent.state];
    const hit = forbidden.find((d) => under(src, d));
    if (hit)
      throw sealedOwnTree
        ? unreachable()
        : new UsernsError(
            'E_INVALID',
            `no view is made of ${src}: it is inside ${hit}, ${KERNEL_TREES.includes(hit) ? 'a kernel filesystem' : "the agent's own directory"}`,
          );
    // The tree as the caller reaches it (labels.ts, Reached): its identity and its label come from
    // one lookup made with the caller's own ids, so a directory of hers swapped for a symlink
    // meanwhile is never taken for what was checked (makeTree opens it again by name and refuses
    // another inode). A sealed tree of the caller's own context is reached as root: there its label
    // decides, and only root can change what lies on the way.
    let reached: Reached;
    try {
      reached = Reached.as(sealedOwnTree ? AS_ROOT : peer, src, { follow: true });
    } catch (err) {
      throw sealedOwnTree ? unreachable() : err;
    }
    let st: Stats;
    let found;
    try {
      st = fstatSync(reached.fd);
      if (!st.isDirectory()) throw sealedOwnTree ? unreachable() : new UsernsError('E_INVALID', `${src} is not a directory: a view shows a tree`);
      try {
        found = findLabelFrom(reached, src, agent.labelXattr);
      } catch (err) {
        if (sealedOwnTree) throw unreachable();
        // Root names the context of a tree that carries no label.
        if (params.context !== undefined && isRoot(peer) && agentError(err)?.code === 'E_NOT_FOUND')
          return { src, dev: st.dev, ino: st.ino, label: params.context, labelledPath: null };
        throw err;
      }
    } finally {
      reached.close();
    }
    // The label wins (usernsctl(1)): a --context that says otherwise is refused, not silently obeyed.
    if (params.context !== undefined && isRoot(peer) && params.context !== found.label) {
      throw new UsernsError(
        'E_INVALID',
        `${src} is labelled ${found.label} (on ${found.at}), not ${params.context}: the label says whose ids are on disk; drop --context, or relabel the tree (usernsctl label set ${found.at} ${params.context})`,
      );
    }
    if (sealedOwnTree) {
      const ctx = registry.get(found.label);
      if (!ctx || !mayEnter(peer, registry.topLevel(ctx)) || (params.context !== undefined && params.context !== found.label)) throw unreachable();
    }
    if (params.context !== undefined && params.context !== found.label) {
      throw new UsernsError(
        'E_PERMISSION',
        `${src} belongs to context "${found.label}" (label on ${found.at}), not "${params.context}": only root may view a tree as another context's`,
      );
    }
    return { src, dev: st.dev, ino: st.ino, label: found.label, labelledPath: found.at };
  }

  /**
   * Make the view: the plan from the pure core, then the kernel's idmapped tree (a descriptor
   * attached to the reply), or bindfs options where the filesystem cannot be idmapped or the plan is
   * all squash. An owner (purpose "enter") gets the identity view only, and only an idmapped one.
   */
  async make(registry: Registry, peer: Peer, conn: Connection, params: ViewParams, source: ViewSource, ctx: Context): Promise<ViewResult> {
    const purpose = params.purpose ?? 'mount';
    if (purpose === 'mount' && !isRoot(peer)) {
      throw new UsernsError(
        'E_PERMISSION',
        `views are mounted by root (usernsctl view, mount -t usernsd); a context's owner enters it with a view: usernsctl enter ${ctx.label} --view SRC:DST`,
      );
    }
    if (purpose === 'enter' && params.mode === 'foreign')
      throw new UsernsError('E_INVALID', 'entering a context shows its tree as it is inside (identity): mode foreign is for mounts');
    const mode: ViewMode = purpose === 'enter' ? 'identity' : (params.mode ?? 'foreign');
    let pin: string | null = null;
    if (purpose === 'enter') {
      const top = registry.topLevel(ctx);
      if (!mayEnter(peer, top)) {
        throw new UsernsError(
          'E_PERMISSION',
          peer.host
            ? `uid ${peer.uid} may not enter context "${ctx.label}": the kernel lets root and the owner of "${top.label}" (uid ${top.owner.uid}) join it`
            : `a caller in a user namespace of its own (or a context's) may not enter context "${ctx.label}" from there: the kernel lets root and the owner of "${top.label}" join it from the host's`,
        );
      }
      pin = (await registry.resolve(ctx.label, peer)).pin.path;
    }
    const host = registry.view(ctx.label);
    const plan = viewPlan({ uid: host.uid!.byInside, gid: host.gid!.byInside }, ctx.squash, mode);
    let readOnly = params.readOnly ?? false;
    let readOnlyWhy: string | null = null;
    // SPEC §12: through an identity view the owner writes on-disk ids it was not given (0 among
    // them). Where a host user can reach the raw tree, those files would be theirs to run: a setuid
    // root binary planted for the owner's own host account. There the view is read-only.
    if (purpose === 'enter' && !readOnly) {
      const seal = hostReach(source.src, source.dev, source.ino);
      if (!seal.sealed) {
        readOnly = true;
        readOnlyWhy = `read-only: ${seal.why}; ${SEAL_ADVICE}`;
      }
    }
    let mechanism: 'idmapped' | 'bindfs' = 'bindfs';
    let why: string | null = ctx.squash.mode === 'all' && mode === 'foreign' ? 'all squash shows every file as one owner, which no idmapping can' : null;
    if (plan.kind === 'idmap') {
      const usernsFd = await this.namespaces.usernsFor(plan.maps);
      const tree = await makeTree({ src: source.src, expect: source, usernsFd, readOnly, pid: peer.pid }, this.namespaces.spawner);
      if ('fd' in tree) {
        conn.attach!(tree.fd);
        mechanism = 'idmapped';
      } else {
        why = tree.unsupported;
      }
    }
    let bindfs: string[] | null = null;
    if (mechanism === 'bindfs') {
      if (purpose === 'enter') throw new UsernsError('E_UNSUPPORTED', `${why}: entering with a view needs an idmapped mount`);
      bindfs = bindfsOptions(plan);
      if (bindfs === null) {
        throw new UsernsError(
          'E_UNSUPPORTED',
          `${why}, and bindfs cannot show this view either: it shifts ids by one offset (--uid-offset), and ${mode === 'foreign' && ctx.squash.mode === 'root' ? 'root squash leaves on-disk 0 out of the map' : `the map of "${ctx.label}" is not one extent from 0`}`,
        );
      }
    }
    if (purpose === 'mount' && params.target !== undefined) {
      this.remember({
        src: source.src,
        target: params.target,
        context: ctx.label,
        mode,
        mechanism,
        readOnly: readOnly || bindfs !== null,
        made: new Date().toISOString(),
      });
    }
    return {
      context: ctx.label,
      mode,
      mechanism,
      src: source.src,
      labelledPath: source.labelledPath,
      squash: ctx.squash.mode,
      uidMap: plan.kind === 'idmap' ? plan.maps.uid : [],
      gidMap: plan.kind === 'idmap' ? plan.maps.gid : [],
      bindfs,
      pin,
      setgroups: pin === null ? null : ctx.setgroups,
      readOnly: readOnly || bindfs !== null,
      readOnlyWhy,
    };
  }

  /** The views made through the agent, newest last; whether each is still mounted is for the caller's mount namespace to say. */
  list(): readonly ViewRecord[] {
    if (this.records === null) {
      try {
        // Input like any state file (SPEC §12): a record that is not one is left out, the rest kept.
        const parsed = JSON.parse(readFileSync(join(this.stateDir, VIEWS_FILE), { encoding: 'utf8', flag: constants.O_RDONLY | constants.O_NOFOLLOW })) as {
          version?: unknown;
          views?: unknown;
        };
        const records = parsed.version === STATE_VERSION && Array.isArray(parsed.views) ? parsed.views.slice(-MAX_VIEW_RECORDS) : [];
        this.records = records.flatMap((r) => {
          const ok = v.safeParse(VIEW_RECORD, r);
          return ok.success ? [ok.output] : [];
        });
      } catch {
        this.records = [];
      }
    }
    return this.records;
  }

  private remember(record: ViewRecord): void {
    const next = [...this.list().filter((r) => r.target !== record.target), record].slice(-MAX_VIEW_RECORDS);
    this.records = next;
    try {
      ensureStateDir(this.stateDir);
      writeFileAtomic(this.stateDir, VIEWS_FILE, JSON.stringify({ version: STATE_VERSION, views: next }) + '\n', false);
    } catch {
      // The view is made either way; only a restarted agent's list would miss it.
    }
  }

  close(): void {
    this.namespaces.close();
  }
}

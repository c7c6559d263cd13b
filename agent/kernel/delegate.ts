// Host resources that follow a label (SPEC §13, userns.d(5) [delegate]): a cgroup v2 subtree,
// device nodes, directories and admin hooks, set up when a context's namespace is pinned, recorded
// beside the pin, reconciled at start and reload, torn down in reverse order at release.
import { spawn } from 'node:child_process';
import { chmodSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmdirSync, unlinkSync, writeFileSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import * as v from 'valibot';
import { formatExtents } from '../../config/extents.ts';
import { labelProblem } from '../../config/schema.ts';
import type { Delegation, IdMap } from '../../config/types.ts';
import { ID, IDMAP } from '../../config/untrusted.ts';
import { errnoOf, Fault, refused } from '../fault.ts';
import { lstatOrNull, makeDirs, writeFileAtomic } from './files.ts';
import { firstMount } from './mountinfo.ts';
import { makeOwnedDirectory, setNodeOwner } from './ownedpaths.ts';
import { getXattr } from './sys.ts';
import type { HelperPrograms } from './helper.ts';
import { addTap, addVeth, deleteLink, deleteTap, IFNAME_RE, INNER_VETH, linkExists, netnsPinned, pinNetns, unpinNetns, vethNames } from './netdelegate.ts';
import { PATH_ENV } from './spawn.ts';

/** One delegated object as the kernel shows it now (status, and the protocol's answer of it). */
export type DelegatedObject = {
  readonly kind: 'cgroup' | 'netns' | 'veth' | 'tap' | 'device' | 'directory' | 'hook';
  readonly path: string;
  readonly state: string;
};

/** In the records directory (beside the pins, with their lifetime): one record per context with delegations. */
export const DELEGATIONS_DIR = 'delegations';

/** The files of a cgroup its owner must be able to write to manage it (cgroups(7), "Cgroups v2 delegation"). */
const DELEGATE_FILES_FALLBACK = ['cgroup.procs', 'cgroup.threads', 'cgroup.subtree_control'];

/** A hook's output kept for the log (the rest is dropped, and the log says so). */
const HOOK_OUTPUT_BYTES = 16 * 1024;

/** How long `release --kill` waits for a cgroup's processes to be gone. */
const KILL_WAIT_MS = 5000;

/** Cgroups nested in a delegated one that the release walks (cgroup.max.depth bounds what the owner can make). */
const MAX_CGROUP_DEPTH = 32;

/** Where the agent's own process goes when it manages its delegated cgroup (not a label: it starts with "."). */
export const AGENT_LEAF = '.agent';

/** The unified hierarchy's mount point in this mount namespace (the first mounted), or null. */
export function cgroup2Mount(mountinfo?: string): string | null {
  return firstMount((m) => m.fsType === 'cgroup2', mountinfo)?.mountPoint ?? null;
}

/** Whether systemd delegated this cgroup to the process in it (Delegate=yes sets the xattr, v251+). */
function delegatedToUs(dir: string): boolean {
  for (const name of ['trusted.delegate', 'user.delegate']) {
    try {
      if (getXattr(dir, name)?.toString() === '1') return true;
    } catch {
      /* no xattrs on this filesystem, or not allowed to read: not delegated as far as we can tell */
    }
  }
  return false;
}

/**
 * The cgroup every context's cgroup is made under. `auto`: the agent's own cgroup when systemd
 * delegated it (Delegate=yes), else `usernsd` at the top of the unified hierarchy
 * (/sys/fs/cgroup/usernsd, or /sys/fs/cgroup/unified/usernsd on a hybrid layout).
 */
export function cgroupRootFor(setting: string): { root: string; own: boolean } {
  if (setting !== 'auto') return { root: setting, own: false };
  const mount = cgroup2Mount();
  if (mount === null) return { root: '/sys/fs/cgroup/usernsd', own: false };
  const self = /^0::(\/.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1];
  if (self !== undefined && self !== '/') {
    const own = join(mount, self.endsWith(`/${AGENT_LEAF}`) ? self.slice(0, -AGENT_LEAF.length - 1) : self);
    if (delegatedToUs(own)) return { root: own, own: true };
  }
  return { root: join(mount, 'usernsd'), own: false };
}

/** What a context is given, with everything the kernel needs to know about it. */
export type DelegationPlan = {
  readonly label: string;
  readonly pin: string;
  readonly ino: number;
  /** The context's root as the host sees it: who receives everything. */
  readonly root: { readonly uid: number; readonly gid: number };
  readonly hostUid: IdMap;
  readonly hostGid: IdMap;
  /** The cgroup's absolute path, when the context gets one. */
  readonly cgroup: string | null;
  /** Where its network namespace is pinned (netns_dir/LABEL), when it gets one. */
  readonly netns: string | null;
  readonly setgroups: 'allow' | 'deny';
  readonly delegate: Delegation;
};

/** Where the agent pins what it makes (a network namespace beside the user namespaces' pins). */
export type PinPlace = { readonly mountNs: string | null; readonly helpers: HelperPrograms };

const DEVICE = v.object({
  path: v.pipe(v.string(), v.startsWith('/')),
  rdev: v.pipe(v.number(), v.safeInteger(), v.minValue(0)),
  uid: ID,
  gid: ID,
  mode: v.pipe(v.number(), v.safeInteger(), v.minValue(0), v.maxValue(0o7777)),
});
/** A record as read back: input like any other (SPEC §12). */
const RECORD = v.object({
  format: v.literal(1),
  boot: v.string(),
  label: v.string(),
  ino: v.pipe(v.number(), v.safeInteger(), v.minValue(1)),
  pin: v.pipe(v.string(), v.startsWith('/')),
  root: v.object({ uid: ID, gid: ID }),
  hostUid: IDMAP,
  hostGid: IDMAP,
  cgroup: v.nullable(v.pipe(v.string(), v.startsWith('/'))),
  /** The network namespace's pin, the veth pair's host end, the tap: what was made (absent in records before them). */
  netns: v.optional(v.nullable(v.pipe(v.string(), v.startsWith('/'))), null),
  veth: v.optional(v.nullable(v.pipe(v.string(), v.regex(IFNAME_RE))), null),
  tap: v.optional(v.nullable(v.pipe(v.string(), v.regex(IFNAME_RE))), null),
  devices: v.array(DEVICE),
  directories: v.array(v.pipe(v.string(), v.startsWith('/'))),
  /** exec_start ran and succeeded (or there is none): exec_stop runs at release. */
  started: v.boolean(),
  execStop: v.nullable(v.pipe(v.string(), v.startsWith('/'))),
  execTimeoutMs: v.pipe(v.number(), v.safeInteger(), v.minValue(1)),
});
export type DelegationRecord = v.InferOutput<typeof RECORD>;

/** Told of every hook run (its output, for the log) and of every set-up or tear-down that failed. */
export type DelegationEvents = {
  hook(r: { label: string; hook: 'start' | 'stop'; path: string; code: number | null; signal: string | null; output: string; ms: number }): void;
  /** What went wrong as it was thrown (a Fault, said by the agent's edge). */
  failed(step: 'set_up' | 'tear_down', label: string, err: unknown): void;
};

const BOOT_ID = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

/**
 * Whether a path exists, by lstat: under systemd's sandbox, access(2) (Node's existsSync) answers
 * "no" for cgroup files that are there (found by the real-systemd test).
 */
function exists(path: string): boolean {
  return lstatOrNull(path) !== null;
}

/** Is this directory in a cgroup v2 hierarchy? Only v2 directories have cgroup.controllers. */
function isCgroup2(dir: string): boolean {
  return exists(join(dir, 'cgroup.controllers'));
}

function readWords(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
}

/** Whether a cgroup (or one nested in it) holds processes: cgroup.events says `populated 1`. */
export function cgroupPopulated(path: string): boolean {
  try {
    return /^populated 1$/m.test(readFileSync(join(path, 'cgroup.events'), 'utf8'));
  } catch {
    return false;
  }
}

function busy(rec: DelegationRecord): Fault {
  return new Fault('busy', `the cgroup of "${rec.label}" (${rec.cgroup}) holds processes`, {
    object: 'cgroup',
    label: rec.label,
    step: 'release',
    subject: rec.cgroup,
  });
}

/** Checks a hook the way sshd's StrictModes checks a key file: root's, and no one else may change it or where it lies. */
function hookProblem(path: string): string | null {
  const st = lstatOrNull(path);
  if (st === null) return `${path} does not exist`;
  if (!st.isFile()) return `${path} is not a regular file (a symlink is not followed)`;
  if (st.uid !== 0) return `${path} is owned by uid ${st.uid}, not root`;
  if ((st.mode & 0o022) !== 0) return `${path} is writable by group or others (mode ${(st.mode & 0o7777).toString(8)})`;
  if ((st.mode & 0o100) === 0) return `${path} is not executable`;
  for (let d = dirname(path); ; d = dirname(d)) {
    const ds = lstatOrNull(d);
    if (ds === null || !ds.isDirectory()) return `${d} is not a directory (a symlink is not followed)`;
    // A sticky directory of root's (/tmp) lets no one else rename or remove what root put there.
    const othersMayReplace = (ds.mode & 0o022) !== 0 && (ds.mode & 0o1000) === 0;
    if (ds.uid !== 0 || othersMayReplace) return `${d}, where it lies, is not root's alone (owner ${ds.uid}, mode ${(ds.mode & 0o7777).toString(8)})`;
    if (d === '/') return null;
  }
}

/** The ids inside 0 is, and the extent it starts, as a hook's environment says them. */
function baseOf(map: IdMap): { base: number; count: number } {
  const e = map.find((x) => x.inside === 0) ?? map[0];
  return e ? { base: e.outside, count: e.count } : { base: 0, count: 0 };
}

/** Sets up, checks and tears down what contexts are given. One per agent. */
export class Delegations {
  readonly dir: string;
  readonly cgroupRoot: string;
  private readonly events: DelegationEvents;
  /** Labels being set up or torn down now: a second call for one waits for the first. */
  private readonly busy = new Map<string, Promise<unknown>>();

  /** Whether cgroup_root is the agent's own delegated cgroup (then the agent lives in a leaf of it). */
  private readonly ownCgroup: boolean;

  private readonly place: PinPlace;

  constructor(recordsDir: string, cgroupRoot: string, place: PinPlace, events: DelegationEvents = { hook: () => {}, failed: () => {} }) {
    this.dir = join(recordsDir, DELEGATIONS_DIR);
    this.place = place;
    const where = cgroupRootFor(cgroupRoot);
    this.cgroupRoot = where.root;
    this.ownCgroup = where.own;
    this.events = events;
  }

  /**
   * In its own delegated cgroup the agent moves into a leaf of it first, before it starts any
   * helper: a cgroup with processes cannot hand controllers to its children (the kernel's "no
   * internal processes" rule), and the contexts' limits need them. Returns where it went, or null.
   */
  settle(): string | null {
    if (!this.ownCgroup) return null;
    const leaf = join(this.cgroupRoot, AGENT_LEAF);
    try {
      mkdirSync(leaf, { mode: 0o755 });
      chmodSync(leaf, 0o755);
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') throw refused('cgroup', `make ${leaf}`, errnoOf(err));
    }
    try {
      writeFileSync(join(leaf, 'cgroup.procs'), `${process.pid}\n`);
    } catch (err) {
      throw refused('cgroup', `move the agent into ${leaf}`, errnoOf(err));
    }
    return leaf;
  }

  private recordPath(label: string): string {
    if (labelProblem(label) !== null) throw new Fault('invalid', `invalid label "${label}"`, { object: 'cgroup', label });
    return join(this.dir, `${label}.json`);
  }

  /** The record of a label, when there is one of this boot that reads as a record. */
  read(label: string): DelegationRecord | null {
    let data: unknown;
    try {
      data = JSON.parse(readFileSync(this.recordPath(label), 'utf8'));
    } catch {
      return null;
    }
    const r = v.safeParse(RECORD, data);
    if (!r.success || r.output.label !== label || r.output.boot !== BOOT_ID) return null;
    // Paths in it are acted on as root: each must still be one this agent could have written.
    const rec = r.output;
    if (rec.cgroup !== null && !this.isOurCgroup(rec.cgroup)) return null;
    return rec;
  }

  /** Labels with a record (of any boot, or unreadable: release cleans them). */
  labels(): string[] {
    try {
      return readdirSync(this.dir)
        .filter((n) => n.endsWith('.json') && !n.startsWith('.'))
        .map((n) => n.slice(0, -5))
        .filter((l) => labelProblem(l) === null)
        .sort();
    } catch {
      return [];
    }
  }

  private write(rec: DelegationRecord): void {
    makeDirs(this.dir, 0o700);
    writeFileAtomic(this.dir, `${rec.label}.json`, JSON.stringify(rec) + '\n', false);
  }

  private forget(label: string): void {
    try {
      unlinkSync(this.recordPath(label));
    } catch {
      /* none */
    }
  }

  /** A cgroup path under cgroup_root, without "..": a record naming anything else is not acted on. */
  private isOurCgroup(path: string): boolean {
    return path.startsWith(`${this.cgroupRoot}/`) && !path.split('/').includes('..');
  }

  /** One operation per label at a time (creation, reconcile, release). */
  private async serialized<T>(label: string, fn: () => Promise<T>): Promise<T> {
    for (let p = this.busy.get(label); p; p = this.busy.get(label)) await p.catch(() => undefined);
    const run = fn();
    this.busy.set(label, run);
    try {
      return await run;
    } finally {
      if (this.busy.get(label) === run) this.busy.delete(label);
    }
  }

  /**
   * Give a freshly pinned namespace what its context is given, exec_start last. Fails closed: what
   * was set up is torn down again and the error says what failed.
   */
  setUp(plan: DelegationPlan): Promise<void> {
    return this.serialized(plan.label, async () => {
      try {
        await this.fresh(plan, this.read(plan.label));
      } catch (err) {
        this.events.failed('set_up', plan.label, err);
        throw err;
      }
    });
  }

  /** Everything anew for this pin (what a record of another pin names goes first); undone whole if any step fails. */
  private async fresh(plan: DelegationPlan, old: DelegationRecord | null): Promise<void> {
    if (old) await this.tearDownRecord(old, false);
    const rec = this.emptyRecord(plan);
    try {
      await this.converge(plan, rec);
      await this.start(plan, rec);
    } catch (err) {
      await this.tearDownRecord(rec, true).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Bring a pinned context's delegations in line with its configuration (at start, for adopted
   * pins; at a reload that changed it): what is missing is set up again, what is no longer
   * configured is given back. A record of another pin is torn down and the context set up anew.
   * Returns what was repaired, for the log.
   */
  reconcile(plan: DelegationPlan | null, label: string): Promise<string[]> {
    return this.serialized(label, async () => {
      const rec = this.read(label);
      if (plan === null) {
        if (rec) await this.tearDownRecord(rec, false);
        else this.forget(label);
        return rec ? [`${label}: delegations no longer configured were given back`] : [];
      }
      if (rec === null || rec.ino !== plan.ino) {
        await this.fresh(plan, rec);
        return [`${label}: delegations set up for its pin`];
      }
      const done = await this.converge(plan, rec);
      return done.map((d) => `${label}: ${d}`);
    });
  }

  /**
   * What a release must refuse before anything is unmounted: a cgroup that holds processes, unless
   * the caller asked for them to be killed.
   */
  releaseProblem(label: string, kill: boolean): Fault | null {
    const rec = this.read(label);
    return !kill && rec?.cgroup && cgroupPopulated(rec.cgroup) ? busy(rec) : null;
  }

  /** At release: exec_stop, devices given back, the cgroup removed (killed first if asked); directories stay. */
  tearDown(label: string, kill: boolean): Promise<void> {
    return this.serialized(label, async () => {
      const rec = this.read(label);
      if (!rec) return this.forget(label);
      try {
        await this.tearDownRecord(rec, kill);
      } catch (err) {
        if (!(err instanceof Fault && err.kind === 'busy')) this.events.failed('tear_down', label, err);
        throw err;
      }
    });
  }

  /** Move a process into a context's cgroup (usernsctl enter): root writes it, as the kernel requires. */
  join(label: string, pid: number): void {
    const rec = this.read(label);
    if (!rec?.cgroup) throw new Fault('missing', `context "${label}" has no cgroup set up`, { object: 'cgroup', label });
    try {
      writeFileSync(join(rec.cgroup, 'cgroup.procs'), `${pid}\n`);
    } catch (err) {
      throw refused('cgroup', `move process ${pid} into ${rec.cgroup}`, errnoOf(err));
    }
  }

  /** Each delegated object of a context and its state now, for status. */
  inspect(label: string): DelegatedObject[] {
    const rec = this.read(label);
    if (!rec) return [];
    const out: DelegatedObject[] = [];
    if (rec.cgroup) {
      const st = lstatOrNull(rec.cgroup);
      out.push({
        kind: 'cgroup',
        path: rec.cgroup,
        state: st === null ? 'missing' : st.uid !== rec.root.uid ? `owned by uid ${st.uid}` : cgroupPopulated(rec.cgroup) ? 'in use' : 'empty',
      });
    }
    if (rec.netns) out.push({ kind: 'netns', path: rec.netns, state: netnsPinned(rec.netns) ? 'pinned' : 'missing' });
    if (rec.veth) out.push({ kind: 'veth', path: `${rec.veth}/${INNER_VETH}`, state: linkExists(rec.veth) ? 'present' : 'missing' });
    if (rec.tap) out.push({ kind: 'tap', path: rec.tap, state: linkExists(rec.tap) ? 'present' : 'missing' });
    for (const d of rec.devices) {
      const st = lstatOrNull(d.path);
      out.push({
        kind: 'device',
        path: d.path,
        state: st === null ? 'missing' : st.rdev !== d.rdev ? 'replaced (another device node)' : st.uid !== rec.root.uid ? `owned by uid ${st.uid}` : 'given',
      });
    }
    for (const p of rec.directories) {
      const st = lstatOrNull(p);
      out.push({ kind: 'directory', path: p, state: st === null || !st.isDirectory() ? 'missing' : st.uid !== rec.root.uid ? `owned by uid ${st.uid}` : 'ok' });
    }
    if (rec.execStop) out.push({ kind: 'hook', path: rec.execStop, state: rec.started ? 'runs at release' : 'not started' });
    return out;
  }

  private emptyRecord(plan: DelegationPlan): DelegationRecord {
    return {
      format: 1,
      boot: BOOT_ID,
      label: plan.label,
      ino: plan.ino,
      pin: plan.pin,
      root: plan.root,
      hostUid: [...plan.hostUid],
      hostGid: [...plan.hostGid],
      cgroup: null,
      netns: null,
      veth: null,
      tap: null,
      devices: [],
      directories: [],
      started: plan.delegate.execStart === null,
      execStop: plan.delegate.execStop,
      execTimeoutMs: plan.delegate.execTimeoutMs,
    };
  }

  /**
   * Make `rec` (what is set up) what `plan` asks for, the record written before each step so that a
   * crash leaves nothing it does not name. Returns what it changed.
   */
  private async converge(plan: DelegationPlan, rec: DelegationRecord): Promise<string[]> {
    const before = JSON.stringify(rec);
    const done: string[] = [];
    const d = plan.delegate;
    rec.execStop = d.execStop;
    rec.execTimeoutMs = d.execTimeoutMs;
    // Given back first: what is no longer configured.
    for (const dev of rec.devices.filter((x) => !d.devices.includes(x.path))) {
      this.giveBack(dev);
      rec.devices = rec.devices.filter((x) => x !== dev);
      this.write(rec);
      done.push(`gave ${dev.path} back`);
    }
    rec.directories = rec.directories.filter((p) => d.directories.includes(p)); // never removed, only forgotten
    if (rec.cgroup !== null && rec.cgroup !== plan.cgroup) {
      if (!cgroupPopulated(rec.cgroup)) {
        this.removeCgroup(rec.cgroup);
        done.push(`removed cgroup ${rec.cgroup}`);
        rec.cgroup = null;
      } else done.push(`left cgroup ${rec.cgroup}: it holds processes (usernsctl release --kill removes it)`);
    }
    if (plan.cgroup !== null && !(rec.cgroup === plan.cgroup && this.cgroupHeld(plan))) {
      const made = !exists(plan.cgroup);
      rec.cgroup = plan.cgroup;
      this.write(rec); // named before it is made
      this.makeCgroup(plan);
      if (made) done.push(`made cgroup ${plan.cgroup}`);
    }
    done.push(...(await this.convergeNetwork(plan, rec)));
    for (const path of d.devices) {
      const known = rec.devices.find((x) => x.path === path);
      const st = lstatOrNull(path);
      if (known && st && st.rdev === known.rdev && st.uid === plan.root.uid && st.gid === plan.root.gid) continue;
      const prior = known ?? this.deviceRecord(plan.label, path, st);
      if (!known) {
        rec.devices.push(prior);
        this.write(rec);
      }
      this.give(plan, path, prior);
      done.push(`gave ${path}`);
    }
    for (const path of d.directories) {
      if (makeOwnedDirectory(plan.label, path, plan.root)) done.push(`made ${path}`);
      if (!rec.directories.includes(path)) rec.directories.push(path);
    }
    if (JSON.stringify(rec) !== before) this.write(rec); // an adopted pin in order costs no write
    return done;
  }

  /**
   * A cgroup that is there as made, needing nothing: its directory and cgroup.procs the context
   * root's (two lstats; limits were written at its making, and its root cannot change them).
   */
  private cgroupHeld(plan: DelegationPlan): boolean {
    if (plan.delegate.cgroupLimits.length > 0) return false; // written again: a reload may have changed them
    for (const p of [plan.cgroup!, join(plan.cgroup!, 'cgroup.procs')]) {
      const st = lstatOrNull(p);
      if (st === null || st.uid !== plan.root.uid || st.gid !== plan.root.gid) return false;
    }
    return true;
  }

  /** The network namespace, its veth pair and the tap: what is no longer asked for goes first. */
  private async convergeNetwork(plan: DelegationPlan, rec: DelegationRecord): Promise<string[]> {
    const done: string[] = [];
    const d = plan.delegate;
    const veth = d.veth ? vethNames(plan.label).host : null;
    if (rec.tap !== null && rec.tap !== d.tap) {
      await deleteTap(plan.label, rec.tap);
      done.push(`deleted tap ${rec.tap}`);
      rec.tap = null;
      this.write(rec);
    }
    if (rec.veth !== null && rec.veth !== veth) {
      await deleteLink(plan.label, rec.veth);
      done.push(`deleted veth ${rec.veth}`);
      rec.veth = null;
      this.write(rec);
    }
    if (rec.netns !== null && rec.netns !== plan.netns) {
      await unpinNetns(rec.netns, this.place.mountNs);
      done.push(`removed network namespace ${rec.netns}`);
      rec.netns = null;
      this.write(rec);
    }
    if (plan.netns !== null && !netnsPinned(plan.netns)) {
      if (rec.netns === null && exists(plan.netns))
        throw new Fault('in-the-way', `${plan.netns} exists and is not the network namespace of "${plan.label}"`, {
          object: 'netns',
          label: plan.label,
          subject: plan.netns,
        });
      rec.netns = plan.netns;
      rec.veth = veth; // made with it, while its helper holds it (named first, for a crash)
      this.write(rec);
      await unpinNetns(plan.netns, this.place.mountNs); // an empty file a crash left
      await pinNetns({ label: plan.label, userPin: plan.pin, path: plan.netns, setgroups: plan.setgroups, veth: veth !== null, ...this.place });
      done.push(`made network namespace ${plan.netns}${veth !== null ? ` and veth ${veth}/${INNER_VETH}` : ''}`);
    } else if (veth !== null && plan.netns !== null && (rec.veth !== veth || !linkExists(veth))) {
      rec.veth = veth;
      this.write(rec);
      await addVeth(plan.label, plan.netns);
      done.push(`made veth ${veth}/${INNER_VETH}`);
    }
    if (d.tap !== null && (rec.tap !== d.tap || !linkExists(d.tap))) {
      if (rec.tap !== d.tap && linkExists(d.tap))
        throw new Fault('in-the-way', `tap ${d.tap} for "${plan.label}" exists already and is not this context's`, {
          object: 'tap',
          label: plan.label,
          subject: d.tap,
        });
      rec.tap = d.tap;
      this.write(rec);
      await addTap(plan.label, d.tap, plan.root);
      done.push(`made tap ${d.tap}`);
    }
    return done;
  }

  private async start(plan: DelegationPlan, rec: DelegationRecord): Promise<void> {
    if (plan.delegate.execStart === null) return;
    await this.runHook(rec, 'start', plan.delegate.execStart, plan.delegate.execTimeoutMs);
    rec.started = true;
    this.write(rec);
  }

  private async tearDownRecord(rec: DelegationRecord, kill: boolean): Promise<void> {
    // Refused before anything is undone: a release either happens whole or not at all.
    if (!kill && rec.cgroup && cgroupPopulated(rec.cgroup)) throw busy(rec);
    const problems: string[] = [];
    if (rec.started && rec.execStop) {
      try {
        await this.runHook(rec, 'stop', rec.execStop, rec.execTimeoutMs);
      } catch (err) {
        problems.push((err as Error).message); // the rest is given back anyway
      }
      rec.started = false;
    }
    for (const dev of [...rec.devices].reverse()) {
      try {
        this.giveBack(dev);
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
    rec.devices = [];
    for (const [what, undo] of [
      [rec.tap, () => deleteTap(rec.label, rec.tap!)],
      [rec.veth, () => deleteLink(rec.label, rec.veth!)],
      [rec.netns, () => unpinNetns(rec.netns!, this.place.mountNs)],
    ] as const) {
      if (what === null) continue;
      try {
        await undo();
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
    if (rec.cgroup) {
      if (cgroupPopulated(rec.cgroup)) await this.killCgroup(rec.cgroup);
      this.removeCgroup(rec.cgroup);
    }
    this.forget(rec.label);
    if (problems.length > 0)
      throw new Fault('refused', `released "${rec.label}", but: ${problems.join('; ')}`, { object: 'cgroup', label: rec.label, step: 'tear down' });
  }

  // ---- cgroups ----

  /** cgroup_root itself: made in a cgroup v2 hierarchy, root's. */
  private ensureRoot(): void {
    if (isCgroup2(this.cgroupRoot)) return;
    const parent = dirname(this.cgroupRoot);
    if (!isCgroup2(parent))
      throw new Fault('unsupported', `cgroup_root ${this.cgroupRoot} is not in a cgroup v2 hierarchy (${parent} has no cgroup.controllers)`, {
        object: 'cgroup-root',
        subject: this.cgroupRoot,
      });
    try {
      mkdirSync(this.cgroupRoot, { mode: 0o755 });
      chmodSync(this.cgroupRoot, 0o755); // whatever the umask (the unit's is 0077)
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') throw refused('cgroup-root', `make cgroup_root ${this.cgroupRoot}`, errnoOf(err));
    }
  }

  private makeCgroup(plan: DelegationPlan): void {
    const path = plan.cgroup!;
    if (dirname(path) === this.cgroupRoot) this.ensureRoot();
    const parent = dirname(path);
    if (!isCgroup2(parent))
      throw new Fault(
        'unsupported',
        `the cgroup of "${plan.label}" would be made under ${parent}, which is not a cgroup v2 directory (is its parent's cgroup gone?)`,
        {
          object: 'cgroup',
          label: plan.label,
          subject: parent,
        },
      );
    try {
      mkdirSync(path, { mode: 0o755 });
      // Its exact mode whatever the umask (the unit's 0077 would leave it 0700: then, chowned, not
      // even the agent could look inside without CAP_DAC_OVERRIDE).
      chmodSync(path, 0o755);
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') throw refused('cgroup', `make cgroup ${path}`, errnoOf(err), { label: plan.label });
      const st = lstatSync(path);
      if (!st.isDirectory() || !isCgroup2(path))
        throw new Fault('in-the-way', `${path} exists and is not a cgroup`, { object: 'cgroup', label: plan.label, subject: path });
    }
    // Limits are written by root before the directory is handed over: its new owner cannot raise them.
    for (const { file, value } of plan.delegate.cgroupLimits) {
      const controller = file.split('.')[0];
      if (!readWords(join(parent, 'cgroup.controllers')).includes(controller))
        throw new Fault(
          'unsupported',
          `cannot set ${file} for "${plan.label}": the ${controller} controller is not available in ${parent} (cgroup.controllers lists: ${readWords(join(parent, 'cgroup.controllers')).join(' ') || 'nothing'})`,
          { object: 'cgroup', label: plan.label, subject: parent },
        );
      if (!readWords(join(parent, 'cgroup.subtree_control')).includes(controller)) {
        try {
          writeFileSync(join(parent, 'cgroup.subtree_control'), `+${controller}`);
        } catch (err) {
          throw refused('cgroup', `enable the ${controller} controller in ${parent}`, errnoOf(err), { label: plan.label });
        }
      }
      try {
        writeFileSync(join(path, file), value);
      } catch (err) {
        throw refused('cgroup', `write ${file} = ${value}`, errnoOf(err), { label: plan.label });
      }
    }
    const files = readWords('/sys/kernel/cgroup/delegate');
    // The files first, the directory last: until then it is root's to look into.
    for (const name of [...(files.length > 0 ? files : DELEGATE_FILES_FALLBACK), '']) {
      const p = name === '' ? path : join(path, name);
      if (name !== '' && !exists(p)) continue;
      try {
        lchownSync(p, plan.root.uid, plan.root.gid);
      } catch (err) {
        throw refused('cgroup', `hand ${p} to the root of "${plan.label}"`, errnoOf(err));
      }
      const st = lstatSync(p);
      if (st.uid !== plan.root.uid || st.gid !== plan.root.gid)
        throw new Fault('refused', `Failed to hand ${p} to the root of "${plan.label}": it stays ${st.uid}:${st.gid} after chown`, {
          object: 'cgroup',
          label: plan.label,
          step: 'chown',
        });
    }
  }

  /** cgroup.kill (Linux 5.14), then wait for the processes to be gone. */
  private async killCgroup(path: string): Promise<void> {
    try {
      writeFileSync(join(path, 'cgroup.kill'), '1');
    } catch (err) {
      throw refused('cgroup', `kill the processes of ${path}`, errnoOf(err));
    }
    const until = Date.now() + KILL_WAIT_MS;
    while (cgroupPopulated(path)) {
      if (Date.now() > until)
        throw new Fault('busy', `the processes of ${path} are still there ${KILL_WAIT_MS} ms after cgroup.kill`, {
          object: 'cgroup',
          step: 'kill',
          subject: path,
        });
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** rmdir, deepest first: the cgroups its root made inside go with it. */
  private removeCgroup(path: string, depth = 0): void {
    if (depth > MAX_CGROUP_DEPTH) throw new Fault('refused', `${path} is nested more than ${MAX_CGROUP_DEPTH} deep`, { object: 'cgroup', step: 'remove' });
    let entries;
    try {
      entries = readdirSync(path, { withFileTypes: true });
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return;
      throw refused('cgroup', `read cgroup ${path}`, errnoOf(err));
    }
    for (const e of entries) if (e.isDirectory()) this.removeCgroup(join(path, e.name), depth + 1);
    try {
      rmdirSync(path);
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw refused('cgroup', `remove cgroup ${path}`, errnoOf(err));
    }
  }

  // ---- devices ----

  private deviceRecord(label: string, path: string, st: Stats | null): DelegationRecord['devices'][number] {
    if (st === null) throw new Fault('misconfigured', `device ${path} for "${label}" does not exist`, { object: 'device', label, subject: path });
    if (!st.isCharacterDevice() && !st.isBlockDevice())
      throw new Fault(
        'misconfigured',
        `${path} for "${label}" is not a device node${st.isSymbolicLink() ? ' (a symlink is not followed: name the node itself)' : ''}`,
        {
          object: 'device',
          label,
          subject: path,
        },
      );
    return { path, rdev: st.rdev, uid: st.uid, gid: st.gid, mode: st.mode & 0o7777 };
  }

  private give(plan: DelegationPlan, path: string, prior: DelegationRecord['devices'][number]): void {
    let given: boolean;
    try {
      // The owner's read and write bits set; a node that has them keeps its mode.
      given = setNodeOwner(
        path,
        (st) => st.rdev === prior.rdev,
        plan.root,
        (st) => ((st.mode & 0o600) !== 0o600 ? (st.mode & 0o7777) | 0o600 : null),
      );
    } catch (err) {
      throw refused('device', `give ${path} to the root of "${plan.label}"`, errnoOf(err));
    }
    if (!given)
      throw new Fault('in-the-way', `device ${path} for "${plan.label}" is missing or was replaced by another node`, {
        object: 'device',
        label: plan.label,
        subject: path,
      });
  }

  /** The node's owner and mode as they were; a node replaced meanwhile (udev) is left alone. */
  private giveBack(dev: DelegationRecord['devices'][number]): void {
    try {
      setNodeOwner(
        dev.path,
        (now) => now.rdev === dev.rdev,
        dev,
        () => dev.mode,
      );
    } catch (err) {
      throw refused('device', `give ${dev.path} back to uid ${dev.uid}`, errnoOf(err));
    }
  }

  // ---- directories ----

  // ---- hooks ----

  private runHook(rec: DelegationRecord, hook: 'start' | 'stop', path: string, timeoutMs: number): Promise<void> {
    const problem = hookProblem(path);
    if (problem)
      return Promise.reject(
        new Fault('misconfigured', `exec_${hook} of "${rec.label}" is not run: ${problem}`, { object: 'hook', label: rec.label, subject: path }),
      );
    const uid = baseOf(rec.hostUid);
    const gid = baseOf(rec.hostGid);
    const env: Record<string, string> = {
      ...PATH_ENV,
      USERNS_LABEL: rec.label,
      USERNS_HOOK: hook,
      USERNS_PIN: rec.pin,
      USERNS_ROOT_UID: String(rec.root.uid),
      USERNS_ROOT_GID: String(rec.root.gid),
      USERNS_UID_BASE: String(uid.base),
      USERNS_UID_COUNT: String(uid.count),
      USERNS_GID_BASE: String(gid.base),
      USERNS_GID_COUNT: String(gid.count),
      USERNS_UID_MAP: formatExtents(rec.hostUid),
      USERNS_GID_MAP: formatExtents(rec.hostGid),
      ...(rec.cgroup ? { USERNS_CGROUP: rec.cgroup } : {}),
    };
    const started = performance.now();
    return new Promise((resolve, reject) => {
      const child = spawn(path, [], { env, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL' });
      let output = '';
      let dropped = 0;
      const take = (d: Buffer) => {
        const room = HOOK_OUTPUT_BYTES - output.length;
        if (room > 0) output += d.toString('utf8', 0, Math.min(room, d.length));
        dropped += Math.max(0, d.length - Math.max(room, 0));
      };
      child.stdout.on('data', take);
      child.stderr.on('data', take);
      child.on('error', (err) =>
        reject(
          new Fault('misconfigured', `exec_${hook} ${path} of "${rec.label}" could not run: ${errnoOf(err)}`, {
            object: 'hook',
            label: rec.label,
            errno: errnoOf(err),
          }),
        ),
      );
      child.on('close', (code, signal) => {
        const ms = +(performance.now() - started).toFixed(1);
        const text = output.trim() + (dropped > 0 ? `\n(${dropped} more bytes of output dropped)` : '');
        this.events.hook({ label: rec.label, hook, path, code, signal, output: text, ms });
        if (code === 0) return resolve();
        const why = signal
          ? `was killed (${signal}${signal === 'SIGKILL' && ms >= timeoutMs ? `, after its exec_timeout of ${timeoutMs / 1000} s` : ''})`
          : `exited with ${code}`;
        reject(
          new Fault(
            'misconfigured',
            `exec_${hook} ${path} of "${rec.label}" ${why}${text ? `: ${text.split('\n').slice(-1)[0]}` : ''} (its output is in the agent log)`,
            {
              object: 'hook',
              label: rec.label,
              step: 'run',
            },
          ),
        );
      });
    });
  }
}

// User namespaces in the kernel (SPEC §5): create from a context, pin, adopt at start, release.
import { lstatSync, readdirSync, readFileSync, readlinkSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { composeMaps, formatExtents, kernelMapText, parseKernelMap, sameMap } from '../../config/extents.ts';
import type { HostMaps } from '../../config/judge.ts';
import { labelProblem } from '../../config/schema.ts';
import { HOST_LABEL } from '../../config/types.ts';
import type { Context, IdMap } from '../../config/types.ts';
import { errnoOf, Fault, refused } from '../fault.ts';
import { fromHost, makeView } from '../idmap.ts';
import { SysError } from './ffi.ts';
import { HELPERS_DIR } from './helper.ts';
import { kernelError } from './spawn.ts';
import type { Spawner, SpawnerSetting } from './spawner.ts';
import { namespaceMaker } from './makers.ts';
import type { Holder, NamespaceMaker, ParentPin } from './makers.ts';
import { lstatOrNull, makeDirs } from './files.ts';
import { holdAnew } from './hold.ts';
import { markRecordFormat, NSFS_DEV, pinnedIno, pinsDirectories, RECORDS_DIR, recordedMaps, writePinRecord } from './pinrecord.ts';
import { bindMount, closeFd, detach, makeEmptyFile, openDirPath, parentNsIno, statAt } from './sys.ts';

export { pinnedIno, pinnedMaps } from './pinrecord.ts';

export type Pin = {
  readonly label: string;
  readonly path: string;
  /** The namespace's nsfs inode: what `lsns` and /proc/PID/ns/user show. */
  readonly ino: number;
  /** Maps as configured: outside ids are the parent's. */
  readonly uidMap: IdMap;
  readonly gidMap: IdMap;
  /** Whether this call created the namespace (false: it was already pinned). */
  readonly created: boolean;
};

export type AdoptStatus = 'ok' | 'drift' | 'orphan' | 'removed' | 'foreign';
export type AdoptEntry = {
  readonly label: string;
  readonly path: string;
  readonly status: AdoptStatus;
  readonly message: string;
  readonly actual?: { uidMap: IdMap; gidMap: IdMap };
};

/** How old a pin check may be and still answer a resolve (see Namespaces.checked). */
export const PIN_RECHECK_MS = 1;
/**
 * How old the look at the pins' directories may be before a creation looks again (ensureDirs). A
 * directory removed meanwhile is not waited for: the pin file's creation fails and looks at once.
 */
const DIRS_RECHECK_MS = 1000;

function verifiedKey(ino: number, maps: { uidMap: IdMap; gidMap: IdMap }): string {
  return `${ino} ${formatExtents(maps.uidMap)} / ${formatExtents(maps.gidMap)}`;
}

/**
 * The mount namespace pins must be mounted in, or null for the agent's own. `auto`: init's when the
 * agent runs in another one — systemd's ProtectSystem= gives a service a private (slave) mount
 * namespace, and a mount made there never reaches the host.
 */
export function pinMountNamespace(setting: string): string | null {
  if (setting === 'self') return null;
  if (setting !== 'auto') return setting;
  try {
    return readlinkSync('/proc/1/ns/mnt') === readlinkSync('/proc/self/ns/mnt') ? null : '/proc/1/ns/mnt';
  } catch {
    return null; // init's namespace is not visible to us (a container): ours is the one
  }
}

export type { ParentPin } from './makers.ts';

export type NamespacesOptions = {
  readonly pinsDir: string;
  /** Where pins are mounted: null for the agent's own mount namespace (see pinMountNamespace). */
  readonly mountNs?: string | null;
  /** Who makes namespaces: usernsd-spawner, or a fork of the agent each (see useNativeSpawner). */
  readonly spawner?: SpawnerSetting;
  /**
   * Run after a namespace is pinned and recorded, before anyone is given it (the context's
   * delegations): if it fails, the pin is released again and the creation fails with its error.
   */
  readonly onPinned?: (ctx: Context, pin: Pin) => Promise<void>;
  /** The maker itself, for a test that stands between it and the checks here; else the one `spawner` says. */
  readonly maker?: NamespaceMaker;
};

/** Owns the pins directory and the per-pin records that make adoption fast. */
export class Namespaces {
  readonly pinsDir: string;
  readonly recordsDir: string;
  readonly mountNs: string | null;
  private readonly inflight = new Map<string, Promise<Pin>>();
  /**
   * Pins this process created or checked, by label: resolving one again costs one stat (so a pin
   * unmounted behind the agent's back is seen at the next resolve). The maps are part of the key,
   * so a reload that changes a context's maps checks again; `ctx` and `pin` are the last answer,
   * reused while the inode and the Context object are the same.
   */
  private readonly verified = new Map<string, { key: string; ino: number; parentIno: number | null; ctx: Context; pin: Pin; checkedAt: number }>();
  private readonly paths = new Map<string, string>();
  /** The pins directory as join() writes it, with a "/" after it. */
  private readonly pinsPrefix: string;
  /** Pinned namespaces by nsfs inode, for callers inside them (entries checked against `verified`). */
  private readonly byIno = new Map<number, string>();
  /** The pins directory, opened once: a pin is checked with one single-component fstatat. */
  private dirFd: number | null = null;
  /** Who makes the namespaces: usernsd-spawner, or a process forked per namespace. */
  readonly maker: NamespaceMaker;
  /** Labels whose pin was found with other maps than configured (at adoption or a resolve), until released or checked good. */
  readonly drifted = new Set<string>();
  /** The records directory says its format (written once per directory made). */
  private formatMarked = false;
  /**
   * While held (holdRecords: a start's eager creations), a pin's record waits here, by label, to be
   * written once the agent serves. A record is a cache of the pin's maps (a pin without one has
   * them read from the kernel), so a record not written yet costs a later start time, never a
   * wrong answer; a pin made again or released meanwhile takes its label's place here.
   */
  private recordsHeld = false;
  private readonly unwritten = new Map<string, Pin>();
  /** When the pins' directories were last looked at (ensureDirs). */
  private dirsCheckedAt = -Infinity;
  private readonly onPinned: (ctx: Context, pin: Pin) => Promise<void>;

  constructor(opts: NamespacesOptions) {
    this.pinsDir = opts.pinsDir;
    this.recordsDir = join(this.pinsDir, RECORDS_DIR);
    this.pinsPrefix = join(this.pinsDir, '/');
    this.mountNs = opts.mountNs ?? null;
    this.maker = opts.maker ?? namespaceMaker(opts.spawner ?? 'auto', this.mountNs, this.pinsDir);
    this.onPinned = opts.onPinned ?? (() => Promise.resolve());
  }

  /** usernsd-spawner, when it makes the namespaces (null: a process forked per namespace). */
  get spawner(): Spawner | null {
    return this.maker.spawner;
  }

  /** Ends usernsd-spawner, if it runs (it also ends with the agent). */
  close(): void {
    this.maker.close();
  }

  pinPath(label: string): string {
    let path = this.paths.get(label);
    if (path === undefined) {
      // Labels are validated by the configuration, but a path built from one is checked again here.
      const problem = labelProblem(label);
      if (problem) throw new Fault('invalid', `invalid label "${label}": ${problem}`, { object: 'pin', label });
      path = this.pinsPrefix + label; // join(pinsDir, label) for a valid label, without normalizing at each
      if (this.paths.size < 100_000) this.paths.set(label, path);
    }
    return path;
  }

  /** The answer for a pin already checked, at the price of one fstatat; null when it must be looked at again. */
  known(ctx: Context, parent: ParentPin | null): Pin | null {
    const v = this.verified.get(ctx.label);
    if (v === undefined || v.ctx !== ctx || v.parentIno !== (parent?.ino ?? null)) return null;
    // An answer is "as of at most PIN_RECHECK_MS ago": under load, one fstatat serves many resolves
    // (the pin could be unmounted right after any check anyway).
    const now = performance.now();
    if (now - v.checkedAt < PIN_RECHECK_MS) return v.pin;
    if (this.dirFd === null) {
      try {
        this.dirFd = openDirPath(this.pinsDir);
      } catch {
        return null;
      }
    }
    const st = statAt(this.dirFd, ctx.label);
    if (st === null || st.dev !== NSFS_DEV || st.ino !== v.ino) return null;
    v.checkedAt = now;
    return v.pin;
  }

  /** The label whose pin, as last checked, is this nsfs inode (a caller's namespace), or null. */
  labelOfIno(ino: number): string | null {
    const label = this.byIno.get(ino);
    return label !== undefined && this.verified.get(label)?.ino === ino ? label : null;
  }

  private remember(ctx: Context, pin: Pin, parentIno: number | null): Pin {
    this.byIno.set(pin.ino, ctx.label);
    const reused = pin.created ? { ...pin, created: false } : pin;
    this.verified.set(ctx.label, { key: verifiedKey(pin.ino, ctx), ino: pin.ino, parentIno, ctx, pin: reused, checkedAt: performance.now() });
    return pin;
  }

  /**
   * Why a nested pin does not belong under its parent's pin, or null when it does. A parent
   * released (or lost) and created anew leaves the old child inside the old parent namespace.
   */
  private parentProblem(label: string, path: string, parent: { label: string; ino: number | null } | null): string | null {
    if (parent === null) return null;
    if (parent.ino === null) return `its parent "${parent.label}" is not pinned`;
    const actual = parentNsIno(path);
    if (actual !== parent.ino)
      return `its namespace lies in user:[${actual}], not in its parent "${parent.label}"'s pinned user:[${parent.ino}] (the parent was released or created anew)`;
    return null;
  }

  /**
   * Directories are made once, and must be real directories: a symlink planted there is refused.
   * Made again (removed behind the agent's back), they are held again: the agent's lock went with
   * them (kernel/hold.ts), and another agent could otherwise take the new ones beside it.
   */
  private ensureDirs(force = false): void {
    // Under a burst of creations, two lstats serve many (DIRS_RECHECK_MS): each walks a directory of
    // thousands of mounts while others are mounted. A directory removed meanwhile fails the pin
    // file's creation, which looks again (pinFile).
    const now = performance.now();
    if (!force && now - this.dirsCheckedAt < DIRS_RECHECK_MS) return;
    let made = false;
    const dirs = pinsDirectories(this.pinsDir);
    for (const [dir, mode] of dirs) {
      if (lstatOrNull(dir)?.isDirectory()) continue; // the common case: one lstat, no mkdir
      makeDirs(dir, mode);
      made = true;
      if (!lstatSync(dir).isDirectory()) throw new Fault('in-the-way', `${dir} is not a directory (a symlink?)`, { object: 'directory', subject: dir });
    }
    if (made) {
      holdAnew(dirs, 'pins directory');
      this.formatMarked = false; // the format marker went with them
    }
    if (!this.formatMarked) markRecordFormat(this.recordsDir);
    this.formatMarked = true;
    this.dirsCheckedAt = now;
  }

  /**
   * The context's namespace, created and pinned if it is not pinned yet. Concurrent calls for one
   * label share one creation. `parent` is the parent's pin and host maps (null under host).
   */
  ensure(ctx: Context, parent: ParentPin | null): Promise<Pin> {
    const known = this.known(ctx, parent); // the common case: no promise chain, no map formatting
    if (known) return Promise.resolve(known);
    const existing = this.inflight.get(ctx.label);
    if (existing) return existing.then((p) => ({ ...p, created: false }));
    const p = this.createOrReuse(ctx, parent).finally(() => this.inflight.delete(ctx.label));
    this.inflight.set(ctx.label, p);
    return p;
  }

  private async createOrReuse(ctx: Context, parent: ParentPin | null): Promise<Pin> {
    // The slow path: look by name from scratch, and reopen the directory (it may have been replaced).
    if (this.dirFd !== null) {
      closeFd(this.dirFd);
      this.dirFd = null;
    }
    const path = this.pinPath(ctx.label);
    this.ensureDirs();
    // The pin file first (exclusively): made, nothing is pinned there and the namespace is made for it (a
    // creation asks the kernel once by this name, not twice); there already, a pin to check and reuse.
    const ino = this.pinFile(ctx.label, path);
    if (ino !== null) {
      // Reuse only a pin whose maps are the configured ones, under its parent's pin: a drifted pin is
      // reported, never used.
      const v = this.verified.get(ctx.label);
      if (v?.key !== verifiedKey(ino, ctx) || v.parentIno !== (parent?.ino ?? null)) {
        const actual = await this.mapsOf(ctx.label, path, ino);
        if (!sameMap(actual.uidMap, ctx.uidMap) || !sameMap(actual.gidMap, ctx.gidMap)) {
          this.drifted.add(ctx.label);
          throw new Fault('drift', `pin ${path} maps differ from the configuration of "${ctx.label}" (drift)`, { object: 'pin', label: ctx.label });
        }
        const why = this.parentProblem(ctx.label, path, parent && { label: ctx.parent, ino: parent.ino });
        if (why) {
          this.drifted.add(ctx.label);
          throw new Fault('drift', `pin ${path} is not nested in its parent's pin (drift): ${why}`, { object: 'pin', label: ctx.label });
        }
        this.drifted.delete(ctx.label);
      }
      return this.remember(ctx, { label: ctx.label, path, ino, uidMap: ctx.uidMap, gidMap: ctx.gidMap, created: false }, parent?.ino ?? null);
    }
    return this.create(ctx, parent, path);
  }

  /**
   * Made by the maker, then checked, pinned and recorded here: the same whichever made it. `path` is
   * the pin file pinFile made, removed again when nothing gets mounted on it.
   */
  private async create(ctx: Context, parent: ParentPin | null, path: string): Promise<Pin> {
    let holder: Holder | null = null;
    let mounted = false;
    try {
      const owner = this.ownerInParent(ctx, parent);
      holder = await this.maker.make({ label: ctx.label, ...owner, setgroups: ctx.setgroups, uidMap: ctx.uidMap, gidMap: ctx.gidMap, parent });
      this.verifyMaps(ctx, holder, parent?.host ?? null);
      await this.mountPin(ctx.label, holder, path);
      mounted = true;
      // Mounted from the holder's namespace: the pin shows its inode (looked at here when the maker did not).
      const ino = holder.ino ?? pinnedIno(path)!;
      const pin: Pin = { label: ctx.label, path, ino, uidMap: ctx.uidMap, gidMap: ctx.gidMap, created: true };
      this.writeRecord(pin);
      try {
        await this.onPinned(ctx, pin);
      } catch (err) {
        await this.release(ctx.label).catch(() => undefined); // fail closed: no pin without what it is given
        throw err;
      }
      return this.remember(ctx, pin, parent?.ino ?? null);
    } finally {
      if (!mounted) rmSync(path, { force: true }); // ours (pinFile's); one removed meanwhile is no second failure
      await holder?.end();
    }
  }

  /** The owner's uid and gid as the parent namespace sees them (the host's for a top-level context). */
  private ownerInParent(ctx: Context, parent: ParentPin | null): { uid: number; gid: number } {
    if (parent === null) return { uid: ctx.owner.uid, gid: ctx.owner.gid };
    const view = makeView('parent', { mode: 'none', anonuid: 0, anongid: 0 }, parent.host.uid, parent.host.gid);
    const uid = ctx.owner.uid === 0 ? 0 : fromHost(view, 'uid', ctx.owner.uid);
    const gid = ctx.owner.uid === 0 ? 0 : fromHost(view, 'gid', ctx.owner.gid);
    if (uid === null || gid === null) {
      throw new Fault('misconfigured', `owner ${ctx.owner.name ?? ctx.owner.uid} of context "${ctx.label}" is not mapped in parent "${ctx.parent}"`, {
        object: 'namespace',
        label: ctx.label,
        step: "map the owner's ids",
      });
    }
    return { uid, gid };
  }

  /**
   * The maps as the kernel holds them, against the configuration: as the maker read them back, or
   * read here. Either way from the initial namespace, where a nested namespace shows host ids.
   */
  private verifyMaps(ctx: Context, holder: Holder, parentHost: HostMaps | null): void {
    const want = parentHost
      ? { uid: composeMaps(ctx.uidMap, parentHost.uid), gid: composeMaps(ctx.gidMap, parentHost.gid) }
      : { uid: ctx.uidMap, gid: ctx.gidMap };
    for (const kind of ['uid', 'gid'] as const) {
      const read = holder.maps?.[kind === 'uid' ? 'uidMap' : 'gidMap'];
      const got = read ?? parseKernelMap(readFileSync(`/proc/${holder.pid}/${kind}_map`, 'utf8'));
      if (!sameMap(got, want[kind])) {
        throw new Fault(
          'refused',
          `Failed to verify the ${kind} map of context "${ctx.label}": the kernel holds "${kernelMapText(got).trim()}", not the configured map`,
          {
            object: 'namespace',
            label: ctx.label,
            step: `verify the ${kind} map`,
          },
        );
      }
    }
  }

  /**
   * The pin file of `label` made (exclusively, a symbolic link not followed; empty: null), or the
   * inode of the namespace already pinned there: one bind mount goes on it (mountPin), never a
   * stacked mount. A pins directory gone since it was last looked at is made (and held) again,
   * once; an empty file left by a crash between a pin file's making and its mount is removed;
   * anything else in the way is refused.
   */
  private pinFile(label: string, path: string, looked = false): number | null {
    try {
      makeEmptyFile(path, 0o444);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && !looked) {
        this.ensureDirs(true);
        return this.pinFile(label, path, true);
      }
      const ino = code === 'EEXIST' ? pinnedIno(path) : null;
      if (ino !== null) return ino;
      const st = code === 'EEXIST' ? lstatOrNull(path) : null;
      if (st?.isSymbolicLink()) throw new Fault('in-the-way', `${path} is a symbolic link, not a pin`, { object: 'pin', label, subject: path });
      if (st?.isFile() && st.size === 0) {
        unlinkSync(path);
        return this.pinFile(label, path, looked);
      }
      throw refused('pin', `create pin ${path}`, errnoOf(err), { label, subject: path });
    }
    return null;
  }

  /** The holder's namespace mounted on its pin file (here, or in the spawner's mount namespace). */
  private async mountPin(label: string, holder: Holder, path: string): Promise<void> {
    try {
      if (this.mountNs === null) bindMount(`/proc/${holder.pid}/ns/user`, path);
      else await holder.pin(path);
    } catch (err) {
      if (err instanceof Fault) throw err;
      throw kernelError(label, 'pin the namespace', err instanceof SysError ? err.code : 'EIO', path);
    }
  }

  /** One layer of a pin unmounted, here or in the pins' mount namespace (from where it propagates back). */
  private async unmountPin(label: string, path: string): Promise<boolean> {
    return this.mountNs === null ? detach(path) : this.maker.unpin(label, path);
  }

  /** Pins' records wait (in `unwritten`) until writeHeldRecords: each costs an open, a write and a rename. */
  holdRecords(): void {
    this.recordsHeld = true;
  }

  /** Records waiting to be written. */
  get recordsUnwritten(): number {
    return this.unwritten.size;
  }

  /**
   * The records held written, `piece` at a time with the event loop running between pieces (all at
   * once without `piece`); from then on, each record is written as its pin is made. What could not
   * be written is counted and said by its first error (its pins' maps come from the kernel).
   */
  async writeHeldRecords(piece = Infinity): Promise<{ written: number; failed: number; error: string | null }> {
    this.recordsHeld = false;
    const out = { written: 0, failed: 0, error: null as string | null };
    while (this.unwritten.size > 0) {
      let n = 0;
      for (const [label, pin] of this.unwritten) {
        if (n++ >= piece) break;
        this.unwritten.delete(label);
        try {
          this.writeRecord(pin);
          out.written++;
        } catch (err) {
          out.failed++;
          out.error ??= `${pin.path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`;
        }
      }
      if (this.unwritten.size > 0) await new Promise((r) => setImmediate(r));
    }
    return out;
  }

  /** The records directory may be gone (removed with /run's contents, or by hand): made again. */
  private writeRecord(pin: Pin): void {
    if (this.recordsHeld) {
      this.unwritten.set(pin.label, pin);
      return;
    }
    this.unwritten.delete(pin.label);
    try {
      writePinRecord(this.recordsDir, pin.label, pin.ino, pin);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      this.formatMarked = false;
      this.ensureDirs(true);
      writePinRecord(this.recordsDir, pin.label, pin.ino, pin);
    }
  }

  /**
   * A pinned namespace's maps: from the record written at creation when it names this inode, else
   * from the kernel (a helper process), and then recorded so the next start-up need not ask again.
   */
  private async mapsOf(label: string, path: string, ino: number): Promise<{ uidMap: IdMap; gidMap: IdMap }> {
    const held = this.unwritten.get(label);
    const recorded = held?.ino === ino ? { uidMap: held.uidMap, gidMap: held.gidMap } : recordedMaps(this.recordsDir, label, ino);
    if (recorded) return recorded;
    const actual = await this.maker.maps(label, path);
    this.writeRecord({ label, path, ino, ...actual, created: false });
    return actual;
  }

  /** Lazy unmount and unlink; idempotent; unmounts every layer so nothing is left stacked. */
  async release(label: string): Promise<boolean> {
    const path = this.pinPath(label);
    let any = false;
    for (let i = 0; i < 64 && pinnedIno(path) !== null; i++) any = (await this.unmountPin(label, path)) || any;
    try {
      unlinkSync(path);
      any = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw refused('pin', `remove pin ${path}`, errnoOf(err), { subject: path });
    }
    this.unwritten.delete(label);
    try {
      unlinkSync(join(this.recordsDir, `${label}.json`));
    } catch {
      /* no record */
    }
    const v = this.verified.get(label);
    if (v && this.byIno.get(v.ino) === label) this.byIno.delete(v.ino);
    this.verified.delete(label);
    this.drifted.delete(label);
    return any;
  }

  /**
   * Start-up reconciliation: every pin checked against the configuration. The record written at
   * creation answers for pins whose inode it knows; only unknown pins cost a helper process.
   */
  async adopt(contexts: ReadonlyMap<string, Context>): Promise<AdoptEntry[]> {
    let names: string[];
    try {
      names = readdirSync(this.pinsDir);
    } catch {
      return [];
    }
    const out: AdoptEntry[] = [];
    for (const label of names.sort()) {
      const path = join(this.pinsDir, label);
      if (label === HELPERS_DIR || label === RECORDS_DIR) continue;
      if (labelProblem(label) !== null || label.startsWith('.')) {
        out.push({ label, path, status: 'foreign', message: `${path} is not a pin name: left alone` });
        continue;
      }
      const ino = pinnedIno(path);
      if (ino === null) {
        const st = lstatSync(path);
        if (st.isFile() && st.size === 0) {
          unlinkSync(path);
          out.push({ label, path, status: 'removed', message: `${path} had nothing mounted on it (left by a crash): removed` });
        } else {
          out.push({ label, path, status: 'foreign', message: `${path} is not a pinned namespace: left alone` });
        }
        continue;
      }
      const ctx = contexts.get(label);
      if (!ctx) {
        out.push({
          label,
          path,
          status: 'orphan',
          message: `${path} is pinned but no context "${label}" is configured: left alone (usernsctl release ${label} removes it)`,
        });
        continue;
      }
      const actual = await this.mapsOf(label, path, ino);
      const parentIno = ctx.parent === HOST_LABEL ? null : pinnedIno(this.pinPath(ctx.parent));
      const parentWhy = ctx.parent === HOST_LABEL ? null : this.parentProblem(label, path, { label: ctx.parent, ino: parentIno });
      if (!sameMap(actual.uidMap, ctx.uidMap) || !sameMap(actual.gidMap, ctx.gidMap)) {
        this.drifted.add(label);
        out.push({
          label,
          path,
          status: 'drift',
          message: `${path} maps differ from the configuration: not used until released (usernsctl release ${label})`,
          actual: { uidMap: actual.uidMap, gidMap: actual.gidMap },
        });
      } else if (parentWhy) {
        this.drifted.add(label);
        out.push({
          label,
          path,
          status: 'drift',
          message: `${path} is not nested in its parent's pin: ${parentWhy}; not used until released (usernsctl release ${label})`,
        });
      } else {
        this.remember(ctx, { label, path, ino, uidMap: ctx.uidMap, gidMap: ctx.gidMap, created: false }, parentIno);
        out.push({ label, path, status: 'ok', message: 'pinned, maps as configured' });
      }
    }
    return out;
  }
}

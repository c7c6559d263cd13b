// Who makes user namespaces, one strategy each: usernsd-spawner (native/usernsd-spawner.c, one
// process kept) or a process forked from the agent per namespace (spawner = node, for a build
// without a C compiler). Both hand back a holder — a process in the new namespace, its maps
// written — and work in the pins' mount namespace; what is done with a namespace once made (checked,
// pinned, recorded) is the caller's, the same whichever made it.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { kernelMapText, parseKernelMap } from '../../config/extents.ts';
import type { HostMaps } from '../../config/judge.ts';
import type { IdMap } from '../../config/types.ts';
import { errnoOf, Fault } from '../fault.ts';
import { HelperPrograms, rootOf } from './helper.ts';
import { pinnedIno } from './pinrecord.ts';
import { errnoFromText, kernelError, PATH_ENV, reap, run, waitForNewNamespace } from './spawn.ts';
import { Spawner, useNativeSpawner } from './spawner.ts';
import type { SpawnerSetting, SpawnRequest } from './spawner.ts';

/** A nested context's parent, as its creation and checks need it: pin path, nsfs inode, host maps. */
export type ParentPin = { readonly pin: string; readonly ino: number; readonly host: HostMaps };

/** A namespace to make: what usernsd-spawner is asked (the owner's ids as the parent sees them, the maps), with the parent's pin whole (null: the host). */
export type MakeRequest = Omit<SpawnRequest, 'parentPin'> & { readonly parent: ParentPin | null };

/**
 * A process holding a new namespace, maps written, until `end()`; `pin()` bind-mounts it in the
 * pins' mount namespace. `ino` and `maps`: the namespace's nsfs inode, and the holder's maps as the
 * kernel holds them (outside ids as the initial namespace sees them), when the maker looked
 * (usernsd-spawner does); else the caller looks at the pin and /proc/PID itself.
 */
export type Holder = {
  readonly pid: number;
  readonly ino?: number;
  readonly maps?: { readonly uidMap: IdMap; readonly gidMap: IdMap };
  pin(path: string): Promise<void>;
  end(): Promise<void> | void;
};

export interface NamespaceMaker {
  /** usernsd-spawner when this maker is it (the view worker and status use it), else null. */
  readonly spawner: Spawner | null;
  make(req: MakeRequest): Promise<Holder>;
  /** Unmount one layer of a pin in the pins' mount namespace (not the agent's own); false when nothing was mounted. */
  unpin(label: string, path: string): Promise<boolean>;
  /** A pinned namespace's maps as its own processes see them (outside ids are the parent's). */
  maps(label: string, pin: string): Promise<{ uidMap: IdMap; gidMap: IdMap }>;
  close(): void;
}

/** The maker the setting asks for (see useNativeSpawner); `mountNs`: where pins are mounted, null for the agent's own. */
export function namespaceMaker(setting: SpawnerSetting, mountNs: string | null, pinsDir: string): NamespaceMaker {
  return useNativeSpawner(setting) ? new SpawnerMaker(new Spawner(mountNs)) : new ForkedMaker(mountNs, new HelperPrograms(pinsDir));
}

class SpawnerMaker implements NamespaceMaker {
  readonly spawner: Spawner;

  constructor(spawner: Spawner) {
    this.spawner = spawner;
  }

  make(req: MakeRequest): Promise<Holder> {
    const { parent, ...rest } = req;
    return this.spawner.create({ ...rest, parentPin: parent?.pin ?? null });
  }

  unpin(label: string, path: string): Promise<boolean> {
    return this.spawner.unpin(label, path);
  }

  maps(label: string, pin: string): Promise<{ uidMap: IdMap; gidMap: IdMap }> {
    return this.spawner.maps(label, pin);
  }

  close(): void {
    this.spawner.close();
  }
}

/**
 * A process per namespace: `unshare --user` run with the owner's ids (or, nested, entered into the
 * parent first), its maps written from here or by the parent's root, and nsenter for each step in
 * the pins' mount namespace. The programs are execute-only copies (HelperPrograms), so an owner
 * cannot write the maps of its namespace before the agent does.
 */
class ForkedMaker implements NamespaceMaker {
  readonly spawner = null;
  private readonly mountNs: string | null;
  private readonly helpers: HelperPrograms;

  constructor(mountNs: string | null, helpers: HelperPrograms) {
    this.mountNs = mountNs;
    this.helpers = helpers;
  }

  async make(req: MakeRequest): Promise<Holder> {
    let child: ChildProcess;
    try {
      child = this.spawnChild(req);
    } catch (err) {
      if (err instanceof Fault) throw err;
      throw kernelError(req.label, 'start the namespace helper', errnoOf(err), (err as Error).message);
    }
    try {
      const pid = await waitForNewNamespace(req.label, child, req.parent ? `user:[${pinnedIno(req.parent.pin)}]` : null);
      await this.writeMaps(req, pid);
      return { pid, pin: (path) => this.bindInPinsNamespace(`/proc/${pid}/ns/user`, path), end: () => reap(child) };
    } catch (err) {
      await reap(child);
      throw err;
    }
  }

  /** A single-threaded child in a new user namespace, owned by the owner; it waits on stdin, so it also ends if the agent dies. */
  private spawnChild(req: MakeRequest): ChildProcess {
    const opts = { env: PATH_ENV, stdio: ['pipe', 'ignore', 'pipe'] as ('pipe' | 'ignore')[] };
    if (req.parent === null) {
      const { unshare, cat } = this.helpers.for(0, 0);
      return spawn(unshare, ['--user', '--', cat], { ...opts, uid: req.uid, gid: req.gid });
    }
    // The maps are written by the parent's root: the helper's programs are its (see HelperPrograms).
    const rootUid = rootOf(req.parent.host.uid);
    const rootGid = rootOf(req.parent.host.gid);
    if (rootUid === null || rootGid === null)
      throw new Fault('misconfigured', `the parent of context "${req.label}" does not map id 0`, {
        object: 'namespace',
        label: req.label,
        step: 'write the nested maps',
      });
    const { unshare, cat } = this.helpers.for(rootUid, rootGid);
    return spawn(
      this.helpers.for(0, 0).nsenter,
      [`--user=${req.parent.pin}`, '--preserve-credentials', '-S', String(req.uid), '-G', String(req.gid), '--', unshare, '--user', '--', cat],
      opts,
    );
  }

  /** setgroups first (the kernel needs it before gid_map), then uid_map and gid_map, each in one write. */
  private async writeMaps(req: MakeRequest, pid: number): Promise<void> {
    const uid = kernelMapText(req.uidMap);
    const gid = kernelMapText(req.gidMap);
    if (req.parent === null) {
      for (const [file, text] of [
        ['setgroups', req.setgroups],
        ['uid_map', uid],
        ['gid_map', gid],
      ] as const) {
        try {
          writeFileSync(`/proc/${pid}/${file}`, text);
        } catch (err) {
          throw kernelError(req.label, `write ${file}`, errnoOf(err));
        }
      }
      return;
    }
    // The kernel accepts a nested namespace's maps only from a writer in the parent namespace.
    // bash, not sh: dash reports a failed write as "I/O error" and loses the errno.
    const script = 'printf %s "$2" > /proc/$1/setgroups && printf %s "$3" > /proc/$1/uid_map && printf %s "$4" > /proc/$1/gid_map';
    const { nsenter, bash } = this.helpers.for(0, 0);
    const r = await run(nsenter, [
      `--user=${req.parent.pin}`,
      '--preserve-credentials',
      '-S',
      '0',
      '-G',
      '0',
      '--',
      bash,
      '-c',
      script,
      'bash',
      String(pid),
      req.setgroups,
      uid,
      gid,
    ]);
    if (r.code !== 0) throw kernelError(req.label, 'write the nested maps', errnoFromText(r.stderr), r.stderr);
  }

  private async bindInPinsNamespace(source: string, path: string): Promise<void> {
    const r = await run('nsenter', [`--mount=${this.mountNs}`, '--', 'mount', '--bind', source, path]);
    if (r.code !== 0)
      throw new Fault('refused', `Failed to pin ${path} in mount namespace ${this.mountNs}: ${r.stderr || `exit ${r.code}`}`, {
        object: 'mount-namespace',
        step: 'pin',
        errno: errnoFromText(r.stderr),
        subject: dirname(path),
      });
  }

  async unpin(_label: string, path: string): Promise<boolean> {
    const r = await run('nsenter', [`--mount=${this.mountNs}`, '--', 'umount', '--lazy', path]);
    if (r.code === 0) return true;
    if (/not mounted|no mount point|No such file/.test(r.stderr)) return false;
    throw new Fault('refused', `Failed to unmount pin ${path} in mount namespace ${this.mountNs}: ${r.stderr || `exit ${r.code}`}`, {
      object: 'pin',
      step: 'unmount',
      errno: errnoFromText(r.stderr),
      subject: path,
    });
  }

  /** nsenter with root's ids into a namespace its owner owns: execute-only copies of nsenter and cat, one run per map. */
  async maps(_label: string, pin: string): Promise<{ uidMap: IdMap; gidMap: IdMap }> {
    const { nsenter, cat } = this.helpers.for(0, 0);
    const read = async (file: string) => {
      const r = await run(nsenter, [`--user=${pin}`, '--preserve-credentials', '--', cat, file]);
      if (r.code !== 0)
        throw new Fault('refused', `Failed to read the maps of ${pin}: ${r.stderr || `exit ${r.code}`}`, {
          object: 'pin',
          step: 'read the maps',
          errno: errnoFromText(r.stderr),
          subject: pin,
        });
      return parseKernelMap(r.stdout);
    };
    return { uidMap: await read('/proc/self/uid_map'), gidMap: await read('/proc/self/gid_map') };
  }

  close(): void {}
}

// The namespace helper's programs: execute-only copies, so the owner it runs as cannot touch it before its maps are written.
import { chmodSync, chownSync, copyFileSync, existsSync, lstatSync, mkdirSync, renameSync, rmSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import type { IdMap } from '../../config/types.ts';
import { refused } from '../fault.ts';

/** In the pins directory: the helper's execute-only programs. Not a label: it starts with a dot. */
export const HELPERS_DIR = '.usernsd-helpers';

/** `bash` writes a nested context's maps from inside its parent, as that parent's root (ForkedMaker). */
export type Programs = { readonly unshare: string; readonly cat: string; readonly nsenter: string; readonly bash: string };

/** The host id that inside id 0 of a map is (a parent's root), or null when 0 is not mapped. */
export function rootOf(map: IdMap): number | null {
  const e = map.find((x) => x.inside === 0);
  return e ? e.outside : null;
}

/** Owns `PINS/.usernsd-helpers`: one set of programs per root that writes maps, made once per process. */
export class HelperPrograms {
  private readonly pinsDir: string;
  private readonly cache = new Map<string, Programs>();

  constructor(pinsDir: string) {
    this.pinsDir = pinsDir;
  }

  /**
   * The helper's programs, as execute-only copies (mode 0111) owned by `uid`:`gid` — the host ids of
   * the root that writes the new namespace's maps (the agent's, 0, for a top-level context; the
   * parent's root for a nested one) — in the pins directory's `.usernsd-helpers/UID`. The kernel
   * makes a process that execs a program it cannot read non-dumpable (fs/exec.c would_dump), so its
   * /proc/PID files belong to that root: the owner the helper runs as cannot write its uid_map
   * before the agent does, nor ptrace it, while the map's writer can. The same holds for nsenter
   * into a namespace an owner owns: with root's ids there and a program it can read, the process
   * would be the owner's to trace (a namespace's owner has CAP_SYS_PTRACE over what runs in it),
   * so nsenter, and cat and bash run there, are execute-only copies too (a readable bash writing a
   * nested context's maps, as host root inside the parent, was the owner's to trace: found by the
   * exposure watcher of test/integration/userns.test.ts). Where the copies cannot be made
   * the creation is refused (E_KERNEL): an owner must never get the race back silently.
   * Handing a nested context's copies to its parent's root takes CAP_CHOWN.
   */
  for(uid: number, gid: number): Programs {
    const key = `${uid}:${gid}`;
    const known = this.cache.get(key);
    // Checked each time (a stat per program): the pins directory may have been removed behind our back.
    if (known && Object.values(known).every((p) => existsSync(p))) return known;
    const top = join(this.pinsDir, HELPERS_DIR);
    const dir = join(top, key.replace(':', '.'));
    let paths: Programs;
    try {
      for (const d of [top, dir]) {
        mkdirSync(d, { recursive: true, mode: 0o711 });
        const st = lstatSync(d);
        if (!st.isDirectory() || st.uid !== process.geteuid!()) throw new Error(`${d} is not our directory`);
        chmodSync(d, 0o711);
      }
      const copy = (name: string) => {
        const source = ['/usr/bin', '/bin'].map((d) => join(d, name)).find((p) => existsSync(p));
        if (!source) throw new Error(`${name} not found`);
        const target = join(dir, name);
        const src = statSync(source);
        const dst = existsSync(target) ? lstatSync(target) : null;
        if (dst?.isFile() && dst.size === src.size && dst.mtimeMs === src.mtimeMs && (dst.mode & 0o7777) === 0o111 && dst.uid === uid && dst.gid === gid)
          return target;
        const tmp = join(dir, `.${name}.${process.pid}.tmp`);
        rmSync(tmp, { force: true });
        copyFileSync(source, tmp);
        // Mode and times while the file is still ours (after chown they would take CAP_FOWNER).
        chmodSync(tmp, 0o111);
        utimesSync(tmp, src.atime, src.mtime);
        chownSync(tmp, uid, gid);
        renameSync(tmp, target);
        return target;
      };
      paths = { unshare: copy('unshare'), cat: copy('cat'), nsenter: copy('nsenter'), bash: copy('bash') };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
      throw refused('namespace', `prepare the namespace helper's execute-only programs in ${dir}`, code, { detail: (err as Error).message });
    }
    this.cache.set(key, paths);
    return paths;
  }
}

// The agent's side of usernsd-spawner (native/usernsd-spawner.c): one small process, started at the
// first creation and kept, that makes user namespaces without a fork of the agent for each.
import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import type { IdMap } from '../../config/types.ts';
import { Fault } from '../fault.ts';
import { DIST } from './built.ts';
import { kernelError, PATH_ENV, SPAWN_TIMEOUT_MS } from './spawn.ts';
import { childEnded, closeFd } from './sys.ts';
import { closeDescriptor, receiveWithFds, sendWithFds, socketPair } from './unixsock.ts';

/** Where `npm run build` (and so `make install`) puts the program: dist/usernsd-spawner. */
export const SPAWNER_PATH = join(DIST, 'usernsd-spawner');

export type SpawnerSetting = 'auto' | 'native' | 'node';

/** What a creation asks: the owner's ids as the parent sees them, the maps, the parent's pin (null: host). */
export type SpawnRequest = {
  readonly label: string;
  readonly uid: number;
  readonly gid: number;
  readonly setgroups: 'allow' | 'deny';
  readonly uidMap: IdMap;
  readonly gidMap: IdMap;
  readonly parentPin: string | null;
};

/**
 * A namespace held by its holder process until `end()`: pin /proc/PID/ns/user meanwhile, here, or
 * with `pin()` in the spawner's mount namespace.
 */
export type Held = {
  readonly pid: number;
  readonly ino?: number;
  readonly maps?: { readonly uidMap: IdMap; readonly gidMap: IdMap };
  pin(path: string): Promise<void>;
  end(): void;
};

/** A view's tree to copy in a caller's mount namespace (see tree_worker in native/spawner-proc.c). */
export type TreeJob = {
  readonly path: string;
  readonly dev: number;
  readonly ino: number;
  readonly readOnly: boolean;
  /** The caller's mount namespace and the view's user namespace, open. */
  readonly mntNsFd: number;
  readonly usernsFd: number;
};

/** The copy (the caller closes it), or the spawner's errno and step. */
export type TreeReply = { readonly fd: number } | { readonly errno: string; readonly step: string };

/** A request waiting for its reply line, and the spawner it went to (its end fails only its own requests). */
type Pending = { resolve: (words: string[]) => void; timer: NodeJS.Timeout; child: ChildProcessWithoutNullStreams | null };

const wire = (map: IdMap) => map.map((e) => `${e.inside}:${e.outside}:${e.count}`).join(',');
/** The spawner's "INSIDE:OUTSIDE:COUNT,…" ("-": none), read as parseKernelMap reads the kernel's lines: a field that is not three numbers drops its extent. */
const unwire = (text: string): IdMap => {
  const map: { inside: number; outside: number; count: number }[] = [];
  if (text === '-') return map;
  for (const extent of text.split(',')) {
    const f = extent.split(':');
    if (f.length === 3 && f.every((x) => x !== '')) map.push({ inside: Number(f[0]), outside: Number(f[1]), count: Number(f[2]) });
  }
  return map;
};

/**
 * Whether the native spawner is used: `native` insists (an error says how to build it), `node`
 * refuses it (a fork of the agent per namespace), `auto` takes it when it was built.
 */
export function useNativeSpawner(setting: SpawnerSetting, path = SPAWNER_PATH): boolean {
  if (setting === 'node') return false;
  if (existsSync(path)) return true;
  if (setting === 'native') throw new Fault('misconfigured', `spawner = native, but ${path} was not built`, { object: 'spawner', subject: path });
  return false;
}

/** An "err ERRNO STEP…" reply as the error it is. */
const failure = (label: string, words: string[]) => kernelError(label, words.slice(2).join(' ') || 'create the user namespace', words[1] ?? 'EIO');

export class Spawner {
  private readonly path: string;
  /** The mount namespace the spawner works in (pins are mounted there), or null for the agent's. */
  private readonly mountNs: string | null;
  private child: ChildProcessWithoutNullStreams | null = null;
  /** The agent's end of the spawner's control socket (its fd 3): descriptors both ways. */
  private control: number | null = null;
  /** Copies that arrived on the control socket before their reply line was read, by request id. */
  private readonly arrived = new Map<number, number>();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  constructor(mountNs: string | null = null, path = SPAWNER_PATH) {
    this.mountNs = mountNs;
    this.path = path;
  }

  /** Make a namespace: the holder's pid once its maps are written, the namespace's inode and the maps read back; E_KERNEL with the failed step otherwise. */
  async create(req: SpawnRequest): Promise<Held> {
    const id = this.nextId++;
    const words = await this.ask(
      id,
      `new ${id} ${req.uid} ${req.gid} ${req.setgroups} ${wire(req.uidMap)} ${wire(req.gidMap)} ${req.parentPin ?? '-'}`,
      req.label,
    );
    const pid = Number(words[0]);
    // The namespace's inode and maps as the spawner looked at them once written (one that could not says neither).
    const looked = words.length >= 4 ? { ino: Number(words[1]), maps: { uidMap: unwire(words[2]), gidMap: unwire(words[3]) } } : undefined;
    const child = this.child;
    let ended = false;
    return {
      pid,
      ...looked,
      pin: async (path: string) => {
        if (this.child !== child) throw kernelError(req.label, 'pin the namespace', 'ESRCH', 'usernsd-spawner ended meanwhile');
        await this.ask(id, `pin ${id} ${path}`, req.label);
      },
      // A spawner that died meanwhile took its holders with it: nothing to end, nothing to start.
      end: () => {
        if (!ended && this.child === child) this.child?.stdin.write(`end ${id}\n`);
        ended = true;
      },
    };
  }

  /** A lazy unmount of a pin in the spawner's mount namespace: false when nothing was mounted there. */
  async unpin(label: string, path: string): Promise<boolean> {
    const id = this.nextId++;
    const words = await this.reply(id, `unpin ${id} ${path}`);
    if (words[0] !== 'err') return true;
    if (words[1] === 'EINVAL' || words[1] === 'ENOENT') return false; // not mounted, or gone
    throw failure(label, words);
  }

  /** A pinned namespace's maps as its own processes see them, read by a non-dumpable worker inside it. */
  async maps(label: string, pin: string): Promise<{ uidMap: IdMap; gidMap: IdMap }> {
    const id = this.nextId++;
    const [u, g] = await this.ask(id, `maps ${id} ${pin}`, label);
    return { uidMap: unwire(u ?? '-'), gidMap: unwire(g ?? '-') };
  }

  /**
   * Copy a view's tree in a caller's mount namespace, by a worker of the spawner that never execs
   * (so nothing it runs comes from the caller's namespace). The namespaces go over the control
   * socket just before the line; the copy comes back on it just before the reply.
   */
  async tree(job: TreeJob): Promise<TreeReply> {
    const id = this.nextId++;
    if (job.path.includes('\n')) return { errno: 'EINVAL', step: 'copy the tree (its path holds a newline)' };
    try {
      this.started();
      sendWithFds(this.control!, Buffer.from(String(id)), [job.mntNsFd, job.usernsFd]);
    } catch (err) {
      return { errno: (err as NodeJS.ErrnoException).code ?? 'EIO', step: 'send the namespaces to usernsd-spawner' };
    }
    const words = await this.reply(id, `tree ${id} ${job.readOnly ? 'ro' : 'rw'} ${job.dev} ${job.ino} ${job.path}`);
    if (words[0] !== 'tree') return { errno: words[1] ?? 'EIO', step: words.slice(2).join(' ') };
    const fd = this.takeArrived(id);
    return fd === null ? { errno: 'EIO', step: 'receive the copy from usernsd-spawner' } : { fd };
  }

  /** The copy for request `id`: read what the control socket holds (copies of other requests are kept for them). */
  private takeArrived(id: number): number | null {
    for (;;) {
      const had = this.arrived.get(id);
      if (had !== undefined) {
        this.arrived.delete(id);
        return had;
      }
      if (this.control === null) return null;
      let msg: { data: Buffer; fds: number[] };
      try {
        msg = receiveWithFds(this.control, false);
      } catch {
        return null; // EAGAIN: nothing queued for it
      }
      if (msg.data.length === 0) return null;
      const of = Number(msg.data.toString());
      const [fd, ...extra] = msg.fds;
      for (const f of extra) closeFd(f);
      if (fd === undefined) continue;
      if (this.pending.has(of) || of === id) this.arrived.set(of, fd);
      else closeFd(fd); // its request gave up meanwhile
    }
  }

  /** The running spawner's pid (status shows it; tests end it behind the agent's back). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Ends the spawner: its holders end with it. */
  close(): void {
    this.child?.stdin.end();
    this.child = null;
    this.closeControl();
  }

  private closeControl(): void {
    if (this.control !== null) closeDescriptor(this.control);
    this.control = null;
    for (const fd of this.arrived.values()) closeFd(fd);
    this.arrived.clear();
  }

  /** The words after the reply's kind (ok, maps…); E_KERNEL with the spawner's errno and step on err. */
  private async ask(id: number, line: string, label: string): Promise<string[]> {
    const [kind, ...rest] = await this.reply(id, line);
    if (kind === 'err') throw failure(label, [kind, ...rest]);
    return rest;
  }

  /** The reply line's words, errors included: every outcome, the spawner's end too, arrives as words. */
  private reply(id: number, line: string): Promise<string[]> {
    // The only free text in a request is a path, last on its line: a newline in it would end the line.
    if (line.includes('\n')) return Promise.reject(new Fault('invalid', `a pin path holds a newline: ${JSON.stringify(line)}`, { object: 'pin' }));
    return new Promise<string[]>((resolve) => {
      // The spawner has its own deadline (5 s) for each request; this one covers the spawner itself.
      const timer = setTimeout(() => this.settle(id, ['err', 'ETIMEDOUT', 'hear from usernsd-spawner']), SPAWN_TIMEOUT_MS * 2);
      const pending: Pending = { resolve, timer, child: null };
      this.pending.set(id, pending);
      try {
        pending.child = this.started();
        this.ref(true);
        pending.child.stdin.write(`${line}\n`);
      } catch (err) {
        this.settle(id, ['err', (err as NodeJS.ErrnoException).code ?? 'EIO', 'start usernsd-spawner']);
      }
    });
  }

  private settle(id: number, words: string[]): void {
    const p = this.pending.get(id);
    if (!p) {
      if (words[0] === 'ok') this.child?.stdin.write(`end ${id}\n`); // answered after we gave up: end its holder
      return;
    }
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (this.pending.size === 0) this.ref(false);
    p.resolve(words);
  }

  /** The requests that went to `child`, failed: it ended, or is dead and about to be replaced. */
  private failAll(child: ChildProcessWithoutNullStreams, why: string): void {
    for (const [id, p] of [...this.pending]) if (p.child === child) this.settle(id, ['err', 'EIO', `use usernsd-spawner (${why})`]);
  }

  /**
   * The spawner, started now if it is not running; it ends when its stdin closes or the agent dies.
   * One that died unheard (killed, its exit event not yet run) is replaced now: a request written to
   * it would wait for that event and fail with it.
   */
  private started(): ChildProcessWithoutNullStreams {
    if (this.child) {
      // Running: this one. Ended, perhaps not yet reaped (its exit event still to come): a new one.
      if (this.child.pid !== undefined && !childEnded(this.child.pid)) return this.child;
      this.failAll(this.child, 'it died');
      this.child = null;
    }
    this.closeControl();
    const [mine, theirs] = socketPair(true);
    let child: ChildProcessWithoutNullStreams;
    try {
      child = spawn(this.path, this.mountNs ? ['--mount-namespace', this.mountNs] : [], {
        env: PATH_ENV,
        stdio: ['pipe', 'pipe', 'pipe', theirs],
      }) as unknown as ChildProcessWithoutNullStreams;
    } finally {
      closeDescriptor(theirs);
    }
    this.control = mine;
    this.child = child;
    createInterface({ input: child.stdout }).on('line', (line) => {
      const [id, ...words] = line.split(' ');
      this.settle(Number(id), words);
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    const gone = (why: string) => {
      if (this.child === child) this.child = null;
      this.failAll(child, `${why}${stderr ? `: ${stderr.trim()}` : ''}`);
    };
    child.on('error', (err) => gone(`${(err as NodeJS.ErrnoException).code ?? err.message} starting ${this.path}`));
    child.on('exit', (code, signal) => gone(`it exited: ${signal ?? code}`));
    child.stdin.on('error', () => {
      /* reported by exit */
    });
    return child;
  }

  /** Keep the agent's event loop alive only while a request waits (tests build Namespaces without stopping them). */
  private ref(on: boolean): void {
    const c = this.child;
    if (!c) return;
    for (const s of [c.stdout, c.stderr, c.stdin] as unknown as Socket[]) {
      if (on) s.ref?.();
      else s.unref?.();
    }
    if (on) c.ref();
    else c.unref();
  }
}

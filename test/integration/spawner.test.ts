// usernsd-spawner for real: its protocol under garbage, owners that stop what they may, a worker
// past its deadline, the spawner killed under requests, and (model-based) creations, releases,
// spawner deaths and restarts over time, checked against the kernel after every step.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Interface } from 'node:readline';
import fc from 'fast-check';
import { loadConfiguration } from '../../agent/configure.ts';
import type { Configuration } from '../../agent/configure.ts';
import { Fault } from '../../agent/fault.ts';
import { fromFault } from '../../agent/advice.ts';
import { Namespaces, pinnedIno } from '../../agent/kernel/userns.ts';
import type { Pin } from '../../agent/kernel/userns.ts';
import { Spawner, SPAWNER_PATH, useNativeSpawner } from '../../agent/kernel/spawner.ts';
import type { SpawnRequest } from '../../agent/kernel/spawner.ts';
import { parseKernelMap } from '../../config/extents.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, kernelMaps, makeUser, mountsUnder, unmountAll } from '../helpers/kernel.ts';
import { NATIVE_SPAWNER } from '../helpers/unit.ts';

/** The spawner on its own, spoken to line by line as the agent does. */
class Raw {
  readonly child: ChildProcessWithoutNullStreams;
  private readonly lines: Interface;
  private readonly queue: string[] = [];
  private waiting: ((l: string) => void) | null = null;
  constructor() {
    this.child = spawn(SPAWNER_PATH, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.resume();
    this.lines = createInterface({ input: this.child.stdout });
    this.lines.on('line', (l) => {
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = null;
        w(l);
      } else this.queue.push(l);
    });
  }
  send(line: string): void {
    this.child.stdin.write(`${line}\n`);
  }
  next(ms = 10_000): Promise<string> {
    const l = this.queue.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting = null;
        reject(new Error('no reply from usernsd-spawner'));
      }, ms);
      this.waiting = (x) => {
        clearTimeout(t);
        resolve(x);
      };
    });
  }
  /**
   * The reply to `line` (its id the second word). A reply of another id is a late one to a line
   * sent before (a creation the fast-check's garbage happened to make valid, answered after the
   * ones that followed it): passed over, and a namespace it made ended.
   */
  async ask(line: string): Promise<string[]> {
    const id = line.split(' ')[1];
    this.send(line);
    for (;;) {
      const reply = (await this.next()).split(' ');
      if (reply[0] === id) return reply;
      if (reply[1] === 'ok') this.send(`end ${reply[0]}`);
    }
  }
  async close(): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    const exited = new Promise<number | null>((r) => this.child.once('exit', (code) => r(code)));
    this.child.stdin.end();
    return exited;
  }
}

/** Running (a zombie, or gone, is not). */
const alive = (pid: number) => {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
};
/**
 * SIGKILL, then wait for the zombie without letting the event loop run: Node has not reaped it, so
 * its exit event is still to come when the caller goes on.
 */
function killUnheard(pid: number): void {
  process.kill(pid, 'SIGKILL');
  const tick = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; alive(pid) && i < 500; i++) Atomics.wait(tick, 0, 0, 10);
  assert.ok(!alive(pid), `the spawner (${pid}) died`);
}
const asUser = (user: string, script: string) => spawnSync('runuser', ['-u', user, '--', 'sh', '-c', script], { encoding: 'utf8' });

/** Until `pred` holds, within `ms`: processes end, and are reaped, a moment after they are told to. */
async function eventually(pred: () => boolean, ms = 3000): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 20))) if (pred()) return true;
  return pred();
}

/** Processes whose user namespace is one of `inos` (holders left behind, were there any). */
function processesIn(inos: Set<number>): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const m = /^user:\[(\d+)\]$/.exec(readlinkSync(`/proc/${p}/ns/user`));
      if (m && inos.has(Number(m[1]))) out.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return out;
}

describe('integration: usernsd-spawner (root)', function () {
  this.timeout(60_000);
  let tree: Tree;
  let raw: Raw | undefined;
  before(function () {
    if (!isRoot || !NATIVE_SPAWNER) this.skip();
  }); // root; and a C compiler made the spawner
  beforeEach(() => {
    tree = makeTree();
    mkdirSync(tree.pins, { recursive: true });
  });
  afterEach(async () => {
    await raw?.close();
    raw = undefined;
    unmountAll(tree.dir);
    tree.remove();
  });

  it('answers every malformed request with an error, or drops it, and keeps serving (fast-check)', async () => {
    raw = new Raw();
    const r = raw;
    const words = fc.constantFrom(
      'new',
      'maps',
      'end',
      'NEW',
      '',
      '-',
      '0',
      '4294967295',
      '-1',
      'allow',
      'deny',
      '0:100000:10',
      '0:0:4294967295',
      ':::',
      '/',
      '/proc/self/ns/user',
      '/nonexistent',
      'x'.repeat(300),
    );
    const line = fc.oneof(
      fc.array(words, { maxLength: 9 }).map((w) => w.join(' ')),
      fc.string({ maxLength: 200 }).map((s) => s.replace(/[\n\0]/g, ' ')),
    );
    let marker = 1_000_000;
    await fc.assert(
      fc.asyncProperty(fc.array(line, { maxLength: 20 }), async (lines) => {
        for (const l of lines) r.send(l);
        const id = ++marker;
        r.send(`new ${id} 0 0 deny 0:900000:10 0:900000:10 -`); // real work, after the garbage
        for (;;) {
          const reply = await r.next();
          assert.match(reply, /^\d+ (ok \d+( \d+ [\d:,-]+ [\d:,-]+)?|maps [\d:,-]+ [\d:,-]+|err E[A-Z]+( .*)?)$/, 'a reply is one of three shapes');
          const [rid, kind] = reply.split(' ');
          if (kind === 'ok') r.send(`end ${rid}`); // ours, or a line that happened to be a valid creation
          if (Number(rid) === id) {
            assert.equal(kind, 'ok', reply);
            break;
          }
        }
        assert.equal(r.child.exitCode, null, 'still running');
      }),
      { numRuns: 60 },
    );
    // A line past the spawner's buffer (64 KiB) is dropped, and the next is served.
    r.send('x'.repeat(70_000));
    assert.deepEqual((await r.ask('new 7 0 0 deny 0:900000:10 0:900000:10 -')).slice(0, 2), ['7', 'ok']);
    r.send('end 7');
    // And "maps" reads a pinned namespace's maps from inside, as its processes see them.
    const [, , pid, ino, ...made] = await r.ask('new 8 0 0 allow 0:910000:5,5:920000:5 0:930000:10 -');
    // "ok" carries the namespace's inode and the maps as the kernel holds them, read back once written.
    assert.equal(Number(ino), statSync(`/proc/${pid}/ns/user`).ino);
    assert.deepEqual(made, ['0:910000:5,5:920000:5', '0:930000:10']);
    assert.deepEqual(kernelMaps(`/proc/${pid}/ns/user`), { uid: '0 910000 5, 5 920000 5', gid: '0 930000 10' });
    const pin = join(tree.pins, 'p');
    writeFileSync(pin, '');
    assert.equal(spawnSync('mount', ['--bind', `/proc/${pid}/ns/user`, pin]).status, 0);
    r.send('end 8');
    assert.deepEqual(await r.ask(`maps 9 ${pin}`), ['9', 'maps', '0:910000:5,5:920000:5', '0:930000:10']);
  });

  it('makes a namespace its owner owns, whose holder the owner can neither trace nor write the maps of; a stopped holder stalls nobody and still ends', async () => {
    const user = makeUser();
    raw = new Raw();
    try {
      const [, ok, pidText] = await raw.ask(`new 1 ${user.uid} ${user.gid} deny 0:400000:65536 0:400000:65536 -`);
      assert.equal(ok, 'ok');
      const pid = Number(pidText);
      assert.notEqual(readlinkSync(`/proc/${pid}/ns/user`), readlinkSync('/proc/self/ns/user'));
      // Pinned, the namespace is the owner's to enter without root (the kernel checks it owns it).
      const pin = join(tree.pins, 'mine');
      writeFileSync(pin, '');
      assert.equal(spawnSync('mount', ['--bind', `/proc/${pid}/ns/user`, pin]).status, 0);
      const entered = asUser(user.name, `nsenter --user=${pin} -S 0 -G 0 --preserve-credentials id -u`);
      assert.equal(entered.stdout.trim(), '0', entered.stderr);
      assert.match(asUser(user.name, `readlink -v /proc/${pid}/ns/user`).stderr, /Permission denied/, 'not traceable by its owner');
      assert.match(asUser(user.name, `echo '0 ${user.uid} 1' > /proc/${pid}/uid_map`).stderr, /Permission denied/, "its maps are root's to write");
      // The owner may stop its own holder (it owns the namespace): others are served meanwhile.
      assert.equal(asUser(user.name, `kill -STOP ${pid}`).status, 0);
      const [, ok2, other] = await raw.ask('new 2 0 0 deny 0:500000:65536 0:500000:65536 -');
      assert.equal(ok2, 'ok');
      raw.send('end 1');
      raw.send('end 2');
      assert.ok(await eventually(() => !alive(pid) && !alive(Number(other))), 'both holders ended, the stopped one too');
    } finally {
      await raw.close(); // its holders end with it: userdel refuses a user that still runs a process
      raw = undefined;
      user.remove();
    }
  });

  it('fails a request whose worker misses its deadline (5 s), with its processes killed, and serves the others meanwhile', async () => {
    raw = new Raw();
    const fifo = join(tree.dir, 'fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0); // open(2) of a FIFO blocks: a worker that hangs
    const t0 = Date.now();
    raw.send(`new 1 0 0 deny 0:1000:1 0:1000:1 ${fifo}`);
    const [id, ok] = await raw.ask('new 2 0 0 deny 0:600000:65536 0:600000:65536 -');
    assert.deepEqual([id, ok], ['2', 'ok'], 'served while the other worker hangs');
    assert.ok(Date.now() - t0 < 4000);
    raw.send('end 2');
    const late = await raw.next(10_000);
    assert.match(late, /^1 err ETIMEDOUT /);
    assert.ok(Date.now() - t0 >= 4900, 'not before the deadline');
    const children = () => spawnSync('ps', ['--ppid', String(raw!.child.pid), '-o', 'pid='], { encoding: 'utf8' }).stdout.trim();
    assert.ok(await eventually(() => children() === ''), `no process left: ${children()}`);
  });

  it('ends every holder when its stdin closes', async () => {
    raw = new Raw();
    const pids: number[] = [];
    for (let i = 1; i <= 5; i++) {
      const [, ok, pid] = await raw.ask(`new ${i} 0 0 deny 0:${700000 + i * 65536}:65536 0:${700000 + i * 65536}:65536 -`);
      assert.equal(ok, 'ok');
      pids.push(Number(pid));
    }
    assert.equal(await raw.close(), 0);
    assert.ok(await eventually(() => pids.every((p) => !alive(p))));
  });

  it("serves a request made after the spawner died but before its exit was heard: a new spawner, whose requests the old one's late exit does not fail", async () => {
    const spawner = new Spawner();
    const req: SpawnRequest = {
      label: 'late',
      uid: 0,
      gid: 0,
      setgroups: 'deny',
      uidMap: parseKernelMap('0 900000 10'),
      gidMap: parseKernelMap('0 900000 10'),
      parentPin: null,
    };
    try {
      (await spawner.create(req)).end();
      const dead = spawner.pid!;
      killUnheard(dead);
      const held = await spawner.create(req);
      assert.ok(spawner.pid !== undefined && spawner.pid !== dead, 'a new spawner made it');
      held.end();
    } finally {
      spawner.close();
    }
  });

  it('reads a map back whole: 340 extents, written in under a page, read back as the kernel prints them (33 bytes a line, more than one read)', async () => {
    raw = new Raw();
    // Short lines to write (the kernel takes one page), 340 fixed-width lines of 33 bytes to read back.
    const ext = Array.from({ length: 340 }, (_, i) => `${i}:${10000 + i * 2}:1`).join(',');
    const [, ok, pid] = await raw.ask(`new 1 0 0 allow ${ext} 0:20000:1 -`);
    assert.equal(ok, 'ok', `${ok} ${pid}`);
    const pin = join(tree.pins, 'big');
    writeFileSync(pin, '');
    const [, pinned] = await raw.ask(`pin 1 ${pin}`);
    assert.equal(pinned, 'pinned');
    raw.send('end 1');
    const [, kind, uid, gid] = await raw.ask(`maps 2 ${pin}`);
    assert.equal(kind, 'maps', `${kind} ${uid}`);
    assert.equal(uid, ext, 'every extent, none cut at a read boundary');
    assert.equal(gid, '0:20000:1');
  });
});

// ---- model-based: Namespaces through the spawner, over time ----

type Model = { pinned: Set<string>; restarts: number };
type Real = { tree: Tree; ns: Namespaces; cfg: Configuration; inos: Set<number> };
const LABELS = ['a', 'b', 'kid'] as const;
const PARENT: Record<string, string | null> = { a: null, b: null, kid: 'a' };
const MAPS: Record<string, string> = { a: '0 8000000 65536', b: '0 8100000 65536', kid: '0 1000 1000' };

async function ensure(r: Real, label: string): Promise<Pin> {
  const ctx = r.cfg.contexts.get(label)!;
  if (ctx.parent === 'host') return r.ns.ensure(ctx, null);
  const parent = await ensure(r, ctx.parent);
  return r.ns.ensure(ctx, { pin: parent.path, ino: parent.ino, host: r.cfg.hostMaps.get(ctx.parent)! });
}

async function checkInvariants(m: Model, r: Real): Promise<void> {
  const mounted = mountsUnder(r.tree.pins)
    .map((p) => p.slice(r.tree.pins.length + 1))
    .sort();
  assert.deepEqual(mounted, [...m.pinned].sort(), 'pinned as the model says');
  for (const label of m.pinned) {
    assert.deepEqual(kernelMaps(join(r.tree.pins, label)), { uid: MAPS[label], gid: MAPS[label] }, `${label}'s maps in the kernel`);
    r.inos.add(pinnedIno(join(r.tree.pins, label))!);
  }
  assert.ok(await eventually(() => processesIn(r.inos).length === 0), `no holder left in our namespaces: ${processesIn(r.inos).join(' ')}`);
  // A closed spawner (a restart) exits a moment later.
  const spawners = () =>
    spawnSync('pgrep', ['-P', String(process.pid), '-x', 'usernsd-spawner'], { encoding: 'utf8' })
      .stdout.trim()
      .split('\n')
      .filter(Boolean);
  assert.ok(await eventually(() => spawners().length <= 1), `one spawner at most: ${spawners().join(' ')}`);
}

type Command = fc.AsyncCommand<Model, Real>;
const command = (name: string, check: (m: Readonly<Model>) => boolean, run: (m: Model, r: Real) => Promise<void>): Command => ({
  check,
  run,
  toString: () => name,
});

const create = (label: string) =>
  command(
    `ensure ${label}`,
    () => true,
    async (m, r) => {
      const pin = await ensure(r, label);
      assert.equal(pin.created, !m.pinned.has(label), `${label} created only when it was not pinned`);
      for (let l: string | null = label; l; l = PARENT[l]!) m.pinned.add(l);
      await checkInvariants(m, r);
    },
  );

/** Releasing a parent releases its children first, as an admin does (a child would be drift). */
const release = (label: string) =>
  command(
    `release ${label}`,
    () => true,
    async (m, r) => {
      for (const l of LABELS.filter((x) => PARENT[x] === label)) {
        await r.ns.release(l);
        m.pinned.delete(l);
      }
      await r.ns.release(label);
      m.pinned.delete(label);
      await checkInvariants(m, r);
    },
  );

const killSpawner = command(
  'kill the spawner',
  () => true,
  async (m, r) => {
    const pid = r.ns.spawner!.pid;
    if (pid !== undefined) {
      process.kill(pid, 'SIGKILL');
      await eventually(() => r.ns.spawner!.pid === undefined);
    }
    await checkInvariants(m, r);
  },
);

/** The spawner killed, and the next step taken before the agent's event loop hears of it. */
const killSpawnerUnheard = command(
  'kill the spawner, its exit not yet heard',
  () => true,
  async (_m, r) => {
    const pid = r.ns.spawner!.pid;
    if (pid !== undefined) killUnheard(pid);
  },
);

/** Every label at once while the spawner is killed: each is pinned, or fails with E_KERNEL and leaves no pin. */
const killUnderRequests = command(
  'ensure all, the spawner killed meanwhile',
  () => true,
  async (m, r) => {
    const spawner = r.ns.spawner!;
    const results = LABELS.map((l) =>
      ensure(r, l).then(
        () => null,
        (e: unknown) => e,
      ),
    );
    await new Promise((res) => setImmediate(res));
    if (spawner.pid !== undefined) process.kill(spawner.pid, 'SIGKILL');
    const errors = await Promise.all(results);
    LABELS.forEach((l, i) => {
      const e = errors[i];
      if (e === null) {
        for (let x: string | null = l; x; x = PARENT[x]!) m.pinned.add(x);
        return;
      }
      assert.ok(e instanceof Fault && e.kind === 'refused' && fromFault(e).code === 'E_KERNEL', `${l}: ${e instanceof Error ? e.message : JSON.stringify(e)}`);
    });
    await checkInvariants(m, r);
  },
);

/** A restart: a new Namespaces adopts the pins (maps from their records or through the spawner). */
const restart = (dropRecords: boolean) =>
  command(
    `restart${dropRecords ? ', records lost' : ''}`,
    () => true,
    async (m, r) => {
      r.ns.close();
      if (dropRecords) rmSync(join(r.tree.pins, '.usernsd-records'), { recursive: true, force: true });
      r.ns = new Namespaces({ pinsDir: r.tree.pins, spawner: 'native' });
      const report = await r.ns.adopt(r.cfg.contexts);
      assert.deepEqual(
        report.filter((e) => e.status !== 'ok').map((e) => e.message),
        [],
      );
      assert.deepEqual(report.map((e) => e.label).sort(), [...m.pinned].sort());
      m.restarts++;
      await checkInvariants(m, r);
    },
  );

describe('integration: namespaces through usernsd-spawner over time, model-based (root)', function () {
  this.timeout(300_000);
  before(function () {
    if (!isRoot || !NATIVE_SPAWNER) this.skip();
  });

  it('keeps pins, maps and holders as the model says across creations, releases, spawner deaths and restarts', async () => {
    const commands = [
      ...LABELS.flatMap((l) => [fc.constant(create(l)), fc.constant(release(l))]),
      fc.constant(killSpawner),
      fc.constant(killSpawnerUnheard),
      fc.constant(killUnderRequests),
      fc.constant(restart(false)),
      fc.constant(restart(true)),
    ];
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { maxCommands: 25 }), async (cmds) => {
        const tree = makeTree();
        for (const l of LABELS)
          tree.context(`${l}.conf`, `[context]\n${PARENT[l] ? `parent = ${PARENT[l]}\n` : ''}uid_map = ${MAPS[l]}\ngid_map = ${MAPS[l]}\n`);
        const cfg = loadConfiguration(tree.config, { record: true, systemIds: () => [] });
        assert.deepEqual(cfg.errors, []);
        const real: Real = { tree, ns: new Namespaces({ pinsDir: tree.pins, spawner: 'native' }), cfg, inos: new Set() };
        try {
          await fc.asyncModelRun(() => ({ model: { pinned: new Set<string>(), restarts: 0 }, real }), cmds);
        } finally {
          real.ns.close();
          unmountAll(tree.dir);
          tree.remove();
        }
      }),
      { numRuns: 15 },
    );
  });
});

describe('unit: which spawner the agent uses', () => {
  it('takes usernsd-spawner when built (auto), never for node, and refuses native without it, saying how to build it', () => {
    const missing = '/nonexistent/usernsd-spawner';
    assert.equal(useNativeSpawner('auto', missing), false);
    assert.equal(useNativeSpawner('node', SPAWNER_PATH), false);
    assert.equal(useNativeSpawner('auto', SPAWNER_PATH), existsSync(SPAWNER_PATH));
    assert.throws(
      () => useNativeSpawner('native', missing),
      (e) =>
        e instanceof Fault &&
        fromFault(e).code === 'E_CONFIG' &&
        /was not built: install a C compiler \(apt-get install gcc libc6-dev\) and run "make"/.test(fromFault(e).message),
    );
  });
});

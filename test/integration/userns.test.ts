// Real user namespaces, as root: create, pin, nest, owner entry, concurrency, adopt, drift, release.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, readlinkSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { loadConfiguration } from '../../agent/configure.ts';
import type { Configuration } from '../../agent/configure.ts';
import { Fault } from '../../agent/fault.ts';
import { fromFault } from '../../agent/advice.ts';
import type { UsernsError } from '../../agent/errors.ts';

/** What the kernel floor threw, as the request edge says it: kernel/ throws faults, never protocol errors. */
function atTheEdge(e: unknown): UsernsError {
  assert.ok(e instanceof Fault, `not a Fault: ${String(e)}`);
  return fromFault(e);
}
import { Namespaces, pinnedIno } from '../../agent/kernel/userns.ts';
import { namespaceMaker } from '../../agent/kernel/makers.ts';
import type { Holder, NamespaceMaker } from '../../agent/kernel/makers.ts';
import { ViewNamespaces } from '../../agent/kernel/idmapped.ts';
import type { Pin } from '../../agent/kernel/userns.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, kernelMaps, makeUser, mountsUnder, unmountAll } from '../helpers/kernel.ts';
import { NATIVE_SPAWNER } from '../helpers/unit.ts';

/** Parents first, as the agent does it. */
async function ensure(ns: Namespaces, cfg: Configuration, label: string): Promise<Pin> {
  const ctx = cfg.contexts.get(label)!;
  if (ctx.parent === 'host') return ns.ensure(ctx, null);
  const parent = await ensure(ns, cfg, ctx.parent);
  return ns.ensure(ctx, { pin: parent.path, ino: parent.ino, host: cfg.hostMaps.get(ctx.parent)! });
}

/** Run as a namespace's owner until stdin closes: "ready", its passes over /proc, then every exposure seen. */
const EXPOSURE_WATCHER = `
import os, sys, select
hits, passes = set(), 0
print('ready', flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:
    passes += 1
    for p in os.listdir('/proc'):
        if not p.isdigit():
            continue
        try:
            ids = next(l for l in open('/proc/%s/status' % p) if l.startswith('Uid:')).split()[1:]
            if '0' in ids:
                hits.add('%s %s uids %s' % (p, os.readlink('/proc/%s/ns/user' % p), ' '.join(ids)))
        except (OSError, StopIteration):
            pass
print(passes)
for h in sorted(hits):
    print(h)
`;

/** Whether the process holding a namespace is gone (or a zombie: its namespace links are), within 5 s. */
async function holderGone(pid: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    try {
      readlinkSync(`/proc/${pid}/ns/user`);
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

const load = (tree: Tree) => {
  const cfg = loadConfiguration(tree.config, { record: true, systemIds: () => [] });
  assert.deepEqual(cfg.errors, []);
  return cfg;
};

// Every test for both makers of namespaces: usernsd-spawner, and the helper forked per namespace.
for (const spawner of ['native', 'node'] as const)
  describe(`integration: user namespaces in the kernel, spawner = ${spawner} (root)`, function () {
    let tree: Tree;
    let ns: Namespaces;
    const made: Namespaces[] = [];
    /** Another Namespaces on the same pins, as a restarted agent has; closed after the test. */
    const another = () => {
      const n = new Namespaces({ pinsDir: tree.pins, spawner });
      made.push(n);
      return n;
    };
    before(function () {
      if (!isRoot) this.skip(); // creating, mapping and pinning namespaces for other owners needs root
      if (spawner === 'native' && !NATIVE_SPAWNER) this.skip(); // no C compiler: npm run build made no spawner
    });
    beforeEach(() => {
      tree = makeTree();
      ns = new Namespaces({ pinsDir: tree.pins, spawner });
    });
    afterEach(() => {
      for (const n of [ns, ...made.splice(0)]) n.close();
      unmountAll(tree.dir);
      tree.remove();
    });

    it('creates, pins and verifies a context, as the kernel sees it', async () => {
      tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 200000 1000, 1000 300000 10\n');
      const pin = await ensure(ns, load(tree), 'a');
      assert.equal(pin.created, true);
      assert.equal(pin.path, `${tree.pins}/a`);
      assert.deepEqual(kernelMaps(pin.path), { uid: '0 100000 65536', gid: '0 200000 1000, 1000 300000 10' });
      const mi = readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .filter((l) => l.split(' ')[4] === pin.path);
      assert.equal(mi.length, 1, 'exactly one mount on the pin');
      assert.match(mi[0], / - nsfs nsfs /);
      assert.equal(pinnedIno(pin.path), pin.ino);
      assert.equal((await ensure(ns, load(tree), 'a')).created, false, 'a second ensure reuses the pin');
      assert.equal(mountsUnder(tree.pins).length, 1, 'no stacked mount');
    });

    it('nests two levels deep, writing maps from inside each parent', async () => {
      tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
      tree.context('b.conf', '[context]\nparent = a\nuid_map = 0 1000 5000\ngid_map = 0 1000 5000\n');
      tree.context('c.conf', '[context]\nparent = b\nuid_map = 0 100 100\ngid_map = 0 200 100\nsetgroups = deny\n');
      const cfg = load(tree);
      const c = await ensure(ns, cfg, 'c');
      assert.deepEqual(kernelMaps(c.path), { uid: '0 100 100', gid: '0 200 100' });
      assert.deepEqual(kernelMaps(`${tree.pins}/b`), { uid: '0 1000 5000', gid: '0 1000 5000' });
      // Inside c, host uid 101100 is root: a file owned by it shows as 0 there.
      const f = `${tree.dir}/owned`;
      writeFileSync(f, '');
      spawnSync('chown', ['101100:101200', f]);
      const r = spawnSync('nsenter', [`--user=${c.path}`, '--preserve-credentials', 'stat', '-c', '%u %g', f], { encoding: 'utf8' });
      assert.equal(r.stdout.trim(), '0 0');
      assert.equal(
        readFileSync(`/proc/self/mountinfo`, 'utf8')
          .split('\n')
          .filter((l) => l.includes(tree.pins)).length,
        3,
      );
    });

    it('lets the owner enter its context without root, and refuses it a root-owned one', async () => {
      const user = makeUser();
      try {
        tree.delegate(user.name, 400000, 65536);
        tree.context('mine.conf', `[context]\nowner = ${user.name}\nuid_map = 0 400000 65536\ngid_map = 0 400000 65536\n`);
        tree.context('roots.conf', '[context]\nuid_map = 0 500000 65536\ngid_map = 0 500000 65536\n');
        const cfg = load(tree);
        assert.equal(cfg.contexts.get('mine')!.setgroups, 'deny');
        const mine = await ensure(ns, cfg, 'mine');
        const roots = await ensure(ns, cfg, 'roots');
        const enter = (pin: string) =>
          spawnSync(
            'runuser',
            [
              '-u',
              user.name,
              '--',
              'nsenter',
              `--user=${pin}`,
              '-S',
              '0',
              '-G',
              '0',
              '--preserve-credentials',
              'sh',
              '-c',
              'id -u; id -g; cat /proc/self/setgroups',
            ],
            { encoding: 'utf8' },
          );
        const ok = enter(mine.path);
        assert.equal(ok.status, 0, ok.stderr);
        assert.deepEqual(ok.stdout.trim().split('\n'), ['0', '0', 'deny']);
        const refused = enter(roots.path);
        assert.notEqual(refused.status, 0);
        assert.match(refused.stderr, /Operation not permitted/);
      } finally {
        user.remove();
      }
    });

    it("never lets an owner trace what runs in its namespace with root's ids: maps read back, nested creation", async function () {
      this.timeout(60_000);
      const user = makeUser();
      let watcher: ChildProcess | undefined;
      try {
        tree.delegate(user.name, 400000, 65536);
        tree.context('mine.conf', `[context]\nowner = ${user.name}\nuid_map = 0 400000 65536\ngid_map = 0 400000 65536\n`);
        for (let i = 0; i < 5; i++)
          tree.context(`kid${i}.conf`, `[context]\nparent = mine\nuid_map = 0 ${1000 + i * 100} 100\ngid_map = 0 ${1000 + i * 100} 100\n`);
        const cfg = load(tree);
        await ensure(ns, cfg, 'mine');
        // As the owner, all along: every process with one of root's ids whose namespace it may read
        // (the kernel's ptrace check) is one it could also trace, and take root's file access from.
        watcher = spawn('runuser', ['-u', user.name, '--', 'python3', '-c', EXPOSURE_WATCHER], { stdio: ['pipe', 'pipe', 'inherit'] });
        const out = (async () => {
          let t = '';
          for await (const d of watcher.stdout!) t += d;
          return t;
        })();
        await new Promise((r) => watcher!.stdout!.once('data', r)); // "ready"
        for (let round = 0; round < 20; round++) {
          rmSync(`${tree.pins}/.usernsd-records/mine.json`, { force: true }); // as after an upgrade: the kernel is asked
          const report = await another().adopt(cfg.contexts);
          assert.equal(report.find((e) => e.label === 'mine')?.status, 'ok');
        }
        for (let i = 0; i < 5; i++) await ensure(ns, cfg, `kid${i}`);
        watcher.stdin!.end();
        const lines = (await out).trim().split('\n');
        assert.equal(lines[0], 'ready');
        assert.ok(Number(lines[1]) > 0, `the watcher looked (${lines[1]} passes)`);
        // In the namespaces this test made: a uid the system gives the owner may have owned another
        // test's namespaces until that test removed its user (files run side by side), and a root
        // process that test runs in one of them is not this one's to judge.
        const ours = new Set(['mine', 'kid0', 'kid1', 'kid2', 'kid3', 'kid4'].map((l) => `user:[${pinnedIno(`${tree.pins}/${l}`)}]`));
        assert.deepEqual(
          lines.slice(2).filter((l) => ours.has(l.split(' ')[1])),
          [],
          "processes with root's ids the owner could trace",
        );
      } finally {
        if (watcher && watcher.exitCode === null && watcher.signalCode === null) {
          const gone = new Promise((r) => watcher!.once('exit', r));
          watcher.kill();
          await gone; // userdel refuses a user that still runs a process
        }
        user.remove();
      }
    });

    it('creates exactly one namespace for concurrent requests of one label', async () => {
      tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
      const cfg = load(tree);
      const pins = await Promise.all(Array.from({ length: 10 }, () => ensure(ns, cfg, 'a')));
      assert.equal(pins.filter((p) => p.created).length, 1);
      assert.equal(new Set(pins.map((p) => p.ino)).size, 1);
      assert.equal(mountsUnder(tree.pins).length, 1);
    });

    it('releases with a lazy unmount and unlink, idempotently, also a stacked pin', async () => {
      tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
      const pin = await ensure(ns, load(tree), 'a');
      spawnSync('mount', ['--bind', pin.path, pin.path]); // someone else stacked a mount on it
      assert.equal(mountsUnder(tree.pins).length, 2);
      assert.equal(await ns.release('a'), true);
      assert.equal(existsSync(pin.path), false);
      assert.deepEqual(mountsUnder(tree.pins), []);
      assert.equal(await ns.release('a'), false, 'releasing again is not an error');
    });

    it('adopts after a crash: removes an empty pin file, reports orphans and drift, trusts its records', async () => {
      tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
      tree.context('b.conf', '[context]\nuid_map = 0 200000 100\ngid_map = 0 200000 100\n');
      tree.context('c.conf', '[context]\nuid_map = 0 300000 100\ngid_map = 0 300000 100\n');
      const cfg = load(tree);
      await ensure(ns, cfg, 'a');
      await ensure(ns, cfg, 'b');
      await ensure(ns, cfg, 'c');
      writeFileSync(`${tree.pins}/crashed`, ''); // a crash between pin file and mount
      unlinkSync(`${tree.pins}/.usernsd-records/a.json`); // a crash between mount and record: the kernel is asked
      // Now b's file changes (drift) and c's file goes (orphan).
      tree.context('b.conf', '[context]\nuid_map = 0 200000 50\ngid_map = 0 200000 100\n');
      rmSync(`${tree.contexts}/c.conf`);
      const report = await another().adopt(load(tree).contexts);
      const by = new Map(report.map((e) => [e.label, e]));
      assert.equal(by.get('a')!.status, 'ok');
      assert.equal(by.get('b')!.status, 'drift');
      assert.deepEqual(by.get('b')!.actual!.uidMap, [{ inside: 0, outside: 200000, count: 100 }]);
      assert.equal(by.get('c')!.status, 'orphan');
      assert.equal(by.get('crashed')!.status, 'removed');
      assert.equal(existsSync(`${tree.pins}/crashed`), false);
      assert.ok(existsSync(`${tree.pins}/.usernsd-records/a.json`), 'the record is rebuilt from the kernel');
      // A record of another boot for a pin with the same inode number (they repeat after a reboot),
      // saying other maps: not trusted, the kernel is asked, and a is still ok.
      const rec = JSON.parse(readFileSync(`${tree.pins}/.usernsd-records/a.json`, 'utf8')) as { boot: string; uidMap: unknown };
      writeFileSync(
        `${tree.pins}/.usernsd-records/a.json`,
        JSON.stringify({ ...rec, boot: '00000000-0000-0000-0000-000000000000', uidMap: [{ inside: 0, outside: 5, count: 1 }] }),
      );
      const again = await another().adopt(load(tree).contexts);
      assert.equal(again.find((e) => e.label === 'a')!.status, 'ok', 'a record of another boot is not trusted');
      await assert.rejects(ensure(another(), load(tree), 'b'), (e) => atTheEdge(e).code === 'E_CONFIG' && /drift/.test(atTheEdge(e).message));
    });

    it('turns ENOSPC (the namespace limit) into E_KERNEL with what to change, and recovers', async () => {
      tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
      tree.context('b.conf', '[context]\nparent = a\nuid_map = 0 1000 100\ngid_map = 0 1000 100\n');
      const cfg = load(tree);
      const a = await ensure(ns, cfg, 'a');
      // The limit of the parent namespace (root inside it may set it): no namespace may be made in it.
      const limit = (n: number) =>
        spawnSync('nsenter', [`--user=${a.path}`, '-S', '0', '-G', '0', 'sh', '-c', `echo ${n} > /proc/sys/user/max_user_namespaces`]);
      assert.equal(limit(0).status, 0);
      await assert.rejects(ensure(ns, cfg, 'b'), (fault) => {
        const e = atTheEdge(fault);
        assert.equal(e.code, 'E_KERNEL');
        assert.match(e.message, /Failed to create the user namespace for context "b": ENOSPC/);
        assert.match(e.message, /max_user_namespaces/);
        return true;
      });
      assert.equal(existsSync(`${tree.pins}/b`), false, 'a failed creation leaves no pin');
      assert.equal(limit(1000).status, 0);
      assert.equal((await ensure(ns, cfg, 'b')).created, true, 'and works again once the limit is raised');
    });

    it('turns a map the kernel refuses into E_KERNEL (EPERM), leaving no pin', async () => {
      tree.context('a.conf', '[context]\nuid_map = 0 100000 1000\ngid_map = 0 100000 1000\n');
      const cfg = load(tree);
      const a = await ensure(ns, cfg, 'a');
      // Bypass the configuration check on purpose: ids 5000.. are not mapped in the parent.
      const bad = { ...cfg.contexts.get('a')!, label: 'bad', parent: 'a', uidMap: [{ inside: 0, outside: 5000, count: 10 }] };
      await assert.rejects(ns.ensure(bad, { pin: a.path, ino: a.ino, host: cfg.hostMaps.get('a')! }), (fault) => {
        const e = atTheEdge(fault);
        assert.equal(e.code, 'E_KERNEL');
        // The spawner names the very file the kernel refused; the forked helper, its script.
        assert.match(
          e.message,
          spawner === 'native' ? /Failed to write uid_map for context "bad": EPERM/ : /Failed to write the nested maps for context "bad": EPERM/,
        );
        return true;
      });
      assert.equal(existsSync(`${tree.pins}/bad`), false);
    });

    it('makes the pins directory again when it went between two creations it looked at once for both (the clock held still)', async () => {
      tree.context('a.conf', '[context]\nuid_map = 0 100000 1000\ngid_map = 0 100000 1000\n');
      tree.context('b.conf', '[context]\nuid_map = 0 200000 1000\ngid_map = 0 200000 1000\n');
      const cfg = load(tree);
      const now = performance.now.bind(performance);
      const t = now();
      performance.now = () => t; // within one look at the directories (DIRS_RECHECK_MS), however long this takes
      try {
        await ensure(ns, cfg, 'a');
        assert.equal(spawnSync('umount', ['-l', `${tree.pins}/a`]).status, 0);
        rmSync(tree.pins, { recursive: true });
        const b = await ensure(ns, cfg, 'b');
        assert.equal(pinnedIno(b.path), b.ino, 'b is pinned in the directory made again');
        assert.equal(existsSync(`${tree.pins}/.usernsd-records/format`), true, 'its records directory says its format again');
      } finally {
        performance.now = now;
      }
    });

    it('holds pin records until told, then writes each for the pin as it is: none for a pin released meanwhile, the new inode for one made again', async () => {
      for (const l of ['a', 'b', 'c'])
        tree.context(`${l}.conf`, `[context]\nuid_map = 0 ${l.charCodeAt(0) * 100000} 1000\ngid_map = 0 ${l.charCodeAt(0) * 100000} 1000\n`);
      const cfg = load(tree);
      const records = `${tree.pins}/.usernsd-records`;
      const recordOf = (label: string) =>
        existsSync(`${records}/${label}.json`) ? (JSON.parse(readFileSync(`${records}/${label}.json`, 'utf8')) as { ino: number }).ino : null;
      ns.holdRecords();
      const first = await Promise.all(['a', 'b', 'c'].map((l) => ensure(ns, cfg, l)));
      assert.deepEqual(['a', 'b', 'c'].map(recordOf), [null, null, null], 'held: nothing written yet');
      assert.equal(ns.recordsUnwritten, 3);
      await ns.release('a');
      await ns.release('b');
      const b = await ensure(ns, cfg, 'b');
      assert.notEqual(b.ino, first[1].ino, 'b made again');
      // A restarted agent meanwhile has no record to go by: it asks the kernel, and finds them as configured.
      assert.deepEqual(
        (await another().adopt(cfg.contexts)).map((e) => [e.label, e.status]),
        [
          ['b', 'ok'],
          ['c', 'ok'],
        ],
      );
      const r = await ns.writeHeldRecords(1);
      assert.deepEqual(r, { written: 2, failed: 0, error: null });
      assert.deepEqual(['a', 'b', 'c'].map(recordOf), [null, b.ino, first[2].ino], 'each record names its pin as it is now; a released one has none');
      // No longer held: the next pin is recorded as it is made.
      const a = await ensure(ns, cfg, 'a');
      assert.equal(recordOf('a'), a.ino);
    });

    it('refuses a namespace whose maps, as read back, are not the configured ones: no pin, its holder ended', async () => {
      tree.context('a.conf', '[context]\nuid_map = 0 100000 1000\ngid_map = 0 100000 1000\n');
      const cfg = load(tree);
      // Between the maker and the checks: each holder says the kernel holds another gid map.
      const real = namespaceMaker(spawner, null, tree.pins);
      const holders: number[] = [];
      const lying: NamespaceMaker = {
        spawner: real.spawner,
        make: async (req) => {
          const h = await real.make(req);
          holders.push(h.pid);
          return Object.assign(Object.create(h) as Holder, { maps: { uidMap: req.uidMap, gidMap: [{ inside: 0, outside: 100001, count: 1000 }] } });
        },
        unpin: (label, path) => real.unpin(label, path),
        maps: (label, pin) => real.maps(label, pin),
        close: () => real.close(),
      };
      const checked = new Namespaces({ pinsDir: tree.pins, maker: lying });
      made.push(checked);
      await assert.rejects(checked.ensure(cfg.contexts.get('a')!, null), (fault) => {
        const e = atTheEdge(fault);
        assert.equal(e.code, 'E_KERNEL');
        assert.match(e.message, /Failed to verify the gid map of context "a": the kernel holds "0 100001 1000"/);
        return true;
      });
      assert.equal(existsSync(`${tree.pins}/a`), false, 'no pin');
      assert.equal(holders.length, 1);
      assert.equal(await holderGone(holders[0]), true, 'its holder ended');
      // Told the truth (the maker's own answer, or the agent's read of /proc), the same maker's namespace is pinned.
      assert.equal((await ensure(ns, cfg, 'a')).created, true);
    });

    it('makes the pin file before the namespace: an empty file meanwhile, no pin, removed when the making fails; a pin already there is reused, nothing made', async () => {
      tree.context('a.conf', '[context]\nuid_map = 0 100000 1000\ngid_map = 0 100000 1000\n');
      tree.context('b.conf', '[context]\nuid_map = 0 200000 1000\ngid_map = 0 200000 1000\n');
      const cfg = load(tree);
      const real = namespaceMaker(spawner, null, tree.pins);
      let asked = 0;
      let open!: (fail: boolean) => void;
      const gate = new Promise<boolean>((resolve) => (open = resolve));
      const gated: NamespaceMaker = {
        spawner: real.spawner,
        make: async (req) => {
          asked++;
          if (await gate)
            throw new Fault('refused', `Failed to create context "${req.label}": EAGAIN`, { object: 'namespace', label: req.label, errno: 'EAGAIN' });
          return real.make(req);
        },
        unpin: (label, path) => real.unpin(label, path),
        maps: (label, pin) => real.maps(label, pin),
        close: () => real.close(),
      };
      const checked = new Namespaces({ pinsDir: tree.pins, maker: gated });
      made.push(checked);
      const making = checked.ensure(cfg.contexts.get('a')!, null);
      while (asked === 0) await new Promise((r) => setImmediate(r));
      const st = lstatSync(`${tree.pins}/a`);
      assert.ok(st.isFile() && st.size === 0, 'the pin file is there, empty, while the namespace is made');
      assert.equal(pinnedIno(`${tree.pins}/a`), null, 'and is no pin');
      open(true);
      await assert.rejects(making, /EAGAIN/);
      assert.equal(existsSync(`${tree.pins}/a`), false, 'a failed making leaves no pin file');
      // Pinned by another (a restart's agent, before this one knew of it): found by the pin file's creation, checked and reused.
      const b = await ensure(ns, cfg, 'b');
      const before = asked;
      const again = await checked.ensure(cfg.contexts.get('b')!, null);
      assert.deepEqual([again.created, again.ino, asked], [false, b.ino, before], 'reused, nothing made');
    });

    it("makes a view's idmap namespace with the same maker (owned by root, the maps as asked), kept per map", async () => {
      const views = new ViewNamespaces(ns.maker);
      const maps = {
        uid: [{ inside: 0, outside: 7100000, count: 65536 }],
        gid: [
          { inside: 0, outside: 7200000, count: 1000 },
          { inside: 5000, outside: 7300000, count: 10 },
        ],
      };
      const fd = await views.usernsFor(maps);
      try {
        assert.equal(await views.usernsFor(maps), fd, 'made once per map, then kept');
        const through = (file: string) =>
          spawnSync('nsenter', [`--user=/proc/${process.pid}/fd/${fd}`, '--preserve-credentials', '--', 'cat', file], { encoding: 'utf8' });
        assert.match(through('/proc/self/uid_map').stdout, /^\s*0\s+7100000\s+65536\s*$/);
        assert.match(through('/proc/self/gid_map').stdout, /^\s*0\s+7200000\s+1000\s*\n\s*5000\s+7300000\s+10\s*$/);
        await assert.rejects(views.usernsFor({ uid: [], gid: maps.gid }), /this view maps no ids at all/);
      } finally {
        views.close();
      }
    });
  });

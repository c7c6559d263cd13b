// The parse cache of reloads (issue 26), model-based and in-process: files are rewritten (the same
// size, times set back, renamed over, made symbolic links), chmod'ed, chown'ed and removed, names
// and the pool size change, time passes, and after each reload the configuration loaded with the
// cache must be exactly the one loaded without it.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadConfigurationAsync } from '../../agent/configure.ts';
import type { Configuration } from '../../agent/configure.ts';
import { closeFd, openDirPath } from '../../agent/kernel/sys.ts';
import { sameStampAt, stampCounts, stampsAt, STAMPS_LIBRARY, useStampsLibrary } from '../../agent/kernel/stamps.ts';
import { formatConfigError, stampOf } from '../../config/ini.ts';
import { linkContexts, ParseCache, parseContextFile } from '../../config/load.ts';
import { Judgement } from '../../config/judge.ts';
import type { Context, ContextDef, Nss } from '../../config/types.ts';
import { makeTree, testNss } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';

/** Not kept when changed less than this before it was read: short, so that the histories age files. */
const RACY_MS = 6;

const LABELS = ['aa', 'bb'] as const;
// Texts of one length, so that a rewrite leaves the size as it was: only the times and ctime tell.
const TEXTS = [
  '[context]\nuid_map = 0 4000000 1000\ngid_map = 0 4000000 1000\n',
  '[context]\nuid_map = 0 4100000 1000\ngid_map = 0 4100000 1000\n',
  '[context]\nuid_map = 0 4000000 1000\ngid_map = 0 4000000 1001\n',
  '[context]\nowner = hpa\nuid_map = 0 1000 1\ngid_map = 0 1000 1\n',
  '[context]\nrange = auto\n',
  // Nested, under another label, and one naming its label: a linking kept from the last load must see them change.
  '[context]\nparent = aa\nuid_map = 0 0 100\ngid_map = 0 0 100\n',
  '[context]\nparent = bb\nuid_map = 0 0 100\ngid_map = 0 0 100\n',
  '[context]\nlabel = zz\nuid_map = 0 4200000 1000\ngid_map = 0 4200000 1000\n',
];

type Model = { hpa: number; poolSize: number };
type Real = { tree: Tree; cache: ParseCache; judgement: Judgement; inForce: Map<string, Context>; nss: Nss; state: Model };

const path = (r: Real, label: string) => join(r.tree.contexts, `${label}.conf`);
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
/**
 * A configuration as data to compare: its contexts by label, its errors and kept contexts sorted (a
 * reload that judges again only what changed keeps an edited context in its place, where a whole
 * judgement puts the ones in force first: the order is parents before children either way, which
 * the reload checks on its own).
 */
const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const shown = (c: Configuration) =>
  JSON.stringify({
    contexts: [...c.contexts.values()].sort((a, b) => byText(a.label, b.label)),
    errors: c.errors.map((e) => JSON.stringify(e)).sort(byText),
    kept: [...c.kept].sort(byText),
    allocations: [...c.allocations].sort((a, b) => byText(a[0], b[0])),
  });

/** Every context after its parent, in the order of the configuration's contexts. */
function assertParentsFirst(c: Configuration): void {
  const seen = new Set<string>();
  for (const x of c.contexts.values()) {
    assert.ok(x.parent === 'host' || seen.has(x.parent), `${x.label} comes before its parent ${x.parent}`);
    seen.add(x.label);
  }
}

type Command = fc.AsyncCommand<Model, Real>;
const command = (name: string, run: (m: Model, r: Real) => void | Promise<void>): Command => ({
  check: () => true,
  run: async (m, r) => {
    await run(m, r);
  },
  toString: () => name,
});

const write = (label: string, text: string) => command(`write ${label} ${JSON.stringify(text)}`, (_m, r) => void r.tree.context(`${label}.conf`, text));
/** Rewritten, then its times set back to what they were to the nanosecond (touch -r): the ctime alone says it changed. */
const writeKeepTimes = (label: string, text: string) =>
  command(`write ${label}, times kept, ${JSON.stringify(text)}`, (_m, r) => {
    const ref = join(r.tree.dir, `${label}.times`);
    const existed = existsSync(path(r, label));
    if (existed) execFileSync('touch', ['-r', path(r, label), ref]);
    r.tree.context(`${label}.conf`, text);
    if (existed) execFileSync('touch', ['-r', ref, path(r, label)]);
  });
const renameOver = (label: string, text: string) =>
  command(`rename over ${label} ${JSON.stringify(text)}`, (_m, r) => {
    const tmp = join(r.tree.dir, `${label}.new`);
    writeFileSync(tmp, text, { mode: 0o644 });
    renameSync(tmp, path(r, label));
  });
const symlinkOver = (label: string) =>
  command(`symlink over ${label}`, (_m, r) => {
    const target = join(r.tree.dir, `${label}.target`);
    writeFileSync(target, TEXTS[0], { mode: 0o644 });
    rmSync(path(r, label), { force: true });
    symlinkSync(target, path(r, label));
  });
const chmod = (label: string, mode: number) =>
  command(`chmod ${mode.toString(8)} ${label}`, (_m, r) => {
    try {
      chmodSync(path(r, label), mode);
    } catch {
      /* not there */
    }
  });
const chown = (label: string, uid: number) =>
  command(`chown ${uid} ${label}`, (_m, r) => {
    try {
      chownSync(path(r, label), uid, 0);
    } catch {
      /* not there */
    }
  });
/** Written through a hard link outside the directory: the same inode changes, and the watch on the directory sees nothing. */
const writeThroughLink = (label: string, text: string) =>
  command(`write ${label} through a hard link ${JSON.stringify(text)}`, (_m, r) => {
    const other = join(r.tree.dir, `${label}.link`);
    if (!existsSync(path(r, label))) return;
    if (!existsSync(other)) linkSync(path(r, label), other);
    writeFileSync(other, text);
  });
const remove = (label: string) => command(`remove ${label}`, (_m, r) => rmSync(path(r, label), { force: true }));
/** The name hpa now means the other uid (1000 <-> 1001). */
const renameUser = command('hpa changes uid', (m) => {
  m.hpa = m.hpa === 1000 ? 1001 : 1000;
});
/** usernsd.conf's pool size, which a range = auto without size = takes, changes (65536 <-> 131072). */
const poolSize = command('pool size changes', (m, r) => {
  m.poolSize = m.poolSize === 65536 ? 131072 : 65536;
  writeFileSync(r.tree.config, `${shownSettings(r)}[pool]\nsize = ${m.poolSize}\n`);
});
const age = command('age', () => sleep(RACY_MS + 4));

/** The tree's settings as makeTree wrote them, without a [pool] section. */
const shownSettings = (r: Real) => {
  const text = readFileSync(r.tree.config, 'utf8');
  return text.includes('[pool]') ? text.slice(0, text.indexOf('[pool]')) : text;
};

/** The test users, and hpa, whose uid the model changes. */
const nssOf = (state: Model): Nss => ({
  userByName: (n) => (n === 'hpa' ? { uid: state.hpa, gid: state.hpa } : testNss.userByName(n)),
  userById: (u) => (u === state.hpa ? { name: 'hpa', gid: state.hpa } : testNss.userById(u)),
  groupByName: (n) => testNss.groupByName(n),
});

let reused = 0;
let reloads = 0;
let listings = 0;
let partial = 0;
let linked = 0;
const reload = command('reload', async (_m, r) => {
  const opts = { record: false, systemIds: () => [], nss: r.nss, inForce: r.inForce };
  const before = { ...r.cache.counts, partial: r.judgement.counts.partial };
  // With what the agent keeps from load to load (the parses, the listing, the judgement), and without.
  const cached = await loadConfigurationAsync(r.tree.config, { ...opts, cache: r.cache, judgement: r.judgement });
  const fresh = await loadConfigurationAsync(r.tree.config, opts);
  reused += r.cache.counts.reused - before.reused;
  reloads++;
  listings += r.cache.counts.listed - before.listed;
  partial += r.judgement.counts.partial - before.partial;
  linked += r.cache.counts.linked - before.linked;
  assert.equal(shown(cached), shown(fresh), 'the configuration loaded with the cache is the one loaded without it');
  assertParentsFirst(cached);
  r.inForce = new Map(cached.contexts);
});

/** A reload once every file has settled: what it reads, it keeps. */
const agedReload = command('age, reload', async (m, r) => {
  await age.run(m, r);
  await reload.run(m, r);
});

describe('unit: the parse cache of reloads over time, in-process (model-based)', () => {
  // Stamps looked at all at once by the library (native/stamps.c), and one at a time as a build
  // without a C compiler looks at them.
  for (const library of [true, false])
    it(`a reload with the cache loads exactly what a reload without it loads, whatever happened to the files in between (stamps ${library ? 'through the library' : 'one at a time'})`, async () => {
      const label = fc.constantFrom(...LABELS);
      const text = fc.constantFrom(...TEXTS);
      const commands = fc.commands(
        [
          fc.tuple(label, text).map(([l, t]) => write(l, t)),
          fc.tuple(label, text).map(([l, t]) => writeKeepTimes(l, t)),
          fc.tuple(label, text).map(([l, t]) => renameOver(l, t)),
          label.map(symlinkOver),
          fc.tuple(label, fc.constantFrom(0o644, 0o664)).map(([l, m]) => chmod(l, m)),
          fc.tuple(label, fc.constantFrom(0, 1000)).map(([l, u]) => chown(l, u)),
          label.map(remove),
          fc.tuple(label, text).map(([l, t]) => writeThroughLink(l, t)),
          fc.constant(renameUser),
          fc.constant(poolSize),
          fc.constant(age),
          fc.constant(reload),
          fc.constant(agedReload),
          fc.constant(agedReload),
        ],
        { maxCommands: 25, size: 'max' },
      );
      reused = 0;
      reloads = 0;
      const looks = stampCounts.looks;
      listings = 0;
      partial = 0;
      linked = 0;
      useStampsLibrary(library);
      try {
        await fc.assert(
          fc.asyncProperty(commands, async (cmds) => {
            const tree = makeTree();
            const state: Model = { hpa: 1000, poolSize: 65536 };
            const nss = nssOf(state);
            try {
              tree.delegate('hpa', 1000, 2);
              tree.delegate('1001', 1000, 2);
              const real: Real = { tree, cache: new ParseCache(RACY_MS), judgement: new Judgement(), inForce: new Map(), nss, state };
              await fc.asyncModelRun(() => ({ model: state, real }), [...cmds, age, reload, reload]);
            } finally {
              tree.remove();
            }
          }),
          { numRuns: 30 },
        );
      } finally {
        useStampsLibrary(true);
      }
      // The histories did exercise the cache: files unchanged since they were read were taken from it,
      // listings of a directory that had not changed were taken again, judgements were partial.
      assert.ok(reused > 0, 'no reload took a file from the cache');
      assert.ok(listings < reloads, `every one of ${reloads} reloads listed the directory`);
      assert.ok(partial > 0, 'no reload judged only what changed');
      assert.ok(linked > 0, 'no reload kept the last linking');
      if (library)
        assert.ok(
          stampCounts.looks > looks,
          'no reload looked at the stamps through the library (it is built by npm run build with a C compiler: apt-get install gcc libc6-dev)',
        );
      else assert.equal(stampCounts.looks, looks, 'a reload looked through the library turned off');
    });

  // Each way a file can change under a kept parse, once: read and kept, changed, read again.
  const CHANGES: [string, string, Command][] = [
    ['rewritten, the same size, its times set back', TEXTS[0], writeKeepTimes('aa', TEXTS[1])],
    ['renamed over', TEXTS[0], renameOver('aa', TEXTS[2])],
    ['made a symbolic link', TEXTS[0], symlinkOver('aa')],
    ['made writable by its group', TEXTS[0], chmod('aa', 0o664)],
    ['given to another owner', TEXTS[0], chown('aa', 1000)],
    ['removed', TEXTS[0], remove('aa')],
    ['written through a hard link elsewhere', TEXTS[0], writeThroughLink('aa', TEXTS[1])],
    ['its owner name meaning another uid', TEXTS[3], renameUser],
    ['the pool size its range = auto takes changing', TEXTS[4], poolSize],
  ];
  for (const [what, text, change] of CHANGES) {
    it(`a kept file ${what} is read again`, async () => {
      const tree = makeTree();
      const state: Model = { hpa: 1000, poolSize: 65536 };
      try {
        tree.delegate('hpa', 1000, 2);
        tree.delegate('1001', 1000, 2);
        const real: Real = { tree, cache: new ParseCache(RACY_MS), judgement: new Judgement(), inForce: new Map(), nss: nssOf(state), state };
        await fc.asyncModelRun(() => ({ model: state, real }), [write('aa', text), agedReload, agedReload, change, agedReload]);
        // A parse that looked a name up is never kept; every other one was taken from the cache before the change.
        if (text === TEXTS[3]) assert.equal(real.cache.counts.reused, 0, 'a parse that looked up a name was kept');
        else assert.ok(real.cache.counts.reused > 0, 'the file was never taken from the cache');
      } finally {
        tree.remove();
      }
    });
  }

  it("the agent's statx look at a stamp agrees with lstat's, on every filesystem and device at hand, and says when it changed", () => {
    const dirs = ['/etc', '/usr/bin', '/dev', '/dev/shm', '/run', '/tmp', '/boot'].filter((d) => existsSync(d));
    let compared = 0;
    for (const dir of dirs) {
      const fd = openDirPath(dir);
      try {
        for (const name of readdirSync(dir).slice(0, 40)) {
          const st = lstatSync(join(dir, name), { throwIfNoEntry: false });
          if (!st) continue;
          const same = sameStampAt(fd, name, stampOf(st));
          // A file that changed between the two looks (a log, a socket's times) says false, never null.
          assert.notEqual(same, null, `${dir}/${name}`);
          if (same) compared++;
        }
        assert.equal(sameStampAt(fd, 'no-such-name-here', stampOf(lstatSync(dir))), null);
      } finally {
        closeFd(fd);
      }
    }
    assert.ok(compared > 50, `only ${compared} stamps agreed`);
    // Each field of the stamp counts.
    const tree = makeTree();
    try {
      const file = tree.context('aa.conf', TEXTS[0]);
      const fd = openDirPath(tree.contexts);
      try {
        const stamp = stampOf(lstatSync(file));
        assert.equal(sameStampAt(fd, 'aa.conf', stamp), true);
        for (const [field, other] of Object.entries(stamp)) assert.equal(sameStampAt(fd, 'aa.conf', { ...stamp, [field]: other + 1 }), false, field);
        chmodSync(file, 0o600);
        assert.equal(sameStampAt(fd, 'aa.conf', stamp), false, 'chmod');
      } finally {
        closeFd(fd);
      }
    } finally {
      tree.remove();
    }
  });

  it("the library's stamps of a whole listing, split between threads, agree with lstat's, field for field", async () => {
    assert.ok(existsSync(STAMPS_LIBRARY), `${STAMPS_LIBRARY} is missing: npm run build makes it with a C compiler (apt-get install gcc libc6-dev)`);
    // Directories of the machine: every filesystem and device at hand (a file may change between the looks).
    let compared = 0;
    for (const dir of ['/etc', '/usr/bin', '/dev', '/dev/shm', '/run', '/tmp', '/boot'].filter((d) => existsSync(d))) {
      const files = readdirSync(dir).map((n) => join(dir, n));
      if (files.length === 0) continue; // nothing to look at: no call
      const fd = openDirPath(dir);
      try {
        const stamps = await stampsAt(fd, files);
        assert.ok(stamps, dir);
        files.forEach((f, i) => {
          const st = lstatSync(f, { throwIfNoEntry: false });
          if (st && stamps.same(i, stampOf(st))) compared++;
        });
      } finally {
        closeFd(fd);
      }
    }
    assert.ok(compared > 200, `only ${compared} stamps agreed`);

    // A directory of this test's: times before 1970 and far ahead with odd fractions, sizes past 4 GiB
    // (sparse), modes, owners, a symbolic link, a directory, and names gone before the look.
    const tree = makeTree();
    try {
      const n = 2600; // more than one thread's share (native/stamps.c PER_THREAD_MIN)
      const arb = fc.record({
        mtime: fc.double({ min: -2e9, max: 1.6e10, noNaN: true }),
        ctimeFrom: fc.boolean(),
        size: fc.constantFrom(0, 1, 4096, 2 ** 32 + 7, 2 ** 40 + 3),
        mode: fc.constantFrom(0o644, 0o600, 0o4755),
        uid: fc.constantFrom(0, 1000, 65534),
        kind: fc.constantFrom('file', 'file', 'file', 'file', 'link', 'dir', 'gone'),
      });
      const specs = fc.sample(arb, { numRuns: n, seed: 20261207 });
      const files = specs.map((_, i) => join(tree.contexts, `f${String(i).padStart(5, '0')}.conf`));
      specs.forEach((s, i) => {
        const f = files[i];
        if (s.kind === 'link') symlinkSync(`target-${i}`, f);
        else if (s.kind === 'dir') mkdirSync(f);
        else if (s.kind === 'file') {
          writeFileSync(f, 'x', { mode: s.mode });
          truncateSync(f, s.size);
          chmodSync(f, s.mode);
          chownSync(f, s.uid, s.uid);
          utimesSync(f, s.mtime, s.mtime);
        }
      });
      const fd = openDirPath(tree.contexts);
      try {
        const stamps = await stampsAt(fd, files);
        assert.ok(stamps);
        assert.equal(stampCounts.threads, Math.min(2, availableParallelism()), 'threads the library used');
        specs.forEach((s, i) => {
          const st = lstatSync(files[i], { throwIfNoEntry: false });
          if (s.kind === 'gone') return assert.equal(stamps.same(i, stampOf(lstatSync(tree.contexts))), null, files[i]);
          assert.ok(st);
          const stamp = stampOf(st);
          assert.equal(stamps.same(i, stamp), true, `${files[i]}: ${JSON.stringify(stamp)}`);
          // Each field counts; nothing else does.
          for (const [field, v] of Object.entries(stamp)) assert.equal(stamps.same(i, { ...stamp, [field]: v + 1 }), false, `${files[i]} ${field}`);
          assert.equal(sameStampAt(fd, files[i].slice(files[i].lastIndexOf('/') + 1), stamp), true, 'statx one at a time agrees');
        });
      } finally {
        closeFd(fd);
      }
    } finally {
      tree.remove();
    }
  });

  it('a file read within the racy window of its last change is not kept (a second write in the same clock tick would leave its stamp as it was)', async () => {
    const tree = makeTree();
    try {
      const file = tree.context('aa.conf', TEXTS[0]);
      const ref = join(tree.dir, 'times');
      execFileSync('touch', ['-r', file, ref]);
      let now = statSync(file).ctimeMs + 500; // the read happens within the window
      const cache = new ParseCache(1000, () => now);
      const opts = { record: false, systemIds: () => [], nss: testNss, cache };
      await loadConfigurationAsync(tree.config, opts);
      assert.equal(cache.size, 0, 'a file changed within the racy window was kept');
      // The same size, with the times of the first version.
      writeFileSync(file, TEXTS[1]);
      execFileSync('touch', ['-r', ref, file]);
      now += 5000;
      const c = await loadConfigurationAsync(tree.config, opts);
      assert.equal(c.contexts.get('aa')!.uidMap[0].outside, 4100000);
      assert.equal(cache.counts.reused, 0);
      // Read once the file has settled, it is kept, and taken from the cache next time.
      await loadConfigurationAsync(tree.config, opts);
      assert.equal(cache.counts.reused, 1);
    } finally {
      tree.remove();
    }
  });

  it('a linking kept from the last load is what linking again gives, over random edits of labels and parents', () => {
    // Definitions as files make them: a label (the file's, or its own), a parent among the labels or the host.
    const names = ['a', 'b', 'c', 'd'];
    const arbDef = fc.record({
      file: fc.constantFrom(...names),
      label: fc.option(fc.constantFrom(...names), { freq: 4 }),
      parent: fc.constantFrom('host', 'host', ...names),
    });
    const def = (x: { file: string; label: string | null; parent: string }, edit: number) =>
      parseContextFile(
        `/etc/userns.d/${x.file}.conf`,
        `# ${edit}\n[context]\n${x.label ? `label = ${x.label}\n` : ''}parent = ${x.parent}\nuid_map = 0 0 1\ngid_map = 0 0 1\n`,
        testNss,
        65536,
      ).def!;
    let kept = 0;
    fc.assert(
      fc.property(
        fc.array(fc.array(arbDef, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat(4), { maxLength: 8 }),
        (loads, edits) => {
          const cache = new ParseCache();
          let last: ContextDef[] = [];
          loads.forEach((xs, n) => {
            // Some loads edit a file without changing it (a new definition, same label and parent).
            // Or edit one file's label, or its parent, the others left as they were (the very definitions).
            const fileOf = (d: ContextDef) => d.file.slice('/etc/userns.d/'.length, -'.conf'.length);
            const one = (change: (d: ContextDef) => { label: string | null; parent: string }) =>
              last.map((d, i) => (i === 0 ? def({ file: fileOf(d), ...change(d) }, n) : d));
            const made =
              n === 0 || last.length === 0 || edits[n] === undefined || edits[n] > 2
                ? xs.map((x) => def(x, n))
                : edits[n] === 0
                  ? last.map((d) => def({ file: fileOf(d), label: d.label, parent: d.parent }, n))
                  : edits[n] === 1
                    ? one((d) => ({ label: xs[0].label ?? xs[0].file, parent: d.parent }))
                    : one((d) => ({ label: d.label, parent: xs[0].parent }));
            const defs = made.filter((d) => d !== null); // a file that names itself its parent is refused by the parser
            const withCache = cache.link(defs, []);
            const fresh = linkContexts(defs, []);
            assert.deepEqual(withCache.defs, fresh.defs);
            assert.deepEqual(withCache.errors.map(formatConfigError), fresh.errors.map(formatConfigError));
            last = defs;
          });
          kept += cache.counts.linked;
        },
      ),
      { numRuns: 300 },
    );
    assert.ok(kept > 0, 'no load kept the last linking');
  });

  it('the contexts directory is listed again when an entry came or went, and when it changed within the racy window of its last listing', () => {
    const tree = makeTree();
    try {
      tree.context('aa.conf', TEXTS[0]);
      let now = statSync(tree.contexts).ctimeMs + 500; // listed within the window of the directory's last change
      const cache = new ParseCache(1000, () => now);
      assert.deepEqual(cache.list(tree.contexts), [join(tree.contexts, 'aa.conf')]);
      cache.list(tree.contexts);
      assert.equal(cache.counts.listed, 2, 'a listing taken within the racy window was kept');
      now += 5000;
      const settled = cache.list(tree.contexts);
      assert.equal(cache.list(tree.contexts), settled, 'a settled listing of an unchanged directory is taken again');
      assert.equal(cache.counts.listed, 3);
      // An entry added, then one removed: listed again each time.
      tree.context('bb.conf', TEXTS[1]);
      assert.deepEqual(cache.list(tree.contexts), [join(tree.contexts, 'aa.conf'), join(tree.contexts, 'bb.conf')]);
      rmSync(join(tree.contexts, 'aa.conf'));
      assert.deepEqual(cache.list(tree.contexts), [join(tree.contexts, 'bb.conf')]);
      assert.equal(cache.counts.listed, 5);
    } finally {
      tree.remove();
    }
  });
});

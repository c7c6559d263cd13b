// Configuration over time, model-based (fast-check commands): edits, reloads, resolves, releases and restarts, checked against the kernel after every step.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { callAgent } from '../../agent/wire/client.ts';
import { UsernsError } from '../../agent/errors.ts';
import * as P from '../../agent/wire/protocol.ts';
import type { Extent } from '../../config/types.ts';
import { cleanup, startAgent, USERNSD, usernsctlHere } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser, unmountAll } from '../helpers/kernel.ts';
import { modelTests } from '../helpers/model.ts';

// ---- the kernel's view ----

type Interval = { start: number; end: number };

/** A pinned namespace's maps in host ids, as the kernel shows them to a reader in the initial namespace. */
function hostMapsOfPin(pin: string): { uid: Interval[]; gid: Interval[] } {
  // /proc/PID/uid_map read from outside the namespace shows the reader's ids: run one process in
  // it and read its maps from here (this process: no interpreter started for each pin).
  const child = spawn('nsenter', [`--user=${pin}`, '--preserve-credentials', '--', 'sleep', '30'], { stdio: 'ignore' });
  try {
    const me = readlinkSync('/proc/self/ns/user');
    const inside = () => {
      try {
        return readlinkSync(`/proc/${child.pid}/ns/user`) !== me;
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 2500 && !inside(); i++) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
    const parse = (f: string) =>
      readFileSync(`/proc/${child.pid}/${f}`, 'utf8')
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => l.trim().split(/\s+/).map(Number))
        .map(([, outside, count]) => ({ start: outside, end: outside + count }));
    if (!inside()) throw new Error(`nsenter did not enter ${pin} within 5 s`);
    return { uid: parse('uid_map'), gid: parse('gid_map') };
  } finally {
    child.kill('SIGKILL');
  }
}

/** The maps a namespace's own processes see (outside ids are its parent's): one process reads both. */
function ownMapsOfPin(pin: string): { uid: string; gid: string } {
  const [u, g] = execFileSync('nsenter', [`--user=${pin}`, '--preserve-credentials', 'sh', '-c', 'cat /proc/self/uid_map; echo --; cat /proc/self/gid_map'], {
    encoding: 'utf8',
  }).split('--\n');
  const read = (t: string) =>
    t
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/).join(' '))
      .sort()
      .join(', ');
  return { uid: read(u), gid: read(g) };
}

/** ioctl_ns(2) NS_GET_PARENT on a pin: the nsfs inode of its parent namespace. */
function parentInoOfPin(pin: string): number {
  const script = 'import os,fcntl,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nprint(os.fstat(fcntl.ioctl(fd,0xb702)).st_ino)';
  return Number(execFileSync('python3', ['-c', script, pin], { encoding: 'utf8' }).trim());
}

const NSFS_DEV = statSync('/proc/self/ns/user').dev;
function pinnedLabels(pins: string): string[] {
  let names: string[];
  try {
    names = readdirSync(pins);
  } catch {
    return [];
  }
  return names.filter((n) => {
    try {
      return statSync(join(pins, n)).dev === NSFS_DEV;
    } catch {
      return false;
    }
  });
}

const fmt = (m: readonly Extent[]) =>
  m
    .map((e) => `${e.inside} ${e.outside} ${e.count}`)
    .sort()
    .join(', ');
const overlap = (a: Interval[], b: Interval[]) => a.some((x) => b.some((y) => x.start < y.end && y.start < x.end));

// ---- the model: context files an admin writes, and what the test remembers ----

type FileDef = { label: string; text: string };
type Model = { files: Map<string, { text: string; broken: boolean }>; autoRanges: Map<string, { size: number; range: string }> };
type Real = { tree: Tree; agent: RunningAgent; owner: { name: string; uid: number } };

// Few labels and ranges that often overlap: the interesting histories (a newcomer sorting before a
// context in force, a parent released under its child) then come up in a few dozen runs.
const TOP = ['aa', 'proj'] as const;
const NESTED = ['kid'] as const;
const AUTO = ['auto1'] as const;

function defArb(owner: string): fc.Arbitrary<FileDef> {
  const top = fc
    .record({
      label: fc.constantFrom(...TOP),
      start: fc.constantFrom(4000000, 4000100, 4130000, 4200000),
      count: fc.constantFrom(10, 65536),
      owner: fc.constantFrom('', `owner = ${owner}\n`),
      setgroups: fc.constantFrom('', 'setgroups = allow\n', 'setgroups = deny\n'),
      // Made at start and at the reload that brings it, its pin recorded once the agent serves.
      create: fc.constantFrom('', '', 'create = eager\n'),
    })
    .map(({ label, start, count, owner: o, setgroups, create }) => ({
      label,
      text: `[context]\n${o}${setgroups}${create}uid_map = 0 ${start} ${count}\ngid_map = 0 ${start} ${count}\n`,
    }));
  const nested = fc
    .record({
      label: fc.constantFrom(...NESTED),
      parent: fc.constantFrom(...TOP),
      start: fc.constantFrom(0, 5),
      owner: fc.constantFrom('', `owner = ${owner}\n`),
      setgroups: fc.constantFrom('', 'setgroups = allow\n'),
    })
    .map(({ label, parent, start, owner: o, setgroups }) => ({
      label,
      text: `[context]\nparent = ${parent}\n${o}${setgroups}uid_map = 0 ${start} 5\ngid_map = 0 ${start} 5\n`,
    }));
  const auto = fc
    .record({ label: fc.constantFrom(...AUTO), size: fc.constantFrom(65536, 131072) })
    .map(({ label, size }) => ({ label, text: `[context]\nrange = auto\nsize = ${size}\n` }));
  return fc.oneof({ arbitrary: top, weight: 3 }, { arbitrary: nested, weight: 2 }, { arbitrary: auto, weight: 1 });
}

const ALL_LABELS = [...TOP, ...NESTED, ...AUTO];

type Command = fc.AsyncCommand<Model, Real>;
const command = (name: string, check: (m: Readonly<Model>) => boolean, run: (m: Model, r: Real) => Promise<void>): Command => ({
  check,
  run,
  toString: () => name,
});

/** An admin writes a file, and often reloads at once. */
const write = (d: FileDef, andReload: boolean) =>
  command(
    `write ${d.label}.conf ${JSON.stringify(d.text)}${andReload ? ' + reload' : ''}`,
    () => true,
    async (m, r) => {
      r.tree.context(`${d.label}.conf`, d.text);
      m.files.set(d.label, { text: d.text, broken: false });
      if (andReload) {
        await callAgent(r.agent.socket, P.reload, {});
        await checkInvariants(m, r, true);
      }
    },
  );

const breakFile = (label: string) =>
  command(
    `break ${label}.conf`,
    (m) => m.files.has(label) && !m.files.get(label)!.broken,
    async (m, r) => {
      const f = m.files.get(label)!;
      r.tree.context(`${label}.conf`, f.text + 'bogus = 1\n');
      m.files.set(label, { ...f, broken: true });
    },
  );

const fixFile = (label: string) =>
  command(
    `fix ${label}.conf`,
    (m) => m.files.get(label)?.broken === true,
    async (m, r) => {
      const f = m.files.get(label)!;
      r.tree.context(`${label}.conf`, f.text);
      m.files.set(label, { ...f, broken: false });
    },
  );

const removeFile = (label: string) =>
  command(
    `remove ${label}.conf`,
    (m) => m.files.has(label),
    async (m, r) => {
      rmSync(join(r.tree.contexts, `${label}.conf`));
      m.files.delete(label);
    },
  );

const reload = command(
  'reload',
  () => true,
  async (m, r) => {
    await callAgent(r.agent.socket, P.reload, {});
    await checkInvariants(m, r, true);
  },
);

/**
 * Once the agent has stopped: every pin has its record, naming the pin's namespace and holding its
 * maps as the kernel does (the next start adopts the pins by them, without asking the kernel).
 */
function checkRecords(r: Real): void {
  for (const label of pinnedLabels(r.tree.pins)) {
    const pin = join(r.tree.pins, label);
    const rec = JSON.parse(readFileSync(join(r.tree.pins, '.usernsd-records', `${label}.json`), 'utf8')) as { ino: number; uidMap: Extent[]; gidMap: Extent[] };
    assert.equal(rec.ino, statSync(pin).ino, `${label}'s record names its pin`);
    assert.deepEqual({ uid: fmt(rec.uidMap), gid: fmt(rec.gidMap) }, ownMapsOfPin(pin), `${label}'s record holds its maps`);
  }
}

const restart = command(
  'restart',
  () => true,
  async (m, r) => {
    assert.equal(await r.agent.stop(), 0);
    checkRecords(r);
    r.agent = await startAgent(r.tree);
    await checkInvariants(m, r, true);
  },
);

/** An admin removes a file while the agent is down: at the next start its pin, if any, is an orphan. */
const removeWhileDown = (label: string) =>
  command(
    `stop, remove ${label}.conf, start`,
    (m) => m.files.has(label),
    async (m, r) => {
      assert.equal(await r.agent.stop(), 0);
      checkRecords(r);
      await removeFile(label).run(m, r);
      r.agent = await startAgent(r.tree);
      await checkInvariants(m, r, true);
    },
  );

/** Every file under `dir` (the state and the pins' records) with its bytes, and every pin's inode: what a refused agent must leave as it was. */
function snapshotFiles(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const own = statSync(dir).dev;
  for (const name of readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort()) {
    const path = join(dir, name);
    const st = statSync(path, { throwIfNoEntry: false });
    if (!st) continue;
    // A pin is a namespace mounted on its file (nsfs, which cannot be read): the namespace it holds.
    if (st.dev !== own) out.set(name, `mounted ${st.dev}:${st.ino}`);
    else if (st.isFile()) out.set(name, readFileSync(path, 'latin1'));
    else out.set(name, `${st.isDirectory() ? 'dir' : 'other'} ${st.ino}`);
  }
  return out;
}

/**
 * An admin starts a second usernsd beside the running one, on the same directories and another
 * socket (files may have changed since the last reload: what it would load differs): it refuses,
 * naming the first, and nothing in the state, the pins or the kernel has changed.
 */
const secondAgent = command(
  'a second agent starts beside it',
  () => true,
  async (m, r) => {
    const other = join(r.tree.dir, 'second.conf');
    writeFileSync(other, readFileSync(r.tree.config, 'utf8').replace(/^socket = .*$/m, `socket = ${join(r.tree.dir, 'second.sock')}`));
    const before = [snapshotFiles(r.tree.state), snapshotFiles(r.tree.pins)];
    const second = await new Promise<{ code: number | null; err: string }>((done) => {
      const child = spawn(process.execPath, [USERNSD, '--config', other], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });
      let err = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
      child.on('close', (code) => done({ code, err }));
    });
    assert.equal(second.code, 1, second.err);
    assert.match(second.err, new RegExp(`usernsd: another usernsd \\(pid ${r.agent.child.pid}\\) is using the state directory`));
    assert.deepEqual([snapshotFiles(r.tree.state), snapshotFiles(r.tree.pins)], before, 'the refused agent changed the state or the pins');
    await checkInvariants(m, r, false);
  },
);

const resolve = (label: string) =>
  command(
    `resolve ${label}`,
    () => true,
    async (m, r) => {
      try {
        await callAgent(r.agent.socket, P.resolve, { label });
      } catch (err) {
        // Refused files, drift and unknown labels are answers; the kernel refusing what the
        // configuration admitted, or an internal error, is a bug.
        if (!(err instanceof UsernsError) || err.code === 'E_KERNEL' || err.code === 'E_INTERNAL') throw err;
      }
      await checkInvariants(m, r, false);
    },
  );

const release = (label: string) =>
  command(
    `release ${label}`,
    () => true,
    async (m, r) => {
      await callAgent(r.agent.socket, P.release, { label });
      await checkInvariants(m, r, false);
    },
  );

/** After every step: what holds in the kernel, not only in the agent's memory. */
async function checkInvariants(m: Model, r: Real, settled: boolean): Promise<void> {
  const { contexts } = await callAgent(r.agent.socket, P.list, {});
  const byLabel = new Map(contexts.map((c) => [c.label, c]));
  const pinned = new Set(pinnedLabels(r.tree.pins));
  // A context's id in host ids, through its chain (the configuration admitted it, so each id is mapped).
  const toHost = (label: string, kind: 'uid' | 'gid', id: number): number => {
    if (label === 'host') return id;
    const c = byLabel.get(label)!;
    const e = (kind === 'uid' ? c.uidMap : c.gidMap).find((x) => id >= x.inside && id < x.inside + x.count)!;
    return toHost(c.parent, kind, id - e.inside + e.outside);
  };
  const hostOf = (label: string) => {
    const c = byLabel.get(label)!;
    const ivs = (kind: 'uid' | 'gid') =>
      (kind === 'uid' ? c.uidMap : c.gidMap).map((e) => {
        const start = toHost(c.parent, kind, e.outside);
        return { start, end: start + e.count };
      });
    return { uid: ivs('uid'), gid: ivs('gid') };
  };
  const related = (a: string, b: string) => {
    const ancestors = (l: string) => {
      const out = [l];
      for (let c = byLabel.get(l); c && c.parent !== 'host'; c = byLabel.get(c.parent)) out.push(c.parent);
      return out;
    };
    return ancestors(a).includes(b) || ancestors(b).includes(a);
  };
  const status = await callAgent(r.agent.socket, P.status, {});
  const state = new Map((status.contextStates ?? []).map((s) => [s.label, s.state]));
  // Host ids: from the kernel for pinned contexts in force, from the agent's answer for the others.
  // A pin in drift (or stale under one) is not in force: the agent never hands it out, and its
  // context gets the configured ids once it is released; its namespace still lies inside the
  // one it was made in, so its kernel ids are that namespace's.
  const host = new Map<string, { uid: Interval[]; gid: Interval[] }>();
  const inForce = (label: string) => pinned.has(label) && state.get(label) === 'pinned';
  for (const c of contexts) host.set(c.label, inForce(c.label) ? hostMapsOfPin(join(r.tree.pins, c.label)) : hostOf(c.label));
  // 1. No two contexts in force share a host uid or gid (a nested one lies inside its ancestors).
  for (const a of contexts) {
    for (const b of contexts) {
      if (a.label >= b.label || related(a.label, b.label)) continue;
      for (const kind of ['uid', 'gid'] as const) {
        assert.ok(
          !overlap(host.get(a.label)![kind], host.get(b.label)![kind]),
          `contexts "${a.label}" and "${b.label}" are both in force and share host ${kind}s: ${JSON.stringify(host.get(a.label)![kind])} / ${JSON.stringify(host.get(b.label)![kind])}`,
        );
      }
    }
  }
  for (const label of pinned) {
    const c = byLabel.get(label);
    if (!c) continue; // checked below
    const pin = join(r.tree.pins, label);
    // 2. A pinned context's maps are its maps in force, unless status says it drifted.
    const own = ownMapsOfPin(pin);
    if (state.get(label) !== 'drift') {
      assert.deepEqual(
        own,
        { uid: fmt(c.uidMap), gid: fmt(c.gidMap) },
        `pin ${label} holds maps other than its context in force, and status says ${state.get(label)}`,
      );
    }
    // 3. A pinned child lies in its parent's current pin, or status reports that it does not.
    if (c.parent !== 'host') {
      const reported = state.get(label) === 'drift' || state.get(label) === 'stale';
      if (!reported) assert.ok(pinned.has(c.parent), `"${label}" is pinned but its parent "${c.parent}" is not, and status says ${state.get(label)}`);
      if (!reported)
        assert.equal(
          parentInoOfPin(pin),
          statSync(join(r.tree.pins, c.parent)).ino,
          `pin ${label} is not nested in its parent's pin ${c.parent}, and status says ${state.get(label)}`,
        );
    }
  }
  // A pin without a context in force is an orphan (its file went away while the agent was down,
  // or was broken at the first start) and status says so.
  for (const label of pinned)
    if (!byLabel.has(label)) assert.equal(state.get(label), 'orphan', `pin ${label} has no context in force, and status does not call it an orphan`);
  // 4. Auto ranges never change for a label (while its size stays: a new size is a new allocation).
  for (const c of contexts) {
    if (!(AUTO as readonly string[]).includes(c.label)) continue;
    const range = fmt(c.uidMap);
    const size = c.uidMap[0].count;
    const first = m.autoRanges.get(c.label);
    if (first === undefined || first.size !== size) m.autoRanges.set(c.label, { size, range });
    else assert.equal(range, first.range, `the auto range of "${c.label}" changed`);
  }
  // 4b. An auto range is never the ids of another label's pinned namespace, whatever the pin's state
  // (in drift, an orphan, stale): that namespace, and whatever runs in it, still holds them.
  for (const c of contexts) {
    if (!(AUTO as readonly string[]).includes(c.label)) continue;
    for (const label of pinned) {
      if (label === c.label) continue;
      const theirs = inForce(label) ? host.get(label)! : hostMapsOfPin(join(r.tree.pins, label));
      for (const kind of ['uid', 'gid'] as const)
        assert.ok(
          !overlap(host.get(c.label)![kind], theirs[kind]),
          `the auto range of "${c.label}" shares host ${kind}s with the pin of "${label}" (${state.get(label)}): ${JSON.stringify(theirs[kind])}`,
        );
    }
  }
  // 4c. Nor is a static context's: no context in force has the ids of another label's pin in drift
  // or of an orphan's (its file gone while the agent was down), unless one lies inside the other.
  // (A stale child, left under an old parent, is not checked: the ids of that old parent are in no
  // record, and nothing reserves them yet.)
  const byPinIno = new Map([...pinned].map((l) => [statSync(join(r.tree.pins, l)).ino, l]));
  /** The labels whose pinned namespaces hold this pin's, itself first, as the kernel says. */
  const pinAncestors = (label: string) => {
    const out = [label];
    for (
      let l = byPinIno.get(parentInoOfPin(join(r.tree.pins, label)));
      l !== undefined && !out.includes(l);
      l = byPinIno.get(parentInoOfPin(join(r.tree.pins, l)))
    )
      out.push(l);
    return out;
  };
  const held = [...pinned]
    .filter((l) => state.get(l) === 'orphan' || state.get(l) === 'drift')
    .map((label) => ({ label, above: pinAncestors(label), theirs: hostMapsOfPin(join(r.tree.pins, label)) }));
  for (const c of contexts) {
    for (const { label, above, theirs } of held) {
      if (label === c.label || above.includes(c.label) || (byLabel.has(label) && related(c.label, label))) continue;
      for (const kind of ['uid', 'gid'] as const)
        assert.ok(
          !overlap(host.get(c.label)![kind], theirs[kind]),
          `context "${c.label}" shares host ${kind}s with the pin of "${label}" (${state.get(label)}): ${JSON.stringify(theirs[kind])}`,
        );
    }
  }
  // 5. After a reload or a start: check-config refuses the files the agent refuses.
  if (settled) {
    // In this process: a process start per check was a third of this suite's CPU.
    const cc = await usernsctlHere(['check-config', '--config', r.tree.config]);
    const byCheck = new Set(
      cc.err
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(': ')[0]),
    );
    const byAgent = new Set((status.errors ?? []).map((l) => l.split(': ')[0]));
    assert.deepEqual(
      [...byCheck].sort(),
      [...byAgent].sort(),
      `check-config and the agent disagree on the refused files:\ncheck-config:\n${cc.err}\nagent:\n${(status.errors ?? []).join('\n')}`,
    );
  }
}

function commandsArb(owner: string) {
  const label = fc.constantFrom(...ALL_LABELS);
  return fc.commands(
    [
      fc.tuple(defArb(owner), fc.boolean()).map(([d, r]) => write(d, r)),
      fc.tuple(defArb(owner), fc.boolean()).map(([d, r]) => write(d, r)),
      fc.tuple(defArb(owner), fc.boolean()).map(([d, r]) => write(d, r)),
      label.map(breakFile),
      label.map(fixFile),
      label.map(removeFile),
      label.map(removeWhileDown),
      fc.constant(reload),
      fc.constant(reload),
      fc.constant(reload),
      label.map(resolve),
      fc.constantFrom(...NESTED).map(resolve),
      label.map(release),
      fc.constantFrom(...TOP).map(release),
      fc.constant(restart),
      fc.constant(secondAgent),
    ],
    { maxCommands: 20, size: 'max' },
  );
}

describe('e2e: configuration over time, model-based, checked in the kernel (root)', function () {
  this.timeout(600_000);
  let owner: ReturnType<typeof makeUser> | undefined;

  before(function () {
    if (!isRoot) this.skip();
    owner = makeUser();
  });
  after(() => owner?.remove());

  // A configuration that exists when the agent starts (one file per label), then evolves: the
  // histories that matter (a parent released under a pinned child, a newcomer sorting first) are
  // then a few commands away.
  const initialArb = () => fc.uniqueArray(defArb(owner!.name), { selector: (d) => d.label, maxLength: ALL_LABELS.length });
  const property = () =>
    fc.asyncProperty(initialArb(), commandsArb(owner!.name), async (initial, cmds) => {
      // A pool of five slots over the static ranges, so the auto range's hash often names their ids.
      const tree = makeTree('[pool]\nrange = 3997696-4325375\n');
      // Every range the arbitraries write is delegated to the owner: what is judged here is overlap and time, not delegation.
      tree.delegate(owner!.name, 4000000, 265536);
      const real: Real = { tree, agent: undefined as unknown as RunningAgent, owner: owner! };
      const files = new Map<string, { text: string; broken: boolean }>();
      for (const d of initial) {
        tree.context(`${d.label}.conf`, d.text);
        files.set(d.label, { text: d.text, broken: false });
      }
      try {
        real.agent = await startAgent(tree);
        const model: Model = { files, autoRanges: new Map() };
        await checkInvariants(model, real, true);
        await fc.asyncModelRun(() => ({ model, real }), cmds);
      } finally {
        await cleanup(undefined);
        unmountAll(tree.dir);
        tree.remove();
      }
    });

  // 15 runs a seed (was 25, a sixth of the whole suite's CPU time): which context a reload keeps,
  // changes or refuses is searched in-process, 150 histories a run (test/unit/reload-decisions.test.ts,
  // test/unit/parse-cache.test.ts); this suite is for what only the kernel says of those decisions,
  // and each CI run's random seed searches on. USERNSD_MODEL_RUNS widens it.
  modelTests({ file: import.meta.url, title: 'holds every invariant', runs: 15, seed: 20261129 }, property);
});

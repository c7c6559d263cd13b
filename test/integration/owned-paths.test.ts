// [delegate] directories and devices handed to a context's root (agent/kernel/ownedpaths.ts) against
// an owner who attacks the agent between its system calls, on the real filesystem as root. The owner
// owns a directory on the path (an admin's `directories = /srv/ctx/alice/data`, alice's own
// /srv/ctx/alice), and may do there, at any moment the agent pauses, whatever an ordinary user may in
// a directory of hers: remove an empty directory or a file, and put a symlink to root's files, a
// directory or a file of her own in its place. Whatever she does and whenever: no file of root's
// changes mode or owner, nothing is made or handed over outside the path, and the agent either hands
// over the real directory (or node) it checked, or refuses with a fault that says what was in the way.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
  chownSync,
  lchownSync,
  chmodSync,
} from 'node:fs';
import type { Stats } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { Fault } from '../../agent/fault.ts';
import { makeOwnedDirectory, setNodeOwner } from '../../agent/kernel/ownedpaths.ts';
import type { PathStep } from '../../agent/kernel/ownedpaths.ts';
import { isRoot } from '../helpers/kernel.ts';
import { modelTests } from '../helpers/model.ts';

/** The owner (her host uid) and the context's root (a host id of her range): numbers only, no account is needed for files. */
const ALICE = 6_100_000 + (process.pid % 1000);
const CTX_ROOT = { uid: 6_200_000, gid: 6_200_000 };

type Move = 'symlink-to-file' | 'symlink-to-dir' | 'own-dir' | 'own-file';
const MOVES: readonly Move[] = ['symlink-to-file', 'symlink-to-dir', 'own-dir', 'own-file'];

type World = { top: string; home: string; victimFile: string; victimDir: string };

function makeWorld(): World {
  const top = mkdtempSync('/tmp/usernsd-owned-');
  chmodSync(top, 0o755);
  const home = join(top, 'home');
  mkdirSync(home, { mode: 0o755 });
  chownSync(home, ALICE, ALICE);
  const victimFile = join(top, 'shadow');
  writeFileSync(victimFile, 'root:secret\n', { mode: 0o600 });
  const victimDir = join(top, 'root-only');
  mkdirSync(victimDir, { mode: 0o700 });
  return { top, home, victimFile, victimDir };
}

const facts = (st: Stats) => `${st.uid}:${st.gid} ${(st.mode & 0o7777).toString(8)}`;

/**
 * What alice can do to `at` now, done: only in a directory she owns; a directory of root's only when
 * empty (she cannot rename one: that needs write permission on it, for its "..").
 */
function attack(w: World, at: string, move: Move): boolean {
  let parent: Stats;
  let st: Stats | null;
  try {
    parent = lstatSync(join(at, '..'));
    st = lstatSync(at);
  } catch {
    return false;
  }
  if (parent.uid !== ALICE) return false;
  try {
    if (st.isDirectory()) rmdirSync(at);
    else unlinkSync(at);
  } catch {
    return false; // a directory of root's with something in it stays
  }
  if (move === 'symlink-to-file') symlinkSync(w.victimFile, at);
  if (move === 'symlink-to-dir') symlinkSync(w.victimDir, at);
  if (move === 'own-dir') mkdirSync(at, { mode: 0o777 });
  if (move === 'own-file') writeFileSync(at, 'mine');
  lchownSync(at, ALICE, ALICE);
  return true;
}

/** Every path under dir, itself included, with its lstat. */
function walk(dir: string, out = new Map<string, Stats>()): Map<string, Stats> {
  const st = lstatSync(dir);
  out.set(dir, st);
  if (st.isDirectory()) for (const name of readdirSync(dir)) walk(join(dir, name), out);
  return out;
}

/** Root's files as they were: same owner and mode, the directory still empty. */
function assertVictimsUntouched(w: World): void {
  assert.equal(facts(lstatSync(w.victimFile)), '0:0 600', "a file of root's changed");
  assert.equal(facts(lstatSync(w.victimDir)), '0:0 700', "a directory of root's changed");
  assert.deepEqual(readdirSync(w.victimDir), [], "something was made in a directory of root's");
  assert.deepEqual(readdirSync(w.top).sort(), ['home', 'root-only', 'shadow'], 'something was made outside the path');
}

describe("paths handed to a context's root, against an owner acting between the agent's system calls (real filesystem, root)", function () {
  this.timeout(120_000);
  const worlds: World[] = [];
  before(function () {
    if (!isRoot) this.skip();
  });
  afterEach(() => {
    for (const w of worlds.splice(0)) rmSync(w.top, { recursive: true, force: true });
  });

  it("the attack by hand: a directory swapped for a symlink to a file of root's right after it is made is refused, and the file keeps its mode", () => {
    const w = makeWorld();
    worlds.push(w);
    const path = join(w.home, 'data');
    assert.throws(
      () => makeOwnedDirectory('a', path, CTX_ROOT, (step, at) => step === 'made' && at === path && attack(w, at, 'symlink-to-file')),
      (err: unknown) => err instanceof Fault && err.kind === 'in-the-way' && /is a symlink \(not followed\)/.test(err.message),
    );
    assertVictimsUntouched(w);
    // Without her: made, and handed over.
    rmSync(path);
    assert.equal(makeOwnedDirectory('a', path, CTX_ROOT), true);
    assert.equal(facts(lstatSync(path)), `${CTX_ROOT.uid}:${CTX_ROOT.gid} 755`);
    assert.equal(makeOwnedDirectory('a', path, CTX_ROOT), false, 'taken as it is the second time');
  });

  modelTests(
    {
      file: import.meta.url,
      title: 'directories: whatever the owner does between any two steps, root keeps its files and the result is the directory checked',
      runs: 300,
      seed: 20261207,
    },
    () =>
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 0, max: 3 }),
        fc.boolean(),
        fc.array(fc.tuple(fc.nat({ max: 12 }), fc.constantFrom(...MOVES)), { maxLength: 3 }),
        async (depth, existing, lastThere, attacks) => {
          const w = makeWorld();
          worlds.push(w);
          // home/c1/c2/...: the first `existing` components there already (alice's), the rest to
          // make; or all of them, the last one the context root's already (taken as it is).
          const parts = Array.from({ length: depth }, (_, i) => `c${i + 1}`);
          const path = join(w.home, ...parts);
          let p = w.home;
          for (const part of lastThere ? parts : parts.slice(0, Math.min(existing, depth - 1))) {
            p = join(p, part);
            mkdirSync(p, { mode: 0o755 });
            chownSync(p, ALICE, ALICE);
          }
          if (lastThere) chownSync(path, CTX_ROOT.uid, CTX_ROOT.gid);
          let n = 0;
          const done: string[] = [];
          const between = (step: PathStep, at: string) => {
            for (const [k, move] of attacks) if (k === n && attack(w, at, move)) done.push(`${move} at ${at} after ${step}`);
            n++;
          };
          let result: boolean | Fault;
          try {
            result = makeOwnedDirectory('a', path, CTX_ROOT, between);
          } catch (err) {
            if (!(err instanceof Fault)) throw err;
            result = err;
          }
          const said = `after ${JSON.stringify(done)}`;
          assertVictimsUntouched(w);
          const all = walk(w.home);
          if (result instanceof Fault) {
            assert.ok(result.kind === 'in-the-way' || result.kind === 'refused', `${said}: ${result.kind}: ${result.message}`);
            assert.equal(result.object, 'directory');
            assert.ok(done.length > 0, `refused with nothing in the way: ${result.message}`);
          } else if (done.length === 0) {
            // Left alone, it hands over: the path a real directory all the way, the last one the
            // context root's. (What she does to her own directory once it is checked is hers to do.)
            let at = w.home;
            for (const part of parts) {
              at = join(at, part);
              assert.ok(all.get(at)?.isDirectory(), `${at} is not a directory`);
            }
            assert.equal(facts(all.get(path)!), `${CTX_ROOT.uid}:${CTX_ROOT.gid} 755`);
            assert.equal(result, !lastThere, lastThere ? "a directory of the context root's is taken, not made" : 'made');
          }
          // Nothing but the path's last directory is ever the context root's.
          for (const [at, st] of all) if (at !== path) assert.notEqual(st.uid, CTX_ROOT.uid, `${said}: ${at} was handed over`);
          rmSync(w.top, { recursive: true, force: true });
          worlds.splice(worlds.indexOf(w), 1);
        },
      ),
  );

  it("devices: a node swapped after it was checked is not the one handed over; its replacement, a symlink to root's file, stays as it was", () => {
    for (const move of ['symlink', 'other-node', 'file'] as const) {
      const w = makeWorld();
      worlds.push(w);
      const node = join(w.home, 'dev0');
      assert.equal(spawnSync('mknod', ['-m', '640', node, 'c', '1', '3']).status, 0);
      const rdev = lstatSync(node).rdev;
      const ino = lstatSync(node).ino;
      // A second name of the node meant, to see what became of it once its first name is gone.
      const kept = join(w.home, 'dev0.kept');
      linkSync(node, kept);
      const swap = () => {
        unlinkSync(node);
        if (move === 'symlink') symlinkSync(w.victimFile, node);
        if (move === 'other-node') spawnSync('mknod', ['-m', '600', node, 'c', '1', '5']);
        if (move === 'file') writeFileSync(node, 'mine', { mode: 0o600 });
        lchownSync(node, ALICE, ALICE);
      };
      const given = setNodeOwner(
        node,
        (st) => st.rdev === rdev,
        CTX_ROOT,
        () => 0o660,
        (step) => step === 'checked' && swap(),
      );
      assert.equal(given, true, 'the node it checked was handed over (the descriptor holds it, whatever the name says now)');
      assertVictimsUntouched(w);
      assert.equal(facts(lstatSync(node)), `${ALICE}:${ALICE} ${move === 'symlink' ? '777' : '600'}`, `${move}: the replacement was not touched`);
      assert.notEqual(lstatSync(node).ino, ino);
      assert.equal(facts(lstatSync(kept)), `${CTX_ROOT.uid}:${CTX_ROOT.gid} 660`, `${move}: the node checked is the one given`);
      // A symlink or another node at the name is never taken for the node meant.
      assert.equal(
        setNodeOwner(
          node,
          (st) => st.rdev === rdev,
          CTX_ROOT,
          () => 0o660,
        ),
        false,
        `${move}: taken for the node`,
      );
      assertVictimsUntouched(w);
    }
  });
});

// The record of the contexts in force (issue 26): contexts.json written whole, then a journal of
// changes appended after it. Model-based: contexts set and forgotten, appended or written whole,
// the agent killed between the whole write and the journal's removal — and read back after each
// step, the record must say exactly what was put in force. Then each way the journal can be bad.
import assert from 'node:assert/strict';
import { appendFileSync, lstatSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { makeDirs } from '../../agent/kernel/files.ts';
import { appendInForce, IN_FORCE_JOURNAL, newerStateFiles, readInForce, readInForceRecord, writeInForce } from '../../agent/coord/state.ts';
import type { Context } from '../../config/types.ts';
import { makeTree, staticContext, testNss } from '../helpers/fixtures.ts';
import { loadConfiguration } from '../../agent/configure.ts';
import { ParseCache } from '../../config/load.ts';
import { stampOf } from '../../config/ini.ts';
import { Fault } from '../../agent/fault.ts';
import { fromFault } from '../../agent/advice.ts';
import type { Tree } from '../helpers/fixtures.ts';

const ctx = staticContext;

const shown = (m: ReadonlyMap<string, Context>) => JSON.stringify([...m.values()].sort((a, b) => a.label.localeCompare(b.label)));

type Model = { contexts: Map<string, Context> };
/** The recorder as the agent keeps it: the generation of contexts.json, or none until it is written whole. */
type Real = { tree: Tree; generation: string | null };
type Command = fc.Command<Model, Real>;

const check = (m: Model, r: Real) => assert.equal(shown(readInForce(r.tree.state)), shown(m.contexts), 'the record says what was put in force');

const set = (label: string, start: number): Command => ({
  check: () => true,
  run: (m, r) => {
    m.contexts.set(label, ctx(label, start));
    if (r.generation === null) r.generation = writeInForce(r.tree.state, m.contexts.values());
    else appendInForce(r.tree.state, r.generation, [ctx(label, start)], []);
    check(m, r);
  },
  toString: () => `set ${label} ${start}`,
});
const forget = (label: string): Command => ({
  check: (m) => m.contexts.has(label),
  run: (m, r) => {
    m.contexts.delete(label);
    if (r.generation === null) r.generation = writeInForce(r.tree.state, m.contexts.values());
    else appendInForce(r.tree.state, r.generation, [], [label]);
    check(m, r);
  },
  toString: () => `forget ${label}`,
});
const whole: Command = {
  check: () => true,
  run: (m, r) => {
    r.generation = writeInForce(r.tree.state, m.contexts.values());
    check(m, r);
  },
  toString: () => 'write whole',
};
/** Killed after contexts.json was replaced and before the journal was removed: the journal of the old generation stays. */
const killedMidWrite: Command = {
  check: () => true,
  run: (m, r) => {
    let journal: string | null = null;
    try {
      journal = readFileSync(join(r.tree.state, IN_FORCE_JOURNAL), 'utf8');
    } catch {
      /* none */
    }
    writeInForce(r.tree.state, m.contexts.values());
    if (journal !== null) writeFileSync(join(r.tree.state, IN_FORCE_JOURNAL), journal, { mode: 0o600 });
    r.generation = null; // restarted: the agent's first record is whole
    check(m, r);
  },
  toString: () => 'killed between the whole write and the journal removal',
};

describe('state: the record of the contexts in force and its journal', () => {
  let tree: Tree;
  beforeEach(() => {
    tree = makeTree();
    makeDirs(tree.state, 0o700);
  });
  afterEach(() => tree.remove());

  it('reads back exactly what was put in force, whatever was appended, written whole or cut short between (model-based)', () => {
    const labels = fc.constantFrom('a', 'b', 'c', 'd');
    const commands = fc.commands(
      [
        fc.tuple(labels, fc.constantFrom(65536, 131072, 196608)).map(([l, s]) => set(l, s)),
        labels.map(forget),
        fc.constant(whole),
        fc.constant(killedMidWrite),
      ],
      { maxCommands: 30, size: 'max' },
    );
    fc.assert(
      fc.property(commands, (cmds) => {
        const t = makeTree();
        try {
          makeDirs(t.state, 0o700);
          fc.modelRun(() => ({ model: { contexts: new Map() }, real: { tree: t, generation: null } }), cmds);
        } finally {
          t.remove();
        }
      }),
      { numRuns: 100 },
    );
  });

  it('a whole write removes the journal, and one that changes nothing keeps the generation', () => {
    const g = writeInForce(tree.state, [ctx('a', 65536)]);
    appendInForce(tree.state, g, [ctx('b', 131072)], []);
    assert.deepEqual([...readInForce(tree.state).keys()], ['a', 'b']);
    const g2 = writeInForce(tree.state, [ctx('a', 65536), ctx('b', 131072)]);
    assert.notEqual(g2, g, 'a journal was there: written whole as a new generation');
    assert.throws(() => readFileSync(join(tree.state, IN_FORCE_JOURNAL)), /ENOENT/);
    assert.equal(writeInForce(tree.state, [ctx('a', 65536), ctx('b', 131072)]), g2);
    assert.equal(readInForceRecord(tree.state).generation, g2);
  });

  it('an append cut short by a crash (its last line without a newline) never happened', () => {
    const g = writeInForce(tree.state, [ctx('a', 65536)]);
    appendInForce(tree.state, g, [ctx('b', 131072)], []);
    appendInForce(tree.state, g, [ctx('c', 196608)], []);
    truncateSync(join(tree.state, IN_FORCE_JOURNAL), readFileSync(join(tree.state, IN_FORCE_JOURNAL)).length - 10);
    assert.deepEqual([...readInForce(tree.state).keys()], ['a', 'b']);
  });

  it('a journal of another generation is not applied', () => {
    const g = writeInForce(tree.state, [ctx('a', 65536)]);
    appendInForce(
      tree.state,
      g.replace(/^./, (c) => (c === '0' ? '1' : '0')),
      [ctx('b', 131072)],
      [],
    );
    assert.deepEqual([...readInForce(tree.state).keys()], ['a']);
  });

  it('a bad line is corruption, said with what to do; an entry is checked as contexts.json checks it', () => {
    const file = join(tree.state, IN_FORCE_JOURNAL);
    for (const bad of [
      'not json',
      JSON.stringify({ set: { ...ctx('b', 1), label: '../x' } }),
      JSON.stringify({ set: { ...ctx('b', 1), uidMap: [{ inside: 0, outside: -1, count: 1 }] } }),
      JSON.stringify({ forget: '../x' }),
      JSON.stringify({ forget: 'a', set: ctx('a', 1) }),
      JSON.stringify({ other: 1 }),
      JSON.stringify({ __proto__: { set: ctx('a', 1) } }),
    ]) {
      const g = writeInForce(tree.state, [ctx('a', 65536)]);
      appendInForce(tree.state, g, [ctx('c', 196608)], []);
      appendFileSync(file, `${bad}\n`);
      // coord/ says what is wrong (a fault); the edge adds what to do.
      assert.throws(
        () => readInForce(tree.state),
        (e) => e instanceof Fault && e.kind === 'corrupt' && /contexts\.journal is corrupt \(.*\): remove it/.test(fromFault(e).message),
        bad,
      );
      writeInForce(tree.state, []);
    }
  });

  it('a start on the record keeps one object per context: the one made from its file, sharing the parse the cache keeps, and the record names it', async () => {
    tree.context('a.conf', '[context]\nuid_map = 0 4000000 1000\ngid_map = 0 4000000 1000\n');
    const load = (cache?: ParseCache) => loadConfiguration(tree.config, { record: false, nss: testNss, systemIds: () => [], cache });
    writeInForce(tree.state, load().contexts.values());
    await new Promise((r) => setTimeout(r, 5)); // older than the cache's racy window (racyMs 1)
    const cache = new ParseCache(1);
    const cfg = load(cache);
    const a = cfg.contexts.get('a')!;
    assert.equal(cfg.recorded?.contexts.get('a'), a, 'the record names the context in force: nothing to write at start');
    const file = join(tree.contexts, 'a.conf');
    const parsed = cache.get(file, stampOf(lstatSync(file)), cfg.agent.pool.size);
    assert.ok(parsed?.def, 'the parse is cached');
    // Not the record's own copy: that one would be a second copy of every context, kept for nothing.
    assert.equal(a.owner, parsed.def.owner);
    assert.equal(a.squash, parsed.def.squash);
  });

  it('a journal in a newer format stops the start, as contexts.json in one does', () => {
    writeInForce(tree.state, [ctx('a', 65536)]);
    writeFileSync(join(tree.state, IN_FORCE_JOURNAL), `${JSON.stringify({ version: 2, generation: 'x' })}\n`);
    assert.match(newerStateFiles(tree.state).join('\n'), /contexts\.journal is in format 2, written by a newer usernsd/);
  });

  it('contexts.json stays what an older usernsd reads: version 1 and a contexts array', () => {
    writeInForce(tree.state, [ctx('a', 65536)]);
    const data = JSON.parse(readFileSync(join(tree.state, 'contexts.json'), 'utf8')) as { version: number; contexts: Context[] };
    assert.equal(data.version, 1);
    assert.deepEqual(data.contexts, [ctx('a', 65536)]);
  });
});

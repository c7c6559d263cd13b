// The agent's recorder of the contexts in force over time (agent/inforce.ts), model-based, on real
// files: a first record written in pieces while the agent serves, and meanwhile contexts changed,
// recorded (a reload), or changed but not recorded yet (a reload still running), turns of the event
// loop, and the stop. After every step contexts.json and its journal say exactly what the model
// expects on disk: nothing before the first record lands, then what was put in force when it was
// last recorded; no temporary file outlives the writer; and what is written whole in pieces is the
// very text writeInForce writes.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import pino from 'pino';
import { IN_FORCE_FILE, readInForce, writeInForce, writeInForceInPieces } from '../../agent/coord/state.ts';
import { makeDirs } from '../../agent/kernel/files.ts';
import { InForceRecorder } from '../../agent/inforce.ts';
import type { Context } from '../../config/types.ts';
import { makeTree, staticContext } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';

const ctx = staticContext;

/** Enough contexts for a first record of several pieces (256 a piece): the history meets it half-written. */
const MANY = 700;
const many = () => new Map(Array.from({ length: MANY }, (_, i) => [`c${i}`, ctx(`c${i}`, (i + 1) * 65536)] as const));

const shown = (m: ReadonlyMap<string, Context>) => JSON.stringify([...m.values()].sort((a, b) => a.label.localeCompare(b.label)));

/** The registry as the recorder sees it: a map in force, never changed in place. */
class Source {
  map: ReadonlyMap<string, Context> = many();
  inForce(): ReadonlyMap<string, Context> {
    return this.map;
  }
  changedSince(): null {
    return null; // every label looked at
  }
}

type Model = {
  /** In force now. */
  current: ReadonlyMap<string, Context>;
  /** What the files must say: null until a first record lands. */
  onDisk: ReadonlyMap<string, Context> | null;
  /** The snapshot a first record in pieces is writing, if one is. */
  pending: ReadonlyMap<string, Context> | null;
  /** A record in pieces given up, whose writer has not had its next turn yet (its temporary file is still there). */
  dropping: boolean;
};
type Real = { tree: Tree; source: Source; recorder: InForceRecorder };
type Command = fc.AsyncCommand<Model, Real>;

const temps = (r: Real) => readdirSync(r.tree.state).filter((n) => n.endsWith('.tmp'));

/** The files against the model; a first record that has just landed is taken as landed. */
function check(m: Model, r: Real, after: string): void {
  const there = existsSync(join(r.tree.state, IN_FORCE_FILE)) ? shown(readInForce(r.tree.state)) : null;
  if (m.pending && there === shown(m.pending) && (m.onDisk === null || there !== shown(m.onDisk))) {
    m.onDisk = m.pending;
    m.pending = null;
  }
  assert.equal(there, m.onDisk && shown(m.onDisk), `after ${after}, the record says what was last recorded`);
  if (!m.pending && !m.dropping) assert.deepEqual(temps(r), [], `after ${after}, no temporary file is left`);
}

const command = (name: string, run: (m: Model, r: Real) => Promise<void> | void, pre: (m: Readonly<Model>) => boolean = () => true): Command => ({
  check: pre,
  run: async (m, r) => {
    await run(m, r);
    check(m, r, name);
  },
  toString: () => name,
});

/** A record in pieces given up (if one was being written): its writer removes its file at its next turn. */
const giveUp = (m: Model) => {
  if (m.pending) m.dropping = true;
  m.pending = null;
};

/** A context set or forgotten in force (the registry's new map). */
const change = (m: Model, r: Real, label: string, start: number | null) => {
  const next = new Map(m.current);
  if (start === null) next.delete(label);
  else next.set(label, ctx(label, start));
  r.source.map = next;
  m.current = next;
};

const setAndRecord = (label: string, start: number | null) =>
  command(`${start === null ? `forget ${label}` : `set ${label} at ${start}`} + record (a reload)`, (m, r) => {
    change(m, r, label, start);
    r.recorder.record();
    m.onDisk = m.current;
    giveUp(m);
  });

const setOnly = (label: string, start: number | null) =>
  command(`${start === null ? `forget ${label}` : `set ${label} at ${start}`}, not recorded yet`, (m, r) => change(m, r, label, start));

const recordSame = command('record with nothing changed since the last', (m, r) => {
  r.recorder.record();
  if (!m.pending || m.pending !== m.current) {
    m.onDisk = m.current;
    giveUp(m);
  }
});

const turn = command('one turn of the event loop', async (m) => {
  await new Promise((resolve) => setImmediate(resolve));
  m.dropping = false;
});

const settle = command('the record in pieces written', async (m, r) => {
  await r.recorder.settled();
  if (m.pending) m.onDisk = m.pending;
  m.pending = null;
  m.dropping = false;
});

const stop = command('the stop: written whole', async (m, r) => {
  r.recorder.record(true, true);
  await r.recorder.settled();
  m.onDisk = m.current;
  m.pending = null;
  m.dropping = false;
});

const labels = fc.constantFrom('c1', 'c300', 'c699', 'new1', 'new2');
const starts = fc.option(fc.constantFrom(900 * 65536, 901 * 65536), { nil: null });
const commands = fc.commands(
  [
    fc.tuple(labels, starts).map(([l, s]) => setAndRecord(l, s)),
    fc.tuple(labels, starts).map(([l, s]) => setOnly(l, s)),
    fc.constant(recordSame),
    fc.constant(turn),
    fc.constant(turn),
    fc.constant(turn),
    fc.constant(turn),
    fc.constant(settle),
    fc.constant(stop),
  ],
  { maxCommands: 16 },
);

const quiet = pino({ level: 'silent' });

describe('unit: the record of the contexts in force as the agent keeps it, with a first record in pieces (model-based)', function () {
  this.timeout(120_000);

  it('says on disk what was last recorded at every step, whatever happens while the first record is written in pieces', async () => {
    await fc.assert(
      fc.asyncProperty(commands, async (cmds) => {
        const tree = makeTree();
        makeDirs(tree.state, 0o700);
        const source = new Source();
        const recorder = new InForceRecorder(tree.state, source, quiet, null);
        try {
          // A first start: no record yet, the first one written in pieces once the agent serves.
          recorder.recordInPieces();
          const model: Model = { current: source.map, onDisk: null, pending: source.map, dropping: false };
          await fc.asyncModelRun(() => ({ model, real: { tree, source, recorder } }), cmds);
          await recorder.settled();
        } finally {
          tree.remove();
        }
      }),
      { numRuns: 100 },
    );
  });

  it('a first record in pieces given up at any of its turns replaces nothing: the record made meanwhile stays', async () => {
    // 700 contexts: a head, three pieces and a tail, one turn of the event loop each.
    for (let turns = 0; turns <= 6; turns++) {
      const tree = makeTree();
      try {
        makeDirs(tree.state, 0o700);
        const source = new Source();
        const recorder = new InForceRecorder(tree.state, source, quiet, null);
        recorder.recordInPieces();
        for (let t = 0; t < turns; t++) await new Promise((resolve) => setImmediate(resolve));
        const next = new Map(source.map);
        next.delete('c1');
        source.map = next;
        recorder.record();
        await recorder.settled();
        assert.equal(shown(readInForce(tree.state)), shown(next), `given up after ${turns} turn(s)`);
        assert.deepEqual(
          readdirSync(tree.state).filter((n) => n.endsWith('.tmp')),
          [],
        );
      } finally {
        tree.remove();
      }
    }
  });

  it('writes in pieces the very text writeInForce writes, but for the generation', async () => {
    const tree = makeTree();
    try {
      makeDirs(tree.state, 0o700);
      const contexts = [...many().values()];
      let generation: string | null = null;
      assert.equal(await writeInForceInPieces(tree.state, contexts, { durable: false, stopped: () => false, written: (g) => (generation = g) }), true);
      const pieces = readFileSync(join(tree.state, IN_FORCE_FILE), 'utf8');
      const g = writeInForce(tree.state, contexts, false);
      assert.equal(g, generation, 'writeInForce finds the same record there and keeps its generation');
      assert.equal(readFileSync(join(tree.state, IN_FORCE_FILE), 'utf8'), pieces);
    } finally {
      tree.remove();
    }
  });
});

// The record of the contexts in force as the agent keeps it (coord/state.ts writes and reads the
// files): what changed is appended to contexts.json's journal, contexts.json is written whole when
// there is none or the journal has grown, and a first one is written in pieces while the agent serves.
import type { Logger } from 'pino';
import type { Context } from '../config/types.ts';
import { said } from './advice.ts';
import { appendInForce, ensureStateDir, writeInForce, writeInForceInPieces } from './coord/state.ts';

/** Journal lines contexts.json may be followed by, at least (else a quarter of the contexts): past them it is written whole. */
const JOURNAL_MIN_LINES = 64;

/** What is in force, as the registry holds it: a map never changed in place, and the labels of its last change. */
export type InForceSource = {
  inForce(): ReadonlyMap<string, Context>;
  /** The labels that changed from `map` to the map in force now, when that was one change; else null (look at every label). */
  changedSince(map: ReadonlyMap<string, Context>): ReadonlySet<string> | null;
};

/** The contexts in force as last recorded: contexts.json of `generation`, and `journal` lines after it. */
export type Recorded = { readonly contexts: ReadonlyMap<string, Context>; readonly generation: string; readonly journal: number };

export class InForceRecorder {
  /** What the files on disk say, as far as this recorder knows (null: nothing known, the next record is written whole). */
  recorded: Recorded | null;
  /** A first contexts.json being written in pieces (recordInPieces), and whether it is given up. */
  private pieces: { readonly contexts: ReadonlyMap<string, Context>; stopped: boolean } | null = null;
  /** The last writer in pieces, until it has written or given up (its temporary file removed). */
  private writing: Promise<unknown> = Promise.resolve();

  private readonly dir: string;
  private readonly source: InForceSource;
  private readonly log: Logger;

  /** `dir`: the state directory; `recorded`: what its record says (the load read it), null when none. */
  constructor(dir: string, source: InForceSource, log: Logger, recorded: Recorded | null) {
    this.dir = dir;
    this.source = source;
    this.log = log;
    this.recorded = recorded;
  }

  /**
   * What is in force now, for the next start and for check-config (see config/judge.ts admissionOrder):
   * what changed since the last record is appended to its journal, and contexts.json is written
   * whole when there is none yet, when the journal has grown past a quarter of the contexts, and
   * (`whole`) when the agent stops, so an older usernsd that reads contexts.json alone finds it current.
   */
  record(durable = true, whole = false): void {
    // The registry's map in force, which is never changed in place: the very one recorded last is unchanged.
    const contexts = this.source.inForce();
    const pieces = this.pieces;
    if (pieces) {
      if (pieces.contexts === contexts && !whole) return; // being written already
      // Given up for this record, written now; its pieces stop at the writer's next turn.
      pieces.stopped = true;
      this.pieces = null;
    }
    const last = this.recorded;
    if (last?.contexts === contexts && (!whole || last.journal === 0)) return;
    const set: Context[] = [];
    const forget: string[] = [];
    if (last) {
      // What differs from the record: as the registry knows it (one change since), else every label looked at.
      const known = this.source.changedSince(last.contexts);
      if (known) {
        for (const label of known) {
          const c = contexts.get(label);
          if (c === undefined) {
            if (last.contexts.has(label)) forget.push(label);
          } else if (last.contexts.get(label) !== c) set.push(c);
        }
      } else {
        for (const c of contexts.values()) if (last.contexts.get(c.label) !== c) set.push(c);
        for (const label of last.contexts.keys()) if (!contexts.has(label)) forget.push(label);
      }
      if (set.length === 0 && forget.length === 0 && (!whole || last.journal === 0)) {
        this.recorded = { ...last, contexts }; // the same contexts: the next look compares maps
        return;
      }
    }
    try {
      // A directory made anew (removed behind the agent's back) holds no record to append to.
      const anew = ensureStateDir(this.dir);
      const changes = set.length + forget.length;
      if (last && !whole && !anew && last.journal + changes <= Math.max(JOURNAL_MIN_LINES, contexts.size / 4)) {
        appendInForce(this.dir, last.generation, set, forget, durable);
        this.recorded = { contexts, generation: last.generation, journal: last.journal + changes };
      } else {
        this.recorded = { contexts, generation: writeInForce(this.dir, contexts.values(), durable), journal: 0 };
      }
    } catch (err) {
      this.recorded = null; // the next record is written whole
      this.failed(err);
    }
  }

  /**
   * The first record of a state directory that has none (a first start), written while the agent
   * serves rather than before it (record): 65,535 contexts are 0.2 s of JSON and writing. Whatever
   * this start decided, a start after a crash meanwhile decides again from the same files, with no
   * record either way. A record asked for meanwhile of other contexts in force (a reload, a context
   * made from inside), or whole (the stop), gives this one up and is written as `record` writes it.
   */
  recordInPieces(): void {
    if (this.recorded !== null) return this.record(); // recorded meanwhile: from here on as usual
    const contexts = this.source.inForce();
    const job = { contexts, stopped: false };
    const started = performance.now();
    this.pieces = job;
    this.writing = (async () => {
      ensureStateDir(this.dir);
      await writeInForceInPieces(this.dir, [...contexts.values()], {
        durable: true,
        stopped: () => job.stopped,
        written: (generation) => {
          this.recorded = { contexts, generation, journal: 0 };
          if (this.pieces === job) this.pieces = null;
          this.log.info({ contexts: contexts.size, ms: +(performance.now() - started).toFixed(1) }, 'Recorded the contexts in force');
        },
      });
    })().catch((err: unknown) => {
      if (this.pieces === job) this.pieces = null;
      this.failed(err);
    });
  }

  /** Once the last record in pieces has been written or given up (its temporary file removed). */
  settled(): Promise<unknown> {
    return this.writing;
  }

  private failed(err: unknown): void {
    this.log.error({ err: (err as Error).message }, `Failed to record the contexts in force: ${said(err)}; after a restart, files are admitted in name order`);
  }
}

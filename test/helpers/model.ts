// The one runner of the model-based suites (test/e2e/*-over-time.test.ts, test/property/judgement.test.ts): each checks its property
// twice — with its fixed seed, which keeps what an earlier search found, and with a random seed,
// which searches on — and says in both cases how to run exactly that search again.
import fc from 'fast-check';
import { basename, dirname } from 'node:path';

/** Room the mocha timeout leaves for cleanup after fast-check gives up (a search found, being shrunk). */
const CLEANUP_MS = 60_000;

export type ModelSuite = {
  /** The test file, import.meta.url: named in the rerun hint. */
  readonly file: string;
  /** What the property says, e.g. "holds every invariant". */
  readonly title: string;
  /** Runs per seed when USERNSD_MODEL_RUNS does not say. */
  readonly runs: number;
  /** The fixed seed, when USERNSD_MODEL_SEED does not say. */
  readonly seed: number;
};

/**
 * The command that runs the search with this seed again (USERNSD_MODEL_SEED replaces the fixed seed;
 * USERNSD_MODEL_RUNS widens it).
 */
export function rerunHint(file: string, seed: number): string {
  const path = new URL(file).pathname;
  return `USERNSD_MODEL_SEED=${seed} npx mocha --no-config --timeout 600000 test/${basename(dirname(path))}/${basename(path)}`;
}

/**
 * The fixed-seed and the random-seed test of one property, inside the suite's describe (whose
 * timeout bounds the search: fast-check stops shrinking before it and reports the smallest history
 * found so far, instead of mocha killing it with nothing said).
 */
export function modelTests(suite: ModelSuite, property: () => fc.IAsyncPropertyWithHooks<unknown> | fc.IAsyncProperty<unknown>): void {
  const runs = Number(process.env.USERNSD_MODEL_RUNS ?? suite.runs);
  const fixed = Number(process.env.USERNSD_MODEL_SEED ?? suite.seed);
  const check = async (ctx: Mocha.Context, seed: number) => {
    const limit = Math.max(ctx.timeout() - CLEANUP_MS, 1000);
    const details = await fc.check(property(), { seed, numRuns: runs, interruptAfterTimeLimit: limit, markInterruptAsFailure: true });
    if (details.failed) {
      // The failure itself, which the report leaves out when fast-check stopped (shrinking or the time limit).
      const cause = details.errorInstance instanceof Error ? `\nThe failure: ${details.errorInstance.message}` : '';
      throw new Error(`${fc.defaultReportMessage(details)}${cause}\nRun this search again: ${rerunHint(suite.file, seed)}`);
    }
  };
  it(`${suite.title}, with a fixed seed`, async function () {
    await check(this, fixed);
  });
  it(`${suite.title}, with a random seed (printed)`, async function () {
    const seed = Date.now() ^ (Math.random() * 2 ** 31);
    console.log(`      random seed ${seed}; rerun: ${rerunHint(suite.file, seed)}`);
    await check(this, seed);
  });
}

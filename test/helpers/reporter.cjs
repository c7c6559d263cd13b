// Mocha's spec output, then one closing line CI reads: "N passed, N failed, N skipped".
// Under CI (CI set, as .ci/run's caller sets it) a skipped test is a failure: every skip in this
// suite stands for something missing on the machine (root, bindfs, a C compiler, promtool...),
// which .ci/run installs; a skip there would hide a test that never ran.
'use strict';
const Mocha = require('mocha');
const { Spec } = Mocha.reporters;
const { EVENT_RUN_END, EVENT_TEST_PENDING } = Mocha.Runner.constants;

class SpecWithSummary extends Spec {
  constructor(runner, options) {
    super(runner, options);
    const skipped = [];
    runner.on(EVENT_TEST_PENDING, (test) => skipped.push(test.fullTitle()));
    runner.once(EVENT_RUN_END, () => {
      const s = runner.stats;
      // Printed after Spec's epilogue, which listens to the same event first.
      setImmediate(() => {
        if (process.env.CI && skipped.length > 0) {
          process.stdout.write(
            `\nSkipped under CI, counted as failed (install what the test needs in .ci/run):\n${skipped.map((t) => `  - ${t}\n`).join('')}\n`,
          );
          process.exitCode = 1;
          process.stdout.write(`${s.passes} passed, ${s.failures + skipped.length} failed, 0 skipped\n`);
          return;
        }
        process.stdout.write(`${s.passes} passed, ${s.failures} failed, ${s.pending} skipped\n`);
      });
    });
  }
}
module.exports = SpecWithSummary;

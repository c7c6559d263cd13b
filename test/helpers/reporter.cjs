// Mocha's spec output, then one closing line CI reads: "N passed, N failed, N skipped".
'use strict';
const Mocha = require('mocha');
const { Spec } = Mocha.reporters;
const { EVENT_RUN_END } = Mocha.Runner.constants;

class SpecWithSummary extends Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once(EVENT_RUN_END, () => {
      const s = runner.stats;
      // Printed after Spec's epilogue, which listens to the same event first.
      setImmediate(() => process.stdout.write(`${s.passes} passed, ${s.failures} failed, ${s.pending} skipped\n`));
    });
  }
}
module.exports = SpecWithSummary;

// Mutation testing of the pure core (issue 27): StrykerJS changes one operator or constant at a time
// and reruns only the fast tests that cover it; a mutant no test notices is a line no test guards.
// npm run test:mutation; the score per module goes in MUTATION.md (scripts/mutation-report.js).
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'mocha',
  plugins: ['@stryker-mutator/mocha-runner'],
  mochaOptions: { spec: ['test/unit/**/*.test.ts', 'test/property/**/*.test.ts'], 'no-config': true },
  mutate: [
    'config/extents.ts',
    'agent/idmap.ts',
    'agent/coord/allocate.ts',
    'agent/coord/pooldoc.ts',
    'agent/coord/poolkeys.ts',
    'agent/names.ts',
    'agent/explain.ts',
    'config/ini.ts',
    'config/text.ts',
    'config/untrusted.ts',
    'agent/policy.ts',
    'config/schema.ts',
  ],
  coverageAnalysis: 'perTest',
  incremental: true,
  incrementalFile: 'reports/mutation/incremental.json',
  reporters: ['clear-text', 'json', 'progress'],
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  // Stryker's own break is on the whole score; scripts/mutation-report.js fails the command per module.
  thresholds: { high: 90, low: 80, break: 90 },
  concurrency: 2,
  timeoutMS: 10000,
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};

// npm run test:mutation [-- --force]: StrykerJS with the arguments given (npm puts them at the end of
// the script's command line, which with "stryker run && node report" reached the report, not
// Stryker: --force was never passed on), then the per-module report that fails the command.
import { spawnSync } from 'node:child_process';

const env = { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ./scripts/mocha12-paths.cjs`.trim() };
const stryker = spawnSync('npx', ['stryker', 'run', ...process.argv.slice(2)], { stdio: 'inherit', env });
if (stryker.status !== 0) process.exit(stryker.status ?? 1);
const report = spawnSync(process.execPath, ['scripts/mutation-report.js'], { stdio: 'inherit' });
process.exit(report.status ?? 1);

// npm run test:mutation, last step: MUTATION.md from Stryker's JSON report (reports/mutation/),
// as bench/run.ts writes BENCHMARKS.md — the score per module, the target, and every mutant that
// survived, so that each is killed by a test or explained as equivalent.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const TARGET = 90;
const report = JSON.parse(readFileSync(join(root, 'reports/mutation/mutation.json'), 'utf8'));

const rows = [];
const survivors = [];
let detectedAll = 0;
let validAll = 0;
for (const [file, { mutants, source }] of Object.entries(report.files).sort(([a], [b]) => a.localeCompare(b))) {
  const count = (...statuses) => mutants.filter((m) => statuses.includes(m.status)).length;
  const detected = count('Killed', 'Timeout');
  const valid = detected + count('Survived', 'NoCoverage');
  detectedAll += detected;
  validAll += valid;
  const score = valid === 0 ? 100 : (100 * detected) / valid;
  rows.push(`| ${file} | ${score.toFixed(1)} % | ${count('Killed')} | ${count('Timeout')} | ${count('Survived')} | ${count('NoCoverage')} | ${score >= TARGET ? 'met' : '**missed**'} |`);
  const lines = source.split('\n');
  for (const m of mutants.filter((x) => x.status === 'Survived' || x.status === 'NoCoverage').sort((a, b) => a.location.start.line - b.location.start.line)) {
    const code = (lines[m.location.start.line - 1] ?? '').trim().slice(0, 110).replaceAll('|', '\\|');
    survivors.push(`| ${file}:${m.location.start.line} | ${m.status === 'NoCoverage' ? 'no test runs it' : 'survived'} | ${m.mutatorName} | \`${code}\` → \`${(m.replacement ?? '').replaceAll('\n', ' ').slice(0, 60).replaceAll('|', '\\|')}\` |`);
  }
}
const total = validAll === 0 ? 100 : (100 * detectedAll) / validAll;
let commit = 'a checkout without git';
try { commit = `commit ${execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()}`; } catch { /* not a git checkout */ }
const text = `# Mutation testing

Produced by \`npm run test:mutation\` (StrykerJS, \`stryker.config.mjs\`): every operator, constant
and condition of the pure modules below is changed in turn and the fast tests (unit and property,
\`npm run test:fast\`) that cover it are run; a mutant no test notices is a line no test guards.
Score = mutants detected (killed, or the tests timed out) / mutants that could be detected
(detected, survived, not covered). Target: ${TARGET} % per module. This run: ${commit},
${report.files ? Object.values(report.files).reduce((n, f) => n + f.mutants.length, 0) : 0} mutants.

| module | score | killed | timeout | survived | not covered | ≥ ${TARGET} % |
|---|---|---|---|---|---|---|
${rows.join('\n')}
| **all** | **${total.toFixed(1)} %** | | | | | |

## What survived

Each is either a test to write or an equivalent mutant (the same behaviour written differently) to
mark as such here, with one line of why.

| where | | mutator | original → mutant |
|---|---|---|---|
${survivors.join('\n')}
`;
writeFileSync(join(root, 'MUTATION.md'), text);
console.log(`MUTATION.md: ${total.toFixed(1)} % over ${rows.length} modules, ${survivors.length} mutants left`);

// npm run test:mutation, last step: MUTATION.md from Stryker's JSON report (reports/mutation/),
// as bench/run.ts writes BENCHMARKS.md — the score per module, the target, and every mutant that
// survived, so that each is killed by a test or explained as equivalent.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EQUIVALENTS } from './mutation-equivalents.js';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const TARGET = 90;
const report = JSON.parse(readFileSync(join(root, 'reports/mutation/mutation.json'), 'utf8'));

const rows = [];
const survivors = [];
const equivalents = [];
const matched = new Set();
let detectedAll = 0;
let validAll = 0;
let equivalentAll = 0;
/** The code a mutant replaced, as the report's source has it. */
function originalOf(lines, { start, end }) {
  if (start.line === end.line) return lines[start.line - 1].slice(start.column - 1, end.column - 1);
  return [lines[start.line - 1].slice(start.column - 1), ...lines.slice(start.line, end.line - 1), lines[end.line - 1].slice(0, end.column - 1)].join('\n');
}
for (const [file, { mutants, source }] of Object.entries(report.files).sort(([a], [b]) => a.localeCompare(b))) {
  const lines = source.split('\n');
  const count = (...statuses) => mutants.filter((m) => statuses.includes(m.status)).length;
  const detected = count('Killed', 'Timeout');
  const valid = detected + count('Survived', 'NoCoverage');
  let equivalent = 0;
  for (const m of mutants.filter((x) => x.status === 'Survived' || x.status === 'NoCoverage').sort((a, b) => a.location.start.line - b.location.start.line)) {
    const original = originalOf(lines, m.location);
    const e = EQUIVALENTS.find((x) => x.file === file && x.mutator === m.mutatorName && x.original === original && x.replacement === m.replacement);
    const cell = (t) => t.replaceAll('\n', ' ').slice(0, 70).replaceAll('|', '\\|');
    if (e) {
      matched.add(e);
      equivalent++;
      equivalents.push(`| ${file}:${m.location.start.line} | ${m.mutatorName} | \`${cell(original)}\` → \`${cell(m.replacement ?? '')}\` | ${e.why} |`);
      continue;
    }
    const code = (lines[m.location.start.line - 1] ?? '').trim().slice(0, 110).replaceAll('|', '\\|');
    survivors.push(
      `| ${file}:${m.location.start.line} | ${m.status === 'NoCoverage' ? 'no test runs it' : 'survived'} | ${m.mutatorName} | \`${code}\` → \`${cell(m.replacement ?? '')}\` |`,
    );
  }
  detectedAll += detected;
  validAll += valid;
  equivalentAll += equivalent;
  const score = valid === 0 ? 100 : (100 * detected) / valid;
  const real = valid - equivalent === 0 ? 100 : (100 * detected) / (valid - equivalent);
  rows.push(
    `| ${file} | ${score.toFixed(1)} % | ${real.toFixed(1)} % | ${count('Killed')} | ${count('Timeout')} | ${count('Survived') + count('NoCoverage') - equivalent} | ${equivalent} | ${score >= TARGET ? 'met' : '**missed**'} |`,
  );
}
const total = validAll === 0 ? 100 : (100 * detectedAll) / validAll;
const totalReal = validAll - equivalentAll === 0 ? 100 : (100 * detectedAll) / (validAll - equivalentAll);
const stale = EQUIVALENTS.filter((e) => !matched.has(e)).map(
  (e) => `| ${e.file} | ${e.mutator} | \`${e.original.replaceAll('|', '\\|')}\` → \`${e.replacement.replaceAll('|', '\\|')}\` |`,
);
let commit = 'a checkout without git';
try {
  commit = `commit ${execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()}`;
} catch {
  /* not a git checkout */
}
const text = `# Mutation testing

Produced by \`npm run test:mutation -- --force\` (StrykerJS, \`stryker.config.mjs\`): every operator,
constant and condition of the pure modules below is changed in turn and the fast tests (unit and
property, \`npm run test:fast\`) that cover it are run; a mutant no test notices is a line no test
guards. Score = mutants detected (killed, or the tests timed out) / mutants that could be detected
(detected, survived, not covered); "without equivalents" leaves out the mutants listed as
equivalent below (\`scripts/mutation-equivalents.js\`). Target: ${TARGET} % per module, and nothing
left in "What survived". This run: ${commit},
${report.files ? Object.values(report.files).reduce((n, f) => n + f.mutants.length, 0) : 0} mutants.

Without \`--force\` the run is incremental (a change re-tests what it touched), but Stryker never
re-tests a static mutant (one in a module-level constant, evaluated at import) whose code did not
change, even when a test did: run with \`--force\` before recording this file.

| module | score | without equivalents | killed | timeout | survived | equivalent | ≥ ${TARGET} % |
|---|---|---|---|---|---|---|---|
${rows.join('\n')}
| **all** | **${total.toFixed(1)} %** | **${totalReal.toFixed(1)} %** | | | | | |

## What survived

Each is a test to write, or an equivalent mutant to list in \`scripts/mutation-equivalents.js\` with
one line of why.

${
  survivors.length === 0
    ? 'Nothing.'
    : `| where | | mutator | original → mutant |
|---|---|---|---|
${survivors.join('\n')}`
}

## Equivalent

The same behaviour written differently: no input the module can be given tells these apart.

| where | mutator | original → mutant | why |
|---|---|---|---|
${equivalents.join('\n')}
${
  stale.length === 0
    ? ''
    : `
## Listed as equivalent, but no longer a survivor

Killed by a test now, or the code changed: remove these from \`scripts/mutation-equivalents.js\`.

| file | mutator | original → mutant |
|---|---|---|
${stale.join('\n')}
`
}`;
writeFileSync(join(root, 'MUTATION.md'), text);
const missed = rows.filter((r) => r.includes('**missed**')).length;
console.log(
  `MUTATION.md: ${total.toFixed(1)} % over ${rows.length} modules (${totalReal.toFixed(1)} % without ${equivalentAll} equivalents), ${survivors.length} mutants left${stale.length ? `, ${stale.length} stale equivalents` : ''}`,
);
// The break threshold: under target anywhere, or anything unexplained, fails the command.
if (missed > 0 || survivors.length > 0 || stale.length > 0) {
  console.error(
    `mutation testing: ${missed} modules under ${TARGET} %, ${survivors.length} mutants survived unexplained, ${stale.length} equivalents listed that no longer survive`,
  );
  process.exitCode = 1;
}

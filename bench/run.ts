// npm run bench: every benchmark, each against a baseline measured in the same run; writes BENCHMARKS.md.
import { execFileSync } from 'node:child_process';
import { cpus, release, totalmem } from 'node:os';
import { writeFileSync } from 'node:fs';
import { benchCreatePin } from './create-pin.ts';

const fmt = (n: number) => n.toFixed(2);
const cp = await benchCreatePin(Number(process.env.BENCH_RUNS ?? 50));
const ratio = cp.ours / cp.script;
const util = execFileSync('unshare', ['--version'], { encoding: 'utf8' }).trim();
const text = `# Benchmarks

Produced by \`npm run bench\` (as root) on ${new Date().toISOString().slice(0, 10)}: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'},
${Math.round(totalmem() / 2 ** 30)} GiB, kernel ${release()}, Node ${process.version}, ${util}.
Every figure is a ratio against a baseline measured in the same run, interleaved with it; the
machines are shared and noisy, so only the ratios are compared with targets.

## create+pin (SPEC §5)

One namespace created from a context (uid and gid map 0 100000 65536, owner root), maps written
and checked, pinned with a bind mount, helper killed and reaped; released between runs (not timed).
Baseline: a bash script doing the same steps with \`unshare --user sleep infinity\`, printf into
the map files, \`mount --bind\` and \`kill\`. ${cp.runs} runs each after 5 warm-up runs.

| | median ms | p90 ms |
|---|---|---|
| usernsd (Namespaces.ensure) | ${fmt(cp.ours)} | ${fmt(cp.oursP90)} |
| shell script | ${fmt(cp.script)} | ${fmt(cp.scriptP90)} |
| **ratio** (target ≤ 0.8) | **${fmt(ratio)}** | ${fmt(cp.oursP90 / cp.scriptP90)} |

${ratio <= 0.8 ? 'Target met.' : `Target missed by ${fmt(ratio - 0.8)}.`} The agent saves the script's bash start-up, the
\`mount\` binary and the \`sleep\` exec: it spawns one helper (\`unshare --user -- cat\`), polls
/proc/PID/ns/user, writes the maps and calls mount(2) through koffi itself.
`;
writeFileSync(new URL('../BENCHMARKS.md', import.meta.url), text);
process.stdout.write(text);

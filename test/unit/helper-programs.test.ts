// What the agent runs inside a user namespace an owner may own (nsenter --user=PIN, with root's
// ids): a process there that execs a program it can read is the owner's to trace, and takes root's
// file access with it. So each such program is one of HelperPrograms' execute-only copies, never a
// program named by a literal (the readable bash that wrote nested maps was one: caught by the
// exposure watcher of test/integration/userns.test.ts, one run in many). Read from the sources, so
// that it holds for every call there is and every call added.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const KERNEL = new URL('../../agent/kernel/', import.meta.url).pathname;

/** Each argument list that enters a user namespace: from `--user=` to the end of its array. */
function userEntries(text: string): string[] {
  const out: string[] = [];
  for (let at = text.indexOf('`--user='); at >= 0; at = text.indexOf('`--user=', at + 1)) {
    let depth = 0;
    let end = at;
    for (; end < text.length; end++) {
      if (text[end] === '[') depth++;
      if (text[end] === ']' && depth-- === 0) break;
    }
    out.push(text.slice(at, end));
  }
  return out;
}

/** The program an argument list runs after its `'--'`: a literal ('bash'), or an expression (a copy's path). */
function programAfterDashes(args: string): string | null {
  const m = /'--',\s*([^,\s]+)/.exec(args);
  return m ? m[1] : null;
}

describe('unit: programs run inside a user namespace are execute-only copies', () => {
  const files = readdirSync(KERNEL).filter((f) => f.endsWith('.ts'));

  it('names no program by a literal after nsenter --user=… --', () => {
    const literal: string[] = [];
    let seen = 0;
    for (const f of files) {
      for (const args of userEntries(readFileSync(join(KERNEL, f), 'utf8'))) {
        const program = programAfterDashes(args);
        if (program === null) continue;
        seen++;
        if (/^['"`]/.test(program)) literal.push(`${f}: ${program}`);
      }
    }
    assert.ok(seen >= 4, `the check read the calls it is meant to (${seen})`);
    assert.deepEqual(literal, []);
  });

  it('reads a literal as one (a check of the check)', () => {
    const args = userEntries("run(nsenter, [`--user=${pin}`, '--preserve-credentials', '--', 'bash', '-c', script]);")[0];
    assert.equal(programAfterDashes(args), "'bash'");
  });
});

// The manual pages against the code: every configuration key documented, every page lint-clean.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { AGENT_SCHEMA, CONTEXT_SCHEMA } from '../../config/schema.ts';
import type { Schema } from '../../config/schema.ts';

const page = (name: string) => readFileSync(new URL(`../../man/${name}`, import.meta.url), 'utf8');

/** Keys the page documents: the `.B key` line right after each `.TP` of a `SECTION [name]`. */
function documented(text: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  let section: string | null = null;
  const lines = text.split('\n');
  for (const [i, line] of lines.entries()) {
    const h = /^\.SH "SECTION \[(\w+)\]"/.exec(line);
    if (h) { section = h[1]!; out.set(section, new Set()); continue; }
    if (line.startsWith('.SH')) section = null;
    if (section && lines[i - 1] === '.TP') {
      const k = /^\.B (\S+)$/.exec(line);
      if (k) out.get(section)!.add(k[1]!);
    }
  }
  return out;
}

function assertDocumented(schema: Schema, file: string) {
  const doc = documented(page(file));
  for (const [section, keys] of Object.entries(schema)) {
    assert.ok(doc.has(section), `${file} has no SECTION [${section}]`);
    for (const key of Object.keys(keys)) assert.ok(doc.get(section)!.has(key), `${file} does not document [${section}] ${key}`);
    for (const key of doc.get(section)!) assert.ok(Object.hasOwn(keys, key), `${file} documents [${section}] ${key}, which the schema lacks`);
  }
}

describe('man pages', () => {
  it('userns.d(5) documents every context key, and no key the schema lacks', () => assertDocumented(CONTEXT_SCHEMA, 'userns.d.5'));
  it('usernsd.conf(5) documents every agent key, and no key the schema lacks', () => assertDocumented(AGENT_SCHEMA, 'usernsd.conf.5'));

  it('every page passes mandoc -T lint', function () {
    if (spawnSync('mandoc', ['-V']).error) this.skip(); // needs mandoc (apt-get install mandoc; .ci/run installs it)
    const dir = new URL('../../man/', import.meta.url).pathname;
    for (const f of readdirSync(dir)) {
      const r = spawnSync('mandoc', ['-T', 'lint', '-W', 'warning', `${dir}${f}`], { encoding: 'utf8' });
      assert.equal(r.stdout + r.stderr, '', `mandoc -T lint ${f}`);
    }
  });
});

// The manual pages against the code: every configuration key documented, every page lint-clean.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { COMMAND_NAMES, EXIT } from '../../agent/cli/main.ts';
import { ERROR_CODES } from '../../agent/errors.ts';
import { ANY_METHOD_ERRORS, LIMITS, METHODS } from '../../agent/wire/protocol.ts';
import { AGENT_SCHEMA, CONTEXT_SCHEMA } from '../../config/schema.ts';
import type { KeySpec } from '../../config/schema.ts';
import { AGENT_DEFAULTS, keepStartOnly } from '../../config/load.ts';
import type { Schema } from '../../config/schema.ts';

const page = (name: string) => readFileSync(new URL(`../../man/${name}`, import.meta.url), 'utf8');

/** Keys the page documents: the `.B key` line right after each `.TP` of a `SECTION [name]`. */
function documented(text: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  let section: string | null = null;
  const lines = text.split('\n');
  for (const [i, line] of lines.entries()) {
    const h = /^\.SH "SECTION \[(\w+)\]"/.exec(line);
    if (h) {
      section = h[1]!;
      out.set(section, new Set());
      continue;
    }
    if (line.startsWith('.SH')) section = null;
    if (section && lines[i - 1] === '.TP') {
      const k = /^\.B (\S+)$/.exec(line);
      if (k) out.get(section)!.add(k[1]);
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

/** The terms of a `.TP` list under `.SH HEADING`: every word of the line after each `.TP`, roff escapes removed. */
function termsUnder(text: string, heading: string): Set<string> {
  const out = new Set<string>();
  let inside = false;
  const lines = text.split('\n');
  for (const [i, line] of lines.entries()) {
    if (line.startsWith('.SH')) inside = line.replace(/^\.SH\s+/, '').replace(/"/g, '') === heading;
    else if (inside && lines[i - 1] === '.TP') {
      for (const w of line
        .replace(/^\.(B|BR|I|IR) /, '')
        .replace(/\\f[BIRP]/g, '')
        .replace(/\\-/g, '-')
        .split(/[\s",]+/))
        if (w) out.add(w);
    }
  }
  return out;
}

function assertTerms(file: string, heading: string, expected: Iterable<string>) {
  const terms = termsUnder(page(file), heading);
  for (const t of expected) assert.ok(terms.has(t), `${file}: ${heading} does not document ${t} (has ${[...terms].join(' ')})`);
}

describe('man pages', () => {
  it('usernsd-protocol(7) documents every method, error code and limit', () => {
    assertTerms('usernsd-protocol.7', 'METHODS', METHODS.keys());
    assertTerms('usernsd-protocol.7', 'ERRORS', ERROR_CODES);
    assertTerms('usernsd-protocol.7', 'LIMITS', Object.keys(LIMITS));
    const limits = page('usernsd-protocol.7');
    for (const [k, v] of Object.entries(LIMITS)) assert.match(limits, new RegExp(`\\.B ${k}\\n${v}\\b`), `${k} is ${v} in the page too`);
  });

  it('usernsd-protocol(7) names under each method exactly the errors protocol.ts declares for it', () => {
    const text = page('usernsd-protocol.7');
    const methods = text.split('\n.SH METHODS\n')[1].split('\n.SH ')[0];
    for (const m of METHODS.values()) {
      const entry = methods.split(`\n.TP\n.B ${m.name}\n`)[1]?.split('\n.TP\n')[0];
      assert.ok(entry !== undefined, `no entry for ${m.name}`);
      const line = /^Errors: (.*)\.$/m.exec(entry)?.[1];
      assert.ok(line !== undefined, `${m.name}: no "Errors:" line`);
      const shown = line === 'only those of every method' ? [] : line.split(', ');
      const own = [...m.errors].filter((c) => !ANY_METHOD_ERRORS.includes(c) && !(m.rootOnly && c === 'E_PERMISSION'));
      assert.deepEqual([...shown].sort(), own.sort(), m.name);
    }
  });

  it('usernsctl(1) documents every command, option and exit code', () => {
    assertTerms('usernsctl.1', 'COMMANDS', COMMAND_NAMES);
    assertTerms('usernsctl.1', 'OPTIONS', ['--socket', '-s', '--json', '--help', '-h', '--version', '-V']);
    assertTerms('usernsctl.1', 'EXIT STATUS', Object.values(EXIT).map(String));
    // Every option any command parses (its parseArgs tables in agent/cli/) is in the page.
    const source = ['cli/main.ts', 'cli/viewcmd.ts', 'cli/mounthelper.ts']
      .map((f) => readFileSync(new URL(`../../agent/${f}`, import.meta.url), 'utf8'))
      .join('\n');
    const flags = [...source.matchAll(/'?([a-z][a-z-]*)'?: \{ type: '(?:string|boolean)'/g)].map((m) => m[1]);
    assert.ok(flags.length >= 18, `found the option tables (${flags.join(' ')})`);
    const text = page('usernsctl.1').replace(/\\-/g, '-');
    for (const f of new Set(flags)) assert.ok(text.includes(`--${f}`), `usernsctl(1) does not mention --${f}`);
  });

  it('usernsd(8) documents every option, signal and exit code', () => {
    assertTerms('usernsd.8', 'OPTIONS', ['--config', '-c', '--log-level', '-l', '--help', '-h', '--version', '-V']);
    assertTerms('usernsd.8', 'SIGNALS', ['SIGHUP', 'SIGTERM', 'SIGINT']);
    assertTerms('usernsd.8', 'EXIT STATUS', ['0', '1', '2']);
  });

  it('userns.d(5) documents every context key, and no key the schema lacks', () => assertDocumented(CONTEXT_SCHEMA, 'userns.d.5'));
  it('usernsd.conf(5) documents every agent key, and no key the schema lacks', () => assertDocumented(AGENT_SCHEMA, 'usernsd.conf.5'));

  it('usernsd.conf(5) says "Read at start" for exactly the keys a reload keeps (the schema\'s atStart)', () => {
    const text = page('usernsd.conf.5');
    for (const [section, keys] of Object.entries(AGENT_SCHEMA)) {
      const body = text.split(`.SH "SECTION [${section}]"\n`)[1].split('\n.SH ')[0];
      const [intro, ...entries] = `\n${body}`.split('\n.TP\n');
      for (const [key, spec] of Object.entries<KeySpec<unknown>>(keys)) {
        const entry = entries.find((e) => e.startsWith(`.B ${key}\n`));
        assert.ok(entry, `[${section}] ${key} has an entry`);
        const says = entry.includes('Read at start.') || intro.includes('"Read at start"');
        assert.equal(
          says,
          spec.atStart !== undefined,
          `[${section}] ${key}: ${spec.atStart ? 'a reload keeps it, the page must say "Read at start."' : 'a reload applies it, the page must not say it waits'}`,
        );
      }
    }
  });

  it('a reload keeps what only a start may change, says which changed, and applies the rest', () => {
    const running = { ...AGENT_DEFAULTS, file: '/etc/usernsd/usernsd.conf' };
    const next = { ...running, socket: '/run/other.sock', etcd: { ...running.etcd, timeoutMs: 999 }, logLevel: 'debug' as const, contexts: '/srv/ctx' };
    const { agent, waiting } = keepStartOnly(running, next);
    assert.deepEqual(
      waiting.map((w) => w.field),
      ['socket', 'etcd'],
    );
    assert.deepEqual([agent.socket, agent.etcd.timeoutMs, agent.logLevel, agent.contexts], [running.socket, running.etcd.timeoutMs, 'debug', '/srv/ctx']);
    assert.deepEqual(keepStartOnly(running, running).waiting, []);
  });

  it('every page has NAME, SYNOPSIS or DESCRIPTION, EXAMPLES and SEE ALSO, and its SEE ALSO names only pages that exist', () => {
    const dir = new URL('../../man/', import.meta.url).pathname;
    const ours = new Set(readdirSync(dir).map((f) => f.replace(/\.(\d)$/, '($1)')));
    for (const f of readdirSync(dir)) {
      const text = page(f);
      for (const h of ['.SH NAME', '.SH EXAMPLES', '.SH "SEE ALSO"']) assert.ok(text.includes(`\n${h}\n`), `${f} has ${h}`);
      const seeAlso = text.slice(text.indexOf('.SH "SEE ALSO"'));
      for (const m of seeAlso.matchAll(/^\.BR (\S+) \((\d)\)/gm)) {
        const name = `${m[1].replace(/\\-/g, '-')}(${m[2]})`;
        if (name.startsWith('usernsd') || name.startsWith('usernsctl') || name.startsWith('userns.d'))
          assert.ok(ours.has(name), `${f}: SEE ALSO ${name} is not a page of ours`);
      }
    }
  });

  it('every page passes mandoc -T lint', function () {
    if (spawnSync('mandoc', ['-V']).error) this.skip(); // needs mandoc (apt-get install mandoc; .ci/run installs it)
    const dir = new URL('../../man/', import.meta.url).pathname;
    for (const f of readdirSync(dir)) {
      const r = spawnSync('mandoc', ['-T', 'lint', '-W', 'warning', `${dir}${f}`], { encoding: 'utf8' });
      assert.equal(r.stdout + r.stderr, '', `mandoc -T lint ${f}`);
    }
  });
});

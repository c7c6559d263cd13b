// usernsctl as a user runs it: the built program, real files, exit codes and messages.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';

const BIN = new URL('../../bin/usernsctl.js', import.meta.url).pathname;
export function usernsctl(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env, timeout: 15000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const SHIPPED = new URL('../../etc/userns.d', import.meta.url).pathname;

/**
 * The example contexts the project ships, as make install takes them (tracked by git in a checkout,
 * else every *.conf), copied into a test's own directory: a file another test leaves in the
 * checkout meanwhile (install.test's untracked one) is none of them.
 */
function copyShippedExamples(into: string): string[] {
  const r = spawnSync('git', ['-C', SHIPPED, 'ls-files', '-z', '--', '.'], { encoding: 'utf8' });
  const names =
    r.status === 0 && r.stdout !== ''
      ? r.stdout.split('\0').filter((f) => f.endsWith('.conf') && !f.includes('/'))
      : readdirSync(SHIPPED).filter((f) => f.endsWith('.conf'));
  for (const n of names) copyFileSync(join(SHIPPED, n), join(into, n));
  return names;
}

describe('usernsctl check-config', () => {
  let tree: Tree;
  beforeEach(() => {
    tree = makeTree();
  });
  afterEach(() => tree.remove());

  it('exits 0 on the shipped examples and summarises each context with --verbose', () => {
    assert.equal(copyShippedExamples(tree.contexts).length, 4);
    writeFileSync(tree.config, `[agent]\ncontexts = ${tree.contexts}\nstate = ${tree.state}\n`);
    const r = usernsctl(['check-config', '--config', tree.config, '--verbose']);
    assert.equal(r.err, '');
    assert.equal(r.code, 0);
    for (const label of ['backups', 'backups-www', 'sandbox', 'images']) assert.match(r.out, new RegExp(`^${label}: parent=`, 'm'));
    assert.match(r.out, /images: .*range=auto:\d+-\d+\(not yet recorded\)/);
    assert.match(r.out, /4 valid context\(s\), 0 error\(s\)/);
  });

  it('prints FILE: [section] key: message for each error and exits 1', () => {
    const a = tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    const b = tree.context('b.conf', '[context]\nowner = no-such-user-x\nuid_map = 0 1 0\ngid_map = 0 1 1\n');
    const c = tree.context('c.conf', '[context]\nuid_map = 0 100000 10\ngid_map = 0 500000 10\n');
    const r = usernsctl(['check-config', '--config', tree.config]);
    assert.equal(r.code, 1);
    const lines = r.err.trim().split('\n');
    assert.ok(
      lines.includes(`${b}: [context] owner: unknown user "no-such-user-x" (not found through NSS: check getent passwd no-such-user-x) (line 2)`),
      r.err,
    );
    assert.ok(
      lines.includes(`${b}: [context] uid_map: "0 1 0" has count 0 (line 3)`) || lines.some((l) => l.startsWith(`${b}: [context] uid_map: extent`)),
      r.err,
    );
    assert.ok(
      lines.some((l) => l.startsWith(`${c}: [context] uid_map: host uids 100000-100009 are already used by context "a" (${a})`)),
      r.err,
    );
  });

  it('reports a context directory that cannot be read', () => {
    tree.remove();
    const r = usernsctl(['check-config', '--config', tree.config]);
    assert.equal(r.code, 1);
    assert.match(r.err, /usernsd\.conf: cannot open: ENOENT/);
  });

  it('answers usage errors with exit 2 and a hint', () => {
    const r = usernsctl(['check-config', '--bogus']);
    assert.equal(r.code, 2);
    assert.match(r.err, /^usernsctl: Unknown option '--bogus'.*\nTry 'usernsctl --help'\./s);
    assert.equal(usernsctl(['frobnicate']).code, 2);
    assert.equal(usernsctl([]).code, 2);
  });

  it('prints help and version', () => {
    const h = usernsctl(['--help']);
    assert.equal(h.code, 0);
    assert.match(h.out, /check-config/);
    assert.match(usernsctl(['--version']).out, /^usernsctl \d+\.\d+\.\d+\n$/);
  });
});

describe('usernsctl in a pipeline', () => {
  it('ends quietly when its reader is gone (usernsctl --help | true)', () => {
    // `true` exits long before Node has started, so the write meets a closed pipe (EPIPE).
    const r = spawnSync('bash', ['-c', `"${process.execPath}" "${BIN}" --help | true; echo "\${PIPESTATUS[0]}"`], { encoding: 'utf8', timeout: 15000 });
    assert.equal(r.stderr, '', 'no EPIPE stack trace');
    assert.equal(r.stdout, '141\n', 'the status a C tool killed by SIGPIPE has');
  });
});

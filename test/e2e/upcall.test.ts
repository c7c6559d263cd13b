// The request-key upcall with the real kernel and keyutils: payload, expiry, caching, negative keys, the requester's identity.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type * as P from '../../agent/protocol.ts';
import { cleanup, makeCheckoutReachable, startAgent, USERNSCTL, usernsctl } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser } from '../helpers/kernel.ts';

/** A shell pipeline inside a fresh session keyring (so nothing is cached from before), as root or a user. */
function inSession(script: string, user?: { uid: number; gid: number }) {
  const argv = ['keyctl', 'session', '-', 'sh', '-c', script];
  const full = user ? ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups', '--', ...argv] : argv;
  const started = performance.now();
  const r = spawnSync(full[0]!, full.slice(1), { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, out: r.stdout, err: r.stderr, ms: performance.now() - started };
}

describe('e2e: the request-key upcall (root, keyutils)', function () {
  let tree: Tree;
  let agent: RunningAgent;
  let rule: string;
  let logFile: string;
  let user: ReturnType<typeof makeUser>;
  let restore: () => void;

  before(async function () {
    if (!isRoot) this.skip(); // installs a request-key.d rule and starts the agent: root
    if (spawnSync('keyctl', ['--version']).error || !existsSync('/sbin/request-key')) throw new Error('keyutils is required (apt-get install keyutils; .ci/run installs it)');
    tree = makeTree();
    user = makeUser();
    restore = makeCheckoutReachable();
    tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    tree.context('mine.conf', `[context]\nowner = ${user.name}\nuid_map = 0 300000 1000\ngid_map = 0 300000 1000\n`);
    agent = await startAgent(tree);
    logFile = join(tree.dir, 'upcall.log');
    // The handler runs with request-key's minimal environment: absolute paths for everything.
    rule = `/etc/request-key.d/usernsd-test-${process.pid}.conf`;
    writeFileSync(rule, `create user userns:* * ${process.execPath} ${USERNSCTL} upcall -t 600 --socket ${agent.socket} --log ${logFile} %k %d\n`);
  });
  after(async () => {
    if (rule) rmSync(rule, { force: true });
    await cleanup(tree);
    restore?.();
    user?.remove();
  });

  const resolves = async () => {
    const st = JSON.parse((await usernsctl(['--socket', agent.socket, '--json', 'status'])).out) as P.StatusResult;
    return st.counters?.['requests.resolve'] ?? 0;
  };

  it('status says where request-key sends userns:LABEL keys, checked at start and at each reload', async () => {
    // At start the test's rule did not exist yet: whatever the machine had, the agent said it in its log.
    assert.ok(agent.logs.some((l) => /^Upcall: /.test(l.msg)), 'the start-up check is logged');
    const r = await usernsctl(['--socket', agent.socket, 'reload']);
    assert.equal(r.code, 0, r.err);
    const st = JSON.parse((await usernsctl(['--socket', agent.socket, '--json', 'status'])).out) as P.StatusResult;
    assert.equal(st.upcall?.state, 'ok', st.upcall?.message);
    assert.equal(st.upcall?.rule, `${basename(rule)}:1`);
    assert.deepEqual(st.upcall?.handler?.slice(0, 3), [process.execPath, USERNSCTL, 'upcall']);
    assert.match((await usernsctl(['--socket', agent.socket, 'status'])).out, /^upcall: {6}ok: request-key sends "user" keys "userns:LABEL" to /m);
  });

  it('instantiates userns:LABEL with the pin and maps, with a real expiry, and serves a second request from the keyring', async () => {
    const before = await resolves();
    const r = inSession('id=$(keyctl request2 user userns:a "" @s) && keyctl pipe $id && echo "--" && grep " userns:a: " /proc/keys && keyctl request2 user userns:a "" @s >/dev/null && echo again-ok');
    assert.equal(r.code, 0, r.err);
    const [payload, keys] = r.out.split('--\n');
    assert.equal(payload, `path=${tree.pins}/a\nlabel=a\nparent=host\nowner=0:0\nsetgroups=allow\nino=${(JSON.parse((await usernsctl(['--socket', agent.socket, '--json', 'resolve', 'a'])).out) as P.ResolveResult).ino}\nuid_map=0 100000 65536\ngid_map=0 100000 65536\n`);
    // /proc/keys: "ID FLAGS USAGE TIMEOUT ..." — 600 s shows as 9m or 10m, never "perm" (nfsidmap's keys stay perm).
    const timeout = keys!.trim().split(/\s+/)[3];
    assert.match(timeout!, /^(9|10)m$/, `expiry in /proc/keys: ${keys}`);
    assert.match(r.out, /again-ok\n$/);
    assert.equal(await resolves(), before + 2, 'one resolve by the upcall, one by this test; the second request2 made none');
  });

  it('fails fast with a negative key for an unknown label, and logs why', async () => {
    const r = inSession('keyctl request2 user userns:nope "" @s');
    assert.equal(r.code, 1);
    assert.match(r.err, /Key was rejected by service/);
    assert.ok(r.ms < 5000, `answered in ${r.ms} ms, not after a hang`);
    assert.match(readFileSync(logFile, 'utf8'), /"userns:nope": rejected: uid 0: E_NOT_FOUND: no context "nope"/);
    const bad = inSession('keyctl request2 user "userns:../x" "" @s');
    assert.equal(bad.code, 1);
    assert.match(readFileSync(logFile, 'utf8'), /"userns:\.\.\/x": rejected: invalid label/);
  });

  it('asks with the requester\'s identity: a user gets its own context and is refused root\'s', () => {
    const own = inSession('keyctl pipe $(keyctl request2 user userns:mine "" @s)', user);
    assert.equal(own.code, 0, own.err + readFileSync(logFile, 'utf8'));
    assert.match(own.out, new RegExp(`^path=${tree.pins}/mine\n`));
    const other = inSession('keyctl request2 user userns:a "" @s', user);
    assert.equal(other.code, 1);
    assert.match(readFileSync(logFile, 'utf8'), new RegExp(`"userns:a": rejected: uid ${user.uid}: E_PERMISSION`));
  });

  it('keys list shows the cached keys, keys clear LABEL invalidates exactly that label', () => {
    const r = inSession(`keyctl request2 user userns:a "" @s >/dev/null; keyctl request2 user userns:mine "" @s >/dev/null; ${process.execPath} ${USERNSCTL} --json keys list; ${process.execPath} ${USERNSCTL} keys clear a; ${process.execPath} ${USERNSCTL} --json keys list`);
    assert.equal(r.code, 0, r.err);
    const [first, cleared, second] = r.out.trim().split('\n');
    const labels = (j: string) => (JSON.parse(j) as { keys: { label: string; state: string }[] }).keys.filter((k) => k.state === 'instantiated').map((k) => k.label).sort();
    assert.deepEqual(labels(first!), ['a', 'mine']);
    assert.equal(cleared, 'cleared 1 key(s)');
    assert.deepEqual(labels(second!), ['mine'], 'keys clear a leaves "mine" alone (no prefix match)');
  });

  it('gives a negative key and a logged reason when the agent is down', async () => {
    assert.equal(await agent.stop(), 0);
    const r = inSession('keyctl request2 user userns:a "" @s');
    assert.equal(r.code, 1);
    assert.match(r.err, /Connection refused/);
    assert.match(readFileSync(logFile, 'utf8'), /"userns:a": rejected: cannot reach the agent at .*: ENOENT \(is usernsd running\?\)/);
  });
});

// The request-key upcall with the real kernel and keyutils: payload, expiry, caching, negative keys, the requester's identity.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import fc from 'fast-check';
import { invalidateIssuedKeys } from '../../agent/kernel/keys.ts';
import { callAgent } from '../../agent/wire/client.ts';
import * as P from '../../agent/wire/protocol.ts';
import { cleanup, makeCheckoutReachable, startAgent, USERNSCTL, usernsctl, usernsctlHere } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser } from '../helpers/kernel.ts';
import { modelTests } from '../helpers/model.ts';

type Requester = { uid: number; gid: number; capSysAdmin?: boolean };

/**
 * `sh -c SCRIPT` inside a fresh session keyring (so nothing is cached from before), as root or a
 * user; `capSysAdmin` keeps CAP_SYS_ADMIN (ambient) for a user, which some kernel builds demand
 * before they run request-key(8) for anyone (see userUpcallsRefused).
 */
function sessionArgv(script: string, user?: Requester): string[] {
  const argv = ['keyctl', 'session', '-', 'sh', '-c', script];
  const caps = user?.capSysAdmin ? ['--inh-caps=+sys_admin', '--ambient-caps=+sys_admin'] : [];
  return user ? ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups', ...caps, '--', ...argv] : argv;
}

/**
 * Whether this kernel fails a request_key(2) from a requester without CAP_SYS_ADMIN with ENOENT
 * before request-key(8) runs (6.18.44-fc builds do; Debian's own debug: rule fails alike). Asked
 * here with a key no rule answers, independently of the agent's own probe.
 */
function userUpcallsRefused(user: Requester): boolean {
  const r = inSession(`keyctl request2 user usernsd-test-probe:${process.pid} x @s`, { ...user, capSysAdmin: false });
  return r.code !== 0 && /No such file or directory/.test(r.err);
}

function inSession(script: string, user?: Requester) {
  const full = sessionArgv(script, user);
  const started = performance.now();
  const r = spawnSync(full[0], full.slice(1), { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, out: r.stdout, err: r.stderr, ms: performance.now() - started };
}

/**
 * Invalidate what the upcall answered for these labels (a crashed earlier run's, or this run's at
 * its end), where the kernel has persistent keyrings.
 */
function forgetAnswers(labels: readonly string[]): void {
  try {
    invalidateIssuedKeys(new Set(labels));
  } catch {
    /* no persistent keyrings */
  }
}

/** The labels these tests answer keys for. */
const TEST_LABELS = ['a', 'mine', 'gone'];

/**
 * Both handlers answer the same keys the same way: the C one (dist/usernsd-upcall, built when a C
 * compiler is present; CI always has one) and the Node one (usernsctl upcall).
 */
const C_HANDLER = new URL('../../dist/usernsd-upcall', import.meta.url).pathname;
const HANDLERS: { name: string; argv: string[] }[] = [
  { name: 'the Node handler, usernsctl upcall', argv: [process.execPath, USERNSCTL, 'upcall'] },
  ...(existsSync(C_HANDLER) || process.env.CI ? [{ name: 'the C handler, usernsd-upcall', argv: [C_HANDLER] }] : []),
];

for (const handler of HANDLERS)
  describe(`e2e: the request-key upcall, ${handler.name} (root, keyutils)`, function () {
    let tree: Tree;
    let agent: RunningAgent;
    let rule: string;
    let logFile: string;
    let user: ReturnType<typeof makeUser>;
    /** The test user as a requester the kernel runs request-key for (with CAP_SYS_ADMIN where the kernel wants it). */
    let asUser: Requester;
    let refused: boolean;
    let restore: () => void;

    before(async function () {
      if (!isRoot) this.skip(); // installs a request-key.d rule and starts the agent: root
      if (spawnSync('keyctl', ['--version']).error || !existsSync('/sbin/request-key'))
        throw new Error('keyutils is required (apt-get install keyutils; .ci/run installs it)');
      tree = makeTree();
      user = makeUser();
      refused = userUpcallsRefused(user);
      asUser = { uid: user.uid, gid: user.gid, capSysAdmin: refused };
      restore = makeCheckoutReachable();
      tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
      tree.delegate(user.name, 300000, 1000);
      tree.context('mine.conf', `[context]\nowner = ${user.name}\nuid_map = 0 300000 1000\ngid_map = 0 300000 1000\n`);
      // Answers a crashed earlier run registered for these labels would be seen by the tests below.
      forgetAnswers(TEST_LABELS);
      agent = await startAgent(tree);
      logFile = join(tree.dir, 'upcall.log');
      // The handler runs with request-key's minimal environment: absolute paths for everything.
      rule = `/etc/request-key.d/usernsd-test-${process.pid}.conf`;
      writeFileSync(rule, `create user userns:* * ${handler.argv.join(' ')} -t 600 --socket ${agent.socket} --log ${logFile} %k %d\n`);
    });
    after(async () => {
      if (rule) rmSync(rule, { force: true });
      // The answers the upcall registered in root's persistent keyring would otherwise wait for their expiry.
      forgetAnswers(TEST_LABELS);
      await cleanup(tree);
      restore?.();
      user?.remove();
    });

    const resolves = async () => {
      const st = JSON.parse((await usernsctlHere(['--socket', agent.socket, '--json', 'status'])).out) as P.StatusResult;
      return st.counters?.['requests.resolve'] ?? 0;
    };

    it('status says where request-key sends userns:LABEL keys, checked at start and at each reload', async () => {
      // At start the test's rule did not exist yet: whatever the machine had, the agent said it in its log.
      assert.ok(
        agent.logs.some((l) => /^Upcall: /.test(l.msg)),
        'the start-up check is logged',
      );
      const r = await usernsctlHere(['--socket', agent.socket, 'reload']);
      assert.equal(r.code, 0, r.err);
      const st = JSON.parse((await usernsctlHere(['--socket', agent.socket, '--json', 'status'])).out) as P.StatusResult;
      assert.equal(st.upcall?.state, 'ok', st.upcall?.message);
      assert.equal(st.upcall?.rule, `${basename(rule)}:1`);
      assert.deepEqual(st.upcall?.handler?.slice(0, handler.argv.length), handler.argv);
      assert.match((await usernsctlHere(['--socket', agent.socket, 'status'])).out, /^upcall: {6}ok: request-key sends "user" keys "userns:LABEL" to /m);
    });

    it('instantiates userns:LABEL with the pin and maps, with a real expiry, and serves a second request from the keyring', async () => {
      const before = await resolves();
      const r = inSession(
        'id=$(keyctl request2 user userns:a "" @s) && keyctl pipe $id && echo "--" && grep " userns:a: " /proc/keys && keyctl request2 user userns:a "" @s >/dev/null && echo again-ok',
      );
      assert.equal(r.code, 0, r.err);
      const [payload, keys] = r.out.split('--\n');
      assert.equal(
        payload,
        `path=${tree.pins}/a\nlabel=a\nparent=host\nowner=0:0\nsetgroups=allow\nino=${(JSON.parse((await usernsctlHere(['--socket', agent.socket, '--json', 'resolve', 'a'])).out) as P.ResolveResult).ino}\nuid_map=0 100000 65536\ngid_map=0 100000 65536\n`,
      );
      // /proc/keys: "ID FLAGS USAGE TIMEOUT ..." — 600 s shows as 9m or 10m, never "perm" (nfsidmap's keys stay perm).
      const timeout = keys.trim().split(/\s+/)[3];
      assert.match(timeout, /^(9|10)m$/, `expiry in /proc/keys: ${keys}`);
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

    it('says whether the kernel runs request-key for users at all: a kernel that refuses them is named in status, and their requests never reach the handler', async () => {
      const st = JSON.parse((await usernsctlHere(['--socket', agent.socket, '--json', 'status'])).out) as P.StatusResult;
      const plain = { uid: user.uid, gid: user.gid };
      const r = inSession('keyctl request2 user userns:mine "" @s', plain);
      if (refused) {
        assert.equal(st.upcall?.users?.state, 'refused', JSON.stringify(st.upcall));
        assert.match(st.upcall.users.message, /ENOENT before request-key\(8\) runs when the requester lacks CAP_SYS_ADMIN/);
        assert.match(
          (await usernsctlHere(['--socket', agent.socket, 'status'])).out,
          /^ {2}users: {5}refused: this kernel fails request_key\(2\) with ENOENT/m,
        );
        assert.ok(
          agent.logs.some((l) => /^Upcall: this kernel fails request_key/.test(l.msg) && l.level === 40),
          'a warning at start',
        );
        assert.equal(r.code, 1);
        assert.match(r.err, /No such file or directory/);
        assert.doesNotMatch(readFileSync(logFile, 'utf8'), new RegExp(`uid ${user.uid}:`), 'the handler never ran for the user');
      } else {
        assert.equal(st.upcall?.users?.state, 'ok', JSON.stringify(st.upcall));
        assert.equal(r.code, 0, r.err);
      }
    });

    it('logs a hostile key description escaped: a newline in it cannot forge a log line', () => {
      const r = inSession(`keyctl request2 user "$(printf 'userns:x\\nforged-line: accepted')" "" @s`);
      assert.equal(r.code, 1, r.out);
      const log = readFileSync(logFile, 'utf8');
      assert.doesNotMatch(log, /^forged-line/m, log);
      assert.match(log, /userns:x(\\x0a|\\n)forged-line: accepted/, log);
    });

    it("asks with the requester's identity: a user gets its own context and is refused root's", () => {
      const own = inSession('keyctl pipe $(keyctl request2 user userns:mine "" @s)', asUser);
      assert.equal(own.code, 0, own.err + readFileSync(logFile, 'utf8'));
      assert.match(own.out, new RegExp(`^path=${tree.pins}/mine\n`));
      const other = inSession('keyctl request2 user userns:a "" @s', asUser);
      assert.equal(other.code, 1);
      assert.match(readFileSync(logFile, 'utf8'), new RegExp(`"userns:a": rejected: uid ${user.uid}: E_PERMISSION`));
    });

    it('keys list shows the cached keys, keys clear LABEL invalidates exactly that label', () => {
      const ctl = `${process.execPath} ${USERNSCTL}`;
      const r = inSession(
        `ida=$(keyctl request2 user userns:a "" @s); idm=$(keyctl request2 user userns:mine "" @s); echo $ida $idm; ${ctl} --json keys list; ${ctl} keys list; echo --; ${ctl} keys clear a; ${ctl} --json keys list`,
      );
      assert.equal(r.code, 0, r.err);
      const [ids, first, ...rest] = r.out.trim().split('\n');
      const [ida, idm] = ids.split(' ').map(Number);
      const table = rest.slice(0, rest.indexOf('--'));
      const [cleared, second] = rest.slice(rest.indexOf('--') + 1);
      // Only the keys this test made: root also sees every other userns: key on the machine.
      const states = (j: string) =>
        new Map((JSON.parse(j) as { keys: { id: number; state: string }[] }).keys.filter((k) => k.id === ida || k.id === idm).map((k) => [k.id, k.state]));
      assert.deepEqual(
        [...states(first)].sort(),
        [
          [ida, 'instantiated'],
          [idm, 'instantiated'],
        ].sort(),
      );
      assert.ok(
        table.some((l) => l.split(/\s+/)[0] === String(ida) && / a /.test(` ${l} `)),
        `keys list shows key ids in decimal, as keyctl does:\n${table.join('\n')}`,
      );
      assert.match(cleared, /^cleared [1-9]\d* key\(s\)$/);
      const after = states(second);
      assert.equal(after.get(idm), 'instantiated', 'keys clear a leaves "mine" alone (no prefix match)');
      assert.notEqual(after.get(ida), 'instantiated');
      // The cleared answer's own keyring in root's registry ("usernsd:KEY") goes with it; mine's stays.
      const ring = (key: number) =>
        readFileSync('/proc/keys', 'utf8')
          .split('\n')
          .find((l) => new RegExp(` keyring +usernsd:${key}: `).test(l));
      const live = (line: string | undefined) => line !== undefined && !line.split(/\s+/)[1].includes('i'); // flags: i(nvalidated), until collected
      assert.equal(live(ring(ida)), false, `the answer ring of the cleared key is gone: ${ring(ida)}`);
      assert.equal(live(ring(idm)), true, 'the other answer keeps its ring');
    });

    it('keys list says a key whose timeout ran out is expired, not instantiated', async () => {
      const ctl = `${process.execPath} ${USERNSCTL}`;
      const r = inSession(`id=$(keyctl add user userns:usernsd-test-expiry x @s) && keyctl timeout $id 1 && sleep 1.5 && echo $id && ${ctl} --json keys list`);
      assert.equal(r.code, 0, r.err);
      const [id, list] = r.out.trim().split('\n');
      const mine = (JSON.parse(list) as { keys: { id: number; state: string }[] }).keys.find((k) => k.id === Number(id));
      assert.equal(mine?.state, 'expired');
    });

    /**
     * A key session that lives on: it requests userns:LABEL, waits for `again()`, then requests it
     * again — answered from its keyring, without asking the agent, unless the key was invalidated.
     */
    async function liveSession(label: string, as?: Requester) {
      const script = `ask() { keyctl pipe "$(keyctl request2 user userns:${label} "" @s)" | grep "^label="; }; ask && read go; ask`;
      const full = sessionArgv(script, as);
      const session = spawn(full[0], full.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
      const exited = new Promise<number | null>((r) => session.on('exit', (code) => r(code)));
      let out = '';
      let err = '';
      session.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
      });
      session.stderr.setEncoding('utf8').on('data', (d: string) => {
        err += d;
      });
      for (let i = 0; i < 300 && !out.includes('label=') && session.exitCode === null; i++) await new Promise((r) => setTimeout(r, 20));
      assert.match(out, new RegExp(`^label=${label}$`, 'm'), `the first request is answered: ${err}`);
      return {
        async again(): Promise<{ code: number | null; out: string; err: string }> {
          session.stdin.end('go\n');
          return { code: await exited, out, err };
        },
        kill: () => {
          if (session.exitCode === null) session.kill();
        },
      };
    }

    it('a release invalidates the cached answers for that label, in every keyring that holds one', async () => {
      // Two holders of "userns:mine": the user's session and root's. (The payload's inode could not
      // tell a new answer from the cached one: the new namespace may well get the number the released
      // one freed. The agent's resolve count does.)
      const sessions = [await liveSession('mine', asUser), await liveSession('mine')];
      try {
        // Root sees the user's key: the upcall registered it in root's persistent keyring.
        const listed = JSON.parse((await usernsctl(['--json', 'keys', 'list'])).out) as { keys: { label: string; uid: number }[] };
        assert.ok(
          listed.keys.some((k) => k.label === 'mine' && k.uid === user.uid),
          `root lists the user's key: ${JSON.stringify(listed)}`,
        );
        assert.equal((await usernsctlHere(['--socket', agent.socket, 'release', 'mine'])).code, 0);
        const before = await resolves();
        for (const s of sessions) {
          const r = await s.again();
          assert.equal(r.code, 0, r.err);
        }
        assert.equal(await resolves(), before + 2, 'each second request made an upcall: a resolve each');
        assert.ok(
          agent.logs.some((l) => /^Invalidated \d+ cached upcall key/.test(l.msg) && (l.labels as string[]).includes('mine')),
          'the agent says it invalidated keys',
        );
      } finally {
        for (const s of sessions) s.kill();
      }
    });

    it('a reload invalidates the cached answers for a context it removed: the next request fails at once', async () => {
      tree.context('gone.conf', '[context]\nuid_map = 0 400000 1000\ngid_map = 0 400000 1000\n');
      assert.equal((await usernsctlHere(['--socket', agent.socket, 'reload'])).code, 0);
      const s = await liveSession('gone');
      try {
        rmSync(join(tree.contexts, 'gone.conf'));
        assert.equal((await usernsctlHere(['--socket', agent.socket, 'reload'])).code, 0);
        const r = await s.again();
        assert.notEqual(r.code, 0, `the cached answer is gone: ${r.out}`);
        assert.match(r.err, /Key was rejected by service/);
        assert.match(readFileSync(logFile, 'utf8'), /"userns:gone": rejected: uid 0: E_NOT_FOUND/);
      } finally {
        s.kill();
      }
    });

    it('gives a negative key and a logged reason when the agent is down', async () => {
      assert.equal(await agent.stop(), 0);
      const r = inSession('keyctl request2 user userns:a "" @s');
      assert.equal(r.code, 1);
      assert.match(r.err, /Connection refused/);
      assert.match(readFileSync(logFile, 'utf8'), /"userns:a": rejected: cannot reach the agent at .*: ENOENT \(is usernsd running\?\)/);
    });
  });

/**
 * The upcall's cached answers over time, model-based: requests from one session keyring between
 * releases, usernsctl keys clear, reloads that change a context's maps or remove it and bring it
 * back, and reloads that change nothing. Each request gets what the context is now, never an
 * answer cached before the change nor "Key has been revoked", and makes an upcall exactly when the
 * model says nothing valid is cached; after every command the kernel holds no invalidated key of
 * these labels (whoever invalidates answers once the key collector has taken them: keys.ts collected).
 */
const MODEL_LABELS = ['ko0', 'ko1'] as const;
const MODEL_BASE = { ko0: 420_000, ko1: 430_000 } as const;
/** The two versions of a context's maps the history switches between: all 1000 ids, or the first 500. */
const modelMaps = (label: (typeof MODEL_LABELS)[number], half: boolean) => `0 ${MODEL_BASE[label]} ${half ? 500 : 1000}`;
const modelText = (label: (typeof MODEL_LABELS)[number], half: boolean, comment = '') =>
  `${comment}[context]\nuid_map = ${modelMaps(label, half)}\ngid_map = ${modelMaps(label, half)}\n`;

type KeysModel = { half: Set<string>; pinned: Set<string>; cached: Set<string> };
type KeysReal = { tree: Tree; agent: RunningAgent; session: AskingSession };
type AskingSession = { ask(label: string): Promise<string>; close(): void };

/** One session keyring for a whole history: each label written on its stdin is asked for (request2, then pipe). */
function askingSession(): AskingSession {
  const script =
    'while read l; do if id=$(keyctl request2 user "userns:$l" "" @s 2>&1); then keyctl pipe "$id"; echo; else echo "ERROR $id"; fi; echo "--end--"; done';
  const child = spawn('keyctl', ['session', '-', 'sh', '-c', script], { stdio: ['pipe', 'pipe', 'ignore'] });
  let buffered = '';
  let answer: ((out: string) => void) | null = null;
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    buffered += d;
    const end = buffered.indexOf('--end--\n');
    if (end < 0 || !answer) return;
    const out = buffered.slice(0, end);
    buffered = buffered.slice(end + '--end--\n'.length);
    const a = answer;
    answer = null;
    a(out);
  });
  return {
    ask(label) {
      return new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer for ${label} within 10 s`)), 10_000);
        answer = (out) => {
          clearTimeout(timer);
          resolve(out);
        };
        child.stdin.write(`${label}\n`);
      });
    },
    close() {
      child.stdin.end();
      if (child.exitCode === null) child.kill();
    },
  };
}

/** The kernel's side: no key of these labels that is invalidated but not collected yet, in any keyring root can see. */
function noInvalidatedKeys(after: string): void {
  const lingering = readFileSync('/proc/keys', 'utf8')
    .split('\n')
    .filter((l) => / user +userns:ko\d:/.test(l) && l.split(/\s+/)[1].includes('i'));
  assert.deepEqual(lingering, [], `after ${after}, the kernel still holds invalidated keys (a request meeting one fails with "Key has been revoked")`);
}

type KeysCommand = fc.AsyncCommand<KeysModel, KeysReal>;
const keysCommand = (name: string, run: (m: KeysModel, r: KeysReal) => Promise<void>): KeysCommand => ({
  check: () => true,
  run: async (m, r) => {
    await run(m, r);
    noInvalidatedKeys(name);
  },
  toString: () => name,
});

const modelResolves = async (r: KeysReal) => (await callAgent(r.agent.socket, P.status, {})).counters?.['requests.resolve'] ?? 0;

const ask = (label: (typeof MODEL_LABELS)[number]) =>
  keysCommand(`ask ${label}`, async (m, r) => {
    const before = await modelResolves(r);
    const out = await r.session.ask(label);
    const upcalls = (await modelResolves(r)) - before;
    assert.doesNotMatch(out, /^ERROR/, `the request for ${label} is answered: ${out}`);
    assert.match(out, new RegExp(`^uid_map=${modelMaps(label, m.half.has(label))}$`, 'm'), `${label} is answered with its maps now: ${out}`);
    assert.equal(upcalls, m.cached.has(label) ? 0 : 1, m.cached.has(label) ? 'served from the keyring' : 'a new upcall');
    m.cached.add(label);
    m.pinned.add(label);
  });

/** Whatever was cached for a label that changed or went is no longer valid. */
const forget = (m: KeysModel, label: string) => {
  m.cached.delete(label);
  m.pinned.delete(label);
};

const release = (label: (typeof MODEL_LABELS)[number]) =>
  keysCommand(`release ${label}`, async (m, r) => {
    const { released } = await callAgent(r.agent.socket, P.release, { label });
    assert.equal(released, m.pinned.has(label));
    forget(m, label);
  });

const clear = (label: (typeof MODEL_LABELS)[number]) =>
  keysCommand(`usernsctl keys clear ${label}`, async (m) => {
    const out = await usernsctl(['--json', 'keys', 'clear', label]);
    assert.equal(out.code, 0, out.err);
    m.cached.delete(label);
  });

/** Its maps switched, reloaded, and its pin (now in drift) released: the next request gets the new maps. */
const flip = (label: (typeof MODEL_LABELS)[number]) =>
  keysCommand(`switch ${label}'s maps + reload + release`, async (m, r) => {
    const half = !m.half.has(label);
    r.tree.context(`${label}.conf`, modelText(label, half));
    await callAgent(r.agent.socket, P.reload, {});
    await callAgent(r.agent.socket, P.release, { label });
    if (half) m.half.add(label);
    else m.half.delete(label);
    forget(m, label);
  });

const removeAndRestore = (label: (typeof MODEL_LABELS)[number]) =>
  keysCommand(`remove ${label} + reload, write it back + reload`, async (m, r) => {
    rmSync(join(r.tree.contexts, `${label}.conf`));
    await callAgent(r.agent.socket, P.reload, {});
    r.tree.context(`${label}.conf`, modelText(label, m.half.has(label)));
    await callAgent(r.agent.socket, P.reload, {});
    forget(m, label);
  });

/** The same context in a file written again: nothing changes, and what is cached stays. */
const rewrite = (label: (typeof MODEL_LABELS)[number]) =>
  keysCommand(`rewrite ${label} with a comment + reload`, async (m, r) => {
    r.tree.context(`${label}.conf`, modelText(label, m.half.has(label), `# written at ${performance.now()}\n`));
    await callAgent(r.agent.socket, P.reload, {});
  });

const keysCommands = fc.commands(
  [
    fc.constantFrom(...MODEL_LABELS).map(ask),
    fc.constantFrom(...MODEL_LABELS).map(ask),
    fc.constantFrom(...MODEL_LABELS).map(ask),
    fc.constantFrom(...MODEL_LABELS).map(release),
    fc.constantFrom(...MODEL_LABELS).map(clear),
    fc.constantFrom(...MODEL_LABELS).map(flip),
    fc.constantFrom(...MODEL_LABELS).map(removeAndRestore),
    fc.constantFrom(...MODEL_LABELS).map(rewrite),
  ],
  { maxCommands: 12 },
);

describe('e2e: the upcall over time, model-based: cached answers after releases, keys clear and reloads (root, keyutils)', function () {
  this.timeout(600_000);
  let tree: Tree;
  let agent: RunningAgent;
  let rule: string | undefined;

  before(async function () {
    if (!isRoot) this.skip();
    if (spawnSync('keyctl', ['--version']).error || !existsSync('/sbin/request-key'))
      throw new Error('keyutils is required (apt-get install keyutils; .ci/run installs it)');
    tree = makeTree();
    for (const label of MODEL_LABELS) tree.context(`${label}.conf`, modelText(label, false));
    forgetAnswers(MODEL_LABELS);
    agent = await startAgent(tree, ['--log-level', 'info']);
    const handler = HANDLERS[HANDLERS.length - 1]; // the C one where it is built
    rule = `/etc/request-key.d/usernsd-test-${process.pid}.conf`;
    writeFileSync(rule, `create user userns:* * ${handler.argv.join(' ')} -t 600 --socket ${agent.socket} --log ${join(tree.dir, 'upcall.log')} %k %d\n`);
  });
  after(async () => {
    if (rule) rmSync(rule, { force: true });
    forgetAnswers(MODEL_LABELS);
    await cleanup(tree);
  });

  const property = () =>
    fc.asyncProperty(keysCommands, async (cmds) => {
      // Each history: the files as first written, nothing pinned, a new session keyring with nothing cached.
      for (const label of MODEL_LABELS) tree.context(`${label}.conf`, modelText(label, false));
      await callAgent(agent.socket, P.reload, {});
      for (const label of MODEL_LABELS) await callAgent(agent.socket, P.release, { label });
      noInvalidatedKeys('the reset before a history');
      const session = askingSession();
      try {
        await fc.asyncModelRun(
          () => ({ model: { half: new Set<string>(), pinned: new Set<string>(), cached: new Set<string>() }, real: { tree, agent, session } }),
          cmds,
        );
      } finally {
        session.close();
      }
    });

  modelTests(
    {
      file: import.meta.url,
      title: 'answers every request with the context as it is now, from a new upcall exactly when the last answer went',
      runs: 8,
      seed: 20261207,
    },
    property,
  );
});

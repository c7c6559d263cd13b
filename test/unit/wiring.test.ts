// The upcall wiring check against the real request-key(8) (keyutils), reading rules from a scratch
// directory (request-key -l) so the machine's /etc/request-key.d does not matter.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkUpcallWiring, REQUEST_KEY } from '../../agent/wiring.ts';

const SOCKET = '/run/usernsd-test/agent.sock';
const DEFAULT = '/run/usernsd/usernsd.sock';

describe('the upcall wiring check (request-key -d)', () => {
  let dir: string;
  let bin: string;
  before(function () {
    if (!existsSync(REQUEST_KEY)) throw new Error('keyutils is required (apt-get install keyutils; .ci/run installs it)');
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'usernsd-wiring-'));
    mkdirSync(join(dir, 'request-key.d'));
    writeFileSync(join(dir, 'request-key.conf'), 'create user debug:* * /bin/true\n');
    bin = join(dir, 'usernsctl');
    writeFileSync(bin, '#!/bin/sh\n', { mode: 0o755 });
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const rule = (text: string) => writeFileSync(join(dir, 'request-key.d', 'usernsd.conf'), `# a comment\n${text}\n`);
  const check = () => checkUpcallWiring(SOCKET, { configDir: dir });

  it('says "missing", and what to install, when no rule matches userns:LABEL', async () => {
    const w = await check();
    assert.equal(w.state, 'missing');
    assert.match(w.message, /make install places \/etc\/request-key\.d\/usernsd\.conf/);
  });

  it('says "ok" with the rule and the handler when usernsctl upcall asks this agent\'s socket', async () => {
    rule(`create user userns:* * ${bin} upcall -t 600 --socket ${SOCKET} %k %d`);
    const w = await check();
    assert.equal(w.state, 'ok', w.message);
    assert.equal(w.rule, 'usernsd.conf:2');
    assert.deepEqual(w.handler, [bin, 'upcall', '-t', '600', '--socket', SOCKET, '%k', '%d']);
  });

  it("says which socket the handler asks when it is not this agent's (the default, or another)", async () => {
    rule(`create user userns:* * ${bin} upcall -t 600 %k %d`);
    let w = await check();
    assert.equal(w.state, 'other-socket');
    assert.match(w.message, new RegExp(`asks the agent at ${DEFAULT}, but this agent listens on ${SOCKET}: add --socket ${SOCKET}`));
    assert.equal((await checkUpcallWiring(DEFAULT, { configDir: dir })).state, 'ok', 'no --socket means the default socket');
    rule(`create user userns:* * ${bin} upcall --socket=/elsewhere.sock %k %d`);
    w = await check();
    assert.equal(w.state, 'other-socket');
    assert.match(w.message, /asks the agent at \/elsewhere\.sock/);
  });

  it('says "elsewhere" for another program, and "broken" for a program that is missing or not executable', async () => {
    rule('create user userns:* * /bin/true %k %d');
    assert.equal((await check()).state, 'elsewhere');
    rule(`create user userns:* * ${join(dir, 'nothing')} upcall %k %d`);
    let w = await check();
    assert.equal(w.state, 'broken');
    assert.match(w.message, /nothing, which is not there/);
    chmodSync(bin, 0o644);
    rule(`create user userns:* * ${bin} upcall %k %d`);
    w = await check();
    assert.equal(w.state, 'broken');
    assert.match(w.message, /not executable/);
  });

  it("follows request-key's own choice: a rule for the exact label does not count for userns:*", async () => {
    rule(`create user userns:backups * ${bin} upcall --socket ${SOCKET} %k %d`);
    assert.equal((await check()).state, 'missing');
  });

  it('says "no-request-key" when keyutils is not installed', async () => {
    const w = await checkUpcallWiring(SOCKET, { requestKey: join(dir, 'no-request-key') });
    assert.equal(w.state, 'no-request-key');
    assert.match(w.message, /apt-get install keyutils/);
  });
});

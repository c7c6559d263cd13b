// Reading alien ownership: names through the real nss-systemd (getent, ls -l), the agent never asking
// itself, usernsctl explain on every kind of file, and metrics scraped over HTTP with bounded series.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type * as P from '../../agent/wire/protocol.ts';
import { callAgent } from '../../agent/wire/client.ts';
import * as Proto from '../../agent/wire/protocol.ts';
import { cleanup, makeCheckoutReachable, startAgent, usernsctl, usernsctlAt } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree, populateBackup } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser } from '../helpers/kernel.ts';

const B = 6_300_000;
const SERVICE = `io.usernsd.test${process.pid}`;
const USERDB = `/run/systemd/userdb/${SERVICE}`;
/** Whether /run/systemd/userdb was there before this suite's agent (else the agent made it, and removes it). */
let userdbDirBefore = true;
const PORT = 20000 + (process.pid % 20000);
const hasNssSystemd = /\bsystemd\b/.test(spawnSync('sh', ['-c', 'grep -E "^passwd:" /etc/nsswitch.conf'], { encoding: 'utf8' }).stdout);

describe('e2e: names through userdb, explain, metrics (root)', function () {
  this.timeout(120_000);
  let tree: Tree;
  let agent: RunningAgent;
  let owner: ReturnType<typeof makeUser>;
  let stranger: ReturnType<typeof makeUser>;
  let restoreModes: () => void = () => {};
  let backup: string;
  const ctl = (args: string[], opts: Parameters<typeof usernsctl>[1] = {}) => usernsctlAt(agent.socket, args, opts);
  // getent and ls as any program runs them: without the bypass this test process holds (config/nss.ts).
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'SYSTEMD_BYPASS_USERDB'));
  const as = (u: { uid: number; gid: number } | null, cmd: string[]) =>
    spawnSync(u ? 'setpriv' : cmd[0], u ? [`--reuid=${u.uid}`, `--regid=${u.gid}`, '--clear-groups', '--', ...cmd] : cmd.slice(1), {
      encoding: 'utf8',
      timeout: 20_000,
      env,
    });

  before(async function () {
    if (!isRoot) this.skip();
    restoreModes = makeCheckoutReachable();
    owner = makeUser();
    stranger = makeUser();
    tree = makeTree(`userdb = yes\nuserdb_socket = ${USERDB}\n[metrics]\nlisten = 127.0.0.1:${PORT}\n`);
    tree.delegate(owner.name, B, 65536);
    tree.context('hpa-backups.conf', `[context]\nowner = ${owner.name}\nuid_map = 0 ${B} 65536\ngid_map = 0 ${B} 65536\n[squash]\nmode = root\n`);
    tree.context('www.conf', `[context]\nparent = hpa-backups\nuid_map = 0 1000 100\ngid_map = 0 1000 100\n[squash]\nmode = none\n`);
    backup = join(tree.dir, 'backup');
    populateBackup(backup);
    userdbDirBefore = existsSync(dirname(USERDB));
    agent = await startAgent(tree);
    assert.equal((await ctl(['label', 'set', backup, 'hpa-backups', '--config', tree.config])).code, 0);
  });

  after(async () => {
    await cleanup(tree);
    if (existsSync(USERDB)) rmSync(USERDB); // an agent killed rather than stopped leaves it
    if (!userdbDirBefore)
      try {
        rmdirSync(dirname(USERDB));
      } catch {
        /* not empty: another service's */
      }
    owner?.remove();
    stranger?.remove();
    restoreModes();
  });

  it("getent and ls -l show LABEL.N for a context's host ids, through the real nss-systemd, both ways", function () {
    if (!hasNssSystemd) this.skip(); // Debian 12's default nsswitch: passwd: files systemd
    assert.equal(
      as(null, ['getent', 'passwd', String(B + 1000)]).stdout,
      `hpa-backups.1000:x:${B + 1000}:${B + 1000}:uid 1000 of context hpa-backups:/:/usr/sbin/nologin\n`,
    );
    assert.equal(as(null, ['getent', 'passwd', 'hpa-backups.0']).stdout.split(':')[2], String(B));
    assert.equal(as(null, ['getent', 'group', String(B + 5)]).stdout, `hpa-backups.5:x:${B + 5}:\n`);
    // www is nested in hpa-backups: its ids are hpa-backups' own, named once, by the top-level context.
    assert.equal(as(null, ['getent', 'passwd', 'www.0']).status, 2);
    const dir = join(tree.dir, 'named');
    mkdirSync(dir);
    writeFileSync(join(dir, 'f'), '');
    chownSync(join(dir, 'f'), B + 1000, B + 5);
    assert.match(as(null, ['ls', '-l', dir]).stdout, /hpa-backups\.1000 hpa-backups\.5 .* f\n/);
    assert.equal(as(null, ['getent', 'passwd', String(B + 70000)]).status, 2, 'an id no context maps has no name');
  });

  it('names only what the caller could learn anyway: the owner sees them, a stranger gets numbers', function () {
    if (!hasNssSystemd) this.skip();
    assert.match(as(owner, ['getent', 'passwd', String(B + 1000)]).stdout, /^hpa-backups\.1000:/);
    const r = as(stranger, ['getent', 'passwd', String(B + 1000)]);
    assert.equal(r.status, 2, r.stdout);
    assert.match(as(stranger, ['ls', '-ln', backup]).stdout, /1000/); // ls still works, with numbers
  });

  it('never asks itself: a context file naming one of its own names as owner reloads at once and is refused', async () => {
    // Without SYSTEMD_BYPASS_USERDB, the agent's own NSS lookup would wait on its own socket until
    // nss-systemd gave up, with every request stalled behind it.
    tree.context('loop.conf', `[context]\nowner = hpa-backups.1000\nuid_map = 0 ${B + 200000} 65536\ngid_map = 0 ${B + 200000} 65536\n`);
    // The race is the check: a reload that waited on the agent's own socket loses it.
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      callAgent(agent.socket, Proto.reload, {}),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("the reload waited on the agent's own userdb socket")), 10_000))),
    ]).finally(() => clearTimeout(timer)); // (left running, it kept the test process alive after the last test)
    assert.ok(
      r.errors.some((e) => /unknown user "hpa-backups\.1000"/.test(e)),
      r.errors.join('\n'),
    );
    rmSync(join(tree.contexts, 'loop.conf'));
    await callAgent(agent.socket, Proto.reload, {});
  });

  it("explain says what a squashed, an unmapped, a nested and an unlabelled file's ids mean, and why one is the overflow id", async () => {
    const json = async (path: string, opts: Parameters<typeof usernsctl>[1] = {}) => {
      const r = await ctl(['--json', 'explain', path], opts);
      assert.equal(r.code, 0, r.err);
      return JSON.parse(r.out) as P.Explanation;
    };
    const root = await json(join(backup, 'root'));
    assert.equal(root.context, 'hpa-backups');
    assert.deepEqual(
      [root.uid.onDisk, root.uid.host, root.uid.name, root.uid.fromHost, root.uid.identityView, root.uid.foreignView],
      [0, B, 'hpa-backups.0', 65534, B, 65534],
    );
    assert.match(root.uid.why.join(), /squashes root \(mode root\).*anonuid 65534/);
    const alien = await json(join(backup, 'alien'));
    assert.deepEqual([alien.uid.host, alien.uid.fromHost, alien.uid.identityView], [null, 65534, 65534]);
    assert.match(alien.uid.why.join(), /on-disk uid 70000 is not in the uid_map of hpa-backups \(0 6300000 65536\)/);
    const unlabelled = await json(tree.config);
    assert.equal(unlabelled.context, null);
    assert.match(unlabelled.note!, /no label/);
    // A nested context's tree: its on-disk 0 is www's root, the parent's 1000.
    const web = join(tree.dir, 'web');
    mkdirSync(web);
    writeFileSync(join(web, 'index.html'), '');
    assert.equal((await ctl(['label', 'set', web, 'www', '--config', tree.config])).code, 0);
    const nested = await json(join(web, 'index.html'));
    assert.deepEqual([nested.context, nested.parent, nested.uid.host, nested.uid.name], ['www', 'hpa-backups', B + 1000, 'hpa-backups.1000']);
    // The human form names each line; the overflow id says why.
    const human = (await ctl(['explain', join(backup, 'alien')])).out;
    assert.match(human, /^uid: on disk 70000 = uid 70000 inside hpa-backups$/m);
    assert.match(human, /^ {2}foreign view: {4}65534 \(the overflow uid\)$/m);
    assert.match(human, /^ {2}why: on-disk uid 70000 is not in the uid_map/m);
    // Read without a view, the on-disk ids are host ids: named as the host names them, groups too.
    const rootHuman = (await ctl(['explain', join(backup, 'root')])).out;
    assert.match(rootHuman, /^ {2}without a view: {2}0 \(host user root\): the on-disk id read as if it were a host uid$/m);
    assert.match(rootHuman, /^ {2}without a view: {2}0 \(host group root\): the on-disk id read as if it were a host gid$/m);
    // A stranger learns nothing about a context it may not use.
    const s = await json(join(backup, 'hpa'), { user: stranger });
    assert.equal(s.context, null);
    assert.equal(s.uid.name, null);
    assert.match(s.note!, /a context you may not use/);
  });

  it('explain through a view: the file on disk behind the view, and why it shows as it does', async () => {
    const v = join(tree.dir, 'v');
    mkdirSync(v);
    assert.equal((await ctl(['view', backup, v])).code, 0);
    try {
      const r = await ctl(['explain', join(v, 'root')]);
      assert.match(r.out, new RegExp(`^view: {4}a foreign view of ${backup} \\(context hpa-backups\\): on disk this is ${backup}/root$`, 'm'));
      assert.match(r.out, /^uid: shown here as 65534 \(the overflow uid\); on disk 0$/m);
    } finally {
      spawnSync('umount', [v]);
    }
  });

  it('serves Prometheus metrics over HTTP and as usernsctl metrics, with series bounded whatever clients send', async () => {
    const scrape = async () => {
      const res = await fetch(`http://127.0.0.1:${PORT}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      return res.text();
    };
    const series = (text: string) => text.split('\n').filter((l) => l && !l.startsWith('#'));
    const value = (text: string, name: string) =>
      Number(
        series(text)
          .find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'))
          ?.split(' ')
          .pop(),
      );
    await callAgent(agent.socket, Proto.resolve, { label: 'hpa-backups' });
    const before = await scrape();
    // Parse every line: NAME{LABELS} VALUE, and TYPE/HELP for every family.
    for (const l of series(before)) assert.match(l, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEInfNa]+$/, l);
    assert.ok(value(before, 'usernsd_namespaces_total{event="created"}') >= 1);
    assert.equal(value(before, 'usernsd_contexts{state="pinned"}'), 1);
    assert.ok(series(before).some((l) => l.startsWith('usernsd_process_resident_memory_bytes')));
    // A client sends unknown methods and unknown labels: counted under "invalid" and the error code,
    // never under anything it sent. A second round of other garbage adds no series at all.
    const garbage = async (round: string) => {
      for (let i = 0; i < 50; i++) {
        await callAgent(agent.socket, Proto.resolve, { label: `nosuch${round}${i}` }).catch(() => null);
        await callAgent(agent.socket, { name: `bogus${round}${i}`, params: {}, rootOnly: false, errors: new Set() }, {}).catch(() => null);
      }
      return scrape();
    };
    const first = await garbage('a');
    const second = await garbage('b');
    const keys = (text: string) =>
      series(text)
        .map((l) => l.replace(/ [^ ]+$/, ''))
        .filter((k) => k.startsWith('usernsd_req'))
        .sort();
    assert.deepEqual(keys(second), keys(first), 'the request series are the same set after more garbage');
    assert.ok(!second.includes('nosuch') && !second.includes('bogus'), 'no client text in a label');
    assert.ok(value(second, 'usernsd_requests_total{method="invalid",code="E_INVALID"}') >= 100);
    assert.ok(keys(before).length > 0);
    // The same text for root through the socket; nobody else.
    const ctlText = (await ctl(['metrics'])).out;
    assert.match(ctlText, /^# HELP usernsd_requests_total /m);
    assert.match((await ctl(['metrics'], { user: stranger })).err, /E_PERMISSION: metrics is for root only/);
    assert.equal((await fetch(`http://127.0.0.1:${PORT}/`)).status, 404);
  });

  it('counts upcalls as the agent sees them: answered and rejected', async () => {
    const m0 = (await callAgent(agent.socket, Proto.metrics, {})).text;
    await callAgent(agent.socket, Proto.resolve, { label: 'hpa-backups', via: 'upcall' });
    await callAgent(agent.socket, Proto.resolve, { label: 'nosuch', via: 'upcall' }).catch(() => null);
    const m1 = (await callAgent(agent.socket, Proto.metrics, {})).text;
    const v = (t: string, o: string) => Number(new RegExp(`^usernsd_upcalls_total\\{outcome="${o}"\\} (\\d+)$`, 'm').exec(t)?.[1]);
    assert.equal(v(m1, 'answered') - v(m0, 'answered'), 1);
    assert.equal(v(m1, 'rejected') - v(m0, 'rejected'), 1);
  });

  it('removes its userdb socket when it stops, and the directory too when it made it (a host without systemd)', async () => {
    assert.ok(existsSync(USERDB));
    assert.equal(await agent.stop(), 0);
    assert.ok(!existsSync(USERDB));
    if (!userdbDirBefore) assert.ok(!existsSync(dirname(USERDB)), `${dirname(USERDB)} was made by the agent and is left behind`);
    agent = await startAgent(tree);
  });
});

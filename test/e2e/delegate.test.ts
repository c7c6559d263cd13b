// Delegation by label (SPEC §13, userns.d(5) [delegate]) against the real kernel: a cgroup v2
// subtree, a device node, a directory and admin hooks, set up when the namespace is created, torn
// down in reverse order at release, failing closed, reconciled after a crash; the context's root
// manages its cgroup without host root, and nobody else can.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, makeCheckoutReachable, PYTHON, runInside, startAgent, USERNSCTL, usernsctl, usernsctlHere } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, makeUser } from '../helpers/kernel.ts';
import { AGENT_LEAF, cgroup2Mount } from '../../agent/kernel/delegate.ts';
import { pinnedIno } from '../../agent/kernel/userns.ts';

const B = 7_700_000;
const CLIENT = new URL('./resolve_client.py', import.meta.url).pathname;

/** A cgroup_root of this run's own under the unified hierarchy; removed (with anything left in it) after each test. */
function testCgroupRoot(): string {
  const mount = cgroup2Mount();
  if (mount === null) throw new Error('no cgroup v2 hierarchy is mounted on this machine');
  return join(mount, `usernsd-test-${process.pid}-${Date.now() % 1_000_000}`);
}

function removeCgroupTree(path: string): void {
  if (!existsSync(path)) return;
  for (const e of readdirSync(path, { withFileTypes: true })) if (e.isDirectory()) removeCgroupTree(join(path, e.name));
  const procs = readFileSync(join(path, 'cgroup.procs'), 'utf8').trim();
  if (procs !== '') writeFileSync(join(path, 'cgroup.kill'), '1');
  for (let i = 0; i < 100; i++) {
    try {
      rmdirSync(path);
      return;
    } catch {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
  rmdirSync(path);
}

const owner = (p: string) => {
  const st = lstatSync(p);
  return `${st.uid}:${st.gid}`;
};

/** A hook that appends what it was told (and what it sees on the host) to LOG, then exits with CODE. */
function hook(tree: Tree, name: string, code = 0, mode = 0o755): string {
  const path = join(tree.dir, name);
  writeFileSync(
    path,
    `#!/bin/sh
dev=$(stat -c %u "${tree.dir}/dev0" 2>/dev/null)
cg=absent; [ -n "$USERNS_CGROUP" ] && [ -d "$USERNS_CGROUP" ] && cg=present
echo "$USERNS_HOOK $USERNS_LABEL root=$USERNS_ROOT_UID:$USERNS_ROOT_GID uid=$USERNS_UID_BASE+$USERNS_UID_COUNT pin=$(stat -L -c %i "$USERNS_PIN" 2>/dev/null) dev=$dev cgroup=$cg" >> "${tree.dir}/hooks.log"
echo "hook says hello"
exit ${code}
`,
  );
  chmodSync(path, mode);
  return path;
}

const hookLog = (tree: Tree) => (existsSync(join(tree.dir, 'hooks.log')) ? readFileSync(join(tree.dir, 'hooks.log'), 'utf8').trim().split('\n') : []);

describe('delegation by label: resources follow the context', function () {
  this.timeout(120_000);
  let tree: Tree | undefined;
  let cgRoot = '';
  let restore: (() => void) | null = null;
  const users: ReturnType<typeof makeUser>[] = [];
  /** Interfaces a test made on the host: deleted after it, also when it failed. */
  const netLinks: string[] = [];

  before(function () {
    if (!isRoot) this.skip();
    restore = makeCheckoutReachable();
  });
  after(() => restore?.());
  beforeEach(() => {
    cgRoot = testCgroupRoot();
    tree = makeTree(`cgroup_root = ${cgRoot}\n`);
    spawnSync('mknod', [join(tree.dir, 'dev0'), 'c', '1', '3']);
    chmodSync(join(tree.dir, 'dev0'), 0o640);
  });
  afterEach(async () => {
    await cleanup(tree);
    tree = undefined;
    removeCgroupTree(cgRoot);
    for (const u of users.splice(0)) u.remove();
    for (const l of netLinks.splice(0)) spawnSync('ip', ['link', 'del', 'dev', l]);
    assert.equal(existsSync(cgRoot), false, 'a test cgroup was left behind');
  });

  function context(t: Tree, label: string, delegate: string, extra = '', base = B): void {
    t.context(`${label}.conf`, `[context]\nuid_map = 0 ${base} 65536\ngid_map = 0 ${base} 65536\n${extra}\n[delegate]\n${delegate}\n`);
  }

  const status = async (t: Tree, label: string) => {
    const r = await usernsctl(['--socket', join(t.dir, 'usernsd.sock'), '--json', 'status', label]);
    assert.equal(r.code, 0, r.err);
    return JSON.parse(r.out) as { state: string; delegated?: { kind: string; path: string; state: string }[] };
  };

  it('sets up a cgroup, a device, a directory and exec_start at creation; at release exec_stop runs first, then all is given back but the directory', async () => {
    const t = tree!;
    const dir = join(t.dir, 'data', 'a');
    context(t, 'a', `cgroup = yes\ndevices = ${t.dir}/dev0\ndirectories = ${dir}\nexec_start = ${hook(t, 'start.sh')}\nexec_stop = ${hook(t, 'stop.sh')}`);
    const agent = await startAgent(t);
    const sock = ['--socket', agent.socket];
    const r = await usernsctl([...sock, '--json', 'resolve', 'a']);
    assert.equal(r.code, 0, r.err);
    const res = JSON.parse(r.out) as { ino: number; delegated: { cgroup: string; devices: string[]; directories: string[] } };
    const cg = join(cgRoot, 'a');
    assert.deepEqual(res.delegated, { cgroup: cg, netns: null, veth: null, tap: null, devices: [`${t.dir}/dev0`], directories: [dir] });
    // As the kernel's delegation rules ask: the directory and the files that manage it are the context root's.
    for (const f of ['', 'cgroup.procs', 'cgroup.threads', 'cgroup.subtree_control']) assert.equal(owner(join(cg, f)), `${B}:${B}`, `${cg}/${f}`);
    assert.equal(owner(join(cg, 'cgroup.kill')), '0:0', 'only the delegated files change hands');
    assert.equal(owner(join(t.dir, 'dev0')), `${B}:${B}`);
    assert.equal(lstatSync(join(t.dir, 'dev0')).mode & 0o777, 0o640);
    assert.equal(owner(dir), `${B}:${B}`);
    assert.equal(owner(join(t.dir, 'data')), '0:0', "only the last component is the context root's");
    assert.deepEqual(hookLog(t), [`start a root=${B}:${B} uid=${B}+65536 pin=${res.ino} dev=${B} cgroup=present`]);
    await agent.waitForLog((l) => l.msg === 'Ran exec_start of a' && l.output === 'hook says hello');
    // explain carries them too, for a file of the context (its directory, labelled).
    assert.equal((await usernsctl([...sock, 'label', 'set', dir, 'a'])).code, 0);
    const ex = await usernsctl([...sock, '--json', 'explain', dir]);
    assert.equal(ex.code, 0, ex.err);
    assert.deepEqual((JSON.parse(ex.out) as { delegated: unknown }).delegated, res.delegated);
    assert.match((await usernsctl([...sock, 'explain', dir])).out, new RegExp(`^given: +cgroup ${cg}, ${t.dir}/dev0, ${dir}$`, 'm'));
    assert.deepEqual(
      (await status(t, 'a')).delegated?.map((d) => `${d.kind} ${d.state}`),
      ['cgroup empty', 'device given', 'directory ok', 'hook runs at release'],
    );

    const rel = await usernsctl([...sock, 'release', 'a']);
    assert.equal(rel.code, 0, rel.err);
    // exec_stop saw everything still given and the pin still there; then it was all given back.
    assert.equal(hookLog(t)[1], `stop a root=${B}:${B} uid=${B}+65536 pin=${res.ino} dev=${B} cgroup=present`);
    assert.equal(existsSync(cg), false);
    assert.equal(owner(join(t.dir, 'dev0')), '0:0');
    assert.equal(lstatSync(join(t.dir, 'dev0')).mode & 0o777, 0o640);
    assert.equal(owner(dir), `${B}:${B}`, 'a directory holds data: never removed');
    assert.equal((await status(t, 'a')).delegated, undefined);
  });

  it("the context's root, entered by its owner without host root, manages its cgroup; a stranger can neither join nor write it", async () => {
    const t = tree!;
    const alice = makeUser();
    const mallory = makeUser();
    users.push(alice, mallory);
    t.delegate(alice.name, B, 65536);
    context(t, 'a', 'cgroup = yes', `owner = ${alice.name}\n[access]\nusers = ${mallory.name}`);
    const agent = await startAgent(t);
    const sock = ['--socket', agent.socket];
    const cg = join(cgRoot, 'a');
    const inside = await usernsctl(
      [...sock, 'enter', 'a', '--', 'sh', '-c', `mkdir ${cg}/work && echo $$ > ${cg}/work/cgroup.procs && grep ^0:: /proc/self/cgroup`],
      {
        user: alice,
      },
    );
    assert.equal(inside.code, 0, inside.err);
    assert.equal(inside.out.trim(), `0::${cg.slice(cgroup2Mount()!.length)}/work`);
    assert.equal(owner(join(cg, 'work')), `${B}:${B}`);
    // mallory may resolve "a" ([access]) but not enter it: nor join its cgroup, asked directly.
    const join_ = spawnSync(
      'setpriv',
      [
        `--reuid=${mallory.uid}`,
        `--regid=${mallory.gid}`,
        '--clear-groups',
        PYTHON,
        '-c',
        `import sys, socket, json; sys.path.insert(0, ${JSON.stringify(join(CLIENT, '..'))}); import resolve_client as c
s = socket.socket(socket.AF_UNIX); s.connect(${JSON.stringify(agent.socket)}); print(json.dumps(c.call(s, 1, "joinCgroup", {"label": "a"})))`,
      ],
      { encoding: 'utf8' },
    );
    assert.match(join_.stdout, /E_PERMISSION/, join_.stderr);
    const write = spawnSync('setpriv', [`--reuid=${mallory.uid}`, `--regid=${mallory.gid}`, '--clear-groups', 'sh', '-c', `echo $$ > ${cg}/cgroup.procs`], {
      encoding: 'utf8',
    });
    assert.notEqual(write.status, 0);
    assert.match(write.stderr, /Permission denied/);
    assert.equal(readFileSync(join(cg, 'cgroup.procs'), 'utf8'), '', 'nothing of mallory moved in');
    const rel = await usernsctl([...sock, 'release', 'a']);
    assert.equal(rel.code, 0, rel.err);
    assert.equal(existsSync(cg), false, 'the cgroups its root made inside went with it');
  });

  it('refuses a release while the cgroup holds processes, and --kill kills them first', async () => {
    const t = tree!;
    context(t, 'a', 'cgroup = yes');
    const agent = await startAgent(t);
    const sock = ['--socket', agent.socket];
    const cg = join(cgRoot, 'a');
    assert.equal((await usernsctl([...sock, 'resolve', 'a'])).code, 0);
    const sleeper = spawn(process.execPath, [new URL('../../bin/usernsctl.js', import.meta.url).pathname, ...sock, 'enter', 'a', '--', 'sleep', '300'], {
      stdio: 'ignore',
    });
    const exited = new Promise((r) => sleeper.once('exit', r));
    try {
      for (let i = 0; i < 200 && readFileSync(join(cg, 'cgroup.procs'), 'utf8') === ''; i++) await new Promise((r) => setTimeout(r, 25));
      assert.notEqual(readFileSync(join(cg, 'cgroup.procs'), 'utf8'), '', 'enter started its command in the cgroup');
      const busy = await usernsctl([...sock, 'release', 'a']);
      assert.equal(busy.code, 1);
      assert.match(busy.err, /E_BUSY: the cgroup of "a" .* holds processes: stop them, or release with --kill/);
      assert.notEqual(pinnedIno(join(t.pins, 'a')), null, 'nothing was undone');
      assert.equal(existsSync(cg), true);
      const killed = await usernsctl([...sock, 'release', '--kill', 'a']);
      assert.equal(killed.code, 0, killed.err);
      await exited;
      assert.equal(existsSync(cg), false);
      assert.equal(pinnedIno(join(t.pins, 'a')), null);
    } finally {
      sleeper.kill('SIGKILL');
      await exited;
    }
  });

  it('fails closed: a failing exec_start, or a hook others could change, leaves no pin and gives everything back', async () => {
    const t = tree!;
    context(t, 'a', `cgroup = yes\ndevices = ${t.dir}/dev0\nexec_start = ${hook(t, 'fail.sh', 3)}\nexec_stop = ${hook(t, 'stop.sh')}`);
    context(t, 'b', `cgroup = yes\nexec_start = ${hook(t, 'open.sh', 0, 0o777)}`, '', B + 65536);
    const agent = await startAgent(t);
    const sock = ['--socket', agent.socket];
    const a = await usernsctl([...sock, 'resolve', 'a']);
    assert.equal(a.code, 1);
    assert.match(a.err, /E_CONFIG: exec_start .*fail\.sh of "a" exited with 3: hook says hello \(its output is in the agent log\)/);
    assert.deepEqual(
      hookLog(t).map((l) => l.split(' ')[0]),
      ['start'],
      'exec_stop runs only after an exec_start that succeeded',
    );
    const b = await usernsctl([...sock, 'resolve', 'b']);
    assert.equal(b.code, 1);
    assert.match(b.err, /exec_start of "b" is not run: .*open\.sh is writable by group or others \(mode 777\)/);
    for (const l of ['a', 'b']) {
      assert.equal(pinnedIno(join(t.pins, l)), null, `${l} is not pinned`);
      assert.equal(existsSync(join(cgRoot, l)), false, `${l}'s cgroup is gone`);
    }
    assert.equal(owner(join(t.dir, 'dev0')), '0:0');
    const metrics = await usernsctl([...sock, 'metrics']);
    assert.match(metrics.out, /usernsd_delegation_failures_total\{step="exec_start"\} 1/);
    assert.match(metrics.out, /usernsd_delegation_failures_total\{step="set_up"\} 2/);
    // The agent serves on: a context without the broken hook is created.
    context(t, 'c', 'cgroup = yes', '', B + 2 * 65536);
    assert.equal((await usernsctl([...sock, 'reload'])).code, 0);
    assert.equal((await usernsctl([...sock, 'resolve', 'c'])).code, 0);
  });

  it('writes cgroup limits before the cgroup is handed over, or refuses clearly where the controller is not available', async () => {
    const t = tree!;
    context(t, 'a', 'cgroup = yes\ncgroup_limits = pids.max=64');
    const agent = await startAgent(t);
    const r = await usernsctlHere(['--socket', agent.socket, 'resolve', 'a']);
    const available = readFileSync(join(cgroup2Mount()!, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('pids');
    if (available) {
      assert.equal(r.code, 0, r.err);
      assert.equal(readFileSync(join(cgRoot, 'a', 'pids.max'), 'utf8').trim(), '64');
      assert.equal(owner(join(cgRoot, 'a', 'pids.max')), '0:0', "the context's root cannot raise its limit");
    } else {
      // This machine binds pids to cgroup v1 (a hybrid layout): no silent creation without the limit.
      assert.equal(r.code, 1);
      assert.match(r.err, /E_UNSUPPORTED: cannot set pids\.max for "a": the pids controller is not available in .* \(cgroup\.controllers lists: /);
      assert.equal(pinnedIno(join(t.pins, 'a')), null);
      assert.equal(existsSync(join(cgRoot, 'a')), false);
    }
  });

  it('after a crash, reconciles: what went missing is set up again; the delegations of a pin that is gone are torn down', async () => {
    const t = tree!;
    context(t, 'a', `cgroup = yes\ndevices = ${t.dir}/dev0\nexec_stop = ${hook(t, 'stop.sh')}`);
    let agent: RunningAgent = await startAgent(t);
    const cg = join(cgRoot, 'a');
    assert.equal((await usernsctlHere(['--socket', agent.socket, 'resolve', 'a'])).code, 0);
    agent.child.kill('SIGKILL');
    await agent.exited;
    // Behind its back: the cgroup removed, the device taken back.
    rmdirSync(cg);
    spawnSync('chown', ['0:0', join(t.dir, 'dev0')]);
    agent = await startAgent(t);
    await agent.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('Delegations: a: '));
    assert.equal(owner(cg), `${B}:${B}`);
    assert.equal(owner(join(t.dir, 'dev0')), `${B}:${B}`);
    assert.deepEqual(hookLog(t), [], 'nothing was released');
    agent.child.kill('SIGKILL');
    await agent.exited;
    // The pin is lost while the agent is down: what it was given goes at the next start.
    spawnSync('umount', ['-l', join(t.pins, 'a')]);
    agent = await startAgent(t);
    await agent.waitForLog((l) => l.msg === 'Delegations: a: its pin is gone: delegations torn down');
    assert.equal(existsSync(cg), false);
    assert.equal(owner(join(t.dir, 'dev0')), '0:0');
    assert.match(hookLog(t)[0], /^stop a /);
  });

  it('a reload that adds or removes delegations applies them to the pinned namespace at once', async () => {
    const t = tree!;
    context(t, 'a', 'cgroup = yes');
    const agent = await startAgent(t);
    const sock = ['--socket', agent.socket];
    assert.equal((await usernsctl([...sock, 'resolve', 'a'])).code, 0);
    const dir = join(t.dir, 'data');
    mkdirSync(dir);
    context(t, 'a', `devices = ${t.dir}/dev0\ndirectories = ${dir}/x`);
    assert.equal((await usernsctl([...sock, 'reload'])).code, 0);
    assert.equal(existsSync(join(cgRoot, 'a')), false, 'the cgroup no longer configured was removed');
    assert.equal(owner(join(t.dir, 'dev0')), `${B}:${B}`);
    assert.equal(owner(join(dir, 'x')), `${B}:${B}`);
    context(t, 'a', 'cgroup = yes');
    assert.equal((await usernsctl([...sock, 'reload'])).code, 0);
    assert.equal(owner(join(t.dir, 'dev0')), '0:0', 'the device no longer configured was given back');
    assert.equal(owner(join(cgRoot, 'a')), `${B}:${B}`);
    assert.equal(owner(join(dir, 'x')), `${B}:${B}`, 'a directory is never removed');
  });

  it("netns, veth and tap: the context's root, entered by its owner without host root, brings host0 up and attaches to its tap; a stranger can do neither; all gone at release", async () => {
    const t = tree!;
    const alice = makeUser();
    const mallory = makeUser();
    users.push(alice, mallory);
    t.delegate(alice.name, B, 65536);
    const tap = `ut${process.pid % 100000}`;
    netLinks.push(tap);
    const netnsDir = join(t.dir, 'netns');
    writeFileSync(t.config, `${readFileSync(t.config, 'utf8')}netns_dir = ${netnsDir}\n`);
    context(t, 'a', `netns = yes\nveth = yes\ntap = ${tap}`, `owner = ${alice.name}`);
    // A tun node of the test's own (the machine's /dev/net/tun may be root's alone): the same device.
    const tun = join(t.dir, 'tun');
    spawnSync('mknod', ['-m', '666', tun, 'c', '10', '200']);
    const attach = join(t.dir, 'attach.py');
    writeFileSync(
      attach,
      `import fcntl, os, struct, sys\nfd = os.open(${JSON.stringify(tun)}, os.O_RDWR)\nfcntl.ioctl(fd, 0x400454ca, struct.pack('16sH', sys.argv[1].encode(), 0x0002 | 0x1000))\nprint('attached')\n`,
    );
    chmodSync(attach, 0o644);
    const agent = await startAgent(t);
    const sock = ['--socket', agent.socket];
    const r = await usernsctl([...sock, '--json', 'resolve', 'a'], { user: alice });
    assert.equal(r.code, 0, r.err);
    const d = (JSON.parse(r.out) as { delegated: { netns: string; veth: string; tap: string } }).delegated;
    netLinks.push(d.veth);
    assert.equal(d.netns, join(netnsDir, 'a'));
    assert.match(d.veth, /^vu[0-9a-f]{12}$/);
    assert.equal(d.tap, tap);
    assert.match(spawnSync('ip', ['-d', 'link', 'show', 'dev', tap], { encoding: 'utf8' }).stdout, new RegExp(`user ${B} group ${B}`));
    // Entered by its owner, as the context's root: its own network namespace and its tap.
    const inside = await usernsctl(
      [
        ...sock,
        'enter',
        'a',
        '--',
        'sh',
        '-c',
        `nsenter --net=${d.netns} ip link set host0 up && nsenter --net=${d.netns} ip -o link show host0 && ${PYTHON} ${attach} ${tap}`,
      ],
      { user: alice },
    );
    assert.equal(inside.code, 0, inside.err);
    assert.match(inside.out, /host0@\S+ <[^>]*\bUP\b/);
    assert.match(inside.out, /attached/);
    // mallory, an ordinary user: neither the namespace nor the tap.
    const asMallory = (cmd: string[]) =>
      spawnSync('setpriv', [`--reuid=${mallory.uid}`, `--regid=${mallory.gid}`, '--clear-groups', ...cmd], { encoding: 'utf8' });
    assert.notEqual(asMallory(['nsenter', `--net=${d.netns}`, 'true']).status, 0);
    const tapAsMallory = asMallory([PYTHON, attach, tap]);
    assert.notEqual(tapAsMallory.status, 0);
    assert.match(tapAsMallory.stderr, /Operation not permitted/);
    assert.deepEqual(
      (await status(t, 'a')).delegated?.map((x) => `${x.kind} ${x.state}`),
      ['netns pinned', 'veth present', 'tap present'],
    );
    const rel = await usernsctl([...sock, 'release', 'a']);
    assert.equal(rel.code, 0, rel.err);
    assert.equal(existsSync(d.netns), false);
    for (const link of [d.veth, tap]) assert.notEqual(spawnSync('ip', ['link', 'show', 'dev', link]).status, 0, `${link} is gone`);
  });

  it("cgroup_root = auto: in a cgroup delegated to it (as Delegate=yes marks one), the agent moves into a leaf and makes the contexts' cgroups beside it", async () => {
    // The agent's own cgroup, marked as systemd marks a delegated one; the agent is started inside it.
    const own = cgRoot;
    mkdirSync(own);
    spawnSync('setfattr', ['-n', 'trusted.delegate', '-v', '1', own]);
    const t = makeTree();
    try {
      context(t, 'a', 'cgroup = yes');
      const agent = await startAgent(t, ['--log-level', 'info'], { wrap: ['sh', '-c', `echo $$ > ${own}/cgroup.procs && exec "$@"`, 'sh'] });
      await agent.waitForLog((l) => l.msg === "Moved into a leaf of the agent's delegated cgroup" && l.cgroupRoot === own);
      assert.equal(readFileSync(join(own, AGENT_LEAF, 'cgroup.procs'), 'utf8').trim(), String(agent.child.pid));
      assert.equal(readFileSync(join(own, 'cgroup.procs'), 'utf8'), '', 'no process left in the delegated cgroup itself');
      const r = await usernsctlHere(['--socket', agent.socket, '--json', 'resolve', 'a']);
      assert.equal(r.code, 0, r.err);
      assert.equal((JSON.parse(r.out) as { delegated: { cgroup: string } }).delegated.cgroup, join(own, 'a'));
      assert.equal(owner(join(own, 'a')), `${B}:${B}`);
      assert.equal((await usernsctlHere(['--socket', agent.socket, 'release', 'a'])).code, 0);
      assert.equal(existsSync(join(own, 'a')), false);
    } finally {
      await cleanup(t);
    }
  });

  it("a nested context's cgroup lies in its parent's, and goes before it at release", async () => {
    const t = tree!;
    context(t, 'a', 'cgroup = yes');
    t.context('a.b.conf', '[context]\nparent = a\nuid_map = 0 1000 1000\ngid_map = 0 1000 1000\n[delegate]\ncgroup = yes\n');
    const agent = await startAgent(t);
    const sock = ['--socket', agent.socket];
    assert.equal((await usernsctl([...sock, 'resolve', 'a.b'])).code, 0);
    const nested = join(cgRoot, 'a', 'a.b');
    assert.equal(owner(nested), `${B + 1000}:${B + 1000}`);
    // The parent's cgroup is taken away at a reload: the child's, unchanged in its file, moves out
    // of it (found by delegate-over-time, seed 1472379511: it was left behind, then removed with it).
    context(t, 'a', 'cgroup = no');
    assert.equal((await usernsctl([...sock, 'reload'])).code, 0);
    assert.equal(existsSync(join(cgRoot, 'a')), false);
    assert.equal(owner(join(cgRoot, 'a.b')), `${B + 1000}:${B + 1000}`);
    context(t, 'a', 'cgroup = yes');
    assert.equal((await usernsctl([...sock, 'reload'])).code, 0);
    assert.equal(owner(nested), `${B + 1000}:${B + 1000}`, 'and back in when the parent has one again');
    assert.equal(existsSync(join(cgRoot, 'a.b')), false);
    const r = await usernsctl([...sock, 'release', 'a']);
    assert.equal(r.code, 0, r.err);
    assert.equal(existsSync(join(cgRoot, 'a')), false);
  });

  it("delegations handed on: a context made from inside gets a cgroup of its own inside its parent's, never more than the parent has", async () => {
    const t = tree!;
    context(t, 'a', 'cgroup = yes', 'children = 3');
    context(t, 'n', 'cgroup = no', 'children = 1', B + 65536);
    const agent = await startAgent(t);
    const sock = ['--socket', agent.socket];
    for (const l of ['a', 'n']) assert.equal((await usernsctl([...sock, 'resolve', l])).code, 0);
    const inside = (l: string, args: string[]) => runInside([join(t.pins, l)], [process.execPath, USERNSCTL, ...sock, ...args]);
    const made = await inside('a', ['create', 'k', '--uid-map', '0 2000 100', '--cgroup']);
    assert.equal(made.code, 0, made.err);
    const cg = join(cgRoot, 'a', 'a.k');
    assert.match(made.out, new RegExp(`cgroup ${cg}\n`));
    assert.equal(owner(cg), `${B + 2000}:${B + 2000}`, "owned by the child's root");
    assert.equal(lstatSync(join(cg, 'cgroup.procs')).uid, B + 2000);
    // A parent without a cgroup has none to hand on; nothing is left of the attempt.
    const none = await inside('n', ['create', 'k', '--uid-map', '0 2000 100', '--cgroup']);
    assert.equal(none.code, 1);
    assert.match(none.err, /E_CONFIG: cannot create context "n\.k": cgroup: its parent "n" has no cgroup to give a part of/);
    assert.equal(existsSync(join(t.state, 'children', 'n.k.conf')), false);
    // Released from inside: its cgroup goes, the parent's stays.
    assert.equal((await inside('a', ['release', 'k'])).code, 0);
    assert.equal(existsSync(cg), false);
    assert.equal(owner(join(cgRoot, 'a')), `${B}:${B}`);
  });
});

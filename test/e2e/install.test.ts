// make install / uninstall, the installed agent and client, the systemd unit and the SysV init script.
import assert from 'node:assert/strict';
import { AGENT_TUNABLES } from '../../scripts/agent-env.js';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, unmountAll } from '../helpers/kernel.ts';

const ROOT = new URL('../..', import.meta.url).pathname;

function make(target: string, vars: Record<string, string>) {
  const r = spawnSync('make', ['-s', '-C', ROOT, target, ...Object.entries(vars).map(([k, v]) => `${k}=${v}`)], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `make ${target}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** Every path under dir with its mode and content hash: what "as before" means. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = statSync(p);
      out.set(p, st.isDirectory() ? `dir ${st.mode}` : `file ${st.mode} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
  return { code: r.status, out: r.stdout ?? '', err: r.stderr ?? '' };
}

describe('e2e: install, init scripts and units (root)', function () {
  this.timeout(120_000);
  let dir: string;
  before(function () {
    if (!isRoot) this.skip(); // installs into system-like trees, starts the agent: root
    if (spawnSync('make', ['--version']).error) throw new Error('make is required (apt-get install make)');
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'usernsd-install-'));
  });
  afterEach(() => {
    // Stop whatever an init script left running, then every pin, then the tree.
    const pidfile = join(dir, 'run', 'usernsd.pid');
    if (existsSync(pidfile)) spawnSync('start-stop-daemon', ['--stop', '--quiet', '--retry=KILL/5', '--pidfile', pidfile, '--remove-pidfile']);
    spawnSync('pkill', ['-KILL', '-f', `${dir}/usr/lib/usernsd/node`]);
    unmountAll(dir);
    rmSync(dir, { recursive: true, force: true });
  });

  it("installs into DESTDIR without touching the admin's files, and uninstall leaves it as before", () => {
    const destdir = join(dir, 'root');
    mkdirSync(join(destdir, 'etc', 'userns.d'), { recursive: true });
    writeFileSync(join(destdir, 'etc', 'usernsd.conf'), "# the admin's own settings\n[agent]\nlog_level = debug\n");
    writeFileSync(join(destdir, 'etc', 'userns.d', 'prod.conf'), '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    writeFileSync(join(destdir, 'etc', 'unrelated'), 'x');
    const before = snapshot(destdir);
    // A file the project does not track (left by an admin or a test) is no shipped example.
    const local = join(ROOT, 'etc', 'userns.d', `zz-untracked-${process.pid}.conf`);
    writeFileSync(local, '[context]\nuid_map = 0 1 1\ngid_map = 0 1 1\n');
    let out: string;
    try {
      out = make('install', { DESTDIR: destdir, PREFIX: '/usr', SYSCONFDIR: '/etc' });
    } finally {
      rmSync(local, { force: true });
    }
    assert.equal(
      existsSync(join(destdir, 'etc', 'userns.d', `zz-untracked-${process.pid}.conf.example`)),
      false,
      'an untracked context file is not installed as an example',
    );
    assert.match(out, /kept existing .*\/etc\/usernsd\.conf/);
    for (const f of [
      'usr/sbin/usernsd',
      'usr/bin/usernsctl',
      'sbin/mount.usernsd',
      'usr/share/man/man8/mount.usernsd.8',
      'usr/lib/usernsd/node',
      'usr/lib/usernsd/dist/agent/main.js',
      'usr/lib/usernsd/node_modules/node-ipc/package.json',
      'usr/lib/usernsd/node_modules/koffi/package.json',
      'usr/share/man/man8/usernsd.8',
      'usr/share/man/man1/usernsctl.1',
      'usr/share/man/man5/usernsd.conf.5',
      'usr/share/man/man5/userns.d.5',
      'usr/share/man/man7/usernsd-protocol.7',
      'usr/lib/systemd/system/usernsd.service',
      'usr/lib/tmpfiles.d/usernsd.conf',
      'etc/init.d/usernsd',
      'etc/userns.d/backups.conf.example',
    ]) {
      assert.ok(existsSync(join(destdir, f)), `${f} is installed`);
    }
    // (@types/node is a dependency of protobufjs, etcd3's: only the project's own dev types are checked.)
    for (const dev of ['typescript', 'mocha', 'fast-check', 'node', '@types/mocha'])
      assert.equal(existsSync(join(destdir, 'usr/lib/usernsd/node_modules', dev)), false, `dev dependency ${dev} is not installed`);
    assert.equal(readFileSync(join(destdir, 'etc', 'usernsd.conf'), 'utf8'), "# the admin's own settings\n[agent]\nlog_level = debug\n");
    const unit = readFileSync(join(destdir, 'usr/lib/systemd/system/usernsd.service'), 'utf8');
    assert.match(unit, /^ExecStart=\/usr\/sbin\/usernsd --config \/etc\/usernsd\.conf$/m);
    assert.doesNotMatch(unit, /@[A-Z]+@/);
    assert.equal(statSync(join(destdir, 'usr/sbin/usernsd')).mode & 0o777, 0o755);
    // mount(8)'s helper is the C program when the build made one: a view at a bind mount's cost.
    const helper = readFileSync(join(destdir, 'sbin/mount.usernsd'));
    if (existsSync(join(ROOT, 'dist', 'mount.usernsd'))) assert.deepEqual(helper, readFileSync(join(ROOT, 'dist', 'mount.usernsd')), 'the C mount helper');
    else assert.match(helper.toString(), /usernsctl\.js mount-helper "\$@"/);
    assert.equal(statSync(join(destdir, 'sbin/mount.usernsd')).mode & 0o777, 0o755);
    const version = run(join(destdir, 'usr/lib/usernsd/node'), [join(destdir, 'usr/lib/usernsd/bin/usernsctl.js'), '--version']);
    assert.equal(version.out, `usernsctl ${(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version}\n`);
    make('uninstall', { DESTDIR: destdir, PREFIX: '/usr', SYSCONFDIR: '/etc' });
    assert.deepEqual(snapshot(destdir), before);
  });

  it('installs again over a running agent: the new install whole, or after a failure the old one exactly; uninstall says to stop it first', () => {
    const prefix = join(dir, 'usr');
    const etc = join(dir, 'etc');
    const vars = { PREFIX: prefix, SYSCONFDIR: etc };
    const said = make('install', vars);
    // An install outside /etc and /usr says what it cannot wire by itself.
    assert.match(
      said,
      new RegExp(`note: request-key\\(8\\) reads /etc/request-key.d only: to wire the upcall, ln -s ${etc}/request-key.d/usernsd.conf /etc/request-key.d/`),
    );
    assert.match(said, new RegExp(`note: mount\\(8\\) looks for mount.usernsd in /sbin: .*ln -s ${prefix}/sbin/mount.usernsd /sbin/`));
    writeFileSync(
      join(etc, 'usernsd.conf'),
      `[agent]\nsocket = ${dir}/run/usernsd/usernsd.sock\ncontexts = ${etc}/userns.d\npins = ${dir}/run/userns\nstate = ${dir}/state\nuserdb = no\n`,
    );
    writeFileSync(join(etc, 'userns.d', 'a.conf'), '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    const agent = spawnSync('sh', ['-c', `"${prefix}/sbin/usernsd" --config "${etc}/usernsd.conf" </dev/null >/dev/null 2>"${dir}/log" & echo $!`], {
      encoding: 'utf8',
    });
    const pid = Number(agent.stdout.trim());
    const status = () => run(join(prefix, 'bin', 'usernsctl'), ['--socket', `${dir}/run/usernsd/usernsd.sock`, 'status']);
    const lib = join(prefix, 'lib', 'usernsd');
    const kernelDir = join(lib, 'dist', 'agent', 'kernel');
    try {
      let r = status();
      for (let i = 0; i < 100 && r.code !== 0; i++) {
        spawnSync('sleep', ['0.1']);
        r = status();
      }
      assert.equal(r.code, 0, r.err + readFileSync(`${dir}/log`, 'utf8'));
      // The wrapper gives the agent two malloc arenas (glibc reads GLIBC_TUNABLES at exec only).
      const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
      assert.ok(environ.includes(`GLIBC_TUNABLES=${AGENT_TUNABLES}`), `the agent's environment: ${environ.filter((e) => e.startsWith('GLIBC')).join(' ')}`);
      const first = snapshot(prefix);
      // Again, while the agent runs from it: its node is busy (ETXTBSY for whoever opens it to write).
      make('install', vars);
      assert.deepEqual(snapshot(prefix), first, 'the same build installed again: the same files');
      assert.equal(status().code, 0, 'the running agent and the installed client go on');
      // A reinstall that fails midway (a directory it cannot write) puts the old install back exactly.
      const marker = join(lib, 'dist', 'agent', 'main.js');
      writeFileSync(marker, readFileSync(marker, 'utf8') + '// the old build\n');
      const old = snapshot(prefix);
      assert.equal(spawnSync('chattr', ['+i', kernelDir]).status, 0, 'chattr +i (e2fsprogs) on the test tree');
      const failed = spawnSync('make', ['-s', '-C', ROOT, 'install', ...Object.entries(vars).map(([k, v]) => `${k}=${v}`)], {
        encoding: 'utf8',
        timeout: 120_000,
      });
      spawnSync('chattr', ['-i', kernelDir]);
      assert.notEqual(failed.status, 0, 'the install failed');
      assert.deepEqual(snapshot(prefix), old, 'every file of the old install is back, none of the new one left');
      assert.equal(status().code, 0);
      const un = spawnSync('make', ['-s', '-C', ROOT, 'uninstall', ...Object.entries(vars).map(([k, v]) => `${k}=${v}`)], {
        encoding: 'utf8',
        timeout: 120_000,
      });
      assert.notEqual(un.status, 0);
      assert.match(un.stderr, new RegExp(`usernsd from this install is running \\(pid ${pid}\\): stop it first`));
      assert.deepEqual(snapshot(prefix), old, 'uninstall took nothing');
    } finally {
      spawnSync('chattr', ['-i', kernelDir]);
      process.kill(pid, 'SIGTERM');
    }
  });

  it('runs the installed agent and client, and the unit passes systemd-analyze verify', function () {
    const prefix = join(dir, 'usr');
    const etc = join(dir, 'etc');
    make('install', { PREFIX: prefix, SYSCONFDIR: etc });
    writeFileSync(
      join(etc, 'usernsd.conf'),
      `[agent]\nsocket = ${dir}/run/usernsd/usernsd.sock\ncontexts = ${etc}/userns.d\npins = ${dir}/run/userns\nstate = ${dir}/state\nuserdb = no\n`,
    );
    writeFileSync(join(etc, 'userns.d', 'a.conf'), '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    const check = run(join(prefix, 'bin', 'usernsctl'), ['check-config', '--config', join(etc, 'usernsd.conf')]);
    assert.equal(check.code, 0, check.err);
    // Without --config, both programs default to this install's SYSCONFDIR, not /etc.
    assert.match(run(join(prefix, 'sbin', 'usernsd'), ['--help']).out, new RegExp(`default ${etc}/usernsd\\.conf`));
    const byDefault = run(join(prefix, 'bin', 'usernsctl'), ['check-config', '--verbose']);
    assert.equal(byDefault.code, 0, byDefault.err);
    assert.match(byDefault.out, new RegExp(`^${etc}/usernsd\\.conf: 1 valid context`, 'm'));
    const agent = spawnSync('sh', ['-c', `"${prefix}/sbin/usernsd" --config "${etc}/usernsd.conf" </dev/null >/dev/null 2>"${dir}/log" & echo $!`], {
      encoding: 'utf8',
    });
    const pid = Number(agent.stdout.trim());
    try {
      let r = { code: 3 as number | null, out: '', err: '' };
      for (let i = 0; i < 100 && r.code === 3; i++) {
        r = run(join(prefix, 'bin', 'usernsctl'), ['--socket', `${dir}/run/usernsd/usernsd.sock`, 'resolve', '--pin', 'a']);
        if (r.code === 3) spawnSync('sleep', ['0.1']);
      }
      assert.equal(r.code, 0, r.err + readFileSync(`${dir}/log`, 'utf8'));
      assert.equal(r.out, `${dir}/run/userns/a\n`);
    } finally {
      process.kill(pid, 'SIGTERM');
    }
    if (spawnSync('systemd-analyze', ['--version']).error) return this.skip(); // needs systemd-analyze (apt-get install systemd; .ci/run installs it)
    const verify = run('systemd-analyze', ['verify', '--man=no', join(prefix, 'lib/systemd/system/usernsd.service')]);
    assert.equal(verify.out + verify.err, '', 'systemd-analyze verify reports nothing');
    assert.equal(verify.code, 0);
  });

  it('the SysV script starts (ready when it returns), reports status, reloads and stops the agent', () => {
    const prefix = join(dir, 'usr');
    const etc = join(dir, 'etc');
    make('install', { PREFIX: prefix, SYSCONFDIR: etc });
    mkdirSync(join(dir, 'run'));
    writeFileSync(
      join(etc, 'usernsd.conf'),
      `[agent]\nsocket = ${dir}/run/usernsd/usernsd.sock\ncontexts = ${etc}/userns.d\npins = ${dir}/run/userns\nstate = ${dir}/state\nuserdb = no\n`,
    );
    writeFileSync(join(etc, 'userns.d', 'a.conf'), '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\ncreate = eager\n');
    mkdirSync(join(etc, 'default'));
    writeFileSync(join(etc, 'default', 'usernsd'), `PIDFILE=${dir}/run/usernsd.pid\nLOGFILE=${dir}/usernsd.log\n`);
    const script = join(etc, 'init.d', 'usernsd');
    const ctl = (...args: string[]) => run(join(prefix, 'bin', 'usernsctl'), ['--socket', `${dir}/run/usernsd/usernsd.sock`, ...args]);

    const start = run(script, ['start']);
    assert.equal(start.code, 0, start.out + start.err + (existsSync(`${dir}/usernsd.log`) ? readFileSync(`${dir}/usernsd.log`, 'utf8') : ''));
    // No waiting: start returns only after READY=1, so the socket answers and the eager context exists.
    const list = ctl('--json', 'list');
    assert.equal(list.code, 0, list.err);
    assert.deepEqual(
      (JSON.parse(list.out) as { contexts: { label: string; pinned: boolean }[] }).contexts.map((c) => [c.label, c.pinned]),
      [['a', true]],
    );

    const status = run(script, ['status']);
    assert.equal(status.code, 0);
    assert.match(status.out, /usernsd is running \(pid \d+\)/);
    assert.equal(run(script, ['start']).out, 'Starting usernsd\nusernsd is already running\n');

    writeFileSync(join(etc, 'userns.d', 'b.conf'), '[context]\nuid_map = 0 300000 1000\ngid_map = 0 300000 1000\n');
    assert.equal(run(script, ['reload']).code, 0);
    let resolved = ctl('resolve', '--pin', 'b');
    for (let i = 0; i < 50 && resolved.code !== 0; i++) {
      spawnSync('sleep', ['0.1']);
      resolved = ctl('resolve', '--pin', 'b');
    }
    assert.equal(resolved.code, 0, `the reload added b: ${resolved.err}`);

    const stop = run(script, ['stop']);
    assert.equal(stop.code, 0, stop.err);
    assert.equal(existsSync(`${dir}/run/usernsd/usernsd.sock`), false, 'the socket is removed');
    const after = run(script, ['status']);
    assert.equal(after.code, 3);
    assert.match(after.out, /usernsd is not running/);
    assert.match(readFileSync(`${dir}/usernsd.log`, 'utf8'), /"msg":"Reloaded configuration"/);
  });
});

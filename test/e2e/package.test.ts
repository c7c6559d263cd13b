// The Debian package (make deb) under a real systemd as PID 1: lintian, then apt-get install,
// start, pins, a view and names; an upgrade to a newer build while it runs, a downgrade back; remove
// and purge — with nothing of the admin's lost on the way.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootContainer, containerUnavailable } from '../helpers/container.ts';
import type { Container } from '../helpers/container.ts';

const ROOT = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
const OLD = '0.1.0~test1';
const NEW = '0.1.0~test2';

/**
 * The tags lintian reports as errors (E:), for -T: it then runs only the checks that can emit
 * them, which is all "no E: tag" asks (a quarter less time than every check: binaries/spelling alone
 * reads the 120 MB node binary's strings for typos). Empty when lintian's data is not where
 * Debian 12 keeps it: every check runs.
 */
function lintianErrorTags(): string[] {
  const known = new Set(spawnSync('lintian-explain-tags', ['--list-tags'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean));
  const dir = '/usr/share/lintian/tags';
  let files: string[];
  try {
    files = readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.tag'));
  } catch {
    return [];
  }
  return files
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .filter((t) => /^Severity: error$/m.test(t))
    .map((t) => /^Tag: (\S+)$/m.exec(t)?.[1])
    .filter((t): t is string => t !== undefined && known.has(t));
}

describe('e2e: the Debian package under a real systemd as PID 1 (root, systemd-nspawn)', function () {
  this.timeout(600_000);
  let c: Container | undefined;
  // In the checkout, which the container sees at /src (its root is this machine's root filesystem only).
  const out = join(ROOT, `.deb-test-${process.pid}`);
  const deb = (v: string) => `usernsd_${v}_${spawnSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).stdout.trim()}.deb`;
  const why = containerUnavailable();

  before(async function () {
    if (why) {
      if (process.env.CI) throw new Error(`cannot boot a container in CI: ${why}`);
      this.skip();
    }
    mkdirSync(out, { recursive: true });
    // Two builds of this tree that differ in version: the "older" and the "newer" package. lintian
    // reads the newer (it wants its members compressed); the older is only installed, so it is left
    // uncompressed: compressing the node binary it carries is 14 s of CPU.
    for (const v of [OLD, NEW]) {
      const r = spawnSync('make', ['-s', '-o', 'dist/agent/main.js', 'deb'], {
        cwd: ROOT,
        encoding: 'utf8',
        // gzip's fastest level: lintian reads the members whatever the level, for a third of the CPU.
        env: { ...process.env, DEB_VERSION: v, DEB_OUTDIR: out, DEB_COMPRESS: v === NEW ? 'gzip' : 'none', DEB_COMPRESS_LEVEL: '1' },
      });
      assert.equal(r.status, 0, `make deb: ${r.stderr}${r.stdout}`);
    }
    c = await bootContainer(ROOT);
  });

  after(async () => {
    await c?.stop();
    rmSync(out, { recursive: true, force: true });
    assert.deepEqual(c?.leftoverCgroups() ?? [], [], 'the container left cgroups behind');
  });

  const src = (v: string) => `/src/${out.slice(ROOT.length + 1)}/${deb(v)}`;
  const status = () => JSON.parse(c!.sh('usernsctl status --json')) as { version: string; contextStates: { label: string; state: string }[] };
  const pinIno = () => JSON.parse(c!.sh('usernsctl --json resolve backups')) as { ino: number; created: boolean };
  const mainPid = () => c!.sh('systemctl show -P MainPID usernsd').trim();

  it('passes lintian with no errors', function () {
    if (spawnSync('lintian', ['--version']).error) {
      if (process.env.CI) throw new Error('lintian is missing: .ci/run installs it');
      this.skip();
    }
    const tags = lintianErrorTags();
    const r = spawnSync('lintian', ['--tag-display-limit', '0', ...(tags.length > 0 ? ['-T', tags.join(',')] : []), join(out, deb(NEW))], {
      encoding: 'utf8',
    });
    assert.equal(r.status === 0 || r.status === 1, true, `lintian ran: ${r.stderr}`);
    const errors = `${r.stdout}${r.stderr}`.split('\n').filter((l) => /^E: /.test(l));
    assert.deepEqual(errors, []);
  });

  it('depends on the package of every shared library its programs load (the shipped Node needs libstdc++)', () => {
    const depends = spawnSync('dpkg-deb', ['-f', join(out, deb(NEW)), 'Depends'], { encoding: 'utf8' })
      .stdout.split(',')
      .map((d) => d.trim().split(/[\s(]/)[0]);
    const dir = mkdtempSync(join(tmpdir(), 'usernsd-test-deb-'));
    try {
      assert.equal(spawnSync('dpkg-deb', ['-x', join(out, deb(NEW)), dir]).status, 0);
      const elves = readdirSync(dir, { recursive: true, encoding: 'utf8' })
        .map((f) => join(dir, f))
        .filter((f) => {
          // Four bytes of each file, not the whole of it (the node binary is 120 MB).
          let fd: number;
          try {
            fd = openSync(f, 'r');
          } catch {
            return false;
          }
          try {
            const head = Buffer.alloc(4);
            return readSync(fd, head, 0, 4, 0) === 4 && head.toString('latin1') === '\x7fELF';
          } catch {
            return false; // a directory
          } finally {
            closeSync(fd);
          }
        });
      assert.ok(
        elves.some((f) => f.endsWith('/usr/lib/usernsd/node')),
        `the shipped Node is among ${elves.join(', ')}`,
      );
      // Every library each one loads, as the dynamic loader finds it here, and the package that holds it (one dpkg -S for all).
      const loads = new Map<string, string>(); // library -> a file that loads it
      for (const f of elves)
        for (const m of spawnSync('ldd', [f], { encoding: 'utf8' }).stdout.matchAll(/(?:=> )?(\/\S+) \(0x/g)) loads.set(m[1], f.slice(dir.length));
      const held = new Map<string, string>(); // path -> package
      const query = spawnSync('dpkg', ['-S', ...[...loads.keys()].flatMap((l) => [l, `/usr${l}`])], { encoding: 'utf8' }).stdout;
      for (const line of query.split('\n')) {
        const m = /^([^:,\s]+)(?::\S+)?: (\/\S+)$/.exec(line);
        if (m) held.set(m[2], m[1]);
      }
      const needed = new Map<string, string>(); // package -> a file that needs it
      for (const [lib, f] of loads) {
        const owner = held.get(lib) ?? held.get(`/usr${lib}`);
        assert.ok(owner, `no package holds ${lib}, which ${f} loads`);
        needed.set(owner, f);
      }
      for (const [p, f] of needed) assert.ok(depends.includes(p), `${f} loads a library of ${p}, which Depends (${depends.join(', ')}) does not name`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('installs with apt-get: the unit enabled and started, conffiles in place, the C helpers used', () => {
    // This machine's image forbids maintainer scripts to start services (policy-rc.d exits 101, as
    // in container images), which the package honours: the container is a machine that allows it.
    c!.sh('rm -f /usr/sbin/policy-rc.d');
    // And it does not rebuild man-db's index at each of the four installs and removals (3.5 s of CPU
    // each, the machine's own business): man -w below finds the page without it.
    c!.sh('rm -f /var/lib/man-db/auto-update');
    const r = c!.try(`apt-get install -y -q --no-install-recommends ${src(OLD)}`);
    assert.equal(r.status, 0, r.out);
    assert.equal(c!.sh('systemctl is-enabled usernsd').trim(), 'enabled');
    assert.equal(c!.sh('systemctl is-active usernsd').trim(), 'active');
    assert.equal(status().version, OLD);
    const conffiles = c!.sh("dpkg-query -W -f='${Conffiles}' usernsd");
    for (const f of ['/etc/usernsd.conf', '/etc/request-key.d/usernsd.conf', '/etc/init.d/usernsd'])
      assert.match(conffiles, new RegExp(` ${f} [0-9a-f]{32}`), f);
    assert.match(c!.sh('cat /etc/request-key.d/usernsd.conf'), /^create\s+user\s+userns:\*\s+\*\s+\/usr\/lib\/usernsd\/dist\/usernsd-upcall -t 600 %k %d$/m);
    assert.match(c!.sh('head -c 4 /usr/sbin/mount.usernsd | od -c | head -1'), /177\s+E\s+L\s+F/, "mount(8)'s helper is the C program");
    assert.match(c!.sh('man -w usernsd'), /\/usr\/share\/man\/man8\/usernsd\.8\.gz/);
  });

  it('serves pins, a view and names, and keeps them through an upgrade while it runs (restarted into the new build)', () => {
    // The admin's own context (from the shipped example) and a backup tree on a tmpfs labelled with it.
    c!.sh('cp /etc/userns.d/backups.conf.example /etc/userns.d/backups.conf && systemctl reload usernsd');
    const pin = pinIno();
    c!.sh(
      'mkdir -p /srv/backup /mnt/view && mount -t tmpfs backup /srv/backup && touch /srv/backup/h && chown 1000:1000 /srv/backup/h && usernsctl label set /srv/backup backups',
    );
    c!.sh('mount -t usernsd -o context=backups,mode=foreign /srv/backup /mnt/view');
    const seen = () => c!.sh('stat -c %u:%g /mnt/view/h').trim();
    assert.equal(seen(), '2001000:2001000');
    assert.equal(c!.sh('getent passwd 2001000').split(':')[0], 'backups.1000');
    const before = mainPid();

    const up = c!.try(`apt-get install -y -q --no-install-recommends ${src(NEW)}`);
    assert.equal(up.status, 0, up.out);
    assert.notEqual(mainPid(), before, 'the running agent was restarted into the new files');
    assert.equal(status().version, NEW);
    assert.deepEqual(pinIno(), { ...pin, created: false }, 'the same namespace, adopted, not made again');
    assert.match(c!.sh('usernsctl view --list'), /\/srv\/backup\s+\/mnt\/view\s+backups\s+foreign\s+idmapped/);
    assert.equal(seen(), '2001000:2001000', 'the view stays mounted');
    assert.equal(c!.sh('getent passwd 2001000').split(':')[0], 'backups.1000');
    assert.deepEqual(
      status()
        .contextStates.filter((s) => s.label === 'backups')
        .map((s) => s.state),
      ['pinned'],
    );
    assert.match(c!.sh('journalctl -u usernsd -o cat --no-pager | grep "Adopted existing pins" | tail -1'), /"pins":1\b/);
    // A reload looks at the stamps of the files it kept parsed through the package's C library
    // (native/stamps.c). backups.conf names its owner, and so is read at every reload: a plain file
    // is kept once a reload has read it settled (a second after it was written).
    c!.sh(
      "printf '[context]\\nuid_map = 0 3000000 65536\\ngid_map = 0 3000000 65536\\n' > /etc/userns.d/plain.conf && sleep 1.1 && usernsctl reload && usernsctl reload",
    );
    const maps = c!.sh(`grep -c /usr/lib/usernsd/dist/libusernsd-stamps.so /proc/${mainPid()}/maps || true`);
    c!.sh('rm /etc/userns.d/plain.conf && usernsctl reload');
    assert.match(maps, /^[1-9]/m, 'the library is loaded');
  });

  it('downgrades the same way: the older build reads what the newer one wrote', () => {
    const pin = pinIno();
    const down = c!.try(`apt-get install -y -q --no-install-recommends --allow-downgrades ${src(OLD)}`);
    assert.equal(down.status, 0, down.out);
    assert.equal(status().version, OLD);
    assert.deepEqual(pinIno(), { ...pin, created: false });
    assert.match(c!.sh('usernsctl view --list'), /\/srv\/backup\s+\/mnt\/view\s+backups/);
    assert.equal(c!.sh('getent passwd 2001000').split(':')[0], 'backups.1000');
  });

  it("keeps the admin's configuration, state and pins on remove, and on purge takes only what it brought", () => {
    c!.sh('echo "# the admin was here" >> /etc/usernsd.conf');
    const rm = c!.try('apt-get remove -y -q usernsd');
    assert.equal(rm.status, 0, rm.out);
    assert.notEqual(c!.try('systemctl is-active usernsd').out.trim(), 'active', 'the agent is stopped');
    for (const gone of ['/usr/sbin/usernsd', '/usr/bin/usernsctl', '/usr/sbin/mount.usernsd', '/usr/lib/usernsd'])
      assert.notEqual(c!.try(`test -e ${gone}`).status, 0, `${gone} removed`);
    assert.match(c!.sh('cat /etc/usernsd.conf'), /# the admin was here/);
    assert.equal(c!.try('test -s /var/lib/usernsd/contexts.json').status, 0, 'the state stays for a reinstall');
    assert.match(c!.mountinfo(), / \/run\/userns\/backups \S+ .* - nsfs /, "the pin stays: it is the admin's to release");
    assert.match(c!.sh("dpkg-query -W -f='${db:Status-Abbrev}' usernsd"), /^rc/);

    const purge = c!.try('apt-get purge -y -q usernsd');
    assert.equal(purge.status, 0, purge.out);
    for (const gone of [
      '/etc/usernsd.conf',
      '/etc/request-key.d/usernsd.conf',
      '/etc/init.d/usernsd',
      '/var/lib/usernsd',
      '/etc/userns.d/backups.conf.example',
    ])
      assert.notEqual(c!.try(`test -e ${gone}`).status, 0, `${gone} purged`);
    assert.equal(c!.try('test -f /etc/userns.d/backups.conf').status, 0, "the admin's own context file is not the package's to take");
    assert.notEqual(c!.try('dpkg-query -W usernsd').status, 0);
    c!.sh('umount /mnt/view /srv/backup; umount /run/userns/backups');
  });
});

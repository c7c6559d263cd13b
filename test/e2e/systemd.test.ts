// The shipped unit under a real systemd as PID 1 (systemd-nspawn over this machine's root): install, start, resolve, reload, stop, adopt.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { installedUnit } from '../helpers/unit.ts';
import { bootContainer, containerUnavailable } from '../helpers/container.ts';
import type { Container } from '../helpers/container.ts';

const ROOT = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
const UNIT = installedUnit();

/** The bounding set the unit asks for, as /proc/PID/status shows it (CapBnd, hex). */
function expectedCapBnd(): string {
  const bits: Record<string, number> = {
    CAP_CHOWN: 0,
    CAP_DAC_OVERRIDE: 1,
    CAP_SETGID: 6,
    CAP_SETUID: 7,
    CAP_SYS_CHROOT: 18,
    CAP_SYS_PTRACE: 19,
    CAP_SYS_ADMIN: 21,
  };
  const names = /^CapabilityBoundingSet=(.*)$/m.exec(UNIT)![1].trim().split(/\s+/);
  let mask = 0n;
  for (const n of names) {
    assert.ok(n in bits, `the test knows no bit for ${n}: add it`);
    mask |= 1n << BigInt(bits[n]);
  }
  return mask.toString(16).padStart(16, '0');
}

function statusField(status: string, field: string): string {
  return new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(status)?.[1]?.trim() ?? '';
}

describe('e2e: the shipped unit under a real systemd as PID 1 (root, systemd-nspawn)', function () {
  this.timeout(180_000);
  let c: Container | undefined;
  const why = containerUnavailable();

  before(async function () {
    if (why) {
      // CI installs systemd-container and runs as root: there this never skips.
      if (process.env.CI) throw new Error(`cannot boot a container in CI: ${why}`);
      this.skip();
    }
    c = await bootContainer(ROOT);
  });

  /** A veth host end a failed delegation test may have left on the host (the container shares its network). */
  let vethLeft: string | null = null;
  after(async () => {
    if (vethLeft) spawnSync('ip', ['link', 'del', 'dev', vethLeft], { stdio: 'ignore' });
    // Only this run's container: other runs (or other tests) may have cgroups of their own.
    await c?.stop();
    assert.deepEqual(c?.leftoverCgroups() ?? [], [], 'the container left cgroups behind');
  });

  const journal = () => c!.sh('journalctl -u usernsd -o cat --no-pager');
  const pinIn = (mountinfo: string, label: string) => new RegExp(` /run/userns/${label.replace(/\./g, '\\.')} \\S+ .* - nsfs `).test(mountinfo);
  const hostMountinfo = () => readFileSync('/proc/self/mountinfo', 'utf8');

  it('installs with make install, starts as Type=notify with a STATUS, and resolves a plain and a nested context', () => {
    // /src is read-only here: dist/ was built by npm test, make must not try to rebuild it.
    c!.sh(
      `cd /src && make -s -o dist/agent/main.js install >/dev/null && for f in /etc/userns.d/*.conf.example; do cp "$f" "\${f%.example}"; done && systemctl daemon-reload`,
    );
    const start = c!.try('systemctl start usernsd');
    assert.equal(start.status, 0, `systemctl start failed: ${start.out}\n${c!.try('journalctl -u usernsd -o cat --no-pager | tail -30').out}`);
    assert.equal(c!.sh('systemctl show -P Type usernsd').trim(), 'notify');
    assert.match(c!.sh('systemctl show -P StatusText usernsd'), /^serving \d+ context/);
    c!.sh('usernsctl resolve backups && usernsctl resolve backups-www');
    const mi = c!.mountinfo();
    assert.ok(pinIn(mi, 'backups') && pinIn(mi, 'backups-www'), `pins not in the container init's mount namespace:\n${mi}`);
    assert.ok(!pinIn(hostMountinfo(), 'backups'), 'a pin reached the host');
    // The kernel's view of the nested pin: its maps, read through the pin.
    assert.match(c!.sh('nsenter --user=/run/userns/backups-www --preserve-credentials cat /proc/self/uid_map'), /^\s*0\s+0\s+1000\s*$/);
  });

  it('runs with the hardening the unit asks for: capability bounding set, NoNewPrivs, a read-only system', () => {
    const pid = c!.sh('systemctl show -P MainPID usernsd').trim();
    const st = c!.sh(`cat /proc/${pid}/status`);
    assert.equal(statusField(st, 'CapBnd'), expectedCapBnd());
    assert.equal(statusField(st, 'NoNewPrivs'), '1');
    assert.equal(statusField(st, 'Seccomp'), '2', 'no seccomp filter: RestrictAddressFamilies= is not in force');
    assert.match(c!.sh(`nsenter -t ${pid} -m findmnt -no OPTIONS -T /usr`), /^ro\b/);
    assert.notEqual(c!.sh(`readlink /proc/${pid}/ns/net`), c!.sh('readlink /proc/1/ns/net'), 'PrivateNetwork= is not in force');
  });

  it('mounts a view from /etc/fstab as a .mount unit: mount.usernsd asks the sandboxed agent, which copies the tree where the caller is', () => {
    // The backup of seed 002 on a tmpfs (the container's root is an overlay, which cannot be idmapped): raw ids 0 and 1000.
    c!.sh(
      'mkdir -p /srv/backup /mnt/view && mount -t tmpfs backup /srv/backup && touch /srv/backup/r /srv/backup/h && chown 0:0 /srv/backup/r && chown 1000:1000 /srv/backup/h /srv/backup && usernsctl label set /srv/backup backups',
    );
    c!.sh(
      'echo "/srv/backup /mnt/view usernsd context=backups,mode=foreign,nofail,x-systemd.requires=usernsd.service 0 0" >> /etc/fstab && systemctl daemon-reload',
    );
    const unit = c!.sh('systemd-escape -p --suffix=mount /mnt/view').trim();
    const start = c!.try(`systemctl start ${unit}`);
    assert.equal(start.status, 0, `${start.out}\n${c!.try(`journalctl -u ${unit} -u usernsd -o cat --no-pager | tail -20`).out}`);
    // backups.conf: 0-65535 on 2000000, root squashed.
    assert.equal(c!.sh('stat -c %u:%g /mnt/view/r /mnt/view/h'), '65534:65534\n2001000:2001000\n');
    assert.match(c!.sh('findmnt -no OPTIONS /mnt/view'), /\bidmapped\b/);
    assert.match(c!.sh('findmnt -no OPTIONS /mnt/view'), /^rw\b/, "not the read-only copy the agent's own namespace holds");
    const touch = c!.try('setpriv --reuid=2001000 --regid=2001000 --clear-groups touch /mnt/view/written');
    assert.equal(touch.status, 0, `${touch.out}\n${c!.try('ls -lnd /mnt/view /srv/backup; findmnt -R /mnt/view; findmnt -R /srv/backup').out}`);
    assert.equal(c!.sh('stat -c %u:%g /srv/backup/written'), '1000:1000\n');
    assert.match(c!.sh('usernsctl view --list'), /\/srv\/backup\s+\/mnt\/view\s+backups\s+foreign\s+idmapped\s+rw/);
    c!.sh(`systemctl stop ${unit}`);
    assert.equal(c!.try('findmnt /mnt/view').status, 1, 'stopping the unit unmounts the view');
    // nofail keeps the mount out of local-fs.target's ordering: the agent starts after local-fs.target.
    assert.doesNotMatch(c!.sh('journalctl -b -o cat --no-pager'), /ordering cycle/i);
  });

  it("does each of the agent's jobs under the unit's system call allow-list: nothing refused by the filter", () => {
    const pid = c!.sh('systemctl show -P MainPID usernsd').trim();
    assert.match(c!.sh('systemctl show -P SystemCallFilter usernsd'), /\bmove_mount\b/, 'the allow-list is in force');
    assert.equal(statusField(c!.sh(`cat /proc/${pid}/status`), 'Seccomp'), '2');
    // Release (umount2 in init's mount namespace) and create again (clone, setns, uid_map, mount);
    // explain and a view for enter (open_tree, mount_setattr by the worker in the caller's
    // namespace); the issued answers' keyring (keyctl); reload (the request-key probe).
    c!.sh('usernsctl release backups-www && usernsctl resolve backups-www');
    assert.match(c!.sh('usernsctl explain /srv/backup/h'), /^uid: .*on disk 1000/m);
    assert.equal(c!.sh('mkdir -p /mnt/enter && usernsctl enter backups --view /srv/backup:/mnt/enter -- stat -c %u:%g /mnt/enter/h').trim(), '1000:1000');
    c!.sh('usernsctl keys clear');
    c!.sh('systemctl reload usernsd');
    assert.equal(c!.sh('systemctl show -P MainPID usernsd').trim(), pid, 'the agent was not killed');
    assert.doesNotMatch(journal(), /EPERM|Operation not permitted|SIGSYS/, 'a call the filter refused');
  });

  it("names the contexts' ids through userdb: nss-systemd in the container asks the sandboxed agent", () => {
    // backups.conf maps 0-65535 on 2000000; the container's nsswitch is this machine's (passwd: files systemd).
    assert.equal(c!.sh('getent passwd 2001000').split(':')[0], 'backups.1000');
    assert.equal(c!.sh('getent group backups.33').split(':')[2], '2000033');
    assert.match(c!.sh('touch /tmp/named && chown 2001000:2000033 /tmp/named && ls -l /tmp/named'), /backups\.1000 backups\.33 /);
  });

  it('installs again over the running agent (make install), and systemctl try-restart adopts its pins, views and names', () => {
    c!.sh('mkdir -p /mnt/again && usernsctl view --context backups /srv/backup /mnt/again');
    const pid = c!.sh('systemctl show -P MainPID usernsd').trim();
    const before = JSON.parse(c!.sh('usernsctl --json resolve backups')) as { ino: number };
    const install = c!.try('cd /src && make -s -o dist/agent/main.js install >/dev/null && systemctl try-restart usernsd');
    assert.equal(install.status, 0, install.out);
    assert.notEqual(c!.sh('systemctl show -P MainPID usernsd').trim(), pid, 'restarted into the new files');
    const after = JSON.parse(c!.sh('usernsctl --json resolve backups')) as { ino: number; created: boolean };
    assert.deepEqual([after.ino, after.created], [before.ino, false], 'the same namespace, adopted');
    assert.match(c!.sh('usernsctl view --list'), /\/srv\/backup\s+\/mnt\/again\s+backups\s+foreign\s+idmapped/);
    assert.equal(c!.sh('stat -c %u:%g /mnt/again/h').trim(), '2001000:2001000');
    assert.equal(c!.sh('getent passwd 2001000').split(':')[0], 'backups.1000');
    c!.sh('umount /mnt/again');
  });

  it('reloads with systemctl reload in the same process', async () => {
    const pid = c!.sh('systemctl show -P MainPID usernsd').trim();
    c!.sh('systemctl reload usernsd');
    for (let i = 0; i < 100 && !journal().includes('"Reloaded configuration"'); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(journal(), /"Reloaded configuration"/);
    assert.equal(c!.sh('systemctl show -P MainPID usernsd').trim(), pid);
  });

  it("with the delegation drop-in, gives a context a cgroup of the unit's Delegate=yes subtree and a network; enter starts in the cgroup, release removes all", () => {
    c!.sh(
      // The network lines too (commented out in the shipped drop-in): a namespace and a veth pair.
      "mkdir -p /etc/systemd/system/usernsd.service.d && sed -E 's/^#(RestrictNamespaces|RestrictAddressFamilies|CapabilityBoundingSet)/\\1/' /usr/local/lib/usernsd/systemd/delegate.conf > /etc/systemd/system/usernsd.service.d/delegate.conf && systemctl daemon-reload && systemctl restart usernsd",
    );
    c!.sh(
      "printf '[context]\\nuid_map = 0 2200000 65536\\ngid_map = 0 2200000 65536\\n[delegate]\\ncgroup = yes\\nnetns = yes\\nveth = yes\\n' > /etc/userns.d/given.conf && systemctl reload usernsd",
    );
    const unitCgroup = c!.sh('systemctl show -P ControlGroup usernsd').trim();
    const r = JSON.parse(c!.sh('usernsctl --json resolve given')) as { delegated: { cgroup: string; netns: string; veth: string } };
    vethLeft = r.delegated.veth;
    // The sandboxed agent pinned it where ip netns looks (init's mount namespace), owned by the context.
    assert.equal(r.delegated.netns, '/run/netns/given');
    assert.match(c!.sh('ip netns exec given ip -o link show host0'), /host0@/);
    assert.match(c!.sh(`ip -o link show ${r.delegated.veth}`), new RegExp(`${r.delegated.veth}@`), "the host end is in init's network namespace");
    assert.ok(r.delegated.cgroup.endsWith(`${unitCgroup}/given`), `${r.delegated.cgroup} is in the unit's subtree ${unitCgroup}`);
    assert.equal(c!.sh(`stat -c %u:%g ${r.delegated.cgroup} ${r.delegated.cgroup}/cgroup.procs`).trim(), '2200000:2200000\n2200000:2200000');
    const pid = c!.sh('systemctl show -P MainPID usernsd').trim();
    assert.equal(c!.sh(`grep ^0:: /proc/${pid}/cgroup`).trim(), `0::${unitCgroup}/.agent`, 'the agent lives in its leaf');
    assert.equal(c!.sh('usernsctl enter given -- sh -c "grep ^0:: /proc/self/cgroup"').trim(), `0::${unitCgroup}/given`);
    // Its root closes its cgroups to everyone else; the release, by the sandboxed agent, still removes them.
    c!.sh(`usernsctl enter given -- sh -c "mkdir ${r.delegated.cgroup}/x && chmod 700 ${r.delegated.cgroup}/x ${r.delegated.cgroup}"`);
    c!.sh('usernsctl release given');
    assert.equal(c!.try(`test -e ${r.delegated.cgroup}`).status, 1, 'the cgroup went with the release');
    assert.notEqual(c!.try(`ip link show ${r.delegated.veth}`).status, 0, 'and the veth pair');
    assert.equal(c!.try('test -e /run/netns/given').status, 1, 'and the network namespace');
    assert.doesNotMatch(journal(), /EPERM|EROFS|Operation not permitted|Read-only file system/);
    c!.sh('rm /etc/userns.d/given.conf /etc/systemd/system/usernsd.service.d/delegate.conf && systemctl daemon-reload && systemctl restart usernsd');
  });

  it('stops with exit status 0, keeps the pins, and the next start adopts them', () => {
    c!.sh('systemctl stop usernsd');
    assert.equal(c!.sh('systemctl show -P Result usernsd').trim(), 'success');
    assert.equal(c!.sh('systemctl show -P ExecMainStatus usernsd').trim(), '0');
    assert.ok(pinIn(c!.mountinfo(), 'backups') && pinIn(c!.mountinfo(), 'backups-www'), 'a pin went away with the agent');
    c!.sh('systemctl start usernsd');
    const adopted =
      journal()
        .split('\n')
        .filter((l) => l.includes('"Adopted existing pins"'))
        .pop() ?? '';
    assert.match(adopted, /"pins":2\b/);
    const status = c!.sh('usernsctl status --json');
    const states = (JSON.parse(status) as { contextStates: { label: string; state: string }[] }).contextStates;
    assert.deepEqual(
      states
        .filter((s) => s.label.startsWith('backups'))
        .map((s) => `${s.label}=${s.state}`)
        .sort(),
      ['backups-www=pinned', 'backups=pinned'],
    );
    c!.sh('systemctl stop usernsd');
  });
});

// The shipped unit under a real systemd as PID 1 (systemd-nspawn over this machine's root): install, start, resolve, reload, stop, adopt.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { bootContainer, containerUnavailable, leftoverCgroups } from '../helpers/container.ts';
import type { Container } from '../helpers/container.ts';

const ROOT = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');
const UNIT = readFileSync(new URL('../../etc/systemd/usernsd.service', import.meta.url), 'utf8');

/** The bounding set the unit asks for, as /proc/PID/status shows it (CapBnd, hex). */
function expectedCapBnd(): string {
  const bits: Record<string, number> = { CAP_CHOWN: 0, CAP_DAC_OVERRIDE: 1, CAP_SETGID: 6, CAP_SETUID: 7, CAP_SYS_CHROOT: 18, CAP_SYS_PTRACE: 19, CAP_SYS_ADMIN: 21 };
  const names = /^CapabilityBoundingSet=(.*)$/m.exec(UNIT)![1]!.trim().split(/\s+/);
  let mask = 0n;
  for (const n of names) {
    assert.ok(n in bits, `the test knows no bit for ${n}: add it`);
    mask |= 1n << BigInt(bits[n]!);
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

  after(async () => {
    await c?.stop();
    assert.deepEqual(leftoverCgroups(), [], 'the container left cgroups behind');
  });

  const journal = () => c!.sh('journalctl -u usernsd -o cat --no-pager');
  const pinIn = (mountinfo: string, label: string) => new RegExp(` /run/userns/${label.replace(/\./g, '\\.')} \\S+ .* - nsfs `).test(mountinfo);
  const hostMountinfo = () => readFileSync('/proc/self/mountinfo', 'utf8');

  it('installs with make install, starts as Type=notify with a STATUS, and resolves a plain and a nested context', () => {
    // /src is read-only here: dist/ was built by npm test, make must not try to rebuild it.
    c!.sh(`cd /src && make -s -o dist/agent/main.js install >/dev/null && for f in /etc/userns.d/*.conf.example; do cp "$f" "\${f%.example}"; done && systemctl daemon-reload`);
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

  it('reloads with systemctl reload in the same process', async () => {
    const pid = c!.sh('systemctl show -P MainPID usernsd').trim();
    c!.sh('systemctl reload usernsd');
    for (let i = 0; i < 100 && !journal().includes('"Reloaded configuration"'); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(journal(), /"Reloaded configuration"/);
    assert.equal(c!.sh('systemctl show -P MainPID usernsd').trim(), pid);
  });

  it('stops with exit status 0, keeps the pins, and the next start adopts them', () => {
    c!.sh('systemctl stop usernsd');
    assert.equal(c!.sh('systemctl show -P Result usernsd').trim(), 'success');
    assert.equal(c!.sh('systemctl show -P ExecMainStatus usernsd').trim(), '0');
    assert.ok(pinIn(c!.mountinfo(), 'backups') && pinIn(c!.mountinfo(), 'backups-www'), 'a pin went away with the agent');
    c!.sh('systemctl start usernsd');
    const adopted = journal().split('\n').filter((l) => l.includes('"Adopted existing pins"')).pop() ?? '';
    assert.match(adopted, /"pins":2\b/);
    const status = c!.sh('usernsctl status --json');
    const states = (JSON.parse(status) as { contextStates: { label: string; state: string }[] }).contextStates;
    assert.deepEqual(states.filter((s) => s.label.startsWith('backups')).map((s) => `${s.label}=${s.state}`).sort(), ['backups-www=pinned', 'backups=pinned']);
    c!.sh('systemctl stop usernsd');
  });
});

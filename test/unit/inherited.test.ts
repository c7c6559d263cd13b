// The descriptors the agent closes at start (kernel/sys.ts closeInheritedDescriptors, SPEC §12):
// what it was started with, never one of Node's own. Node reads NODE_EXTRA_CA_CERTS on a thread of
// its own once node:tls is loaded, through a descriptor without FD_CLOEXEC; closing it under that
// read broke the read and, once the number was reused, the agent's own next file (EBADF in CI).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';

const SYS = new URL('../../agent/kernel/sys.ts', import.meta.url).pathname;

describe('unit: the descriptors closed at start', function () {
  this.timeout(60_000);
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'usernsd-inherited-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("leave Node's own read of NODE_EXTRA_CA_CERTS alone, caught while it is open", () => {
    // A large bundle (Node's own roots, many times over), so its read is under way for a while.
    const bundle = join(dir, 'bundle.pem');
    const copies = 30;
    writeFileSync(bundle, Array.from({ length: copies }, () => rootCertificates.join('\n')).join('\n') + '\n');
    const script = `
      import { readdirSync, readlinkSync } from 'node:fs';
      const { closeInheritedDescriptors } = await import(${JSON.stringify(SYS)});
      const tls = await import('node:tls');
      const open = () => readdirSync('/proc/self/fd').find((f) => { try { return readlinkSync('/proc/self/fd/' + f) === ${JSON.stringify(bundle)}; } catch { return false; } });
      let fd;
      for (let i = 0; i < 2e6 && fd === undefined; i++) fd = open();
      const closed = closeInheritedDescriptors();
      const extra = tls.getCACertificates('extra').length;
      process.stdout.write(JSON.stringify({ fd: fd === undefined ? null : Number(fd), closed, extra }));
    `;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8',
      env: { ...process.env, NODE_EXTRA_CA_CERTS: bundle },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /Ignoring extra certs/, "Node's read of the bundle was not broken");
    const out = JSON.parse(r.stdout) as { fd: number | null; closed: number[]; extra: number };
    assert.notEqual(out.fd, null, "the bundle was seen open on Node's thread: the test tests something");
    assert.ok(!out.closed.includes(out.fd!), `closed ${JSON.stringify(out.closed)}, among them Node's descriptor ${out.fd}`);
    assert.equal(out.extra, copies * rootCertificates.length, 'every certificate of the bundle was read');
  });
});

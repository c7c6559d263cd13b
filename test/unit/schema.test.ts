// Every parser of the configuration schema by example (config/schema.ts), through the keys that use
// it: what each accepts and how it normalizes, each problem's words, and the edges (0, the largest
// id, (uid_t) -1, ports, octets, ".." as a path component but not inside a name).
import assert from 'node:assert/strict';
import { AGENT_SCHEMA, CONTEXT_SCHEMA, isProblem, labelProblem } from '../../config/schema.ts';
import type { Nss } from '../../config/types.ts';
import { testNss } from '../helpers/fixtures.ts';

type Parse = { parse: (text: string, nss: Nss) => unknown };
const ok = (spec: Parse, text: string, want: unknown) => assert.deepEqual(spec.parse(text, testNss), want, text);
const bad = (spec: Parse, text: string, why: RegExp | string) => {
  const r = spec.parse(text, testNss);
  assert.ok(isProblem(r), `${text} is refused (got ${JSON.stringify(r)})`);
  if (typeof why === 'string') assert.equal(r.problem, why);
  else assert.match(r.problem, why);
};
const A = AGENT_SCHEMA;
const C = CONTEXT_SCHEMA;

describe('unit: the configuration schema, parser by parser', () => {
  it('labels: 1-64 of letters, digits, ".", "_", "-", not starting with "." or "-", each problem in its words', () => {
    for (const l of ['a', 'A9', '_x', 'a.b-c_d', 'x'.repeat(64)]) assert.equal(labelProblem(l), null, l);
    assert.equal(labelProblem(''), 'a label cannot be empty');
    assert.equal(labelProblem('x'.repeat(65)), 'a label has at most 64 characters (this one has 65)');
    assert.equal(labelProblem('.x'), 'a label cannot start with "." or "-"');
    assert.equal(labelProblem('-x'), 'a label cannot start with "." or "-"');
    assert.equal(labelProblem(`.${'x'.repeat(63)}`), 'a label cannot start with "." or "-"', '64 characters are not too many');
    assert.equal(labelProblem('a/b'), 'a label may contain only letters, digits, ".", "_" and "-"');
    ok(C.context.label, 'web', 'web');
    bad(C.context.label, '../x', '"../x": a label cannot start with "." or "-"');
    ok(C.context.parent, 'host', 'host');
    bad(C.context.parent, 'a b', '"a b": a label may contain only letters, digits, ".", "_" and "-"');
  });

  it('a problem is an object with a problem in it, and nothing else is', () => {
    assert.equal(isProblem({ problem: 'x' }), true);
    for (const v of [null, undefined, 'problem', 0, {}, []]) assert.equal(isProblem(v), false, JSON.stringify(v));
  });

  it('one of a list: the value as written, or every choice named', () => {
    ok(A.agent.log_level, 'debug', 'debug');
    bad(C.context.create, 'Eager', 'must be one of lazy, eager (got "Eager")');
  });

  it('absolute paths: trailing slashes dropped ("/" stays), ".." refused as a component only', () => {
    ok(A.agent.socket, '/run/x.sock', '/run/x.sock');
    ok(A.agent.state, '/var/lib/u//', '/var/lib/u');
    ok(A.agent.pins, '/', '/');
    ok(A.agent.pins, '///', '/');
    ok(A.agent.contexts, '/etc/a..b', '/etc/a..b');
    bad(A.agent.contexts, '/etc/../root', 'must be an absolute path without ".." (got "/etc/../root")');
    bad(A.agent.contexts, 'etc/userns.d', /must be an absolute path/);
  });

  it('whole numbers within their bounds, inclusive, written plainly', () => {
    ok(C.context.size, '1', 1);
    ok(C.context.size, String(0x7fffffff), 0x7fffffff);
    bad(C.context.size, '0', 'must be a whole number from 1 to 2147483647 (got "0")');
    bad(C.context.size, String(0x80000000), /from 1 to 2147483647/);
    bad(C.context.size, '1e3', /whole number/);
    ok(A.mapping.overflowuid, '0', 0);
    ok(A.mapping.overflowuid, '4294967294', 4294967294);
    bad(A.mapping.overflowgid, '4294967295', /from 0 to 4294967294/);
    bad(A.mapping.overflowuid, 'x', 'must be a whole number from 0 to 4294967294 (got "x")');
    ok(A.etcd.timeout, '100', 100);
    bad(A.etcd.timeout, '99', /from 100 to 600000/);
  });

  it("maps: extents, or the extent parser's own words", () => {
    ok(C.context.uid_map, '0 100000 65536', [{ inside: 0, outside: 100000, count: 65536 }]);
    bad(C.context.gid_map, '0 100000', /must be three numbers/);
  });

  it('users: a name through NSS or a number (named when NSS knows it, its own gid when not), never (uid_t) -1', () => {
    ok(C.context.owner, 'hpa', { uid: 1000, gid: 1000, name: 'hpa' });
    ok(C.context.owner, '1001', { uid: 1001, gid: 1001, name: 'alice' });
    ok(C.context.owner, '4242', { uid: 4242, gid: 4242, name: null });
    bad(C.context.owner, '4294967295', '4294967295 is (uid_t) -1, which the kernel reads as "no id": not a user');
    bad(C.context.owner, 'nosuch', 'unknown user "nosuch" (not found through NSS: check getent passwd nosuch)');
    ok(C.squash.anonuid, 'nobody', 65534);
    bad(C.squash.anonuid, 'nosuch', /unknown user/);
  });

  it('groups: a name through NSS or a number, never (gid_t) -1', () => {
    ok(C.squash.anongid, 'backup', 34);
    ok(C.squash.anongid, '77', 77);
    bad(C.squash.anongid, '4294967295', '4294967295 is (gid_t) -1, which the kernel reads as "no id": not a group');
    bad(C.squash.anongid, 'nosuch', 'unknown group "nosuch" (not found through NSS: check getent group nosuch)');
  });

  it('lists: comma-separated, blanks and empty items ignored, the first bad item refuses the list', () => {
    ok(C.access.users, 'hpa, 1001 ,,', [1000, 1001]);
    ok(C.access.users, ' , ', []);
    bad(C.access.users, 'hpa, nosuch', /unknown user "nosuch"/);
    ok(C.access.groups, 'backup,nogroup', [34, 65534]);
    ok(A.etcd.endpoints, 'http://10.0.0.1:2379, https://[::1]:2379', ['http://10.0.0.1:2379', 'https://[::1]:2379']);
    bad(A.etcd.endpoints, 'http://a:1, ftp://b:2', 'must be a URL such as http://127.0.0.1:2379 (got "ftp://b:2")');
    bad(A.etcd.endpoints, 'http://a', /must be a URL/);
    bad(A.etcd.endpoints, 'xhttp://a:1', /must be a URL/);
    bad(A.etcd.endpoints, 'http://a:123456', /must be a URL/);
  });

  it('the pool range: FIRST-LAST, blanks allowed, FIRST <= LAST < 2^32 - 1', () => {
    ok(A.pool.range, '100-200', { start: 100, end: 200 });
    ok(A.pool.range, '100 - 100', { start: 100, end: 100 });
    ok(A.pool.range, '1-4294967294', { start: 1, end: 4294967294 });
    for (const t of ['200-100', '1-4294967295', 'a-b', '100', '100-200x', ' 100-200', '0100-200', '100-0200', '0-0200'])
      bad(A.pool.range, t, `must be "FIRST-LAST" host ids with FIRST <= LAST < 4294967295 (got "${t}")`);
  });

  it('a listen address: IPv4 with octets up to 255 or [IPv6], a port from 1 to 65535', () => {
    ok(A.metrics.listen, '127.0.0.1:9847', { host: '127.0.0.1', port: 9847 });
    ok(A.metrics.listen, '[::1]:1', { host: '::1', port: 1 });
    ok(A.metrics.listen, '255.255.255.255:65535', { host: '255.255.255.255', port: 65535 });
    for (const t of ['256.0.0.1:80', '1.2.3.4:0', '1.2.3.4:65536', ':80', 'localhost:80', '::1:80', '1.2.3:80', 'x1.2.3.4:80', '1.2.3.4:80x'])
      bad(A.metrics.listen, t, /must be ADDRESS:PORT/);
  });

  it('the mount namespace, the label attribute, the etcd prefix and host name', () => {
    for (const t of ['auto', 'self', '/proc/1/ns/mnt']) ok(A.agent.mount_namespace, t, t);
    bad(A.agent.mount_namespace, 'proc/1/ns/mnt', /must be auto, self or the absolute path/);
    bad(A.agent.mount_namespace, '/proc/../etc', /must be auto, self or the absolute path/);
    for (const t of ['trusted.usernsd.label', 'user.x', 'security.a-b_c']) ok(A.agent.label_xattr, t, t);
    for (const t of ['system.x', 'trusted.', 'usernsd.label', 'user.a b']) bad(A.agent.label_xattr, t, /must be an extended attribute name/);
    ok(A.etcd.prefix, '/usernsd', '/usernsd/');
    ok(A.etcd.prefix, '/a/b/', '/a/b/');
    bad(A.etcd.prefix, 'usernsd', /must be a key prefix starting with "\/"/);
    bad(A.etcd.prefix, '/a/../b', /must be a key prefix/);
    ok(A.etcd.name, 'host-1.example', 'host-1.example');
    ok(A.etcd.name, 'h'.repeat(64), 'h'.repeat(64));
    for (const t of ['-h', 'h'.repeat(65), 'a b', '']) bad(A.etcd.name, t, /must be 1-64 letters/);
    ok(A.agent.userdb, 'no', 'no');
    ok(A.pool.coordinator, 'etcd', 'etcd');
  });

  it('[delegate] path lists: blanks and commas between, empty items ignored, "/" and a path twice refused', () => {
    ok(C.delegate.devices, ',/dev/a,, /dev/b', ['/dev/a', '/dev/b']);
    ok(C.delegate.directories, ' /srv/x/ ', ['/srv/x']);
    bad(C.delegate.directories, '/srv/x /', 'must not be "/"');
    bad(C.delegate.devices, '/dev/a /dev/a/', 'names /dev/a twice');
  });

  it('[delegate] cgroup limits: FILE=VALUE pairs, the whole pair and the whole file name checked', () => {
    ok(C.delegate.cgroup_limits, ' pids.max=5  memory.max=1G', [
      { file: 'pids.max', value: '5' },
      { file: 'memory.max', value: '1G' },
    ]);
    bad(C.delegate.cgroup_limits, 'memory.max/../../cgroup.procs=1', /is not FILE=VALUE/);
    bad(C.delegate.cgroup_limits, '=memory.max=1', /is not FILE=VALUE/);
    bad(C.delegate.cgroup_limits, 'memory.max=1\n2', /is not FILE=VALUE/);
    bad(C.delegate.tap, 'a b', /must be an interface name/);
    ok(C.delegate.tap, 'tap-0.x', 'tap-0.x');
  });
});

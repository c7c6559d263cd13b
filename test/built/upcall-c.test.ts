// The C request-key handler's reply reader (native/usernsd-upcall.c, --parse-reply): the same
// payload as the Node handler for every reply the agent can send, and for hostile replies —
// garbage, truncation, deep nesting, wrong types, control characters — a refusal, never a crash.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import fc from 'fast-check';
import { formatPayload } from '../../agent/upcall.ts';
import type { ResolveResult } from '../../agent/wire/protocol.ts';
import { assertBuiltFromCurrentSources } from '../helpers/fresh.ts';

const C_HANDLER = new URL('../../dist/usernsd-upcall', import.meta.url).pathname;
const parse = (input: string | Buffer) => spawnSync(C_HANDLER, ['--parse-reply'], { input, encoding: 'utf8' });
const frame = (data: unknown) => JSON.stringify({ type: 'reply', data }) + '\f';

const arbLabel = fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,20}$/);
const arbExtent = fc.record({ inside: fc.nat(0xfffffffe), outside: fc.nat(0xfffffffe), count: fc.integer({ min: 1, max: 0xffffffff }) });
const arbResult: fc.Arbitrary<ResolveResult> = fc.record({
  label: arbLabel,
  path: arbLabel.map((l) => `/run/userns/${l}`),
  parent: fc.oneof(fc.constant('host'), arbLabel),
  owner: fc.record({ uid: fc.nat(0xfffffffe), gid: fc.nat(0xfffffffe), name: fc.option(arbLabel, { nil: null }) }),
  uidMap: fc.array(arbExtent, { minLength: 1, maxLength: 5 }),
  gidMap: fc.array(arbExtent, { minLength: 1, maxLength: 5 }),
  setgroups: fc.constantFrom<'allow' | 'deny'>('allow', 'deny'),
  ino: fc.nat(),
  created: fc.boolean(),
  mayEnter: fc.boolean(),
  // Nested objects and arrays of strings the reader must step over (a context's [delegate]).
  delegated: fc.option(
    fc.record({
      cgroup: fc.option(
        arbLabel.map((l) => `/sys/fs/cgroup/usernsd/${l}`),
        { nil: null },
      ),
      netns: fc.option(
        arbLabel.map((l) => `/run/netns/${l}`),
        { nil: null },
      ),
      veth: fc.option(fc.stringMatching(/^vu[0-9a-f]{12}$/), { nil: null }),
      tap: fc.option(fc.stringMatching(/^[a-z][a-z0-9]{0,14}$/), { nil: null }),
      devices: fc.array(
        arbLabel.map((l) => `/dev/${l}`),
        { maxLength: 3 },
      ),
      directories: fc.array(
        arbLabel.map((l) => `/srv/${l}`),
        { maxLength: 3 },
      ),
    }),
    { nil: null },
  ),
});

describe('the C upcall handler reads replies', function () {
  this.timeout(60_000); // a process per case: hundreds of them
  before(function () {
    if (!existsSync(C_HANDLER)) {
      if (process.env.CI) throw new Error('dist/usernsd-upcall was not built: .ci/run installs gcc');
      this.skip(); // built by npm run build when a C compiler is present
    }
    assertBuiltFromCurrentSources('dist/usernsd-upcall', ['native'], /\.[ch]$/);
  });

  it("gives the Node handler's payload, byte for byte, for every result the agent can send", () => {
    fc.assert(
      fc.property(arbResult, fc.boolean(), (r, pretty) => {
        const text = pretty ? JSON.stringify({ type: 'reply', data: { id: 1, result: r } }, null, 2) + '\f' : frame({ id: 1, result: r });
        const out = parse(text);
        assert.equal(out.status, 0, out.stdout + out.stderr);
        assert.equal(out.stdout, formatPayload(r));
      }),
      { numRuns: 150 },
    );
  });

  it("passes the agent's error on, escapes decoded", () => {
    const out = parse(frame({ id: 1, error: { code: 'E_PERMISSION', message: 'uid 5 may not use context "x" \u00e9 \ud83d\ude00' } }));
    assert.equal(out.status, 1);
    assert.equal(out.stdout, 'agent-error: E_PERMISSION: uid 5 may not use context "x" \u00e9 \ud83d\ude00\n');
  });

  it('refuses hostile replies without crashing: garbage, truncation, nesting, wrong types, control characters', () => {
    const good = frame({
      id: 1,
      result: {
        label: 'a',
        path: '/run/userns/a',
        parent: 'host',
        owner: { uid: 0, gid: 0, name: 'root' },
        uidMap: [{ inside: 0, outside: 1, count: 1 }],
        gidMap: [{ inside: 0, outside: 1, count: 1 }],
        setgroups: 'allow',
        ino: 5,
        created: false,
        mayEnter: true,
      },
    });
    const hostile = fc.oneof(
      fc.string({ maxLength: 300 }),
      fc.uint8Array({ maxLength: 400 }).map((b) => Buffer.from(b)),
      fc.nat(good.length).map((n) => good.slice(0, n)),
      fc.tuple(fc.nat(good.length - 1), fc.string({ minLength: 1, maxLength: 3 })).map(([i, s]) => good.slice(0, i) + s + good.slice(i + 1)),
      fc.integer({ min: 1, max: 100_000 }).map((d) => '['.repeat(d) + ']'.repeat(d)),
      fc.constantFrom(
        good.replace('"/run/userns/a"', '"/run/userns/a\\nlabel=evil"'),
        good.replace('"ino":5', '"ino":-1'),
        good.replace('"ino":5', '"ino":1e400'),
        good.replace('"count":1}]', '"count":"1"}]'),
        good.replace('"id":1', '"id":2'),
        good.replace('"reply"', '"request"'),
        good.replace('"path"', '"p\\u0000ath"'),
        good.replace('"uid":0', '"uid":4294967296'),
        frame({
          id: 1,
          result: {
            ...(JSON.parse(good.slice(0, -1)) as { data: { result: object } }).data.result,
            uidMap: Array(400).fill({ inside: 0, outside: 1, count: 1 }),
          },
        }),
      ),
    );
    fc.assert(
      fc.property(hostile, (input) => {
        const out = parse(input);
        assert.equal(out.signal, null, `killed by ${out.signal}`);
        assert.ok(out.status === 0 || out.status === 1, `exit ${out.status}`);
        if (out.status === 0) {
          // Whatever it accepted is a well-formed payload: eight lines, none smuggled in.
          const lines = out.stdout.split('\n');
          assert.deepEqual(
            lines.slice(0, 8).map((l) => l.split('=')[0]),
            ['path', 'label', 'parent', 'owner', 'setgroups', 'ino', 'uid_map', 'gid_map'],
          );
          assert.equal(lines.length, 9);
        } else assert.match(out.stdout, /^(refused|agent-error): /);
      }),
      { numRuns: 300 },
    );
  });
});

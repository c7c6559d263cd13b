// The agent's request edge in-process: handleRequest with a real configuration and registry, the
// caller's identity given as the kernel would have given it (SO_PEERCRED). Authorization, the
// protocol's checks and "no oracle" (SPEC §12) need no kernel object: they are millisecond tests
// here, with fast-check over callers, labels and malformed requests. No namespace is created.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { setXattr } from '../../agent/kernel/sys.ts';
import { join } from 'node:path';
import { UsernsError } from '../../agent/errors.ts';
import { handleRequest, METHOD_NAMES } from '../../agent/handlers.ts';
import { serviceOf } from '../helpers/service.ts';
import type { LogLine } from '../helpers/service.ts';
import type { Agent } from '../../agent/handlers.ts';
import type { Changes } from '../../agent/service.ts';
import * as P from '../../agent/wire/protocol.ts';
import type { Connection } from '../../agent/wire/server.ts';
import { OWN_USERNS } from '../../agent/wire/peer.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { isRoot, mountsUnder, unmountAll } from '../helpers/kernel.ts';

const ALICE = 1001; // testNss: alice (1001), in [access] of "shared"
const HPA = 1000; // owner of "hpa-backups"

/** The agent's own Service on the tree's configuration; client failures are what it logs. */
const agentOf = async (tree: Tree, changes: Partial<Changes> = {}) => {
  const { service, logs } = await serviceOf(tree, changes);
  return { agent: service as Agent, logs };
};

const conn = (uid: number, gid = uid, groups: number[] = []): Connection => ({
  peer: { pid: process.pid, uid, gid, groups, userns: [OWN_USERNS], host: true },
  inflight: 0,
  framesThisTurn: 0,
  invalid: 0,
});
const ask = async (agent: Agent, c: Connection, data: unknown) => handleRequest(agent, c, data);
const request = (method: string, params: unknown, id: unknown = 1) => ({ id, method, params });

describe('unit: the request edge, in-process (handleRequest)', () => {
  let tree: Tree;
  let agent: Agent;
  let logs: LogLine[];

  before(async () => {
    tree = makeTree();
    tree.delegate('hpa', 100000, 65536); // its subuid/subgid line (SPEC §12: an owner's map lies in what it was given)
    tree.context('hpa-backups.conf', '[context]\nowner = hpa\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    tree.context('shared.conf', '[context]\nuid_map = 0 200000 65536\ngid_map = 0 200000 65536\n[access]\nusers = alice\n');
    tree.context('secret.conf', '[context]\nuid_map = 0 300000 65536\ngid_map = 0 300000 65536\n');
    tree.context('secret-www.conf', '[context]\nparent = secret\nuid_map = 0 1000 100\ngid_map = 0 1000 100\n');
    ({ agent, logs } = await agentOf(tree));
  });
  // Even when a test fails (or, under mutation testing, a handler lets a caller through), nothing
  // made here is left: a pin is unmounted and the spawner ended before the tree goes.
  after(() => {
    agent.registry.namespaces.close();
    unmountAll(tree.dir);
    tree.remove();
  });

  it('answers a context a user may not use exactly as one that does not exist (no oracle), for any label and uid', async () => {
    const labels = fc.oneof(fc.constantFrom('secret', 'secret-www', 'hpa-backups', 'shared'), fc.stringMatching(/^[a-z][a-z0-9.-]{0,20}$/));
    const uids = fc.integer({ min: 1, max: 2 ** 32 - 2 }).filter((u) => u !== HPA && u !== ALICE);
    await fc.assert(
      fc.asyncProperty(uids, labels, async (uid, label) => {
        const exists = agent.registry.get(label) !== undefined;
        for (const method of ['resolve'] as const) {
          const r = await ask(agent, conn(uid), request(method, { label }));
          const twin = await ask(agent, conn(uid), request(method, { label: exists ? 'nosuch-context' : 'secret' }));
          assert.ok('error' in r && 'error' in twin, `${method} ${label} for uid ${uid} must fail`);
          assert.equal(r.error.code, 'E_PERMISSION');
          // The same words but for the label: nothing says whether it exists.
          assert.equal(r.error.message.replace(`"${label}"`, '"L"'), twin.error.message.replace(`"${exists ? 'nosuch-context' : 'secret'}"`, '"L"'));
        }
        const map = await ask(agent, conn(uid), request('map', { from: label, to: 'host', uids: [0] }));
        assert.ok('error' in map && map.error.code === 'E_PERMISSION' && map.error.message.includes('(or there is none)'));
      }),
      { numRuns: 200 },
    );
  });

  it('lists to each caller exactly the contexts it may use: root all, the owner its own, an [access] user its own', async () => {
    const labels = async (uid: number) => {
      const r = await ask(agent, conn(uid), request('list', {}));
      assert.ok('result' in r);
      return (r.result as P.ListResult).contexts.map((c) => c.label).sort();
    };
    assert.deepEqual(await labels(0), ['hpa-backups', 'secret', 'secret-www', 'shared']);
    assert.deepEqual(await labels(HPA), ['hpa-backups']);
    assert.deepEqual(await labels(ALICE), ['shared']);
    assert.deepEqual(await labels(4242), []);
  });

  it('tells each caller of status only how many contexts it may use; root the whole picture, its requests counted', async () => {
    const status = async (uid: number) => {
      const r = await ask(agent, conn(uid), request('status', {}));
      assert.ok('result' in r, JSON.stringify(r));
      return r.result as P.StatusResult;
    };
    for (const [uid, seen] of [
      [HPA, 1],
      [ALICE, 1],
      [4242, 0],
    ] as const) {
      const s = await status(uid);
      assert.equal(s.full, false);
      assert.equal(s.contexts, seen, `uid ${uid}`);
      assert.equal(s.contextStates, undefined, 'nothing per context for a user');
      assert.equal(s.counters, undefined);
    }
    const before = (await status(0)).latencyMs;
    await ask(agent, conn(ALICE), request('list', {}));
    const root = await status(0);
    assert.equal(root.full, true);
    assert.equal(root.contexts, 4);
    assert.deepEqual(root.contextStates?.map((c) => `${c.label} ${c.state}`).sort(), [
      'hpa-backups not created',
      'secret not created',
      'secret-www not created',
      'shared not created',
    ]);
    assert.equal(root.pinned, 0);
    assert.deepEqual(root.coordinator, { coordinator: 'local' });
    assert.ok(root.latencyMs && before, 'latencies for root');
    assert.equal(root.latencyMs.list?.count, (before.list?.count ?? 0) + 1, 'the list above is counted');
  });

  it('refuses every root-only method to every other uid, before reading its parameters', async () => {
    const rootOnly = [...P.METHODS.values()].filter((m) => m.rootOnly).map((m) => m.name);
    assert.ok(rootOnly.length >= 5, `root-only methods: ${rootOnly.join(', ')}`);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...rootOnly), fc.integer({ min: 1, max: 2 ** 32 - 2 }), fc.anything(), async (method, uid, params) => {
        const r = await ask(agent, conn(uid), request(method, params));
        assert.ok('error' in r);
        assert.deepEqual(r.error, { code: 'E_PERMISSION', message: `${method} is for root only` });
      }),
      { numRuns: 300 },
    );
  });

  it('turns any malformed request into E_INVALID with its id (or null), never an internal error, and names no method it does not serve', async () => {
    const junk = fc.oneof(
      fc.anything(),
      fc.record({
        id: fc.anything(),
        method: fc.oneof(fc.string(), fc.constantFrom('__proto__', 'constructor', 'toString', 'hasOwnProperty')),
        params: fc.anything(),
      }),
      fc.record({ id: fc.integer(), method: fc.constantFrom(...METHOD_NAMES), params: fc.oneof(fc.anything(), fc.dictionary(fc.string(), fc.anything())) }),
    );
    // Methods that reach beyond the handlers (reload and ranges; the kernel): not this test's.
    // Their protocol checks are the same edge, exercised by every other method.
    const beyond = new Set(['reload', 'create', 'ranges', 'rangesImport', 'rangesForget', 'release', 'view', 'resolve', 'resolvePath', 'explain']);
    await fc.assert(
      fc.asyncProperty(junk, fc.constantFrom(0, ALICE), async (data, uid) => {
        const named = (data as { method?: unknown } | null)?.method;
        if (typeof named === 'string' && beyond.has(named) && (uid === 0 || !P.METHODS.get(named)?.rootOnly)) return;
        const r = await ask(agent, conn(uid), data);
        if ('result' in r) {
          // A request that happens to be well-formed (list, status by root...): answered, never thrown.
          return;
        }
        assert.notEqual(r.error.code, 'E_INTERNAL', `${JSON.stringify(data)?.slice(0, 200)}: ${r.error.message}`);
        assert.ok(['E_INVALID', 'E_PERMISSION', 'E_NOT_FOUND', 'E_CONFIG', 'E_UNAVAILABLE'].includes(r.error.code), r.error.code);
        const { id, method } = (data ?? {}) as { id?: unknown; method?: unknown };
        const validId = (typeof id === 'number' && Number.isSafeInteger(id) && id >= 0) || (typeof id === 'string' && id.length >= 1 && id.length <= 64);
        if (validId && typeof method === 'string' && !METHOD_NAMES.includes(method)) {
          assert.equal(r.error.code, 'E_INVALID');
          assert.match(r.error.message, /^unknown method /);
        }
      }),
      { numRuns: 500 },
    );
    assert.ok(logs.length > 0, 'client failures are logged');
    assert.ok(
      logs.every((l) => l.msg.length < 1200),
      'a client failure is logged with a bounded message',
    );
  });

  it('leaves the agent\'s prototypes clean whatever "__proto__" a frame carries (read as the server reads it)', async () => {
    const frames = new P.FrameReader().push(
      [
        '{"type":"request","data":{"id":20,"method":"resolve","params":{"label":"x","__proto__":{"polluted":1}}}}\f',
        '{"type":"request","data":{"id":21,"method":"list","params":{},"__proto__":{"rootOnly":false,"polluted":2}}}\f',
        '{"type":"request","data":{"id":22,"method":"map","params":{"from":"shared","to":"host","constructor":{"prototype":{"polluted":3}}}}}\f',
      ].join(''),
    );
    const replies = [];
    for (const f of frames) replies.push(await ask(agent, conn(ALICE), f.data));
    assert.deepEqual(
      replies.map((r) => ('error' in r ? r.error.code : 'ok')),
      ['E_INVALID', 'E_INVALID', 'E_INVALID'],
    );
    for (const proto of [Object.prototype, Array.prototype, Function.prototype]) {
      assert.equal((proto as Record<string, unknown>).polluted, undefined);
      assert.equal(Object.hasOwn(proto, 'rootOnly'), false);
    }
  });

  it('maps ids between contexts the caller may use: root squash and overflow as userns.d(5) says', async () => {
    const r = await ask(agent, conn(HPA), request('map', { from: 'hpa-backups', to: 'host', uids: [0, 1000, 65535, 65536], gids: [33] }));
    assert.ok('result' in r, JSON.stringify(r));
    const m = r.result as P.MapResult;
    const { uid: overflow } = agent.registry.overflow;
    assert.deepEqual(m.uids, [overflow, 101000, 165535, overflow], "root squashed (the default); past the range the overflow id, never the next context's");
    assert.deepEqual(m.gids, [100033]);
    const back = await ask(agent, conn(0), request('map', { from: 'host', to: 'shared', uids: [200000, 100000] }));
    assert.ok('result' in back);
    assert.deepEqual((back.result as P.MapResult).uids, [0, agent.registry.overflow.uid], "host 200000 is shared's 0; another context's id is nobody there");
  });

  it('answers ranges over a corrupt ranges.json with E_CONFIG and what to do, and explain of an invalid label with E_CONFIG', async () => {
    mkdirSync(tree.state, { recursive: true });
    writeFileSync(join(tree.state, 'ranges.json'), 'not json');
    try {
      const r = await ask(agent, conn(0), request('ranges', {}));
      assert.equal('error' in r && r.error.code, 'E_CONFIG');
      assert.match('error' in r ? r.error.message : '', /ranges\.json is corrupt \(not JSON\): no range will be allocated until it is fixed/);
    } finally {
      rmSync(join(tree.state, 'ranges.json'));
    }
    if (!isRoot) return; // a trusted.* attribute is root's to set
    const dir = join(tree.dir, 'badlabel');
    mkdirSync(dir);
    setXattr(dir, agent.registry.agent.labelXattr, Buffer.from('../x'));
    const e = await ask(agent, conn(0), request('explain', { path: dir }));
    assert.equal('error' in e && e.error.code, 'E_CONFIG', JSON.stringify(e));
  });

  it('answered every request above within the errors its method declares (usernsd-protocol(7))', () => {
    const refusals = logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Failed to serve'));
    assert.ok(refusals.length > 10, 'the properties above were refused many times');
    assert.deepEqual(
      logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith(P.UNDECLARED_ERROR)).map((l) => l.msg),
      [],
    );
  });

  it('made no namespace: every request here was refused or answered from memory, so nothing is mounted under the tree', () => {
    assert.deepEqual(mountsUnder(tree.dir), []);
  });
});

describe('unit: contexts made from inside, at the request edge (SPEC §14)', () => {
  let tree: Tree;
  let agent: Agent;
  const reached: string[] = [];
  // Where each test peer runs, by the first namespace of its chain (the kernel's answer, stood in for).
  const WHERE = new Map<number, string>([
    [11, 'box'],
    [12, 'box.kid'],
    [13, 'other'],
  ]);
  const BOX_ROOT = 400000;
  const within = (uid: number, ns: number): Connection => ({ ...conn(uid), peer: { ...conn(uid).peer, userns: [ns, OWN_USERNS], host: false } });

  before(async function () {
    if (process.getuid!() !== 0) this.skip(); // the record, like a file, must be root's
    tree = makeTree();
    tree.context('box.conf', `[context]\nuid_map = 0 ${BOX_ROOT} 65536\ngid_map = 0 ${BOX_ROOT} 65536\nchildren = 4\n`);
    tree.context('other.conf', '[context]\nuid_map = 0 500000 65536\ngid_map = 0 500000 65536\nchildren = 4\n');
    tree.context('box.file.conf', '[context]\nparent = box\nuid_map = 0 2000 10\ngid_map = 0 2000 10\n');
    mkdirSync(join(tree.state, 'children'), { recursive: true, mode: 0o700 });
    writeFileSync(join(tree.state, 'children', 'box.kid.conf'), '[context]\nparent = box\nuid_map = 0 1000 100\ngid_map = 0 1000 100\n', { mode: 0o600 });
    ({ agent } = await agentOf(tree, {
      createChild: (_peer, label) => {
        reached.push(`create ${label}`);
        return Promise.reject(new UsernsError('E_CONFIG', 'stopped here by the test'));
      },
      forgetChildren: (label) => {
        reached.push(`forget ${label}`);
        return Promise.resolve([]);
      },
    }));
    agent.registry.caller = (p) => (p.host ? p : { ...p, inside: WHERE.get(p.userns[0]) ?? null });
  });
  after(() => {
    agent?.registry.namespaces.close();
    if (!tree) return;
    unmountAll(tree.dir);
    tree.remove();
  });

  const errorOf = async (c: Connection, method: string, params: unknown) => {
    const r = await ask(agent, c, request(method, params));
    return 'error' in r ? r.error : null;
  };

  it("reaches the maker only for the root of the context the caller runs in, under that context, in the caller's own names", async () => {
    reached.length = 0;
    const make = (c: Connection, label: string) => errorOf(c, 'create', { label, uidMap: '0 0 10', gidMap: '0 0 10' });
    assert.equal((await make(within(BOX_ROOT, 11), 'x'))?.message, 'stopped here by the test');
    assert.equal((await make(within(BOX_ROOT, 11), 'kid.y'))?.message, 'stopped here by the test');
    assert.equal((await make(within(BOX_ROOT + 1000, 12), 'z'))?.message, 'stopped here by the test', "box.kid's root inside box.kid, under box.kid");
    assert.equal((await make(within(BOX_ROOT, 12), 'w'))?.code, 'E_PERMISSION', "box's root uid inside box.kid is not box.kid's root");
    assert.deepEqual(reached, ['create box.x', 'create box.kid.y', 'create box.kid.z']);
    reached.length = 0;
    for (const [c, label, code] of [
      [within(BOX_ROOT + 1, 11), 'x', 'E_PERMISSION'], // another uid inside box
      [within(BOX_ROOT, 13), 'x', 'E_PERMISSION'], // box's root uid, but inside other
      [conn(BOX_ROOT), 'box.x', 'E_PERMISSION'], // box's root uid on the host
      [conn(1000), 'box.x', 'E_PERMISSION'],
      [conn(0), 'x', 'E_NOT_FOUND'], // root: a top-level context is a file
      [conn(0), 'nobox.x', 'E_NOT_FOUND'],
    ] as const) {
      const e = await make(c, label);
      assert.equal(e?.code, code, `${label} by ${c.peer.uid} in ${c.peer.userns[0]}: ${e?.message}`);
    }
    assert.deepEqual(reached, []);
    // Outside its subtree, a context that exists and one that does not are refused alike.
    const sibling = await make(within(500000, 13), 'box.x');
    const nothing = await make(within(500000, 13), 'nobox.x');
    assert.equal(sibling?.message.replace('other.box.x', 'X'), nothing?.message.replace('other.nobox.x', 'X'));
  });

  it('releases from inside only what was made from inside, by the root of a context above it; everything else as if it did not exist', async () => {
    reached.length = 0;
    const release = (c: Connection, label: string) => errorOf(c, 'release', { label });
    assert.equal(await release(within(BOX_ROOT, 11), 'kid'), null);
    assert.deepEqual(reached, ['forget box.kid']);
    reached.length = 0;
    const refused = [
      await release(within(BOX_ROOT, 11), 'file'), // made by a file
      await release(within(BOX_ROOT, 11), 'box'), // its own context
      await release(within(BOX_ROOT + 1, 11), 'kid'), // not box's root
      await release(within(500000, 13), 'box.kid'), // another context's root
      await release(conn(1000), 'box.kid'),
    ];
    for (const e of refused) assert.equal(e?.code, 'E_PERMISSION', e?.message);
    assert.deepEqual(reached, []);
    assert.equal(refused[0]?.message.replace('box.file', 'X'), (await release(within(BOX_ROOT, 11), 'nothing'))?.message.replace('box.nothing', 'X'));
  });
});

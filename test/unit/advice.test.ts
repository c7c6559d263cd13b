// Faults said at one edge (agent/advice.ts): kernel/ and coord/ throw facts, the edge gives the
// protocol's code and what to do. The texts admins and tests know are the edge's now; a fault reads
// the same whichever method met it.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { adviceFor, agentError, codeOf, fromFault, said } from '../../agent/advice.ts';
import { ERROR_CODES, UsernsError } from '../../agent/errors.ts';
import { Fault, FAULT_KINDS, FAULT_OBJECTS, refused } from '../../agent/fault.ts';
import { handleRequest } from '../../agent/handlers.ts';
import type { Agent } from '../../agent/handlers.ts';
import type { Connection } from '../../agent/wire/server.ts';
import { OWN_USERNS } from '../../agent/wire/peer.ts';
import { makeTree } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';
import { serviceOf } from '../helpers/service.ts';
import type { LogLine } from '../helpers/service.ts';
import * as P from '../../agent/wire/protocol.ts';
import { unmountAll } from '../helpers/kernel.ts';

const faultArb = fc
  .record({
    kind: fc.constantFrom(...FAULT_KINDS),
    object: fc.constantFrom(...FAULT_OBJECTS),
    fact: fc.string({ minLength: 1, maxLength: 40 }),
    label: fc.option(fc.stringMatching(/^[a-z][a-z0-9-]{0,10}$/), { nil: null }),
    errno: fc.option(fc.constantFrom('EPERM', 'EACCES', 'ENOSPC', 'EINVAL', 'EUSERS', 'ENOENT', 'EBUSY', 'EIO'), { nil: null }),
    step: fc.option(fc.constantFrom('create the user namespace', 'write uid_map', 'write the nested maps', 'pin the namespace', 'release', 'chown', 'forget'), {
      nil: null,
    }),
    subject: fc.option(fc.stringMatching(/^\/[a-z/]{1,20}$/), { nil: null }),
  })
  .map((f) => new Fault(f.kind, f.fact, f));

describe('unit: faults said at one edge (advice.ts)', () => {
  it('gives every fault a code of the protocol and its fact first; advice names only what the fault holds', () => {
    fc.assert(
      fc.property(faultArb, (f) => {
        const e = fromFault(f);
        assert.ok(e instanceof UsernsError);
        assert.ok((ERROR_CODES as readonly string[]).includes(e.code), e.code);
        assert.equal(e.code, codeOf(f));
        assert.equal(e.cause, f, 'the fault is kept as the cause (the log shows it)');
        const advice = adviceFor(f);
        assert.equal(e.message, advice === null ? f.message : `${f.message}: ${advice}`);
        // A fact the advice needs and the fault lacks would print as "null" or "undefined".
        if (advice !== null && f.label !== null && f.subject !== null) assert.doesNotMatch(advice, /\bnull\b|\bundefined\b/, advice);
      }),
    );
  });

  it('says the kernel refusals admins know, as they read before the edge existed', () => {
    const cases: [Fault, string, string][] = [
      [
        refused('namespace', 'create the user namespace', 'ENOSPC', { label: 'kid' }),
        'E_KERNEL',
        'Failed to create the user namespace for context "kid": ENOSPC: the limit of user namespaces is reached: raise /proc/sys/user/max_user_namespaces or release contexts',
      ],
      [
        refused('namespace', 'write uid_map', 'EPERM', { label: 'bad' }),
        'E_KERNEL',
        'Failed to write uid_map for context "bad": EPERM: the kernel refused the map: outside ids must be mapped in the parent namespace, and nested maps are written from inside the parent',
      ],
      [
        new Fault('in-the-way', '/run/userns/secret is a symbolic link, not a pin', { object: 'pin', label: 'secret', subject: '/run/userns/secret' }),
        'E_CONFIG',
        '/run/userns/secret is a symbolic link, not a pin: someone planted it; remove it (the agent never follows it)',
      ],
      [
        new Fault('busy', 'the cgroup of "a" (/sys/fs/cgroup/u/a) holds processes', { object: 'cgroup', label: 'a', step: 'release' }),
        'E_BUSY',
        'the cgroup of "a" (/sys/fs/cgroup/u/a) holds processes: stop them, or release with --kill (writes cgroup.kill)',
      ],
      [
        new Fault('changed', 'the shared pool changed under every one of 50 attempts', { object: 'pool' }),
        'E_UNAVAILABLE',
        'the shared pool changed under every one of 50 attempts: try again',
      ],
      [
        new Fault('changed', '/srv/x changed while the view was being made (it is not the directory that was checked)', { object: 'view' }),
        'E_INVALID',
        '/srv/x changed while the view was being made (it is not the directory that was checked): try again',
      ],
      [
        new Fault('unrecorded', 'cannot record allocations in /var/lib/usernsd/ranges.json: ENOSPC', { object: 'state-file' }),
        'E_INTERNAL',
        'cannot record allocations in /var/lib/usernsd/ranges.json: ENOSPC',
      ],
    ];
    for (const [f, code, text] of cases) {
      const e = fromFault(f);
      assert.equal(e.code, code, text);
      assert.equal(e.message, text);
      assert.equal(said(f), text, 'a log line says it as the reply does');
    }
  });

  it('passes the agent’s own errors through and calls anything else a bug', () => {
    const own = new UsernsError('E_PERMISSION', 'no');
    assert.equal(agentError(own), own);
    assert.equal(agentError(new Error('boom')), null);
    assert.equal(agentError('text'), null);
  });

  describe('at the request edge (handleRequest)', () => {
    let tree: Tree;
    let agent: Agent;
    let logs: LogLine[];
    const root: Connection = {
      peer: { pid: process.pid, uid: 0, gid: 0, groups: [], userns: [OWN_USERNS], host: true },
      inflight: 0,
      framesThisTurn: 0,
      invalid: 0,
    };

    before(async () => {
      tree = makeTree();
      tree.context('a.conf', '[context]\nuid_map = 0 200000 65536\ngid_map = 0 200000 65536\n');
      ({ service: agent, logs } = await serviceOf(tree));
    });
    after(() => {
      agent.registry.namespaces.close();
      unmountAll(tree.dir);
      tree.remove();
    });

    it('answers the same fault with the same code and text whichever method met it', async () => {
      const ns = agent.registry.namespaces;
      const fault = refused('namespace', 'create the user namespace', 'EUSERS', { label: 'a' });
      // The kernel floor, faked at its seams: the namespace maker, and the unpinning of a release.
      Object.assign(ns.maker, { make: () => Promise.reject(fault) });
      Object.assign(ns, { release: () => Promise.reject(fault) });
      try {
        const replies = [];
        for (const [method, params] of [
          ['resolve', { label: 'a' }],
          ['release', { label: 'a' }],
        ] as const)
          replies.push(await handleRequest(agent, root, { id: 1, method, params }));
        const expected = { code: 'E_KERNEL', message: `${fault.message}: the nesting depth limit (32) is reached` };
        for (const r of replies) assert.deepEqual('error' in r ? r.error : r, expected);
        assert.deepEqual(
          logs.filter((l) => l.msg.startsWith(P.UNDECLARED_ERROR)),
          [],
          'E_KERNEL is declared for both (usernsd-protocol(7))',
        );
      } finally {
        // Own properties shadowed the classes' methods: deleted, the methods answer again.
        delete (ns.maker as { make?: unknown }).make;
        delete (ns as { release?: unknown }).release;
      }
    });

    it('logs an answer outside the errors its method declares as a bug, and answers it all the same', async () => {
      const fault = refused('view', 'read the maps', 'EIO');
      // map is answered from memory: it declares no kernel error (usernsd-protocol(7)).
      assert.equal(P.map.errors.has('E_KERNEL'), false);
      Object.assign(agent.registry, {
        view: () => {
          throw fault;
        },
      });
      try {
        const r = await handleRequest(agent, root, { id: 2, method: 'map', params: { from: 'a', to: 'host', uids: [0] } });
        assert.deepEqual('error' in r ? r.error.code : r, 'E_KERNEL');
        const said = logs.filter((l) => l.msg.startsWith(P.UNDECLARED_ERROR));
        assert.equal(said.length, 1, JSON.stringify(said));
        assert.match(said[0].msg, /: map answered E_KERNEL \(Failed to read the maps: EIO\)$/);
        assert.equal(said[0].level, 50, 'an error: a bug to report');
      } finally {
        delete (agent.registry as { view?: unknown }).view;
      }
    });
  });
});

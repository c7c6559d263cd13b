// The request-key upcall end to end (keyctl request2 of a fresh key), against a bare Node start, nfsidmap, and request-key's own floor.
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { invalidateIssuedKeys } from '../agent/kernel/keys.ts';
import { percentile } from '../agent/stats.ts';
import { cleanup, startAgent, USERNSCTL } from '../test/helpers/agent.ts';
import { makeTree } from '../test/helpers/fixtures.ts';

/** ours: the Node handler (usernsctl upcall); c: the C handler (dist/usernsd-upcall), null when not built. */
export type UpcallFigures = { runs: number; ours: number; c: number | null; node: number; nfsidmap: number | null; floor: number };

const C_HANDLER = new URL('../dist/usernsd-upcall', import.meta.url).pathname;

/** Wall time of one command, in ms. */
function time(argv: string[], env?: NodeJS.ProcessEnv): number {
  const t0 = performance.now();
  const r = spawnSync(argv[0], argv.slice(1), { stdio: 'ignore', env });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}`);
  return performance.now() - t0;
}

export async function benchUpcall(runs = 40): Promise<UpcallFigures> {
  const tree = makeTree();
  const rule = `/etc/request-key.d/usernsd-bench-${process.pid}.conf`;
  const nfsidmap = spawnSync('/usr/sbin/nfsidmap', ['-V']).error ? null : '/usr/sbin/nfsidmap';
  try {
    tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    const agent = await startAgent(tree, ['--log-level', 'info']);
    // The floor: request-key with a handler that does nothing but instantiate (keyutils' own tool).
    // "userns:" keys go to one handler or the other: the rule is rewritten before each request
    // (request-key reads its rules afresh each time).
    const c = existsSync(C_HANDLER) ? C_HANDLER : null;
    const rules = (handler: string) =>
      writeFileSync(
        rule,
        [
          `create user userns:* * ${handler} -t 600 --socket ${agent.socket} %k %d`,
          `create user ufloor:* * /bin/keyctl instantiate %k x %S`,
          ...(nfsidmap ? [`create user uid:* * ${nfsidmap} -t 600 %k %d`] : []),
          '',
        ].join('\n'),
      );
    // Each request in a new session keyring: nothing is cached, every one is a real upcall.
    const request = (desc: string) => ['keyctl', 'session', '-', 'keyctl', 'request2', 'user', desc, '', '@s'];
    const ours: number[] = [];
    const cs: number[] = [];
    const node: number[] = [];
    const nfs: number[] = [];
    const floor: number[] = [];
    for (let i = 0; i < runs + 3; i++) {
      rules(`${process.execPath} ${USERNSCTL} upcall`);
      const o = time(request('userns:a'));
      if (c) rules(c);
      const k = c ? time(request('userns:a')) : 0;
      const n = time(['env', '-i', process.execPath, '-e', '0']); // request-key's handlers get a minimal environment too
      const f = time(request(`ufloor:${i}`));
      const x = nfsidmap ? time(request('uid:root@localdomain')) : 0;
      if (i < 3) continue; // warm caches
      ours.push(o);
      cs.push(k);
      node.push(n);
      floor.push(f);
      nfs.push(x);
    }
    await agent.stop();
    const med = (xs: number[]) =>
      percentile(
        [...xs].sort((a, b) => a - b),
        50,
      );
    return { runs, ours: med(ours), c: c ? med(cs) : null, node: med(node), nfsidmap: nfsidmap ? med(nfs) : null, floor: med(floor) };
  } finally {
    rmSync(rule, { force: true });
    // The answers registered in root's persistent keyring would otherwise wait for their expiry.
    try {
      invalidateIssuedKeys(new Set(['a']));
    } catch {
      /* no persistent keyrings */
    }
    await cleanup(tree);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(JSON.stringify(await benchUpcall(), null, 1));

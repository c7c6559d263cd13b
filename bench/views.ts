// Views: making one against mount --bind of the same tree, and walking a 10,000-file tree through
// an idmapped view and through bindfs against the plain tree — each pair in the same run, interleaved.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mountView } from '../agent/cli/viewcmd.ts';
import { bindMount, detach } from '../agent/kernel/sys.ts';
import { cleanup, startAgent, USERNSCTL } from '../test/helpers/agent.ts';
import { makeTree } from '../test/helpers/fixtures.ts';
import { msSince } from './report.ts';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export type ViewBench = {
  runs: number;
  /** In the client's process: the request, the agent's copy and idmap, move_mount. */
  viewInProcess: number;
  bindInProcess: number;
  /** As admins run them: usernsctl view, mount --bind. */
  viewCommand: number;
  bindCommand: number;
  /** mount.usernsd, the C helper mount(8) runs for -t usernsd (null: not built, no C compiler). */
  helperCommand: number | null;
  /** The first view of a map: its user namespace is made then, and kept. */
  firstView: number;
  /**
   * In the client's process, against an agent in a mount namespace of its own (as under systemd):
   * the tree is copied where the caller is by a worker of usernsd-spawner; interleaved with viewInProcess.
   */
  viewOtherNs: number;
  files: number;
  walkPlain: number;
  walkIdmapped: number;
  walkBindfs: number | null;
};

/** `find DIR -printf '%U:%G'`: every entry read and stat-ed, as ls -lR does. */
function walk(dir: string): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('find', [dir, '-printf', '%U:%G\n'], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error(`find ${dir} failed`);
  return msSince(t0);
}

export async function benchViews(runs = 30, dirs = 100, perDir = 100): Promise<ViewBench> {
  const tree = makeTree();
  try {
    tree.context('b.conf', '[context]\nuid_map = 0 6100000 65536\ngid_map = 0 6100000 65536\n[squash]\nmode = root\n');
    tree.context('all.conf', '[context]\nuid_map = 0 6165536 65536\ngid_map = 0 6165536 65536\n[squash]\nmode = all\n');
    const src = join(tree.dir, 'src');
    for (let d = 0; d < dirs; d++) {
      mkdirSync(join(src, `d${d}`), { recursive: true });
      for (let f = 0; f < perDir; f++) writeFileSync(join(src, `d${d}`, `f${f}`), '');
    }
    const agent = await startAgent(tree, ['--log-level', 'info']);
    // The same configuration served by an agent in a mount namespace of its own: every view it makes is the worker's.
    const other = makeTree();
    other.context('b.conf', '[context]\nuid_map = 0 6100000 65536\ngid_map = 0 6100000 65536\n[squash]\nmode = root\n');
    const apart = await startAgent(other, ['--log-level', 'info'], { wrap: ['unshare', '--mount', '--propagation', 'slave'] });
    const dst = (name: string) => {
      const p = join(tree.dir, name);
      mkdirSync(p, { recursive: true });
      return p;
    };
    const a = dst('a');
    const b = dst('b');
    let t0 = process.hrtime.bigint();
    mountView(agent.socket, src, a, { context: 'b' });
    const firstView = msSince(t0);
    detach(a);
    const viewIn: number[] = [];
    const bindIn: number[] = [];
    const viewCmd: number[] = [];
    const bindCmd: number[] = [];
    const viewOther: number[] = [];
    const helperCmd: number[] = [];
    const helper = new URL('../dist/mount.usernsd', import.meta.url).pathname;
    const hasHelper = existsSync(helper);
    mountView(apart.socket, src, a, { context: 'b' }); // its first view starts its spawner
    detach(a);
    for (let i = 0; i < runs + 3; i++) {
      t0 = process.hrtime.bigint();
      mountView(agent.socket, src, a, { context: 'b' });
      const v = msSince(t0);
      detach(a);
      t0 = process.hrtime.bigint();
      mountView(apart.socket, src, a, { context: 'b' });
      const vo = msSince(t0);
      detach(a);
      t0 = process.hrtime.bigint();
      bindMount(src, b);
      const bi = msSince(t0);
      detach(b);
      t0 = process.hrtime.bigint();
      if (spawnSync(process.execPath, [USERNSCTL, '--socket', agent.socket, 'view', '--context', 'b', src, a], { stdio: 'ignore' }).status !== 0)
        throw new Error('usernsctl view failed');
      const vc = msSince(t0);
      detach(a);
      t0 = process.hrtime.bigint();
      if (spawnSync('mount', ['--bind', src, b], { stdio: 'ignore' }).status !== 0) throw new Error('mount --bind failed');
      const bc = msSince(t0);
      detach(b);
      let hc = 0;
      if (hasHelper) {
        t0 = process.hrtime.bigint();
        if (spawnSync(helper, [src, a, '-o', `context=b,socket=${agent.socket}`], { stdio: 'ignore' }).status !== 0) throw new Error('mount.usernsd failed');
        hc = msSince(t0);
        detach(a);
      }
      if (i >= 3) {
        viewIn.push(v);
        bindIn.push(bi);
        viewCmd.push(vc);
        bindCmd.push(bc);
        viewOther.push(vo);
        helperCmd.push(hc);
      }
    }
    // Walks: one view of each kind stays mounted; rounds interleave the three.
    mountView(agent.socket, src, a, { context: 'b' });
    const hasBindfs = spawnSync('bindfs', ['--version']).status === 0;
    const c = dst('c');
    if (hasBindfs) mountView(agent.socket, src, c, { context: 'all' });
    const plain: number[] = [];
    const idm: number[] = [];
    const bfs: number[] = [];
    for (let i = 0; i < 24; i++) {
      // The order turns each round, so no kind always walks right after another.
      const order = [() => plain.push(walk(src)), () => idm.push(walk(a)), ...(hasBindfs ? [() => bfs.push(walk(c))] : [])];
      for (let j = 0; j < order.length; j++) order[(i + j) % order.length]();
      if (i < 3) {
        plain.length = 0;
        idm.length = 0;
        bfs.length = 0;
      } // warm-up rounds
    }
    detach(a);
    if (hasBindfs) spawnSync('umount', [c]);
    await agent.stop();
    await apart.stop();
    await cleanup(other);
    return {
      runs,
      viewInProcess: median(viewIn),
      bindInProcess: median(bindIn),
      viewCommand: median(viewCmd),
      bindCommand: median(bindCmd),
      helperCommand: hasHelper ? median(helperCmd) : null,
      firstView,
      viewOtherNs: median(viewOther),
      files: dirs * perDir,
      walkPlain: median(plain),
      walkIdmapped: median(idm),
      walkBindfs: hasBindfs ? median(bfs) : null,
    };
  } finally {
    await cleanup(tree);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(await benchViews());

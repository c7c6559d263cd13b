// map throughput: ids per second in batches of 10,000 over the socket, and the same mapping in-process.
import { AgentClient } from '../agent/wire/client.ts';
import { loadConfiguration } from '../agent/configure.ts';
import { makeView, mapIds } from '../agent/idmap.ts';
import * as P from '../agent/wire/protocol.ts';
import { cleanup, startAgent } from '../test/helpers/agent.ts';
import { makeTree } from '../test/helpers/fixtures.ts';
import { pinClientCpu, SERVER_CPU } from './resolve.ts';

export type MapFigures = { socket: number; socketParallel: number; inProcess: number; batch: number; clients: number };

export async function benchMap(opts = { batch: 10_000, seconds: 2, clients: 4 }): Promise<MapFigures> {
  const tree = makeTree();
  try {
    tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n[squash]\nmode = root\n');
    tree.context('b.conf', '[context]\nuid_map = 0 200000 65536\ngid_map = 0 200000 65536\n');
    const ids = Array.from({ length: opts.batch }, (_, i) => (i * 7) % 70000); // some unmappable, some squashed
    // In-process: the pure core alone, the same views the agent builds.
    const cfg = loadConfiguration(tree.config, { record: true, systemIds: () => [] });
    const view = (l: string) => makeView(l, cfg.contexts.get(l)!.squash, cfg.hostMaps.get(l)!.uid, cfg.hostMaps.get(l)!.gid);
    const [a, b] = [view('a'), view('b')];
    const overflow = { uid: 65534, gid: 65534 };
    let n = 0;
    let end = performance.now() + opts.seconds * 1000;
    while (performance.now() < end) {
      mapIds(a, b, 'uid', ids, overflow);
      n += ids.length;
    }
    const inProcess = n / opts.seconds;

    pinClientCpu();
    const agent = await startAgent(tree, ['--log-level', 'info'], { wrap: ['taskset', '-c', SERVER_CPU] });
    const run = async (clients: number) => {
      const cs = await Promise.all(Array.from({ length: clients }, () => AgentClient.connect(agent.socket)));
      let count = 0;
      const stop = performance.now() + opts.seconds * 1000;
      await Promise.all(
        cs.map(async (c) => {
          while (performance.now() < stop) {
            const r = await c.call(P.map, { from: 'a', to: 'b', uids: ids });
            if (r.uids.length !== ids.length) throw new Error('short answer');
            count += ids.length;
          }
        }),
      );
      for (const c of cs) c.close();
      return count / opts.seconds;
    };
    await run(1); // warm-up
    const socket = await run(1);
    const socketParallel = await run(opts.clients);
    end = 0;
    await agent.stop();
    return { socket, socketParallel, inProcess, batch: opts.batch, clients: opts.clients };
  } finally {
    await cleanup(tree);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(JSON.stringify(await benchMap(), null, 1));

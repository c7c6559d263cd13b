// usernsctl ranges and check-config --etcd: allocations, local or shared through etcd.
import type { AgentConfig } from '../../config/types.ts';
import { EXIT, parseCommand, printTable, UsageError } from './args.ts';
import type { Globals, Io } from './args.ts';
import { callAgent } from '../wire/client.ts';
import { said } from '../advice.ts';
import * as P from '../wire/protocol.ts';

export async function rangesCmd(args: string[], g: Globals, io: Io): Promise<number> {
  const { positionals } = parseCommand(args, {}, g);
  const [sub, ...rest] = positionals;
  if (sub === 'import' && rest.length === 0) {
    const r = await callAgent(g.socket, P.rangesImport, {});
    io.out(g.json ? JSON.stringify(r) : `imported ${r.imported} allocation(s) into the shared pool`);
    return EXIT.OK;
  }
  if (sub === 'forget' && rest.length === 1) {
    const r = await callAgent(g.socket, P.rangesForget, { label: rest[0] });
    io.out(g.json ? JSON.stringify(r) : r.forgotten ? `forgot ${r.label}: its range is free` : `${r.label} had no recorded range`);
    return EXIT.OK;
  }
  if (sub !== undefined) throw new UsageError('ranges takes nothing, "import", or "forget LABEL"');
  const r = await callAgent(g.socket, P.ranges, {});
  if (g.json) {
    io.out(JSON.stringify(r));
    return EXIT.OK;
  }
  if (r.ranges.length === 0) {
    io.out(`no ranges recorded (coordinator ${r.coordinator})`);
    return EXIT.OK;
  }
  printTable(io, [
    ['LABEL', 'KIND', 'IDS', 'DECIDED', 'BY', 'AT'],
    ...r.ranges.map((x) => [x.label, x.kind, x.ranges.map((i) => `${i.start}-${i.end - 1}`).join(','), x.decided, x.by ?? '-', x.at ?? '-']),
  ]);
  return EXIT.OK;
}

/** check-config --etcd: one read of the shared pool, as the agent would make it. */
export async function checkEtcd(agent: AgentConfig, io: Io): Promise<boolean> {
  if (agent.coordinator !== 'etcd') return (io.err(`${agent.file}: [pool] coordinator is local: no etcd to test`), false);
  const { EtcdCoordinator } = await import('../coord/etcd.ts');
  const coord = new EtcdCoordinator(agent.etcd);
  try {
    io.out(`etcd ${agent.etcd.endpoints.join(', ')}: answers; ${await coord.survey()}`);
    return true;
  } catch (err) {
    io.err(`etcd: ${said(err)}`);
    return false;
  } finally {
    await coord.close();
  }
}

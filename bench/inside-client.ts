// A client for bench/inside.ts, run on the host or inside a context (nsenter): each line on stdin is
// one job, answered with one line of JSON on stdout.
//   resolve LABEL N    N resolves, a new connection each (as the upcall makes them) -> {"ms": total}
//   create NAME MAP    one create of NAME with MAP as uid and gid map -> {"ms": one}
import { createInterface } from 'node:readline';
import { callAgent } from '../agent/wire/client.ts';
import * as P from '../agent/wire/protocol.ts';

const socket = process.argv[2];
for await (const line of createInterface({ input: process.stdin })) {
  const [job, a, ...rest] = line.split(' ');
  const t0 = performance.now();
  if (job === 'resolve') for (let i = 0; i < Number(rest[0]); i++) await callAgent(socket, P.resolve, { label: a });
  else if (job === 'create') {
    const map = rest.join(' ');
    await callAgent(socket, P.create, { label: a, uidMap: map, gidMap: map });
  } else throw new Error(`unknown job ${line}`);
  process.stdout.write(`${JSON.stringify({ ms: performance.now() - t0 })}\n`);
}

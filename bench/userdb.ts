// Names through userdb: `getent passwd ID` answered by the agent (nss-systemd -> Varlink) against
// `getent passwd ID` for a user of /etc/passwd, interleaved; and the lookup's own latency with 16
// clients asking at once on the agent's socket.
import { spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { existsSync, rmSync } from 'node:fs';
import { cleanup, startAgent } from '../test/helpers/agent.ts';
import { makeTree } from '../test/helpers/fixtures.ts';
import { pct } from './report.ts';

export type UserdbBench = {
  runs: number;
  getentOurs: number;
  getentFiles: number;
  filesUser: string;
  clients: number;
  lookups: number;
  p50: number;
  p99: number;
  perSecond: number;
};

function getent(key: string): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('getent', ['passwd', key], { stdio: ['ignore', 'ignore', 'ignore'] });
  if (r.status !== 0) throw new Error(`getent passwd ${key}: exit ${r.status}`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** One client: sequential GetUserRecord calls on one connection for `ms`, each latency kept. */
function client(path: string, service: string, uid: number, ms: number, out: number[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    const end = Date.now() + ms;
    let t0 = 0n;
    let buf = '';
    const ask = () => {
      t0 = process.hrtime.bigint();
      s.write(JSON.stringify({ method: 'io.systemd.UserDatabase.GetUserRecord', parameters: { uid, service } }) + '\0');
    };
    s.setEncoding('utf8');
    s.on('connect', ask);
    s.on('error', reject);
    s.on('data', (d: string) => {
      buf += d;
      while (buf.includes('\0')) {
        const reply = buf.slice(0, buf.indexOf('\0'));
        buf = buf.slice(buf.indexOf('\0') + 1);
        if (!reply.includes('"record"')) return reject(new Error(`no record: ${reply}`));
        out.push(Number(process.hrtime.bigint() - t0) / 1e6);
        if (Date.now() < end) ask();
        else {
          s.end();
          resolve();
        }
      }
    });
  });
}

export async function benchUserdb(runs = 200, clients = 16, seconds = 3): Promise<UserdbBench> {
  const service = `io.usernsd.bench${process.pid}`;
  const path = `/run/systemd/userdb/${service}`;
  const tree = makeTree(`userdb = yes\nuserdb_socket = ${path}\n`);
  try {
    tree.context('b.conf', '[context]\nuid_map = 0 6400000 65536\ngid_map = 0 6400000 65536\n');
    const agent = await startAgent(tree, ['--log-level', 'info']);
    const ours = String(6401000);
    const filesUser = 'nobody'; // near the end of Debian's /etc/passwd: files reads most of it
    const o: number[] = [];
    const f: number[] = [];
    for (let i = 0; i < runs + 10; i++) {
      const a = getent(ours);
      const b = getent(filesUser);
      if (i >= 10) {
        o.push(a);
        f.push(b);
      }
    }
    const lat: number[] = [];
    const t0 = Date.now();
    await Promise.all(Array.from({ length: clients }, () => client(path, service, 6401000, seconds * 1000, lat)));
    const elapsed = (Date.now() - t0) / 1000;
    await agent.stop();
    return {
      runs,
      getentOurs: pct(o, 0.5),
      getentFiles: pct(f, 0.5),
      filesUser,
      clients,
      lookups: lat.length,
      p50: pct(lat, 0.5),
      p99: pct(lat, 0.99),
      perSecond: lat.length / elapsed,
    };
  } finally {
    await cleanup(tree);
    if (existsSync(path)) rmSync(path);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(await benchUserdb());

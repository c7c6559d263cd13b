// usernsctl kept inside a namespace: started once there (by nsenter, as runInside starts a command),
// it runs usernsctl's own code (runCli) for each line of arguments it reads on stdin, each call on a
// new connection as a fresh process makes one, and answers each with one line of JSON: code, out, err.
// The kernel sees the same caller as it would for a usernsctl process started there.
import { createInterface } from 'node:readline';
import { runCli } from '../../agent/cli/main.ts';

for await (const line of createInterface({ input: process.stdin })) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(JSON.parse(line) as string[], { out: (s) => out.push(s), err: (s) => err.push(s) });
  process.stdout.write(`${JSON.stringify({ code, out: out.map((l) => `${l}\n`).join(''), err: err.map((l) => `${l}\n`).join('') })}\n`);
}

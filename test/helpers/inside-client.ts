// usernsctl kept inside a namespace: started once there (by nsenter, as runInside starts a command),
// it runs usernsctl's own code (usernsctlHere) for each line of arguments it reads on stdin, each
// call on a new connection as a fresh process makes one, and answers each with one line of JSON:
// code, out, err. The kernel sees the same caller as it would for a usernsctl process started there.
import { createInterface } from 'node:readline';
import { usernsctlHere } from './agent.ts';

for await (const line of createInterface({ input: process.stdin })) {
  process.stdout.write(`${JSON.stringify(await usernsctlHere(JSON.parse(line) as string[]))}\n`);
}

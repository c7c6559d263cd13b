// The view worker: run by the agent through `nsenter --mount=` in a caller's mount namespace, it
// copies one tree there with the view's idmap and hands the descriptor back (see views.ts
// treeInWorker). fd 4: the view's user namespace; fd 5: the socket to the agent.
// Arguments: SRC DEV INO ro|rw.
import { UsernsError } from '../errors.ts';
import { copyTree } from './views.ts';
import { sendWithFds } from './unixsock.ts';

const USERNS_FD = 4;
const AGENT_FD = 5;

const [src, dev, ino, mode] = process.argv.slice(2);
try {
  const r = copyTree(src!, { dev: Number(dev), ino: Number(ino) }, USERNS_FD, mode === 'ro');
  if ('fd' in r) sendWithFds(AGENT_FD, Buffer.from(JSON.stringify({ fd: true })), [r.fd]);
  else sendWithFds(AGENT_FD, Buffer.from(JSON.stringify(r)), []);
} catch (err) {
  const code = err instanceof UsernsError ? err.code : 'E_KERNEL';
  sendWithFds(AGENT_FD, Buffer.from(JSON.stringify({ code, message: (err as Error).message })), []);
}

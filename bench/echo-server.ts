// The transport's floor for the resolve benchmark: a node-ipc 14 server with the agent's guarded
// configuration that answers every request with a canned reply of the same size and shape as the
// agent's (argv[3], JSON), doing no work. Imports node-ipc
// directly on purpose: it is the baseline, not part of the agent.
// @ts-expect-error node-ipc 14 ships no type declarations
import { IPCModule } from 'node-ipc';
import { FRAME_DELIMITER, LIMITS, REPLY_TYPE, REQUEST_TYPE } from '../agent/wire/protocol.ts';

const path = process.argv[2];
const canned: unknown = JSON.parse(process.argv[3] ?? 'null');
const ipc = new IPCModule();
Object.assign(ipc.config, {
  parser: 'guarded',
  encoding: 'utf8',
  delimiter: FRAME_DELIMITER,
  maxMessageSize: LIMITS.MAX_MESSAGE_BYTES,
  maxPendingBytes: LIMITS.MAX_PENDING_BYTES,
  messageTimeout: LIMITS.MESSAGE_TIMEOUT_MS,
  maxConnections: LIMITS.MAX_CONNECTIONS,
  maxEventNameLength: 64,
  silent: true,
  logger: () => {},
  socketRoot: path.slice(0, path.lastIndexOf('/') + 1),
  secureSocketRoot: false,
  unlink: true,
  readableAll: true,
  writableAll: true,
});
ipc.serve(path, () => process.stdout.write('ready\n'));
ipc.server.on(REQUEST_TYPE, (data: { id: number; params: unknown }, socket: unknown) => {
  ipc.server.emit(socket, REPLY_TYPE, { id: data.id, result: canned ?? data.params });
});
ipc.server.start();
process.on('SIGTERM', () => {
  ipc.server.stop();
  process.exit(0);
});

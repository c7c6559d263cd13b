// The thread config/readahead.ts starts: reads a listing's files in order, as readConfigFile reads
// them, and hands them over in batches on a port. Files the parsing thread has passed (it reads a
// file itself when the batch holding it has not come yet) are not read.
import { workerData } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { readConfigFile } from './ini.ts';
import type { ReadFile } from './ini.ts';
import type { ConfigError } from './types.ts';

const data = workerData as { files: string; port: MessagePort; asked: SharedArrayBuffer; batch: number };
/** The listing, its names joined by NUL. */
const files = data.files === '' ? [] : data.files.split('\0');
/** The place in `files` of the next file the parsing thread asks for. */
const asked = new Int32Array(data.asked);

for (let i = 0; i < files.length;) {
  i = Math.max(i, Atomics.load(asked, 0));
  const at = i;
  const reads: (ReadFile | ConfigError)[] = [];
  for (; i < files.length && reads.length < data.batch; i++) reads.push(readConfigFile(files[i]));
  if (reads.length > 0) data.port.postMessage({ at, reads });
}

// A long listing of context files read on a second thread while the agent's thread parses it (a start).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { MessagePort, Worker } from 'node:worker_threads';
import type { ReadFile } from './ini.ts';
import type { ConfigError } from './types.ts';

/**
 * A listing this long is read on a second thread. Opening a file is most of the cost of reading a
 * small one (about 17 µs each on the machines measured: a plain read loop takes 1.1 s for 65,535
 * files), and the parse of each file can go on meanwhile. Below this, starting the thread (about
 * 30 ms, on the other core) costs more than it saves.
 */
export const THREAD_READ_MIN_FILES = 2048;

/** Files handed over at a time: few enough that parsing starts early, enough that a message costs little per file. */
const BATCH = 256;

/**
 * Files read ahead (off the event loop by the agent at a reload, or on a thread of their own at a
 * start), by path, each with its stamp: what a reader has, or undefined for the caller to read.
 */
export type ReadAhead = { get(file: string): ReadFile | ConfigError | undefined };

// Not `import from 'node:worker_threads'`: the module is loaded only by a load that starts a thread
// (then once: get() asks it for every file).
let workerThreads: typeof import('node:worker_threads') | undefined;
const threads = () => (workerThreads ??= process.getBuiltinModule('node:worker_threads'));

const WORKER = new URL(import.meta.url.endsWith('.ts') ? './readworker.ts' : './readworker.js', import.meta.url);

/** Threads started in this process, and files they handed over (a test's evidence that a load read on one). */
export const threadCounts = { started: 0, handed: 0 };

type Batch = { readonly at: number; readonly reads: readonly (ReadFile | ConfigError)[] };

/**
 * `files` read in their order by a worker thread, each as readConfigFile reads it (the checks on the
 * opened descriptor, its stamp), and taken here in the same order. This thread never waits for it:
 * a file whose batch has not come yet is left to the caller to read (undefined), and the thread
 * skips the files the caller has passed. So a thread that is slow to start, or never does, costs
 * nothing but itself. A file asked out of order is left to the caller too, as is every file once
 * closed. close() when done: the thread ends.
 */
export class ThreadReads implements ReadAhead {
  private readonly files: readonly string[];
  private worker: Worker | null;
  private readonly port: MessagePort;
  /** The place in `files` of the next file asked for, shared with the thread. */
  private readonly asked: Int32Array;
  private next = 0;
  private batch: Batch = { at: 0, reads: [] };
  /** Settles when the thread has ended, by itself once it has read every file or when closed. */
  readonly ended: Promise<void>;

  private constructor(files: readonly string[], worker: Worker, port: MessagePort, asked: Int32Array) {
    this.files = files;
    this.worker = worker;
    this.port = port;
    this.asked = asked;
    this.ended = new Promise((resolve) => worker.once('exit', () => resolve()));
  }

  /** A reader of a listing long enough to be read on a thread (THREAD_READ_MIN_FILES); null for a shorter one, as when none can start. */
  static forListing(files: readonly string[]): ThreadReads | null {
    return files.length >= THREAD_READ_MIN_FILES ? ThreadReads.start(files) : null;
  }

  /** A reader of `files` on a thread of its own; null when none can be started (the caller reads them). */
  static start(files: readonly string[]): ThreadReads | null {
    if (!existsSync(fileURLToPath(WORKER))) return null; // a broken install: the thread's program is missing
    const { MessageChannel, Worker } = threads();
    const asked = new SharedArrayBuffer(4);
    const { port1, port2 } = new MessageChannel();
    try {
      // The listing as one string, its names joined by NUL (no path holds one): one copy, not 65,535.
      // No execArgv: the agent's flags are not the thread's (--input-type, say, would stop it).
      const worker = new Worker(WORKER, {
        workerData: { files: files.join('\0'), port: port2, asked, batch: BATCH },
        transferList: [port2],
        execArgv: [],
      });
      worker.unref(); // it never keeps the agent running
      worker.on('error', () => {}); // it reads nothing more, and the caller reads the rest
      threadCounts.started++;
      return new ThreadReads(files, worker, port1, new Int32Array(asked));
    } catch {
      port1.close();
      return null;
    }
  }

  get(file: string): ReadFile | ConfigError | undefined {
    if (this.worker === null || this.files[this.next] !== file) return undefined;
    const i = this.next++;
    Atomics.store(this.asked, 0, this.next);
    // Batches come in order, each beginning where the thread was (or where this one was asking, if further).
    while (i >= this.batch.at + this.batch.reads.length) {
      const m = threads().receiveMessageOnPort(this.port);
      if (!m) return undefined; // not read yet
      this.batch = m.message as Batch;
    }
    if (i < this.batch.at) return undefined; // passed by before the thread got to it
    threadCounts.handed++;
    return this.batch.reads[i - this.batch.at];
  }

  /** The thread told to end; the promise settles once it has (a caller that reads on need not wait). */
  async close(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    this.worker = null;
    this.batch = { at: 0, reads: [] };
    this.port.close();
    await worker.terminate();
  }
}

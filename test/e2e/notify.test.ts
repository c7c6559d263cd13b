// Readiness for init: sd_notify READY=1 only once the socket listens and the eager contexts exist; RELOADING and STOPPING around reload and stop.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { PYTHON, rootAgentSuite, startAgent } from '../helpers/agent.ts';
import type { Tree } from '../helpers/fixtures.ts';

const LISTENER = new URL('./notify_listener.py', import.meta.url).pathname;

type Note = { msg: string; socketAccepts: true | string; pinned: string[] };

describe('e2e: readiness notification (root)', function () {
  let tree: Tree;
  rootAgentSuite((t) => (tree = t)); // the agent pins namespaces: root

  it('sends READY=1 after the socket listens and eager contexts are pinned, then RELOADING/READY and STOPPING', async () => {
    tree.context('e1.conf', '[context]\nuid_map = 0 100000 1000\ngid_map = 0 100000 1000\ncreate = eager\n');
    tree.context('e2.conf', '[context]\nparent = e1\nuid_map = 0 0 100\ngid_map = 0 0 100\ncreate = eager\n');
    tree.context('lazy.conf', '[context]\nuid_map = 0 200000 1000\ngid_map = 0 200000 1000\n');
    const notifySocket = join(tree.dir, 'notify');
    const listener = spawn(PYTHON, [LISTENER, notifySocket, join(tree.dir, 'usernsd.sock'), tree.pins], { stdio: ['ignore', 'pipe', 'inherit'] });
    const notes: Note[] = [];
    let listening!: () => void;
    const ready = new Promise<void>((r) => {
      listening = r;
    });
    // The listener looks at the agent when a note arrives; the test waits for that look before it
    // moves the agent on, or a slow listener would see the next state (a stopped socket) instead.
    let noted = () => {};
    const notesSeen = (n: number) =>
      new Promise<void>((r) => {
        noted = () => {
          if (notes.length >= n) r();
        };
        noted();
      });
    let buf = '';
    listener.stdout.setEncoding('utf8');
    listener.stdout.on('data', (d: string) => {
      buf += d;
      for (let at = buf.indexOf('\n'); at >= 0; at = buf.indexOf('\n')) {
        const line = JSON.parse(buf.slice(0, at)) as Note & { listening?: boolean };
        buf = buf.slice(at + 1);
        if (line.listening) listening();
        else {
          notes.push(line);
          noted();
        }
      }
    });
    const done = new Promise((r) => listener.on('exit', r));
    try {
      await ready;
      const agent = await startAgent(tree, ['--log-level', 'info'], { env: { NOTIFY_SOCKET: notifySocket } });
      await notesSeen(1);
      agent.child.kill('SIGHUP');
      await agent.waitForLog((l) => l.msg === 'Reloaded configuration');
      await notesSeen(3);
      assert.equal(await agent.stop(), 0);
      await done;
    } finally {
      listener.kill();
    }
    const kinds = notes.map((n) => n.msg.split('\n')[0]);
    assert.deepEqual(kinds, ['READY=1', 'RELOADING=1', 'READY=1', 'STOPPING=1']);
    const first = notes[0];
    assert.equal(first.socketAccepts, true, 'the socket listens when READY=1 is sent');
    assert.deepEqual(first.pinned, ['e1', 'e2'], 'the eager contexts are pinned when READY=1 is sent, the lazy one is not');
    assert.match(first.msg, /\nMAINPID=\d+\n/);
    assert.match(first.msg, /\nSTATUS=serving 3 context\(s\) on /);
  });

  it('a supervisor that waited for READY=1 only (start-stop-daemon --notify-await) and went: said once, no warning at each reload and stop', async () => {
    const notifySocket = join(tree.dir, 'notify-once');
    // Takes one datagram, then removes its socket and exits, as start-stop-daemon does.
    const once = `import socket, os, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); print("up", flush=True)
s.recv(4096); s.close(); os.unlink(sys.argv[1])`;
    const listener = spawn(PYTHON, ['-c', once, notifySocket], { stdio: ['ignore', 'pipe', 'inherit'] });
    const gone = new Promise((r) => listener.on('exit', r));
    await new Promise<void>((r) => listener.stdout.once('data', () => r()));
    const agent = await startAgent(tree, ['--log-level', 'info'], { env: { NOTIFY_SOCKET: notifySocket } });
    await gone;
    for (let i = 0; i < 3; i++) {
      agent.child.kill('SIGHUP');
      await agent.waitForLog((l) => l.msg === 'Reloaded configuration' && agent.logs.filter((x) => x.msg === 'Reloaded configuration').length > i);
    }
    assert.equal(await agent.stop(), 0);
    assert.deepEqual(
      agent.logs.filter((l) => /notify/i.test(l.msg)).map((l) => l.msg),
      ["The supervisor's notify socket is gone (it waited for readiness only): no further notifications"],
    );
  });
});

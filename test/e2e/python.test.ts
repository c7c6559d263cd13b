// Interoperability: a client in Python's standard library, written from usernsd-protocol(7), resolves a label.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { PYTHON, rootAgentSuite, startAgent } from '../helpers/agent.ts';
import type { RunningAgent } from '../helpers/agent.ts';
import type { Tree } from '../helpers/fixtures.ts';

const SCRIPT = new URL('./resolve_client.py', import.meta.url).pathname;

describe('e2e: a Python client with no Node code (root)', function () {
  let tree: Tree;
  let agent: RunningAgent;
  rootAgentSuite((t) => (tree = t)); // the agent pins namespaces: root

  it('resolves a label, then gets a coded error for an unknown one', async () => {
    tree.context('a.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n');
    agent = await startAgent(tree);
    const py = (label: string) => spawnSync(PYTHON, [SCRIPT, agent.socket, label], { encoding: 'utf8', timeout: 15000 });
    const first = py('a');
    assert.equal(first.status, 0, first.stderr);
    const [path, ino, how] = first.stdout.trim().split(' ');
    assert.equal(path, `${tree.pins}/a`);
    assert.equal(Number(ino), statSync(path).ino, "the inode the Python client was told is the pin's");
    assert.equal(how, 'created');
    assert.equal(py('a').stdout.trim().split(' ')[2], 'existing');
    const missing = py('zz');
    assert.equal(missing.status, 1);
    assert.match(missing.stdout, /^E_NOT_FOUND: no context "zz"/);
  });
});

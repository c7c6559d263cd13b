// The agent's own Service (what the request handlers are given) on a configuration and nothing else,
// in the test's process: what the agent answers without the kernel. The changes the lifecycle runs
// (reload, contexts made and forgotten from inside) are the test's; the range pool is this host's
// own. Every log line is kept, parsed, for the test to read.
import assert from 'node:assert/strict';
import pino from 'pino';
import { loadConfiguration } from '../../agent/configure.ts';
import { METHOD_NAMES } from '../../agent/handlers.ts';
import { Metrics } from '../../agent/metrics.ts';
import { People } from '../../agent/people.ts';
import { rangePool } from '../../agent/rangepool.ts';
import { Registry } from '../../agent/registry.ts';
import { Service } from '../../agent/service.ts';
import type { Changes } from '../../agent/service.ts';
import { Views } from '../../agent/views.ts';
import { UpcallWatch } from '../../agent/wiring.ts';
import { testNss } from './fixtures.ts';
import type { Tree } from './fixtures.ts';

export type LogLine = { level: number; msg: string } & Record<string, unknown>;

export async function serviceOf(tree: Tree, changes: Partial<Changes> = {}): Promise<{ service: Service; logs: LogLine[] }> {
  const config = loadConfiguration(tree.config, { record: false, systemIds: () => [], nss: testNss });
  assert.deepEqual(config.errors, [], 'the test configuration loads');
  const logs: LogLine[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) });
  const registry = new Registry(config);
  const unreachable = () => {
    throw new Error('not in an in-process test');
  };
  const people = new People();
  people.rebuild(registry.all());
  const service = new Service({
    log,
    registry,
    views: new Views(config.agent.state, registry.namespaces.maker),
    metrics: new Metrics(METHOD_NAMES, {
      contextStates: () => ({}),
      connections: () => 0,
      configErrors: () => 0,
      views: () => ({ recorded: 0, namespaces: 0 }),
      coordinator: () => null,
    }),
    pool: (await rangePool(config))(log, { config: () => registry.configuration, reload: unreachable, pinned: () => [], systemIds: () => [] }),
    people,
    upcall: new UpcallWatch(log),
    connections: () => 0,
    changes: { reload: unreachable, createChild: unreachable, forgetChildren: unreachable, ...changes },
  });
  return { service, logs };
}

// The metrics exposition, built in-process with the agent's own Metrics class and checked by
// Prometheus' own linter (promtool check metrics, from Debian's prometheus package: .ci/run
// extracts it). Lint findings are what a Prometheus admin would see as warnings in their tooling.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Metrics } from '../../agent/metrics.ts';
import { METHODS } from '../../agent/wire/protocol.ts';

function promtool(): string | null {
  const r = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

function exposition(): Promise<string> {
  const source = {
    contextStates: () => ({ 'not created': 1, pinned: 2, drift: 0, stale: 0, orphan: 0 }),
    connections: () => 3,
    configErrors: () => 0,
    views: () => ({ recorded: 1, namespaces: 1 }),
    coordinator: () => ({ reachable: true, waiting: 0 }),
  };
  const m = new Metrics([...METHODS.keys()], source);
  // Every kind of event once, so that every family has series to lint.
  m.request('resolve', null, 0.3);
  m.request('resolve', 'E_NOTFOUND', 0.2);
  m.request('bogus', 'E_INVALID', 0.1);
  m.created(2);
  m.released();
  m.reloaded('partial');
  m.upcall(true);
  m.userdbLookup('user', 'found');
  m.view('idmapped', 'mount');
  return m.text();
}

describe('unit: metrics exposition', () => {
  it('passes promtool check metrics: no _total gauges, units and types as Prometheus names them', async function () {
    const tool = promtool();
    if (!tool) {
      if (process.env.CI) throw new Error("promtool is missing: .ci/run extracts it from Debian's prometheus package");
      this.skip();
    }
    const text = await exposition();
    assert.match(text, /^usernsd_requests_total\{method="resolve",code="ok"\} 1$/m, 'the exposition has the request series');
    const r = spawnSync(tool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '', 'promtool finds nothing to say');
    assert.equal(r.status, 0);
  });

  it('keeps the process and Node figures an admin dashboards on, under lint-clean names', async () => {
    const text = await exposition();
    for (const name of [
      'usernsd_process_resident_memory_bytes',
      'usernsd_process_cpu_seconds_total',
      'usernsd_nodejs_eventloop_lag_seconds',
      'usernsd_nodejs_heap_size_used_bytes',
    ]) {
      assert.match(text, new RegExp(`^${name}(\\{[^}]*\\})? `, 'm'), name);
    }
    // The loop's delay histogram needs a timer that would wake an idle agent 100 times a second: not kept.
    assert.doesNotMatch(text, /^usernsd_nodejs_eventloop_lag_(min|max|mean|stddev|p50|p90|p99)_seconds/m);
    // The per-type gauge has a series only for the kinds of handle this process holds at the
    // moment (none, at times, in a long test run): its family is what must be there.
    assert.match(text, /^# TYPE usernsd_nodejs_active_handles gauge$/m);
    for (const line of text.split('\n').filter((l) => l.startsWith('# TYPE '))) {
      const [, , name, type] = line.split(' ');
      if (type !== 'counter') assert.ok(!name.endsWith('_total'), `${name} is a ${type}: only counters end in _total`);
    }
  });

  it('counts the process CPU from its start, though prom-client is loaded at the first scrape', async () => {
    const m = new Metrics([], {
      contextStates: () => ({}),
      connections: () => 0,
      configErrors: () => 0,
      views: () => ({ recorded: 0, namespaces: 0 }),
      coordinator: () => null,
    });
    m.created(3); // counted before prom-client is there
    const spent = process.cpuUsage();
    const text = await m.text();
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    assert.ok(
      value('usernsd_process_cpu_seconds_total') >= (spent.user + spent.system) / 1e6,
      `CPU since the start: ${value('usernsd_process_cpu_seconds_total')}`,
    );
    assert.ok(value('usernsd_process_cpu_user_seconds_total') >= spent.user / 1e6);
    assert.equal(value('usernsd_namespace_create_duration_seconds_count'), 1);
    assert.match(text, /^usernsd_namespaces_total\{event="created"\} 1$/m);
  });
});

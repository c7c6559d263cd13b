// The shared pool kept one key per label, against a real etcd (one member on loopback; no root):
// coordinators in this process, one per host name, deciding in any order and at once. After every
// step the keys are read back from etcd and checked: the index disjoint, every entry's intervals
// indexed under its label, no index key without its entry, every answer the pool's. Then the
// migration of layout 1's document while an agent of layout 1 still writes it, hostile keys, and
// the words an admin reads.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Etcd3 } from 'etcd3';
import { EtcdCoordinator } from '../../agent/coord/etcd.ts';
import { allocateRange, mergeIntervals, rangeProblem } from '../../agent/coord/allocate.ts';
import { parseDoc } from '../../agent/coord/pooldoc.ts';
import { entryIntervals, idsKey, migrationKeys, parseEntry, parseIndex, POOL_MARKER } from '../../agent/coord/poolkeys.ts';
import type { PoolEntry } from '../../agent/coord/poolkeys.ts';
import type { Pool } from '../../config/types.ts';
import { hasEtcd, startCluster } from '../helpers/etcd.ts';
import { Fault } from '../../agent/fault.ts';
import { fromFault } from '../../agent/advice.ts';
import type { Cluster } from '../helpers/etcd.ts';

const POOL: Pool = { start: 1_000_000, end: 1_000_000 + 64 * 4096 - 1, size: 4096 };
const LABELS = Array.from({ length: 24 }, (_, i) => `l${i}`);

describe('integration: the shared pool, one key per label, on a real etcd', function () {
  this.timeout(300_000);
  let cluster: Cluster;
  let client: Etcd3;
  let n = 0;
  const open: EtcdCoordinator[] = [];
  const newPrefix = () => `/usernsd-pool-${process.pid}-${++n}/`;
  const coord = (prefix: string, host: string, beforeWrite?: () => Promise<void>) => {
    const c = new EtcdCoordinator({ endpoints: cluster.endpoints, prefix, name: host, timeoutMs: 5000, ca: null, cert: null, key: null }, { beforeWrite });
    open.push(c);
    return c;
  };

  before(async function () {
    if (!hasEtcd) {
      if (process.env.CI) throw new Error('etcd and etcdctl are missing: .ci/run installs etcd-server and etcd-client');
      this.skip();
    }
    cluster = await startCluster(1);
    client = new Etcd3({ hosts: cluster.endpoints });
  });
  afterEach(async () => {
    for (const c of open.splice(0)) await c.close();
  });
  after(async () => {
    client?.close();
    await cluster?.stop();
  });

  /**
   * Everything under the prefix, checked: the marker in place, every valid entry's intervals each an
   * index key naming it with the same end, no two index keys overlapping, no index key whose label
   * does not hold it. Returns the valid entries.
   */
  async function invariants(prefix: string, opts: { orphansAllowed?: boolean } = {}): Promise<Map<string, PoolEntry>> {
    assert.equal(await client.get(`${prefix}pool`).string(), POOL_MARKER);
    const labels = await client.getAll().prefix(`${prefix}labels/`).strings();
    const ids = await client.getAll().prefix(`${prefix}ids/`).strings();
    const entries = new Map<string, PoolEntry>();
    for (const [k, v] of Object.entries(labels)) {
      const label = k.slice(`${prefix}labels/`.length);
      const e = parseEntry(label, v);
      if (e && !('invalid' in e)) entries.set(label, e);
    }
    const index = Object.entries(ids)
      .map(([k, v]) => parseIndex(prefix, k, v))
      .filter((e) => e !== null)
      .sort((a, b) => a.start - b.start);
    for (let k = 1; k < index.length; k++) assert.ok(index[k - 1].end <= index[k].start, `index keys of ${index[k - 1].label} and ${index[k].label} overlap`);
    for (const [label, e] of entries)
      for (const i of entryIntervals(e)) {
        const key = index.find((x) => x.start === i.start);
        assert.ok(key && key.label === label && key.end === i.end, `${label}'s ids ${i.start}-${i.end - 1} are indexed under it`);
      }
    if (!opts.orphansAllowed)
      for (const x of index) {
        const e = entries.get(x.label);
        assert.ok(e && entryIntervals(e).some((i) => i.start === x.start && i.end === x.end), `index key at ${x.start} (${x.label}) has its entry`);
      }
    return entries;
  }

  it("whatever order hosts settle in, and at once: one range per label, nothing overlapping, every answer the pool's (model-based, read back from etcd)", async () => {
    const arbStatic = fc
      .record({ label: fc.constantFrom('s1', 's2', 's3'), start: fc.integer({ min: 1_000_000, max: 1_200_000 }), count: fc.integer({ min: 1, max: 9000 }) })
      .map((s) => ({ label: s.label, intervals: [{ start: s.start, end: s.start + s.count }] }));
    const arbTurn = fc.record({
      host: fc.constantFrom('a', 'b', 'c'),
      requests: fc.uniqueArray(fc.record({ label: fc.constantFrom(...LABELS), size: fc.constantFrom(4096, 8192) }), {
        selector: (r) => r.label,
        maxLength: 10,
      }),
      statics: fc.uniqueArray(arbStatic, { selector: (s) => s.label, maxLength: 2 }),
      forget: fc.option(fc.constantFrom(...LABELS, 's1'), { nil: null }),
      together: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(arbTurn, { minLength: 1, maxLength: 8 }), async (turns) => {
        const prefix = newPrefix();
        const hosts = new Map(['a', 'b', 'c'].map((h) => [h, coord(prefix, h)]));
        // What each host recorded (its ranges.json), passed back as where to look first: stale after a forget elsewhere.
        const recorded = new Map(['a', 'b', 'c'].map((h) => [h, new Map<string, { start: number; size: number }>()]));
        // Turns marked `together` run at once with the one before: the transactions must serialize them.
        const groups: (typeof turns)[] = [];
        for (const t of turns) (t.together && groups.length > 0 ? groups[groups.length - 1] : (groups[groups.length] = [])).push(t);
        for (const group of groups) {
          const before = await client.getAll().prefix(`${prefix}labels/`).strings();
          const results = await Promise.all(group.map((t) => hosts.get(t.host)!.settle(t.requests, t.statics, POOL, [], new Map(recorded.get(t.host)))));
          group.forEach((t, k) => {
            for (const [l, a] of results[k].decided) recorded.get(t.host)!.set(l, a);
          });
          const pool = await invariants(prefix);
          group.forEach((t, k) => {
            const r = results[k];
            for (const q of t.requests) {
              const d = r.decided.get(q.label);
              const c = r.conflicts.find((x) => x.label === q.label);
              assert.ok((d === undefined) !== (c === undefined), `${q.label} is decided or refused, once`);
              if (d) {
                const e = pool.get(q.label);
                assert.ok(e?.kind === 'auto' && e.start === d.start && e.size === d.size && d.size === q.size, `${q.label}: the pool's range`);
                assert.equal(rangeProblem(d, q.size, POOL, []), null);
              }
            }
            for (const st of t.statics) {
              const e = pool.get(st.label);
              const same = e?.kind === 'static' && JSON.stringify(e.intervals) === JSON.stringify(mergeIntervals(st.intervals));
              assert.ok(same || r.conflicts.some((c) => c.label === st.label), `static ${st.label} is registered as claimed or refused`);
            }
          });
          // An entry already there is never changed by a settle.
          const now = await client.getAll().prefix(`${prefix}labels/`).strings();
          for (const [k, v] of Object.entries(before)) assert.equal(now[k], v, `${k} kept as it was`);
          for (const t of group)
            if (t.forget !== null) {
              const had = (await client.get(`${prefix}labels/${t.forget}`).string()) !== null;
              assert.equal(await hosts.get(t.host)!.forgetRange(t.forget), had);
              assert.equal(await client.get(`${prefix}labels/${t.forget}`).string(), null);
              await invariants(prefix);
            }
        }
        for (const c of hosts.values()) await c.close();
        open.length = 0;
        await client.delete().prefix(prefix).exec();
      }),
      { numRuns: 25 },
    );
  });

  it('a claim loses when, between its read and its write, the key after its slot goes and a wider range takes both: the next key is part of the compare', async () => {
    const prefix = newPrefix();
    const base = Math.ceil(POOL.start / 8192) * 8192;
    const two: Pool = { start: base, end: base + 8192 - 1, size: 4096 }; // two slots
    const b = coord(prefix, 'b');
    await b.settle([], [{ label: 'n', intervals: [{ start: base + 4096, end: base + 8192 }] }], two, []);
    let once = true;
    const a = coord(prefix, 'a', async () => {
      if (!once) return;
      once = false;
      // Another host frees n and registers c over both slots, after a read its first slot free and n after it.
      assert.equal(await b.forgetRange('n'), true);
      const c = await b.settle([], [{ label: 'c', intervals: [{ start: base, end: base + 8192 }] }], two, []);
      assert.deepEqual(c.conflicts, []);
    });
    const r = await a.settle([{ label: 'a', size: 4096 }], [], two, []);
    assert.equal(once, false, 'the other host wrote between the read and the claim');
    assert.deepEqual(r.decided, new Map());
    assert.match(r.conflicts[0].message, /is exhausted/);
    await invariants(prefix);
  });

  it('a forget is refused when the label is pinned anywhere, and asks again when a host publishes its pins between its read and its write', async () => {
    const prefix = newPrefix();
    const a = coord(prefix, 'a');
    await a.settle([{ label: 'x', size: 4096 }], [], POOL, []);
    await a.publishPinned(['x']);
    await assert.rejects(
      coord(prefix, 'b').forgetRange('x'),
      (e) => e instanceof Fault && e.kind === 'busy' && fromFault(e).message === 'x is pinned on a: release it there first (usernsctl release x)',
    );
    await a.publishPinned([]);
    let once = true;
    const b = coord(prefix, 'b', async () => {
      if (!once) return;
      once = false;
      await a.publishPinned(['x']); // a pins it after b read the pins
    });
    await assert.rejects(b.forgetRange('x'), /x is pinned on a/);
    assert.equal(once, false);
    assert.ok(await client.get(`${prefix}labels/x`).string(), 'x is still in the pool');
    await a.publishPinned([]);
    assert.equal(await coord(prefix, 'c').forgetRange('x'), true);
    await invariants(prefix);
  });

  it('a label asked alone gets its hash slot, the same on every host, in one write; asked again it is read, not written', async () => {
    const prefix = newPrefix();
    const a = coord(prefix, 'a');
    const first = await a.settle([{ label: 'x', size: 4096 }], [], POOL, []);
    assert.deepEqual(first.decided.get('x'), { start: allocateRange('x', 4096, POOL, []), size: 4096 });
    const rev = (await client.get(`${prefix}labels/x`).exec()).kvs[0].mod_revision;
    const again = await coord(prefix, 'b').settle([{ label: 'x', size: 4096 }], [], POOL, []);
    assert.deepEqual(again.decided, first.decided);
    assert.equal((await client.get(`${prefix}labels/x`).exec()).kvs[0].mod_revision, rev, 'not written again');
    const entry = JSON.parse((await client.get(`${prefix}labels/x`).string())!) as { by: string };
    assert.equal(entry.by, 'a');
  });

  it("refuses in the admin's words: another size, static against auto, another host's static ids, overlapping statics, a full pool", async () => {
    const prefix = newPrefix();
    const small: Pool = { start: 1_003_520, end: 1_003_520 + 2 * 4096 - 1, size: 4096 }; // two slots
    const a = coord(prefix, 'a');
    const b = coord(prefix, 'b');
    await a.settle([{ label: 'x', size: 4096 }], [{ label: 's', intervals: [{ start: 10, end: 20 }] }], small, []);
    const r = await b.settle(
      [
        { label: 'x', size: 8192 },
        { label: 's', size: 4096 },
      ],
      [
        { label: 'x', intervals: [{ start: 30, end: 40 }] },
        { label: 't', intervals: [{ start: 15, end: 25 }] },
      ],
      small,
      [],
    );
    const why = (l: string) => r.conflicts.filter((c) => c.label === l).map((c) => c.message);
    assert.deepEqual(why('x'), [
      'a has it as an auto range: a label is static everywhere or auto everywhere',
      'the shared pool has it with 4096 ids (allocated by a), this host asks for 8192: give it the same size everywhere, or forget it (usernsctl ranges forget x) to have it allocated anew',
    ]);
    assert.deepEqual(why('s'), ['a configures it with static ids: a label is static everywhere or auto everywhere']);
    assert.deepEqual(why('t'), ["its ids 15-24 overlap s's static range 10-19 (configured on a) in the shared pool: one of the two files must change"]);
    const c = await b.settle([], [{ label: 's', intervals: [{ start: 10, end: 21 }] }], small, []);
    assert.deepEqual(c.conflicts[0].message, 'a has it with ids 10-19, this host with 10-20: hosts that share storage must give a label the same ids');
    const full = await b.settle(
      [
        { label: 'y', size: 4096 },
        { label: 'z', size: 4096 },
      ],
      [],
      small,
      [],
    );
    assert.equal(full.decided.size, 1);
    assert.deepEqual(
      full.conflicts.map((x) => x.message),
      [`the pool ${small.start}-${small.end} is exhausted: no free range of 4096 ids is left (widen [pool] range or remove contexts)`],
    );
    await invariants(prefix);
  });

  it('a crowded pool costs an allocation no more reads than an empty one: the slot map guides the search to one slot', async () => {
    const prefix = newPrefix();
    const pool: Pool = { start: 4_096_000, end: 4_096_000 + 1000 * 4096 - 1, size: 4096 }; // 1,000 slots
    const filled = await coord(prefix, 'a').settle(
      Array.from({ length: 920 }, (_, k) => ({ label: `f${k}`, size: 4096 })),
      [],
      pool,
      [],
    );
    assert.equal(filled.decided.size, 920);
    let keys = 0;
    let txns = 0;
    const b = new EtcdCoordinator(
      { endpoints: cluster.endpoints, prefix, name: 'b', timeoutMs: 5000, ca: null, cert: null, key: null },
      {
        observe: (r) => {
          txns++;
          keys += r.responses.reduce((n, x) => n + (x.response_range?.kvs.length ?? 0), 0);
        },
      },
    );
    open.push(b);
    await b.settle([{ label: 'first', size: 4096 }], [], pool, []); // reads the index's keys once, for its map
    const perLabel: { keys: number; txns: number }[] = [];
    for (let k = 0; k < 20; k++) {
      keys = txns = 0;
      const r = await b.settle([{ label: `n${k}`, size: 4096 }], [], pool, []);
      assert.ok(r.decided.has(`n${k}`), r.conflicts[0]?.message);
      perLabel.push({ keys, txns });
    }
    // A read of the label and of one slot (its key, if any, and the few after), then the write: as in an empty pool.
    for (const x of perLabel) assert.ok(x.txns <= 3 && x.keys <= 2 * 6, `${JSON.stringify(x)}: a window's keys were read`);
    // An index with more keys than a map is made from (etcd's data is input): no map, the search reads windows, and still allocates.
    let windowKeys = 0;
    const capped = new EtcdCoordinator(
      { endpoints: cluster.endpoints, prefix, name: 'c', timeoutMs: 5000, ca: null, cert: null, key: null },
      {
        mapKeysMax: 500,
        observe: (r) =>
          (windowKeys = Math.max(
            windowKeys,
            r.responses.reduce((n, x) => n + (x.response_range?.kvs.length ?? 0), 0),
          )),
      },
    );
    open.push(capped);
    for (const label of ['c0', 'c1']) assert.ok((await capped.settle([{ label, size: 4096 }], [], pool, [])).decided.has(label));
    assert.ok(windowKeys > 100, `the capped coordinator read ${windowKeys} keys at most: it had a map`);
    await invariants(prefix);
  });

  it('a slot map made stale by another host costs reads, never a wrong answer: a forget elsewhere is found, a slot taken elsewhere is not used', async () => {
    const prefix = newPrefix();
    const pool: Pool = { start: 8_192_000, end: 8_192_000 + 16 * 4096 - 1, size: 4096 }; // 16 slots
    const a = coord(prefix, 'a');
    const b = coord(prefix, 'b');
    const labels = Array.from({ length: 16 }, (_, k) => ({ label: `a${k}`, size: 4096 }));
    assert.equal((await a.settle(labels, [], pool, [])).decided.size, 16);
    const full = await b.settle([{ label: 'b0', size: 4096 }], [], pool, []); // b's map: every slot taken
    assert.match(full.conflicts[0]?.message ?? '', /is exhausted/);
    for (const l of ['a3', 'a7', 'a11']) assert.equal(await a.forgetRange(l), true);
    const freed = await b.settle([{ label: 'b1', size: 4096 }], [], pool, []); // its map still says full
    assert.ok(freed.decided.has('b1'), freed.conflicts[0]?.message);
    await invariants(prefix);
    // c's map sees two free slots; a takes them before c allocates: c misses, then finds none left.
    const c = coord(prefix, 'c');
    await c.settle([{ label: 'c0', size: 4096 }], [], pool, []);
    assert.equal((await a.settle([{ label: 'a99', size: 4096 }], [], pool, [])).decided.size, 1);
    const late = await c.settle([{ label: 'c1', size: 4096 }], [], pool, []);
    assert.deepEqual(late.decided.size, 0);
    assert.match(late.conflicts[0]?.message ?? '', /is exhausted/);
    const entries = await invariants(prefix);
    assert.equal(entries.size, 16, 'every slot held once');
  });

  it("hostile keys harm only their own label: entries that are not valid, out of the pool, over another's ids, unindexed; junk in the index", async () => {
    const prefix = newPrefix();
    const slot = (k: number) => Math.ceil(POOL.start / 4096) * 4096 + k * 4096;
    const put = (k: string, v: string) => client.put(k).value(v).exec();
    await coord(prefix, 'a').settle([{ label: 'mine', size: 4096 }], [], POOL, []); // makes the marker
    const mine = allocateRange('mine', 4096, POOL, []) as number;
    await put(`${prefix}labels/bad`, 'null');
    await put(`${prefix}labels/neg`, JSON.stringify({ kind: 'auto', start: -5, size: 4096, by: 'x', at: 'y' }));
    await put(`${prefix}labels/low`, JSON.stringify({ kind: 'auto', start: 1, size: 4096, by: 'elsewhere', at: 'y' }));
    await put(idsKey(prefix, { start: 1, end: 4097 }), JSON.stringify({ label: 'low' }));
    await put(`${prefix}labels/twin`, JSON.stringify({ kind: 'auto', start: mine, size: 4096, by: 'elsewhere', at: 'y' }));
    await put(`${prefix}labels/ghost`, JSON.stringify({ kind: 'auto', start: mine === slot(3) ? slot(5) : slot(3), size: 4096, by: 'elsewhere', at: 'y' }));
    await put(`${prefix}ids/junk`, 'whatever');
    await put(idsKey(prefix, { start: slot(7), end: slot(7) + 1 }), '{not json'); // holds id slot(7)
    const r = await coord(prefix, 'b').settle(
      ['bad', 'neg', 'low', 'twin', 'ghost', 'fresh', 'mine'].map((label) => ({ label, size: 4096 })),
      [],
      POOL,
      [{ start: slot(9), end: slot(9) + 1 }],
    );
    const why = new Map(r.conflicts.map((c) => [c.label, c.message]));
    assert.match(
      why.get('bad')!,
      /^the shared pool's entry for it is not valid \(.*\): it is used for nothing; fix it, or forget it \(usernsctl ranges forget bad\)/,
    );
    assert.match(why.get('neg')!, /not valid \(start: /);
    assert.match(why.get('low')!, /gives it 1-4096 \(allocated by elsewhere\), which this host refuses: it lies outside the pool/);
    assert.match(why.get('twin')!, /which this host refuses: it overlaps mine's range/);
    assert.match(why.get('ghost')!, /which this host refuses: the pool's index has no key for its ids/);
    assert.deepEqual([...r.decided.keys()].sort(), ['fresh', 'mine']);
    const fresh = r.decided.get('fresh')!.start;
    assert.ok(![slot(7), slot(9), mine].includes(fresh), 'the fresh range avoids the unreadable index key and the system ids');
    // Forget repairs them: the label's own index keys go with it, another label's stay.
    assert.equal(await coord(prefix, 'b').forgetRange('twin'), true);
    assert.ok(await client.get(idsKey(prefix, { start: mine, end: mine + 4096 })).string(), "mine's index key stays");
    assert.equal(await coord(prefix, 'b').forgetRange('low'), true);
    assert.equal(await client.get(idsKey(prefix, { start: 1, end: 4097 })).string(), null, "low's index key goes with it");
    assert.equal(await coord(prefix, 'b').forgetRange('bad'), true);
    const again = await coord(prefix, 'b').settle(
      ['bad', 'low', 'twin'].map((label) => ({ label, size: 4096 })),
      [],
      POOL,
      [],
    );
    assert.deepEqual(again.conflicts, []);
    await client.delete().key(`${prefix}ids/junk`).exec();
    await client
      .delete()
      .key(idsKey(prefix, { start: slot(7), end: slot(7) + 1 }))
      .exec();
    await client.delete().key(`${prefix}labels/ghost`).exec();
    await client.delete().key(`${prefix}labels/neg`).exec();
    await invariants(prefix);
  });

  it("layout 1's document is moved in place while an agent of layout 1 still allocates in it: everything it wrote is kept, then it is refused cleanly", async () => {
    const prefix = newPrefix();
    const docKey = `${prefix}pool`;
    /** What an agent of layout 1 does: read the document, add a range, compare-and-swap on its revision. */
    const oldAgent = async (label: string): Promise<'written' | 'refused' | 'lost'> => {
      const kv = (await client.get(docKey).exec()).kvs[0];
      const doc = parseDoc(kv ? kv.value.toString() : null);
      if (typeof doc === 'string') return 'refused';
      const taken = mergeIntervals(Object.values(doc.ranges).map((x) => ({ start: x.start, end: x.start + x.size })));
      const start = allocateRange(label, 4096, POOL, taken) as number;
      const next = JSON.stringify({ version: 1, ranges: { ...doc.ranges, [label]: { start, size: 4096, by: 'old', at: 't' } }, statics: doc.statics });
      const cmp = kv ? client.if(docKey, 'Mod', '==', kv.mod_revision) : client.if(docKey, 'Create', '==', 0);
      return (await cmp.then(client.put(docKey).value(next)).commit()).succeeded ? 'written' : 'lost';
    };
    for (let k = 0; k < 30; k++) assert.equal(await oldAgent(`old${k}`), 'written');
    const written = new Set(Array.from({ length: 30 }, (_, k) => `old${k}`));
    // The old agent goes on while three new ones settle (and so migrate) at once.
    let stop = false;
    const writer = (async () => {
      for (let k = 30; !stop; k++) {
        const r = await oldAgent(`old${k}`);
        if (r === 'written') written.add(`old${k}`);
        if (r === 'refused') return;
      }
    })();
    const news = ['n1', 'n2', 'n3'].map((h) => coord(prefix, h));
    const settled = await Promise.all(news.map((c, i) => c.settle([{ label: `new${i}`, size: 4096 }], [], POOL, [])));
    stop = true;
    await writer;
    assert.equal(await oldAgent('late'), 'refused', 'an agent of layout 1 refuses the moved pool');
    assert.match(parseDoc(await client.get(docKey).string()) as string, /not version 1 of usernsd's \(written by a newer agent\?\)/);
    const pool = await invariants(prefix);
    for (const l of written) assert.ok(pool.get(l)?.kind === 'auto', `${l}, written by the old agent, is in the moved pool`);
    for (const [i, s] of settled.entries()) assert.deepEqual(s.decided.get(`new${i}`), { start: (pool.get(`new${i}`) as { start: number }).start, size: 4096 });
    assert.equal(
      news.reduce((m, c) => m + c.takeMigrated(), 0),
      written.size,
      'one agent moved it, and says how many labels',
    );
  });

  it('a move interrupted half way is finished by the next agent, with the same keys; check-config says what the pool is', async () => {
    const prefix = newPrefix();
    const doc = {
      version: 1,
      ranges: {
        a: { start: 1_000_000, size: 4096, by: 'h', at: 't' },
        twin: { start: 1_000_000, size: 4096, by: 'h', at: 't' },
        bad: null,
      },
      statics: { s: { intervals: [{ start: 10, end: 20 }], by: 'h', at: 't' } },
    };
    await client.put(`${prefix}pool`).value(JSON.stringify(doc)).exec();
    assert.match(
      await coord(prefix, 'x').survey(),
      /^2 range\(s\) and 1 static range\(s\) in the single document at .*pool, moved to one key per label by the first agent that settles$/,
    );
    // What an agent killed after freezing it and writing half the keys leaves.
    const keys = migrationKeys(prefix, doc);
    await client
      .put(`${prefix}pool`)
      .value(JSON.stringify({ version: 2, migrating: doc }))
      .exec();
    for (const k of keys.slice(0, 2)) await client.put(k.key).value(k.value).exec();
    assert.match(await coord(prefix, 'x').survey(), /being moved to one key per label/);
    await coord(prefix, 'y').settle([], [], POOL, []);
    const all = await client.getAll().prefix(prefix).strings();
    delete all[`${prefix}pool`];
    assert.deepEqual(all, Object.fromEntries(keys.map((k) => [k.key, k.value])));
    assert.equal(await client.get(`${prefix}pool`).string(), POOL_MARKER);
    assert.match(await coord(prefix, 'x').survey(), /^4 label\(s\) under .*labels\/$/);
    await client.put(`${prefix}pool`).value('{"version":3}').exec();
    await assert.rejects(coord(prefix, 'z').settle([], [], POOL, []), /is not a layout of the pool this agent knows \(1 or 2: written by a newer agent\?\)/);
  });

  it('import: all checked first, nothing written on a conflict that names both sides; then all in', async () => {
    const prefix = newPrefix();
    const x = (await coord(prefix, 'a').settle([{ label: 'x', size: 4096 }], [], POOL, [])).decided.get('x')!;
    const free = POOL.start + 40 * 4096 === x.start ? POOL.start + 41 * 4096 : POOL.start + 40 * 4096;
    const b = coord(prefix, 'b');
    const clash = await b.importRanges(
      new Map([
        ['mine', { start: x.start, size: 4096 }],
        ['free', { start: free, size: 4096 }],
      ]),
      POOL,
      [],
    );
    assert.equal(clash.imported, 0);
    assert.deepEqual(
      clash.conflicts.map((c) => c.message),
      [`this host's mine at ${x.start}-${x.start + 4095} overlaps x's range ${x.start}-${x.start + 4095} (allocated by a)`],
    );
    assert.equal(await client.get(`${prefix}labels/free`).string(), null, 'nothing written');
    const clean = await b.importRanges(
      new Map([
        ['free', { start: free, size: 4096 }],
        ['x', x],
      ]),
      POOL,
      [],
    );
    assert.deepEqual(clean, { imported: 1, conflicts: [] });
    const moved = await b.importRanges(new Map([['x', { start: x.start + 4096, size: 4096 }]]), POOL, []);
    assert.match(moved.conflicts[0].message, /^the shared pool has it at \d+-\d+ \(allocated by a\), this host at \d+-\d+$/);
    await invariants(prefix);
  });
});

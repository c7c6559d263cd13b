// The agent's reload decisions in-process (issue 23): the configuration loaded from files an admin
// edits, breaks, fixes and removes, applied to a Registry as the agent applies it — checked after
// every reload against what the files say, with no namespace made. config-over-time (e2e) checks
// the same histories against the kernel, in minutes; these run in milliseconds.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadConfiguration } from '../../agent/configure.ts';
import { Registry } from '../../agent/registry.ts';
import { Judgement } from '../../config/judge.ts';
import { parseExtents } from '../../config/extents.ts';
import { HOST_LABEL } from '../../config/types.ts';
import type { Context, IdMap } from '../../config/types.ts';
import { makeTree, testNss } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';

type FileDef = { label: string; text: string };
type Model = { files: Map<string, { text: string; broken: boolean }>; settingsBroken: boolean };
type Real = { tree: Tree; registry: Registry; judgement: Judgement };

// Few labels and ranges that often overlap, as in config-over-time: the interesting histories come up.
const TOP = ['aa', 'proj'] as const;
const defArb: fc.Arbitrary<FileDef> = fc.oneof(
  fc
    .record({ label: fc.constantFrom(...TOP), start: fc.constantFrom(4000000, 4000100, 4130000), count: fc.constantFrom(10, 65536) })
    .map(({ label, start, count }) => ({ label, text: `[context]\nuid_map = 0 ${start} ${count}\ngid_map = 0 ${start} ${count}\n` })),
  fc
    .record({ parent: fc.constantFrom(...TOP), start: fc.constantFrom(0, 5) })
    .map(({ parent, start }) => ({ label: 'kid', text: `[context]\nparent = ${parent}\nuid_map = 0 ${start} 5\ngid_map = 0 ${start} 5\n` })),
  fc.constantFrom(65536, 131072).map((size) => ({ label: 'auto1', text: `[context]\nrange = auto\nsize = ${size}\n` })),
);
const LABELS = [...TOP, 'kid', 'auto1'];

const snapshot = (r: Registry) => new Map([...r.all()].map((c) => [c.label, JSON.stringify(c)]));
/** What a context does: all of it but where its keys are written (`lines`, for error messages). */
const inEffect = (json: string) => JSON.stringify({ ...(JSON.parse(json) as Context), lines: undefined });
const uidMapOf = (text: string) => parseExtents(/uid_map = (.*)\n/.exec(text)?.[1] ?? '') as IdMap;

/** Reloads whose load said what changed in the very map in force (ContextsDelta), so the registry looked at those labels alone. */
let deltas = 0;

/** As the agent loads: the map in force itself, and the judgement kept from the load before. */
function load(r: Real) {
  return loadConfiguration(r.tree.config, { record: true, systemIds: () => [], nss: testNss, inForce: r.registry.inForce(), judgement: r.judgement });
}

const POOL = { start: 3997696, end: 4325375 };
const rangesText = (r: Real) => (existsSync(join(r.tree.state, 'ranges.json')) ? readFileSync(join(r.tree.state, 'ranges.json'), 'utf8') : null);

function reloadAndCheck(m: Model, r: Real): void {
  const ranges = rangesText(r);
  const before = snapshot(r.registry);
  const was = r.registry.inForce();
  const config = load(r);
  // Every range recorded lies in the pool the admin configured, whatever the load saw.
  const recorded = ranges === null ? {} : (JSON.parse(rangesText(r)!) as { allocations: Record<string, { start: number; size: number }> }).allocations;
  for (const [label, a] of Object.entries(recorded))
    assert.ok(a.start >= POOL.start && a.start + a.size - 1 <= POOL.end, `${label} recorded at ${a.start}+${a.size}, outside the pool`);
  if (config.errors.some((e) => e.file === r.tree.config)) {
    // The agent refuses a reload whose settings file has errors ("everything stays as it was"): so must the state.
    assert.ok(m.settingsBroken, 'the settings file is fine, yet the load says it has errors');
    assert.equal(rangesText(r), ranges, 'a load whose settings file has errors recorded ranges');
    return;
  }
  assert.ok(!m.settingsBroken, 'the settings file is broken, yet the load says nothing of it');
  if (config.delta?.from === was) deltas++;
  const diff = r.registry.apply(config);
  // What the registry says changed since the map before is every label whose context is another object now.
  const since = r.registry.changedSince(was);
  if (config.contexts !== was) {
    assert.ok(since || !config.delta, 'a load with a delta from the map in force: the registry knows what changed');
    for (const l of new Set([...was.keys(), ...config.contexts.keys()]))
      if (was.get(l) !== config.contexts.get(l)) assert.ok(!since || since.has(l), `${l} changed, not said`);
  }
  const after = snapshot(r.registry);
  const sorted = (xs: Iterable<string>) => [...xs].sort();
  const refusedFiles = new Set(config.errors.map((e) => e.file));
  // The diff is exactly what changed.
  assert.deepEqual(sorted(diff.added), sorted([...after.keys()].filter((l) => !before.has(l))), 'added');
  assert.deepEqual(sorted(diff.removed), sorted([...before.keys()].filter((l) => !after.has(l))), 'removed');
  // Changed: what the context does. A comment or a blank line that moves its keys down changes nothing.
  assert.deepEqual(
    sorted(diff.changed),
    sorted([...after.keys()].filter((l) => before.has(l) && inEffect(before.get(l)!) !== inEffect(after.get(l)!))),
    'changed',
  );
  for (const c of r.registry.all()) {
    const file = m.files.get(c.label);
    assert.ok(file, `${c.label} is in force without a file`);
    if (c.parent !== HOST_LABEL) assert.ok(after.has(c.parent), `${c.label} is in force without its parent ${c.parent}`);
    const path = join(r.tree.contexts, `${c.label}.conf`);
    if (diff.kept.includes(c.label)) {
      // Kept: it was in force, its file is broken or refused now, and it is exactly what it was.
      assert.equal(after.get(c.label), before.get(c.label), `${c.label} kept at its last good version`);
      assert.ok(file.broken || refusedFiles.has(path), `${c.label} kept, but its file is neither broken nor refused`);
      continue;
    }
    assert.ok(!file.broken, `${c.label} is in force from a broken file without being kept`);
    if (c.autoSize !== null) assert.equal(c.autoSize, Number(/size = (\d+)/.exec(file.text)![1]));
    else assert.deepEqual(c.uidMap, uidMapOf(file.text), `${c.label} has its file's uid_map`);
  }
  // A context in force whose file is broken now stays in force, as it was, while its parent does:
  // nothing loaded alongside (an auto range hashed onto its ids) may take its place.
  for (const [label, f] of m.files) {
    if (!f.broken || !before.has(label)) continue;
    const parent = (JSON.parse(before.get(label)!) as Context).parent;
    if (parent !== HOST_LABEL && !after.has(parent)) continue;
    assert.equal(after.get(label), before.get(label), `${label} was in force and its file broke: it is kept`);
  }
  // A good file that is not in force was refused, and says so.
  for (const [label, f] of m.files) {
    if (f.broken || after.has(label)) continue;
    assert.ok(refusedFiles.has(join(r.tree.contexts, `${label}.conf`)), `${label}.conf is good, not in force, and no error says why`);
  }
  // Top-level contexts never share a host id.
  const top = [...r.registry.all()].filter((c) => c.parent === HOST_LABEL);
  for (const [i, a] of top.entries()) {
    for (const b of top.slice(i + 1)) {
      const ia = a.uidMap.map((e) => [e.outside, e.outside + e.count]);
      const ib = b.uidMap.map((e) => [e.outside, e.outside + e.count]);
      assert.ok(!ia.some(([s, e]) => ib.some(([t, f]) => s < f && t < e)), `${a.label} and ${b.label} overlap`);
    }
  }
}

type Command = fc.Command<Model, Real>;
const command = (name: string, check: (m: Readonly<Model>) => boolean, run: (m: Model, r: Real) => void): Command => ({ check, run, toString: () => name });

const write = (d: FileDef) =>
  command(
    `write ${d.label}.conf ${JSON.stringify(d.text)}`,
    () => true,
    (m, r) => {
      r.tree.context(`${d.label}.conf`, d.text);
      m.files.set(d.label, { text: d.text, broken: false });
    },
  );
const breakFile = (label: string) =>
  command(
    `break ${label}.conf`,
    (m) => m.files.get(label)?.broken === false,
    (m, r) => {
      const f = m.files.get(label)!;
      r.tree.context(`${label}.conf`, `${f.text}bogus = 1\n`);
      m.files.set(label, { ...f, broken: true });
    },
  );
const fixFile = (label: string) =>
  command(
    `fix ${label}.conf`,
    (m) => m.files.get(label)?.broken === true,
    (m, r) => {
      const f = m.files.get(label)!;
      r.tree.context(`${label}.conf`, f.text);
      m.files.set(label, { ...f, broken: false });
    },
  );
/** The admin's note above the keys (every line below it moves down): the file differs, the context does not. */
const annotate = (label: string) =>
  command(
    `annotate ${label}.conf`,
    (m) => m.files.has(label),
    (m, r) => {
      const f = m.files.get(label)!;
      const text = `# why this range: see the ticket\n\n${f.text}`;
      r.tree.context(`${label}.conf`, f.broken ? `${text}bogus = 1\n` : text);
      m.files.set(label, { ...f, text });
    },
  );
const removeFile = (label: string) =>
  command(
    `remove ${label}.conf`,
    (m) => m.files.has(label),
    (m, r) => {
      rmSync(join(r.tree.contexts, `${label}.conf`));
      m.files.delete(label);
    },
  );
/** The admin's typo in the pool's range: the pool the load would fall back to is the default one. */
const breakSettings = command(
  'break usernsd.conf',
  (m) => !m.settingsBroken,
  (m, r) => {
    writeFileSync(r.tree.config, readFileSync(r.tree.config, 'utf8').replace(/^range = (.*)$/m, 'range = $1x'));
    m.settingsBroken = true;
  },
);
const fixSettings = command(
  'fix usernsd.conf',
  (m) => m.settingsBroken,
  (m, r) => {
    writeFileSync(r.tree.config, readFileSync(r.tree.config, 'utf8').replace(/^range = (.*)x$/m, 'range = $1'));
    m.settingsBroken = false;
  },
);
const reload = command('reload', () => true, reloadAndCheck);

describe('unit: reload decisions over time, in-process (model-based)', () => {
  it('after every reload: the diff is exactly what changed, every context has its file or is kept at its last good version, nothing overlaps', () => {
    const commands = fc.commands(
      [
        defArb.map(write),
        fc.constantFrom(...LABELS).map(breakFile),
        fc.constantFrom(...LABELS).map(fixFile),
        fc.constantFrom(...LABELS).map(removeFile),
        fc.constantFrom(...LABELS).map(annotate),
        fc.constant(reload),
        fc.constant(reload),
        fc.constant(breakSettings),
        fc.constant(fixSettings),
      ],
      { maxCommands: 30 },
    );
    fc.assert(
      fc.property(commands, (cmds) => {
        // A pool of five slots over the static ranges, so the auto range's hash often names their ids.
        const tree = makeTree('[pool]\nrange = 3997696-4325375\n');
        try {
          const judgement = new Judgement();
          const registry = new Registry(loadConfiguration(tree.config, { record: true, systemIds: () => [], nss: testNss, judgement }));
          fc.modelRun(() => ({ model: { files: new Map(), settingsBroken: false }, real: { tree, registry, judgement } }), [...cmds, fixSettings, reload]);
        } finally {
          tree.remove();
        }
      }),
      { numRuns: 150 },
    );
    assert.ok(deltas > 20, `the registry followed a delta in ${deltas} reloads`);
  });
});

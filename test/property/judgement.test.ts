// The judgement a reload runs again on what changed only (judge.ts Judgement) against the whole
// judgement of the same files (finishContexts without one), over histories of edits: files written,
// rewritten as they were, removed and broken; pins made, drifted and released; allocations moved;
// an owner's subordinate ids given and taken back. After every reload both must accept the same
// contexts with the same maps, host maps, kept contexts, errors and notices, the accepted ones
// parents before children; and the partial judgement must have been what most reloads ran.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { finishContexts, Judgement, PARTIAL_MAX } from '../../config/judge.ts';
import type { Delegations, Judged } from '../../config/judge.ts';
import { formatConfigError } from '../../config/ini.ts';
import { linkContexts, parseContextFile } from '../../config/load.ts';
import type { ConfigError, Context, ContextDef, IdMap } from '../../config/types.ts';
import { mapText } from '../helpers/arbitraries.ts';
import { testNss } from '../helpers/fixtures.ts';
import { modelTests } from '../helpers/model.ts';

const LABELS = ['a', 'b', 'c', 'd', 'e', 'f'] as const;
type Label = (typeof LABELS)[number];
const base = (l: string) => 1_000_000 + LABELS.indexOf(l as Label) * 5000;
const POOL = 65536;

/**
 * A context file: host or another label as parent, one or two extents (top-level ones near their own
 * base, so most are disjoint and some meet a neighbour), or range = auto; owned by root, hpa or
 * alice (hpa may be given subordinate ids); sometimes a [delegate] with a directory (one inside
 * another), a tap or a cgroup, shared between labels now and then.
 */
const arbText = (label: string) =>
  fc
    .record({
      parent: fc.constantFrom('host', 'host', 'host', ...LABELS.filter((l) => l !== label)),
      auto: fc.constantFrom(false, false, false, true),
      extents: fc.array(fc.record({ gap: fc.nat(2), count: fc.integer({ min: 1, max: 6 }) }), { minLength: 1, maxLength: 2 }),
      owner: fc.constantFrom('', '', 'owner = hpa\n', 'owner = hpa\nowner_ids = any\n', 'owner = alice\n'),
      setgroups: fc.constantFrom('', '', '', 'setgroups = allow\n', 'setgroups = deny\n'),
      delegate: fc.constantFrom('', '', '', '', 'directories = /srv/x\n', 'directories = /srv/x/y\n', 'tap = tap0\n', 'cgroup = yes\n'),
      comment: fc.nat(3),
    })
    .map(({ parent, auto, extents, owner, setgroups, delegate, comment }) => {
      const from = parent === 'host' ? base(label) : 0;
      const map = mapText(from, extents);
      const body = auto && parent === 'host' ? 'range = auto\n' : `uid_map = ${map}\ngid_map = ${map}\n`;
      return `# ${comment}\n[context]\nparent = ${parent}\n${owner}${setgroups}${body}${delegate ? `[delegate]\n${delegate}` : ''}`;
    });

type Step =
  | { readonly op: 'write'; readonly label: Label; readonly text: string }
  | { readonly op: 'write2'; readonly label: Label; readonly text: string; readonly other: Label; readonly otherText: string }
  | { readonly op: 'forget'; readonly label: Label }
  | { readonly op: 'touch' | 'remove' | 'break' | 'unpin' | 'create'; readonly label: Label }
  | { readonly op: 'pin'; readonly label: Label; readonly drift: number | null }
  | { readonly op: 'allocate'; readonly label: Label; readonly slot: number }
  | { readonly op: 'subuid'; readonly given: boolean };

const arbLabel = fc.constantFrom(...LABELS);
const arbStep: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: arbLabel.chain((label) => arbText(label).map((text) => ({ op: 'write' as const, label, text }))) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('touch' as const), label: arbLabel }) },
  // Two files written before one reload.
  {
    weight: 1,
    arbitrary: fc
      .tuple(arbLabel, arbLabel)
      .chain(([label, other]) =>
        fc.tuple(arbText(label), arbText(other)).map(([text, otherText]) => ({ op: 'write2' as const, label, text, other, otherText })),
      ),
  },
  // What is in force changed between reloads (a context made from inside forgotten, a reload that failed): not what the judgement accepted.
  { weight: 1, arbitrary: fc.record({ op: fc.constant('forget' as const), label: arbLabel }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constantFrom('remove' as const, 'break' as const, 'unpin' as const), label: arbLabel }) },
  // The same maps, another field (create = eager, then lazy again): a context changed in force, its host maps as they were.
  { weight: 2, arbitrary: fc.record({ op: fc.constant('create' as const), label: arbLabel }) },
  // A pin with the context's own maps (most), or with another's base: a pin in drift that claims them.
  { weight: 2, arbitrary: fc.record({ op: fc.constant('pin' as const), label: arbLabel, drift: fc.option(fc.nat(LABELS.length - 1), { freq: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('allocate' as const), label: arbLabel, slot: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('subuid' as const), given: fc.boolean() }) },
);

/** The files of a history, parsed as the agent's cache parses them: a file written again is a new definition, one left alone the same object. */
type Files = Map<Label, { text: string; def: ContextDef | null; errors: ConfigError[] }>;

function parse(label: Label, text: string): { text: string; def: ContextDef | null; errors: ConfigError[] } {
  const r = parseContextFile(`/etc/userns.d/${label}.conf`, text, testNss, POOL);
  return { text, def: r.def, errors: [...r.errors] };
}

const extent = (outside: number): IdMap => [{ inside: 0, outside, count: 2000 }];

/** Sorted lines, for comparing what two judgements said in whatever order they said it. */
const said = (es: readonly ConfigError[]) => es.map(formatConfigError).sort();

function assertSame(whole: Judged, wholeErrors: ConfigError[], part: Judged, partErrors: ConfigError[]): void {
  const byLabel = (j: Judged) => new Map(j.contexts.map((c) => [c.label, c]));
  const w = byLabel(whole);
  const p = byLabel(part);
  assert.deepEqual([...p.keys()].sort(), [...w.keys()].sort(), 'accepted labels');
  for (const [label, c] of w) assert.deepEqual(strip(p.get(label)!), strip(c), `context ${label}`);
  assert.deepEqual(new Map([...part.hostMaps].sort()), new Map([...whole.hostMaps].sort()), 'host maps');
  assert.deepEqual([...part.kept].sort(), [...whole.kept].sort(), 'kept');
  assert.deepEqual(said(partErrors), said(wholeErrors), 'errors');
  assert.deepEqual(said(part.notices), said(whole.notices), 'notices');
  // The map by label is the list, in its order, the very objects (a reload that changed nothing hands out the same map again).
  assert.deepEqual(
    [...part.byLabel.keys()],
    part.contexts.map((c) => c.label),
    'by label, in order',
  );
  for (const c of part.contexts) assert.equal(part.byLabel.get(c.label), c, `by label: ${c.label}`);
  const at = new Map(part.contexts.map((c, i) => [c.label, i]));
  for (const c of part.contexts) if (c.parent !== 'host') assert.ok(at.get(c.parent)! < at.get(c.label)!, `${c.parent} before ${c.label}`);
}

/** A context's fields, as comparable data. */
const strip = (c: Context) => JSON.parse(JSON.stringify(c)) as unknown;

/** Over all histories of one run of the suite: how often the judgement judged again only what changed. */
const seen = { partial: 0, whole: 0, reloads: 0, deltas: 0, undeltas: 0 };

function run(steps: readonly Step[]): void {
  const files: Files = new Map();
  const alloc = new Map<Label, number>();
  const pins = new Map<string, { uidMap: IdMap; gidMap: IdMap } | null>();
  /** The parent each pin was made under: what the kernel says of an orphan's (Prior.pinParent). */
  const pinParents = new Map<string, string>();
  let subuid = false;
  let inForce = new Map<string, Context>();
  const judgement = new Judgement();
  let last: { judged: Judged; byLabel: [string, Context][]; hostMaps: [string, unknown][] } | null = null;
  for (const step of steps) {
    const f = 'label' in step ? files.get(step.label) : undefined;
    switch (step.op) {
      case 'write':
        files.set(step.label, parse(step.label, step.text));
        break;
      case 'write2':
        files.set(step.label, parse(step.label, step.text));
        files.set(step.other, parse(step.other, step.otherText));
        break;
      case 'forget':
        inForce.delete(step.label);
        break;
      case 'touch':
        if (f) files.set(step.label, parse(step.label, f.text));
        break;
      case 'create':
        if (f)
          files.set(
            step.label,
            parse(
              step.label,
              f.text.includes('create = eager\n') ? f.text.replace('create = eager\n', '') : f.text.replace('[context]\n', '[context]\ncreate = eager\n'),
            ),
          );
        break;
      case 'remove':
        files.delete(step.label);
        break;
      case 'break':
        if (f) files.set(step.label, parse(step.label, `${f.text}\nuid_map = not a map\n`));
        break;
      case 'pin': {
        const c = inForce.get(step.label);
        if (step.drift !== null) pins.set(step.label, { uidMap: extent(base(LABELS[step.drift])), gidMap: extent(base(LABELS[step.drift])) });
        else if (c) pins.set(step.label, { uidMap: c.uidMap, gidMap: c.gidMap });
        if (pins.has(step.label)) pinParents.set(step.label, c?.parent ?? 'host');
        break;
      }
      case 'unpin':
        pins.delete(step.label);
        break;
      case 'allocate':
        alloc.set(step.label, 3_000_000 + step.slot * 50_000);
        break;
      case 'subuid':
        subuid = step.given;
        break;
    }
    // The reload: files parsed (as cached), linked, then judged twice.
    const parseErrors: ConfigError[] = [];
    const parsed: ContextDef[] = [];
    for (const label of [...files.keys()].sort()) {
      const { def, errors } = files.get(label)!;
      parseErrors.push(...errors);
      if (def) parsed.push(def);
    }
    const { defs } = linkContexts(parsed, parseErrors);
    const allocated = new Map<string, number>();
    for (const d of defs) if (d.autoSize !== null && alloc.has(d.label as Label)) allocated.set(d.label, alloc.get(d.label as Label)!);
    const delegations: Delegations = {
      of: (o) => ({
        uid: [{ start: o.uid, end: o.uid + 1 }, ...(subuid && o.uid === 1000 ? [{ start: 1_000_000, end: 1_030_000 }] : [])],
        gid: [{ start: o.gid, end: o.gid + 1 }, ...(subuid && o.uid === 1000 ? [{ start: 1_000_000, end: 1_030_000 }] : [])],
      }),
      whose: (kind, id) => (kind === 'uid' ? (testNss.userById(id)?.name ?? null) : null),
    };
    const prior = {
      inForce,
      allocations: new Map([...alloc].map(([l, start]) => [l, { start, size: POOL }])),
      pinned: new Map(pins),
      // A pin whose file is gone (an orphan: this model never releases one at a removal) claims its ids under its parent.
      pinParent: (label: string) => pinParents.get(label) ?? null,
      delegations,
    };
    const wholeErrors = [...parseErrors];
    const whole = finishContexts(defs, allocated, wholeErrors, prior);
    const partErrors = [...parseErrors];
    const before = judgement.counts.partial;
    const part = finishContexts(defs, allocated, partErrors, prior, judgement);
    assertSame(whole, wholeErrors, part, partErrors);
    // What the last reload handed out (the agent puts those very maps in force) is as it was.
    if (last) {
      assert.deepEqual([...last.judged.byLabel], last.byLabel, "the last reload's contexts changed under it");
      assert.deepEqual([...last.judged.hostMaps], last.hostMaps, "the last reload's host maps changed under it");
    }
    // What the judgement says changed since it last handed out a map is all that changed (ContextsDelta).
    if (part.delta) {
      assert.ok(last, 'a delta from a map handed out before');
      assert.equal(part.delta.from, last.judged.byLabel, 'the delta starts at the map handed out last');
      assert.equal(part.delta.to, part.byLabel, 'the delta ends at the map handed out now');
      for (const label of new Set([...part.delta.from.keys(), ...part.byLabel.keys()]))
        if (part.delta.from.get(label) !== part.byLabel.get(label)) assert.ok(part.delta.labels.has(label), `${label} changed, not in the delta`);
      seen.deltas++;
    } else if (last && part.byLabel !== last.judged.byLabel) seen.undeltas++;
    last = { judged: part, byLabel: [...part.byLabel], hostMaps: [...part.hostMaps] };
    seen.reloads++;
    if (judgement.counts.partial > before) seen.partial++;
    else seen.whole++;
    inForce = new Map(part.contexts.map((c) => [c.label, c]));
  }
}

describe('property: a reload judges again what changed, and decides what the whole judgement decides', function () {
  this.timeout(600_000);
  modelTests({ file: import.meta.url, title: 'the same verdicts after every reload', runs: 300, seed: 20261207 }, () =>
    fc.asyncProperty(fc.array(arbStep, { minLength: 1, maxLength: 30 }), async (steps) => run(steps)),
  );

  it('judged again only what changed in most of those reloads (else the property above tested the whole judgement twice)', () => {
    assert.ok(seen.reloads > 0, 'the property ran');
    assert.ok(seen.partial > seen.reloads / 3, `partial ${seen.partial} of ${seen.reloads} reloads`);
    assert.ok(seen.whole > 0, 'some reloads judged everything');
    assert.ok(seen.deltas > 50, `a delta in ${seen.deltas} of ${seen.reloads} reloads (${seen.undeltas} changed the map without one)`);
  });
});

describe('Judgement', () => {
  const files = (n: number, edit: (i: number) => string = () => '') =>
    Array.from({ length: n }, (_, i) => {
      const at = 1_000_000 + i * 65536;
      return parseContextFile(`/etc/userns.d/c${i}.conf`, `[context]\nuid_map = 0 ${at} 65536\ngid_map = 0 ${at} 65536\n${edit(i)}`, testNss, POOL).def!;
    });
  const prior = (inForce: Map<string, Context>) => ({ inForce, allocations: new Map(), pinned: new Map() });

  it("gives an orphan's pin the ids another pin's claim covered once that claim goes: the first orphan given a file, the second still refuses a newcomer (seed 1750667562)", () => {
    // Pins a and c, without files, both with f's base: a's claim covers c's (a pin claims only what
    // no claim covers). Then a's file (nested in f) and f's own: a's pin claims in f now, and c's
    // orphan pin, under host, must refuse f, as a whole judgement does.
    run([
      { op: 'pin', label: 'a', drift: 5 },
      { op: 'write', label: 'a', text: '# 0\n[context]\nparent = f\nuid_map = 0 0 1000\ngid_map = 0 0 1000\n' },
      { op: 'pin', label: 'c', drift: 5 },
      { op: 'write', label: 'f', text: '# 0\n[context]\nparent = host\nuid_map = 0 1025000 1000\ngid_map = 0 1025000 1000\n' },
      { op: 'write', label: 'a', text: '# 0\n[context]\nparent = host\nuid_map = 0 1000000 1000\ngid_map = 0 1000000 1000\n' },
    ]);
  });

  it('judges one context again when one of a thousand files changed, and everything when the change meets another', () => {
    const judgement = new Judgement();
    const defs = files(1000);
    const first = judgement.judge(defs, new Map(), [], prior(new Map()));
    assert.equal(first.contexts.length, 1000);
    assert.deepEqual(judgement.counts, { whole: 1, partial: 0, judged: 1000, looked: 0 });
    // c7 rewritten with a comment: a new definition, judged alone.
    const next = [...defs];
    next[7] = files(8, () => '# edited\n')[7];
    const second = judgement.judge(next, new Map(), [], prior(new Map(first.contexts.map((c) => [c.label, c]))));
    // Found by its place, each of the other 999 is taken as the same without a lookup by label.
    assert.deepEqual(judgement.counts, { whole: 1, partial: 1, judged: 1001, looked: 1 });
    assert.equal(second.contexts.length, 1000);
    // c7 now takes c8's ids: it meets a context it does not judge again, so everything is judged.
    const clash = parseContextFile('/etc/userns.d/c7.conf', `[context]\nuid_map = 0 ${1_000_000 + 8 * 65536} 65536\ngid_map = 0 1000 1\n`, testNss, POOL).def!;
    next[7] = clash;
    const errors: ConfigError[] = [];
    const third = judgement.judge(next, new Map(), errors, prior(new Map(second.contexts.map((c) => [c.label, c]))));
    assert.deepEqual(judgement.counts, { whole: 2, partial: 1, judged: 2001, looked: 2 });
    assert.equal(third.contexts.length, 999);
    assert.match(errors.map(formatConfigError).join('\n'), /c7\.conf.*already used by context "c8"/);
  });

  /** a.conf and b.conf: b first alone, then a meeting b's ids. */
  const meeting = () => {
    const file = (label: string, at: number, extra = '') =>
      parseContextFile(`/etc/userns.d/${label}.conf`, `[context]\nuid_map = 0 ${at} 65536\ngid_map = 0 ${at} 65536\n${extra}`, testNss, POOL).def!;
    return { a: file('a', 1_000_000), b: file('b', 1_030_000), bTouched: file('b', 1_030_000, '# touched\n') };
  };
  const said = (errors: ConfigError[]) => errors.map(formatConfigError).join('\n');

  it('keeps a context in force ahead of a newcomer that takes its ids, and judges everything once what is in force is not what it accepted', () => {
    const { a, b } = meeting();
    const judgement = new Judgement();
    const first = judgement.judge([b], new Map(), [], prior(new Map()));
    const errors: ConfigError[] = [];
    const second = judgement.judge([a, b], new Map(), errors, prior(new Map(first.contexts.map((c) => [c.label, c]))));
    assert.deepEqual(
      second.contexts.map((c) => c.label),
      ['b'],
    );
    assert.match(said(errors), /a\.conf.*already used by context "b"/);
    // b is no longer in force (released meanwhile): both are newcomers, and a comes first by name.
    const later: ConfigError[] = [];
    const third = judgement.judge([a, b], new Map(), later, prior(new Map()));
    assert.deepEqual(
      third.contexts.map((c) => c.label),
      ['a'],
    );
    assert.match(said(later), /b\.conf.*already used by context "a"/);
    // Each of the three judged everything: a newcomer on b's ids, then what is in force not what was accepted.
    assert.deepEqual({ whole: judgement.counts.whole, partial: judgement.counts.partial }, { whole: 3, partial: 0 });
  });

  it('judges everything when two files changed at once meet each other: the one in force with the same ids stays ahead', () => {
    const { a, b, bTouched } = meeting();
    const judgement = new Judgement();
    const first = judgement.judge([b], new Map(), [], prior(new Map()));
    // b rewritten with the same ids (in force, so first) and a newcomer on its ids, in one reload.
    const errors: ConfigError[] = [];
    const second = judgement.judge([a, bTouched], new Map(), errors, prior(new Map(first.contexts.map((c) => [c.label, c]))));
    assert.deepEqual(
      second.contexts.map((c) => c.label),
      ['b'],
    );
    assert.match(said(errors), /a\.conf.*already used by context "b"/);
    assert.deepEqual({ whole: judgement.counts.whole, partial: judgement.counts.partial }, { whole: 2, partial: 0 });
  });

  it(`judges everything when more than ${PARTIAL_MAX} contexts changed, or what is in force is not what it accepted`, () => {
    const judgement = new Judgement();
    const defs = files(PARTIAL_MAX + 10);
    const first = judgement.judge(defs, new Map(), [], prior(new Map()));
    const inForce = new Map(first.contexts.map((c) => [c.label, c]));
    const edited = files(PARTIAL_MAX + 10, () => '# all edited\n');
    const second = judgement.judge(edited, new Map(), [], prior(inForce));
    assert.equal(judgement.counts.whole, 2);
    // What is in force lacks one context the judgement accepted (released meanwhile, say).
    const lacking = new Map([...second.contexts.slice(1)].map((c) => [c.label, c]));
    const third = judgement.judge(edited, new Map(), [], prior(lacking));
    assert.equal(judgement.counts.whole, 3);
    judgement.judge(edited, new Map(), [], prior(new Map(third.contexts.map((c) => [c.label, c]))));
    assert.deepEqual({ whole: judgement.counts.whole, partial: judgement.counts.partial }, { whole: 3, partial: 1 });
  });
});

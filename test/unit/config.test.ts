// Configuration rules of SPEC §3, each shown failing with file, section, key and line.
import assert from 'node:assert/strict';
import { chownSync, mkdirSync, readdirSync, readFileSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { capErrors, formatConfigError, MAX_CONFIG_FILE_BYTES, MAX_ERRORS_PER_FILE, parseIni, readConfigText, readConfigTextAsync } from '../../config/ini.ts';
import { finishContexts, HostMapsOf, OWN_IDS_ONLY, RECORDED_FIELDS, sameRecorded } from '../../config/judge.ts';
import type { Delegations } from '../../config/judge.ts';
import { linkContexts, parseContextFile } from '../../config/load.ts';
import type { ConfigError, Context, ContextDef } from '../../config/types.ts';
import { judgeRuntimeChild, loadConfiguration, loadConfigurationAsync } from '../../agent/configure.ts';
import { hashSlot } from '../../agent/coord/allocate.ts';
import { makeTree, testNss } from '../helpers/fixtures.ts';
import type { Tree } from '../helpers/fixtures.ts';

const parse = (text: string, name = 'x.conf') => parseContextFile(`/etc/userns.d/${name}`, text, testNss, 65536);
const one = (text: string) => {
  const r = parse(text);
  return { def: r.def, errors: r.errors.map(formatConfigError) };
};
/** As if /etc/subuid and /etc/subgid said hpa:100000:65536 (testNss: hpa is uid 1000, bob 1002 has no entry). */
const HPA_SUBIDS: Delegations = {
  of: (o) => {
    const own = OWN_IDS_ONLY.of(o);
    const sub = o.name === 'hpa' ? [{ start: 100000, end: 165536 }] : [];
    return { uid: [...own.uid, ...sub], gid: [...own.gid, ...sub] };
  },
  whose: (kind, id) => (kind === 'uid' ? (testNss.userById(id)?.name ?? null) : null),
};
/** Files parsed, linked and finished as the loader does, with what was in force before (`prior`). */
const all = (files: Record<string, string>, prior: Parameters<typeof finishContexts>[3] = { inForce: new Map(), allocations: new Map() }) => {
  prior = { delegations: HPA_SUBIDS, ...prior };
  const errors: ConfigError[] = [];
  const defs: ContextDef[] = [];
  for (const [name, text] of Object.entries(files)) {
    const r = parse(text, name);
    errors.push(...r.errors);
    if (r.def) defs.push(r.def);
  }
  const r = finishContexts(linkContexts(defs, errors).defs, new Map(), errors, prior);
  return { ...r, labels: r.contexts.map((c) => c.label), errors: errors.map(formatConfigError) };
};
const noSystemIds = () => [];

describe('config: context files', () => {
  it('shares what files leave alike, frozen (issue 26: 65,535 copies were a fifth of the live heap): the defaults, one line table per layout', () => {
    const text = (at: number, extra = '') => `[context]\nuid_map = 0 ${at} 65536\ngid_map = 0 ${at} 65536\n${extra}`;
    const [a, b] = [parse(text(100000), 'a.conf'), parse(text(200000), 'b.conf')];
    assert.ok(a.def && b.def);
    for (const field of ['squash', 'access', 'lines'] as const) {
      assert.equal(a.def[field], b.def[field], `${field}: one object for both files`);
      assert.ok(Object.isFrozen(a.def[field]), `${field} is frozen`);
    }
    assert.equal(a.errors, b.errors);
    assert.ok(Object.isFrozen(a.errors) && a.errors.length === 0);
    assert.deepEqual({ ...a.def.lines }, { '': 1, uid_map: 2, gid_map: 3 });
    // What a file sets is its own.
    const c = parse(text(300000, '[squash]\nmode = all\n[access]\nusers = alice\n'), 'c.conf');
    assert.deepEqual(c.def!.squash, { mode: 'all', anonuid: 65534, anongid: 65534 });
    assert.deepEqual(c.def!.access, { uids: [1001], gids: [] });
    assert.deepEqual(a.def.squash, { mode: 'root', anonuid: 65534, anongid: 65534 }, 'the shared default is unchanged');
    assert.deepEqual(a.def.access, { uids: [], gids: [] });
    const d = parse(`[context]\n\nuid_map = 0 400000 65536\ngid_map = 0 400000 65536\n`, 'd.conf');
    assert.deepEqual({ ...d.def!.lines }, { '': 1, uid_map: 3, gid_map: 4 }, 'another layout, its own lines');
    // A [delegate] section's lines are its own, by the section they are in: the same keys and lines
    // under the other section are another layout.
    const withDelegate = (order: string) => parse(`[context]\nuid_map = 0 500000 65536\ngid_map = 0 500000 65536\n${order}`, 'e.conf').def!.lines;
    const e = withDelegate('[delegate]\ncgroup = yes\n');
    assert.deepEqual({ ...e }, { '': 1, uid_map: 2, gid_map: 3, 'delegate.': 4, 'delegate.cgroup': 5 });
    assert.equal(withDelegate('[delegate]\ncgroup = yes\n'), e, 'the same layout: the same table');
    assert.deepEqual({ ...withDelegate('\n[delegate]\ncgroup = yes\n') }, { '': 1, uid_map: 2, gid_map: 3, 'delegate.': 5, 'delegate.cgroup': 6 });
  });

  it("a context its file decides is its definition, not a copy (issue 26: a second copy of each was a sixth of the live heap); one of root nested in another takes its parent's setgroups", () => {
    const files = {
      'top.conf': '[context]\nsetgroups = deny\nuid_map = 0 100000 65536, 65536 1000 1\ngid_map = 0 100000 65536, 65536 1000 1\n',
      'kid.conf': '[context]\nparent = top\nuid_map = 0 1 100\ngid_map = 0 1 100\n',
      'hers.conf': '[context]\nparent = top\nowner = hpa\nuid_map = 0 200 100\ngid_map = 0 200 100\n',
      'free.conf': '[context]\nuid_map = 0 300000 65536\ngid_map = 0 300000 65536\n',
    };
    const defs = Object.entries(files).map(([name, text]) => parse(text, name).def!);
    const errors: ConfigError[] = [];
    const r = finishContexts(linkContexts(defs, errors).defs, new Map(), errors, { inForce: new Map(), allocations: new Map(), delegations: HPA_SUBIDS });
    assert.deepEqual(errors.map(formatConfigError), []);
    const byLabel = new Map(r.contexts.map((c) => [c.label, c]));
    const def = (label: string) => defs.find((d) => d.label === label)!;
    for (const label of ['top', 'hers', 'free']) assert.equal(byLabel.get(label), def(label), `${label}: the definition itself`);
    assert.notEqual(byLabel.get('kid'), def('kid'), "kid's setgroups follows its parent's: a context of its own");
    assert.equal(def('kid').setgroups, null);
    assert.equal(byLabel.get('kid')!.setgroups, 'deny', 'under a parent that denies setgroups');
    assert.equal(byLabel.get('free')!.setgroups, 'allow');
    // uid_map and gid_map written alike: one map, holding just its extent.
    assert.equal(def('free').uidMap, def('free').gidMap);
  });

  it('reads a full context with defaults filled in', () => {
    const { def, errors } = one('[context]\nowner = hpa\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n[access]\nusers = alice\ngroups = backup\n');
    assert.deepEqual(errors, []);
    assert.equal(def!.label, 'x');
    assert.equal(def!.parent, 'host');
    assert.deepEqual(def!.owner, { uid: 1000, gid: 1000, name: 'hpa' });
    assert.equal(def!.setgroups, 'deny', 'an owner other than root: deny, whatever the parent');
    const nested = (owner: string) => one(`[context]\nparent = p\n${owner}uid_map = 0 100000 65536\ngid_map = 0 100000 65536\n`).def!.setgroups;
    assert.equal(nested(''), null, "root's nested context: decided with the parent (finishContexts)");
    assert.equal(nested('owner = hpa\n'), 'deny');
    assert.equal(one('[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n').def!.setgroups, 'allow', "root's top-level context: allow");
    assert.equal(
      all({ 'x.conf': '[context]\nowner = hpa\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n' }).contexts[0].setgroups,
      'deny',
      'setgroups defaults to deny for a non-root owner',
    );
    assert.equal(def!.create, 'lazy');
    assert.deepEqual(def!.squash, { mode: 'root', anonuid: 65534, anongid: 65534 });
    assert.deepEqual(def!.access, { uids: [1001], gids: [34] });
    assert.deepEqual(def!.uidMap, [{ inside: 0, outside: 100000, count: 65536 }]);
  });

  it('defaults setgroups to allow for a root owner and honours label =', () => {
    const { contexts } = all({ 'x.conf': '[context]\nlabel = other\nuid_map = 0 100000 10\ngid_map = 0 100000 10\n' });
    assert.equal(contexts[0].setgroups, 'allow');
    assert.equal(contexts[0].label, 'other');
  });

  it('accepts inline comments and comma-separated extents', () => {
    const { def, errors } = one('[context]\nuid_map = 0 100000 10, 10 200000 5 ; two extents\ngid_map = 0 100000 15\n');
    assert.deepEqual(errors, []);
    assert.equal(def!.uidMap!.length, 2);
  });

  it('reads a section whose header carries a comment or stands indented (its values were lost: "needs a value")', () => {
    for (const header of ['[context] # the backup', '  [context]', '[context]\t; note', '[ context ]']) {
      const { def, errors } = one(`${header}\nuid_map = 0 100000 10\ngid_map = 0 100000 10\n`);
      assert.deepEqual(errors, [], header);
      assert.deepEqual(def?.uidMap, [{ inside: 0, outside: 100000, count: 10 }], header);
    }
  });

  const cases: [string, string, RegExp][] = [
    ['unknown key', '[context]\nuid_map = 0 1 1\ngid_map = 0 1 1\ncolour = red\n', /x\.conf: \[context\] colour: unknown key .*\(line 4\)$/],
    ['unknown section', '[context]\nuid_map = 0 1 1\ngid_map = 0 1 1\n[extra]\n', /\[extra\]: unknown section .*\(line 4\)/],
    ['key twice', '[context]\nuid_map = 0 1 1\nuid_map = 0 2 1\ngid_map = 0 1 1\n', /\[context\] uid_map: is set twice \(first at line 2\) \(line 3\)/],
    ['key without value', '[context]\nuid_map =\ngid_map = 0 1 1\n', /\[context\] uid_map: needs a value: write key = value \(line 2\)/],
    ['line without "="', '[context]\nuid_map 0 1 1\ngid_map = 0 1 1\n', /^\/etc\/userns\.d\/x\.conf: is not "key = value": the "=" is missing \(line 2\)$/],
    [
      'header without "]"',
      '[context\nuid_map = 0 1 1\ngid_map = 0 1 1\n',
      /^\/etc\/userns\.d\/x\.conf: a section header must be "\[name\]" alone on its line \(the closing "\]" is missing\) \(line 1\)$/,
    ],
    [
      'key before section',
      'uid_map = 0 1 1\n[context]\n',
      /x\.conf: uid_map: stands before any \[section\]: put it under the section it belongs to \(line 1\)/,
    ],
    ['missing [context]', '[squash]\nmode = all\n', /\[context\]: missing/],
    ['missing gid_map', '[context]\nuid_map = 0 1 1\n', /\[context\] gid_map: missing/],
    ['count 0', '[context]\nuid_map = 0 100 0\ngid_map = 0 1 1\n', /uid_map: .*count 0 \(line 2\)/],
    ['32-bit overflow', '[context]\nuid_map = 0 4294967000 1000\ngid_map = 0 1 1\n', /uid_map: .*runs past the largest id/],
    ['inside overlap', '[context]\nuid_map = 0 100 10, 5 200 10\ngid_map = 0 1 1\n', /uid_map: extents 1 and 2 overlap on the inside side/],
    ['outside overlap', '[context]\nuid_map = 0 100 10\ngid_map = 0 100 10, 20 105 10\n', /gid_map: extents 1 and 2 overlap on the outside side/],
    ['not numbers', '[context]\nuid_map = a b c\ngid_map = 0 1 1\n', /uid_map: "a b c" must be three non-negative decimal numbers/],
    ['negative', '[context]\nuid_map = -1 5 5\ngid_map = 0 1 1\n', /uid_map: .*non-negative/],
    [
      'unknown owner',
      '[context]\nowner = nosuchuser\nuid_map = 0 1 1\ngid_map = 0 1 1\n',
      /\[context\] owner: unknown user "nosuchuser".*getent passwd nosuchuser\) \(line 2\)/,
    ],
    [
      'unknown access group',
      '[context]\nuid_map = 0 1 1\ngid_map = 0 1 1\n[access]\ngroups = backup, nosuchgroup\n',
      /\[access\] groups: unknown group "nosuchgroup"/,
    ],
    ['bad squash mode', '[context]\nuid_map = 0 1 1\ngid_map = 0 1 1\n[squash]\nmode = some\n', /\[squash\] mode: must be one of none, root, all/],
    ['range with uid_map', '[context]\nrange = auto\nuid_map = 0 1 1\n', /uid_map: cannot be combined with range = auto/],
    ['size without auto', '[context]\nuid_map = 0 1 1\ngid_map = 0 1 1\nsize = 10\n', /size: only applies with range = auto/],
    ['reserved label', '[context]\nlabel = host\nuid_map = 0 1 1\ngid_map = 0 1 1\n', /"host" is reserved/],
    ['bad label', '[context]\nlabel = ../etc\nuid_map = 0 1 1\ngid_map = 0 1 1\n', /\[context\] label: "\.\.\/etc": a label cannot start with "\."/],
    ['__proto__ key', '[context]\n__proto__ = 1\nuid_map = 0 1 1\ngid_map = 0 1 1\n', /\[context\] __proto__: unknown key/],
    // (uid_t) -1 is "no id" to the kernel: setresuid(-1, ...) and chown(-1) change nothing, so an
    // owner of 4294967295 would leave the namespace to root. Never a user, a group or anonuid.
    [
      'owner (uid_t) -1',
      '[context]\nowner = 4294967295\nuid_map = 0 1 1\ngid_map = 0 1 1\n',
      /\[context\] owner: 4294967295 is \(uid_t\) -1, which the kernel reads as "no id": not a user \(line 2\)/,
    ],
    ['anonuid (uid_t) -1', '[context]\nuid_map = 0 1 1\ngid_map = 0 1 1\n[squash]\nanonuid = 4294967295\n', /\[squash\] anonuid: 4294967295 is \(uid_t\) -1/],
    [
      'anongid (gid_t) -1',
      '[context]\nuid_map = 0 1 1\ngid_map = 0 1 1\n[squash]\nanongid = 4294967295\n',
      /\[squash\] anongid: 4294967295 is \(gid_t\) -1, which the kernel reads as "no id": not a group/,
    ],
    [
      'access user (uid_t) -1',
      '[context]\nuid_map = 0 1 1\ngid_map = 0 1 1\n[access]\nusers = alice, 4294967295\n',
      /\[access\] users: 4294967295 is \(uid_t\) -1/,
    ],
    [
      'access group (gid_t) -1',
      '[context]\nuid_map = 0 1 1\ngid_map = 0 1 1\n[access]\ngroups = 4294967295\n',
      /\[access\] groups: 4294967295 is \(gid_t\) -1/,
    ],
  ];
  for (const [name, text, re] of cases) {
    it(`refuses ${name}`, () => {
      const { def, errors } = one(text);
      assert.equal(def, null, 'a file with an error yields no context');
      assert.ok(
        errors.some((e) => re.test(e)),
        `expected ${re} in:\n${errors.join('\n')}`,
      );
    });
  }

  it('accepts the largest id, 4294967294, as an owner (one below (uid_t) -1)', () => {
    const { def, errors } = one('[context]\nowner = 4294967294\nuid_map = 0 1 1\ngid_map = 0 1 1\n');
    assert.deepEqual(errors, []);
    assert.equal(def?.owner.uid, 4294967294);
  });

  it('refuses 341 extents and accepts 340', () => {
    const ext = (n: number) => Array.from({ length: n }, (_, i) => `${i * 10} ${100000 + i * 10} 10`).join(', ');
    assert.match(one(`[context]\nuid_map = ${ext(341)}\ngid_map = 0 1 1\n`).errors.join('\n'), /341 extents; the kernel accepts at most 340/);
    assert.deepEqual(one(`[context]\nuid_map = ${ext(340)}\ngid_map = 0 100000 3400\n`).errors, []);
  });

  it('derives the label from the file name and refuses a bad one', () => {
    const r = parse('[context]\nuid_map = 0 1 1\ngid_map = 0 1 1\n', '-bad.conf');
    assert.match(r.errors.map(formatConfigError).join(), /file name gives the label "-bad"/);
  });
});

describe('config: INI syntax errors', () => {
  for (const [name, text, said] of [
    [
      'a header without its "]"',
      '[context\nuid_map = 0 1 1\ngid_map = 0 1 1\n',
      'a section header must be "[name]" alone on its line (the closing "]" is missing) (line 1)',
    ],
    ['a line without "="', '[context]\nuid_map 0 1 1\ngid_map = 0 1 1\n', 'is not "key = value": the "=" is missing (line 2)'],
    ['a line without a key', '[context]\n= 0 1 1\nuid_map = 0 1 1\ngid_map = 0 1 1\n', 'is not "key = value": the key before "=" is missing (line 2)'],
  ] as const) {
    it(`says what is wrong at its line, once, for ${name}, and nothing "missing" after it`, () => {
      const { def, errors } = one(text);
      assert.equal(def, null);
      assert.deepEqual(errors, [`/etc/userns.d/x.conf: ${said}`]);
    });
  }
});

describe('config: an owner maps only host ids it was given (SPEC §12)', () => {
  const owned = (owner: string, uid: string, gid = uid, extra = '') => `[context]\nowner = ${owner}\nuid_map = ${uid}\ngid_map = ${gid}\n${extra}`;

  it('refuses a static map that covers other users, naming whose ids they are and what the owner was given', () => {
    const r = all({ 'a.conf': owned('alice', '0 1000 10', '0 1001 1') });
    assert.deepEqual(r.labels, []);
    assert.equal(r.errors.length, 1, r.errors.join('\n'));
    assert.match(
      r.errors[0],
      /a\.conf: \[context\] uid_map: maps host uids 1000, 1002-1009, which were not delegated to alice \(1000 is hpa's\): alice was given 1001 \(its own uid and its subuid entries\)/,
    );
  });

  it("accepts maps inside the owner's own ids and its subordinate ranges, at both ends, and refuses one id past them", () => {
    assert.deepEqual(all({ 'a.conf': owned('alice', '0 1001 1') }).errors, []);
    assert.deepEqual(all({ 'h.conf': owned('hpa', '0 100000 65536') }).errors, []);
    assert.deepEqual(all({ 'h.conf': owned('hpa', '0 1000 1, 1 100000 65536') }).errors, [], 'its own uid beside its range, in one map');
    for (const [uid, past] of [
      ['0 100000 65537', '165536'],
      ['0 99999 2', '99999'],
    ] as const) {
      const r = all({ 'h.conf': owned('hpa', uid) });
      assert.deepEqual(r.labels, [], uid);
      assert.match(r.errors.join('\n'), new RegExp(`uid_map: maps host uids ${past}, which were not delegated to hpa`), uid);
    }
    assert.match(
      all({ 'h.conf': owned('hpa', '0 100000 65536', '0 99999 1') }).errors.join('\n'),
      /gid_map: maps host gids 99999, which were not delegated to hpa: hpa was given 1000, 100000-165535 \(its own gid and its subgid entries\)/,
    );
  });

  it('refuses an absurd map for an owner (4,000,000,000 ids), however it is written', () => {
    const r = all({ 'h.conf': owned('hpa', '0 100000 4000000000') });
    assert.deepEqual(r.labels, []);
    assert.match(r.errors.join('\n'), /uid_map: maps host uids 165536-4000099999, which were not delegated to hpa/);
  });

  it('owner_ids = any lets the admin vouch for a map: accepted, and said as a notice that names the ids', () => {
    const r = all({ 'a.conf': owned('alice', '0 1000 10', '0 1001 1', 'owner_ids = any\n') });
    assert.deepEqual(r.errors, []);
    assert.deepEqual(r.labels, ['a']);
    assert.deepEqual(r.notices.map(formatConfigError), [
      "/etc/userns.d/a.conf: [context] owner_ids: any: the owner may use ids it was not given: uid_map maps host uids 1000, 1002-1009, which were not delegated to alice (1000 is hpa's) (line 5)",
    ]);
    assert.deepEqual(all({ 'a.conf': owned('alice', '0 1001 1', '0 1001 1', 'owner_ids = any\n') }).notices, [], 'no notice when nothing is beyond');
  });

  it('judges a nested context by its own owner: the same owner nests freely, another owner only inside what it was given', () => {
    const p = owned('hpa', '0 100000 65536');
    const kid = (extra: string) => `[context]\nparent = p\nuid_map = 0 1000 100\ngid_map = 0 1000 100\n${extra}`;
    assert.deepEqual(
      all({ 'p.conf': p, 'c.conf': kid('owner = hpa\n') }).errors.filter((e) => !/is not mapped in parent/.test(e)),
      [],
    );
    assert.deepEqual(all({ 'p.conf': p, 'c.conf': kid('') }).errors, [], "the parent's root owns it: inside the parent's ids");
    const root = '[context]\nuid_map = 0 200000 65536\ngid_map = 0 200000 65536\n';
    const r = all({ 'p.conf': root, 'c.conf': `[context]\nparent = p\nowner = 201005\nuid_map = 0 1000 100\ngid_map = 0 1000 100\n` });
    assert.deepEqual(r.labels, ['p']);
    assert.match(
      r.errors.join('\n'),
      /c\.conf: \[context\] uid_map: maps host uids 201000-201004, 201006-201099, which were not delegated to 201005: 201005 was given 201005/,
    );
  });

  it("leaves range = auto alone: the range usernsd allocates is the owner's delegation", () => {
    const r = all({ 'a.conf': '[context]\nowner = alice\nrange = auto\n' });
    assert.ok(!r.errors.some((e) => /not delegated/.test(e)), r.errors.join('\n'));
  });
});

describe('config: nesting rules', () => {
  const parent = (extra: string) => `[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n${extra}`;
  const child = (extra: string) => `[context]\nparent = p\nuid_map = 0 1000 100\ngid_map = 0 1000 100\n${extra}`;

  it('a nested context inherits setgroups = deny from its parent, whoever owns it', () => {
    const r = all({ 'p.conf': parent('owner = hpa\n'), 'c.conf': child('') });
    assert.deepEqual(r.errors, []);
    assert.deepEqual(
      r.contexts.map((c) => `${c.label}:${c.setgroups}`),
      ['p:deny', 'c:deny'],
    );
  });

  it('refuses an explicit setgroups = allow under a deny parent, saying why', () => {
    const r = all({ 'p.conf': parent('setgroups = deny\n'), 'c.conf': child('setgroups = allow\n') });
    assert.deepEqual(r.labels, ['p']);
    assert.match(
      r.errors.join('\n'),
      /c\.conf: \[context\] setgroups: cannot be allow: parent "p" has setgroups = deny, and the kernel refuses allow under deny/,
    );
  });

  it("refuses a nested owner the parent does not map (the parent's own owner is such a user), and accepts one it maps", () => {
    const refused = all({ 'p.conf': parent('owner = hpa\n'), 'c.conf': child('owner = hpa\n') });
    assert.deepEqual(refused.labels, ['p']);
    assert.match(
      refused.errors.join('\n'),
      /c\.conf: \[context\] owner: hpa \(host uid 1000\) is not mapped in parent "p": the owner of a nested context is a host user whose ids the parent maps/,
    );
    // (uid 100005 was given nothing: the admin vouches for the child's ids, SPEC §12)
    const ok = all({ 'p.conf': parent(''), 'c.conf': child('owner = 100005\nowner_ids = any\n') });
    assert.deepEqual(ok.errors, []);
    assert.deepEqual(ok.labels, ['p', 'c']);
  });

  it("refuses a nested context under a parent that does not map id 0 (its maps are written as the parent's root)", () => {
    const r = all({ 'p.conf': '[context]\nuid_map = 1 100000 65535\ngid_map = 0 100000 65536\n', 'c.conf': child('') });
    assert.match(r.errors.join('\n'), /c\.conf: \[context\] uid_map: parent "p" does not map uid 0/);
  });
});

describe('config: the contexts in force keep their ids', () => {
  const finish = (files: Record<string, string>, prior: Parameters<typeof finishContexts>[3]) => {
    const r = all(files, prior);
    return { ...r, labels: [...r.labels].sort() };
  };
  const proj = '[context]\nuid_map = 0 4000000 65536\ngid_map = 0 4000000 65536\n';
  const overlap = '[context]\nuid_map = 0 4000100 10\ngid_map = 0 4000100 10\n';

  it('refuses the newcomer that sorts first, not the context in force', () => {
    const before = finish({ 'proj.conf': proj }, undefined);
    const after = finish(
      { 'aa-overlap.conf': overlap, 'proj.conf': proj },
      { inForce: new Map(before.contexts.map((c) => [c.label, c])), allocations: new Map() },
    );
    assert.deepEqual(after.labels, ['proj']);
    assert.match(after.errors.join('\n'), /aa-overlap\.conf: \[context\] uid_map: host uids 4000100-4000109 are already used by context "proj"/);
  });

  it('a context in force whose ids changed is a newcomer with them: a file sorting first that takes them wins', () => {
    const before = finish({ 'proj.conf': proj }, undefined);
    const moved = '[context]\nuid_map = 0 4100000 10\ngid_map = 0 4100000 10\n';
    const after = finish({ 'aa.conf': moved, 'proj.conf': moved }, { inForce: new Map(before.contexts.map((c) => [c.label, c])), allocations: new Map() });
    assert.deepEqual(after.labels, ['aa']);
    assert.match(after.errors.join('\n'), /proj\.conf: \[context\] uid_map: host uids 4100000-4100009 are already used by context "aa"/);
  });

  it('keeps a context whose file broke at its last good version, and its ids stay claimed', () => {
    const before = finish({ 'proj.conf': proj }, undefined);
    const after = finish(
      { 'proj.conf': proj + 'bogus = 1\n', 'zz.conf': overlap },
      { inForce: new Map(before.contexts.map((c) => [c.label, c])), allocations: new Map() },
    );
    assert.deepEqual(after.labels, ['proj']);
    assert.deepEqual(after.kept, ['proj']);
    assert.match(after.errors.join('\n'), /zz\.conf: .*already used by context "proj"/);
  });

  it('keeps the old ids of a pinned context whose ids changed claimed until it is released (found by the model-based test)', () => {
    const before = finish({ 'aa.conf': '[context]\nuid_map = 0 4200000 10\ngid_map = 0 4200000 10\n' }, undefined);
    const files = {
      'aa.conf': '[context]\nuid_map = 0 4000000 10\ngid_map = 0 4000000 10\n',
      'proj.conf': '[context]\nuid_map = 0 4200000 10\ngid_map = 0 4200000 10\n',
    };
    const inForce = new Map(before.contexts.map((c) => [c.label, c]));
    const pinned = finish(files, {
      inForce,
      allocations: new Map(),
      pinned: new Map([['aa', { uidMap: before.contexts[0].uidMap, gidMap: before.contexts[0].gidMap }]]),
    });
    assert.deepEqual(pinned.labels, ['aa']);
    assert.match(
      pinned.errors.join('\n'),
      /proj\.conf: \[context\] uid_map: host uids 4200000-4200009 are already used by the pinned namespace of "aa", whose ids changed \(release it first: usernsctl release aa\)/,
    );
    const released = finish(files, { inForce, allocations: new Map(), pinned: new Map() });
    assert.deepEqual(released.labels, ['aa', 'proj'], 'once released, the ids are free');
  });

  it('refuses a static range on a recorded allocation, even of a context that is gone', () => {
    const r = finish(
      { 'aa.conf': '[context]\nuid_map = 0 600000 10\ngid_map = 0 600000 10\n' },
      { inForce: new Map(), allocations: new Map([['images', { start: 589824, size: 65536 }]]) },
    );
    assert.deepEqual(r.labels, []);
    assert.match(r.errors.join('\n'), /host uids 600000-600009 are already used by the range allocated to "images" \(range = auto/);
  });
});

describe('config: checks across files', () => {
  it('refuses overlapping static host ranges, naming both, and keeps the first', () => {
    const r = all({
      'a.conf': '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n',
      'b.conf': '[context]\nuid_map = 0 165000 65536\ngid_map = 0 300000 65536\n',
    });
    assert.deepEqual(r.labels, ['a']);
    assert.match(r.errors.join('\n'), /b\.conf: \[context\] uid_map: host uids 165000-165535 are already used by context "a" \(\/etc\/userns\.d\/a\.conf\)/);
  });

  it('allows a nested context inside its parent and composes its host ids', () => {
    const errors: ConfigError[] = [];
    const defs = ['[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n', '[context]\nparent = a\nuid_map = 0 1000 100\ngid_map = 0 1000 100\n'].map(
      (t, i) => parse(t, `${'ab'[i]}.conf`).def!,
    );
    const { contexts, hostMaps } = finishContexts(linkContexts(defs, errors).defs, new Map(), errors);
    assert.deepEqual(errors, []);
    assert.deepEqual(
      contexts.map((c) => c.label),
      ['a', 'b'],
    );
    assert.deepEqual(hostMaps.get('b')!.uid, [{ inside: 0, outside: 101000, count: 100 }]);
    // A top-level context's host maps are its own maps, kept nowhere else (issue 26: a reload that
    // changed maps copied an entry per context); a nested one's are kept, composed.
    assert.ok(hostMaps instanceof HostMapsOf);
    assert.deepEqual([...hostMaps.nested.keys()], ['b']);
    assert.equal(hostMaps.get('a')!.uid, contexts[0].uidMap);
    assert.equal(hostMaps.get('a')!.gid, contexts[0].gidMap);
    assert.deepEqual([...hostMaps.keys()], ['a', 'b'], 'every accepted context, parents first');
    assert.equal(hostMaps.size, 2);
    assert.equal(hostMaps.get('nobody'), undefined);
    // A context made from inside (Registry.admit): the nested ones copied, the view over the new contexts.
    const kid = { ...contexts[1], label: 'kid' };
    const withKid = HostMapsOf.changed(hostMaps, new Map([...contexts.map((c) => [c.label, c] as const), ['kid', kid]]), (m) =>
      m.set('kid', hostMaps.get('b')!),
    );
    assert.deepEqual([...withKid.keys()], ['a', 'b', 'kid']);
    assert.deepEqual([...hostMaps.keys()], ['a', 'b'], 'the view before is unchanged');
  });

  it('refuses a nested map that uses ids its parent does not map', () => {
    const r = all({
      'a.conf': '[context]\nuid_map = 0 100000 1000\ngid_map = 0 100000 1000\n',
      'b.conf': '[context]\nparent = a\nuid_map = 0 500 1000\ngid_map = 0 0 10\n',
    });
    assert.deepEqual(r.labels, ['a']);
    assert.match(r.errors.join('\n'), /b\.conf: \[context\] uid_map: outside uids 1000-1499 are not mapped inside parent "a"/);
  });

  it('refuses siblings that overlap inside their parent', () => {
    const r = all({
      'a.conf': '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n',
      'b.conf': '[context]\nparent = a\nuid_map = 0 1000 100\ngid_map = 0 1000 100\n',
      'c.conf': '[context]\nparent = a\nuid_map = 0 1050 100\ngid_map = 0 2000 100\n',
    });
    assert.deepEqual(r.labels, ['a', 'b']);
    assert.match(r.errors.join('\n'), /c\.conf: .*parent "a" uids 1050-1099 are already used by context "b"/);
  });

  it('refuses host root for a non-root owner, also through the parent chain', () => {
    const r = all({
      'a.conf': '[context]\nowner = hpa\nuid_map = 0 0 1\ngid_map = 0 100000 10\n',
      'p.conf': '[context]\nuid_map = 0 0 65536\ngid_map = 0 0 65536\n',
      'q.conf': '[context]\nparent = p\nowner = hpa\nuid_map = 0 10 5\ngid_map = 0 0 5\n',
    });
    assert.deepEqual(r.labels, ['p']);
    assert.match(r.errors.join('\n'), /a\.conf: \[context\] uid_map: maps host uid 0 \(root\) into a context owned by hpa/);
    assert.match(r.errors.join('\n'), /q\.conf: \[context\] gid_map: maps host gid 0 \(root\) into a context owned by hpa/);
  });

  it('refuses a missing parent, a cycle, a duplicate label, and the children of a bad parent', () => {
    const m = '\nuid_map = 0 0 1\ngid_map = 0 0 1\n';
    const r = all({
      'a.conf': `[context]\nparent = nope${m}`,
      'b.conf': `[context]\nparent = c${m}`,
      'c.conf': `[context]\nparent = b${m}`,
      'd.conf': `[context]\nparent = a${m}`,
      'e.conf': `[context]\nlabel = f\nuid_map = 0 10 1\ngid_map = 0 10 1\n`,
      'f.conf': `[context]\nuid_map = 0 20 1\ngid_map = 0 20 1\n`,
    });
    const text = r.errors.join('\n');
    assert.deepEqual(r.labels, ['f']);
    assert.match(text, /a\.conf: \[context\] parent: parent "nope" is not a configured context/);
    assert.match(text, /parents form a cycle/);
    assert.match(text, /d\.conf: \[context\] parent: parent "a" is not valid/);
    assert.match(text, /f\.conf: \[context\] label: label "f" is already defined by \/etc\/userns\.d\/e\.conf/);
  });

  it('gives errors judged across files the line of the key they are about, as the README promises', () => {
    const r = all(
      {
        'a.conf': '# a comment\n[context]\n\nparent = nope\nuid_map = 0 0 1\ngid_map = 0 0 1\n',
        'x.conf': '[context]\nuid_map = 0 500000 100\ngid_map = 0 500000 100\n',
        'y.conf': "[context]\n; shares x's ids\ngid_map = 0 600000 100\nuid_map = 0 500050 100\n",
        'z.conf': '[context]\nowner = alice\nrange = auto\n',
      },
      { inForce: new Map(), allocations: new Map([['z', { start: 100000000, size: 65536 }]]) },
    );
    const text = r.errors.join('\n');
    assert.match(text, /a\.conf: \[context\] parent: parent "nope" is not a configured context \(line 4\)/);
    assert.match(
      text,
      /y\.conf: \[context\] uid_map: host uids 500050-500099 are already used by context "x" \(\/etc\/userns\.d\/x\.conf\): give one of them other ids \(line 4\)/,
    );
  });
});

/** A pool of two slots of 65,536 ids, and an auto label whose hash names the first: where a static range meets it. */
const TWO_SLOTS = (() => {
  const [first, second] = [20 * 65536, 21 * 65536];
  const label = Array.from({ length: 100 }, (_, i) => `auto${i}`).find((l) => hashSlot(l, 2) === 0)!;
  return { first, second, label, settings: `[pool]\nrange = ${first}-${second + 65535}\n` };
})();

describe('config: files on disk', () => {
  let tree: Tree;
  beforeEach(() => {
    tree = makeTree();
  });
  afterEach(() => tree.remove());

  it('ignores a group-writable file with an error and keeps the others', function () {
    if (process.getuid!() !== 0) this.skip(); // files must be root-owned: needs root
    tree.context('good.conf', '[context]\nuid_map = 0 100000 10\ngid_map = 0 100000 10\n');
    const bad = tree.context('bad.conf', '[context]\nuid_map = 0 200000 10\ngid_map = 0 200000 10\n', 0o664);
    const cfg = loadConfiguration(tree.config, { record: false, systemIds: noSystemIds });
    assert.deepEqual([...cfg.contexts.keys()], ['good']);
    assert.equal(cfg.errors.length, 1);
    assert.match(formatConfigError(cfg.errors[0]), new RegExp(`^${bad}: is writable by group or others \\(mode 664\\): ignored \\(chmod go-w`));
  });

  it('refuses a file larger than the limit, a sparse 3 GB one too, at once and naming the limit', async function () {
    if (process.getuid!() !== 0) this.skip();
    tree.context('good.conf', '[context]\nuid_map = 0 100000 10\ngid_map = 0 100000 10\n');
    const big = tree.context('big.conf', '[context]\nuid_map = 0 200000 10\ngid_map = 0 200000 10\n' + '; padding\n'.repeat(8000));
    const sparse = tree.context('sparse.conf', '');
    truncateSync(sparse, 3 * 2 ** 30);
    const started = performance.now();
    for (const cfg of [
      loadConfiguration(tree.config, { record: false, systemIds: noSystemIds }),
      await loadConfigurationAsync(tree.config, { record: false, systemIds: noSystemIds }),
    ]) {
      assert.deepEqual([...cfg.contexts.keys()], ['good']);
      const text = cfg.errors.map(formatConfigError).join('\n');
      assert.match(text, new RegExp(`^${big}: is \\d+ bytes, more than the ${MAX_CONFIG_FILE_BYTES} a configuration file may have: ignored$`, 'm'));
      assert.match(text, new RegExp(`^${sparse}: is 3221225472 bytes, more than the ${MAX_CONFIG_FILE_BYTES}`, 'm'));
    }
    assert.ok(performance.now() - started < 2000, 'nothing of the big files was read');
  });

  it('refuses a context file that is a symbolic link, and prints nothing of what it points to', function () {
    if (process.getuid!() !== 0) this.skip();
    const secret = join(tree.dir, 'secret');
    writeFileSync(secret, '[context]\nroot-password-hash = x\n', { mode: 0o600 });
    symlinkSync(secret, join(tree.contexts, 'link.conf'));
    const cfg = loadConfiguration(tree.config, { record: false, systemIds: noSystemIds });
    const text = cfg.errors.map(formatConfigError).join('\n');
    assert.match(text, /link\.conf: is a symbolic link: refused/);
    assert.doesNotMatch(text, /root-password-hash/);
  });

  it('reports at most a bounded number of errors per file, without recursing per error', function () {
    if (process.getuid!() !== 0) this.skip();
    const keys = Array.from({ length: 6000 }, (_, i) => `k${i} = 1`).join('\n');
    const f = tree.context('many.conf', `[context]\n${keys}\n`);
    const cfg = loadConfiguration(tree.config, { record: false, systemIds: noSystemIds });
    const mine = cfg.errors.filter((e) => e.file === f);
    assert.equal(mine.length, MAX_ERRORS_PER_FILE + 1);
    assert.match(formatConfigError(mine.at(-1)!), /\d+ more errors in this file are not shown: fix these first/);
  });

  it('keeps auto ranges off the ids of a static file refused for now, so that fixing it finds them free', function () {
    if (process.getuid!() !== 0) this.skip(); // files must be root-owned: needs root
    // The refused file asks for the first slot, and the auto label's hash picks it too.
    const { first, second, label } = TWO_SLOTS;
    const t = makeTree(TWO_SLOTS.settings);
    try {
      // hpa was given no ids: its context is refused until the admin adds its /etc/subuid line.
      t.context('owned.conf', `[context]\nowner = hpa\nuid_map = 0 ${first} 65536\ngid_map = 0 ${first} 65536\n`);
      t.context(`${label}.conf`, '[context]\nrange = auto\n');
      const load = () => loadConfiguration(t.config, { record: true, systemIds: noSystemIds, nss: testNss });
      const before = load();
      assert.deepEqual([...before.contexts.keys()], [label]);
      assert.match(before.errors.map(formatConfigError).join('\n'), /owned\.conf.*not delegated to hpa/);
      assert.deepEqual(before.allocations.get(label), { start: second, size: 65536 }, 'the other slot, not the one the refused file names');
      t.delegate('hpa', first, 65536);
      const after = load();
      assert.deepEqual(after.errors, []);
      assert.deepEqual([...after.contexts.keys()].sort(), [label, 'owned'].sort());
      assert.equal(after.contexts.get('owned')!.uidMap[0].outside, first);
    } finally {
      t.remove();
    }
  });

  it('keeps auto ranges off the ids of a context kept at its last good version while its file is broken', function () {
    if (process.getuid!() !== 0) this.skip(); // files must be root-owned: needs root
    const { first, second, label } = TWO_SLOTS;
    const t = makeTree(TWO_SLOTS.settings);
    try {
      t.context('static.conf', `[context]\nuid_map = 0 ${first} 65536\ngid_map = 0 ${first} 65536\n`);
      const load = (inForce?: ReadonlyMap<string, Context>) => loadConfiguration(t.config, { record: true, systemIds: noSystemIds, nss: testNss, inForce });
      const before = load();
      assert.deepEqual([...before.contexts.keys()], ['static']);
      // Its file broken (a typo) in the same reload that brings an auto context whose hash names its slot.
      t.context('static.conf', `[context]\nuid_map = 0 ${first} 65536\ngid_map = 0 ${first} 65536\nbogus\n`);
      t.context(`${label}.conf`, '[context]\nrange = auto\n');
      const after = load(before.contexts);
      assert.deepEqual(
        after.kept,
        ['static'],
        `the context in force keeps its last good version: ${JSON.stringify([[...after.contexts.keys()], after.errors.map(formatConfigError)])}`,
      );
      assert.equal(after.contexts.get('static')?.uidMap[0].outside, first);
      assert.deepEqual(after.allocations.get(label), { start: second, size: 65536 }, 'the auto range takes the other slot');
    } finally {
      t.remove();
    }
  });

  it('ignores a file not owned by root', function () {
    if (process.getuid!() !== 0) this.skip(); // chown needs root
    const f = tree.context('mine.conf', '[context]\nuid_map = 0 100000 10\ngid_map = 0 100000 10\n');
    chownSync(f, 65534, 65534);
    const cfg = loadConfiguration(tree.config, { record: false, systemIds: noSystemIds });
    assert.equal(cfg.contexts.size, 0);
    assert.match(formatConfigError(cfg.errors[0]), /is owned by uid 65534, not root: ignored \(chown root/);
  });

  it('reports a broken usernsd.conf key and uses the default for it', () => {
    const t = makeTree('log_level = loud\n[pool]\nrange = 10-5\n');
    try {
      const cfg = loadConfiguration(t.config, { record: false, systemIds: noSystemIds });
      const text = cfg.errors.map(formatConfigError).join('\n');
      // The line the key is on, counted in the file as written (makeTree puts seven [agent] keys first).
      const line = readFileSync(t.config, 'utf8').split('\n').indexOf('log_level = loud') + 1;
      assert.equal(line, 9);
      assert.match(
        text,
        new RegExp(`usernsd\\.conf: \\[agent\\] log_level: must be one of fatal, error, warn, info, debug, trace \\(got "loud"\\) \\(line ${line}\\)`),
      );
      assert.match(text, /\[pool\] range: must be "FIRST-LAST"/);
      assert.equal(cfg.agent.logLevel, 'info');
      assert.equal(cfg.agent.contexts, t.contexts, 'good keys still apply');
    } finally {
      t.remove();
    }
  });

  it('reports an explicit --config file that does not exist', () => {
    const cfg = loadConfiguration(`${tree.dir}/absent.conf`, { record: false, systemIds: noSystemIds });
    assert.match(formatConfigError(cfg.errors[0]), /absent\.conf: cannot open: ENOENT/);
  });

  it('leaves files that do not end in .conf alone', () => {
    tree.context('a.conf.example', 'garbage');
    tree.context('a.conf~', 'garbage');
    const cfg = loadConfiguration(tree.config, { record: false, systemIds: noSystemIds });
    assert.deepEqual(cfg.errors, []);
  });
});

describe('config: ini reader', () => {
  it('skips full-line comments (# and ;, indented or not) and blank lines; an inline comment ends a value', () => {
    const text = '# a comment\n; another\n   # indented\n\n[context]\n\t; indented by a tab\nuid_map = 0 1 1 ; the map\n# uid_map = 9 9 9\ngid_map = 0 1 1\n';
    const { doc, errors, syntax } = parseIni('/f', text);
    assert.deepEqual(errors, []);
    assert.equal(syntax, false);
    assert.deepEqual([...doc.sections.keys()], ['context']);
    assert.deepEqual(
      [...doc.sections.get('context')!.keys].map(([k, v]) => [k, v.value, v.line]),
      [
        ['uid_map', '0 1 1', 7],
        ['gid_map', '0 1 1', 9],
      ],
    );
  });

  it('says which line is not "key = value", and which header is broken', () => {
    const { errors, syntax } = parseIni('/f', '[context]\nuid_map 0 1 1\n= 5\n[broken\nx = 1\n[a] b\n');
    assert.equal(syntax, true);
    assert.deepEqual(errors.map(formatConfigError), [
      '/f: is not "key = value": the "=" is missing (line 2)',
      '/f: is not "key = value": the key before "=" is missing (line 3)',
      '/f: a section header must be "[name]" alone on its line (the closing "]" is missing) (line 4)',
      '/f: a section header must be "[name]" alone on its line (text follows the "]") (line 6)',
    ]);
  });

  it('reads only regular files, through no symlink, and leaves no descriptor open whatever happens', async function () {
    if (process.getuid?.() !== 0) this.skip(); // a file owned by root is the rule: root makes them
    const tree = makeTree();
    try {
      const good = tree.context('good.conf', '[context]\nuid_map = 0 1 1\ngid_map = 0 1 1\n');
      symlinkSync(good, join(tree.contexts, 'link.conf'));
      const fds = () => readdirSync('/proc/self/fd').length;
      const before = fds();
      for (let i = 0; i < 50; i++) {
        for (const read of [readConfigText, (f: string) => readConfigTextAsync(f)]) {
          assert.equal(typeof (await read(good)), 'string');
          assert.match(formatConfigError((await read(tree.contexts)) as ConfigError), /is not a regular file$/);
          assert.match(formatConfigError((await read('/dev/null')) as ConfigError), /is not a regular file$/);
          assert.match(formatConfigError((await read(join(tree.contexts, 'link.conf'))) as ConfigError), /is a symbolic link: refused/);
          assert.match(formatConfigError((await read(join(tree.contexts, 'none.conf'))) as ConfigError), /cannot open: ENOENT$/);
        }
      }
      assert.equal(fds(), before, 'no descriptor left open by 500 reads, good and refused');
    } finally {
      tree.remove();
    }
  });

  it("caps a file's errors at MAX_ERRORS_PER_FILE exactly, counting the rest; a file at the size limit is read, one byte more is not", async function () {
    const lines = (n: number) => `[context]\n${Array.from({ length: n }, (_, i) => `k${i} 1`).join('\n')}\n`;
    assert.equal(capErrors('/f', parseIni('/f', lines(MAX_ERRORS_PER_FILE)).errors).length, MAX_ERRORS_PER_FILE, 'exactly the cap: all shown, no count');
    const over = capErrors('/f', parseIni('/f', lines(MAX_ERRORS_PER_FILE + 3)).errors);
    assert.equal(over.length, MAX_ERRORS_PER_FILE + 1);
    assert.equal(formatConfigError(over.at(-1)!), '/f: 3 more errors in this file are not shown: fix these first');
    if (process.getuid?.() !== 0) this.skip(); // root-owned files are the rule: root makes them
    const tree = makeTree();
    try {
      const head = '[context]\n# ';
      const at = tree.context('at.conf', head + 'x'.repeat(MAX_CONFIG_FILE_BYTES - head.length - 1) + '\n');
      const past = tree.context('past.conf', head + 'x'.repeat(MAX_CONFIG_FILE_BYTES - head.length) + '\n');
      for (const read of [readConfigText, (f: string) => readConfigTextAsync(f)]) {
        assert.equal(((await read(at)) as string).length, MAX_CONFIG_FILE_BYTES);
        assert.match(
          formatConfigError((await read(past)) as ConfigError),
          new RegExp(`is ${MAX_CONFIG_FILE_BYTES + 1} bytes, more than the ${MAX_CONFIG_FILE_BYTES}`),
        );
      }
    } finally {
      tree.remove();
    }
  });

  it('reads headers and values as written around them: blanks trimmed, a comment after a header, names in messages', () => {
    const { doc, errors } = parseIni('/f', '  [ context ]   ; the context\n uid_map =   0 1 1   \n[x] # more\n');
    assert.deepEqual(errors, []);
    assert.deepEqual([...doc.sections.keys()], ['context', 'x']);
    assert.deepEqual(doc.sections.get('context')!.keys.get('uid_map'), { value: '0 1 1', line: 2 });
    assert.equal(parseIni('/f', 'a[b]\n').errors.map(formatConfigError)[0], '/f: is not "key = value": the "=" is missing (line 1)');
    assert.equal(formatConfigError({ file: '/f', section: 'context', key: 'uid_map', line: 3, message: 'm' }), '/f: [context] uid_map: m (line 3)');
    assert.equal(formatConfigError({ file: '/f', section: null, key: 'uid_map', line: null, message: 'm' }), '/f: uid_map: m');
    assert.equal(formatConfigError({ file: '/f', section: 'context', key: null, line: null, message: 'm' }), '/f: [context]: m');
  });

  it('reports a section given twice', () => {
    const { errors } = parseIni('/f', '[a]\nx = 1\n[a]\ny = 2\n');
    assert.match(formatConfigError(errors[0]), /^\/f: \[a\]: section appears twice \(first at line 1\): merge them \(line 3\)$/);
  });
});

describe('config: [delegate], what a context is given beyond ids (SPEC §13)', () => {
  const ctx = (delegate: string, context = 'uid_map = 0 3000000 65536\ngid_map = 0 3000000 65536\n') => one(`[context]\n${context}[delegate]\n${delegate}\n`);

  it('reads every key, with defaults, and gives nothing for a section that asks for nothing', () => {
    const { def, errors } = ctx(
      'cgroup = yes\ncgroup_limits = memory.max=1G  pids.max=512\ndevices = /dev/loop7 /dev/net/tun\ndirectories = /srv/a/\nexec_start = /usr/lib/x/zone\nexec_stop = /usr/lib/x/unzone\nexec_timeout = 5',
    );
    assert.deepEqual(errors, []);
    assert.deepEqual(def!.delegate, {
      cgroup: true,
      cgroupLimits: [
        { file: 'memory.max', value: '1G' },
        { file: 'pids.max', value: '512' },
      ],
      netns: false,
      veth: false,
      tap: null,
      devices: ['/dev/loop7', '/dev/net/tun'],
      directories: ['/srv/a'],
      execStart: '/usr/lib/x/zone',
      execStop: '/usr/lib/x/unzone',
      execTimeoutMs: 5000,
    });
    assert.equal(ctx('devices = /dev/loop7').def!.delegate!.execTimeoutMs, 30_000);
    assert.deepEqual((({ netns, veth, tap }) => ({ netns, veth, tap }))(ctx('netns = yes\nveth = yes\ntap = tap-ctx.0').def!.delegate!), {
      netns: true,
      veth: true,
      tap: 'tap-ctx.0',
    });
    assert.equal(ctx('cgroup = no').def!.delegate, undefined);
    assert.equal(ctx('exec_timeout = 9').def!.delegate, undefined);
    assert.equal(one('[context]\nuid_map = 0 3000000 65536\ngid_map = 0 3000000 65536\n').def!.delegate, undefined);
  });

  it('refuses a limit on anything but a controller file, a value that could carry more, a limit twice, and limits without a cgroup', () => {
    for (const [line, why] of [
      ['cgroup_limits = cgroup.procs=1', /"cgroup\.procs=1" is not FILE=VALUE with FILE a controller's file/],
      ['cgroup_limits = memory.max', /"memory\.max" is not FILE=VALUE/],
      ['cgroup_limits = ../memory.max=1', /is not FILE=VALUE/],
      ['cgroup_limits = memory.max=1\\n2', /the value may hold only letters, digits/],
      ['cgroup_limits = memory.max=$(id)', /the value may hold only/],
      ['cgroup_limits = pids.max=1 pids.max=2', /sets pids\.max twice/],
    ] as const) {
      const { def, errors } = ctx(`cgroup = yes\n${line}`);
      assert.equal(def, null, line);
      assert.match(errors.join('\n'), why, line);
    }
    assert.match(
      ctx('cgroup_limits = pids.max=5').errors.join('\n'),
      /\[delegate\] cgroup_limits: limits are written into the context's cgroup: set cgroup = yes too/,
    );
  });

  it('refuses relative paths, "/", "..", a path twice and more than 16 of them', () => {
    assert.match(ctx('devices = dev/loop7').errors.join(), /must be an absolute path/);
    assert.match(ctx('directories = /').errors.join(), /must not be "\/"/);
    assert.match(ctx('directories = /srv/../etc').errors.join(), /without "\.\."/);
    assert.match(ctx('devices = /dev/a /dev/a').errors.join(), /names \/dev\/a twice/);
    const many = Array.from({ length: 17 }, (_, i) => `/srv/d${i}`).join(' ');
    assert.match(ctx(`directories = ${many}`).errors.join(), /lists 17 paths; at most 16/);
    assert.deepEqual(ctx(`directories = ${many.split(' ').slice(0, 16).join(',')}`).errors, []);
  });

  it('refuses a veth without its network namespace, and a tap name the kernel would not take', () => {
    assert.match(
      ctx('veth = yes').errors.join(),
      /\[delegate\] veth: the veth pair's inner end goes into the context's network namespace: set netns = yes too/,
    );
    assert.match(ctx('netns = yes\ntap = 0123456789abcdef').errors.join(), /tap: must be an interface name of 1-15 letters/);
    assert.match(ctx('netns = yes\ntap = a/b').errors.join(), /must be an interface name/);
    assert.match(ctx('netns = maybe').errors.join(), /must be one of yes, no/);
    assert.deepEqual(ctx('netns = yes\ntap = 0123456789abcde').errors, [], '15 characters are the most, and enough');
  });

  it("refuses a device, a tap or a directory another context is given (or a directory inside another's), naming it; the context in force keeps it", () => {
    const file = (base: number, delegate: string) => `[context]\nuid_map = 0 ${base} 65536\ngid_map = 0 ${base} 65536\n[delegate]\n${delegate}\n`;
    const r = all({
      'a.conf': file(3000000, 'devices = /dev/loop7\ntap = tap0\ndirectories = /srv/a'),
      'b.conf': file(3100000, 'devices = /dev/loop7'),
      'c.conf': file(3200000, 'netns = yes\ntap = tap0'),
      'd.conf': file(3300000, 'directories = /srv/a/data'),
      'e.conf': file(3400000, 'directories = /srv'),
      'f.conf': file(3500000, 'directories = /srv/ab\ndevices = /dev/loop8'),
    });
    assert.deepEqual(r.labels, ['a', 'f']);
    assert.deepEqual(r.errors, [
      '/etc/userns.d/b.conf: [delegate] devices: device /dev/loop7 is given to context "a" already: a resource follows one label; give it to one of them (line 5)',
      '/etc/userns.d/c.conf: [delegate] tap: tap tap0 is given to context "a" already: a resource follows one label; give it to one of them (line 6)',
      '/etc/userns.d/d.conf: [delegate] directories: directory /srv/a/data (it and /srv/a lie one inside the other) is given to context "a" already: a resource follows one label; give it to one of them (line 5)',
      '/etc/userns.d/e.conf: [delegate] directories: directory /srv (it and /srv/a lie one inside the other) is given to context "a" already: a resource follows one label; give it to one of them (line 5)',
    ]);
  });

  it("holds an owner's contexts to 16 cgroups and 16 interfaces together, refusing the newcomer; root's are the admin's own", () => {
    const owned = (i: number, delegate: string) =>
      `[context]\nowner = hpa\nlabel = h${String(i).padStart(2, '0')}\nuid_map = 0 ${100000 + i * 10} 10\ngid_map = 0 ${100000 + i * 10} 10\n[delegate]\n${delegate}\n`;
    const files = (n: number, delegate: string) =>
      Object.fromEntries(Array.from({ length: n }, (_, i) => [`h${String(i).padStart(2, '0')}.conf`, owned(i, delegate)]));
    const cg = all(files(17, 'cgroup = yes'));
    assert.equal(cg.labels.length, 16);
    assert.deepEqual(cg.errors, ["/etc/userns.d/h16.conf: [delegate] cgroup: hpa's contexts hold 16 cgroups already, the most one owner is given (line 7)"]);
    const nets = all(
      Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`h${String(i).padStart(2, '0')}.conf`, owned(i, `netns = yes\nveth = yes\ntap = tap${i}`)])),
    );
    assert.equal(nets.labels.length, 8, '8 contexts of two interfaces each');
    assert.match(nets.errors.join(), /h08\.conf: \[delegate\] tap: hpa's contexts hold 16 network interfaces already; 16 is the most one owner is given/);
    const rooted = (i: number) =>
      `[context]\nlabel = r${i}\nuid_map = 0 ${4000000 + i * 10} 10\ngid_map = 0 ${4000000 + i * 10} 10\n[delegate]\ncgroup = yes\n`;
    assert.equal(all(Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`r${i}.conf`, rooted(i)]))).labels.length, 20);
  });

  it("needs the context's root mapped: everything is given to it", () => {
    assert.match(ctx('cgroup = yes', 'uid_map = 1 3000000 10\ngid_map = 0 3000000 10\n').errors.join(), /\[delegate\].*must map inside id 0/);
    assert.match(ctx('cgroup = yes', 'uid_map = 0 3000000 10\ngid_map = 5 3000000 10\n').errors.join(), /must map inside id 0/);
    assert.deepEqual(ctx('cgroup = yes', 'range = auto\n').errors, []);
  });

  it('gives a device to an owned context only where the admin vouches for it (owner_ids = any), said as a notice every time', () => {
    const owned = (extra: string) => `[context]\nowner = hpa\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\n${extra}[delegate]\ndevices = /dev/loop7\n`;
    const refused = all({ 'a.conf': owned('') });
    assert.deepEqual(refused.labels, []);
    assert.match(
      refused.errors.join(),
      /\[delegate\] devices: a device node is host access an ordinary user does not have: the context is owned by hpa, so devices need owner_ids = any/,
    );
    const vouched = all({ 'a.conf': owned('owner_ids = any\n') });
    assert.deepEqual(vouched.errors, []);
    assert.deepEqual(vouched.labels, ['a']);
    assert.match(
      vouched.notices.map(formatConfigError).join(),
      /\[delegate\] devices: the owner's context root is given host devices \/dev\/loop7 \(owner_ids = any\)/,
    );
    // A cgroup, directories and hooks are nothing an ordinary user could not be given: no vouching.
    assert.deepEqual(all({ 'b.conf': owned('').replace('devices = /dev/loop7', 'cgroup = yes\ndirectories = /srv/hpa') }).errors, []);
  });
});

describe('config: contexts made from inside, recorded in the state directory (SPEC §14)', () => {
  let tree: Tree;
  beforeEach(function () {
    if (process.getuid!() !== 0) this.skip(); // records, like files, must be root's
    tree = makeTree();
  });
  afterEach(() => tree?.remove());
  const record = (label: string, body: string, name = `${label}.conf`) => {
    mkdirSync(join(tree.state, 'children'), { recursive: true, mode: 0o700 });
    writeFileSync(join(tree.state, 'children', name), `[context]\nlabel = ${label}\n${body}`, { mode: 0o600 });
  };
  const load = () => {
    const cfg = loadConfiguration(tree.config, { record: false, systemIds: noSystemIds, nss: testNss });
    return { cfg, labels: [...cfg.contexts.keys()], errors: cfg.errors.map(formatConfigError), notices: cfg.notices.map(formatConfigError) };
  };

  it('loads them nested under the file context, at most its children = of them (in name order), as runtime and judged like files', () => {
    tree.context('L.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\nchildren = 2\n');
    record('L.a', 'parent = L\nuid_map = 0 1000 10\ngid_map = 0 1000 10\ncreate = eager\n');
    record('L.a.b', 'parent = L.a\nuid_map = 0 1 5\ngid_map = 0 1 5\n');
    record('L.c', 'parent = L\nuid_map = 0 2000 10\ngid_map = 0 2000 10\n');
    const { cfg, labels, errors } = load();
    assert.deepEqual(labels, ['L', 'L.a', 'L.a.b']);
    assert.equal(cfg.contexts.get('L.a')!.runtime, true);
    assert.equal(cfg.contexts.get('L')!.runtime, undefined);
    assert.equal(cfg.contexts.get('L')!.children, 2);
    assert.equal(errors.length, 1);
    assert.match(
      errors[0],
      /L\.c\.conf: \[context\]( line \d+)?: context "L" allows 2 context\(s\) made from inside it \(children = in .*L\.conf\), and this one is beyond them/,
    );
  });

  it("none without children =; a file of the same label wins (a notice); a record at the top, misnamed or beyond its parent's ids is refused", () => {
    tree.context('L.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\nchildren = 5\n');
    tree.context('M.conf', '[context]\nuid_map = 0 200000 65536\ngid_map = 0 200000 65536\n');
    tree.context('L.f.conf', '[context]\nparent = L\nuid_map = 0 7000 10\ngid_map = 0 7000 10\n');
    record('M.a', 'parent = M\nuid_map = 0 1000 10\ngid_map = 0 1000 10\n');
    record('L.f', 'parent = L\nuid_map = 0 9000 10\ngid_map = 0 9000 10\n');
    record('top', 'uid_map = 0 300000 10\ngid_map = 0 300000 10\n');
    record('L.n', 'parent = L\nuid_map = 0 1000 10\ngid_map = 0 1000 10\n', 'L.other.conf');
    record('L.wide', 'parent = L\nuid_map = 0 60000 10000\ngid_map = 0 1000 10\n');
    const { labels, errors, notices, cfg } = load();
    assert.deepEqual([...labels].sort(), ['L', 'L.f', 'M']);
    assert.equal(cfg.contexts.get('L.f')!.file, join(tree.contexts, 'L.f.conf'), 'the file wins');
    assert.equal(notices.length, 1);
    assert.match(notices[0], /L\.f\.conf: .*context "L\.f" is defined by .*userns\.d\/L\.f\.conf, which wins over this context made from inside/);
    const text = errors.join('\n');
    assert.match(text, /M\.a\.conf: .*context "M" allows 0 context\(s\) made from inside it/);
    assert.match(text, /top\.conf: .*a context made from inside is nested in the context it was made from/);
    assert.match(text, /L\.other\.conf: .*named after its label \(L\.n\.conf\)/);
    assert.match(text, /L\.wide\.conf: .*uid_map.*outside uids 65536-69999 are not mapped inside parent "L"/);
    assert.equal(errors.length, 4, text);
  });

  it('judges one new record against its ancestors and siblings in force, as a reload would, reading no file', () => {
    tree.context('L.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\nchildren = 5\n');
    tree.context('L.f.conf', '[context]\nparent = L\nuid_map = 0 7000 10\ngid_map = 0 7000 10\n');
    const { cfg } = load();
    // A file broken since the last load is not this judgement's business: nothing is read again.
    tree.context('L.conf', '[context]\nuid_map = garbage\n');
    const judge = (label: string, map: string) =>
      judgeRuntimeChild(
        cfg.agent,
        cfg.contexts,
        join(tree.state, 'children', `${label}.conf`),
        `[context]\nlabel = ${label}\nparent = L\nuid_map = ${map}\ngid_map = ${map}\n`,
        testNss,
      );
    const ok = judge('L.a', '0 1000 10');
    assert.ok('context' in ok, JSON.stringify(ok));
    assert.equal(ok.context.runtime, true);
    assert.deepEqual(ok.host.uid, [{ inside: 0, outside: 101000, count: 10 }]);
    const overlap = judge('L.b', '0 7005 10');
    assert.ok('errors' in overlap);
    assert.match(formatConfigError(overlap.errors[0]), /parent "L" uids 7005-7009 are already used by context "L\.f"/);
    const wide = judge('L.c', '0 65530 10');
    assert.ok('errors' in wide);
    assert.match(formatConfigError(wide.errors[0]), /outside uids 65536-65539 are not mapped inside parent "L"/);
  });

  it("child_ranges = N allocates N more ranges with the context's own, mapped one to one, for what is made inside it; only with range = auto", () => {
    tree.context('A.conf', '[context]\nrange = auto\nsize = 1000\nchild_ranges = 2\nchildren = 1\n');
    tree.context('S.conf', '[context]\nuid_map = 0 100000 10\ngid_map = 0 100000 10\nchild_ranges = 1\n');
    const { cfg, errors } = load();
    const a = cfg.contexts.get('A')!;
    const start = a.uidMap[0].outside;
    assert.deepEqual(a.uidMap, [
      { inside: 0, outside: start, count: 1000 },
      { inside: start + 1000, outside: start + 1000, count: 2000 },
    ]);
    assert.deepEqual(a.gidMap, a.uidMap);
    assert.deepEqual(cfg.allocations.get('A'), { start, size: 3000 }, 'one block: its own range and the two for its children');
    assert.equal(errors.length, 1);
    assert.match(errors[0], /S\.conf: \[context\] child_ranges( line \d+)?: only applies with range = auto/);
    // A context made inside it may take a whole range of its own there.
    const kid = judgeRuntimeChild(
      cfg.agent,
      cfg.contexts,
      join(tree.state, 'children', 'A.k.conf'),
      `[context]\nlabel = A.k\nparent = A\nuid_map = 0 ${start + 2000} 1000\ngid_map = 0 ${start + 2000} 1000\n`,
      testNss,
    );
    assert.ok('context' in kid, JSON.stringify(kid));
    assert.deepEqual(kid.host.uid, [{ inside: 0, outside: start + 2000, count: 1000 }], 'its host ids are the ids it was given');
  });

  it("a record may be given a cgroup inside its parent's, when the parent has one, and nothing else of the host's", () => {
    tree.context('L.conf', '[context]\nuid_map = 0 100000 65536\ngid_map = 0 100000 65536\nchildren = 5\n[delegate]\ncgroup = yes\n');
    tree.context('M.conf', '[context]\nuid_map = 0 200000 65536\ngid_map = 0 200000 65536\nchildren = 5\n');
    const kid = (label: string, parent: string, base: number, delegate: string) =>
      record(label, `parent = ${parent}\nuid_map = 0 ${base} 10\ngid_map = 0 ${base} 10\n[delegate]\n${delegate}\n`);
    kid('L.c', 'L', 1000, 'cgroup = yes');
    kid('L.net', 'L', 2000, 'netns = yes');
    kid('L.dir', 'L', 3000, `directories = ${tree.dir}/d`);
    kid('M.c', 'M', 1000, 'cgroup = yes');
    const { labels, errors } = load();
    assert.deepEqual([...labels].sort(), ['L', 'L.c', 'M']);
    const text = errors.join('\n');
    assert.match(text, /L\.net\.conf: \[delegate\].*a context made from inside may be given a cgroup inside its parent's, nothing else/);
    assert.match(text, /L\.dir\.conf: \[delegate\].*nothing else of the host's/);
    assert.match(text, /M\.c\.conf: \[delegate\] cgroup.*its parent "M" has no cgroup to give a part of/);
    assert.equal(errors.length, 3, text);
  });
});

describe('config: a context compared with its record', () => {
  // Every field, so that a field added to Context breaks this until RECORDED_FIELDS names it.
  const full: Required<Context> = {
    label: 'a',
    file: '/etc/userns.d/a.conf',
    parent: 'host',
    owner: { uid: 1000, gid: 1000, name: 'hpa' },
    uidMap: [{ inside: 0, outside: 100000, count: 65536 }],
    gidMap: [{ inside: 0, outside: 100000, count: 65536 }],
    autoSize: null,
    setgroups: 'deny',
    create: 'lazy',
    squash: { mode: 'root', anonuid: 65534, anongid: 65534 },
    access: { uids: [1001], gids: [34] },
    ownerIds: 'delegated',
    delegate: {
      cgroup: true,
      cgroupLimits: [],
      netns: false,
      veth: false,
      tap: null,
      devices: [],
      directories: [],
      execStart: null,
      execStop: null,
      execTimeoutMs: 30000,
    },
    children: 2,
    childRanges: 1,
    runtime: false,
    lines: { '': 1, uid_map: 2 },
  };
  const changed = (k: keyof Context): Context => {
    const v = full[k];
    const other: Record<keyof Context, unknown> = {
      ...full,
      label: 'b',
      file: '/etc/userns.d/b.conf',
      parent: 'p',
      owner: { ...full.owner, gid: 1001 },
      uidMap: [{ ...full.uidMap[0], count: 10 }],
      gidMap: [{ ...full.gidMap[0], outside: 200000 }],
      autoSize: 65536,
      setgroups: 'allow',
      create: 'eager',
      squash: { ...full.squash, anongid: 1 },
      access: { ...full.access, gids: [] },
      ownerIds: 'any',
      delegate: { ...full.delegate, execTimeoutMs: 1000 },
      children: 3,
      childRanges: 2,
      runtime: true,
      lines: { '': 1, uid_map: 3 },
    };
    assert.notDeepEqual(other[k], v);
    const c: Context = { ...full, [k]: other[k] };
    return c;
  };

  it('names every field of a context, and tells each one changed', () => {
    assert.deepEqual([...RECORDED_FIELDS].sort(), Object.keys(full).sort());
    assert.equal(sameRecorded(full, { ...full }), true);
    for (const k of RECORDED_FIELDS) assert.equal(sameRecorded(full, changed(k)), false, k);
  });

  it('a record without lines is the same context', () => {
    const recorded: Context = { ...full, lines: undefined };
    delete (recorded as { lines?: unknown }).lines;
    assert.equal(sameRecorded(full, recorded), true);
    assert.equal(sameRecorded(recorded, { ...full, lines: { x: 1 } }), true);
  });
});

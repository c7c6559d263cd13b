// What the local allocator keeps auto ranges off (staticHostMaps): every static file's host ids,
// judged or not. Whatever the files, each context the full judgement accepts (finishContexts) has
// exactly the host maps reserved for it, so no auto range can land on a static context in force;
// the reservation adds only what refused files ask for.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { finishContexts, staticHostMaps } from '../../config/judge.ts';
import { linkContexts, parseContextFile } from '../../config/load.ts';
import type { ConfigError, ContextDef } from '../../config/types.ts';
import { mapText } from '../helpers/arbitraries.ts';
import { testNss } from '../helpers/fixtures.ts';

const LABELS = ['a', 'b', 'c', 'd', 'e'] as const;

/**
 * A context file: host or another label as parent (so chains, cycles and missing parents), a map of
 * one or two extents from inside 0 (top-level ones near their own base, so most are disjoint; nested
 * ones in the ids a parent maps, mostly), or range = auto; owned by root, or by hpa, who was given no
 * ids (refused unless nested in its own).
 */
const arbFile = (label: string, base: number) =>
  fc
    .record({
      parent: fc.constantFrom('host', 'host', 'host', 'host', ...LABELS.filter((l) => l !== label)),
      auto: fc.constantFrom(false, false, false, true),
      extents: fc.array(fc.record({ gap: fc.nat(2), count: fc.integer({ min: 1, max: 3 }) }), { minLength: 1, maxLength: 2 }),
      owner: fc.constantFrom('', '', '', 'owner = hpa\n'),
    })
    .map(({ parent, auto, extents, owner }) => {
      const from = parent === 'host' ? base : 0;
      const map = mapText(from, extents);
      const body = auto && parent === 'host' ? 'range = auto\n' : `uid_map = ${map}\ngid_map = ${map}\n`;
      return `[context]\nparent = ${parent}\n${owner}${body}`;
    });

describe('property: the static ranges the local allocator keeps clear of', () => {
  it('reserves, for every context the judgement accepts, exactly the host maps it accepts it with', () => {
    let accepted = 0;
    fc.assert(
      fc.property(fc.tuple(...LABELS.map((l, i) => arbFile(l, 1_000_000 + i * 5000))), fc.subarray([...LABELS], { minLength: 1 }), (texts, present) => {
        const errors: ConfigError[] = [];
        const parsed: ContextDef[] = [];
        for (const label of present) {
          const r = parseContextFile(`/etc/userns.d/${label}.conf`, texts[LABELS.indexOf(label)], testNss, 65536);
          if ('def' in r && r.def) parsed.push(r.def);
        }
        const { defs } = linkContexts(parsed, errors);
        const reserved = staticHostMaps(defs);
        // What the allocator reserved before: the judgement with no range allocated yet.
        const judged = finishContexts(defs, new Map(), []);
        for (const [label, host] of judged.hostMaps) assert.deepEqual(reserved.get(label), host, label);
        accepted += judged.hostMaps.size;
      }),
      { numRuns: 500 },
    );
    assert.ok(accepted > 300, `the files were accepted often enough to say something (${accepted})`);
  });
});

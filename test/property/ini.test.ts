// parseIni's plain path (values taken as written, without the ini package) against the ini
// package itself, on texts made of what admins write and what trips INI parsers up.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseIni, valuesByIni } from '../../config/ini.ts';
import type { IniSection } from '../../config/ini.ts';

/** The values of a parse, as [section, key, value, line] rows. */
const rows = (sections: ReadonlyMap<string, IniSection>) => [...sections].flatMap(([name, s]) => [...s.keys].map(([k, v]) => [name, k, v.value, v.line]));

describe('property: ini', () => {
  it('every value is the one the ini package reads, whether the file was read plainly or by it', () => {
    // Files mostly written plainly, with now and then one thing that is not: each such thing must
    // either be read as ini reads it or send the whole file to ini.
    const plainName = fc.constantFrom('context', 'delegate', 'a-b', 'x_1');
    const oddName = fc.constantFrom('a.b', 'a\\.b', '__proto__', 'x y', '', 'ctx;1', '"q"', 'é', 'context[]');
    const plainKey = fc.constantFrom('uid_map', 'gid_map', 'owner', 'a.b', 'constructor', 'k-1');
    const oddKey = fc.constantFrom('k[]', '__proto__', 'x y', 'k;', '"k"', "'k'", 'k\\', 'é', 'k#');
    const plainValue = fc.constantFrom('0 65536 65536', '', 'alice', ' 1 2 3 ', '= more', 'x = y', 'trueish', 'nul');
    const oddValue = fc.oneof(
      fc.constantFrom('true', 'false', 'null', ' null ', '"quoted"', "'single'", 'a ; comment', 'a # c', 'a\\;b', 'x\\', '\u00a0v\ufeff'),
      fc.stringMatching(/^[ -~\u00a0\ufeff]{0,12}$/),
    );
    const pick = <T>(plain: fc.Arbitrary<T>, odd: fc.Arbitrary<T>) => fc.oneof({ arbitrary: plain, weight: 12 }, { arbitrary: odd, weight: 1 });
    const space = fc.constantFrom('', ' ', '  ', '\t', '\u00a0');
    const line = fc.oneof(
      {
        arbitrary: fc
          .tuple(space, pick(plainName, oddName), space, pick(fc.constant(''), fc.constantFrom(' # note', ' ; note', 'x')))
          .map(([a, n, b, c]) => `${a}[${n}]${b}${c}`),
        weight: 3,
      },
      { arbitrary: fc.tuple(space, pick(plainKey, oddKey), space, pick(plainValue, oddValue)).map(([a, k, b, v]) => `${a}${k}${b}=${v}`), weight: 8 },
      { arbitrary: fc.constantFrom('', '# comment', '; comment', '[broken', 'no equals', '= v', '   '), weight: 1 },
    );
    const eol = pick(fc.constantFrom('\n', '\n\n'), fc.constantFrom('\r\n', '\r'));
    fc.assert(
      fc.property(fc.array(fc.tuple(line, eol), { maxLength: 8 }), (parts) => {
        const text = parts.map(([l, e]) => l + e).join('');
        const { doc } = parseIni('/f', text);
        const byIni = new Map([...doc.sections].map(([n, s]) => [n, { line: s.line, keys: new Map(s.keys) }]));
        valuesByIni(text, text.split(/\r?\n/), byIni);
        assert.deepEqual(rows(doc.sections), rows(byIni), JSON.stringify(text));
      }),
      { numRuns: 3000 },
    );
  });

  it('a plainly written file is read plainly, and reads as written', () => {
    const { doc, errors } = parseIni('/f', '[context]\nuid_map = 0 65536 65536\n  gid_map=0 65536 65536  \nowner = alice\n');
    assert.deepEqual(errors, []);
    assert.deepEqual(rows(doc.sections), [
      ['context', 'uid_map', '0 65536 65536', 2],
      ['context', 'gid_map', '0 65536 65536', 3],
      ['context', 'owner', 'alice', 4],
    ]);
  });
});

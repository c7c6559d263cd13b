// What clients and files write is shown bounded and with its control characters escaped.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatConfigError } from '../../config/ini.ts';
import { escapeControls, MAX_MESSAGE_CHARS, MAX_SHOWN_CHARS, shown, shownName } from '../../config/text.ts';

const RAW_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029]/;

describe('shown(): client and file text in messages and logs', () => {
  it('never lets a control character through and stays within its bound, whatever the input', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 5000 }), (s) => {
        const out = shown(s);
        assert.ok(!RAW_CONTROL.test(out), JSON.stringify(out));
        assert.ok(out.length <= 6 * MAX_SHOWN_CHARS + 40, `${out.length} characters`);
      }),
    );
  });

  it('says how much it left out, and quotes what it keeps', () => {
    assert.equal(shown('abc'), '"abc"');
    assert.equal(shown('\u001b[31mred'), '"\\u001b[31mred"');
    assert.match(shown('x'.repeat(1_000_000)), /^"x{64}"… \(999936 more characters\)$/);
  });
});

describe('formatConfigError: file text in check-config output', () => {
  it('escapes control characters and bounds names and messages from a file', () => {
    // size 'max': fast-check's default size keeps strings short, and the bound is about long ones.
    const text = fc.string({ unit: 'binary', maxLength: 3000, size: 'max' });
    fc.assert(
      fc.property(text, text, (key, value) => {
        const line = formatConfigError({ file: '/etc/userns.d/x.conf', section: key, key, line: 3, message: `must be one of a, b (got "${value}")` });
        assert.ok(!RAW_CONTROL.test(line), JSON.stringify(line));
        assert.ok(line.length < 2500, `${line.length} characters`);
      }),
    );
  });

  it('cuts a message at MAX_MESSAGE_CHARS exactly, and one character shorter is whole', () => {
    const fmt = (message: string) => formatConfigError({ file: '/f', section: null, key: null, line: null, message });
    assert.equal(MAX_MESSAGE_CHARS, 1024);
    assert.equal(fmt('m'.repeat(1024)), `/f: ${'m'.repeat(1024)}`);
    assert.equal(fmt('m'.repeat(1025)), `/f: ${'m'.repeat(1024)}…`);
    assert.equal(fmt('m'.repeat(100_000)), `/f: ${'m'.repeat(1024)}…`);
  });

  it('escapes by name what JSON leaves raw (DEL, C1, the line separators), and cuts only past the bound', () => {
    assert.equal(shown('a\u0085b\u2028c\u007f'), '"a\\u0085b\\u2028c\\u007f"');
    assert.equal(shown('x'.repeat(MAX_SHOWN_CHARS)), `"${'x'.repeat(MAX_SHOWN_CHARS)}"`, 'exactly the bound: whole, nothing said left out');
    assert.equal(shown('x'.repeat(MAX_SHOWN_CHARS + 1)), `"${'x'.repeat(MAX_SHOWN_CHARS)}"… (1 more characters)`);
    assert.equal(escapeControls('a\u001bb\u0085c\td\ne'), 'a\\u001bb\\u0085c\td\ne', 'tab and newline are layout, kept');
  });

  it('shows a name plainly only when all of it looks like one: a tail of escapes or a 65th character makes it quoted', () => {
    assert.equal(shownName('uid_map'), 'uid_map');
    assert.equal(shownName('ok\u001b[31m'), '"ok\\u001b[31m"');
    assert.equal(shownName('k'.repeat(65)), shown('k'.repeat(65)));
    assert.notEqual(shownName('k'.repeat(65)), 'k'.repeat(65));
  });
});

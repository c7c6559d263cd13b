// The INI reader's edges (config/ini.ts) that mutation testing found unguarded (issue 27): where an
// error says it stands, files whose size fstat does not tell (procfs), a read that fails after the
// open, headers only at the start of a line, blanks inside brackets, quoted values, dotted sections.
import assert from 'node:assert/strict';
import {
  configError,
  formatConfigError,
  parseIni,
  readConfigFile,
  readConfigFileAsync,
  readConfigText,
  readConfigTextAsync,
  sameStamp,
} from '../../config/ini.ts';
import type { Stamp } from '../../config/ini.ts';

const values = (text: string) => {
  const r = parseIni('/f.conf', text);
  return {
    errors: r.errors.map(formatConfigError),
    keys: Object.fromEntries([...r.doc.sections].map(([name, s]) => [name, Object.fromEntries([...s.keys].map(([k, v]) => [k, v.value]))])),
  };
};

describe('unit: the INI reader, at its edges', () => {
  it('says where an error stands: section and key, the key alone, or the file alone', () => {
    assert.equal(formatConfigError(configError('/f', 'context', 'label', 3, 'm')), '/f: [context] label: m (line 3)');
    assert.equal(formatConfigError(configError('/f', null, 'label', 3, 'm')), '/f: label: m (line 3)');
    assert.equal(formatConfigError(configError('/f', 'context', null, null, 'm')), '/f: [context]: m');
    assert.equal(formatConfigError(configError('/f', null, null, null, 'm')), '/f: m');
  });

  // procfs files are regular, root's, and say size 0: what is read must still be bounded by fstat.
  it('refuses a file that holds more than fstat said when it was opened, both ways of reading', async () => {
    assert.equal(process.getuid?.(), 0, "the reader takes only root's files: this test runs as root, as CI does");
    const grew = '/proc/version: changed while it was read (it grew): ignored until the next reload';
    assert.equal(formatConfigError(readConfigText('/proc/version') as never), grew);
    assert.equal(formatConfigError((await readConfigTextAsync('/proc/version')) as never), grew);
    // An error is only an error: no text, no stamp for a cache to keep.
    for (const r of [readConfigFile('/proc/version'), await readConfigFileAsync('/proc/version')])
      assert.deepEqual(Object.keys(r).sort(), ['file', 'key', 'line', 'message', 'section']);
  });

  it('tells two versions of a file apart by any field of their stamps', () => {
    const a: Stamp = { dev: 1, ino: 2, mode: 0o100644, uid: 0, gid: 0, size: 10, mtimeMs: 5.5, ctimeMs: 6.5 };
    assert.equal(sameStamp(a, { ...a }), true);
    for (const k of Object.keys(a) as (keyof Stamp)[]) assert.equal(sameStamp(a, { ...a, [k]: a[k] + 1 }), false, k);
  });

  it('turns a read that fails after the open into an error naming the errno, both ways of reading', async () => {
    assert.equal(process.getuid?.(), 0);
    // Reading /proc/self/mem at offset 0 (an unmapped address) fails with EIO.
    assert.equal(formatConfigError(readConfigText('/proc/self/mem') as never), '/proc/self/mem: cannot read: EIO');
    assert.equal(formatConfigError((await readConfigTextAsync('/proc/self/mem')) as never), '/proc/self/mem: cannot read: EIO');
  });

  it('takes "[name]" as a header only at the start of a line: a value that ends in brackets stays a value', () => {
    assert.deepEqual(values('[s]\nk = [a]\nj = x [b] ; note\n'), { errors: [], keys: { s: { k: '[a]', j: 'x [b]' } } });
  });

  it('reads "[ name ]" as the section name, values included', () => {
    assert.deepEqual(values('[ context ]\nlabel = x\n'), { errors: [], keys: { context: { label: 'x' } } });
  });

  it('takes a quoted value without its quotes and without the blanks around it', () => {
    assert.deepEqual(values('[s]\nk = " a "\n').keys, { s: { k: 'a' } });
  });

  it('keeps the keys of a section with a dot in its name, without values (ini would nest it), and does not throw', () => {
    assert.deepEqual(values('[a.b]\nk = v\n'), { errors: [], keys: { 'a.b': { k: null } } });
  });
});

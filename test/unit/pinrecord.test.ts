// The records directory's format file: written whole or not at all, so a kill while it is written
// never stops the next start (found by the faults test: an empty file left by a kill read as "a
// format this usernsd does not know", and every start after refused).
import assert from 'node:assert/strict';
import { chmodSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { markRecordFormat, newerRecordFormat, RECORD_FORMAT } from '../../agent/kernel/pinrecord.ts';

describe('unit: the pin records format file', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'usernsd-records-'));
    chmodSync(dir, 0o700);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is written whole, with no temporary left, and kept as it is once there', () => {
    markRecordFormat(dir);
    assert.equal(readFileSync(join(dir, 'format'), 'utf8'), `${RECORD_FORMAT}\n`);
    assert.deepEqual(readdirSync(dir), ['format']);
    writeFileSync(join(dir, 'format'), '1\n');
    const before = lstatSync(join(dir, 'format')).ino;
    markRecordFormat(dir);
    assert.equal(lstatSync(join(dir, 'format')).ino, before, 'not rewritten');
    assert.equal(newerRecordFormat(dir), null);
  });

  it('an empty file (a write killed midway) is ours, not a newer format, and the next mark writes it whole', () => {
    writeFileSync(join(dir, 'format'), '');
    assert.equal(newerRecordFormat(dir), null);
    markRecordFormat(dir);
    assert.equal(readFileSync(join(dir, 'format'), 'utf8'), `${RECORD_FORMAT}\n`);
  });

  it('a newer format, or text that is none, still stops the start', () => {
    writeFileSync(join(dir, 'format'), '2\n');
    assert.match(newerRecordFormat(dir)!, /says format 2, written by a newer usernsd/);
    writeFileSync(join(dir, 'format'), 'x');
    assert.match(newerRecordFormat(dir)!, /is not a record format/);
  });

  it('never writes through a symlink planted as the format file', () => {
    const target = join(dir, 'elsewhere');
    writeFileSync(target, '');
    symlinkSync(target, join(dir, 'format'));
    markRecordFormat(dir);
    assert.equal(readFileSync(target, 'utf8'), '', 'the target is untouched');
    assert.equal(lstatSync(join(dir, 'format')).isFile(), true, 'the name is a file of ours now');
  });
});

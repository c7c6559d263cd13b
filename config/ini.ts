// Reading INI files: the ownership check, the `ini` parser for values, and line numbers for errors.
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import ini from 'ini';
import { escapeControls, MAX_MESSAGE_CHARS, shownName } from './text.ts';
import type { ConfigError } from './types.ts';

export type IniKey = { readonly value: string | null; readonly line: number };
export type IniSection = { readonly line: number; readonly keys: Map<string, IniKey> };
export type IniDoc = { readonly file: string; readonly sections: Map<string, IniSection> };

export function configError(file: string, section: string | null, key: string | null, line: number | null, message: string): ConfigError {
  return { file, section, key, line, message };
}

/**
 * `FILE: [section] key: message (line N)` — the one spelling every tool of ours prints. What came
 * from the file (a section or key name, a value quoted in the message) is bounded and has its
 * control characters escaped: a file of garbage cannot drive the admin's terminal or flood a log.
 */
export function formatConfigError(e: ConfigError): string {
  const where = [e.section !== null ? `[${shownName(e.section)}]` : null, e.key !== null ? shownName(e.key) : null].filter((x) => x !== null).join(' ');
  const message = e.message.length > MAX_MESSAGE_CHARS ? `${e.message.slice(0, MAX_MESSAGE_CHARS)}…` : e.message;
  return escapeControls(`${e.file}: ${where ? where + ': ' : ''}${message}${e.line !== null ? ` (line ${e.line})` : ''}`);
}

/** The largest settings or context file read: a context with 340 extents a map is under 20 KiB. */
export const MAX_CONFIG_FILE_BYTES = 64 * 1024;

/** Errors reported for one file; past this, one line says how many more there are. */
export const MAX_ERRORS_PER_FILE = 20;

/** Append `more` to `errors` without spreading it into arguments (a file can make 100,000 errors). */
export function appendErrors(errors: ConfigError[], more: readonly ConfigError[]): void {
  for (const e of more) errors.push(e);
}

/** A file's errors, at most MAX_ERRORS_PER_FILE of them and a line counting the rest. */
export function capErrors(file: string, errors: readonly ConfigError[]): ConfigError[] {
  if (errors.length <= MAX_ERRORS_PER_FILE) return [...errors];
  const out = errors.slice(0, MAX_ERRORS_PER_FILE);
  out.push(configError(file, null, null, null, `${errors.length - MAX_ERRORS_PER_FILE} more errors in this file are not shown: fix these first`));
  return out;
}

const OPEN_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW;

/** The open's failure as the admin should read it. */
function openProblem(file: string, err: unknown): ConfigError {
  const code = (err as NodeJS.ErrnoException).code ?? String(err);
  if (code === 'ELOOP')
    return configError(
      file,
      null,
      null,
      null,
      'is a symbolic link: refused (configuration files must be regular files owned by root; copy the file instead of linking it)',
    );
  return configError(file, null, null, null, `cannot open: ${code}`);
}

/**
 * The checks on an opened file, sshd's StrictModes: a regular file owned by root, not writable by
 * group or others, and not larger than MAX_CONFIG_FILE_BYTES. Null when it may be read.
 */
function statProblem(file: string, st: Pick<Stamp, 'mode' | 'uid' | 'size'>): ConfigError | null {
  if ((st.mode & constants.S_IFMT) !== constants.S_IFREG) return configError(file, null, null, null, 'is not a regular file');
  if (st.uid !== 0) return configError(file, null, null, null, `is owned by uid ${st.uid}, not root: ignored (chown root ${file})`);
  if ((st.mode & 0o022) !== 0)
    return configError(file, null, null, null, `is writable by group or others (mode ${(st.mode & 0o777).toString(8)}): ignored (chmod go-w ${file})`);
  if (st.size > MAX_CONFIG_FILE_BYTES)
    return configError(file, null, null, null, `is ${st.size} bytes, more than the ${MAX_CONFIG_FILE_BYTES} a configuration file may have: ignored`);
  return null;
}

const GREW = 'changed while it was read (it grew): ignored until the next reload';

/**
 * The text read into a buffer one byte larger than fstat's size (never over the limit + 1): a file
 * that grew since fstat fills it and is refused, as it may have grown past the limit. One read(2):
 * on a regular file (statProblem) it returns less than asked only at the end of the file, so the
 * second read that would return 0 is not made (a tenth of the time of reading a file).
 */
function textOf(file: string, buf: Buffer, n: number): string | ConfigError {
  if (n === buf.length) return configError(file, null, null, null, GREW);
  return buf.toString('utf8', 0, n);
}

/**
 * What identifies one version of a file: its inode, owner, mode, size and times. ctime moves with
 * every write, chmod, chown and rename onto the path, so a file whose stamp is unchanged holds what
 * it held when read (how make and git's index notice change without reading) — unless it was
 * written again within the same clock tick, which ParseCache guards against as git does.
 */
export type Stamp = {
  readonly dev: number;
  readonly ino: number;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly mtimeMs: number;
  readonly ctimeMs: number;
};

export function stampOf(st: Stats): Stamp {
  return newStamp(st.ino, st.ctimeMs, st.mtimeMs, st.size, st.dev, st.mode, st.uid, st.gid);
}

/**
 * A number that is a 32-bit integer as one: Node hands out a Stats' numbers (and the native reads
 * theirs) as doubles, and a field that has held a double keeps each value in a box of its own (16
 * bytes): a kept stamp was 216 bytes, six boxes of them for integers. Other values stay as they are.
 */
const int32 = (x: number): number => ((x | 0) === x ? x | 0 : x);

/** The one place a Stamp is made, so that every stamp has the same shape, its integers unboxed (int32). */
export function newStamp(ino: number, ctimeMs: number, mtimeMs: number, size: number, dev: number, mode: number, uid: number, gid: number): Stamp {
  return { dev: int32(dev), ino: int32(ino), mode: int32(mode), uid: int32(uid), gid: int32(gid), size: int32(size), mtimeMs, ctimeMs };
}

export function sameStamp(a: Stamp, b: Stamp): boolean {
  return (
    a.ino === b.ino &&
    a.ctimeMs === b.ctimeMs &&
    a.mtimeMs === b.mtimeMs &&
    a.size === b.size &&
    a.dev === b.dev &&
    a.mode === b.mode &&
    a.uid === b.uid &&
    a.gid === b.gid
  );
}

/** A file's text and the stamp of the descriptor it was read from. */
export type ReadFile = { readonly text: string; readonly stamp: Stamp };

/**
 * Read a configuration file the way sshd's StrictModes does (statProblem), never following a
 * symbolic link. The checks run on the opened descriptor, so a file swapped in between check and
 * read is not trusted; at most one byte past the limit is read, whatever the file's size.
 */
export function readConfigFile(file: string): ReadFile | ConfigError {
  let fd: number;
  try {
    fd = openSync(file, OPEN_FLAGS);
  } catch (err) {
    return openProblem(file, err);
  }
  try {
    const st = fstatSync(fd);
    const problem = statProblem(file, st);
    if (problem) return problem;
    const buf = Buffer.allocUnsafe(st.size + 1);
    return withStamp(textOf(file, buf, readSync(fd, buf, 0, buf.length, null)), st);
  } catch (err) {
    return configError(file, null, null, null, `cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  } finally {
    closeSync(fd);
  }
}

/**
 * A file read as readConfigFile reads it, but elsewhere (agent/kernel/reads.ts: a thread of the
 * native library), judged here as readConfigFile judges it: `openCode`, the open's errno name;
 * else the stamp of the opened file, `readCode` (fstat's or read's errno name), and the `n` bytes
 * read into `buf` (read only when the stamp shows nothing to refuse).
 */
export function judgeRead(file: string, openCode: string | null, stamp: Stamp, readCode: string | null, buf: Buffer, n: number): ReadFile | ConfigError {
  if (openCode !== null) return openProblem(file, { code: openCode });
  if (readCode !== null) return configError(file, null, null, null, `cannot read: ${readCode}`);
  const problem = statProblem(file, stamp);
  if (problem) return problem;
  if (n < 0) return configError(file, null, null, null, 'cannot read: EIO'); // not read, and nothing says why
  if (n > stamp.size) return configError(file, null, null, null, GREW);
  return { text: buf.toString('utf8', 0, n), stamp };
}

/** readConfigFile without blocking the event loop on the disk: the agent reads this way at a reload. */
export async function readConfigFileAsync(file: string): Promise<ReadFile | ConfigError> {
  let fh: FileHandle;
  try {
    fh = await open(file, OPEN_FLAGS);
  } catch (err) {
    return openProblem(file, err);
  }
  try {
    const st = await fh.stat();
    const problem = statProblem(file, st);
    if (problem) return problem;
    const buf = Buffer.allocUnsafe(st.size + 1);
    return withStamp(textOf(file, buf, (await fh.read(buf, 0, buf.length, null)).bytesRead), st);
  } catch (err) {
    return configError(file, null, null, null, `cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  } finally {
    await fh.close();
  }
}

function withStamp(text: string | ConfigError, st: Stats): ReadFile | ConfigError {
  return typeof text === 'string' ? { text, stamp: stampOf(st) } : text;
}

const textOnly = (r: ReadFile | ConfigError): string | ConfigError => ('text' in r ? r.text : r);

/** The text of readConfigFile. */
export function readConfigText(file: string): string | ConfigError {
  return textOnly(readConfigFile(file));
}

/** The text of readConfigFileAsync. */
export async function readConfigTextAsync(file: string): Promise<string | ConfigError> {
  return textOnly(await readConfigFileAsync(file));
}

/** A section header as a line may hold it: "[name]", blanks around the name, a comment after it. */
const HEADER = /^\[([^\]]*)\]\s*(?:[;#].*)?$/;

/** `text` with each section header written "[name]" (the `ini` package reads no other), given its lines. */
function plainHeaders(text: string, lines: readonly string[]): string {
  let plain: string[] | null = null;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i];
    if (!raw.includes('[')) continue;
    const h = HEADER.exec(raw.trim());
    if (!h) continue;
    const header = `[${h[1].trim()}]`;
    if (header === raw) continue;
    plain ??= lines.slice();
    plain[i] = header;
  }
  return plain === null ? text : plain.join('\n');
}

/**
 * Parse INI text. Values are the `ini` package's (quoting, escapes, inline comments); the line
 * scan beside it finds where each section and key stands, and what `ini` would silently accept but an
 * admin would not expect: keys before any section, repeated keys and repeated sections.
 *
 * A file written plainly (see plainValue: most files, every one usernsd writes) is not handed to the
 * `ini` package: each value is what it would read, the text after the "=", trimmed (the property test
 * in test/property/ini.test.ts holds the two to the same result): 5,000 such files parse in 18 ms
 * instead of 62 in a fresh process, and an agent's start on them is about 45 ms sooner (medians of 16
 * alternating starts). Anything else (a quote, an escape, an inline comment, a dotted or odd name, a
 * lone carriage return, an error the scan reports) is read by `ini`, as every file was before.
 */
export function parseIni(file: string, text: string): { doc: IniDoc; errors: ConfigError[]; syntax: boolean } {
  const errors: ConfigError[] = [];
  // The ini package takes a header only alone and unindented on its line: "[context] # note" and
  // "  [context]" would be keys to it, and the section's values lost. It reads the headers as the
  // line scan below accepts them, written out plainly.
  // Split once, for both passes; the text is rewritten only when a header is not written plainly
  // already (most files: 65,535 of them allocate about a tenth less to start).
  const lines = text.split(/\r?\n/);
  const sections = new Map<string, IniSection>();
  // Whether `ini` would read every value as its plain text (a lone "\r" ends a line for it, not for the scan).
  let plain = !text.includes('\r');
  let current: IniSection | null = null;
  let currentName = '';
  // After a broken header the keys that follow belong to no section we can name: they are not
  // reported again one by one, nor as "missing" from a section the admin did write.
  let swallowing = false;
  let syntax = false;
  const syntaxError = (key: string | null, line: number, message: string) => {
    syntax = true;
    errors.push(configError(file, null, key, line, message));
  };
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1;
    const s = lines[i].trim();
    if (s === '' || s.startsWith(';') || s.startsWith('#')) continue;
    if (s.startsWith('[')) {
      const header = HEADER.exec(s);
      if (!header) {
        syntaxError(
          null,
          line,
          `a section header must be "[name]" alone on its line (${s.includes(']') ? 'text follows the "]"' : 'the closing "]" is missing'})`,
        );
        current = null;
        swallowing = true;
        continue;
      }
      swallowing = false;
      currentName = header[1].trim();
      plain &&= PLAIN_SECTION.test(currentName) && currentName !== '__proto__';
      if (sections.has(currentName)) {
        errors.push(configError(file, currentName, null, line, `section appears twice (first at line ${sections.get(currentName)!.line}): merge them`));
        current = sections.get(currentName)!;
      } else {
        current = { line, keys: new Map() };
        sections.set(currentName, current);
      }
      continue;
    }
    if (swallowing) continue;
    const eq = s.indexOf('=');
    if (eq < 0) {
      syntaxError(null, line, 'is not "key = value": the "=" is missing');
      continue;
    }
    const key = s.slice(0, eq).trim();
    if (key === '') {
      syntaxError(null, line, 'is not "key = value": the key before "=" is missing');
      continue;
    }
    if (current === null) {
      errors.push(configError(file, null, key, line, 'stands before any [section]: put it under the section it belongs to'));
      continue;
    }
    if (current.keys.has(key)) {
      errors.push(configError(file, currentName, key, line, `is set twice (first at line ${current.keys.get(key)!.line})`));
      continue;
    }
    const value = plain ? plainValue(key, s.slice(eq + 1)) : null;
    if (value === null) plain = false;
    current.keys.set(key, { value, line });
  }
  if (!plain || errors.length > 0) valuesByIni(text, lines, sections);
  return { doc: { file, sections }, errors, syntax };
}

/**
 * Each key of `sections` (the line scan's, of `text` split in `lines`) given the value the `ini`
 * package reads for it: null for none, or one that is not a string.
 */
export function valuesByIni(text: string, lines: readonly string[], sections: Map<string, IniSection>): void {
  const values = ini.decode(plainHeaders(text, lines)) as Record<string, unknown>;
  for (const [name, section] of sections) {
    const sectionValues = Object.hasOwn(values, name) ? values[name] : undefined;
    for (const [key, { line }] of section.keys) {
      const v =
        sectionValues && typeof sectionValues === 'object' && Object.hasOwn(sectionValues, key) ? (sectionValues as Record<string, unknown>)[key] : undefined;
      section.keys.set(key, { value: typeof v === 'string' ? v.trim() : null, line });
    }
  }
}

/** A section name `ini` takes as it stands: no dots (it nests those), quotes, escapes or comment marks. */
const PLAIN_SECTION = /^[\w-]+$/;
const PLAIN_KEY = /^[\w.-]+$/;
/** What in a value `ini` reads as other than its text: quotes, an escape, an inline comment. */
const UNPLAIN_VALUE = /["'\\;#]/;

/**
 * The value of `key = raw` as the `ini` package reads it, when that is `raw` trimmed; null when it
 * may not be (then `ini` reads the file): a key that is not a plain name (or one `ini` drops), a
 * value with a quote, an escape or a comment mark, or one it reads as a JSON literal.
 */
function plainValue(key: string, raw: string): string | null {
  if (!PLAIN_KEY.test(key) || key === '__proto__' || UNPLAIN_VALUE.test(raw)) return null;
  const v = raw.trim();
  return v === 'true' || v === 'false' || v === 'null' ? null : v;
}

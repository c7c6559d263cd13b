// Reading INI files: the ownership check, the `ini` parser for values, and line numbers for errors.
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';
import ini from 'ini';
import type { ConfigError } from './types.ts';

export type IniKey = { readonly value: string | null; readonly line: number };
export type IniSection = { readonly line: number; readonly keys: Map<string, IniKey> };
export type IniDoc = { readonly file: string; readonly sections: Map<string, IniSection> };

export function configError(file: string, section: string | null, key: string | null, line: number | null, message: string): ConfigError {
  return { file, section, key, line, message };
}

/** `FILE: [section] key: message (line N)` — the one spelling every tool of ours prints. */
export function formatConfigError(e: ConfigError): string {
  const where = [e.section !== null ? `[${e.section}]` : null, e.key].filter((x) => x !== null).join(' ');
  return `${e.file}: ${where ? where + ': ' : ''}${e.message}${e.line !== null ? ` (line ${e.line})` : ''}`;
}

/**
 * Read a configuration file the way sshd's StrictModes does: it must be a regular file owned by root
 * and not writable by group or others, or it is ignored with an error saying how to fix it. The
 * check runs on the opened descriptor so a file swapped in between check and read is not trusted.
 */
export function readConfigText(file: string): string | ConfigError {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    return configError(file, null, null, null, `cannot open: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return configError(file, null, null, null, 'is not a regular file');
    if (st.uid !== 0) return configError(file, null, null, null, `is owned by uid ${st.uid}, not root: ignored (chown root ${file})`);
    if ((st.mode & 0o022) !== 0) {
      return configError(file, null, null, null, `is writable by group or others (mode ${(st.mode & 0o777).toString(8)}): ignored (chmod go-w ${file})`);
    }
    return readFileSync(fd, 'utf8');
  } catch (err) {
    return configError(file, null, null, null, `cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  } finally {
    closeSync(fd);
  }
}

/**
 * Parse INI text. Values come from the `ini` package (quoting, escapes, inline comments); the line
 * scan beside it finds where each section and key stands, and what `ini` would silently accept but an
 * admin would not expect: keys before any section, repeated keys and repeated sections.
 */
export function parseIni(file: string, text: string): { doc: IniDoc; errors: ConfigError[]; syntax: boolean } {
  const errors: ConfigError[] = [];
  const values = ini.decode(text) as Record<string, unknown>;
  const sections = new Map<string, IniSection>();
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
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = i + 1;
    const s = raw.trim();
    if (s === '' || s.startsWith(';') || s.startsWith('#')) continue;
    if (s.startsWith('[')) {
      const header = /^\[([^\]]*)\]\s*(?:[;#].*)?$/.exec(s);
      if (!header) {
        syntaxError(null, line, `a section header must be "[name]" alone on its line (${s.includes(']') ? 'text follows the "]"' : 'the closing "]" is missing'})`);
        current = null;
        swallowing = true;
        continue;
      }
      swallowing = false;
      currentName = header[1]!.trim();
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
    const sectionValues = Object.hasOwn(values, currentName) ? values[currentName] : undefined;
    const v = sectionValues && typeof sectionValues === 'object' && Object.hasOwn(sectionValues, key)
      ? (sectionValues as Record<string, unknown>)[key]
      : undefined;
    current.keys.set(key, { value: typeof v === 'string' ? v.trim() : null, line });
  }
  return { doc: { file, sections }, errors, syntax };
}

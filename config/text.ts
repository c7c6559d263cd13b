// Text from clients and files, made safe to show: bounded in length, control characters escaped.

/** The most characters of a client's or a file's string that any message or log line shows. */
export const MAX_SHOWN_CHARS = 64;

/**
 * A string as we show it: JSON-quoted (so C0 and C1 controls, ESC included, quotes and backslashes
 * come out escaped and the terminal reading a log or check-config sees no escape sequence), cut to
 * `max` characters with the count of what was left out. Bounded: at most about 6 * max + 40 bytes.
 */
export function shown(text: string, max: number = MAX_SHOWN_CHARS): string {
  const cut = text.length > max ? text.slice(0, max) : text;
  // JSON.stringify escapes C0 controls and DEL is harmless, but C1 (U+0080-U+009F) and the
  // line/paragraph separators reach a terminal raw: escape those too.
  const quoted = JSON.stringify(cut).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return text.length > max ? `${quoted}… (${text.length - max} more characters)` : quoted;
}

/** A name (a section, a key, a method) as it is when it looks like one, else shown(). */
export function shownName(name: string): string {
  return /^[A-Za-z0-9_.-]{1,64}$/.test(name) ? name : shown(name);
}

/** The longest configuration message we print: a value quoted in one is cut well before. */
export const MAX_MESSAGE_CHARS = 1024;

/** Control characters (C0, DEL, C1) escaped in text we compose ourselves around shown() values. */
export function escapeControls(text: string): string {
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

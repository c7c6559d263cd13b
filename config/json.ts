// JSON from outside (a client's frame, a state file, the shared pool), told apart by shape: no library, so the request-key handler's bundle stays small.

/** A JSON object: not null, not an array, with Object's prototype or none. */
export function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;
  const proto = Object.getPrototypeOf(x) as unknown;
  return proto === Object.prototype || proto === null;
}

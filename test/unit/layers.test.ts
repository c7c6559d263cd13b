// The floors of the README's layout, read from the sources' own imports: config/ is the ground and
// imports nothing of the agent; kernel/ stands on it and on the agent's fault type and pure mapping
// core alone (it never makes a protocol error: agent/advice.ts does, at the edge); wire/ and coord/ never import each other, the CLI or the agent's top level beyond
// those and the names for mapped ids. An import that runs back up fails here, naming the file.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const ROOT = resolve(new URL('../..', import.meta.url).pathname);

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** What a file imports of this tree (static, dynamic and type imports, re-exports), relative to the root. */
function importsOf(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const specs = [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]);
  return specs.map((s) => relative(ROOT, resolve(ROOT, dirname(file), s)));
}

/** Each floor: the files on it, and what else they may import (beyond themselves and node_modules). */
const FLOORS: { floor: string; may: (target: string) => boolean }[] = [
  { floor: 'config', may: (t) => t.startsWith('config/') },
  // Faults, not protocol errors: what a fault means to a caller is said at the request edge (agent/advice.ts).
  { floor: 'agent/kernel', may: (t) => t.startsWith('config/') || ['agent/fault.ts', 'agent/idmap.ts'].includes(t) },
  {
    floor: 'agent/coord',
    may: (t) => t.startsWith('config/') || t.startsWith('agent/kernel/') || ['agent/fault.ts', 'agent/idmap.ts'].includes(t),
  },
  {
    floor: 'agent/wire',
    may: (t) => t.startsWith('config/') || t.startsWith('agent/kernel/') || ['agent/errors.ts', 'agent/idmap.ts', 'agent/names.ts'].includes(t),
  },
];

describe('unit: the floors of the layout (imports never run back up)', () => {
  for (const { floor, may } of FLOORS) {
    it(`${floor}/ imports only what stands below it`, () => {
      const files = sources(floor);
      assert.ok(files.length > 0, `no sources under ${floor}`);
      const against = files.flatMap((f) =>
        importsOf(f)
          .filter((t) => !t.startsWith(`${floor}/`) && !may(t))
          .map((t) => `${f} -> ${t}`),
      );
      assert.deepEqual(against, []);
    });
  }

  it('reads every kind of import it is meant to (a check of the check)', () => {
    const found = importsOf('agent/wire/protocol.ts');
    assert.ok(found.includes('agent/errors.ts') && found.includes('agent/kernel/delegate.ts'), found.join(', '));
  });
});

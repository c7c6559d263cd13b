// Temporary configuration trees for tests, removed afterwards even when the test fails.
import { appendFileSync, chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Context, Nss } from '../../config/types.ts';

export type Tree = {
  readonly dir: string;
  readonly contexts: string;
  readonly state: string;
  readonly pins: string;
  readonly config: string;
  context(name: string, text: string, mode?: number): string;
  /**
   * Delegate host ids START..START+COUNT-1 (uids and gids alike) to a user, as an /etc/subuid and
   * /etc/subgid line would: the tree's usernsd.conf reads its own subuid and subgid files.
   */
  delegate(user: string, start: number, count: number): void;
  remove(): void;
};

/** A directory with usernsd.conf, userns.d/, state/ and pins/ paths; contexts are written by the test. */
export function makeTree(agentExtra = ''): Tree {
  const dir = mkdtempSync(join(tmpdir(), 'usernsd-test-'));
  chmodSync(dir, 0o755);
  const contexts = join(dir, 'userns.d');
  mkdirSync(contexts);
  const state = join(dir, 'state');
  const pins = join(dir, 'pins');
  const config = join(dir, 'usernsd.conf');
  const subuid = join(dir, 'subuid');
  const subgid = join(dir, 'subgid');
  for (const f of [subuid, subgid]) writeFileSync(f, '', { mode: 0o644 });
  // Names through userdb are the machine's (one socket in /run/systemd/userdb): only tests that ask get them.
  const userdb = agentExtra.includes('userdb') ? '' : 'userdb = no\n';
  writeFileSync(
    config,
    `[agent]\ncontexts = ${contexts}\nstate = ${state}\npins = ${pins}\nsocket = ${join(dir, 'usernsd.sock')}\nsubuid = ${subuid}\nsubgid = ${subgid}\n${userdb}${agentExtra}`,
    { mode: 0o644 },
  );
  return {
    dir,
    contexts,
    state,
    pins,
    config,
    context(name, text, mode = 0o644) {
      const f = join(contexts, name);
      writeFileSync(f, text, { mode });
      chmodSync(f, mode);
      return f;
    },
    delegate(user, start, count) {
      for (const f of [subuid, subgid]) appendFileSync(f, `${user}:${start}:${count}\n`);
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A user database for pure tests: hpa (1000), alice (1001), group backup (34). */
export const testNss: Nss = {
  userByName: (n) =>
    (
      ({ root: { uid: 0, gid: 0 }, hpa: { uid: 1000, gid: 1000 }, alice: { uid: 1001, gid: 1001 }, nobody: { uid: 65534, gid: 65534 } }) as Record<
        string,
        { uid: number; gid: number }
      >
    )[n] ?? null,
  userById: (u) =>
    (
      ({ 0: { name: 'root', gid: 0 }, 1000: { name: 'hpa', gid: 1000 }, 1001: { name: 'alice', gid: 1001 }, 65534: { name: 'nobody', gid: 65534 } }) as Record<
        number,
        { name: string; gid: number }
      >
    )[u] ?? null,
  groupByName: (n) => (({ root: 0, backup: 34, nogroup: 65534 }) as Record<string, number>)[n] ?? null,
};

/** A backup of another machine: its root's files, its user 1000's, an id it never mapped, a public dir. */
export function populateBackup(dir: string): void {
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755);
  for (const [name, id, mode] of [
    ['root', 0, 0o644],
    ['hpa', 1000, 0o644],
    ['alien', 70000, 0o666],
  ] as const) {
    writeFileSync(join(dir, name), name);
    chownSync(join(dir, name), id, id);
    chmodSync(join(dir, name), mode);
  }
  mkdirSync(join(dir, 'pub'));
  chownSync(join(dir, 'pub'), 1000, 1000);
  chmodSync(join(dir, 'pub'), 0o1777);
}

/** A context of the host owned by root, lazy, with COUNT ids at START and the defaults a file leaves: what the record of the contexts in force holds. */
export const staticContext = (label: string, start: number, count = 65536): Context => ({
  label,
  file: `/etc/userns.d/${label}.conf`,
  parent: 'host',
  owner: { uid: 0, gid: 0, name: 'root' },
  uidMap: [{ inside: 0, outside: start, count }],
  gidMap: [{ inside: 0, outside: start, count }],
  autoSize: null,
  setgroups: 'allow',
  create: 'lazy',
  squash: { mode: 'root', anonuid: 65534, anongid: 65534 },
  access: { uids: [], gids: [] },
  ownerIds: 'delegated',
});

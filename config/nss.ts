// The user and group databases through libc's NSS (files, LDAP, sssd…), as the loader and allocator need them.
import koffi from 'koffi';
import type { Nss } from './types.ts';

/**
 * Userdb services NSS must not ask from this process (nss-systemd honours SYSTEMD_BYPASS_USERDB, a
 * colon-separated list). The agent answers io.usernsd itself: a lookup of its own names from
 * its own thread would wait on itself, and an enumeration would count its names as real accounts.
 */
export function bypassUserdb(service: string): void {
  const now = (process.env.SYSTEMD_BYPASS_USERDB ?? '').split(':').filter(Boolean);
  if (!now.includes(service)) process.env.SYSTEMD_BYPASS_USERDB = [...now, service].join(':');
}
bypassUserdb('io.usernsd');

const libc = koffi.load('libc.so.6');
const passwd = koffi.struct({
  pw_name: 'const char *',
  pw_passwd: 'const char *',
  pw_uid: 'uint32_t',
  pw_gid: 'uint32_t',
  pw_gecos: 'const char *',
  pw_dir: 'const char *',
  pw_shell: 'const char *',
});
const group = koffi.struct({ gr_name: 'const char *', gr_passwd: 'const char *', gr_gid: 'uint32_t', gr_mem: 'void *' });
const passwdPtr = koffi.pointer(passwd);
const groupPtr = koffi.pointer(group);
// The non-reentrant calls are safe here: koffi calls them synchronously on the JS thread and the
// result is decoded before the next call.
const getpwnam = libc.func('getpwnam', passwdPtr, ['const char *']);
const getpwuid = libc.func('getpwuid', passwdPtr, ['uint32_t']);
const getgrnam = libc.func('getgrnam', groupPtr, ['const char *']);
const getgrgid = libc.func('getgrgid', groupPtr, ['uint32_t']);
const setpwent = libc.func('setpwent', 'void', []);
const getpwent = libc.func('getpwent', passwdPtr, []);
const endpwent = libc.func('endpwent', 'void', []);
const setgrent = libc.func('setgrent', 'void', []);
const getgrent = libc.func('getgrent', groupPtr, []);
const endgrent = libc.func('endgrent', 'void', []);

type Pw = { pw_name: string; pw_uid: number; pw_gid: number };
type Gr = { gr_name: string; gr_gid: number };

function memo<K, V>(lookup: (key: K) => V): (key: K) => V {
  const seen = new Map<K, V>();
  return (key) => {
    if (!seen.has(key)) seen.set(key, lookup(key));
    return seen.get(key)!;
  };
}

/** NSS lookups, memoised for one configuration load so 10,000 files naming one owner ask once. */
export function systemNss(): Nss {
  return {
    userByName: memo((name: string) => {
      const p = getpwnam(name);
      const pw = p ? (koffi.decode(p, passwd) as Pw) : null;
      return pw ? { uid: pw.pw_uid, gid: pw.pw_gid } : null;
    }),
    userById: memo((uid: number) => {
      const p = getpwuid(uid);
      const pw = p ? (koffi.decode(p, passwd) as Pw) : null;
      return pw ? { name: pw.pw_name, gid: pw.pw_gid } : null;
    }),
    groupByName: memo((name: string) => {
      const p = getgrnam(name);
      return p ? (koffi.decode(p, group) as Gr).gr_gid : null;
    }),
  };
}

/** A host group's name by gid, for people reading ids (explain); null when NSS knows none. */
export function groupName(gid: number): string | null {
  const p = getgrgid(gid);
  return p ? (koffi.decode(p, group) as Gr).gr_name : null;
}

/** Every uid and gid the databases enumerate: the allocator never hands out an id a real account has. */
export function enumerateIds(): { uids: number[]; gids: number[] } {
  const uids: number[] = [];
  const gids: number[] = [];
  setpwent();
  for (let p = getpwent(); p; p = getpwent()) uids.push((koffi.decode(p, passwd) as Pw).pw_uid);
  endpwent();
  setgrent();
  for (let g = getgrent(); g; g = getgrent()) gids.push((koffi.decode(g, group) as Gr).gr_gid);
  endgrent();
  return { uids, gids };
}

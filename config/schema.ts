// The key tables: every section and key of usernsd.conf and of a context file, with its parser and default.
import { ID_LIMIT, parseExtents, parseId } from './extents.ts';
import { LOG_LEVELS, SQUASH_MODES } from './types.ts';
import type { AgentConfig, IdMap, LogLevel, Nss, Owner, SquashMode } from './types.ts';

/** A parser returns the typed value, or a Problem saying what is wrong with the text. */
export type Problem = { readonly problem: string };
export type Parse<T> = (text: string, nss: Nss) => T | Problem;
export type KeySpec<T> = {
  readonly parse: Parse<T>;
  readonly doc: string;
  /**
   * The agent reads this key once, at start (the AgentConfig field it sets): a reload keeps the
   * value it started with and logs that the change waits for the next start (usernsd.conf(5)).
   */
  readonly atStart?: keyof AgentConfig;
};

export function isProblem(v: unknown): v is Problem {
  return typeof v === 'object' && v !== null && 'problem' in v;
}

const LABEL_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/;

/** SPEC §3: 1-64 of [A-Za-z0-9._-], not starting with "." or "-". */
export function labelProblem(label: string): string | null {
  if (LABEL_RE.test(label)) return null;
  if (label.length === 0) return 'a label cannot be empty';
  if (label.length > 64) return `a label has at most 64 characters (this one has ${label.length})`;
  if (label.startsWith('.') || label.startsWith('-')) return 'a label cannot start with "." or "-"';
  return 'a label may contain only letters, digits, ".", "_" and "-"';
}

const oneOf =
  <T extends string>(values: readonly T[]): Parse<T> =>
  (text) =>
    (values as readonly string[]).includes(text) ? (text as T) : { problem: `must be one of ${values.join(', ')} (got "${text}")` };

const absolutePath: Parse<string> = (text) =>
  text.startsWith('/') && !text.split('/').includes('..')
    ? text.replace(/\/+$/, '') || '/'
    : { problem: `must be an absolute path without ".." (got "${text}")` };

const number =
  (min: number, max: number): Parse<number> =>
  (text) => {
    const n = parseId(text);
    return n !== null && n >= min && n <= max ? n : { problem: `must be a whole number from ${min} to ${max} (got "${text}")` };
  };

const idMap: Parse<IdMap> = (text) => {
  const m = parseExtents(text);
  return typeof m === 'string' ? { problem: m } : m;
};

/** A user name through NSS, or a numeric uid (which need not have an entry). */
/**
 * (uid_t) -1 and (gid_t) -1 are "no id" to the kernel (setresuid, setresgid and chown leave the id
 * as it is), never a user or a group: an owner written so would leave its namespace to root.
 */
const noId = (id: number, kind: 'uid' | 'gid') =>
  id === ID_LIMIT ? { problem: `${id} is (${kind}_t) -1, which the kernel reads as "no id": not a ${kind === 'uid' ? 'user' : 'group'}` } : null;

export const parseUser: Parse<Owner> = (text, nss) => {
  const uid = parseId(text);
  if (uid !== null) {
    const none = noId(uid, 'uid');
    if (none) return none;
    const pw = nss.userById(uid);
    return { uid, gid: pw ? pw.gid : uid, name: pw ? pw.name : null };
  }
  const pw = nss.userByName(text);
  return pw ? { uid: pw.uid, gid: pw.gid, name: text } : { problem: `unknown user "${text}" (not found through NSS: check getent passwd ${text})` };
};

export const parseGroup: Parse<number> = (text, nss) => {
  const gid = parseId(text);
  if (gid !== null) return noId(gid, 'gid') ?? gid;
  const g = nss.groupByName(text);
  return g !== null ? g : { problem: `unknown group "${text}" (not found through NSS: check getent group ${text})` };
};

const list =
  <T>(item: Parse<T>): Parse<T[]> =>
  (text, nss) => {
    const out: T[] = [];
    for (const part of text
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '')) {
      const v = item(part, nss);
      if (isProblem(v)) return v;
      out.push(v);
    }
    return out;
  };

const labelValue: Parse<string> = (text) => (labelProblem(text) === null ? text : { problem: `"${text}": ${labelProblem(text)}` });

const poolRange: Parse<{ start: number; end: number }> = (text) => {
  const m = /^(\d+)\s*-\s*(\d+)$/.exec(text);
  const start = m ? parseId(m[1]) : null;
  const end = m ? parseId(m[2]) : null;
  if (start === null || end === null || start > end || end >= 0xffffffff) {
    return { problem: `must be "FIRST-LAST" host ids with FIRST <= LAST < 4294967295 (got "${text}")` };
  }
  return { start, end };
};

/** An etcd client URL: http:// or https://, a host and a port. */
const endpoint: Parse<string> = (text) =>
  /^https?:\/\/[A-Za-z0-9.[\]:-]+:\d{1,5}$/.test(text) ? text : { problem: `must be a URL such as http://127.0.0.1:2379 (got "${text}")` };

/** HOST:PORT for a TCP listener: an IPv4 address or [IPv6], a port from 1 to 65535. */
const listenAddress: Parse<{ host: string; port: number }> = (text) => {
  const m = /^(?:(\d{1,3}(?:\.\d{1,3}){3})|\[([0-9A-Fa-f:.]+)\]):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535 || (m[1] !== undefined && m[1].split('.').some((o) => Number(o) > 255))) {
    return { problem: `must be ADDRESS:PORT, an IPv4 address or [IPv6] and a port from 1 to 65535, such as 127.0.0.1:9847 (got "${text}")` };
  }
  return { host: m[1] ?? m[2], port };
};

/** A whitespace-separated list of absolute paths (device nodes, directories), each once. */
const pathList: Parse<string[]> = (text, nss) => {
  const out: string[] = [];
  for (const part of text.split(/[\s,]+/).filter((s) => s !== '')) {
    const p = absolutePath(part, nss);
    if (isProblem(p)) return p;
    if (p === '/') return { problem: 'must not be "/"' };
    if (out.includes(p)) return { problem: `names ${p} twice` };
    out.push(p);
  }
  if (out.length > MAX_DELEGATED_PATHS) return { problem: `lists ${out.length} paths; at most ${MAX_DELEGATED_PATHS}` };
  return out;
};

/** Paths one [delegate] key may list (nsresourced allows 16 cgroups and 16 interfaces a namespace). */
export const MAX_DELEGATED_PATHS = 16;

/** The cgroup files a limit may be written to: a controller's knob, never a cgroup.* or a nested path. */
const CGROUP_LIMIT_RE = /^(memory|pids|cpu|io|cpuset|hugetlb|rdma|misc)\.[a-z0-9_.]+$/;

const cgroupLimits: Parse<{ file: string; value: string }[]> = (text) => {
  const out: { file: string; value: string }[] = [];
  for (const part of text.split(/\s+/).filter((s) => s !== '')) {
    const m = /^([^=]+)=(.+)$/.exec(part);
    if (!m || !CGROUP_LIMIT_RE.test(m[1]))
      return { problem: `"${part}" is not FILE=VALUE with FILE a controller's file such as memory.max, pids.max or cpu.weight` };
    if (!/^[A-Za-z0-9 ._:-]+$/.test(m[2])) return { problem: `"${part}": the value may hold only letters, digits, ".", "_", ":" and "-"` };
    if (out.some((l) => l.file === m[1])) return { problem: `sets ${m[1]} twice` };
    out.push({ file: m[1], value: m[2] });
  }
  return out;
};

/** usernsd.conf(5). The man page documents every key here; a test holds them together. */
export const AGENT_SCHEMA = {
  agent: {
    socket: { parse: absolutePath, doc: 'the UNIX socket the agent listens on', atStart: 'socket' },
    contexts: { parse: absolutePath, doc: 'the directory of context files' },
    pins: { parse: absolutePath, doc: 'the directory of pinned namespaces', atStart: 'pins' },
    state: { parse: absolutePath, doc: 'the directory of persistent state', atStart: 'state' },
    log_level: { parse: oneOf<LogLevel>(LOG_LEVELS), doc: 'the lowest level logged' },
    mount_namespace: {
      parse: (t: string) =>
        t === 'auto' || t === 'self' || (t.startsWith('/') && !t.split('/').includes('..'))
          ? t
          : { problem: `must be auto, self or the absolute path of a mount namespace file such as /proc/1/ns/mnt (got "${t}")` },
      doc: 'the mount namespace pins are mounted in',
      atStart: 'mountNamespace',
    },
    spawner: {
      parse: oneOf(['auto', 'native', 'node'] as const),
      doc: 'who makes user namespaces: native, the usernsd-spawner program; node, a process forked from the agent for each; auto, native when it was built',
      atStart: 'spawner',
    },
    subuid: { parse: absolutePath, doc: "the subordinate uid file (newuidmap's): uids delegated to users" },
    subgid: { parse: absolutePath, doc: "the subordinate gid file (newgidmap's): gids delegated to users" },
    userdb: { parse: oneOf(['yes', 'no'] as const), doc: "whether to name the contexts' host ids through systemd's userdb", atStart: 'userdb' },
    userdb_socket: { parse: absolutePath, doc: 'the userdb Varlink socket; its file name is the service name', atStart: 'userdbSocket' },
    cgroup_root: {
      parse: (t: string, nss: Nss) => (t === 'auto' ? t : absolutePath(t, nss)),
      doc: "auto, or the cgroup v2 directory every context's delegated cgroup is made under",
      atStart: 'cgroupRoot',
    },
    netns_dir: {
      parse: absolutePath,
      doc: "where contexts' network namespaces are pinned ([delegate] netns = yes); ip netns looks in /run/netns",
      atStart: 'netnsDir',
    },
    label_xattr: {
      parse: (t: string) =>
        /^(trusted|user|security)\.[A-Za-z0-9._-]+$/.test(t)
          ? t
          : { problem: `must be an extended attribute name in the trusted, user or security namespace (got "${t}")` },
      doc: 'the extended attribute that holds a context label on an inode',
    },
  },
  mapping: {
    overflowuid: { parse: number(0, 0xfffffffe), doc: 'the uid shown for an id that cannot be mapped' },
    overflowgid: { parse: number(0, 0xfffffffe), doc: 'the gid shown for an id that cannot be mapped' },
  },
  metrics: {
    listen: { parse: listenAddress, doc: 'HOST:PORT of an HTTP listener serving /metrics (off unless set)', atStart: 'metricsListen' },
  },
  pool: {
    coordinator: {
      parse: oneOf(['local', 'etcd'] as const),
      doc: 'local: this host allocates alone; etcd: every host sharing the pool agrees through etcd',
      atStart: 'coordinator',
    },
    range: { parse: poolRange, doc: 'host ids that range = auto allocations come from' },
    size: { parse: number(1, 0x7fffffff), doc: 'the default size of an allocation' },
  },
  etcd: {
    endpoints: { parse: list(endpoint), doc: "the etcd cluster's client URLs, comma-separated", atStart: 'etcd' },
    prefix: {
      parse: (t: string) =>
        /^\/[A-Za-z0-9._/-]*$/.test(t) && !t.split('/').includes('..')
          ? t.endsWith('/')
            ? t
            : `${t}/`
          : { problem: `must be a key prefix starting with "/" of letters, digits, ".", "_", "-" and "/" (got "${t}")` },
      doc: 'the prefix of every key the agent writes',
      atStart: 'etcd',
    },
    ca: { parse: absolutePath, doc: "the CA certificate that signed the cluster's (turns TLS on)", atStart: 'etcd' },
    cert: { parse: absolutePath, doc: "this host's client certificate", atStart: 'etcd' },
    key: { parse: absolutePath, doc: "this host's client key", atStart: 'etcd' },
    timeout: { parse: number(100, 600_000), doc: 'milliseconds an etcd request may take', atStart: 'etcd' },
    name: {
      parse: (t: string) => (/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(t) ? t : { problem: `must be 1-64 letters, digits, ".", "_" or "-" (got "${t}")` }),
      doc: "this host's name in the shared pool (default: its hostname)",
      atStart: 'etcd',
    },
  },
} as const satisfies Record<string, Record<string, KeySpec<unknown>>>;

/** userns.d(5). */
export const CONTEXT_SCHEMA = {
  context: {
    label: { parse: labelValue, doc: 'the context label (default: the file name without .conf)' },
    parent: { parse: (t: string, nss: Nss) => (t === 'host' ? t : labelValue(t, nss)), doc: 'host, or the label of the parent context' },
    owner: { parse: parseUser, doc: 'the user who owns the namespace' },
    uid_map: { parse: idMap, doc: 'uid extents INSIDE OUTSIDE COUNT, comma-separated' },
    gid_map: { parse: idMap, doc: 'gid extents INSIDE OUTSIDE COUNT, comma-separated' },
    range: { parse: oneOf(['auto'] as const), doc: 'auto: allocate uid and gid maps from the pool' },
    size: { parse: number(1, 0x7fffffff), doc: 'the size of an auto range' },
    setgroups: { parse: oneOf(['allow', 'deny'] as const), doc: 'whether setgroups(2) is allowed inside' },
    create: { parse: oneOf(['lazy', 'eager'] as const), doc: 'when the namespace is created' },
    children: {
      parse: number(0, 1024),
      doc: "how many contexts the context's root may create nested in it, from inside (usernsctl create); 0, the default, allows none",
    },
    child_ranges: {
      parse: number(0, 64),
      doc: 'with range = auto: this many more ranges of its size mapped into the context one to one, for the contexts made inside it',
    },
    owner_ids: {
      parse: oneOf(['delegated', 'any'] as const),
      doc: 'which host ids a context owned by a user may map: delegated (its own, its subuid/subgid entries) or any',
    },
  },
  squash: {
    mode: { parse: oneOf<SquashMode>(SQUASH_MODES), doc: 'none, root or all' },
    anonuid: {
      parse: (t: string, nss: Nss) => {
        const u = parseUser(t, nss);
        return isProblem(u) ? u : u.uid;
      },
      doc: 'host uid squashed ids become',
    },
    anongid: { parse: parseGroup, doc: 'host gid squashed ids become' },
  },
  access: {
    users: {
      parse: list((t: string, nss: Nss) => {
        const u = parseUser(t, nss);
        return isProblem(u) ? u : u.uid;
      }),
      doc: 'users who may resolve, map and enter',
    },
    groups: { parse: list(parseGroup), doc: 'groups whose members may resolve, map and enter' },
  },
  delegate: {
    cgroup: { parse: oneOf(['yes', 'no'] as const), doc: "yes: a cgroup v2 subtree under cgroup_root (under the parent's), owned by the context's root" },
    cgroup_limits: { parse: cgroupLimits, doc: 'FILE=VALUE ... written into the cgroup by root before it is handed over, such as memory.max=1G pids.max=512' },
    netns: {
      parse: oneOf(['yes', 'no'] as const),
      doc: "yes: a network namespace owned by the context's user namespace, pinned at netns_dir/LABEL",
    },
    veth: { parse: oneOf(['yes', 'no'] as const), doc: "yes: a veth pair, host0 in the context's network namespace, its peer named from the label" },
    tap: {
      parse: (t: string) =>
        /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/.test(t) ? t : { problem: `must be an interface name of 1-15 letters, digits, "_", "." or "-" (got "${t}")` },
      doc: "a persistent tap device (in the host's network namespace) owned by the context's root",
    },
    devices: { parse: pathList, doc: "existing device nodes given to the context's root, and given back at release" },
    directories: { parse: pathList, doc: "directories created owned by the context's root; never removed" },
    exec_start: { parse: absolutePath, doc: 'an executable owned by root run after the namespace is created (failure: the creation fails)' },
    exec_stop: { parse: absolutePath, doc: 'an executable owned by root run before the namespace is released' },
    exec_timeout: { parse: number(1, 3600), doc: 'seconds a hook may run before it is killed (default 30)' },
  },
} as const satisfies Record<string, Record<string, KeySpec<unknown>>>;

export type Schema = Record<string, Record<string, KeySpec<unknown>>>;

// The data model every other layer stands on: ids, extents, contexts, the agent's settings, errors.

/** One line of a uid_map/gid_map: ids inside..inside+count-1 are outside..outside+count-1 in the parent. */
export type Extent = { readonly inside: number; readonly outside: number; readonly count: number };
export type IdMap = readonly Extent[];

export const SQUASH_MODES = ['none', 'root', 'all'] as const;
export type SquashMode = (typeof SQUASH_MODES)[number];

export const HOST_LABEL = 'host';

/**
 * The settings file when --config is not given: $USERNSD_CONFIG (set by the installed wrappers to
 * SYSCONFDIR/usernsd.conf, and by hand for a checkout's `npm start`), else /etc/usernsd.conf.
 * Here, not in load.ts, so that usernsctl names it without loading the configuration's judgement.
 */
export const DEFAULT_CONFIG_FILE = process.env.USERNSD_CONFIG || '/etc/usernsd.conf';

/** Where the agent listens, and its clients ask, unless usernsd.conf's socket (or --socket, $USERNSD_SOCKET) says otherwise. */
export const DEFAULT_SOCKET = '/run/usernsd/usernsd.sock';

export type Squash = { readonly mode: SquashMode; readonly anonuid: number; readonly anongid: number };

export type Owner = { readonly uid: number; readonly gid: number; readonly name: string | null };

/** A context as written in its file, names resolved, maps checked; `range = auto` not yet allocated. */
export type ContextDef = {
  readonly label: string;
  readonly file: string;
  readonly parent: string;
  readonly owner: Owner;
  /** null when the ids come from the pool (`range = auto`). */
  readonly uidMap: IdMap | null;
  readonly gidMap: IdMap | null;
  readonly autoSize: number | null;
  /**
   * As written, else the default when the file decides it (deny for an owner other than root, allow
   * for root's top-level context); null: a root-owned nested context's default, which follows its
   * parent's (see Context).
   */
  readonly setgroups: 'allow' | 'deny' | null;
  readonly create: 'lazy' | 'eager';
  readonly squash: Squash;
  readonly access: { readonly uids: readonly number[]; readonly gids: readonly number[] };
  /**
   * Which host ids a context owned by a user other than root may map: `delegated` (the owner's own
   * ids, its /etc/subuid and /etc/subgid entries, usernsd's allocations), or `any` (the admin
   * vouches for the map; check-config says so).
   */
  readonly ownerIds: 'delegated' | 'any';
  /** What the [delegate] section gives the context's root (SPEC §13); absent when the file has none. */
  readonly delegate?: Delegation;
  /**
   * How many contexts the context's root may create nested in it, from inside, at run time
   * (`children =`, SPEC §14); absent: none.
   */
  readonly children?: number;
  /**
   * With range = auto: this many more ranges of its size, allocated with its own in one block and
   * mapped into it one to one (`child_ranges =`), for the contexts made inside it.
   */
  readonly childRanges?: number;
  /** Made from inside its parent at run time (the agent's record in the state directory), not by a file. */
  readonly runtime?: boolean;
  /** Where the [context] section ("") and each key are in the file, for errors judged across files; absent for a kept context. */
  readonly lines?: Readonly<Record<string, number>>;
};

/**
 * A context whose maps are known (static, or allocated from the pool) and whose setgroups is decided:
 * as written, else deny under a deny parent (the kernel allows nothing else), else allow for a
 * root owner and deny for any other.
 */
export type Context = ContextDef & { readonly uidMap: IdMap; readonly gidMap: IdMap; readonly setgroups: 'allow' | 'deny' };

/** One limit written into a context's cgroup before it is handed over: `memory.max=1G`. */
export type CgroupLimit = { readonly file: string; readonly value: string };

/**
 * Host resources that follow a label (userns.d(5) [delegate]): set up whenever its namespace is
 * created, torn down in reverse order when it is released.
 */
export type Delegation = {
  /** A cgroup v2 subtree under cgroup_root (under the parent's, for a nested context with one). */
  readonly cgroup: boolean;
  readonly cgroupLimits: readonly CgroupLimit[];
  /** A network namespace owned by the context's user namespace, pinned at netns_dir/LABEL. */
  readonly netns: boolean;
  /** A veth pair: host0 inside that network namespace, its peer (named from the label) on the host. */
  readonly veth: boolean;
  /** A persistent tap device owned by the context's root, or null. */
  readonly tap: string | null;
  /** Existing device nodes, given to the context's root and given back at release. */
  readonly devices: readonly string[];
  /** Directories created owned by the context's root; never removed. */
  readonly directories: readonly string[];
  /** Admin-owned executables run after creation and before release. */
  readonly execStart: string | null;
  readonly execStop: string | null;
  readonly execTimeoutMs: number;
};

export type Pool = { readonly start: number; readonly end: number; readonly size: number };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export type AgentConfig = {
  readonly file: string;
  readonly socket: string;
  readonly contexts: string;
  readonly pins: string;
  readonly state: string;
  readonly logLevel: LogLevel;
  readonly labelXattr: string;
  /** auto (init's, when the agent runs in another, as under systemd's ProtectSystem), self, or a path like /proc/1/ns/mnt. */
  readonly mountNamespace: string;
  /** Who makes user namespaces: usernsd-spawner (native), a fork of the agent each (node), or native when built (auto). */
  readonly spawner: 'auto' | 'native' | 'node';
  /** The subordinate id files (newuidmap's): ids delegated to users, which owned contexts may map and the allocator avoids. */
  readonly subuid: string;
  readonly subgid: string;
  readonly overflowuid: number;
  readonly overflowgid: number;
  /** auto, or the cgroup v2 directory every delegated context cgroup is made under. */
  readonly cgroupRoot: string;
  /** Where contexts' network namespaces are pinned (`ip netns` looks in /run/netns). */
  readonly netnsDir: string;
  readonly pool: Pool;
  /** Name the contexts' host ids through systemd's userdb (nss-systemd), on this socket. */
  readonly userdb: boolean;
  readonly userdbSocket: string;
  /** Who decides range = auto allocations: this host alone, or etcd for every host sharing the pool. */
  readonly coordinator: 'local' | 'etcd';
  readonly etcd: EtcdConfig;
  /** An HTTP listener for Prometheus, or null (off). */
  readonly metricsListen: { readonly host: string; readonly port: number } | null;
};

export type EtcdConfig = {
  readonly endpoints: readonly string[];
  /** Every key the agent writes starts with it; ends with "/". */
  readonly prefix: string;
  readonly ca: string | null;
  readonly cert: string | null;
  readonly key: string | null;
  readonly timeoutMs: number;
  /** This host in the shared pool (who allocated what, whose pins); null: the hostname. */
  readonly name: string | null;
};

/** Where the agent answers systemd's userdb, unless usernsd.conf's userdb_socket says otherwise. */
export const DEFAULT_USERDB_SOCKET = '/run/systemd/userdb/io.usernsd';

/** Where a configuration problem is: always a file, a section and key when known, a line when found. */
export type ConfigError = {
  readonly file: string;
  readonly section: string | null;
  readonly key: string | null;
  readonly line: number | null;
  readonly message: string;
};

/** What the loader needs from the user and group databases (NSS); injected so tests can build one. */
export type Nss = {
  userByName(name: string): { uid: number; gid: number } | null;
  userById(uid: number): { name: string; gid: number } | null;
  groupByName(name: string): number | null;
};

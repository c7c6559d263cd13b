// make install / make uninstall: place the built agent like a system daemon, and take back exactly
// what was placed. Reads PREFIX, SYSCONFDIR, DESTDIR and USERNSD_NODE from the environment (see Makefile).
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmdirSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { AGENT_TUNABLES } from './agent-env.js';

const SRC = dirname(dirname(fileURLToPath(import.meta.url)));
const env = process.env;
const PREFIX = env.PREFIX || '/usr/local';
const SYSCONFDIR = env.SYSCONFDIR || '/etc';
const DESTDIR = env.DESTDIR || '';
const dirs = {
  LIBDIR: env.LIBDIR || `${PREFIX}/lib/usernsd`,
  BINDIR: env.BINDIR || `${PREFIX}/bin`,
  SBINDIR: env.SBINDIR || `${PREFIX}/sbin`,
  MANDIR: env.MANDIR || `${PREFIX}/share/man`,
  UNITDIR: env.UNITDIR || `${PREFIX}/lib/systemd/system`,
  TMPFILESDIR: env.TMPFILESDIR || `${PREFIX}/lib/tmpfiles.d`,
  // mount(8) looks for helpers in /sbin (and /sbin/fs.d, /sbin/fs) only: a system install puts it
  // there; an install under some other prefix (a test, a staging tree) keeps it in PREFIX/sbin.
  MOUNTHELPERDIR: env.MOUNTHELPERDIR || (PREFIX === '/usr' || PREFIX.startsWith('/usr/') ? '/sbin' : `${PREFIX}/sbin`),
  SYSCONFDIR,
};
const NODE = env.USERNSD_NODE || join(SRC, 'node_modules', 'node', 'bin', 'node');
const MANIFEST = `${dirs.LIBDIR}/install-manifest.json`;

const dest = (p) => DESTDIR + p;
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');
const subst = (text) => text.replace(/@(LIBDIR|BINDIR|SBINDIR|SYSCONFDIR)@/g, (_, k) => dirs[k]);

/** What this install placed: files (config ones with their checksum) and the directories it made. */
const placed = { files: [], dirs: [] };
/**
 * Files this install replaced, each kept under a backup name (a hard link to the old inode) until
 * the install is complete: a rollback puts every one of them back, so a failed install leaves the
 * previous one exactly as it was.
 */
const replaced = [];
const backupName = (p) => join(dirname(p), `.${p.split('/').pop()}.usernsd-old.${process.pid}`);

function ensureDir(dir) {
  const missing = [];
  for (let d = dest(dir); !existsSync(d); d = dirname(d)) missing.push(d);
  for (const d of missing.reverse()) {
    mkdirSync(d, { mode: 0o755 });
    placed.dirs.push(d.slice(DESTDIR.length));
  }
}

function put(path, body, mode = 0o644, config = false) {
  ensureDir(dirname(path));
  if (config && existsSync(dest(path))) {
    console.log(`kept existing ${dest(path)}`);
    return;
  }
  // Written beside the target and renamed over it: the file in place (a running agent's node, its
  // modules) is never opened for writing (ETXTBSY), and a reader sees the old file or the new one.
  const target = dest(path);
  const tmp = join(dirname(target), `.${path.split('/').pop()}.usernsd-new.${process.pid}`);
  try {
    unlinkSync(tmp);
  } catch {
    /* none */
  }
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
  try {
    const buf = typeof body === 'string' ? Buffer.from(body) : body;
    for (let off = 0; off < buf.length;) off += writeSync(fd, buf, off, buf.length - off);
  } finally {
    closeSync(fd);
  }
  chmodSync(tmp, mode);
  const existed = existsSync(target);
  if (existed && !lstatSync(target).isDirectory()) {
    const backup = backupName(target);
    try {
      unlinkSync(backup);
    } catch {
      /* none */
    }
    try {
      linkSync(target, backup);
    } catch {
      copyFileSync(target, backup); // a filesystem without hard links
    }
    replaced.push({ target, backup });
  }
  try {
    renameSync(tmp, target);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      /* gone */
    }
    throw err;
  }
  placed.files.push({ ...(config ? { path, sha256: sha256(body) } : { path }), replaced: existed });
}

function copyTree(from, to, skip = () => false) {
  for (const name of readdirSync(from)) {
    const f = join(from, name);
    if (skip(f)) continue;
    const st = lstatSync(f);
    if (st.isDirectory()) copyTree(f, join(to, name), skip);
    else if (st.isFile()) put(join(to, name), readFileSync(f), st.mode & 0o777);
  }
}

/** Production dependencies, from the lockfile: every package not marked dev. */
function productionPackages() {
  const lock = JSON.parse(readFileSync(join(SRC, 'package-lock.json'), 'utf8'));
  // Optional packages for other platforms (koffi's prebuilt binaries) are listed but not installed here;
  // devOptional is a dev dependency that a production package names as an optional peer (typescript, for valibot).
  return Object.entries(lock.packages)
    .filter(([p, meta]) => p !== '' && !meta.dev && !meta.devOptional && !(meta.optional && !existsSync(join(SRC, p))))
    .map(([p]) => p);
}

/**
 * The example contexts the project ships: in a git checkout the tracked ones only (a file an admin or
 * `npm start` left there is not an example), else every *.conf (an unpacked release).
 */
function shippedContexts() {
  const r = spawnSync('git', ['-C', SRC, 'ls-files', '-z', '--', 'etc/userns.d'], { encoding: 'utf8' });
  if (r.status === 0 && r.stdout !== '')
    return r.stdout
      .split('\0')
      .filter((p) => p.endsWith('.conf'))
      .map((p) => p.slice('etc/userns.d/'.length))
      .filter((f) => !f.includes('/'));
  return readdirSync(join(SRC, 'etc', 'userns.d')).filter((f) => f.endsWith('.conf'));
}

function install() {
  if (!existsSync(join(SRC, 'dist', 'usernsd.js'))) throw new Error('dist/ is not built: run "make" (npm run build) first');
  if (!existsSync(NODE)) throw new Error(`no Node binary at ${NODE}: run "npm ci", or set USERNSD_NODE=/path/to/node (>= 22.13)`);
  const version = execFileSync(NODE, ['-p', 'process.versions.node'], { encoding: 'utf8' }).trim();
  const [major, minor] = version.split('.').map(Number);
  if (major < 22 || (major === 22 && minor < 13))
    throw new Error(`${NODE} is Node ${version}; the agent needs >= 22.13: set USERNSD_NODE to a newer one (the project's: node_modules/node/bin/node)`);
  const lib = dirs.LIBDIR;
  copyTree(join(SRC, 'dist'), join(lib, 'dist'));
  for (const f of ['usernsd.js', 'usernsctl.js', 'node-check.js']) put(join(lib, 'bin', f), readFileSync(join(SRC, 'bin', f)), 0o755);
  put(join(lib, 'package.json'), readFileSync(join(SRC, 'package.json')));
  for (const pkg of productionPackages()) {
    // A package's own node_modules/ holds packages the lockfile lists (and this loop copies) apart.
    copyTree(join(SRC, pkg), join(lib, pkg), (f) => f === join(SRC, pkg, 'node_modules'));
  }
  put(join(lib, 'node'), readFileSync(NODE), 0o755);
  // The settings file when --config is not given is this install's, unless the caller says otherwise.
  const wrapper = (js, extra = '') =>
    `#!/bin/sh\n# Installed by usernsd's make install: the agent brings its own Node (>= 22.13).\nUSERNSD_CONFIG=\${USERNSD_CONFIG:-${SYSCONFDIR}/usernsd.conf}\nexport USERNSD_CONFIG\n${extra}exec ${lib}/node ${lib}/bin/${js} "$@"\n`;
  // The agent's threads share two C heaps (glibc reads this at exec only): with one per thread, what
  // reloads of many context files left fragmented in them stayed resident (usernsd(8), BENCHMARKS.md).
  const arenas = `GLIBC_TUNABLES=\${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}${AGENT_TUNABLES}\nexport GLIBC_TUNABLES\n`;
  put(join(dirs.SBINDIR, 'usernsd'), wrapper('usernsd.js', arenas), 0o755);
  put(join(dirs.BINDIR, 'usernsctl'), wrapper('usernsctl.js'), 0o755);
  // mount(8) runs it for "-t usernsd" and fstab lines (mount.usernsd(8)): the C program when built
  // (a view at a bind mount's cost), else the same contract in Node.
  const cHelper = join(SRC, 'dist', 'mount.usernsd');
  put(
    join(dirs.MOUNTHELPERDIR, 'mount.usernsd'),
    existsSync(cHelper)
      ? readFileSync(cHelper)
      : `#!/bin/sh\n# Installed by usernsd's make install: mount(8) runs it for "-t usernsd" and fstab lines (mount.usernsd(8)).\nexec ${lib}/node ${lib}/bin/usernsctl.js mount-helper "$@"\n`,
    0o755,
  );
  for (const page of readdirSync(join(SRC, 'man'))) {
    put(join(dirs.MANDIR, `man${page.split('.').pop()}`, page), readFileSync(join(SRC, 'man', page)));
  }
  // CAP_CHOWN only for the fallback that forks helpers (no usernsd-spawner): see the unit's comments.
  const chown = existsSync(join(SRC, 'dist', 'usernsd-spawner')) ? '' : ' CAP_CHOWN';
  put(join(dirs.UNITDIR, 'usernsd.service'), subst(readFileSync(join(SRC, 'etc', 'systemd', 'usernsd.service'), 'utf8')).replace('@CHOWN@', chown));
  // The drop-in for contexts given host resources ([delegate]): the admin copies it into place (usernsd(8)).
  put(join(lib, 'systemd', 'delegate.conf'), readFileSync(join(SRC, 'etc', 'systemd', 'usernsd.service.d', 'delegate.conf.example')));
  put(join(dirs.TMPFILESDIR, 'usernsd.conf'), readFileSync(join(SRC, 'etc', 'tmpfiles.d', 'usernsd.conf')));
  put(join(SYSCONFDIR, 'init.d', 'usernsd'), subst(readFileSync(join(SRC, 'etc', 'init.d', 'usernsd'), 'utf8')), 0o755, true);
  if (existsSync(join(SRC, 'etc', 'request-key.d', 'usernsd.conf'))) {
    const handler = existsSync(join(SRC, 'dist', 'usernsd-upcall')) ? `${dirs.LIBDIR}/dist/usernsd-upcall` : `${dirs.BINDIR}/usernsctl upcall`;
    put(
      join(SYSCONFDIR, 'request-key.d', 'usernsd.conf'),
      subst(readFileSync(join(SRC, 'etc', 'request-key.d', 'usernsd.conf'), 'utf8')).replace('@UPCALL@', handler),
      0o644,
      true,
    );
  }
  // The admin's configuration is never overwritten; the shipped contexts are examples only.
  const conf = readFileSync(join(SRC, 'etc', 'usernsd.conf'), 'utf8').replaceAll('/etc/userns.d', `${SYSCONFDIR}/userns.d`);
  put(join(SYSCONFDIR, 'usernsd.conf'), conf, 0o644, true);
  ensureDir(join(SYSCONFDIR, 'userns.d'));
  for (const f of shippedContexts()) {
    put(join(SYSCONFDIR, 'userns.d', `${f}.example`), readFileSync(join(SRC, 'etc', 'userns.d', f)), 0o644, true);
  }
  const previous = existsSync(dest(MANIFEST)) ? JSON.parse(readFileSync(dest(MANIFEST), 'utf8')) : { files: [], dirs: [] };
  const merged = {
    files: [...new Map([...previous.files, ...placed.files.map(({ replaced: _, ...f }) => f)].map((f) => [f.path, f])).values()],
    dirs: [...new Set([...previous.dirs, ...placed.dirs])],
  };
  put(MANIFEST, JSON.stringify(merged, null, 1) + '\n');
  // Complete: the old files are no longer needed for a rollback.
  for (const r of replaced)
    try {
      unlinkSync(r.backup);
    } catch {
      /* gone */
    }
  console.log(
    `installed usernsd under ${DESTDIR || '/'} (PREFIX=${PREFIX}, SYSCONFDIR=${SYSCONFDIR}): ${merged.files.length} files; make uninstall removes them`,
  );
  // What an install outside the system's own directories does not reach by itself, said once here.
  if (SYSCONFDIR !== '/etc')
    console.log(`note: request-key(8) reads /etc/request-key.d only: to wire the upcall, ln -s ${SYSCONFDIR}/request-key.d/usernsd.conf /etc/request-key.d/`);
  if (dirs.MOUNTHELPERDIR !== '/sbin')
    console.log(`note: mount(8) looks for mount.usernsd in /sbin: for mount -t usernsd and fstab lines, ln -s ${dirs.MOUNTHELPERDIR}/mount.usernsd /sbin/`);
}

function uninstall() {
  if (!existsSync(dest(MANIFEST))) throw new Error(`${dest(MANIFEST)} not found: nothing was installed with these PREFIX/DESTDIR settings`);
  const running = runningAgents();
  if (running.length > 0) {
    throw new Error(
      `usernsd from this install is running (pid ${running.join(', ')}): stop it first (systemctl stop usernsd, or ${SYSCONFDIR}/init.d/usernsd stop), then make uninstall again; pins stay until usernsctl release`,
    );
  }
  const m = JSON.parse(readFileSync(dest(MANIFEST), 'utf8'));
  let removed = 0;
  for (const f of m.files) {
    const p = dest(f.path);
    if (!existsSync(p)) continue;
    if (f.sha256 && sha256(readFileSync(p)) !== f.sha256) {
      console.log(`kept ${p}: changed since install (remove it by hand if it is no longer wanted)`);
      continue;
    }
    unlinkSync(p);
    removed++;
  }
  unlinkSync(dest(MANIFEST));
  // Directories this install made, deepest first, and only when empty: nothing else is touched.
  for (const d of [...m.dirs].sort((a, b) => b.length - a.length)) {
    try {
      if (statSync(dest(d)).isDirectory() && readdirSync(dest(d)).length === 0) rmdirSync(dest(d));
    } catch {
      /* gone */
    }
  }
  console.log(`uninstalled usernsd: ${removed} files removed`);
}

/**
 * A failed install takes back what it placed so far and puts back what it replaced: the previous
 * install (or nothing) exactly as it was, never a mix and never less.
 */
function rollback() {
  const restored = new Set();
  for (const r of [...replaced].reverse()) {
    try {
      renameSync(r.backup, r.target);
      restored.add(r.target);
    } catch (err) {
      console.error(`usernsd install: could not put back ${r.target} (kept as ${r.backup}): ${err.message}`);
    }
  }
  for (const f of placed.files)
    if (!f.replaced && !restored.has(dest(f.path)))
      try {
        unlinkSync(dest(f.path));
      } catch {
        /* gone */
      }
  for (const d of [...placed.dirs].reverse())
    try {
      rmdirSync(dest(d));
    } catch {
      /* not empty: keep */
    }
}

/** Pids of agents running from this install's Node (what uninstall would pull from under them). */
function runningAgents() {
  const node = dest(`${dirs.LIBDIR}/node`);
  const out = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      if (readlinkSync(`/proc/${pid}/exe`).replace(/ \(deleted\)$/, '') === node) out.push(Number(pid));
    } catch {
      /* gone, or not ours to read */
    }
  }
  return out;
}

try {
  const verb = process.argv[2];
  if (verb === 'install') {
    try {
      install();
    } catch (err) {
      rollback();
      throw err;
    }
  } else if (verb === 'uninstall') uninstall();
  else throw new Error('usage: install.js install|uninstall');
} catch (err) {
  console.error(`usernsd ${process.argv[2] ?? ''}: ${err.message}`);
  process.exit(1);
}

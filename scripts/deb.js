// make deb: usernsd_VERSION_ARCH.deb from the built tree, with dpkg-deb and dpkg-shlibdeps only (no
// debhelper needed).
// The files are make install's, placed with PREFIX=/usr SYSCONFDIR=/etc into a staging tree; the
// package adds what dpkg needs: control, conffiles, md5sums, maintainer scripts that enable and
// (re)start the unit the Debian way, and the copyright and changelog files.
//   DEB_VERSION   the package version (default: package.json's)
//   DEB_OUTDIR    where the .deb goes (default: the checkout)
//   DEB_COMPRESS  dpkg-deb -Z: xz (default), gzip, none (Debian 12's tools read no zstd members)
//   DEB_COMPRESS_LEVEL  dpkg-deb -z: 0-9 (default: dpkg-deb's own for the method)
//   DEB_MAINTAINER  the Maintainer field
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  existsSync,
  openSync,
  readSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const SRC = dirname(dirname(fileURLToPath(import.meta.url)));
const pkg = JSON.parse(readFileSync(join(SRC, 'package.json'), 'utf8'));
const VERSION = process.env.DEB_VERSION || pkg.version;
const OUTDIR = process.env.DEB_OUTDIR || SRC;
const COMPRESS = process.env.DEB_COMPRESS || 'xz';
const LEVEL = process.env.DEB_COMPRESS_LEVEL || '';
if (LEVEL && !/^[0-9]$/.test(LEVEL)) throw new Error(`DEB_COMPRESS_LEVEL ${LEVEL} is not a level from 0 to 9`);
const MAINTAINER = process.env.DEB_MAINTAINER || 'usernsd developers <usernsd@users.noreply.github.com>';

if (!/^[0-9][A-Za-z0-9.+~-]*$/.test(VERSION)) throw new Error(`DEB_VERSION ${VERSION} is not a Debian version`);
const ARCH = execFileSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).trim();

/** Files the admin edits: dpkg keeps their changes across upgrades and removes them only on purge. */
function conffiles(root) {
  const out = [];
  for (const dir of ['etc']) {
    for (const e of readdirSync(join(root, dir), { recursive: true, withFileTypes: true })) {
      if (e.isFile()) out.push('/' + relative(root, join(e.parentPath, e.name)));
    }
  }
  return out.sort();
}

function walkFiles(root) {
  const out = [];
  for (const e of readdirSync(root, { recursive: true, withFileTypes: true })) {
    const p = join(e.parentPath, e.name);
    if (e.isFile() && !relative(root, p).startsWith('DEBIAN/')) out.push(p);
  }
  return out.sort();
}

function installedSizeKiB(root) {
  let bytes = 0;
  for (const f of walkFiles(root)) bytes += statSync(f).size;
  return Math.ceil(bytes / 1024);
}

// Maintainer scripts: what debhelper's dh_installsystemd and dh_installinit would generate for a
// unit and an init script of the same name, written out (the build needs no debhelper).
const POSTINST = `#!/bin/sh
# usernsd postinst: enable the unit, create the runtime directories, (re)start the agent. On an
# upgrade the running agent is restarted into the new files; the pins in /run/userns outlive it and
# the new agent adopts them (usernsd(8), UPGRADES).
set -e
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ]; then
	if command -v systemd-tmpfiles >/dev/null 2>&1; then
		systemd-tmpfiles --create usernsd.conf >/dev/null || true
	fi
	deb-systemd-helper unmask usernsd.service >/dev/null || true
	if deb-systemd-helper --quiet was-enabled usernsd.service; then
		deb-systemd-helper enable usernsd.service >/dev/null || true
	else
		deb-systemd-helper update-state usernsd.service >/dev/null || true
	fi
	if [ -x /etc/init.d/usernsd ]; then
		update-rc.d usernsd defaults >/dev/null
	fi
	if [ -n "$2" ]; then action=restart; else action=start; fi
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		deb-systemd-invoke $action usernsd.service >/dev/null || true
	elif [ -x /etc/init.d/usernsd ]; then
		invoke-rc.d --skip-systemd-native usernsd $action || exit 1
	fi
fi
exit 0
`;

const PRERM = `#!/bin/sh
# usernsd prerm: stop the agent when the package goes away (not on upgrade: postinst restarts it).
# Its pins stay: they are the admin's namespaces, released with usernsctl release or a reboot.
set -e
if [ "$1" = "remove" ]; then
	if [ -d /run/systemd/system ]; then
		deb-systemd-invoke stop usernsd.service >/dev/null || true
	elif [ -x /etc/init.d/usernsd ]; then
		invoke-rc.d --skip-systemd-native usernsd stop || exit 1
	fi
fi
exit 0
`;

const POSTRM = `#!/bin/sh
# usernsd postrm. remove: the unit is forgotten by systemd; configuration, state (/var/lib/usernsd:
# range allocations, which a reinstall must find again) and pins stay. purge: the configuration
# (dpkg removes the conffiles: usernsd.conf, the request-key rule, the init script) and the
# agent's state go too.
set -e
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = "remove" ]; then
	deb-systemd-helper mask usernsd.service >/dev/null || true
fi
if [ "$1" = "purge" ]; then
	deb-systemd-helper purge usernsd.service >/dev/null || true
	deb-systemd-helper unmask usernsd.service >/dev/null || true
	update-rc.d usernsd remove >/dev/null || true
	rm -rf /var/lib/usernsd
	rmdir /etc/userns.d 2>/dev/null || true
fi
exit 0
`;

function copyright() {
  const licenses = new Map();
  const lock = JSON.parse(readFileSync(join(SRC, 'package-lock.json'), 'utf8'));
  for (const [p, meta] of Object.entries(lock.packages)) {
    if (p === '' || meta.dev || meta.devOptional || !existsSync(join(SRC, p))) continue;
    licenses.set(p.replace(/^.*node_modules\//, ''), meta.license ?? 'see the package');
  }
  const deps = [...licenses]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([n, l]) => ` ${n}: ${l}`)
    .join('\n');
  return `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: usernsd
Source: https://github.com/usernsd/usernsd

Files: *
Copyright: 2026 usernsd developers
License: Expat

Files: usr/lib/usernsd/node
Copyright: Node.js contributors and others
License: Expat
Comment: The Node.js runtime the agent runs on (${execFileSync(join(SRC, 'node_modules', 'node', 'bin', 'node'), ['-p', 'process.version'], { encoding: 'utf8' }).trim()}); its bundled
 libraries carry their own permissive licenses, listed in Node's LICENSE file.

Files: usr/lib/usernsd/node_modules/*
Copyright: the authors of each package
License: Expat
Comment: The agent's production dependencies, each under its own license:
${deps}

License: Expat
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
 THE SOFTWARE.
`;
}

function changelog() {
  const date = execFileSync('date', ['-R', '-u', '-d', `@${Math.floor(Number(process.env.SOURCE_DATE_EPOCH) || Date.now() / 1000)}`], {
    encoding: 'utf8',
  }).trim();
  return `usernsd (${VERSION}) unstable; urgency=medium\n\n  * Built from the usernsd source with make deb.\n\n -- ${MAINTAINER}  ${date}\n`;
}

/** The first `n` bytes of a file (fewer if it is shorter), as latin1 text. */
function headOf(p, n) {
  const head = Buffer.alloc(n);
  const fd = openSync(p, 'r');
  try {
    return head.subarray(0, readSync(fd, head, 0, n, 0)).toString('latin1');
  } finally {
    closeSync(fd);
  }
}

/**
 * What npm leaves in node_modules that a system package must not carry, made right: files for
 * packaging tools and web pages (.npmignore, .gitattributes, *.html), koffi's musl build (this is
 * a glibc system), "#!/usr/bin/env node" lines that would find the system's Node (older, or
 * none) instead of the package's own, and executable bits on files nothing executes.
 */
function tidy(lib) {
  rmSync(join(lib, 'node_modules/@koromix/koffi-linux-x64/musl_x64'), { recursive: true, force: true });
  for (const e of readdirSync(lib, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = join(e.parentPath, e.name);
    if (['.npmignore', '.gitattributes', '.gitignore'].includes(e.name) || e.name.endsWith('.html')) {
      unlinkSync(p);
      continue;
    }
    const mode = statSync(p).mode & 0o777;
    const text = headOf(p, 64);
    if (/^#!\/usr\/bin\/(env )?node\b/.test(text)) {
      // Run by the package's own Node only (the wrappers say \`/usr/lib/usernsd/node FILE\`): no
      // interpreter line (its line left empty, so that stack traces keep their line numbers).
      const body = readFileSync(p, 'utf8');
      writeFileSync(p, body.slice(body.indexOf('\n')));
      chmodSync(p, 0o644);
    } else if (e.name.endsWith('.node') || (mode & 0o111 && !text.startsWith('#!') && !text.startsWith('\x7fELF'))) {
      chmodSync(p, 0o644);
    }
  }
}

/** Executables without their debugging symbols (Debian policy 10.1): the C programs, the C library and Node. */
function strip(stage) {
  for (const f of [
    'usr/lib/usernsd/node',
    'usr/lib/usernsd/dist/usernsd-upcall',
    'usr/lib/usernsd/dist/usernsd-spawner',
    'usr/lib/usernsd/dist/mount.usernsd',
    'usr/lib/usernsd/dist/libusernsd-stamps.so',
    'usr/sbin/mount.usernsd',
  ]) {
    const p = join(stage, f);
    if (!existsSync(p)) continue;
    const r = spawnSync('strip', ['--strip-unneeded', '--remove-section=.comment', '--remove-section=.note', p], { encoding: 'utf8' });
    if (r.error) throw new Error(`strip is missing (apt-get install binutils): ${r.error.message}`);
    if (r.status !== 0) throw new Error(`strip ${f} failed: ${r.stderr}`);
  }
}

/** Whether a file is an ELF object (a program or a shared library such as koffi's .node). */
const isElf = (p) => headOf(p, 4) === '\x7fELF';

/**
 * The Depends the ELF files of the package need, as dpkg-shlibdeps (dpkg-dev) computes them from
 * the libraries each one loads: the shipped Node needs libstdc++ and libgcc_s beside libc. It wants
 * a debian/control to read; a minimal one in a directory of its own.
 */
function shlibsDepends(stage) {
  const elves = walkFiles(stage).filter(isElf);
  const dir = mkdtempSync(join(tmpdir(), 'usernsd-shlibs-'));
  try {
    mkdirSync(join(dir, 'debian'));
    writeFileSync(join(dir, 'debian/control'), 'Source: usernsd\n\nPackage: usernsd\nArchitecture: any\n');
    const r = spawnSync('dpkg-shlibdeps', ['-O', ...elves.flatMap((f) => ['-e', f])], { cwd: dir, encoding: 'utf8' });
    if (r.error) throw new Error(`make deb computes Depends with dpkg-shlibdeps: apt-get install dpkg-dev (${r.error.message})`);
    const line = /^shlibs:Depends=(.*)$/m.exec(r.stdout);
    if (r.status !== 0 || !line) throw new Error(`dpkg-shlibdeps failed: ${r.stderr}${r.stdout}`);
    return line[1];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Lintian findings that are this package's design, each with why. */
const LINTIAN_OVERRIDES = `# The package brings its own Node (the system's may be older than the agent needs), with the
# libraries Node links in statically.
usernsd: embedded-library zlib [usr/lib/usernsd/node]
usernsd: hardening-no-pie [usr/lib/usernsd/node]
`;

function build() {
  if (!existsSync(join(SRC, 'dist', 'usernsd.js'))) throw new Error('dist/ is not built: run "make" (npm run build) first');
  const stage = mkdtempSync(join(tmpdir(), 'usernsd-deb-'));
  try {
    chmodSync(stage, 0o755);
    const env = { ...process.env, DESTDIR: stage, PREFIX: '/usr', SYSCONFDIR: '/etc', MOUNTHELPERDIR: '/usr/sbin', UNITDIR: '/lib/systemd/system' };
    const r = spawnSync(process.execPath, [join(SRC, 'scripts', 'install.js'), 'install'], { env, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`staging with make install failed: ${r.stderr || r.stdout}`);
    unlinkSync(join(stage, 'usr/lib/usernsd/install-manifest.json')); // dpkg keeps the list of files
    tidy(join(stage, 'usr/lib/usernsd'));
    strip(stage);
    mkdirSync(join(stage, 'usr/share/lintian/overrides'), { recursive: true, mode: 0o755 });
    writeFileSync(join(stage, 'usr/share/lintian/overrides/usernsd'), LINTIAN_OVERRIDES, { mode: 0o644 });
    // The version the agent and usernsctl report is the package's.
    const stagedPkg = join(stage, 'usr/lib/usernsd/package.json');
    writeFileSync(stagedPkg, JSON.stringify({ ...JSON.parse(readFileSync(stagedPkg, 'utf8')), version: VERSION }, null, 2) + '\n');
    const doc = join(stage, 'usr/share/doc/usernsd');
    mkdirSync(doc, { recursive: true, mode: 0o755 });
    writeFileSync(join(doc, 'copyright'), copyright(), { mode: 0o644 });
    writeFileSync(join(doc, 'changelog.gz'), gzipSync(changelog(), { level: 9 }), { mode: 0o644 });
    for (const m of readdirSync(join(stage, 'usr/share/man'), { recursive: true, withFileTypes: true })) {
      if (!m.isFile() || m.name.endsWith('.gz')) continue;
      const p = join(m.parentPath, m.name);
      writeFileSync(`${p}.gz`, gzipSync(readFileSync(p), { level: 9 }), { mode: 0o644 });
      unlinkSync(p);
    }
    const control = join(stage, 'DEBIAN');
    mkdirSync(control, { mode: 0o755 });
    writeFileSync(
      join(control, 'control'),
      [
        'Package: usernsd',
        `Version: ${VERSION}`,
        `Architecture: ${ARCH}`,
        `Maintainer: ${MAINTAINER}`,
        `Installed-Size: ${installedSizeKiB(stage)}`,
        'Pre-Depends: init-system-helpers (>= 1.54~)',
        `Depends: ${shlibsDepends(stage)}`,
        'Recommends: keyutils, bindfs',
        'Suggests: etcd-server',
        'Section: admin',
        'Priority: optional',
        'Homepage: https://github.com/usernsd/usernsd',
        `Description: ${pkg.description.split(':')[0]}`,
        ' usernsd is a long-running root agent that answers "which user namespace does',
        ' this label mean?" over a UNIX socket. It creates the namespaces configured in',
        ' /etc/userns.d, pins them under /run/userns, maps ids between contexts with',
        ' NFS-style squash, makes idmapped views of trees, names mapped ids through',
        " userdb and answers the kernel's request-key upcall. It ships with its own",
        ' Node.js runtime.',
        '',
      ].join('\n'),
    );
    writeFileSync(join(control, 'conffiles'), conffiles(stage).join('\n') + '\n');
    writeFileSync(
      join(control, 'md5sums'),
      walkFiles(stage)
        .map((f) => `${createHash('md5').update(readFileSync(f)).digest('hex')}  ${relative(stage, f)}`)
        .join('\n') + '\n',
    );
    for (const [name, text] of [
      ['postinst', POSTINST],
      ['prerm', PRERM],
      ['postrm', POSTRM],
    ])
      writeFileSync(join(control, name), text, { mode: 0o755 });
    const out = join(OUTDIR, `usernsd_${VERSION}_${ARCH}.deb`);
    const b = spawnSync('dpkg-deb', ['--root-owner-group', `-Z${COMPRESS}`, ...(LEVEL ? [`-z${LEVEL}`] : []), '--build', stage, out], { encoding: 'utf8' });
    if (b.status !== 0) throw new Error(`dpkg-deb failed: ${b.stderr || b.stdout}`);
    console.log(out);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

try {
  build();
} catch (err) {
  console.error(`usernsd deb: ${err.message}`);
  process.exit(1);
}

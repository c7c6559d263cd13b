// npm run build, last step: the C programs, when a C compiler is present —
//   native/usernsd-upcall.c, proto.c  -> dist/usernsd-upcall   the request-key handler
//   native/mount-usernsd.c, proto.c   -> dist/mount.usernsd    mount(8)'s helper for -t usernsd
//   native/usernsd-spawner.c, spawner-proc.c -> dist/usernsd-spawner  the agent's maker of user namespaces
//   native/stamps.c, reads.c          -> dist/libusernsd-stamps.so  the reload's stamps of every file, the start's reads (koffi)
// Without a compiler the build goes on: the upcall is the Node handler (usernsctl upcall) and the
// agent forks a helper per namespace (spawner = node), and a reload looks at each file's stamp from
// JavaScript. A compiler that refuses the code (warnings
// are errors) fails the build.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
/** Each program and its sources (in native/). */
const programs = {
  'usernsd-upcall': ['usernsd-upcall.c', 'proto.c'],
  'usernsd-spawner': ['usernsd-spawner.c', 'spawner-proc.c'],
  'mount.usernsd': ['mount-usernsd.c', 'proto.c'],
};
/** Each shared library, loaded by the agent with koffi, and its sources. */
const libraries = {
  'libusernsd-stamps.so': ['stamps.c', 'reads.c'],
};
const cc = [process.env.CC, 'cc', 'gcc', 'clang'].find((c) => c && spawnSync(c, ['--version'], { stdio: 'ignore' }).status === 0);
if (!cc) {
  for (const p of [...Object.keys(programs), ...Object.keys(libraries)]) rmSync(join(root, 'dist', p), { force: true });
  console.error(
    'build-native: no C compiler (cc, gcc, clang): the upcall is the Node handler, usernsctl upcall, and the agent forks a helper per namespace (apt-get install gcc libc6-dev for the C programs)',
  );
  process.exit(0);
}
const common = [
  '-std=c11',
  '-O2',
  '-Wall',
  '-Wextra',
  '-Werror',
  '-Wformat=2',
  '-Wshadow',
  '-Wmissing-prototypes',
  '-fstack-protector-strong',
  '-D_FORTIFY_SOURCE=2',
  '-Wl,-z,relro,-z,now',
];
const flags = [...common, '-fPIE', '-pie'];
// A library's doubles are compared with JavaScript's: no fused multiply-add (native/stamps.c).
const libraryFlags = [...common, '-fPIC', '-shared', '-pthread', '-ffp-contract=off'];
// GCC's static analyzer (leaks, use after free, double close, NULL dereference), where the compiler
// has it (GCC 10 and later; not clang): its findings are errors like the warnings above.
if (spawnSync(cc, ['-fanalyzer', '-fsyntax-only', '-x', 'c', '/dev/null'], { stdio: 'ignore' }).status === 0) {
  flags.push('-fanalyzer');
  libraryFlags.push('-fanalyzer');
}
mkdirSync(join(root, 'dist'), { recursive: true });
const builds = [
  ...Object.entries(programs).map(([p, sources]) => [p, sources, flags]),
  ...Object.entries(libraries).map(([p, sources]) => [p, sources, libraryFlags]),
];
for (const [p, sources, f] of builds) {
  const out = join(root, 'dist', p);
  const r = spawnSync(cc, [...f, '-o', out, ...sources.map((s) => join(root, 'native', s))], { stdio: 'inherit' });
  if (r.status !== 0 || !existsSync(out)) {
    console.error(`build-native: ${cc} failed on native/${sources.join(', native/')}`);
    process.exit(1);
  }
  if (p in libraries) chmodSync(out, 0o644); // a library is loaded, not run (Debian policy 8.1)
}

// npm run build, last step: the C request-key handler (native/usernsd-upcall.c -> dist/usernsd-upcall)
// when a C compiler is present. Without one the build goes on, and the upcall is the Node handler
// (usernsctl upcall); a compiler that refuses the code (warnings are errors) fails the build.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const out = join(root, 'dist', 'usernsd-upcall');
const cc = [process.env.CC, 'cc', 'gcc', 'clang'].find((c) => c && spawnSync(c, ['--version'], { stdio: 'ignore' }).status === 0);
if (!cc) {
  rmSync(out, { force: true });
  console.error('build-native: no C compiler (cc, gcc, clang): the upcall is the Node handler, usernsctl upcall (apt-get install gcc libc6-dev for the C one)');
  process.exit(0);
}
const flags = ['-std=c11', '-O2', '-Wall', '-Wextra', '-Werror', '-Wformat=2', '-Wshadow', '-fstack-protector-strong', '-D_FORTIFY_SOURCE=2', '-fPIE', '-pie', '-Wl,-z,relro,-z,now'];
mkdirSync(dirname(out), { recursive: true });
const r = spawnSync(cc, [...flags, '-o', out, join(root, 'native', 'usernsd-upcall.c')], { stdio: 'inherit' });
if (r.status !== 0 || !existsSync(out)) {
  console.error(`build-native: ${cc} failed on native/usernsd-upcall.c`);
  process.exit(1);
}

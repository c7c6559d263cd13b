// koffi and libc, loaded once for sys.ts and keys.ts, and the SysError their failed calls throw.
import { constants } from 'node:os';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type Koffi from 'koffi';

type KoffiModule = typeof Koffi;

/**
 * koffi's native module, opened directly when it can be: the request-key handler is a process per
 * key and start-up is its cost. `import('koffi')` spends ~8 ms in its JavaScript loader (node:util,
 * the CommonJS loader, libc detection) before the ~1 ms dlopen of the same file; this takes ~2 ms.
 * Anything unexpected (another libc, a moved file, a version the lock file did not ask for) falls
 * back to koffi's own loader, which knows every platform.
 */
async function loadKoffi(): Promise<{ koffi: KoffiModule; loader: 'direct' | 'koffi' }> {
  if (process.platform === 'linux' && (process.arch === 'x64' || process.arch === 'arm64')) {
    try {
      const pkg = fileURLToPath(import.meta.resolve(`@koromix/koffi-linux-${process.arch}/package.json`));
      const mod = { exports: {} as Partial<KoffiModule> & { version?: string } };
      process.dlopen(mod, `${dirname(pkg)}/linux_${process.arch}/koffi.node`);
      if (mod.exports.version === KOFFI_VERSION && typeof mod.exports.load === 'function') return { koffi: mod.exports as KoffiModule, loader: 'direct' };
    } catch {
      /* koffi's own loader below */
    }
  }
  return { koffi: (await import('koffi')).default, loader: 'koffi' };
}

/** package.json pins koffi exactly; the native module reports its version (a unit test keeps the two equal). */
export const KOFFI_VERSION = '3.3.4';

const loaded = await loadKoffi();
export const koffi = loaded.koffi;
/** Which way koffi was loaded: 'direct' is the fast path, 'koffi' its own loader. */
export const koffiLoader = loaded.loader;
export const libc = koffi.load('libc.so.6');

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** A failed system call: the errno's name (EPERM, ENOSPC…) is what callers branch on. */
export class SysError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  constructor(syscall: string, errno: number, what: string) {
    const code = ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
    super(`${syscall}(${what}): ${code}`);
    this.name = 'SysError';
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
  }
}

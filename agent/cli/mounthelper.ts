// mount.usernsd in Node (usernsctl mount-helper): mount(8)'s helper for "-t usernsd" and fstab
// lines, for a build without a C compiler; the same contract as native/mount-usernsd.c, which make
// install puts in /sbin when it is built (mount.usernsd(8)).
import { UsernsError } from '../errors.ts';
import * as P from '../wire/protocol.ts';
import { UsageError } from './args.ts';
import type { Io } from './args.ts';
import { mountView } from './viewcmd.ts';
import type { ViewOptions } from './viewcmd.ts';

/**
 * Options of mount -t usernsd: the view's own, and the generic ones mount(8) and fstab pass along
 * (auto, nofail, x-systemd.*…), which mean nothing to a view and are ignored.
 */
export function mountHelperOptions(text: string): ViewOptions & { socket?: string } {
  const out: { context?: string; mode?: P.ViewMode; readOnly?: boolean; socket?: string } = {};
  for (const opt of text.split(',').filter(Boolean)) {
    const [key, value] = opt.includes('=') ? [opt.slice(0, opt.indexOf('=')), opt.slice(opt.indexOf('=') + 1)] : [opt, null];
    if (key === 'context' && value) out.context = value;
    else if (key === 'mode' && (value === 'identity' || value === 'foreign')) out.mode = value;
    else if (key === 'socket' && value) out.socket = value;
    else if (key === 'ro' || key === 'rw') out.readOnly = key === 'ro';
    else if (
      ['defaults', 'auto', 'noauto', 'nofail', '_netdev', 'user', 'nouser', 'users', 'owner', 'noowner', 'group', 'comment'].includes(key) ||
      key.startsWith('x-')
    )
      continue;
    else throw new UsageError(`unknown option "${opt}": mount -t usernsd takes context=LABEL, mode=identity|foreign, ro, rw, socket=PATH`);
  }
  return out;
}

/**
 * mount.usernsd SRC DST [-sfnv] [-N NS] [-o OPTIONS]: called by mount(8) for `-t usernsd` and
 * fstab lines of type usernsd. Exit status as mount(8)'s: 1 usage or permissions, 32 failure.
 */
export function mountHelperMain(argv: string[], io: Io): number {
  const positionals: string[] = [];
  let options = '';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-o') options += (options ? ',' : '') + (argv[++i] ?? '');
    else if (a === '-t' || a === '-N') i++;
    else if (/^-[sfnvr]+$/.test(a)) continue;
    else positionals.push(a);
  }
  try {
    if (positionals.length !== 2) throw new UsageError('mount.usernsd takes SRC and DST');
    const { socket, ...opts } = mountHelperOptions(options);
    if (process.geteuid!() !== 0) throw new UsernsError('E_PERMISSION', 'views are mounted by root');
    mountView(socket ?? (process.env.USERNSD_SOCKET || P.DEFAULT_SOCKET), positionals[0], positionals[1], opts);
    return 0;
  } catch (err) {
    io.err(`mount.usernsd: ${err instanceof UsernsError ? `${err.code}: ` : ''}${(err as Error).message}`);
    return err instanceof UsageError ? 1 : 32;
  }
}

// The systemd unit as make install writes it for this build (scripts/install.js): CAP_CHOWN only without usernsd-spawner.
import { existsSync, readFileSync } from 'node:fs';

/** Whether this build has the C spawner (npm run build made it: a C compiler was present). */
export const NATIVE_SPAWNER = existsSync(new URL('../../dist/usernsd-spawner', import.meta.url).pathname);

export function installedUnit(): string {
  return readFileSync(new URL('../../etc/systemd/usernsd.service', import.meta.url), 'utf8').replace('@CHOWN@', NATIVE_SPAWNER ? '' : ' CAP_CHOWN');
}

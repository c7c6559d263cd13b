// The connections of a small server on node:net (the descriptor socket, userdb): how many are open,
// how many each uid holds, and a bound on both that root is never held to.
import type { Server, Socket } from 'node:net';

export class ConnectionBook {
  private readonly sockets = new Set<Socket>();
  /** Held per person (People.of): an owner and every id its contexts map count as one. */
  private readonly perUid = new Map<string, number>();
  private readonly max: number;
  private readonly maxPerUid: number;

  constructor(max: number, maxPerUid: number) {
    this.max = max;
    this.maxPerUid = maxPerUid;
  }

  /**
   * Count the socket in, until it closes; false (and nothing counted) when the caller is over a
   * bound. `person`: who the uid counts as (People.of), the uid itself by default.
   */
  admit(socket: Socket, uid: number, person: string = `uid ${uid}`): boolean {
    const held = this.perUid.get(person) ?? 0;
    if (uid !== 0 && (this.sockets.size >= this.max || held >= this.maxPerUid)) return false;
    this.sockets.add(socket);
    this.perUid.set(person, held + 1);
    socket.once('close', () => {
      this.sockets.delete(socket);
      const n = (this.perUid.get(person) ?? 1) - 1;
      if (n > 0) this.perUid.set(person, n);
      else this.perUid.delete(person);
    });
    return true;
  }

  /** Stop listening and cut every connection still open. */
  closeServer(server: Server): Promise<void> {
    return new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
    });
  }
}

// usernsctl explain (SPEC §7): what a file's ids mean — its context, the ids inside it and on the
// host, their names, how they look from the host and from the caller's context, through each kind
// of view, and, for every overflow id, why.
import { formatExtents } from '../config/extents.ts';
import { HOST_LABEL } from '../config/types.ts';
import type { Context } from '../config/types.ts';
import { HOST_VIEW, mapId, toHost, viewPlan } from './idmap.ts';
import type { IdKind, MapView, Overflow } from './idmap.ts';
import { lookup } from '../config/extents.ts';
import type { Explanation, IdExplanation } from './wire/protocol.ts';

export type ExplainInput = {
  readonly path: string;
  readonly onDisk: { readonly uid: number; readonly gid: number };
  /** The file's context with its view from the host, or null for a file no usable label claims. */
  readonly file: { readonly ctx: Context; readonly view: MapView } | null;
  /** Where the label was found. */
  readonly labelledPath: string | null;
  readonly caller: MapView;
  readonly overflow: Overflow;
  /** The userdb name of a host id, when the caller may learn it (userdb's rule). */
  readonly nameOf: (kind: IdKind, host: number) => string | null;
  readonly note: string | null;
};

/** Pure: every figure from the maps, squash and names the agent holds. */
export function explain(input: ExplainInput): Explanation {
  const { caller, overflow, file } = input;
  const one = (kind: IdKind): IdExplanation => {
    const onDisk = input.onDisk[kind];
    const ov = overflow[kind];
    const why: string[] = [];
    if (!file) {
      // No context: the ids are the host's own. Named only when they fall in a context's range.
      const seen = mapId(HOST_VIEW, caller, kind, onDisk, overflow);
      if (seen === ov && onDisk !== ov)
        why.push(`host ${kind} ${onDisk} is not mapped in context ${caller.label} (yours): it shows there as the overflow ${kind} ${ov}`);
      return { onDisk, host: onDisk, name: input.nameOf(kind, onDisk), fromHost: onDisk, fromCaller: seen, identityView: onDisk, foreignView: onDisk, why };
    }
    const { ctx, view } = file;
    const host = toHost(view, kind, onDisk);
    const squash = ctx.squash;
    const anon = kind === 'uid' ? squash.anonuid : squash.anongid;
    const map = kind === 'uid' ? ctx.uidMap : ctx.gidMap;
    if (host === null)
      why.push(
        `on-disk ${kind} ${onDisk} is not in the ${kind}_map of ${ctx.label} (${formatExtents(map)}${ctx.parent !== HOST_LABEL ? `, through its parent ${ctx.parent}` : ''}): nothing can show it but as the overflow ${kind} ${ov}, and nothing can write it`,
      );
    const squashed = squash.mode === 'all' || (squash.mode === 'root' && onDisk === 0);
    if (squashed) {
      why.push(
        squash.mode === 'all'
          ? `${ctx.label} squashes all ids (mode all): from any other context every file shows as its anon${kind} ${anon}`
          : `${ctx.label} squashes root (mode root): from any other context its on-disk ${kind} 0 shows as anon${kind} ${anon}, and a foreign view leaves it unmapped (the overflow ${kind} ${ov}) so that nobody can write as it`,
      );
    }
    const fromHostId = mapId(view, HOST_VIEW, kind, onDisk, overflow);
    const fromCaller = mapId(view, caller, kind, onDisk, overflow);
    if (caller.label !== ctx.label && caller.label !== HOST_LABEL && fromCaller === ov && fromHostId !== ov) {
      why.push(`host ${kind} ${fromHostId} is not mapped in context ${caller.label} (yours): it shows there as the overflow ${kind} ${ov}`);
    }
    const hostMaps = { uid: view.uid!.byInside, gid: view.gid!.byInside };
    const id = viewPlan(hostMaps, squash, 'identity');
    const fo = viewPlan(hostMaps, squash, 'foreign');
    const through = (plan: typeof id) => (plan.kind === 'force' ? (kind === 'uid' ? plan.uid : plan.gid) : (lookup(plan.maps[kind], 'inside', onDisk) ?? ov));
    return {
      onDisk,
      host,
      name: host === null ? null : input.nameOf(kind, host),
      fromHost: fromHostId,
      fromCaller,
      identityView: through(id),
      foreignView: through(fo),
      why,
    };
  };
  return {
    path: input.path,
    labelledPath: input.labelledPath,
    context: file?.ctx.label ?? null,
    parent: file?.ctx.parent ?? null,
    squash: file ? { mode: file.ctx.squash.mode, anonuid: file.ctx.squash.anonuid, anongid: file.ctx.squash.anongid } : null,
    callerContext: caller.label,
    note: input.note,
    overflow,
    uid: one('uid'),
    gid: one('gid'),
  };
}

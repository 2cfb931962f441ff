/**
 * The pure part of BGP: what this node should advertise (its blocks, from the cluster state), what to add
 * and withdraw given what gobgpd holds, and the learned routes to hand to the route installer.
 */
import type { BgpPath, BgpRoute } from '@underlay/adapters';
import { formatBlock, formatValue, overlaps, parseCidr, tryParseAddr, type ClusterState, type DesiredRoute } from '@underlay/core';

/** Marks the paths underlay originates: large community `<AS>:201:1` (201 = underlay's route protocol number). */
export const UNDERLAY_MARK_DATA1 = 201;
export const UNDERLAY_MARK_DATA2 = 1;
export const underlayMark = (asn: number): string => `${asn}:${UNDERLAY_MARK_DATA1}:${UNDERLAY_MARK_DATA2}`;

/** True for a path this (or an earlier) underlay agent originated in gobgpd. */
export function isUnderlayPath(p: BgpPath): boolean {
  if (!p.local) return false;
  return (p.largeCommunities ?? []).some((c) => c.endsWith(`:${UNDERLAY_MARK_DATA1}:${UNDERLAY_MARK_DATA2}`));
}

export interface Advertisements {
  /** prefix → route, sorted by prefix. */
  routes: Map<string, BgpRoute>;
  /** Blocks that cannot be advertised with this next hop (an IPv6 block and an IPv4 host address, or the reverse). */
  skipped: string[];
}

/** Every block `node` owns, in every pool, with `nextHop` (deduplicated: pools in different address spaces may repeat a block). */
export function desiredAdvertisements(state: ClusterState, node: string, nextHop: string, asn: number): Advertisements {
  const nh = tryParseAddr(nextHop);
  const routes = new Map<string, BgpRoute>();
  const skipped: string[] = [];
  const prefixes: string[] = [];
  for (const p of state.pools.values()) {
    for (const b of p.blocks.values()) {
      if (b.node !== node) continue;
      const prefix = formatBlock(p, b.network);
      if (!nh || nh.family !== p.cidr.family) {
        skipped.push(prefix);
        continue;
      }
      prefixes.push(prefix);
    }
  }
  for (const prefix of [...new Set(prefixes)].sort()) {
    routes.set(prefix, { prefix, nextHop: formatNextHop(nextHop), origin: 'igp', largeCommunities: [underlayMark(asn)] });
  }
  return { routes, skipped: [...new Set(skipped)].sort() };
}

function formatNextHop(a: string): string {
  const addr = tryParseAddr(a);
  return addr ? formatValue(addr.family, addr.value) : a;
}

export interface AdvertisementPlan {
  add: BgpRoute[];
  /** Prefixes to withdraw (underlay-marked local paths no longer wanted). */
  withdraw: string[];
  /** Already advertised as wanted. */
  kept: string[];
}

/**
 * Compares the wanted routes with the paths gobgpd holds (any of its global RIB's paths; only local
 * underlay-marked ones count). A wanted route already held with the same next hop and mark is left alone,
 * so a restarted agent re-advertises nothing; one held with another next hop is re-added (AddPath replaces
 * the speaker's own path: no withdrawal in between); marked paths nobody wants are withdrawn. Paths without
 * the mark (added by an operator or a config file) are never touched.
 */
export function planAdvertisements(wanted: ReadonlyMap<string, BgpRoute>, held: readonly BgpPath[]): AdvertisementPlan {
  const ours = new Map<string, BgpPath>();
  for (const p of held) if (isUnderlayPath(p) && !p.withdraw && !ours.has(p.prefix)) ours.set(p.prefix, p);
  const add: BgpRoute[] = [];
  const kept: string[] = [];
  for (const [prefix, r] of wanted) {
    const h = ours.get(prefix);
    if (h && sameAddress(h.nextHop, r.nextHop) && sameMarks(h, r)) kept.push(prefix);
    else add.push(r);
  }
  const withdraw = [...ours.keys()].filter((p) => !wanted.has(p)).sort();
  return { add, withdraw, kept };
}

function sameAddress(a: string, b: string): boolean {
  const x = tryParseAddr(a);
  const y = tryParseAddr(b);
  return !!x && !!y && x.family === y.family && x.value === y.value;
}

const sameMarks = (h: BgpPath, r: BgpRoute): boolean => (r.largeCommunities ?? []).every((c) => (h.largeCommunities ?? []).includes(c));

/**
 * Best paths learned from peers, by prefix: a watch event's paths applied to the table. A withdrawal, or a
 * best path that is now local, removes the prefix; a peer's best path sets it.
 */
export function applyBestPaths(table: Map<string, BgpPath>, paths: readonly BgpPath[]): void {
  // gobgpd sends the new best path when it changes, and the withdrawn one only when no path is left.
  for (const p of paths) {
    if (p.withdraw || p.local) table.delete(p.prefix);
    else table.set(p.prefix, p);
  }
}

/**
 * The learned routes to install: `dst via next hop` (dev '' lets the kernel pick). Left out: prefixes that
 * overlap the cluster's pools (the controller's event stream is the source of truth for blocks, and the
 * routes module programs them), next hops that are this host, unspecified or of the other family, and
 * paths gobgpd marks as having an unreachable next hop.
 */
export function learnedRoutes(table: ReadonlyMap<string, BgpPath>, state: ClusterState, selfAddress: string): DesiredRoute[] {
  const pools = [...state.pools.values()].map((p) => p.cidr);
  const self = tryParseAddr(selfAddress);
  const out: DesiredRoute[] = [];
  for (const p of table.values()) {
    const dst = parseCidr(p.prefix);
    const via = tryParseAddr(p.nextHop);
    if (!via || via.value === 0n || via.family !== dst.family) continue;
    if (self && self.family === via.family && self.value === via.value) continue;
    if (p.nextHopInvalid) continue;
    if (pools.some((c) => overlaps(c, dst))) continue;
    out.push({ dst: p.prefix, via: p.nextHop, dev: '' });
  }
  return out.sort((a, b) => (a.dst < b.dst ? -1 : a.dst > b.dst ? 1 : 0));
}

export const sameRoutes = (a: readonly DesiredRoute[], b: readonly DesiredRoute[]): boolean =>
  a.length === b.length && a.every((r, i) => r.dst === b[i]!.dst && r.via === b[i]!.via && r.dev === b[i]!.dev);

/**
 * The routes a host needs for its ipvlan L3 networks (pure: state in, routes out).
 *
 * In ipvlan l3/l3s mode the host is the containers' router: a packet from a container leaves through
 * the parent and the host's routing table. For every local l3/l3s network and every pool it uses:
 * - one route per block owned by ANOTHER node: `<block> via <owner's address> dev <parent>`;
 * - one host route (/32, /128) per endpoint address held by another node outside a block that node
 *   owns (an address borrowed from a third node's block, or from one of MY blocks): the longer prefix
 *   wins over the block route.
 * Nodes with no known address (or none of the pool's family) get no routes. The result is sorted
 * (IPv4 before IPv6, then by destination), one route per destination.
 */
import { type Family, formatValue, tryParseAddr } from '../ip.js';
import { blockOf, formatBlock, type IpamState } from '../ipam/state.js';
import type { DesiredRoute } from './types.js';

/** The parts of a local network record the routes depend on (the agent's NetworkRecord fits). */
export interface RouteNetwork {
  readonly type: string;
  readonly ipvlanMode: string;
  /** The host link the network's slaves hang off. */
  readonly parent: string;
  /** The controller's pools the network uses. */
  readonly poolIds: readonly string[];
}

/** Whether a local network needs routes to other hosts (ipvlan in l3 or l3s mode). */
export const needsRoutes = (n: RouteNetwork): boolean => n.type === 'ipvlan' && (n.ipvlanMode === 'l3' || n.ipvlanMode === 'l3s');

/**
 * A node's next hop for one family. `address` is the node's registered address; several may be given
 * separated by commas or spaces (e.g. `198.51.100.2,2001:db8::2`): the first of the family is used.
 */
export function nextHopOf(address: string | undefined, family: Family): string | undefined {
  if (!address) return undefined;
  const key = `${family}|${address}`;
  if (hopMemo.has(key)) return hopMemo.get(key);
  let hop: string | undefined;
  for (const part of address.split(/[\s,]+/)) {
    const a = tryParseAddr(part.replace(/\/\d+$/, ''));
    if (a && a.family === family) {
      hop = formatValue(family, a.value);
      break;
    }
  }
  if (hopMemo.size >= 4096) hopMemo.clear();
  hopMemo.set(key, hop);
  return hop;
}

// Formatting bigints is most of the cost of a recomputation: the texts are remembered per block and
// allocation object (both are immutable in what is formatted: the network, the address) and per node address.
const hopMemo = new Map<string, string | undefined>();
const blockText = new WeakMap<object, string>();
const hostText = new WeakMap<object, string>();

interface Keyed {
  family: Family;
  value: bigint;
  prefix: number;
  route: DesiredRoute;
}

export function desiredRoutes(state: IpamState, node: string, localNetworks: Iterable<RouteNetwork>): DesiredRoute[] {
  const out = new Map<string, Keyed>();
  const hop = (owner: string, family: Family): string | undefined => nextHopOf(state.nodes.get(owner)?.address, family);
  const add = (family: Family, value: bigint, prefix: number, dst: string, via: string, dev: string): void => {
    if (!out.has(dst)) out.set(dst, { family, value, prefix, route: { dst, via, dev } });
  };
  const seenPools = new Set<string>();
  for (const net of localNetworks) {
    if (!needsRoutes(net)) continue;
    for (const poolId of net.poolIds) {
      const p = state.pools.get(poolId);
      if (!p || seenPools.has(poolId)) continue;
      seenPools.add(poolId);
      const family = p.cidr.family;
      const hostPrefix = family === 4 ? 32 : 128;
      for (const b of p.blocks.values()) {
        if (b.node === node) continue;
        const via = hop(b.node, family);
        if (!via) continue;
        let dst = blockText.get(b);
        if (dst === undefined) blockText.set(b, (dst = formatBlock(p, b.network)));
        add(family, b.network, p.blockPrefix, dst, via, net.parent);
      }
      for (const [v, a] of p.allocs) {
        if (a.kind !== 'endpoint' || a.node === node) continue;
        const owner = p.blocks.get(blockOf(p, v))?.node;
        if (owner === a.node) continue; // covered by the owner's block route
        const via = hop(a.node, family);
        if (!via) continue;
        let dst = hostText.get(a);
        if (dst === undefined) hostText.set(a, (dst = `${formatValue(family, v)}/${hostPrefix}`));
        add(family, v, hostPrefix, dst, via, net.parent);
      }
    }
  }
  return [...out.values()]
    .sort((x, y) => x.family - y.family || (x.value < y.value ? -1 : x.value > y.value ? 1 : 0) || x.prefix - y.prefix)
    .map((k) => k.route);
}

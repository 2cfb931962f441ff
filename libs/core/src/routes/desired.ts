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
import type { ClusterEvent } from '../state/events.js';
import { type Family, formatValue, parseCidr, tryParseAddr } from '../ip.js';
import { allocsIn, blockOf, blockSize, formatBlock, type ClusterState, type Pool } from '../state/cluster-state.js';
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

/**
 * The routed networks' pools, in order (networks, then each one's pools), each pool once (with the first
 * network that uses it); pools the state does not know are skipped.
 */
function* routedPools(state: ClusterState, localNetworks: Iterable<RouteNetwork>): Generator<[RouteNetwork, Pool]> {
  const seenPools = new Set<string>();
  for (const net of localNetworks) {
    if (!needsRoutes(net)) continue;
    for (const poolId of net.poolIds) {
      const p = state.pools.get(poolId);
      if (!p || seenPools.has(poolId)) continue;
      seenPools.add(poolId);
      yield [net, p];
    }
  }
}

export function desiredRoutes(state: ClusterState, node: string, localNetworks: Iterable<RouteNetwork>): DesiredRoute[] {
  const out = new Map<string, Keyed>();
  const hop = (owner: string, family: Family): string | undefined => nextHopOf(state.nodes.get(owner)?.address, family);
  const add = (family: Family, value: bigint, prefix: number, dst: string, via: string, dev: string): void => {
    if (!out.has(dst)) out.set(dst, { family, value, prefix, route: { dst, via, dev } });
  };
  for (const [net, p] of routedPools(state, localNetworks)) {
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
      if ((a.kind !== 'endpoint' && a.kind !== 'host') || a.node === node) continue;
      const owner = p.blocks.get(blockOf(p, v))?.node;
      if (owner === a.node) continue; // covered by the owner's block route
      const via = hop(a.node, family);
      if (!via) continue;
      let dst = hostText.get(a);
      if (dst === undefined) hostText.set(a, (dst = `${formatValue(family, v)}/${hostPrefix}`));
      add(family, v, hostPrefix, dst, via, net.parent);
    }
  }
  return [...out.values()]
    .sort((x, y) => x.family - y.family || (x.value < y.value ? -1 : x.value > y.value ? 1 : 0) || x.prefix - y.prefix)
    .map((k) => k.route);
}

// ---- Incremental recomputation -----------------------------------------------------------------------------
// The agent applies every event batch at once; recomputing all routes per batch costs O(blocks + allocations)
// of every routed pool (and as much garbage), on every host, for every container started anywhere. An event
// only changes the routes of a few destinations, so the agent recomputes just those (`routeKeysOf` +
// `desiredRouteFor`) and recomputes everything only for what can change routes anywhere (a node's address, a
// pool created or deleted, its own networks) and when it reconciles with the kernel. For every destination,
// `desiredRouteFor` gives exactly what `desiredRoutes` gives for it (same order of networks, pools, blocks
// before host routes).

/** A destination whose route may have changed: its text (as `desiredRoutes` prints it) and its parts. */
export interface RouteKey {
  readonly dst: string;
  readonly family: Family;
  readonly value: bigint;
  readonly prefix: number;
}

const hostKey = (p: Pool, v: bigint): RouteKey => {
  const family = p.cidr.family;
  const prefix = family === 4 ? 32 : 128;
  return { dst: `${formatValue(family, v)}/${prefix}`, family, value: v, prefix };
};

/**
 * The destinations whose desired route `ev` can have changed, judged on the state after it was applied (for
 * `desiredRouteFor`); `[]` when it changes no route; `undefined` when it can change routes anywhere (a node's
 * address, a pool created or deleted, anything unknown): then recompute them all with `desiredRoutes`.
 */
export function routeKeysOf(state: ClusterState, ev: ClusterEvent): RouteKey[] | undefined {
  switch (ev.type) {
    case 'BlockClaimed':
    case 'BlockReleased': {
      const p = state.pools.get(ev.data.poolId);
      if (!p) return undefined;
      let net: bigint;
      try {
        net = parseCidr(ev.data.block).network; // what the fold keys the block by
      } catch {
        return undefined;
      }
      const keys: RouteKey[] = [{ dst: formatBlock(p, net), family: p.cidr.family, value: net, prefix: p.blockPrefix }];
      // Host routes of the addresses inside the block depend on who owns it.
      for (const [v] of allocsIn(p, net, net + blockSize(p) - 1n)) keys.push(hostKey(p, v));
      return keys;
    }
    case 'AddressAllocated':
    case 'AddressReleased': {
      const p = state.pools.get(ev.data.poolId);
      const a = tryParseAddr(ev.data.address);
      if (!p || !a || a.family !== p.cidr.family) return undefined;
      return [hostKey(p, a.value)];
    }
    // State the routes do not depend on (endpoint bindings, references, names, Docker network records).
    case 'EndpointBound':
    case 'PoolRefAdded':
    case 'PoolRefRemoved':
    case 'NetworkRecorded':
    case 'NetworkNamed':
    case 'NetworkRemoved':
    case 'ClusterNetworkCreated':
    case 'ClusterNetworkRemoved':
      return [];
    default:
      return undefined;
  }
}

/** The route `desiredRoutes` gives for the destination `key` (undefined: none), without computing the others. */
export function desiredRouteFor(state: ClusterState, node: string, localNetworks: Iterable<RouteNetwork>, key: RouteKey): DesiredRoute | undefined {
  for (const [net, p] of routedPools(state, localNetworks)) {
    const family = p.cidr.family;
    if (family !== key.family) continue;
    if (key.prefix === p.blockPrefix) {
      const b = p.blocks.get(key.value);
      if (b && b.node !== node) {
        const via = nextHopOf(state.nodes.get(b.node)?.address, family);
        if (via) return { dst: key.dst, via, dev: net.parent };
      }
    }
    if (key.prefix === (family === 4 ? 32 : 128)) {
      const a = p.allocs.get(key.value);
      if (a && (a.kind === 'endpoint' || a.kind === 'host') && a.node !== node && p.blocks.get(blockOf(p, key.value))?.node !== a.node) {
        const via = nextHopOf(state.nodes.get(a.node)?.address, family);
        if (via) return { dst: key.dst, via, dev: net.parent };
      }
    }
  }
  return undefined;
}

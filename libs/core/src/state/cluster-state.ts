/**
 * The cluster state: networks, nodes, pools, blocks and endpoints, as the fold of the event log
 * (state/fold.ts changes it; nothing else does). Decisions (ipam/, network/, node/) read it, views and
 * routes are computed from it.
 */
import { HandleIndex } from './handle-index.js';
import type { AddressKind } from './events.js';
import type { NetworkDefinition } from './network-definition.js';
import { type Cidr, bits, formatValue, lastAddr, parseCidr, usableRange } from '../ip.js';

/** Never changed once made (a binding replaces it): copies of the state share these objects (cloneState). */
export interface Allocation {
  readonly seq: number;
  readonly kind: AddressKind;
  readonly node: string;
  readonly handle?: string;
  /** Time of the AddressAllocated event (RFC 3339). */
  readonly time: string;
  /** The endpoint holding it, once bound. */
  readonly endpointId?: string;
  readonly networkId?: string;
  /** Time of the EndpointBound event. */
  readonly boundTime?: string;
}

/** A block of a pool, owned by one node. */
export interface Block {
  readonly network: bigint;
  readonly node: string;
  readonly claimedSeq: number;
  /** Endpoint allocations inside the block (any node's). */
  endpoints: number;
  /** Allocations of any kind inside the block's usable range; the block is full when it equals the range's size. */
  used: number;
  /** Next-fit cursor inside the block. */
  cursor: bigint;
  /** Time since when the block holds no endpoint (undefined while it holds some). */
  emptySince?: string;
}

export interface Pool {
  readonly poolId: string;
  readonly space: string;
  readonly cidr: Cidr;
  readonly cidrText: string;
  readonly subPool?: Cidr;
  readonly subPoolText?: string;
  readonly v6: boolean;
  readonly options: Readonly<Record<string, string>>;
  readonly blockPrefix: number;
  /** Addresses per block (2^(bits - blockPrefix)), computed once. */
  readonly blockSizeValue: bigint;
  readonly strictAffinity: boolean;
  /** Nodes whose Docker holds the pool. */
  readonly refs: Set<string>;
  /** The request that added each node's reference (a retry of it is not a second network). */
  readonly refRequests: Map<string, string>;
  /** address value → allocation (endpoints, the gateway, aux addresses). */
  readonly allocs: Map<bigint, Allocation>;
  /** handle → address value, for idempotent repeats (built from `allocs` when first asked: HandleIndex). */
  readonly handles: HandleIndex;
  /** block network → block, for claimed blocks only. */
  readonly blocks: Map<bigint, Block>;
  /** node → its blocks' networks, in claim order. */
  readonly nodeBlocks: Map<string, bigint[]>;
  /** The gateway address, once reserved; the same for every node. */
  gateway?: bigint;
  /** Bounds of what may be handed out (pool or --ip-range, less the pool's network/broadcast). */
  readonly first: bigint;
  readonly last: bigint;
}

export interface NodeInfo {
  readonly node: string;
  readonly registeredSeq: number;
  address?: string;
  version?: string;
  interfaces?: string[];
}

export interface NetworkInfo {
  readonly networkId: string;
  readonly node: string;
  readonly poolIds: readonly string[];
  readonly options: Readonly<Record<string, string>>;
  name?: string;
  /** Member of the cluster network `name` (true), refused for a different definition (false), unknown (undefined). */
  cluster?: boolean;
}

/** A cluster-wide network, by name. */
export interface ClusterNetwork {
  readonly name: string;
  readonly definition: NetworkDefinition;
  readonly createdSeq: number;
  readonly time: string;
  readonly actor: string;
  readonly originNode?: string;
  readonly originNetworkId?: string;
}

/** The whole cluster state, folded from the event log. */
export interface ClusterState {
  /** Sequence number of the last applied event (0 = empty log). */
  seq: number;
  readonly pools: Map<string, Pool>;
  readonly nodes: Map<string, NodeInfo>;
  /** Docker networks by their (per-node) id. */
  readonly networks: Map<string, NetworkInfo>;
  /** Cluster networks by name. */
  readonly clusterNetworks: Map<string, ClusterNetwork>;
  /** The seq of each chain's last event (state/chains.ts): the `prev` of its next one. */
  readonly chains: Map<string, number>;
  /**
   * Chains missing from `chains` have no event after this seq: 0 for a state folded from the start, the seq of a
   * snapshot written before chains otherwise (a lower bound, which is all `prev` promises).
   */
  chainFloor: number;
}


export const emptyState = (): ClusterState => ({ seq: 0, pools: new Map(), nodes: new Map(), networks: new Map(), clusterNetworks: new Map(), chains: new Map(), chainFloor: 0 });

/** The `prev` of the next event of `chain`. */
export const chainHead = (state: ClusterState, chain: string): number => state.chains.get(chain) ?? state.chainFloor;

export const blockSize = (p: Pool): bigint => p.blockSizeValue;

/** How many usable addresses the pool has (its usable range; 0 when empty). */
export function poolSize(p: Pool): bigint {
  const r = usableRange(p.cidr);
  return r.last >= r.first ? r.last - r.first + 1n : 0n;
}
export const blockOf = (p: Pool, v: bigint): bigint => v - ((v - p.cidr.network) % blockSize(p));
export const formatBlock = (p: Pool, network: bigint): string => `${formatValue(p.cidr.family, network)}/${p.blockPrefix}`;

/** The part of a block addresses may come from (inside the pool's range). */
export function blockRange(p: Pool, network: bigint): { first: bigint; last: bigint } | undefined {
  const first = network > p.first ? network : p.first;
  const end = network + blockSize(p) - 1n;
  const last = end < p.last ? end : p.last;
  return first <= last ? { first, last } : undefined;
}

/**
 * The allocations with addresses in [first, last], in address order when the range is the shorter walk,
 * else in allocation order: whichever of "probe each address of the range" and "scan the pool's
 * allocations" costs less (a block claim or a route key must not cost the whole pool).
 */
export function* allocsIn(p: Pool, first: bigint, last: bigint): Generator<[bigint, Allocation]> {
  if (last - first + 1n <= BigInt(p.allocs.size)) {
    for (let v = first; v <= last; v++) {
      const a = p.allocs.get(v);
      if (a) yield [v, a];
    }
  } else {
    for (const e of p.allocs) if (e[0] >= first && e[0] <= last) yield e;
  }
}

/** Endpoint allocations in the pool (gateway and aux reservations not counted). */
export function endpointCount(p: Pool): number {
  let n = 0;
  for (const a of p.allocs.values()) if (a.kind === 'endpoint') n++;
  return n;
}

export interface PoolDefinition {
  poolId: string;
  space: string;
  cidr: string;
  subPool?: string;
  v6: boolean;
  options: Record<string, string>;
  blockPrefix: number;
  strictAffinity: boolean;
}

/** An empty pool from its definition (the PoolCreated event, or a snapshot). */
export function createPool(d: PoolDefinition): Pool {
  const cidr = parseCidr(d.cidr);
  const subPool = d.subPool ? parseCidr(d.subPool) : undefined;
  const outer = usableRange(cidr);
  // Like Docker: --ip-range is used whole; only the pool's own network/broadcast are excluded.
  const inner = subPool ? { first: subPool.network, last: lastAddr(subPool) } : outer;
  const allocs = new Map<bigint, Allocation>();
  return {
    poolId: d.poolId,
    space: d.space,
    cidr,
    cidrText: d.cidr,
    subPool,
    subPoolText: d.subPool,
    v6: d.v6,
    options: { ...d.options },
    blockPrefix: Math.max(d.blockPrefix, cidr.prefix),
    blockSizeValue: 1n << BigInt(bits(cidr.family) - Math.max(d.blockPrefix, cidr.prefix)),
    strictAffinity: d.strictAffinity,
    refs: new Set(),
    refRequests: new Map(),
    allocs,
    handles: new HandleIndex(allocs),
    blocks: new Map(),
    nodeBlocks: new Map(),
    first: inner.first > outer.first ? inner.first : outer.first,
    last: inner.last < outer.last ? inner.last : outer.last,
  };
}

const cmpBig = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0);

/** A plain, comparable view of the state (for tests, `underlay ipam usage`, and restart checks). */
export function describe(state: ClusterState): unknown {
  return {
    seq: state.seq,
    nodes: [...state.nodes.values()].sort((a, b) => a.node.localeCompare(b.node)),
    networks: [...state.networks.values()].sort((a, b) => a.networkId.localeCompare(b.networkId)),
    clusterNetworks: [...state.clusterNetworks.values()].sort((a, b) => a.name.localeCompare(b.name)),
    pools: [...state.pools.values()]
      .sort((a, b) => a.poolId.localeCompare(b.poolId))
      .map((p) => ({
        poolId: p.poolId,
        space: p.space,
        cidr: p.cidrText,
        subPool: p.subPoolText,
        v6: p.v6,
        blockPrefix: p.blockPrefix,
        strictAffinity: p.strictAffinity,
        refs: [...p.refs].sort(),
        refRequests: [...p.refRequests].sort(),
        gateway: p.gateway === undefined ? undefined : formatValue(p.cidr.family, p.gateway),
        blocks: [...p.blocks.values()]
          .sort((a, b) => cmpBig(a.network, b.network))
          .map((b) => ({ ...b, network: formatBlock(p, b.network), cursor: formatValue(p.cidr.family, b.cursor) })),
        nodeBlocks: [...p.nodeBlocks.entries()].sort().map(([n, l]) => [n, l.map((x) => formatBlock(p, x))]),
        allocs: [...p.allocs.entries()]
          .sort((a, b) => cmpBig(a[0], b[0]))
          .map(([v, a]) => ({ address: formatValue(p.cidr.family, v), ...a })),
      })),
  };
}

/**
 * Builds every pool's handle index (HandleIndex) a slice at a time, for a caller that yields to the event loop
 * between steps (the controller after loading a snapshot). The state may change between steps.
 */
export function* buildHandleIndexes(state: ClusterState, slice = 20_000): Generator<void, void> {
  // One budget across pools: many small pools are a slice too.
  let n = 0;
  for (const p of state.pools.values()) {
    while (!p.handles.built) {
      n += Math.max(1, p.handles.buildSome(slice - n));
      if (n >= slice) {
        n = 0;
        yield;
      }
    }
  }
}

/**
 * IPAM state and its fold. `apply` is the only way state changes; the controller applies each
 * event once when it decides it and a restarted controller re-applies the log (or a snapshot and
 * the log after it), so both must reach identical state: nothing here may depend on the clock,
 * randomness, or anything but the events.
 */
import type { AddressKind, ClusterEvent } from '../events.js';
import type { NetworkDefinition } from '../network/definition.js';
import { type Cidr, bits, formatValue, lastAddr, parseAddr, parseCidr, usableRange } from '../ip.js';

export interface Allocation {
  readonly seq: number;
  readonly kind: AddressKind;
  readonly node: string;
  readonly handle?: string;
  /** Time of the AddressAllocated event (RFC 3339). */
  readonly time: string;
  /** The endpoint holding it, once bound. */
  endpointId?: string;
  networkId?: string;
  /** Time of the EndpointBound event. */
  boundTime?: string;
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
  /** handle → address value, for idempotent repeats. */
  readonly handles: Map<string, bigint>;
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

export interface IpamState {
  /** Sequence number of the last applied event (0 = empty log). */
  seq: number;
  readonly pools: Map<string, Pool>;
  readonly nodes: Map<string, NodeInfo>;
  /** Docker networks by their (per-node) id. */
  readonly networks: Map<string, NetworkInfo>;
  /** Cluster networks by name. */
  readonly clusterNetworks: Map<string, ClusterNetwork>;
}

export const emptyState = (): IpamState => ({ seq: 0, pools: new Map(), nodes: new Map(), networks: new Map(), clusterNetworks: new Map() });

export class FoldError extends Error {
  constructor(seq: number, message: string) {
    super(`event ${seq}: ${message}`);
    this.name = 'FoldError';
  }
}

export const blockSize = (p: Pool): bigint => p.blockSizeValue;
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
    allocs: new Map(),
    handles: new Map(),
    blocks: new Map(),
    nodeBlocks: new Map(),
    first: inner.first > outer.first ? inner.first : outer.first,
    last: inner.last < outer.last ? inner.last : outer.last,
  };
}

export function apply(state: IpamState, ev: ClusterEvent): IpamState {
  if (ev.seq !== state.seq + 1) throw new FoldError(ev.seq, `out of order, expected ${state.seq + 1}`);
  const pool = (id: string): Pool => {
    const p = state.pools.get(id);
    if (!p) throw new FoldError(ev.seq, `unknown pool ${id}`);
    return p;
  };
  switch (ev.type) {
    case 'PoolCreated': {
      const d = ev.data;
      if (state.pools.has(d.poolId)) throw new FoldError(ev.seq, `pool ${d.poolId} exists`);
      state.pools.set(d.poolId, createPool(d));
      break;
    }
    case 'PoolRefAdded': {
      const p = pool(ev.data.poolId);
      p.refs.add(ev.data.node);
      if (ev.data.requestId) p.refRequests.set(ev.data.node, ev.data.requestId);
      break;
    }
    case 'PoolRefRemoved': {
      const p = pool(ev.data.poolId);
      p.refs.delete(ev.data.node);
      p.refRequests.delete(ev.data.node);
      break;
    }
    case 'PoolDeleted':
      pool(ev.data.poolId);
      state.pools.delete(ev.data.poolId);
      break;
    case 'BlockClaimed': {
      const p = pool(ev.data.poolId);
      const net = parseCidr(ev.data.block).network;
      if (p.blocks.has(net)) throw new FoldError(ev.seq, `block ${ev.data.block} claimed twice`);
      let endpoints = 0;
      let used = 0;
      const r = blockRange(p, net);
      for (const [v, a] of allocsIn(p, net, net + blockSize(p) - 1n)) {
        if (r && v >= r.first && v <= r.last) used++;
        if (a.kind === 'endpoint') endpoints++;
      }
      p.blocks.set(net, { network: net, node: ev.data.node, claimedSeq: ev.seq, endpoints, used, cursor: r ? r.first : net, emptySince: endpoints === 0 ? ev.time : undefined });
      const list = p.nodeBlocks.get(ev.data.node) ?? [];
      list.push(net);
      p.nodeBlocks.set(ev.data.node, list);
      break;
    }
    case 'BlockReleased': {
      const p = pool(ev.data.poolId);
      const net = parseCidr(ev.data.block).network;
      const b = p.blocks.get(net);
      if (!b || b.node !== ev.data.node) throw new FoldError(ev.seq, `release of block ${ev.data.block} not held by ${ev.data.node}`);
      p.blocks.delete(net);
      const list = (p.nodeBlocks.get(b.node) ?? []).filter((x) => x !== net);
      if (list.length) p.nodeBlocks.set(b.node, list);
      else p.nodeBlocks.delete(b.node);
      break;
    }
    case 'AddressAllocated': {
      const p = pool(ev.data.poolId);
      const v = parseAddr(ev.data.address).value;
      if (p.allocs.has(v)) throw new FoldError(ev.seq, `${ev.data.address} allocated twice`);
      p.allocs.set(v, { seq: ev.seq, kind: ev.data.kind, node: ev.data.node, handle: ev.data.handle, time: ev.time });
      if (ev.data.handle) p.handles.set(ev.data.handle, v);
      if (ev.data.kind === 'gateway') p.gateway = v;
      const b = p.blocks.get(blockOf(p, v));
      if (b && v >= p.first && v <= p.last) b.used++;
      if (b && ev.data.kind === 'endpoint') {
        b.endpoints++;
        b.emptySince = undefined;
        if (!ev.data.requested) {
          const r = blockRange(p, b.network)!;
          b.cursor = v >= r.last ? r.first : v + 1n;
        }
      }
      break;
    }
    case 'AddressReleased': {
      const p = pool(ev.data.poolId);
      const v = parseAddr(ev.data.address).value;
      const a = p.allocs.get(v);
      if (!a || a.seq !== ev.data.allocSeq) throw new FoldError(ev.seq, `release of ${ev.data.address} does not match an allocation`);
      p.allocs.delete(v);
      if (a.handle && p.handles.get(a.handle) === v) p.handles.delete(a.handle);
      if (a.kind === 'gateway') p.gateway = undefined;
      const b = p.blocks.get(blockOf(p, v));
      if (b && v >= p.first && v <= p.last) b.used--;
      if (b && a.kind === 'endpoint') {
        b.endpoints--;
        if (b.endpoints === 0) b.emptySince = ev.time;
      }
      break;
    }
    case 'EndpointBound': {
      const p = pool(ev.data.poolId);
      const a = p.allocs.get(parseAddr(ev.data.address).value);
      if (!a || a.seq !== ev.data.allocSeq) throw new FoldError(ev.seq, `binding of ${ev.data.address} does not match an allocation`);
      a.endpointId = ev.data.endpointId;
      a.networkId = ev.data.networkId;
      a.boundTime = ev.time;
      break;
    }
    case 'NetworkRecorded': {
      const d = ev.data;
      const prev = state.networks.get(d.networkId);
      state.networks.set(d.networkId, { networkId: d.networkId, node: d.node, poolIds: [...d.poolIds], options: { ...d.options }, name: prev?.name, cluster: prev?.cluster });
      break;
    }
    case 'NetworkNamed': {
      const n = state.networks.get(ev.data.networkId);
      if (n) {
        n.name = ev.data.name;
        n.cluster = ev.data.cluster;
      }
      break;
    }
    case 'ClusterNetworkCreated': {
      const d = ev.data;
      if (state.clusterNetworks.has(d.name)) throw new FoldError(ev.seq, `cluster network ${d.name} exists`);
      state.clusterNetworks.set(d.name, {
        name: d.name,
        definition: d.definition,
        createdSeq: ev.seq,
        time: ev.time,
        actor: ev.actor,
        ...(d.originNode ? { originNode: d.originNode } : {}),
        ...(d.originNetworkId ? { originNetworkId: d.originNetworkId } : {}),
      });
      break;
    }
    case 'ClusterNetworkRemoved':
      state.clusterNetworks.delete(ev.data.name);
      break;
    case 'NetworkRemoved':
      state.networks.delete(ev.data.networkId);
      break;
    case 'NodeRegistered':
      state.nodes.set(ev.data.node, { node: ev.data.node, registeredSeq: ev.seq, address: ev.data.address, version: ev.data.version, interfaces: ev.data.interfaces });
      break;
  }
  state.seq = ev.seq;
  return state;
}

export function fold(events: Iterable<ClusterEvent>, state: IpamState = emptyState()): IpamState {
  for (const ev of events) apply(state, ev);
  return state;
}

const cmpBig = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0);

/** A plain, comparable view of the state (for tests, `underlay ipam usage`, and restart checks). */
export function describe(state: IpamState): unknown {
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

/**
 * The fold: `apply` is the only way the cluster state changes. The controller applies each event once
 * when it decides it and a restarted controller re-applies the log (or a snapshot and the log after it),
 * so both must reach identical state: nothing here may depend on the clock, randomness, or anything but
 * the events.
 */
import { UnderlayError } from '../errors.js';
import { parseAddr, parseCidr } from '../ip.js';
import { allocsIn, blockOf, blockRange, blockSize, createPool, emptyState, type ClusterState, type Pool } from './cluster-state.js';
import type { ClusterEvent } from './events.js';
import { noteFreed } from './open-blocks.js';
import { noteAllocated, noteReleased } from './holdings.js';
import { chainOf } from './chains.js';

/**
 * An event that does not fit the state it is applied to (out of order, or naming what is not there): the
 * log or the snapshot is inconsistent, which no retry mends (code `internal`, not retriable).
 */
export class FoldError extends UnderlayError {
  readonly seq: number;
  constructor(seq: number, message: string) {
    super('internal', `event ${seq}: ${message}`);
    this.name = 'FoldError';
    this.seq = seq;
  }
}

export function apply(state: ClusterState, ev: ClusterEvent): ClusterState {
  if (ev.seq !== state.seq + 1) throw new FoldError(ev.seq, `out of order, expected ${state.seq + 1}`);
  return applyEvent(state, ev);
}

/**
 * The fold of a reader that follows only some chains (an agent: state/chains.ts): `ev` comes after every event of
 * its own chain already applied, but events of the chains it does not follow are missing, so the log's order is not
 * checked. The state's `seq` is the highest applied.
 */
export function applyInterest(state: ClusterState, ev: ClusterEvent): ClusterState {
  const head = state.chains.get(ev.chain ?? chainOf(ev, networkNodeIn(state)));
  if (head !== undefined && ev.seq <= head) throw new FoldError(ev.seq, `out of order in its chain, after ${head}`);
  return applyEvent(state, ev);
}

/** Answers the node of a Docker network the state knows (what `chainOf` asks). */
export const networkNodeIn =
  (state: ClusterState) =>
  (networkId: string): string | undefined =>
    state.networks.get(networkId)?.node;

function applyEvent(state: ClusterState, ev: ClusterEvent): ClusterState {
  state.chains.set(ev.chain ?? chainOf(ev, networkNodeIn(state)), ev.seq);
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
      noteAllocated(p, ev.data.node);
      if (ev.data.handle) p.handles.added(ev.data.handle, v);
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
      noteReleased(p, a.node);
      if (a.handle) p.handles.released(a.handle, v);
      if (a.kind === 'gateway') p.gateway = undefined;
      const b = p.blocks.get(blockOf(p, v));
      if (b && v >= p.first && v <= p.last) {
        b.used--;
        noteFreed(p, b.node, b.claimedSeq);
      }
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
      // A new object, never a change to the old one: copies of the state (cloneState) share allocation objects.
      p.allocs.set(parseAddr(ev.data.address).value, { ...a, endpointId: ev.data.endpointId, networkId: ev.data.networkId, boundTime: ev.time });
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
  state.seq = Math.max(state.seq, ev.seq);
  return state;
}

export function fold(events: Iterable<ClusterEvent>, state: ClusterState = emptyState()): ClusterState {
  for (const ev of events) apply(state, ev);
  return state;
}


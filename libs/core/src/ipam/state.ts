/**
 * IPAM state and its fold. `apply` is the only way state changes; the controller applies each
 * event once when it decides it and a restarted controller re-applies the log, so both must
 * reach identical state: nothing here may depend on time, randomness or iteration order of
 * anything but the events.
 */
import type { ClusterEvent } from '../events.js';
import { type Cidr, parseAddr, parseCidr, usableRange, formatValue, lastAddr } from '../ip.js';
import type { AddressKind } from '../events.js';

export interface Allocation {
  readonly seq: number;
  readonly kind: AddressKind;
  readonly node: string;
  readonly handle?: string;
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
  /** Nodes whose Docker holds the pool. */
  readonly refs: Set<string>;
  /** address value → allocation (endpoints, the gateway, aux addresses). */
  readonly allocs: Map<bigint, Allocation>;
  /** handle → address value, for idempotent repeats. */
  readonly handles: Map<string, bigint>;
  /** The gateway address, once reserved; the same for every node. */
  gateway?: bigint;
  /** Next-fit cursor: where the next search for a free address starts. */
  cursor: bigint;
  /** Bounds of what may be handed out (pool or --ip-range, less network/broadcast). */
  readonly first: bigint;
  readonly last: bigint;
}

export interface IpamState {
  /** Sequence number of the last applied event (0 = empty log). */
  seq: number;
  readonly pools: Map<string, Pool>;
}

export const emptyState = (): IpamState => ({ seq: 0, pools: new Map() });

export class FoldError extends Error {
  constructor(seq: number, message: string) {
    super(`event ${seq}: ${message}`);
    this.name = 'FoldError';
  }
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
      const cidr = parseCidr(d.cidr);
      const subPool = d.subPool ? parseCidr(d.subPool) : undefined;
      const outer = usableRange(cidr);
      // Like Docker: --ip-range is used whole; only the pool's own network/broadcast are excluded.
      const inner = subPool ? { first: subPool.network, last: lastAddr(subPool) } : outer;
      const first = inner.first > outer.first ? inner.first : outer.first;
      const last = inner.last < outer.last ? inner.last : outer.last;
      state.pools.set(d.poolId, {
        poolId: d.poolId,
        space: d.space,
        cidr,
        cidrText: d.cidr,
        subPool,
        subPoolText: d.subPool,
        v6: d.v6,
        options: { ...d.options },
        refs: new Set(),
        allocs: new Map(),
        handles: new Map(),
        cursor: first,
        first,
        last,
      });
      break;
    }
    case 'PoolRefAdded':
      pool(ev.data.poolId).refs.add(ev.data.node);
      break;
    case 'PoolRefRemoved':
      pool(ev.data.poolId).refs.delete(ev.data.node);
      break;
    case 'PoolDeleted':
      pool(ev.data.poolId);
      state.pools.delete(ev.data.poolId);
      break;
    case 'AddressAllocated': {
      const p = pool(ev.data.poolId);
      const v = parseAddr(ev.data.address).value;
      if (p.allocs.has(v)) throw new FoldError(ev.seq, `${ev.data.address} allocated twice`);
      p.allocs.set(v, { seq: ev.seq, kind: ev.data.kind, node: ev.data.node, handle: ev.data.handle });
      if (ev.data.handle) p.handles.set(ev.data.handle, v);
      if (ev.data.kind === 'gateway') p.gateway = v;
      if (ev.data.kind === 'endpoint' && !ev.data.requested) p.cursor = v >= p.last ? p.first : v + 1n;
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
      break;
    }
  }
  state.seq = ev.seq;
  return state;
}

export function fold(events: Iterable<ClusterEvent>, state: IpamState = emptyState()): IpamState {
  for (const ev of events) apply(state, ev);
  return state;
}

/** A plain, comparable view of the state (for tests, `underlay ipam usage`, and restart checks). */
export function describe(state: IpamState): unknown {
  return {
    seq: state.seq,
    pools: [...state.pools.values()]
      .sort((a, b) => a.poolId.localeCompare(b.poolId))
      .map((p) => ({
        poolId: p.poolId,
        space: p.space,
        cidr: p.cidrText,
        subPool: p.subPoolText,
        v6: p.v6,
        refs: [...p.refs].sort(),
        gateway: p.gateway === undefined ? undefined : formatValue(p.cidr.family, p.gateway),
        cursor: formatValue(p.cidr.family, p.cursor),
        allocs: [...p.allocs.entries()]
          .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
          .map(([v, a]) => ({ address: formatValue(p.cidr.family, v), ...a })),
      })),
  };
}

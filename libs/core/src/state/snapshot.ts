/**
 * Snapshots of the cluster state (ClusterState): a JSON-friendly form (bigints as hex strings) and back.
 * restore(snapshot(s)) folds on exactly like s; a cold start reads the latest snapshot and
 * only the events after it.
 */
import { z } from 'zod';
import { NetworkDefinition } from './network-definition.js';
import { createPool, emptyState, type ClusterState, type Pool } from './cluster-state.js';
import { AddressKind } from './events.js';

export const SNAPSHOT_VERSION = 1;

const hex = (v: bigint) => v.toString(16);
const big = (s: string) => BigInt(`0x${s}`);

const PoolSnap = z.object({
  def: z.object({
    poolId: z.string(),
    space: z.string(),
    cidr: z.string(),
    subPool: z.string().optional(),
    v6: z.boolean(),
    options: z.record(z.string(), z.string()),
    blockPrefix: z.number(),
    strictAffinity: z.boolean(),
  }),
  refs: z.array(z.string()),
  refRequests: z.array(z.tuple([z.string(), z.string()])),
  gateway: z.string().optional(),
  // [address, seq, kind, node, handle, time, endpointId, networkId, boundTime]
  allocs: z.array(z.tuple([z.string(), z.number(), AddressKind, z.string(), z.string().nullable(), z.string(), z.string().nullable(), z.string().nullable(), z.string().nullable()])),
  // [network, node, claimedSeq, endpoints, used, cursor, emptySince]
  blocks: z.array(z.tuple([z.string(), z.string(), z.number(), z.number(), z.number(), z.string(), z.string().nullable()])),
  nodeBlocks: z.array(z.tuple([z.string(), z.array(z.string())])),
});

export const SnapshotData = z.object({
  version: z.literal(SNAPSHOT_VERSION),
  seq: z.number().int().nonnegative(),
  nodes: z.array(z.object({ node: z.string(), registeredSeq: z.number(), address: z.string().optional(), version: z.string().optional(), interfaces: z.array(z.string()).optional() })),
  networks: z.array(z.object({ networkId: z.string(), node: z.string(), poolIds: z.array(z.string()), options: z.record(z.string(), z.string()), name: z.string().optional(), cluster: z.boolean().optional() })),
  clusterNetworks: z
    .array(
      z.object({
        name: z.string(),
        definition: NetworkDefinition,
        createdSeq: z.number(),
        time: z.string(),
        actor: z.string(),
        originNode: z.string().optional(),
        originNetworkId: z.string().optional(),
      }),
    )
    .default([]),
  pools: z.array(PoolSnap),
  /** [chain, seq of its last event]; absent in snapshots written before chains. */
  chains: z.array(z.tuple([z.string(), z.number().int().nonnegative()])).optional(),
  chainFloor: z.number().int().nonnegative().optional(),
});
export type SnapshotData = z.infer<typeof SnapshotData>;

export function snapshot(state: ClusterState): SnapshotData {
  return {
    version: SNAPSHOT_VERSION,
    seq: state.seq,
    nodes: [...state.nodes.values()].map((n) => ({ ...n })),
    networks: [...state.networks.values()].map((n) => ({ networkId: n.networkId, node: n.node, poolIds: [...n.poolIds], options: { ...n.options }, name: n.name, cluster: n.cluster })),
    clusterNetworks: [...state.clusterNetworks.values()].map((c) => ({ ...c })),
    chains: [...state.chains],
    chainFloor: state.chainFloor,
    pools: [...state.pools.values()].map((p: Pool) => ({
      def: {
        poolId: p.poolId,
        space: p.space,
        cidr: p.cidrText,
        subPool: p.subPoolText,
        v6: p.v6,
        options: { ...p.options },
        blockPrefix: p.blockPrefix,
        strictAffinity: p.strictAffinity,
      },
      refs: [...p.refs],
      refRequests: [...p.refRequests],
      gateway: p.gateway === undefined ? undefined : hex(p.gateway),
      allocs: [...p.allocs].map(([v, a]) => [hex(v), a.seq, a.kind, a.node, a.handle ?? null, a.time, a.endpointId ?? null, a.networkId ?? null, a.boundTime ?? null] as const),
      blocks: [...p.blocks.values()].map((b) => [hex(b.network), b.node, b.claimedSeq, b.endpoints, b.used, hex(b.cursor), b.emptySince ?? null] as const),
      nodeBlocks: [...p.nodeBlocks].map(([n, l]) => [n, l.map(hex)] as [string, string[]]),
    })) as SnapshotData['pools'],
  };
}

export function restore(raw: unknown): ClusterState {
  const data = SnapshotData.parse(raw);
  // A snapshot written before chains knows no chain heads: its seq bounds them all from below.
  const state: ClusterState = { seq: data.seq, pools: new Map(), nodes: new Map(), networks: new Map(), clusterNetworks: new Map(), chains: new Map(data.chains ?? []), chainFloor: data.chains ? (data.chainFloor ?? 0) : data.seq };
  for (const n of data.nodes) state.nodes.set(n.node, { ...n });
  // Same key order as the fold builds.
  for (const n of data.networks) state.networks.set(n.networkId, { networkId: n.networkId, node: n.node, poolIds: n.poolIds, options: n.options, name: n.name, cluster: n.cluster });
  for (const c of data.clusterNetworks) state.clusterNetworks.set(c.name, { ...c });
  for (const ps of data.pools) {
    const p = createPool(ps.def);
    for (const r of ps.refs) p.refs.add(r);
    for (const [n, id] of ps.refRequests) p.refRequests.set(n, id);
    if (ps.gateway !== undefined) p.gateway = big(ps.gateway);
    for (const [v, seq, kind, node, handle, time, endpointId, networkId, boundTime] of ps.allocs) {
      const value = big(v);
      // Same key order as the fold builds, so both serialise identically.
      p.allocs.set(value, {
        seq, kind, node,
        handle: handle ?? undefined,
        time,
        ...(endpointId !== null ? { endpointId } : {}),
        ...(networkId !== null ? { networkId } : {}),
        ...(boundTime !== null ? { boundTime } : {}),
      });
      if (handle !== null) p.handles.set(handle, value);
    }
    for (const [net, node, claimedSeq, endpoints, used, cursor, emptySince] of ps.blocks) {
      p.blocks.set(big(net), { network: big(net), node, claimedSeq, endpoints, used, cursor: big(cursor), ...(emptySince !== null ? { emptySince } : {}) });
    }
    for (const [n, l] of ps.nodeBlocks) p.nodeBlocks.set(n, l.map(big));
    state.pools.set(p.poolId, p);
  }
  return state;
}

/**
 * A copy of `state` that folds on exactly like it and shares nothing that folding changes: what
 * restore(JSON.parse(JSON.stringify(snapshot(state)))) gives (equal, serialised identically), without the text and its
 * validation. Allocation objects are shared, as they are never changed (a binding replaces its allocation); maps,
 * blocks and everything else are new.
 */
export function cloneState(state: ClusterState): ClusterState {
  const steps = cloneStateInSlices(state, Infinity);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/**
 * cloneState a slice at a time, for a caller that yields to the event loop between steps: the first `next()` takes
 * everything it needs from `state` at once (its maps as arrays; cheap), so `state` may change after it; each later
 * step fills at most `slice` entries of the copy's maps; the last returns the copy. At 1M allocations filling the maps
 * takes ~3 s on a 2-core machine: done at once on taking over, it starved the leader's 2 s lease (and the JSON round
 * trip it replaced took ~8 s), so a leader lost its leadership term after term.
 */
export function* cloneStateInSlices(state: ClusterState, slice = 20_000): Generator<void, ClusterState> {
  const out: ClusterState = { seq: state.seq, pools: new Map(), nodes: new Map(), networks: new Map(), clusterNetworks: new Map(), chains: new Map(state.chains), chainFloor: state.chainFloor };
  for (const n of state.nodes.values()) out.nodes.set(n.node, n.interfaces ? { ...n, interfaces: [...n.interfaces] } : { ...n });
  for (const n of state.networks.values()) {
    out.networks.set(n.networkId, { networkId: n.networkId, node: n.node, poolIds: [...n.poolIds], options: { ...n.options }, name: n.name, cluster: n.cluster });
  }
  for (const c of state.clusterNetworks.values()) out.clusterNetworks.set(c.name, { ...c, definition: structuredClone(c.definition) });
  const fills: { into: Map<unknown, unknown>; keys: unknown[]; values: unknown[] }[] = [];
  for (const src of state.pools.values()) {
    const p = createPool({ poolId: src.poolId, space: src.space, cidr: src.cidrText, subPool: src.subPoolText, v6: src.v6, options: { ...src.options }, blockPrefix: src.blockPrefix, strictAffinity: src.strictAffinity });
    for (const r of src.refs) p.refs.add(r);
    for (const [n, id] of src.refRequests) p.refRequests.set(n, id);
    if (src.gateway !== undefined) p.gateway = src.gateway;
    for (const b of src.blocks.values()) p.blocks.set(b.network, { ...b });
    for (const [n, l] of src.nodeBlocks) p.nodeBlocks.set(n, [...l]);
    fills.push({ into: p.allocs, keys: [...src.allocs.keys()], values: [...src.allocs.values()] });
    fills.push({ into: p.handles, keys: [...src.handles.keys()], values: [...src.handles.values()] });
    out.pools.set(p.poolId, p);
  }
  let n = 0;
  for (const f of fills) {
    for (let i = 0; i < f.keys.length; i++) {
      f.into.set(f.keys[i], f.values[i]);
      if (++n % slice === 0) yield;
    }
  }
  return out;
}

/**
 * The same snapshot as JSON text in parts of at most about `slice` entries each, so a caller can
 * yield between parts (the state must not change until the last part is taken).
 * `JSON.parse(parts.join(''))` equals `snapshot(state)`.
 */
export function* snapshotJsonParts(state: ClusterState, slice = 2_000): Generator<string> {
  const s = snapshot({ ...state, pools: new Map() });
  yield `${JSON.stringify(s).slice(0, -'[]}'.length)}[`;
  let firstPool = true;
  for (const p of state.pools.values()) {
    const one = snapshot({ ...emptyState(), seq: state.seq, pools: new Map([[p.poolId, { ...p, allocs: new Map() }]]) }).pools[0]!;
    const head = JSON.stringify(one);
    yield `${firstPool ? '' : ','}${head.slice(0, head.indexOf('"allocs":[') + '"allocs":['.length)}`;
    firstPool = false;
    const entries = [...p.allocs];
    for (let i = 0; i < entries.length; i += slice) {
      const part = snapshot({ ...emptyState(), seq: state.seq, pools: new Map([[p.poolId, { ...p, allocs: new Map(entries.slice(i, i + slice)) }]]) }).pools[0]!.allocs;
      yield `${i === 0 ? '' : ','}${JSON.stringify(part).slice(1, -1)}`;
    }
    // The rest of the pool after its (empty) allocs array: `],"blocks":[…],…}`.
    yield head.slice(head.indexOf('"allocs":[') + '"allocs":['.length);
  }
  yield ']}';
}

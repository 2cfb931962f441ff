/**
 * Snapshots of the cluster state (ClusterState): a JSON-friendly form (bigints as hex strings) and back.
 * restore(snapshot(s)) folds on exactly like s; a cold start reads the latest snapshot and
 * only the events after it.
 *
 * Version 2 keeps a pool's allocations in **columns**, in chunks of at most SNAPSHOT_CHUNK (AllocChunk): the text
 * fields of a chunk joined into one string each, node names and network ids as indexes into the chunk's tables. At 1M
 * allocations version 1 (one 9-element array per allocation, validated element by element) took a cold start ~10 s of
 * JSON parsing and checking (bench:scale); JSON.parse makes one string of a column and `split` cuts it, and the
 * checks run per column. Hand-written (no library packs JSON columns); zod still checks the shape, and restore
 * checks the columns agree. Version 1 snapshots are still read.
 */
import { z } from 'zod';
import { NetworkDefinition } from './network-definition.js';
import { createPool, emptyState, type Allocation, type ClusterState, type Pool } from './cluster-state.js';
import { AddressKind } from './events.js';
import { forgetCounts } from './holdings.js';

export const SNAPSHOT_VERSION = 2;
/** Allocations per column chunk (and per part of snapshotJsonParts). */
export const SNAPSHOT_CHUNK = 2_000;

const hex = (v: bigint) => v.toString(16);
const big = (s: string) => BigInt(`0x${s}`);

const PoolDef = z.object({
  poolId: z.string(),
  space: z.string(),
  cidr: z.string(),
  subPool: z.string().optional(),
  v6: z.boolean(),
  options: z.record(z.string(), z.string()),
  blockPrefix: z.number(),
  strictAffinity: z.boolean(),
});

/**
 * Up to SNAPSHOT_CHUNK allocations as columns (version 2). Text columns hold one value per allocation joined by `,`
 * (a value's `%` and `,` written `%25` and `%2C`; an absent optional value is empty): `a` addresses (hex), `h`
 * handles, `t` times, `e` endpoint ids, `b` bound times. `s` seqs; `k` kinds, one letter each (KIND_LETTER); `n`
 * indexes into `nt` (node names); `w` indexes into `wt` (network ids), -1 for none.
 */
const AllocChunk = z.object({
  a: z.string(),
  s: z.array(z.number()),
  k: z.string(),
  n: z.array(z.number()),
  nt: z.array(z.string()),
  h: z.string(),
  t: z.string(),
  e: z.string(),
  w: z.array(z.number()),
  wt: z.array(z.string()),
  b: z.string(),
});
type AllocChunk = z.infer<typeof AllocChunk>;

const isStrings = (v: unknown): boolean => Array.isArray(v) && v.every((x) => typeof x === 'string');
/**
 * An allocation chunk's shape, for restore and restorePoolAllocs: its columns are strings and arrays, its tables arrays of strings; the
 * entries themselves are checked as restoreChunk reads them (every seq, kind, node and network index). zod's check of
 * the same (AllocChunk) went through and copied 3M numbers at 1M allocations, ~10% of a controller's cold start.
 */
const AllocChunkShape = z.custom<AllocChunk>(
  (v) => {
    if (typeof v !== 'object' || v === null) return false;
    const c = v as Record<string, unknown>;
    return (
      typeof c.a === 'string' && typeof c.k === 'string' && typeof c.h === 'string' && typeof c.t === 'string' && typeof c.e === 'string' && typeof c.b === 'string' &&
      Array.isArray(c.s) && Array.isArray(c.n) && Array.isArray(c.w) && isStrings(c.nt) && isStrings(c.wt)
    );
  },
  { message: 'not an allocation chunk (text columns a, k, h, t, e, b; arrays s, n, w; name tables nt, wt)' },
);

const KIND_LETTER: Record<AddressKind, string> = { endpoint: 'e', gateway: 'g', aux: 'a', host: 'h' };
const LETTER_KIND: Record<string, AddressKind> = { e: 'endpoint', g: 'gateway', a: 'aux', h: 'host' };

const escapeValue = (v: string): string => (v.includes('%') || v.includes(',') ? v.replace(/[%,]/g, (c) => (c === '%' ? '%25' : '%2C')) : v);
const unescapeValue = (v: string): string => v.replace(/%(25|2C)/g, (_, x: string) => (x === '25' ? '%' : ','));
/** A text column's values (`count` of them; the column's text is checked to hold exactly that many). */
function column(text: string, count: number, what: string): string[] {
  const values = text.split(',');
  if (values.length !== count) throw new Error(`snapshot: allocation column ${what} holds ${values.length} values, not ${count}`);
  return text.includes('%') ? values.map(unescapeValue) : values;
}

/** Allocations (address value → allocation) as one column chunk. */
function allocChunk(entries: readonly (readonly [bigint, Allocation])[]): AllocChunk {
  const nodes = new Map<string, number>();
  const nets = new Map<string, number>();
  const a: string[] = [];
  const s: number[] = [];
  let k = '';
  const n: number[] = [];
  const h: string[] = [];
  const t: string[] = [];
  const e: string[] = [];
  const w: number[] = [];
  const b: string[] = [];
  for (const [v, al] of entries) {
    a.push(hex(v));
    s.push(al.seq);
    k += KIND_LETTER[al.kind];
    let ni = nodes.get(al.node);
    if (ni === undefined) nodes.set(al.node, (ni = nodes.size));
    n.push(ni);
    h.push(al.handle === undefined ? '' : escapeValue(al.handle));
    t.push(escapeValue(al.time));
    e.push(al.endpointId === undefined ? '' : escapeValue(al.endpointId));
    let wi = -1;
    if (al.networkId !== undefined) {
      wi = nets.get(al.networkId) ?? -1;
      if (wi === -1) nets.set(al.networkId, (wi = nets.size));
    }
    w.push(wi);
    b.push(al.boundTime === undefined ? '' : escapeValue(al.boundTime));
  }
  return { a: a.join(','), s, k, n, nt: [...nodes.keys()], h: h.join(','), t: t.join(','), e: e.join(','), w, wt: [...nets.keys()], b: b.join(',') };
}

/**
 * One allocation into `p` (its handle is indexed when first asked: HandleIndex), with the fold's key order, so a
 * restored state serialises as the folded one does (optional fields absent, not undefined; properties added in place:
 * spreads of optional ones cost a third of a 1M-allocation restore).
 */
function putAllocation(p: Pool, value: bigint, seq: number, kind: AddressKind, node: string, handle: string | undefined, time: string, endpointId?: string, networkId?: string, boundTime?: string): void {
  const al: { -readonly [K in keyof Allocation]: Allocation[K] } = { seq, kind, node, handle, time };
  if (endpointId !== undefined) al.endpointId = endpointId;
  if (networkId !== undefined) al.networkId = networkId;
  if (boundTime !== undefined) al.boundTime = boundTime;
  p.allocs.set(value, al);
}

/** A chunk's allocations into `p`. */
function restoreChunk(p: Pool, c: AllocChunk, where: string): void {
  const count = c.s.length;
  if (c.k.length !== count || c.n.length !== count || c.w.length !== count) throw new Error(`snapshot: allocation chunk ${where} has columns of different lengths`);
  if (count === 0) {
    // An empty chunk's text columns are empty too (split would find one empty value in each).
    if (c.a || c.h || c.t || c.e || c.b) throw new Error(`snapshot: allocation chunk ${where} has columns of different lengths`);
    return;
  }
  const a = column(c.a, count, `${where}.a`);
  const h = column(c.h, count, `${where}.h`);
  const t = column(c.t, count, `${where}.t`);
  const e = column(c.e, count, `${where}.e`);
  const b = column(c.b, count, `${where}.b`);
  for (let i = 0; i < count; i++) {
    const kind = LETTER_KIND[c.k[i]!];
    const ni = c.n[i]!;
    const node = c.nt[ni];
    const wi = c.w[i]!;
    const networkId = wi === -1 ? undefined : c.wt[wi];
    // The indexes are whole numbers (a string "1" would find a table entry too); the shape was checked (AllocChunkShape).
    if (kind === undefined || !Number.isInteger(ni) || node === undefined || !Number.isInteger(wi) || (wi !== -1 && networkId === undefined) || !Number.isInteger(c.s[i])) {
      throw new Error(`snapshot: allocation ${i} of chunk ${where} is invalid`);
    }
    putAllocation(p, big(a[i]!), c.s[i]!, kind, node, h[i] || undefined, t[i]!, e[i] || undefined, networkId, b[i] || undefined);
  }
}

const PoolSnap = z.object({
  def: PoolDef,
  refs: z.array(z.string()),
  refRequests: z.array(z.tuple([z.string(), z.string()])),
  gateway: z.string().optional(),
  allocs: z.array(AllocChunkShape),
  // [network, node, claimedSeq, endpoints, used, cursor, emptySince]
  blocks: z.array(z.tuple([z.string(), z.string(), z.number(), z.number(), z.number(), z.string(), z.string().nullable()])),
  nodeBlocks: z.array(z.tuple([z.string(), z.array(z.string())])),
});

/** A pool in a version 1 snapshot: one array per allocation. */
const PoolSnapV1 = PoolSnap.extend({
  // [address, seq, kind, node, handle, time, endpointId, networkId, boundTime]
  allocs: z.array(z.tuple([z.string(), z.number(), AddressKind, z.string(), z.string().nullable(), z.string(), z.string().nullable(), z.string().nullable(), z.string().nullable()])),
});

const SnapshotCommon = z.object({
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
  /** [chain, seq of its last event]; absent in snapshots written before chains. */
  chains: z.array(z.tuple([z.string(), z.number().int().nonnegative()])).optional(),
  chainFloor: z.number().int().nonnegative().optional(),
});

export const SnapshotData = SnapshotCommon.extend({ version: z.literal(SNAPSHOT_VERSION), pools: z.array(PoolSnap) });
export type SnapshotData = z.infer<typeof SnapshotData>;
const SnapshotDataV1 = SnapshotCommon.extend({ version: z.literal(1), pools: z.array(PoolSnapV1) });

/** A pool's definition as createPool takes it (and as a snapshot stores it). */
const poolDefOf = (p: Pool): z.infer<typeof PoolDef> => ({
  poolId: p.poolId,
  space: p.space,
  cidr: p.cidrText,
  subPool: p.subPoolText,
  v6: p.v6,
  options: { ...p.options },
  blockPrefix: p.blockPrefix,
  strictAffinity: p.strictAffinity,
});

/** `chunk`: allocations per column chunk (snapshotJsonParts writes the same chunks with the same size). */
export function snapshot(state: ClusterState, chunk = SNAPSHOT_CHUNK): SnapshotData {
  return {
    version: SNAPSHOT_VERSION,
    seq: state.seq,
    nodes: [...state.nodes.values()].map((n) => ({ ...n })),
    networks: [...state.networks.values()].map((n) => ({ networkId: n.networkId, node: n.node, poolIds: [...n.poolIds], options: { ...n.options }, name: n.name, cluster: n.cluster })),
    clusterNetworks: [...state.clusterNetworks.values()].map((c) => ({ ...c })),
    chains: [...state.chains],
    chainFloor: state.chainFloor,
    pools: [...state.pools.values()].map((p: Pool) => {
      const entries = [...p.allocs];
      const allocs: AllocChunk[] = [];
      for (let i = 0; i < entries.length; i += chunk) allocs.push(allocChunk(entries.slice(i, i + chunk)));
      return {
        def: poolDefOf(p),
        refs: [...p.refs],
        refRequests: [...p.refRequests],
        gateway: p.gateway === undefined ? undefined : hex(p.gateway),
        allocs,
        blocks: [...p.blocks.values()].map((b) => [hex(b.network), b.node, b.claimedSeq, b.endpoints, b.used, hex(b.cursor), b.emptySince ?? null] as const),
        nodeBlocks: [...p.nodeBlocks].map(([n, l]) => [n, l.map(hex)] as [string, string[]]),
      };
    }) as SnapshotData['pools'],
  };
}

/** The state a snapshot (version 1 or 2, as JSON.parse gives it) holds; throws when it is invalid. */
export function restore(raw: unknown): ClusterState {
  const v1 = typeof raw === 'object' && raw !== null && (raw as { version?: unknown }).version === 1;
  const data = v1 ? SnapshotDataV1.parse(raw) : SnapshotData.parse(raw);
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
    if (v1) restoreAllocsV1(p, (ps as z.infer<typeof PoolSnapV1>).allocs);
    else (ps as z.infer<typeof PoolSnap>).allocs.forEach((c, i) => restoreChunk(p, c, `${p.poolId}#${i}`));
    for (const [net, node, claimedSeq, endpoints, used, cursor, emptySince] of ps.blocks) {
      p.blocks.set(big(net), { network: big(net), node, claimedSeq, endpoints, used, cursor: big(cursor), ...(emptySince !== null ? { emptySince } : {}) });
    }
    for (const [n, l] of ps.nodeBlocks) p.nodeBlocks.set(n, l.map(big));
    state.pools.set(p.poolId, p);
  }
  return state;
}

function restoreAllocsV1(p: Pool, allocs: z.infer<typeof PoolSnapV1>['allocs']): void {
  for (const [v, seq, kind, node, handle, time, endpointId, networkId, boundTime] of allocs) {
    putAllocation(p, big(v), seq, kind, node, handle ?? undefined, time, endpointId ?? undefined, networkId ?? undefined, boundTime ?? undefined);
  }
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
    const p = createPool(poolDefOf(src));
    for (const r of src.refs) p.refs.add(r);
    for (const [n, id] of src.refRequests) p.refRequests.set(n, id);
    if (src.gateway !== undefined) p.gateway = src.gateway;
    for (const b of src.blocks.values()) p.blocks.set(b.network, { ...b });
    for (const [n, l] of src.nodeBlocks) p.nodeBlocks.set(n, [...l]);
    fills.push({ into: p.allocs, keys: [...src.allocs.keys()], values: [...src.allocs.values()] });
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
 * Where one pool's allocations lie in a snapshot's JSON text: `[start, end)` is the inside of its `"allocs":[…]` array
 * (its column chunks, comma-separated; empty for a pool without allocations). An agent reads the text outside every
 * section (`snapshotHeadRanges`: everything but allocations, each pool's array empty) and the sections of the pools it
 * follows only (`restorePoolAllocs`); at 1M allocations the sections are nearly all of the text.
 */
export interface SnapshotSection {
  poolId: string;
  start: number;
  end: number;
}

/**
 * The same snapshot as JSON text in parts of at most about `slice` allocations each (one column chunk), so a caller
 * can yield between parts (the state must not change until the last part is taken).
 * `JSON.parse(parts.join(''))` equals `snapshot(state, slice)`. `sections`, when given, receives each pool's
 * SnapshotSection (offsets in the joined text), in the text's order.
 */
export function* snapshotJsonParts(state: ClusterState, slice = SNAPSHOT_CHUNK, sections?: SnapshotSection[]): Generator<string> {
  let at = 0;
  const s = snapshot({ ...state, pools: new Map() });
  const first = `${JSON.stringify(s).slice(0, -'[]}'.length)}[`;
  at += first.length;
  yield first;
  let firstPool = true;
  for (const p of state.pools.values()) {
    const one = snapshot({ ...emptyState(), seq: state.seq, pools: new Map([[p.poolId, { ...p, allocs: new Map() }]]) }).pools[0]!;
    const head = JSON.stringify(one);
    const opening = `${firstPool ? '' : ','}${head.slice(0, head.indexOf('"allocs":[') + '"allocs":['.length)}`;
    at += opening.length;
    yield opening;
    firstPool = false;
    const start = at;
    // The allocations a chunk at a time from the map's iterator: a copy of all of them at once ([...p.allocs]: 1M
    // pairs at 1M allocations) was one long step of the leader's thread at every snapshot.
    const entries = p.allocs[Symbol.iterator]();
    for (let n = 0; ; n++) {
      const batch: [bigint, Allocation][] = [];
      for (let r = entries.next(); !r.done; r = entries.next()) {
        batch.push(r.value);
        if (batch.length === slice) break;
      }
      if (batch.length === 0) break;
      const chunk = `${n === 0 ? '' : ','}${JSON.stringify(allocChunk(batch))}`;
      at += chunk.length;
      yield chunk;
      if (batch.length < slice) break;
    }
    sections?.push({ poolId: p.poolId, start, end: at });
    // The rest of the pool after its (empty) allocs array: `],"blocks":[…],…}`.
    const rest = head.slice(head.indexOf('"allocs":[') + '"allocs":['.length);
    at += rest.length;
    yield rest;
  }
  yield ']}';
}

/**
 * The ranges `[start, end)` of a snapshot's text (`length` characters) outside its `sections` (sorted, not
 * overlapping): joined, they are the snapshot with every pool's allocations empty, which `restore` takes.
 */
export function snapshotHeadRanges(length: number, sections: readonly { start: number; end: number }[]): [number, number][] {
  const out: [number, number][] = [];
  let at = 0;
  for (const s of sections) {
    if (s.start < at || s.end < s.start || s.end > length) throw new Error(`snapshot: section [${s.start}, ${s.end}) is out of order or outside the ${length} characters`);
    if (s.start > at) out.push([at, s.start]);
    at = s.end;
  }
  if (at < length) out.push([at, length]);
  return out;
}

/**
 * Puts one pool's allocations, the text of its SnapshotSection, into `p` (restored from the snapshot's head, its
 * allocations empty). Throws when the text is not valid column chunks.
 */
export function restorePoolAllocs(p: Pool, sectionText: string): void {
  const chunks = z.array(AllocChunkShape).parse(JSON.parse(`[${sectionText}]`));
  chunks.forEach((c, i) => restoreChunk(p, c, `${p.poolId}#${i}`));
  // Who holds what in `p` was perhaps counted from the head (no allocations): count again.
  forgetCounts(p);
}

/**
 * `underlay ipam check` and `underlay ipam release`: the cluster IPAM against what every host's Docker reports.
 *
 * The check compares the allocations of the cluster state with the nodes' latest reports (the endpoints Docker
 * holds on each host, with their containers and addresses, and the addresses a node holds for a container's
 * restart) and finds
 *  - allocations with no container: an endpoint address no endpoint on its node holds (never bound, or bound to an
 *    endpoint its node no longer reports), or held by a node that is gone;
 *  - containers with no allocation: a container whose address the cluster has no allocation for, or has for another
 *    node, another endpoint, or as a gateway or --aux-address reservation;
 *  - addresses held twice: one address of one pool in more than one container (there must be none);
 *  - blocks whose node is gone: the node stopped reporting (its lease ran out) or never reported to this controller.
 * Addresses a node holds for a restart are listed apart (they are no finding), and an allocation younger than the
 * node's latest report (plus a slack) is not judged: its container may be starting.
 *
 * The operator's release (`decideOperatorRelease`) frees one endpoint address, refused while any node's report
 * shows an endpoint or container with it, or its node holds it for a restart. Pure: the caller passes the clock and
 * what it heard from the nodes (its own input types, not the wire's).
 */
import { ConflictError, InvalidArgumentError, NotFoundError } from '../errors.js';
import { contains, formatValue, tryParseAddr, type Addr } from '../ip.js';
import type { EventBody } from '../state/events.js';
import { formatBlock, type Allocation, type ClusterState, type Pool } from '../state/cluster-state.js';
import type { Decision } from '../state/decision.js';
import { poolGoesWith } from './decide.js';

/** One endpoint as a node reported it. */
export interface CheckEndpoint {
  endpointId: string;
  networkId: string;
  /** The network's Docker name, as the node reported it. */
  network?: string;
  container?: string;
  /** Docker's key of the endpoint in its network (`ep-<endpoint id>` while no container has it). */
  containerId?: string;
  /** CIDR or bare address. */
  address?: string;
  addressV6?: string;
}

/** What the controller heard from one node. */
export interface CheckNode {
  node: string;
  /** Its lease holds (it reported within its lease). */
  ready: boolean;
  /** When its latest report came (absent: none since this controller started). */
  lastSeenMs?: number;
  /** Every endpoint the node's latest report lists (its store's and its Docker's). */
  endpoints: ReadonlySet<string>;
  endpointStates: readonly CheckEndpoint[];
  /** Addresses held for a container's restart (bare). */
  held: readonly string[];
}

export interface CheckPolicy {
  /** An allocation made (or bound) less than this before the node's latest report is not judged: its container may be starting. */
  reportSlackMs: number;
}

export const DEFAULT_CHECK_POLICY: CheckPolicy = { reportSlackMs: 3_000 };

export type OrphanAllocationReason = 'unbound' | 'endpoint-gone' | 'node-gone';
export type OrphanContainerReason = 'no-allocation' | 'other-node' | 'other-endpoint' | 'reserved' | 'network-unknown';

export interface OrphanAllocation {
  address: string;
  poolId: string;
  /** The names of the Docker networks using its pool (the network the endpoint was on, when it is known). */
  network?: string;
  node: string;
  allocSeq: number;
  allocatedAt: string;
  endpointId?: string;
  reason: OrphanAllocationReason;
  detail: string;
}

export interface OrphanContainer {
  address: string;
  node: string;
  container?: string;
  containerId?: string;
  endpointId: string;
  network?: string;
  networkId: string;
  poolId?: string;
  reason: OrphanContainerReason;
  detail: string;
}

export interface AddressHolder {
  node: string;
  container?: string;
  containerId?: string;
  endpointId: string;
}

export interface DuplicateAddress {
  address: string;
  poolId: string;
  network?: string;
  holders: AddressHolder[];
  detail: string;
}

export interface GoneNodeBlock {
  block: string;
  poolId: string;
  network?: string;
  node: string;
  /** When the node last reported (absent: never since this controller started). */
  lastSeen?: string;
  /** Endpoint addresses inside the block (any node's). */
  endpoints: number;
  detail: string;
}

export interface HeldAddress {
  address: string;
  node: string;
  poolId: string;
  network?: string;
}

export interface IpamCheckResult {
  /** Nothing found (held addresses and pending allocations are no finding). */
  clean: boolean;
  /** Findings in all. */
  findings: number;
  checkedAt: string;
  /** Nodes whose reports were compared: Ready, and NotReady (their allocations are not judged but as gone). */
  nodes: { ready: string[]; notReady: string[] };
  allocationsWithoutContainer: OrphanAllocation[];
  containersWithoutAllocation: OrphanContainer[];
  duplicateAddresses: DuplicateAddress[];
  goneNodeBlocks: GoneNodeBlock[];
  /** Held by a node for a container's restart (--address-hold-ms): no finding. */
  held: HeldAddress[];
  /** Allocations too recent to judge (made or bound after the node's latest report, less the slack). */
  pending: number;
}

const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const bare = (s: string) => s.split('/')[0]!;

/** Addresses in numeric order (IPv4 first). */
function byAddress(a: string, b: string): number {
  const x = tryParseAddr(a);
  const y = tryParseAddr(b);
  if (!x || !y) return byText(a, b);
  return x.family - y.family || (x.value < y.value ? -1 : x.value > y.value ? 1 : 0);
}

/** A canonical bare address, or undefined. */
function canonical(s: string | undefined): { text: string; addr: Addr } | undefined {
  const a = s ? tryParseAddr(bare(s)) : undefined;
  return a ? { text: formatValue(a.family, a.value), addr: a } : undefined;
}

/** Docker's key of an endpoint no container holds (yet). */
const hasContainer = (e: CheckEndpoint) => !!e.containerId && !e.containerId.startsWith('ep-');

/** "c1 (abcdef123456)" / "endpoint abcdef123456". */
function who(e: { container?: string; containerId?: string; endpointId: string }): string {
  if (e.container) return `container ${e.container}`;
  if (e.containerId && !e.containerId.startsWith('ep-')) return `container ${e.containerId.slice(0, 12)}`;
  return `endpoint ${e.endpointId.slice(0, 12)}`;
}

/** How long ago, for a detail text. */
export function agoText(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s ago`;
  const m = Math.round(s / 60);
  if (m < 120) return `${m} minutes ago`;
  return `${Math.round(m / 60)} hours ago`;
}

/** The names of the Docker networks using a pool (one name per cluster network), joined. */
function poolNetworkNames(state: ClusterState, poolId: string): string | undefined {
  const names = [...new Set([...state.networks.values()].filter((n) => n.name && n.poolIds.includes(poolId)).map((n) => n.name!))].sort(byText);
  return names.length ? names.join(',') : undefined;
}

function networkOf(state: ClusterState, p: Pool, a: Allocation): string | undefined {
  return (a.networkId ? state.networks.get(a.networkId)?.name : undefined) ?? poolNetworkNames(state, p.poolId);
}

function goneText(n: CheckNode | undefined, node: string, nowMs: number): string {
  if (!n || n.lastSeenMs === undefined) return `node ${node} has not reported since this controller started`;
  return `node ${node} is not reporting (last report ${agoText(nowMs - n.lastSeenMs)})`;
}

/** The pool of a network (by its Docker id) holding an address, if the network and such a pool are known. */
function poolOfEndpoint(state: ClusterState, networkId: string, a: Addr): { known: boolean; pool?: Pool } {
  const net = state.networks.get(networkId);
  if (!net) return { known: false };
  for (const id of net.poolIds) {
    const p = state.pools.get(id);
    if (p && p.cidr.family === a.family && contains(p.cidr, a)) return { known: true, pool: p };
  }
  return { known: true };
}

/** Every address of a reported endpoint, canonical. */
function addressesOf(e: CheckEndpoint): { text: string; addr: Addr }[] {
  return [e.address, e.addressV6].map(canonical).filter((x): x is { text: string; addr: Addr } => !!x);
}

export function checkIpam(state: ClusterState, nodes: readonly CheckNode[], nowMs: number, policy: CheckPolicy = DEFAULT_CHECK_POLICY): IpamCheckResult {
  const byNode = new Map(nodes.map((n) => [n.node, n]));
  const ready = (node: string) => byNode.get(node)?.ready === true;
  // Per node: every address its endpoints hold (with or without a container), and its held addresses.
  const reportedAddrs = new Map<string, Set<string>>();
  const heldAddrs = new Map<string, Set<string>>();
  for (const n of nodes) {
    reportedAddrs.set(n.node, new Set(n.endpointStates.flatMap((e) => addressesOf(e).map((x) => x.text))));
    heldAddrs.set(n.node, new Set(n.held.map((h) => canonical(h)?.text).filter((x): x is string => !!x)));
  }

  const orphans: OrphanAllocation[] = [];
  const held: HeldAddress[] = [];
  let pending = 0;
  for (const p of state.pools.values()) {
    for (const [v, a] of p.allocs) {
      if (a.kind !== 'endpoint') continue;
      const address = formatValue(p.cidr.family, v);
      const n = byNode.get(a.node);
      const base = () => {
        const network = networkOf(state, p, a);
        return { address, poolId: p.poolId, ...(network ? { network } : {}), node: a.node, allocSeq: a.seq, allocatedAt: a.time, ...(a.endpointId ? { endpointId: a.endpointId } : {}) };
      };
      if (!n?.ready) {
        orphans.push({ ...base(), reason: 'node-gone', detail: goneText(n, a.node, nowMs) });
        continue;
      }
      if ((a.endpointId && n.endpoints.has(a.endpointId)) || reportedAddrs.get(a.node)!.has(address)) continue;
      if (heldAddrs.get(a.node)!.has(address)) {
        const network = networkOf(state, p, a);
        held.push({ address, node: a.node, poolId: p.poolId, ...(network ? { network } : {}) });
        continue;
      }
      if (n.lastSeenMs === undefined || n.lastSeenMs < Date.parse(a.boundTime ?? a.time) + policy.reportSlackMs) {
        pending++;
        continue;
      }
      orphans.push(
        a.endpointId
          ? { ...base(), reason: 'endpoint-gone', detail: `bound to endpoint ${a.endpointId.slice(0, 12)}, which ${a.node} no longer reports (its container is gone)` }
          : { ...base(), reason: 'unbound', detail: `allocated to ${a.node} ${agoText(nowMs - Date.parse(a.time))} and never bound to an endpoint; ${a.node} reports no container with it` },
      );
    }
  }

  const containers: OrphanContainer[] = [];
  const holders = new Map<string, { pool: Pool; address: string; list: AddressHolder[] }>();
  for (const n of nodes) {
    if (!n.ready) continue;
    const seenEndpoints = new Set<string>();
    for (const e of n.endpointStates) {
      if (!hasContainer(e) || seenEndpoints.has(e.endpointId)) continue;
      seenEndpoints.add(e.endpointId);
      for (const { text: address, addr } of addressesOf(e)) {
        const where = poolOfEndpoint(state, e.networkId, addr);
        const network = state.networks.get(e.networkId)?.name ?? e.network;
        const row = {
          address,
          node: n.node,
          ...(e.container ? { container: e.container } : {}),
          ...(e.containerId ? { containerId: e.containerId } : {}),
          endpointId: e.endpointId,
          ...(network ? { network } : {}),
          networkId: e.networkId,
        };
        const netText = network ? `network "${network}" (${e.networkId.slice(0, 12)})` : `network ${e.networkId.slice(0, 12)}`;
        if (!where.known) {
          containers.push({ ...row, reason: 'network-unknown', detail: `${who(e)} on ${n.node} has ${address} on ${netText}, which the controller has no record of` });
          continue;
        }
        const p = where.pool;
        if (!p) {
          containers.push({ ...row, reason: 'no-allocation', detail: `${who(e)} on ${n.node} has ${address}, in no pool of ${netText}` });
          continue;
        }
        const key = `${p.poolId}|${address}`;
        const h = holders.get(key) ?? { pool: p, address, list: [] };
        h.list.push({ node: n.node, ...(e.container ? { container: e.container } : {}), ...(e.containerId ? { containerId: e.containerId } : {}), endpointId: e.endpointId });
        holders.set(key, h);
        const a = p.allocs.get(addr.value);
        // An allocation made after the report (less the slack) may be a new container's: the report is older.
        const newer = (x: Allocation) => n.lastSeenMs === undefined || Date.parse(x.boundTime ?? x.time) > n.lastSeenMs - policy.reportSlackMs;
        if (!a) {
          containers.push({ ...row, poolId: p.poolId, reason: 'no-allocation', detail: `${who(e)} on ${n.node} has ${address}, which the cluster IPAM has not allocated (pool ${p.poolId})` });
        } else if (a.kind !== 'endpoint') {
          containers.push({ ...row, poolId: p.poolId, reason: 'reserved', detail: `${who(e)} on ${n.node} has ${address}, reserved as ${a.kind === 'gateway' ? 'the gateway' : 'an --aux-address'} of pool ${p.poolId}` });
        } else if (a.node !== n.node) {
          if (!newer(a)) containers.push({ ...row, poolId: p.poolId, reason: 'other-node', detail: `${who(e)} on ${n.node} has ${address}, which the cluster IPAM allocated to node ${a.node}` });
        } else if (a.endpointId && a.endpointId !== e.endpointId) {
          if (!newer(a)) containers.push({ ...row, poolId: p.poolId, reason: 'other-endpoint', detail: `${who(e)} on ${n.node} has ${address}, which the cluster IPAM has bound to another endpoint (${a.endpointId.slice(0, 12)})` });
        }
      }
    }
  }

  const duplicates: DuplicateAddress[] = [];
  for (const { pool, address, list } of holders.values()) {
    if (list.length < 2) continue;
    const network = poolNetworkNames(state, pool.poolId);
    duplicates.push({
      address,
      poolId: pool.poolId,
      ...(network ? { network } : {}),
      holders: list,
      detail: `${address} is held by ${list.map((h) => `${who(h)} on ${h.node}`).join(' and ')}`,
    });
  }

  const gone: GoneNodeBlock[] = [];
  for (const p of state.pools.values()) {
    for (const b of p.blocks.values()) {
      if (ready(b.node)) continue;
      const n = byNode.get(b.node);
      const network = poolNetworkNames(state, p.poolId);
      gone.push({
        block: formatBlock(p, b.network),
        poolId: p.poolId,
        ...(network ? { network } : {}),
        node: b.node,
        ...(n?.lastSeenMs !== undefined ? { lastSeen: new Date(n.lastSeenMs).toISOString() } : {}),
        endpoints: b.endpoints,
        detail: goneText(n, b.node, nowMs),
      });
    }
  }

  const cmp = (a: { network?: string; address: string; node: string }, b: { network?: string; address: string; node: string }) =>
    byText(a.network ?? '', b.network ?? '') || byAddress(a.address, b.address) || byText(a.node, b.node);
  orphans.sort(cmp);
  containers.sort(cmp);
  duplicates.sort((a, b) => byText(a.poolId, b.poolId) || byAddress(a.address, b.address));
  gone.sort((a, b) => byText(a.node, b.node) || byText(a.poolId, b.poolId) || byText(a.block, b.block));
  held.sort(cmp);
  const findings = orphans.length + containers.length + duplicates.length + gone.length;
  return {
    clean: findings === 0,
    findings,
    checkedAt: new Date(nowMs).toISOString(),
    nodes: { ready: nodes.filter((n) => n.ready).map((n) => n.node).sort(byText), notReady: nodes.filter((n) => !n.ready).map((n) => n.node).sort(byText) },
    allocationsWithoutContainer: orphans,
    containersWithoutAllocation: containers,
    duplicateAddresses: duplicates,
    goneNodeBlocks: gone,
    held,
    pending,
  };
}

/** `underlay ipam release ADDRESS [--network NAME]`. */
export interface OperatorRelease {
  address: string;
  /** A Docker network name: only its pools (needed when the address is allocated in several address spaces). */
  network?: string;
}

export interface OperatorReleased {
  address: string;
  poolId: string;
  node: string;
  allocSeq: number;
  network?: string;
}

/**
 * An operator frees one endpoint address (through the HTTP API only: an agent may release only its own). Refused
 * while a node's latest report (Ready or not) shows an endpoint with it, while its node holds it for a restart, and
 * when its node has not reported since this controller started (nothing says whether a container holds it).
 */
export function decideOperatorRelease(state: ClusterState, req: OperatorRelease, nodes: readonly CheckNode[], nowMs: number): Decision<OperatorReleased> {
  const parsed = canonical(req.address);
  if (!parsed) throw new InvalidArgumentError(`address: ${JSON.stringify(req.address)} is not an IP address`);
  const { text: address, addr } = parsed;
  let pools = [...state.pools.values()].filter((p) => p.cidr.family === addr.family && p.allocs.has(addr.value));
  if (req.network !== undefined) {
    const ids = new Set([...state.networks.values()].filter((n) => n.name === req.network).flatMap((n) => n.poolIds));
    if (ids.size === 0 && !state.clusterNetworks.has(req.network)) throw new NotFoundError(`network ${JSON.stringify(req.network)} not found`);
    pools = pools.filter((p) => ids.has(p.poolId));
  }
  const on = req.network !== undefined ? ` on network "${req.network}"` : '';
  if (pools.length === 0) throw new NotFoundError(`address ${address} is not allocated${on}`);
  if (pools.length > 1) {
    const where = pools.map((p) => `${p.cidrText} in address space "${p.space}"${poolNetworkNames(state, p.poolId) ? ` (network ${poolNetworkNames(state, p.poolId)})` : ''}`).join(', ');
    throw new InvalidArgumentError(`address ${address} is allocated in several address spaces: ${where}; name the network with --network NAME`);
  }
  const p = pools[0]!;
  const a = p.allocs.get(addr.value)!;
  const network = networkOf(state, p, a);
  const netText = network ? ` of network "${network}"` : '';
  if (a.kind !== 'endpoint') {
    throw new ConflictError(`address ${address} is ${a.kind === 'gateway' ? 'the gateway' : 'an --aux-address reservation'}${netText}, not a container's; it goes with the network`);
  }
  for (const n of nodes) {
    for (const e of n.endpointStates) {
      if (!addressesOf(e).some((x) => x.text === address)) continue;
      const where = poolOfEndpoint(state, e.networkId, addr);
      if (where.known && where.pool && where.pool.poolId !== p.poolId) continue; // the same address in another space
      const age = n.lastSeenMs !== undefined ? `, as ${n.node} reported ${agoText(nowMs - n.lastSeenMs)}${n.ready ? '' : ' (it is not reporting now)'}` : '';
      throw new ConflictError(`address ${address}${netText} is in use by ${who(e)} on ${n.node}${age}; remove the container (docker rm on ${n.node}) instead`);
    }
  }
  const holder = nodes.find((n) => n.node === a.node);
  if (a.endpointId && holder?.endpoints.has(a.endpointId)) {
    throw new ConflictError(`address ${address}${netText} is in use by endpoint ${a.endpointId.slice(0, 12)} on ${a.node}; remove its container (docker rm on ${a.node}) instead`);
  }
  if (holder && holder.held.some((h) => canonical(h)?.text === address)) {
    throw new ConflictError(`address ${address}${netText} is held by ${a.node} for a container's restart (--address-hold-ms); ${a.node} gives it back by itself when the time is up`);
  }
  if (!holder || holder.lastSeenMs === undefined) {
    throw new ConflictError(`address ${address}${netText} is allocated to node ${a.node}, which has not reported since this controller started: nothing says whether a container holds it; try again once it reports (or let the leak collector reclaim it)`);
  }
  const events: EventBody[] = [{ type: 'AddressReleased', data: { poolId: p.poolId, address, node: a.node, allocSeq: a.seq, reason: 'operator release' } }];
  if (poolGoesWith(p, 1)) events.push({ type: 'PoolDeleted', data: { poolId: p.poolId } });
  return { events, result: { address, poolId: p.poolId, node: a.node, allocSeq: a.seq, ...(network ? { network } : {}) } };
}

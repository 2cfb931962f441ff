/**
 * What the HTTP API and `underlay … ls` show, computed from the folded state, the nodes' latest
 * reports and the time. Pure: the same inputs give the same answer (the controller passes Date.now()).
 * The translation from the cluster state to the API's shapes (./api.ts), so it sits with the wire schemas.
 */
import { formatValue, parseAddr, type Family } from '../ip.js';
import { blockRange, endpointCount, formatBlock, poolSize, type ClusterNetwork, type ClusterState, type NetworkInfo, type Pool } from '../state/cluster-state.js';
import { parseNetworkOptions } from '../options.js';
import { DEFAULT_CHECK_POLICY, checkIpam, type CheckNode, type CheckPolicy } from '../ipam/check.js';
import type { EndpointStatus, NetworkStatus, NodeReport } from './ipam.js';
import { comparePageKeys, pageOf, type PageKey, type PageRequest } from './paging.js';
import type {
  BlockUsage,
  EndpointView,
  IpamCheck,
  IpamUsage,
  NetworkDetail,
  NetworkHost,
  NetworkSummary,
  NodeView,
  PoolUsage,
} from './api.js';

/** A node's latest report and lease (the controller's NodeDirectory entries have this shape). */
export interface NodeSeen {
  node: string;
  lastSeenMs: number;
  leaseMs: number;
  report: NodeReport;
}

/** Everything a view reads. */
export interface ViewInput {
  state: ClusterState;
  /** Latest report of every node that reported since the controller started. */
  seen: readonly NodeSeen[];
  nowMs: number;
}

const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const cmpBig = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0);
/** "192.0.2.5/24" → "192.0.2.5". */
const bare = (a: string) => a.split('/')[0]!;

const isReady = (s: NodeSeen | undefined, nowMs: number) => !!s && nowMs - s.lastSeenMs <= s.leaseMs;

const seenMap = (seen: readonly NodeSeen[]) => new Map(seen.map((s) => [s.node, s]));

/** Lookups built once per view call (instead of searching lists inside loops over nodes and networks). */
interface ViewIndex {
  reports: Map<string, NodeSeen>;
  nodes: string[];
  /** network name → node → that node's member Docker network (the first recorded). */
  members: Map<string, Map<string, NetworkInfo>>;
  /** node → network name → its reported state (the first reported). */
  networkStates: Map<string, Map<string, NetworkStatus>>;
  /** node → endpoint id → its reported state (the first reported). */
  endpointStates: Map<string, Map<string, EndpointStatus>>;
}

function firstBy<T>(list: readonly T[], key: (x: T) => string): Map<string, T> {
  const m = new Map<string, T>();
  for (const x of list) if (!m.has(key(x))) m.set(key(x), x);
  return m;
}

function indexOf(input: ViewInput): ViewIndex {
  const members = new Map<string, Map<string, NetworkInfo>>();
  for (const n of input.state.networks.values()) {
    if (!n.name || n.cluster !== true) continue;
    const byNode = members.get(n.name) ?? new Map<string, NetworkInfo>();
    if (!byNode.has(n.node)) byNode.set(n.node, n);
    members.set(n.name, byNode);
  }
  return {
    reports: seenMap(input.seen),
    nodes: knownNodes(input.state, input.seen),
    members,
    networkStates: new Map(input.seen.map((s) => [s.node, firstBy(s.report.networkStates, (n) => n.name)])),
    endpointStates: new Map(input.seen.map((s) => [s.node, firstBy(s.report.endpointStates, (e) => e.endpointId)])),
  };
}

/** Every node the cluster knows: registered in the log, or reporting. */
function knownNodes(state: ClusterState, seen: readonly NodeSeen[]): string[] {
  return [...new Set([...state.nodes.keys(), ...seen.map((s) => s.node)])].sort(byName);
}

/** Driver, mode and parent of a definition's options (raw values when they do not parse). */
export function driverOf(options: Readonly<Record<string, string>>): { driver: string; mode: string; parent?: string } {
  try {
    const o = parseNetworkOptions(options);
    const mode = o.type === 'macvlan' ? o.macvlanMode : o.ipvlanFlag === 'bridge' ? o.ipvlanMode : `${o.ipvlanMode} ${o.ipvlanFlag}`;
    return { driver: o.type, mode, ...(o.parent ? { parent: o.parent } : {}) };
  } catch {
    const parent = options.parent || options.host_iface;
    return { driver: options.type ?? 'macvlan', mode: options.macvlan_mode ?? options.ipvlan_mode ?? '', ...(parent ? { parent } : {}) };
  }
}

/** Every host's replica of the cluster network `name`: from the Docker networks recorded and the nodes' reports. */
function hostsOf(name: string, input: ViewInput, ix: ViewIndex): NetworkHost[] {
  const out: NetworkHost[] = [];
  for (const node of ix.nodes) {
    const s = ix.reports.get(node);
    const reported = ix.networkStates.get(node)?.get(name);
    const recorded = ix.members.get(name)?.get(node);
    if (!reported && !recorded) continue;
    const networkId = reported?.networkId ?? recorded?.networkId;
    out.push({
      node,
      nodeReady: isReady(s, input.nowMs),
      state: reported ? reported.state : 'recorded',
      ...(networkId ? { networkId } : {}),
      ...(reported ? { replica: reported.replica } : {}),
      ...(reported?.parent ? { parent: reported.parent } : {}),
      ...(reported?.detail ? { detail: reported.detail } : {}),
    });
  }
  return out;
}

function summary(cn: ClusterNetwork, input: ViewInput, ix: ViewIndex, endpointCount: number): NetworkSummary {
  const d = cn.definition;
  const hosts = hostsOf(cn.name, input, ix);
  return {
    name: cn.name,
    ...driverOf(d.options),
    subnets: d.subnets.map((s) => s.subnet),
    ipv6: d.ipv6,
    internal: d.internal,
    hosts,
    readyHosts: hosts.filter((h) => h.nodeReady && (h.state === 'ready' || h.state === 'recorded')).length,
    totalHosts: ix.nodes.length,
    endpointCount,
    created: { seq: cn.createdSeq, time: cn.time, actor: cn.actor, ...(cn.originNode ? { originNode: cn.originNode } : {}) },
  };
}

/** Distinct endpoints on the members of each cluster network, by network name. */
function endpointCounts(state: ClusterState): Map<string, number> {
  const ids = new Map<string, Set<string>>();
  for (const p of state.pools.values()) {
    for (const a of p.allocs.values()) {
      if (a.kind !== 'endpoint' || !a.endpointId || !a.networkId) continue;
      const n = state.networks.get(a.networkId);
      if (!n?.name || n.cluster === false) continue;
      const set = ids.get(n.name) ?? new Set<string>();
      set.add(a.endpointId);
      ids.set(n.name, set);
    }
  }
  return new Map([...ids].map(([k, v]) => [k, v.size]));
}

/** `GET /v1/networks`: every cluster network, by name. */
export function networkList(input: ViewInput): NetworkSummary[] {
  const counts = endpointCounts(input.state);
  const ix = indexOf(input);
  return [...input.state.clusterNetworks.values()].sort((a, b) => byName(a.name, b.name)).map((cn) => summary(cn, input, ix, counts.get(cn.name) ?? 0));
}

/**
 * `GET /v1/networks/{name}`: undefined when there is no such cluster network. Its endpoints are paged (`page`: at most
 * PAGE_DEFAULT unless it says otherwise); `continue` is there when more endpoints follow.
 */
export function networkInspect(input: ViewInput, name: string, page: PageRequest = {}): NetworkDetail | undefined {
  const cn = input.state.clusterNetworks.get(name);
  if (!cn) return undefined;
  const endpoints = endpointPage(input, { network: name }, page);
  return {
    ...summary(cn, input, indexOf(input), endpointCounts(input.state).get(name) ?? 0),
    definition: cn.definition,
    endpoints: endpoints.endpoints,
    ...(endpoints.continue ? { continue: endpoints.continue } : {}),
  };
}

interface Row extends EndpointView {
  sortValue?: bigint;
  key: PageKey;
}

/**
 * `GET /v1/endpoints`: one row per endpoint address (from the allocations), with what the address's node
 * reports about its endpoint; plus endpoints a node reports that hold no address (failed before binding).
 * The gateway and --aux-address reservations are not endpoints (see ipam usage).
 */
export function endpointList(input: ViewInput, filter: { network?: string; node?: string } = {}): EndpointView[] {
  return endpointRows(input, filter).map(strip);
}

/** `GET /v1/endpoints` a page at a time: the rows of endpointList after `page.continue`, at most `page.limit`. */
export function endpointPage(input: ViewInput, filter: { network?: string; node?: string } = {}, page: PageRequest = {}): { endpoints: EndpointView[]; continue?: string } {
  const p = pageOf(endpointRows(input, filter), (r) => r.key, page);
  return { endpoints: p.items.map(strip), ...(p.continue ? { continue: p.continue } : {}) };
}

const strip = ({ sortValue: _s, key: _k, ...r }: Row): EndpointView => r;

/** An endpoint row's place in the list: network, family, address, node, endpoint id (the page token holds it). */
const rowKey = (r: Omit<Row, 'key'>): PageKey => [r.network ?? '', BigInt(r.family ?? 99), r.sortValue ?? -1n, r.node, r.endpointId ?? ''];

function endpointRows(input: ViewInput, filter: { network?: string; node?: string }): Row[] {
  const { state } = input;
  const ix = indexOf(input);
  const statusOf = (node: string, endpointId: string | undefined) => (endpointId ? ix.endpointStates.get(node)?.get(endpointId) : undefined);
  const rows: Omit<Row, 'key'>[] = [];
  const withAddress = new Set<string>();
  for (const p of state.pools.values()) {
    for (const [v, a] of p.allocs) {
      if (a.kind !== 'endpoint') continue;
      const st = statusOf(a.node, a.endpointId);
      const net = a.networkId ? state.networks.get(a.networkId) : undefined;
      const network = net?.name ?? st?.network;
      if (a.endpointId) withAddress.add(`${a.node}/${a.endpointId}`);
      rows.push({
        address: formatValue(p.cidr.family, v),
        family: p.cidr.family,
        node: a.node,
        ...(network ? { network } : {}),
        ...(a.networkId ? { networkId: a.networkId } : {}),
        ...(a.endpointId ? { endpointId: a.endpointId } : {}),
        ...(st?.container ? { container: st.container } : {}),
        ...(st?.containerId ? { containerId: st.containerId } : {}),
        state: st ? st.state : a.endpointId ? 'bound' : 'allocated',
        ...(st?.error ? { error: st.error } : {}),
        ...(st?.link ? { link: st.link } : {}),
        poolId: p.poolId,
        allocSeq: a.seq,
        allocatedAt: a.time,
        ...(a.boundTime ? { boundAt: a.boundTime } : {}),
        sortValue: v,
      });
    }
  }
  // Endpoints their node reports but that hold no address in the cluster state (an error before binding).
  for (const s of input.seen) {
    for (const st of s.report.endpointStates) {
      if (withAddress.has(`${s.node}/${st.endpointId}`)) continue;
      const net = state.networks.get(st.networkId);
      const network = net?.name ?? st.network;
      const addrs = [st.address, st.addressV6].filter((x): x is string => !!x);
      const base = {
        node: s.node,
        ...(network ? { network } : {}),
        networkId: st.networkId,
        endpointId: st.endpointId,
        ...(st.container ? { container: st.container } : {}),
        ...(st.containerId ? { containerId: st.containerId } : {}),
        state: st.state,
        ...(st.error ? { error: st.error } : {}),
        ...(st.link ? { link: st.link } : {}),
      };
      if (addrs.length === 0) rows.push(base);
      for (const a of addrs) {
        let family: Family | undefined;
        let sortValue: bigint | undefined;
        try {
          const p = parseAddr(bare(a));
          family = p.family;
          sortValue = p.value;
        } catch {
          /* shown as reported */
        }
        rows.push({ ...base, address: bare(a), ...(family ? { family } : {}), ...(sortValue !== undefined ? { sortValue } : {}) });
      }
    }
  }
  return rows
    .filter((r) => (!filter.network || r.network === filter.network) && (!filter.node || r.node === filter.node))
    .map((r) => ({ ...r, key: rowKey(r) }))
    .sort((a, b) => comparePageKeys(a.key, b.key));
}

/** `GET /v1/nodes`: every node registered or reporting, Ready while its lease holds. */
export function nodeList(input: ViewInput): NodeView[] {
  const { state, nowMs } = input;
  const { reports, nodes } = indexOf(input);
  const endpoints = new Map<string, Set<string>>();
  for (const p of state.pools.values()) {
    for (const a of p.allocs.values()) {
      if (a.kind !== 'endpoint' || !a.endpointId) continue;
      const set = endpoints.get(a.node) ?? new Set<string>();
      set.add(a.endpointId);
      endpoints.set(a.node, set);
    }
  }
  return nodes.map((name) => {
    const s = reports.get(name);
    const reg = state.nodes.get(name);
    const address = s?.report.address ?? reg?.address;
    const version = s?.report.version ?? reg?.version;
    return {
      name,
      status: isReady(s, nowMs) ? 'Ready' : 'NotReady',
      ...(s ? { lastSeen: new Date(s.lastSeenMs).toISOString(), lastSeenAgoMs: Math.max(0, Math.round(nowMs - s.lastSeenMs)), leaseMs: s.leaseMs } : {}),
      ...(address ? { address } : {}),
      ...(version ? { version } : {}),
      interfaces: [...(s?.report.interfaces ?? reg?.interfaces ?? [])],
      endpointCount: endpoints.get(name)?.size ?? 0,
      networks: [...(s?.report.networkStates ?? [])].sort((a, b) => byName(a.name, b.name)),
      registered: !!reg,
    };
  });
}

function poolUsage(state: ClusterState, p: Pool, blockNets: readonly bigint[]): PoolUsage {
  const size = poolSize(p);
  const endpoints = endpointCount(p);
  const used = p.allocs.size;
  const blocks: BlockUsage[] = blockNets.map((net) => {
    const b = p.blocks.get(net)!;
    const br = blockRange(p, b.network);
    return { block: formatBlock(p, b.network), node: b.node, size: String(br ? br.last - br.first + 1n : 0n), used: b.used, endpoints: b.endpoints };
  });
  const networks = [...new Set([...state.networks.values()].filter((n) => n.poolIds.includes(p.poolId) && n.name).map((n) => n.name!))].sort(byName);
  return {
    poolId: p.poolId,
    space: p.space,
    cidr: p.cidrText,
    ...(p.subPoolText ? { ipRange: p.subPoolText } : {}),
    v6: p.v6,
    networks,
    nodes: [...p.refs].sort(byName),
    size: String(size),
    used,
    free: String(size > BigInt(used) ? size - BigInt(used) : 0n),
    endpoints,
    reserved: used - endpoints,
    blockPrefix: p.blockPrefix,
    strictAffinity: p.strictAffinity,
    blockCount: p.blocks.size,
    blocks,
  };
}

/**
 * `GET /v1/ipam/usage`: every pool (by address space and subnet) with its counts, and its blocks a page at a time: the
 * page (`page.limit` blocks, PAGE_DEFAULT by default, after `page.continue`) runs over the blocks of all pools in
 * order; a pool lists those of its blocks that are in the page (`blockCount` has them all), and `continue` is there
 * when more blocks follow.
 */
export function ipamUsage(state: ClusterState, page: PageRequest = {}): IpamUsage {
  const poolKey = (p: Pool): PageKey => [p.space, BigInt(p.cidr.family), p.cidr.network, BigInt(p.cidr.prefix)];
  const pools = [...state.pools.values()].map((p) => ({ p, key: poolKey(p) })).sort((a, b) => comparePageKeys(a.key, b.key));
  const blocks = pools.flatMap(({ p, key }) => [...p.blocks.keys()].sort(cmpBig).map((net) => ({ poolId: p.poolId, net, key: [...key, net] })));
  const inPage = pageOf(blocks, (b) => b.key, page);
  const byPool = new Map<string, bigint[]>();
  for (const b of inPage.items) {
    const list = byPool.get(b.poolId);
    if (list) list.push(b.net);
    else byPool.set(b.poolId, [b.net]);
  }
  return { pools: pools.map(({ p }) => poolUsage(state, p, byPool.get(p.poolId) ?? [])), ...(inPage.continue ? { continue: inPage.continue } : {}) };
}

/** What the IPAM check and the operator's release read of each node: its latest report and whether its lease holds. */
export function checkNodes(input: Pick<ViewInput, 'seen' | 'nowMs'>): CheckNode[] {
  return input.seen.map((s) => ({
    node: s.node,
    ready: isReady(s, input.nowMs),
    lastSeenMs: s.lastSeenMs,
    endpoints: new Set(s.report.endpoints),
    endpointStates: s.report.endpointStates,
    held: s.report.heldAddresses ?? [],
  }));
}

/** `GET /v1/ipam/check`: the cluster IPAM against every host's latest report. */
export function ipamCheck(input: ViewInput, policy: CheckPolicy = DEFAULT_CHECK_POLICY): IpamCheck {
  return checkIpam(input.state, checkNodes(input), input.nowMs, policy);
}

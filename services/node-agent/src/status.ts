/**
 * The agent's periodic report: liveness (it renews the node's lease), every endpoint its Docker holds
 * (the leak rules rely on it), and the state of each endpoint and network on this host.
 *
 * The endpoint list comes from Docker (every container endpoint on every underlay network, read through the
 * Docker Engine API) as well as from the local store, so an endpoint is listed while its container runs even
 * when the store lost it (state directory wiped or damaged). When Docker cannot be read, the list also keeps
 * what Docker last showed and every endpoint the cluster view says this node holds: an unknown is never
 * reported as gone. With neither Docker nor a caught-up view, no report is sent (the lease is renewed by the
 * next one): a report that could omit live endpoints is worse than a late one.
 */
import * as os from 'node:os';
import { UnavailableError, contains, parseCidr, tryParseAddr, type Cidr, type EndpointStatus, type ClusterState, type NetworkStatus, type NodeReport } from '@underlay/core';
import type { Docker, EndpointError } from './driver/context.js';
import type { LinkOps } from './driver/links.js';
import type { LocalStore } from './driver/store.js';
import type { ReplicaState } from './driver/replicas.js';
import { readDockerUnderlay } from './driver/docker-state.js';
import type { AddressHolds } from './driver/address-holds.js';

/** Errors older than this drop out of reports. */
const ERROR_KEEP_MS = 10 * 60_000;

export function hostInterfaces(): string[] {
  return Object.keys(os.networkInterfaces()).sort();
}

/**
 * A lookup of the interface whose subnet holds an address (the device for a route via it). The host's
 * interfaces are read once, when the lookup is made: make one per batch of routes.
 */
export function deviceLookup(): (address: string) => string | undefined {
  const subnets: { name: string; cidr: Cidr }[] = [];
  for (const [name, list] of Object.entries(os.networkInterfaces())) {
    for (const i of list ?? []) {
      if (!i.cidr || i.internal) continue;
      try {
        subnets.push({ name, cidr: parseCidr(i.cidr) });
      } catch {
        /* not a CIDR we parse */
      }
    }
  }
  return (address) => {
    const a = tryParseAddr(address);
    return a ? subnets.find((s) => contains(s.cidr, a))?.name : undefined;
  };
}

/** The host's first non-internal IPv4 address (the default for --address). */
export function defaultAddress(): string | undefined {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return undefined;
}

/** What the report reads of the agent's driver (a subset of its DriverContext; keep passing the same object). */
export interface ReportSource {
  node: string;
  store: LocalStore;
  docker: Pick<Docker, 'listNetworkIds' | 'inspectNetwork'>;
  links: Pick<LinkOps, 'listLinks'>;
  endpointErrors?: Map<string, EndpointError>;
  conflicts?: ReadonlyMap<string, string>;
  /** The name Docker knows this plugin by (--driver-name): `underlay` for the socket plugin, `underlay/underlay:VERSION` as a managed plugin. */
  driverName?: string;
  /** Addresses held for a container's restart. */
  holds?: Pick<AddressHolds, 'list'>;
}

export interface ReportInputs {
  ctx: ReportSource;
  version: string;
  address?: string;
  leaseMs: number;
  state?: ClusterState;
  replicas?: ReplicaState;
  nowMs?: number;
}

/** Endpoints Docker showed in the last report that could read it, per agent (kept while Docker cannot be read). */
const lastDockerEndpoints = new WeakMap<ReportSource, Set<string>>();

/** The endpoints bound to this node in the cluster state. */
function boundEndpointsOf(state: ClusterState, node: string): string[] {
  const out: string[] = [];
  for (const p of state.pools.values()) for (const a of p.allocs.values()) if (a.node === node && a.endpointId) out.push(a.endpointId);
  return out;
}

/**
 * The call options of a report: it ends within one report interval, answered or not, so the next goes out on time. A
 * report is heard by every controller, standbys too, but answered only by a leader; while none leads (an election,
 * etcd slow to answer a keepalive) one waiting the RPC's 10 s attempt timeout kept the node unheard long enough for
 * the new leader's collector to take its running containers' addresses as a dead node's.
 */
export const reportCallOptions = (intervalMs: number) => ({ deadlineMs: intervalMs, timeoutMs: intervalMs });

export async function buildReport(inp: ReportInputs): Promise<NodeReport> {
  const { ctx } = inp;
  const now = inp.nowMs ?? Date.now();
  const endpointStates: EndpointStatus[] = [];
  const networkStates: NetworkStatus[] = [];
  const containers = new Map<string, { name?: string; id: string }>();
  const names = new Map<string, string>();
  const replicaLabel = new Map<string, boolean>();
  const docker = await readDockerUnderlay(ctx.docker, ctx.store.networks.keys(), ctx.driverName);
  if (!docker.complete && !inp.state) {
    throw new UnavailableError(`report postponed: ${docker.errors[0] ?? 'Docker could not be read'}, and the cluster view has not caught up yet`);
  }
  // Every endpoint the host holds: the store's, Docker's, and (Docker unreadable) the last known and the cluster's.
  const endpoints = new Set(ctx.store.endpoints.keys());
  const fromDocker = new Set<string>();
  for (const [id, { network: n, endpoints: eps }] of docker.networks) {
    names.set(id, n.Name);
    replicaLabel.set(id, !!n.Labels?.['io.underlay.replica']);
    for (const e of eps) {
      containers.set(e.endpointId, { name: e.container, id: e.containerId });
      fromDocker.add(e.endpointId);
      endpoints.add(e.endpointId);
      // An endpoint Docker holds that the store does not know (lost state): reported as Docker shows it.
      if (!ctx.store.endpoints.has(e.endpointId)) {
        endpointStates.push({ endpointId: e.endpointId, networkId: id, network: n.Name, container: e.container, containerId: e.containerId, address: e.address, addressV6: e.addressV6, state: 'joined' });
      }
    }
  }
  if (docker.complete) {
    lastDockerEndpoints.set(ctx, fromDocker);
  } else {
    for (const id of lastDockerEndpoints.get(ctx) ?? []) endpoints.add(id);
    for (const id of inp.state ? boundEndpointsOf(inp.state, ctx.node) : []) endpoints.add(id);
  }
  for (const ep of ctx.store.endpoints.values()) {
    const c = containers.get(ep.id);
    const err = ctx.endpointErrors?.get(ep.id);
    endpointStates.push({
      endpointId: ep.id,
      networkId: ep.networkId,
      network: names.get(ep.networkId),
      container: c?.name,
      containerId: c?.id,
      address: ep.address,
      addressV6: ep.addressV6,
      link: ep.srcName,
      state: err ? 'error' : ep.srcName ? 'joined' : 'created',
      ...(err ? { error: err.error } : {}),
    });
  }
  for (const [id, e] of ctx.endpointErrors ?? []) {
    if (now - e.atMs > ERROR_KEEP_MS) ctx.endpointErrors!.delete(id);
    else if (!ctx.store.endpoints.has(id) && !fromDocker.has(id)) endpointStates.push({ endpointId: id, networkId: e.networkId, network: names.get(e.networkId), state: 'error', error: e.error });
  }
  const seen = new Set<string>();
  // One link dump per report, not one lookup per network.
  const links = new Set(await ctx.links.listLinks().then((l) => l.map((x) => x.name), () => [] as string[]));
  for (const net of ctx.store.networks.values()) {
    const name = names.get(net.id) ?? inp.state?.networks.get(net.id)?.name ?? net.id.slice(0, 12);
    seen.add(name);
    const conflict = ctx.conflicts?.get(net.id);
    const removing = inp.replicas?.removing.get(name);
    const parentUp = links.has(net.parent);
    const base = { name, networkId: net.id, parent: net.parent, replica: replicaLabel.get(net.id) ?? false };
    if (conflict) networkStates.push({ ...base, state: 'conflict', detail: conflict });
    else if (removing) networkStates.push({ ...base, state: 'removing', detail: removing });
    else if (!parentUp) networkStates.push({ ...base, state: 'parent-missing', detail: `parent interface ${net.parent} is missing` });
    else networkStates.push({ ...base, state: 'ready' });
  }
  for (const cn of inp.state?.clusterNetworks.values() ?? []) {
    if (seen.has(cn.name)) continue;
    const err = inp.replicas?.lastError.get(cn.name);
    if (err) {
      networkStates.push({ name: cn.name, state: err.state, detail: err.detail, replica: true });
    } else {
      networkStates.push({ name: cn.name, state: 'creating', replica: true });
    }
  }
  return {
    node: ctx.node,
    version: inp.version,
    address: inp.address,
    interfaces: hostInterfaces(),
    leaseMs: inp.leaseMs,
    endpoints: [...endpoints],
    endpointStates,
    networkStates,
    // Held for a restart: the leak rules leave them, and they do not keep a network from being removed.
    heldAddresses: (ctx.holds?.list() ?? []).map((h) => h.address),
  };
}

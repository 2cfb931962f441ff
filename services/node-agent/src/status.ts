/**
 * The agent's periodic report: liveness (it renews the node's lease), every endpoint its Docker holds
 * (the leak rules rely on it), and the state of each endpoint and network on this host.
 */
import * as os from 'node:os';
import { DockerNetworkInspect, contains, parseCidr, tryParseAddr, type Cidr, type EndpointStatus, type IpamState, type NetworkStatus, type NodeReport } from '@underlay/core';
import type { DriverContext } from './driver/context.js';
import type { ReplicaState } from './driver/replicas.js';

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

export interface ReportInputs {
  ctx: DriverContext;
  version: string;
  address?: string;
  leaseMs: number;
  state?: IpamState;
  replicas?: ReplicaState;
  nowMs?: number;
}

export async function buildReport(inp: ReportInputs): Promise<NodeReport> {
  const { ctx } = inp;
  const now = inp.nowMs ?? Date.now();
  const endpointStates: EndpointStatus[] = [];
  const networkStates: NetworkStatus[] = [];
  const containers = new Map<string, { name?: string; id: string }>();
  const names = new Map<string, string>();
  const replicaLabel = new Map<string, boolean>();
  for (const net of ctx.store.networks.values()) {
    try {
      const raw = await ctx.docker.inspectNetwork(net.id);
      if (!raw) continue;
      const n = DockerNetworkInspect.parse(raw);
      names.set(net.id, n.Name);
      replicaLabel.set(net.id, !!n.Labels?.['io.underlay.replica']);
      for (const [cid, c] of Object.entries(n.Containers ?? {})) if (c.EndpointID) containers.set(c.EndpointID, { name: c.Name, id: cid });
    } catch {
      /* Docker busy or gone: report what the store knows */
    }
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
    else if (!ctx.store.endpoints.has(id)) endpointStates.push({ endpointId: id, networkId: e.networkId, network: names.get(e.networkId), state: 'error', error: e.error });
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
    endpoints: [...ctx.store.endpoints.keys()],
    endpointStates,
    networkStates,
  };
}

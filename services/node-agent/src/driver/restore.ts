/**
 * Agent start after a restart, a host reboot, or the loss of its state files.
 *
 * 1. `rebuildFromDocker` (before serving Docker): every underlay network this host's Docker holds and every
 *    container endpoint on it that the local store does not know (its files were missing, damaged and moved
 *    aside, or wiped) is recorded again from the Docker Engine API: options, parent, subnets and gateways,
 *    the endpoints' addresses, MACs and links. The pools are derived as the controller names them
 *    (`<space>/<subnet>`), so new containers bind their addresses at once.
 *    A point-to-point subnet (/31, /127) is recorded without the gateway Docker shows (its gateway request was answered
 *    with an address reserved for nobody); step 3 puts back one --gateway reserved.
 *    Then the store is checked against Docker (`pruneStale`): Docker is the truth on its host, so a record of a network
 *    or endpoint Docker does not have (its data root was reset, the state directory came from another host or agent,
 *    a removal happened while the agent was down) is removed with the links underlay made for it, logged, and the
 *    controller is told that this host no longer has the network (`forgetPruned`: its endpoints' addresses, and its
 *    pools when nothing else here uses them, with their held addresses, are given back). An endpoint whose network
 *    Docker still has keeps its address: Docker releases it (and it is held for the container's restart). The replica
 *    reconcile does the same on every pass.
 * 2. `restore` (libnetwork: macvlan_store.go's populateNetworks and populateEndpoints): parents underlay
 *    created (802.1q sub-interfaces, dummies) that are gone are re-created; endpoint links underlay made that
 *    no endpoint owns any more are removed. Links inside running containers are not in the host namespace and
 *    are never touched, so containers keep their connectivity throughout.
 * 3. `rebuildFromController` (once the cluster view has caught up): the pools each network uses as the
 *    controller recorded them, a point-to-point subnet's gateway as the controller reserved it (or none), the
 *    allocations this node holds (with their seqs, so releases carry them), a binding for any endpoint address
 *    the controller still has unbound, and an endpoint address the cluster released while the endpoint held it (the
 *    collector took this node for gone after --node-expired-ms unheard) allocated to this node again and bound, when
 *    nobody else has taken it. The agent runs this step again when its view sees such a release.
 * Running containers keep their addresses: nothing here allocates an address but theirs, and only addresses of
 * networks Docker no longer has are released.
 */
import {
  SPACE_OPTION,
  contains,
  hasErrorCode,
  dummyParentName,
  endpointLinkName,
  formatCidr,
  formatValue,
  isEndpointLinkName,
  isPointToPoint,
  parseCidr,
  parseNetworkOptions,
  plugin,
  poolIdOf,
  tryParseAddr,
  type Addr,
  type ClusterState,
  type Pool,
} from '@underlay/core';
import type { ControllerClient, Docker, DriverMemory, KeyedMutex } from './context.js';
import { ensureParent, removeCreatedParent, type LinkOps } from './links.js';
import { mapParent } from '../config.js';
import { readDockerUnderlay, type DockerNetworkInfo, type DockerUnderlayState } from './docker-state.js';
import type { AllocInfo, EndpointRecord, LocalStore, NetworkRecord } from './store.js';
import type { AddressHolds } from './address-holds.js';

/** What the rebuilds read and write (a subset of the agent's DriverContext). */
export interface RebuildDeps {
  node: string;
  store: LocalStore;
  lock: KeyedMutex;
  docker: Pick<Docker, 'listNetworkIds' | 'inspectNetwork'>;
  controller: Pick<ControllerClient, 'bindEndpoint' | 'networkRemove' | 'releasePool' | 'releaseAddress'>;
  /** Addresses held for a restart (the pools of removed records give theirs back). */
  holds?: Pick<AddressHolds, 'releasePool'>;
  /** Pools this host's Docker asked for lately (not given back for a removed record). */
  memory?: Pick<DriverMemory, 'poolRequestedAt'>;
  /** Cluster parent names → this host's interfaces (--parent-map). */
  parentMap?: Readonly<Record<string, string>>;
  /** The name Docker knows this plugin by (--driver-name): `underlay` for the socket plugin, `underlay/underlay:VERSION` as a managed plugin. */
  driverName?: string;
  /** The links of this host (records Docker does not have are removed with theirs; without: nothing is removed). */
  links?: LinkOps;
}

export interface RestoreReport {
  networks: number;
  endpoints: number;
  parentsRecreated: string[];
  staleLinksRemoved: string[];
  errors: string[];
}

export async function restore(ctx: { store: LocalStore; links: LinkOps }, listLinkNames: () => Promise<string[]>): Promise<RestoreReport> {
  const report: RestoreReport = { networks: ctx.store.networks.size, endpoints: ctx.store.endpoints.size, parentsRecreated: [], staleLinksRemoved: [], errors: [] };
  for (const n of ctx.store.networks.values()) {
    if (!n.createdParent) continue;
    try {
      if (await ctx.links.getLink(n.parent)) continue;
      const o = parseNetworkOptions({ type: n.type, ...(n.requestedParent ? { parent: n.requestedParent } : {}) }, { internal: n.internal });
      await ensureParent(ctx.links, n.id, o);
      report.parentsRecreated.push(n.parent);
    } catch (e) {
      report.errors.push(`network ${n.id.slice(0, 12)}: parent ${n.parent} could not be re-created: ${(e as Error).message}`);
    }
  }
  const owned = new Set([...ctx.store.endpoints.values()].map((e) => e.srcName).filter(Boolean));
  for (const name of await listLinkNames()) {
    if (!isEndpointLinkName(name) || owned.has(name)) continue;
    try {
      if (await ctx.links.deleteLink(name)) report.staleLinksRemoved.push(name);
    } catch (e) {
      report.errors.push(`stale link ${name} could not be removed: ${(e as Error).message}`);
    }
  }
  return report;
}

export interface DockerRebuildReport {
  /** Docker answered (false: nothing could be rebuilt; try again later). */
  dockerRead: boolean;
  /** Names of the networks recorded again. */
  networks: string[];
  /** Endpoints recorded again: `<container> <address>`. */
  endpoints: string[];
  errors: string[];
  /** Records Docker does not have, removed (Docker could be read). */
  pruned?: PruneReport;
}

/**
 * Records younger than this are never taken for stale: Docker stores a network only after CreateNetwork returns, and
 * lists an endpoint only once it has joined its container.
 */
export const PRUNE_GRACE_MS = 60_000;

/**
 * A network Docker no longer lists may be one `docker network rm` is removing: dockerd hides it from its list before it
 * calls DeleteNetwork. Pruned then, its removal reached the controller as this host's loss only (the cluster network
 * stays, so the replica reconcile made it again) and DeleteNetwork found no record (seen in the UML lab: the next
 * network on that parent was refused). The periodic check therefore prunes a network only when Docker has not listed
 * it for this long, by which time DeleteNetwork has removed it properly.
 */
export const PRUNE_CONFIRM_MS = 10_000;

/** State of the periodic check: when each network was first seen missing from Docker. */
export interface PruneConfirm {
  missingSince: Map<string, number>;
  /** Default PRUNE_CONFIRM_MS. */
  confirmMs?: number;
  now?: () => number;
}

export interface PruneReport {
  /** Networks whose records were removed: `<id12> (parent <link>)`. */
  networks: string[];
  /** Endpoints whose records were removed: `<id12> <address>`. */
  endpoints: string[];
  /** Links underlay had made for them, deleted (parents, endpoint links left in this namespace). */
  links: string[];
  errors: string[];
  /** The removed networks' ids, pools and their endpoints' allocations (to tell the controller). */
  removed: { id: string; poolIds: string[]; allocs: AllocInfo[] }[];
}

/** One line for the agent's log, or undefined when nothing was removed. */
export function pruneSummary(r: PruneReport): string | undefined {
  if (!r.networks.length && !r.endpoints.length) return undefined;
  return (
    `removed records Docker does not have: ${r.networks.length} networks (${r.networks.join(', ') || '-'}) and ${r.endpoints.length} endpoints (${r.endpoints.join(', ') || '-'})` +
    (r.links.length ? `; deleted links ${r.links.join(', ')}` : '')
  );
}

/**
 * Removes every record of a network or endpoint that Docker, read in full (`docker.complete`), does not have: the
 * store never decides alone what exists on this host. A network goes with its endpoints' records, the endpoint links
 * left in this namespace and the parent underlay created for it (when no other network here uses it). Records this
 * process wrote less than `graceMs` ago are left (a network or endpoint Docker is still creating).
 */
export async function pruneStale(
  ctx: { store: LocalStore; lock: KeyedMutex; links: LinkOps },
  docker: DockerUnderlayState,
  graceMs = PRUNE_GRACE_MS,
  confirm?: PruneConfirm,
): Promise<PruneReport> {
  const out: PruneReport = { networks: [], endpoints: [], links: [], errors: [], removed: [] };
  if (!docker.complete) return out;
  const now = confirm?.now?.() ?? Date.now();
  if (confirm) for (const id of [...confirm.missingSince.keys()]) if (!ctx.store.networks.has(id) || docker.networks.has(id)) confirm.missingSince.delete(id);
  const { store, links } = ctx;
  const dropEndpoint = async (ep: EndpointRecord): Promise<void> => {
    if (ep.srcName) {
      try {
        if (await links.deleteLink(ep.srcName)) out.links.push(ep.srcName);
      } catch (e) {
        out.errors.push(`link ${ep.srcName} of endpoint ${ep.id.slice(0, 12)} could not be removed: ${(e as Error).message}`);
      }
    }
    store.deleteEndpoint(ep.id);
    out.endpoints.push(`${ep.id.slice(0, 12)} ${ep.address ?? ep.addressV6 ?? ''}`.trim());
  };
  for (const rec of [...store.networks.values()]) {
    if (docker.networks.has(rec.id)) continue;
    if (confirm) {
      const since = confirm.missingSince.get(rec.id);
      if (since === undefined) confirm.missingSince.set(rec.id, now);
      if (since === undefined || now - since < (confirm.confirmMs ?? PRUNE_CONFIRM_MS)) continue;
      confirm.missingSince.delete(rec.id);
    }
    await ctx.lock.run(rec.id, async () => {
      const cur = store.networks.get(rec.id);
      if (!cur || store.writtenWithin(cur.id, graceMs)) return;
      // Docker will never release the addresses of a network it does not have: they go back with the network.
      const allocs: AllocInfo[] = [];
      try {
        for (const ep of [...store.endpoints.values()]) {
          if (ep.networkId !== cur.id) continue;
          for (const a of [ep.address, ep.addressV6]) {
            const alloc = a ? store.findAlloc(a.split('/')[0]!, cur.poolIds) : undefined;
            if (alloc) allocs.push(alloc);
          }
          await dropEndpoint(ep);
        }
        store.deleteNetwork(cur.id);
      } catch (e) {
        out.errors.push(`the record of network ${cur.id.slice(0, 12)} could not be removed: ${(e as Error).message}`);
        return;
      }
      out.networks.push(`${cur.id.slice(0, 12)} (parent ${cur.parent})`);
      out.removed.push({ id: cur.id, poolIds: [...cur.poolIds], allocs });
      if (!cur.createdParent || [...store.networks.values()].some((n) => n.parent === cur.parent)) return;
      try {
        if (await links.getLink(cur.parent)) {
          await removeCreatedParent(links, cur.parent);
          if (!(await links.getLink(cur.parent))) out.links.push(cur.parent);
        }
      } catch (e) {
        out.errors.push(`parent ${cur.parent} of network ${cur.id.slice(0, 12)} could not be removed: ${(e as Error).message}`);
      }
    });
  }
  for (const ep of [...store.endpoints.values()]) {
    const net = docker.networks.get(ep.networkId);
    if (net?.endpoints.some((d) => d.endpointId === ep.id)) continue;
    // Its network waits for confirmation: the endpoint goes with it (its address then goes back with the network's).
    if (!net && confirm?.missingSince.has(ep.networkId)) continue;
    await ctx.lock.run(ep.networkId, async () => {
      const cur = store.endpoints.get(ep.id);
      if (!cur || store.writtenWithin(cur.id, graceMs)) return;
      try {
        await dropEndpoint(cur);
      } catch (e) {
        out.errors.push(`the record of endpoint ${cur.id.slice(0, 12)} could not be removed: ${(e as Error).message}`);
      }
    });
  }
  return out;
}

/**
 * Tells the controller that this host no longer has the networks `pruneStale` removed (the cluster's network, if any,
 * stays: the replica reconcile creates it here again), gives back their endpoints' addresses, and the pools nothing
 * else here uses (with the addresses held there for a restart: address-holds.ts). The controller refuses a network
 * another host owns (a state directory shared or copied from there): that is only logged, and nothing is given back.
 * Endpoints pruned alone (their network is still Docker's) keep their addresses: Docker releases those itself (and
 * they are held for the container's restart), or the controller's leak collector reclaims them.
 */
export async function forgetPruned(
  ctx: {
    store: LocalStore;
    controller: Pick<ControllerClient, 'networkRemove' | 'releasePool' | 'releaseAddress'>;
    holds?: Pick<AddressHolds, 'releasePool'>;
    memory?: Pick<DriverMemory, 'poolRequestedAt'>;
  },
  removed: PruneReport['removed'],
  now: () => number = Date.now,
): Promise<string[]> {
  /** Docker asked for the pool a moment ago: a network being created (its record comes at CreateNetwork) uses it. */
  const requestedLately = (poolId: string): boolean => now() - (ctx.memory?.poolRequestedAt.get(poolId) ?? -Infinity) < PRUNE_GRACE_MS;
  const errors: string[] = [];
  for (const n of removed) {
    try {
      await ctx.controller.networkRemove({ networkId: n.id, cluster: false }, { deadlineMs: 10_000 });
    } catch (e) {
      errors.push(`the controller was not told that network ${n.id.slice(0, 12)} is gone from this host: ${(e as Error).message}`);
      continue;
    }
    for (const a of n.allocs) {
      try {
        await ctx.controller.releaseAddress({ poolId: a.poolId, address: a.address, allocSeq: a.seq });
        // Unless the address was allocated here again meanwhile (another seq).
        if (ctx.store.allocSeq(a.poolId, a.address) === a.seq) ctx.store.setAlloc(a.poolId, a.address, undefined);
      } catch (e) {
        errors.push(`address ${a.address} of network ${n.id.slice(0, 12)} could not be released: ${(e as Error).message} (the leak collector reclaims it)`);
      }
    }
    for (const poolId of n.poolIds) {
      if (ctx.store.poolInUse(poolId) || requestedLately(poolId)) continue;
      try {
        await ctx.holds?.releasePool(poolId);
        // Checked again right before the release is sent (nothing awaited in between).
        if (ctx.store.poolInUse(poolId) || requestedLately(poolId)) continue;
        await ctx.controller.releasePool({ poolId });
      } catch (e) {
        errors.push(`pool ${poolId} of network ${n.id.slice(0, 12)} could not be released: ${(e as Error).message}`);
      }
    }
  }
  return errors;
}

/** The network record of a Docker network, as CreateNetwork would have made it. */
export function networkRecordFromDocker(ctx: Pick<RebuildDeps, 'parentMap' | 'store'>, info: DockerNetworkInfo): NetworkRecord {
  const n = info.network;
  const parsed = parseNetworkOptions(n.Options ?? {}, { internal: n.Internal, ipv6: n.EnableIPv6 });
  const o = parsed.parent ? { ...parsed, parent: mapParent(ctx.parentMap ?? {}, parsed.parent) } : parsed;
  const parent = o.parent ?? dummyParentName(o.type, n.Id);
  // A dummy is always underlay's. Whether underlay made an 802.1q parent is not in Docker: only when another
  // network of ours says so; otherwise it is left in place when the network goes (never delete a user's link).
  const createdParent = !o.parent || [...ctx.store.networks.values()].some((x) => x.parent === parent && x.createdParent);
  const space = n.IPAM?.Options?.[SPACE_OPTION] || plugin.LOCAL_ADDRESS_SPACE;
  const ipv4: NetworkRecord['ipv4'] = [];
  const ipv6: NetworkRecord['ipv6'] = [];
  const poolIds: string[] = [];
  for (const c of n.IPAM?.Config ?? []) {
    if (!c.Subnet) continue;
    const cidr = parseCidr(c.Subnet);
    // A point-to-point subnet has no gateway unless --gateway reserved one, which only the controller knows: Docker
    // shows the address its gateway request got either way (rebuildFromController puts a reserved one back).
    const gateway = c.Gateway && !isPointToPoint(cidr) ? `${c.Gateway.split('/')[0]}/${cidr.prefix}` : undefined;
    (cidr.family === 6 ? ipv6 : ipv4).push({ pool: c.Subnet, ...(gateway ? { gateway } : {}) });
    poolIds.push(poolIdOf(space, formatCidr(cidr)));
  }
  return {
    id: n.Id,
    type: o.type,
    requestedParent: o.parent,
    parent,
    createdParent,
    macvlanMode: o.macvlanMode,
    ipvlanMode: o.ipvlanMode,
    ipvlanFlag: o.ipvlanFlag,
    internal: o.internal || !o.parent,
    ipv4,
    ipv6,
    poolIds,
    ...(o.hostAccess ? { hostAccess: true } : {}),
  };
}

/** Records every underlay network and container endpoint Docker holds that the store does not know. */
export async function rebuildFromDocker(ctx: Omit<RebuildDeps, 'node' | 'controller'>, graceMs = PRUNE_GRACE_MS): Promise<DockerRebuildReport> {
  const out: DockerRebuildReport = { dockerRead: false, networks: [], endpoints: [], errors: [] };
  // The store's networks are inspected by id too: one Docker lists under another driver name is still Docker's.
  const docker = await readDockerUnderlay(ctx.docker, ctx.store.networks.keys(), ctx.driverName);
  out.errors.push(...docker.errors);
  if (!docker.complete && docker.networks.size === 0) return out;
  out.dockerRead = docker.complete;
  for (const info of docker.networks.values()) {
    const id = info.network.Id;
    // Serialised with Docker's calls about the same network.
    await ctx.lock.run(id, async () => {
      if (!ctx.store.networks.has(id)) {
        try {
          ctx.store.putNetwork(networkRecordFromDocker(ctx, info));
          out.networks.push(info.network.Name);
        } catch (e) {
          out.errors.push(`network ${info.network.Name} (${id.slice(0, 12)}) could not be rebuilt from Docker: ${(e as Error).message}`);
          return;
        }
      }
      for (const ep of info.endpoints) {
        if (ctx.store.endpoints.has(ep.endpointId)) continue;
        const rec: EndpointRecord = {
          id: ep.endpointId,
          networkId: id,
          ...(ep.address ? { address: ep.address } : {}),
          ...(ep.addressV6 ? { addressV6: ep.addressV6 } : {}),
          ...(ep.mac ? { mac: ep.mac } : {}),
          // Docker lists only joined endpoints: the link was made at Join and is in the container now.
          srcName: endpointLinkName(ep.endpointId),
        };
        ctx.store.putEndpoint(rec);
        out.endpoints.push(`${ep.container ?? ep.containerId.slice(0, 12)} ${ep.address ?? ep.addressV6 ?? ''}`.trim());
      }
    });
  }
  if (ctx.links) out.pruned = await pruneStale({ store: ctx.store, lock: ctx.lock, links: ctx.links }, docker, graceMs);
  return out;
}

export interface ControllerRebuildReport {
  /** Networks whose pools were corrected from the controller's record. */
  poolsFixed: string[];
  /** Point-to-point subnets whose gateway was corrected from the controller's reservations: `<id12> <subnet>`. */
  gatewaysFixed: string[];
  /** Allocations of this node added to the store. */
  allocations: number;
  /** Endpoint addresses bound now (the controller had them unbound). */
  bound: string[];
  /** Endpoint addresses the cluster had released while their endpoints held them, allocated to this node again and bound. */
  claimed: string[];
  errors: string[];
}

/** The allocations `node` holds in the cluster state. */
export function allocationsOf(state: ClusterState, node: string): AllocInfo[] {
  const out: AllocInfo[] = [];
  for (const p of state.pools.values()) {
    for (const [v, a] of p.allocs) if (a.node === node) out.push({ poolId: p.poolId, address: formatValue(p.cidr.family, v), seq: a.seq });
  }
  return out;
}

/**
 * The gateway of a point-to-point subnet as the controller holds it: the address --gateway reserved, undefined when
 * none was (Docker's gateway request was answered unreserved), false when not a point-to-point subnet or its pool is
 * unknown to the controller.
 */
function p2pGateway(state: ClusterState, poolIds: readonly string[], subnet: string): string | undefined | false {
  const cidr = parseCidr(subnet);
  if (!isPointToPoint(cidr)) return false;
  const pool = poolIds.map((id) => state.pools.get(id)).find((p) => p && p.cidr.family === cidr.family && p.cidr.network === cidr.network && p.cidr.prefix === cidr.prefix);
  if (!pool) return false;
  const gw = [...pool.allocs].find(([, a]) => a.kind === 'gateway');
  return gw ? `${formatValue(cidr.family, gw[0])}/${cidr.prefix}` : undefined;
}

/** An endpoint's addresses (IPv4 and IPv6, when it has them) as text without the prefix length, and parsed. */
export function endpointAddresses(ep: Pick<EndpointRecord, 'address' | 'addressV6'>): { address: string; a: Addr }[] {
  const out: { address: string; a: Addr }[] = [];
  for (const cidr of [ep.address, ep.addressV6]) {
    const address = cidr?.split('/')[0];
    const a = address ? tryParseAddr(address) : undefined;
    if (address && a) out.push({ address, a });
  }
  return out;
}

/** Completes the store from the controller's state (the cluster view, caught up). */
export async function rebuildFromController(ctx: Omit<RebuildDeps, 'docker' | 'parentMap'>, state: ClusterState): Promise<ControllerRebuildReport> {
  const out: ControllerRebuildReport = { poolsFixed: [], gatewaysFixed: [], allocations: 0, bound: [], claimed: [], errors: [] };
  for (const rec of [...ctx.store.networks.values()]) {
    const info = state.networks.get(rec.id);
    if (!info || info.node !== ctx.node || info.poolIds.length === 0 || info.poolIds.join() === rec.poolIds.join()) continue;
    await ctx.lock.run(rec.id, async () => {
      const cur = ctx.store.networks.get(rec.id);
      if (cur) ctx.store.putNetwork({ ...cur, poolIds: [...info.poolIds] });
    });
    out.poolsFixed.push(rec.id.slice(0, 12));
  }
  for (const rec of [...ctx.store.networks.values()]) {
    await ctx.lock.run(rec.id, async () => {
      const cur = ctx.store.networks.get(rec.id);
      if (!cur) return;
      const fixed: string[] = [];
      const fix = (list: NetworkRecord['ipv4']) =>
        list.map((d) => {
          const gateway = p2pGateway(state, cur.poolIds, d.pool);
          if (gateway === false || gateway === d.gateway) return d;
          fixed.push(d.pool);
          return { pool: d.pool, ...(gateway ? { gateway } : {}) };
        });
      const next = { ...cur, ipv4: fix(cur.ipv4), ipv6: fix(cur.ipv6) };
      if (fixed.length === 0) return;
      ctx.store.putNetwork(next);
      for (const f of fixed) out.gatewaysFixed.push(`${cur.id.slice(0, 12)} ${f}`);
    });
  }
  out.allocations = ctx.store.addAllocs(allocationsOf(state, ctx.node));
  // An endpoint whose address the controller has unbound (made while the pools were unknown) is bound now, so the
  // collector's "never bound" rule cannot take it.
  for (const ep of [...ctx.store.endpoints.values()]) {
    const net = ctx.store.networks.get(ep.networkId);
    if (!net) continue;
    for (const { address, a } of endpointAddresses(ep)) {
      const held = net.poolIds.map((poolId) => ({ poolId, alloc: state.pools.get(poolId)?.allocs.get(a.value) })).find((x) => x.alloc);
      // None: released while this endpoint holds it (claimReleased, below, takes a running container's back).
      if (!held?.alloc) continue;
      if (held.alloc.node !== ctx.node) {
        out.errors.push(`endpoint ${ep.id.slice(0, 12)} holds ${address}, which the controller has for node ${held.alloc.node}`);
        continue;
      }
      if (held.alloc.endpointId) continue;
      try {
        await ctx.controller.bindEndpoint({ poolId: held.poolId, address, allocSeq: held.alloc.seq, endpointId: ep.id, networkId: ep.networkId });
        out.bound.push(address);
      } catch (e) {
        out.errors.push(`endpoint ${ep.id.slice(0, 12)}: ${address} could not be bound: ${(e as Error).message}`);
      }
    }
  }
  const c = await claimReleased(ctx, state);
  out.claimed.push(...c.claimed);
  out.errors.push(...c.errors);
  return out;
}

/**
 * Takes back, for its running container, an endpoint address the cluster released while the endpoint held it (the
 * collector took this node for gone after --node-expired-ms unheard): one claim at the controller (`bindEndpoint` with
 * `claim`), which allocates the address to this node and binds it if it is free, binds it if this node holds it unbound
 * (this view may lag the controller), and refuses it when another node or another endpoint has it (then two containers
 * may have the address: said in `errors`). Only endpoints a container joined (a link name recorded at Join or rebuilt
 * from Docker; a CreateEndpoint that failed leaves none), each under its network's lock, as Docker's calls: an endpoint
 * deleted meanwhile claims nothing. Idempotent; the agent runs it at start (rebuildFromController) and whenever its view
 * sees an AddressReleased of this node for an address one of its endpoints holds, or resyncs.
 */
export async function claimReleased(ctx: Pick<RebuildDeps, 'node' | 'store' | 'lock' | 'controller'>, state: ClusterState): Promise<{ claimed: string[]; errors: string[] }> {
  const out = { claimed: [] as string[], errors: [] as string[] };
  for (const ep of [...ctx.store.endpoints.values()]) {
    const net = ctx.store.networks.get(ep.networkId);
    if (!net || !ep.srcName) continue;
    for (const { address, a } of endpointAddresses(ep)) {
      const pools = net.poolIds.map((id) => state.pools.get(id)).filter((p): p is Pool => p !== undefined && p.cidr.family === a.family && contains(p.cidr, a));
      const alloc = pools.map((p) => p.allocs.get(a.value)).find((x) => x);
      if (alloc) {
        // Given to another container of this host since (before this endpoint's claim): both have it now.
        if (alloc.node === ctx.node && alloc.kind === 'endpoint' && alloc.endpointId && alloc.endpointId !== ep.id && ctx.store.endpoints.has(alloc.endpointId)) {
          out.errors.push(`endpoint ${ep.id.slice(0, 12)} holds ${address}, which the controller has bound to endpoint ${alloc.endpointId.slice(0, 12)} of this host: two containers here have this address (see \`underlay ipam check\`)`);
        }
        continue;
      }
      const pool = pools[0];
      if (!pool) {
        out.errors.push(`endpoint ${ep.id.slice(0, 12)} holds ${address}, which the controller has no allocation for in pools ${net.poolIds.join(', ')}`);
        continue;
      }
      try {
        await ctx.lock.run(ep.networkId, async () => {
          if (!ctx.store.endpoints.has(ep.id)) return;
          const text = formatValue(a.family, a.value);
          const r = await ctx.controller.bindEndpoint({ poolId: pool.poolId, address: text, endpointId: ep.id, networkId: ep.networkId, claim: true });
          if (!r.bound) {
            out.errors.push(`endpoint ${ep.id.slice(0, 12)} holds ${address}, which the cluster released; the controller did not take the claim (a controller older than this agent?)`);
            return;
          }
          if (r.allocSeq !== undefined) ctx.store.setAlloc(pool.poolId, text, r.allocSeq);
          if (r.claimed) out.claimed.push(address);
        });
      } catch (e) {
        out.errors.push(`endpoint ${ep.id.slice(0, 12)} holds ${address}, which the cluster released and could not give back: ${(e as Error).message}${hasErrorCode(e, 'conflict') ? ' (two containers may have this address now: see `underlay ipam check`)' : ''}`);
      }
    }
  }
  return out;
}

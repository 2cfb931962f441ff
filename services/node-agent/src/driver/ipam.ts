/** IpamDriver: every call goes to the controller, which owns the cluster-wide allocation state. */
import { ConflictError, formatCidr, isPointToPoint, parseCidr, plugin, poolIdOf } from '@underlay/core';
import { randomUUID } from 'node:crypto';
import type { EndpointDeps, IpamDeps } from './context.js';
import { withPoolPrefix } from './address-holds.js';

export function capabilities() {
  // No RequiresMACAddress: Docker would then set a MAC on every endpoint's interface, which ipvlan cannot take.
  // Repeats are tied together by a request id the agent makes per Docker call instead (see requestAddress).
  return { RequiresMACAddress: false, RequiresRequestReplay: false };
}

export function defaultAddressSpaces() {
  return { LocalDefaultAddressSpace: plugin.LOCAL_ADDRESS_SPACE, GlobalDefaultAddressSpace: plugin.GLOBAL_ADDRESS_SPACE };
}

export async function requestPool(ctx: IpamDeps, raw: unknown) {
  const r = plugin.RequestPoolRequest.parse(raw);
  const space = r.AddressSpace || plugin.LOCAL_ADDRESS_SPACE;
  const options = r.Options ?? {};
  try {
    if (r.Pool) ctx.memory.poolRequestedAt.set(poolIdOf(space, formatCidr(parseCidr(r.Pool))), Date.now());
  } catch {
    // Not a subnet: the controller refuses it.
  }
  const res = await ctx.controller.requestPool({
    space,
    pool: r.Pool,
    subPool: r.SubPool,
    options,
    v6: r.V6,
    requestId: randomUUID(),
  });
  ctx.memory.recentPools.set(r.Pool, res.poolId);
  ctx.sticky?.notePool(res.poolId, options);
  return { PoolID: res.poolId, Pool: res.pool, Data: res.data };
}

export async function releasePool(ctx: IpamDeps, raw: unknown) {
  const r = plugin.ReleasePoolRequest.parse(raw);
  await ctx.holds?.releasePool(r.PoolID);
  await ctx.controller.releasePool({ poolId: r.PoolID });
  return {};
}

export async function requestAddress(ctx: IpamDeps, raw: unknown) {
  const r = plugin.RequestAddressRequest.parse(raw);
  const options = r.Options ?? {};
  // Docker requests --aux-address reservations while creating the network, and an endpoint's addresses only once
  // the network exists here; both come with no options.
  const forEndpoint = options['RequestAddressType'] === undefined && ctx.store.poolInUse(r.PoolID);
  const kind = r.Address && options['RequestAddressType'] === undefined ? (forEndpoint ? 'endpoint' : 'aux') : undefined;
  // A sticky pool's endpoint: which container asks (sticky.ts); undefined when it cannot be told.
  const identity = forEndpoint && ctx.sticky?.isSticky(r.PoolID) ? await ctx.sticky.resolve(r.PoolID, networksOfPool(ctx, r.PoolID)) : undefined;
  const handOut = (address: string, cidr: string) => {
    if (identity) ctx.sticky!.remember(r.PoolID, address, identity);
    return { Address: cidr, Data: {} };
  };
  // An endpoint asking for any address: one this host's containers just gave back comes first (address-holds.ts),
  // on a sticky pool the one held for this container's name.
  if (!r.Address && forEndpoint) {
    const held = ctx.holds?.take(r.PoolID, identity?.container);
    if (held) return handOut(held.address, held.cidr);
  }
  if (kind === 'endpoint') {
    // An endpoint naming its address (--ip): released at once when it goes (its container names it again on a
    // restart). An address held here (a restarting container's whose --ip an earlier agent process saw, or another
    // container's) is this host's: handed out as it is, unless it is held for another container's name.
    const owner = ctx.holds?.ownerOf(r.PoolID, r.Address!);
    if (owner !== undefined && owner !== identity?.container) {
      throw new ConflictError(`address ${r.Address} is held for container "${owner}" (--ipam-opt sticky=true) until it is re-created or its hold ends (--sticky-hold-ms); use another address`);
    }
    const held = ctx.holds?.forget(r.PoolID, r.Address!);
    if (held) {
      ctx.memory.namedAddresses.add(`${r.PoolID}|${r.Address}`);
      return handOut(held.address, held.cidr);
    }
  }
  // One id per Docker call, reused by the client's retries: a retry gets the same allocation.
  const res = await ctx.controller.requestAddress({ poolId: r.PoolID, address: r.Address, options, requestId: randomUUID(), kind });
  if (res.reserved === false) {
    // A point-to-point subnet's gateway: Docker needs an address, but nobody holds it and the network gets no gateway.
    ctx.memory.unreservedGateways.set(r.PoolID, res.address);
    return { Address: res.address, Data: {} };
  }
  if (options['RequestAddressType'] !== undefined) ctx.memory.unreservedGateways.delete(r.PoolID);
  if (kind === 'endpoint') ctx.memory.namedAddresses.add(`${r.PoolID}|${r.Address}`);
  ctx.store.setAlloc(r.PoolID, res.address.split('/')[0]!, res.allocSeq);
  return handOut(res.address.split('/')[0]!, res.address);
}

/** The ids of this host's networks using the pool. */
function networksOfPool(ctx: IpamDeps, poolId: string): string[] {
  return [...ctx.store.networks.values()].filter((n) => n.poolIds.includes(poolId)).map((n) => n.id);
}

/** The pool id (`<space>/<subnet>`) names an IPv4 /31 or IPv6 /127. */
function isPointToPointPool(poolId: string): boolean {
  try {
    return isPointToPoint(parseCidr(poolId.split('/').slice(-2).join('/')));
  } catch {
    return false;
  }
}

export async function releaseAddress(ctx: IpamDeps, raw: unknown) {
  const r = plugin.ReleaseAddressRequest.parse(raw);
  const allocSeq = ctx.store.allocSeq(r.PoolID, r.Address);
  // A point-to-point pool's gateway was reserved for nobody (no --gateway) and may be a container's address, here or on
  // another host: Docker releases it at network removal with nothing to tell it from that address. Every endpoint
  // address this host holds is in the store with its seq (rebuilt from the controller after a loss); an address
  // without one is that gateway (or a leak, which the controller's collector reclaims).
  if (allocSeq === undefined && isPointToPointPool(r.PoolID)) return {};
  // An endpoint's address (its network is still here): held a while for the container's restart, unless the container
  // named it (--ip: it names it again).
  const named = ctx.memory.namedAddresses.delete(`${r.PoolID}|${r.Address}`);
  // A sticky endpoint's address (its container was told): held for that container's name (--sticky-hold-ms).
  const owner = ctx.sticky?.forget(r.PoolID, r.Address)?.container;
  const sticky = owner !== undefined && !!ctx.holds?.stickyEnabled;
  const cidr = (sticky || ctx.holds?.enabled) && allocSeq !== undefined && !named ? endpointCidr(ctx, r.PoolID, r.Address) : undefined;
  if (cidr && allocSeq !== undefined) {
    ctx.holds!.hold({ poolId: r.PoolID, address: r.Address, cidr, allocSeq, ...(sticky ? { owner } : {}) });
    return {};
  }
  // Released again while held: a point-to-point network's gateway answer was a container's former address, and the
  // network went. It goes back now, and is no longer held.
  ctx.holds?.forget(r.PoolID, r.Address);
  await releaseHeld(ctx, { poolId: r.PoolID, address: r.Address, allocSeq });
  return {};
}

/** Gives an address back to the cluster and forgets it here. */
export async function releaseHeld(ctx: Pick<IpamDeps, 'controller' | 'store'>, h: { poolId: string; address: string; allocSeq: number | undefined }): Promise<void> {
  await ctx.controller.releaseAddress({ poolId: h.poolId, address: h.address, allocSeq: h.allocSeq });
  ctx.store.setAlloc(h.poolId, h.address, undefined);
}

/** The address with its network's prefix when a network of this host uses the pool (an endpoint's address). */
function endpointCidr(ctx: IpamDeps, poolId: string, address: string): string | undefined {
  for (const n of ctx.store.networks.values()) {
    if (!n.poolIds.includes(poolId)) continue;
    const cidr = withPoolPrefix(address, [...n.ipv4, ...n.ipv6].map((p) => p.pool));
    if (cidr) return cidr;
  }
  return undefined;
}

/**
 * CreateEndpoint: tell the controller which endpoint holds each address, so it is never taken for a leak. An address
 * the cluster no longer has as this allocation (released before its endpoint came: the leak collector after
 * --unbound-grace-ms, or an operator's `underlay ipam release`; perhaps handed to another host since) fails the
 * endpoint: a container must not start with an address the cluster may give to another.
 */
export async function bindEndpoint(ctx: Pick<EndpointDeps, 'controller' | 'store'>, networkId: string, endpointId: string, cidrs: (string | undefined)[], poolIds: readonly string[]): Promise<void> {
  for (const cidr of cidrs) {
    if (!cidr) continue;
    const address = cidr.split('/')[0]!;
    const a = ctx.store.findAlloc(address, poolIds);
    if (!a) continue;
    const r = await ctx.controller.bindEndpoint({ poolId: a.poolId, address, allocSeq: a.seq, endpointId, networkId });
    if (!r.bound) {
      throw new ConflictError(
        `address ${address} of pool ${a.poolId} is no longer this host's: the cluster released it before the endpoint was created (the leak collector, after --unbound-grace-ms without an endpoint, or \`underlay ipam release\`); start the container again for another address`,
      );
    }
  }
}

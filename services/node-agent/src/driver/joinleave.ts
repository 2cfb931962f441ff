/** NetworkDriver.Join / Leave (libnetwork: macvlan_joinleave.go, ipvlan_joinleave.go). */
import { NotFoundError, contains, endpointLinkName, isPointToPoint, parseAddrWithPrefix, parseCidr, plugin } from '@underlay/core';
import type { JoinDeps } from './context.js';
import { networkNotFoundText } from './network-names.js';
import { createEndpointLink } from './links.js';
import type { NetworkRecord } from './store.js';

/** The gateway of the subnet holding `address` (CIDR), as a bare IP. */
function gatewayFor(subnets: NetworkRecord['ipv4'], address: string | undefined): string | undefined {
  if (!address) return undefined;
  const { addr, prefix } = parseAddrWithPrefix(address);
  for (const s of subnets) {
    if (!s.gateway) continue;
    const pool = parseCidr(s.pool);
    if (pool.prefix === prefix && contains(pool, addr)) {
      return s.gateway.split('/')[0];
    }
  }
  return undefined;
}

export async function join(ctx: JoinDeps, raw: unknown): Promise<plugin.JoinResponse> {
  const req = plugin.JoinRequest.parse(raw);
  const res = await joinLocked(ctx, req);
  startAnnouncement(ctx, req);
  return res;
}

/**
 * After Join, in the background: tell the network the endpoint's MAC (announce.ts) once Docker has the link up in
 * the container's namespace. macvlan only (an ipvlan link has its parent's MAC, which cannot be set on it).
 */
function startAnnouncement(ctx: JoinDeps, req: plugin.JoinRequest): void {
  if (!ctx.announcer || !req.SandboxKey) return;
  const net = ctx.store.networks.get(req.NetworkID);
  const ep = ctx.store.endpoints.get(req.EndpointID);
  if (!net || !ep || net.type !== 'macvlan' || !ep.mac) return;
  void ctx.announcer.announce({
    endpointId: ep.id,
    networkId: net.id,
    sandboxKey: req.SandboxKey,
    mac: ep.mac.toLowerCase(),
    address: ep.address?.split('/')[0],
    addressV6: ep.addressV6?.split('/')[0],
  });
}

function joinLocked(ctx: JoinDeps, req: plugin.JoinRequest): Promise<plugin.JoinResponse> {
  return ctx.lock.run(req.NetworkID, async () => {
    const net = ctx.store.networks.get(req.NetworkID);
    if (!net) throw new NotFoundError(await networkNotFoundText(ctx, req.NetworkID));
    const ep = ctx.store.endpoints.get(req.EndpointID);
    if (!ep) throw new NotFoundError(`endpoint id ${JSON.stringify(req.EndpointID)} not found`);
    const name = endpointLinkName(ep.id);
    await createEndpointLink(ctx.links, {
      name,
      parent: net.parent,
      type: net.type,
      macvlanMode: net.macvlanMode,
      ipvlanMode: net.ipvlanMode,
      ipvlanFlag: net.ipvlanFlag,
      mac: net.type === 'macvlan' ? ep.mac : undefined,
    });
    ctx.store.putEndpoint({ ...ep, srcName: name });
    const res: plugin.JoinResponse = { InterfaceName: { SrcName: name, DstPrefix: 'eth' } };
    if (net.internal) return res;
    if (net.type === 'ipvlan' && net.ipvlanMode !== 'l2') {
      // L3: the host routes; the container gets `default dev eth0` and no gateway.
      res.StaticRoutes = [{ Destination: '0.0.0.0/0', RouteType: 1 }];
      if (ep.addressV6) res.StaticRoutes.push({ Destination: '::/0', RouteType: 1 });
      res.DisableGatewayService = true;
      return res;
    }
    const gw4 = gatewayFor(net.ipv4, ep.address);
    const gw6 = gatewayFor(net.ipv6, ep.addressV6);
    if (gw4) res.Gateway = gw4;
    if (gw6) res.GatewayIPv6 = gw6;
    // A point-to-point subnet without --gateway: no default route, and no docker_gwbridge either.
    if (!gw4 && !gw6 && [ep.address, ep.addressV6].some((a) => a && isPointToPoint(parseCidr(a)))) res.DisableGatewayService = true;
    return res;
  });
}

export async function leave(ctx: JoinDeps, raw: unknown): Promise<Record<string, never>> {
  const req = plugin.EndpointRequest.parse(raw);
  if (!ctx.store.endpoints.has(req.EndpointID)) throw new NotFoundError(`endpoint id ${JSON.stringify(req.EndpointID)} not found`);
  ctx.announcer?.cancel(req.EndpointID);
  return {};
}

/** NetworkDriver.CreateEndpoint / DeleteEndpoint / EndpointOperInfo (libnetwork: macvlan_endpoint.go). */
import { InvalidArgumentError, NotFoundError, macFromIPv4, parseAddrWithPrefix, plugin } from '@underlay/core';
import type { EndpointDeps } from './context.js';
import { networkNotFoundText } from './network-names.js';
import { bindEndpoint } from './ipam.js';
import { stickyMac } from './sticky.js';

export async function createEndpoint(ctx: EndpointDeps, raw: unknown): Promise<{ Interface?: { MacAddress: string } }> {
  const req = plugin.CreateEndpointRequest.parse(raw);
  return ctx.lock.run(req.NetworkID, async () => {
    const net = ctx.store.networks.get(req.NetworkID);
    if (!net) throw new NotFoundError(await networkNotFoundText(ctx, req.NetworkID));
    const iface = req.Interface ?? { Address: '', AddressIPv6: '', MacAddress: '' };
    if (!iface.Address) throw new InvalidArgumentError('create endpoint was not passed an IP address');
    // ipvlan slaves share the parent's MAC (the kernel refuses another).
    if (net.type === 'ipvlan' && iface.MacAddress) throw new InvalidArgumentError('ipvlan interfaces do not support custom mac address assignment');
    let mac = iface.MacAddress || undefined;
    let answer: { Interface?: { MacAddress: string } } = {};
    if (!mac && net.type === 'macvlan') {
      // A sticky endpoint's MAC follows its container's name (sticky.ts); others' follow the address.
      const address = iface.Address.split('/')[0]!;
      const alloc = ctx.store.findAlloc(address, net.poolIds);
      const identity = alloc ? ctx.sticky?.identityOf(alloc.poolId, address) : undefined;
      mac = identity ? stickyMac(identity.network, identity.container) : macFromIPv4(parseAddrWithPrefix(iface.Address).addr);
      answer = { Interface: { MacAddress: mac } };
    }
    ctx.store.putEndpoint({
      id: req.EndpointID,
      networkId: req.NetworkID,
      address: iface.Address,
      addressV6: iface.AddressIPv6 || undefined,
      mac,
    });
    try {
      await bindEndpoint(ctx, req.NetworkID, req.EndpointID, [iface.Address, iface.AddressIPv6], net.poolIds);
    } catch (e) {
      // Docker does not call DeleteEndpoint after a failed CreateEndpoint (libnetwork's createEndpoint only releases the
      // address): the record goes here, or it would hold the address in every report.
      ctx.store.deleteEndpoint(req.EndpointID);
      throw e;
    }
    return answer;
  });
}

export async function deleteEndpoint(ctx: EndpointDeps, raw: unknown): Promise<Record<string, never>> {
  const req = plugin.EndpointRequest.parse(raw);
  return ctx.lock.run(req.NetworkID, async () => {
    const ep = ctx.store.endpoints.get(req.EndpointID);
    if (!ep) return {};
    // After Leave, Docker has moved the link back to the host under its source name.
    if (ep.srcName) await ctx.links.deleteLink(ep.srcName);
    ctx.store.deleteEndpoint(ep.id);
    return {};
  });
}

export async function endpointOperInfo(ctx: EndpointDeps, raw: unknown): Promise<{ Value: Record<string, unknown> }> {
  const req = plugin.EndpointRequest.parse(raw);
  const ep = ctx.store.endpoints.get(req.EndpointID);
  if (!ep) throw new NotFoundError(`endpoint id ${JSON.stringify(req.EndpointID)} not found`);
  return { Value: {} };
}

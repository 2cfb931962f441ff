/**
 * The agent's CreateEndpoint / DeleteEndpoint / EndpointOperInfo and Join / Leave handlers
 * (services/node-agent/src/driver/endpoint.ts, joinleave.ts) against in-memory fakes of the controller client and
 * the kernel's links (test/unit/driver-fakes.ts), with a real LocalStore on a temporary directory.
 */
import { InvalidArgumentError, NotFoundError } from '@underlay/core';
import * as endpoint from '../../services/node-agent/src/driver/endpoint';
import * as ipam from '../../services/node-agent/src/driver/ipam';
import * as joinleave from '../../services/node-agent/src/driver/joinleave';
import type { NetworkRecord } from '../../services/node-agent/src/driver/store';
import { fakeDriver } from './driver-fakes';

const hex64 = (c: string) => c.repeat(64).slice(0, 64);
const NET = hex64('a1');
const EP = hex64('e1');
const LINK = `ul${EP.slice(0, 11)}`;
const POOL = 'underlay/192.0.2.0/24';
const POOL6 = 'underlay/2001:db8::/64';

function net(over: Partial<NetworkRecord> = {}): NetworkRecord {
  return {
    id: NET, type: 'macvlan', requestedParent: 'eth1', parent: 'eth1', createdParent: false, macvlanMode: 'bridge', ipvlanMode: 'l2', ipvlanFlag: 'bridge',
    internal: false, ipv4: [{ pool: '192.0.2.0/24', gateway: '192.0.2.1/24' }], ipv6: [{ pool: '2001:db8::/64', gateway: '2001:db8::1/64' }], poolIds: [POOL, POOL6],
    ...over,
  };
}

const createReq = (iface: Record<string, string> | null, id = EP) => ({ NetworkID: NET, EndpointID: id, Interface: iface, Options: {} });

let f: ReturnType<typeof fakeDriver>;
beforeEach(() => {
  f = fakeDriver({ links: ['eth1'] });
});
afterEach(() => f.cleanup());

describe('CreateEndpoint', () => {
  it('stores the endpoint, answers a MAC made from its IPv4 address, and binds its addresses at the controller', async () => {
    f.ctx.store.putNetwork(net());
    await ipam.requestPool(f.ctx, { Pool: '192.0.2.0/24' });
    await ipam.requestPool(f.ctx, { Pool: '2001:db8::/64', V6: true });
    const { Address } = await ipam.requestAddress(f.ctx, { PoolID: POOL });
    const v6 = await ipam.requestAddress(f.ctx, { PoolID: POOL6 });
    f.controller.calls.length = 0;

    const r = await endpoint.createEndpoint(f.ctx, createReq({ Address, AddressIPv6: v6.Address, MacAddress: '' }));
    expect(Address).toBe('192.0.2.2/24');
    expect(r).toEqual({ Interface: { MacAddress: '02:42:c0:00:02:02' } });
    const rec = { id: EP, networkId: NET, address: '192.0.2.2/24', addressV6: '2001:db8::2/64', mac: '02:42:c0:00:02:02' };
    expect(f.ctx.store.endpoints.get(EP)).toEqual(rec);
    expect(f.reread().endpoints.get(EP)).toEqual(rec);
    expect(f.controller.calls).toEqual([
      { method: 'bindEndpoint', req: { poolId: POOL, address: '192.0.2.2', allocSeq: f.ctx.store.allocSeq(POOL, '192.0.2.2'), endpointId: EP, networkId: NET } },
      { method: 'bindEndpoint', req: { poolId: POOL6, address: '2001:db8::2', allocSeq: f.ctx.store.allocSeq(POOL6, '2001:db8::2'), endpointId: EP, networkId: NET } },
    ]);
    expect(f.controller.alloc(POOL, '192.0.2.2')).toMatchObject({ endpointId: EP, networkId: NET });
    expect(f.controller.alloc(POOL6, '2001:db8::2')).toMatchObject({ endpointId: EP, networkId: NET });
  });

  it("keeps Docker's MAC (answering none), and binds nothing it holds no allocation for", async () => {
    f.ctx.store.putNetwork(net());
    expect(await endpoint.createEndpoint(f.ctx, createReq({ Address: '192.0.2.7/24', AddressIPv6: '', MacAddress: '02:00:00:00:00:07' }))).toEqual({});
    expect(f.ctx.store.endpoints.get(EP)).toEqual({ id: EP, networkId: NET, address: '192.0.2.7/24', mac: '02:00:00:00:00:07' });
    expect(f.controller.calls).toEqual([]);
  });

  it('makes no MAC for ipvlan and refuses one from Docker', async () => {
    f.ctx.store.putNetwork(net({ type: 'ipvlan', ipvlanMode: 'l3' }));
    expect(await endpoint.createEndpoint(f.ctx, createReq({ Address: '192.0.2.7/24', AddressIPv6: '', MacAddress: '' }))).toEqual({});
    expect(f.ctx.store.endpoints.get(EP)!.mac).toBeUndefined();
    await expect(endpoint.createEndpoint(f.ctx, createReq({ Address: '192.0.2.8/24', AddressIPv6: '', MacAddress: '02:00:00:00:00:08' }, hex64('e2')))).rejects.toThrow(
      new InvalidArgumentError('ipvlan interfaces do not support custom mac address assignment'),
    );
    expect(f.ctx.store.endpoints.has(hex64('e2'))).toBe(false);
  });

  it('refuses an unknown network and an endpoint without an address', async () => {
    await expect(endpoint.createEndpoint(f.ctx, createReq({ Address: '192.0.2.7/24', AddressIPv6: '', MacAddress: '' }))).rejects.toThrow(
      new NotFoundError(`network id "${NET}" not found`),
    );
    f.ctx.store.putNetwork(net());
    await expect(endpoint.createEndpoint(f.ctx, createReq(null))).rejects.toThrow('create endpoint was not passed an IP address');
    await expect(endpoint.createEndpoint(f.ctx, createReq({ Address: '', AddressIPv6: '2001:db8::5/64', MacAddress: '' }))).rejects.toThrow('create endpoint was not passed an IP address');
    expect(f.ctx.store.endpoints.size).toBe(0);
  });

  it("fails when the controller cannot bind, and forgets the endpoint (Docker calls no DeleteEndpoint after a failed CreateEndpoint)", async () => {
    f.ctx.store.putNetwork(net());
    await ipam.requestPool(f.ctx, { Pool: '192.0.2.0/24' });
    const { Address } = await ipam.requestAddress(f.ctx, { PoolID: POOL });
    f.controller.failNext('bindEndpoint', new Error('the underlay controller did not answer bindEndpoint'));
    await expect(endpoint.createEndpoint(f.ctx, createReq({ Address, AddressIPv6: '', MacAddress: '' }))).rejects.toThrow('did not answer bindEndpoint');
    expect(f.ctx.store.endpoints.has(EP)).toBe(false);
  });

  it('fails when the cluster released the address before the endpoint came (it may be another host\'s now)', async () => {
    f.ctx.store.putNetwork(net());
    await ipam.requestPool(f.ctx, { Pool: '192.0.2.0/24' });
    const { Address } = await ipam.requestAddress(f.ctx, { PoolID: POOL });
    // The leak collector released it (never bound within --unbound-grace-ms), and it was allocated again since.
    await f.controller.releaseAddress({ poolId: POOL, address: Address.split('/')[0]!, node: 'h1' } as never);
    await f.controller.requestAddress({ poolId: POOL, address: Address.split('/')[0]!, options: {}, kind: 'endpoint' } as never);
    await expect(endpoint.createEndpoint(f.ctx, createReq({ Address, AddressIPv6: '', MacAddress: '' }))).rejects.toMatchObject({
      code: 'conflict',
      message: expect.stringContaining(`address ${Address.split('/')[0]} of pool ${POOL} is no longer this host's: the cluster released it before the endpoint was created`),
    });
    expect(f.ctx.store.endpoints.has(EP)).toBe(false);
  });
});

describe('DeleteEndpoint / EndpointOperInfo', () => {
  beforeEach(() => {
    f.ctx.store.putNetwork(net());
  });

  it('deletes the host-side link after Leave and forgets the endpoint', async () => {
    f.ctx.store.putEndpoint({ id: EP, networkId: NET, address: '192.0.2.2/24', srcName: LINK });
    await f.links.createMacvlan({ name: LINK, parent: 'eth1', mode: 'bridge' });
    expect(await endpoint.deleteEndpoint(f.ctx, { NetworkID: NET, EndpointID: EP })).toEqual({});
    expect(f.links.links.has(LINK)).toBe(false);
    expect(f.ctx.store.endpoints.has(EP)).toBe(false);
    expect(f.reread().endpoints.has(EP)).toBe(false);
  });

  it('touches no link for an endpoint never joined, and answers {} for one it does not know', async () => {
    f.ctx.store.putEndpoint({ id: EP, networkId: NET, address: '192.0.2.2/24' });
    await endpoint.deleteEndpoint(f.ctx, { NetworkID: NET, EndpointID: EP });
    expect(f.ctx.store.endpoints.has(EP)).toBe(false);
    expect(await endpoint.deleteEndpoint(f.ctx, { NetworkID: NET, EndpointID: hex64('e9') })).toEqual({});
    expect(f.links.calls).toEqual([]);
  });

  it('keeps the endpoint when its link cannot be deleted', async () => {
    f.ctx.store.putEndpoint({ id: EP, networkId: NET, address: '192.0.2.2/24', srcName: LINK });
    f.links.failNext('deleteLink', new Error('netlink: operation not permitted'));
    await expect(endpoint.deleteEndpoint(f.ctx, { NetworkID: NET, EndpointID: EP })).rejects.toThrow('netlink: operation not permitted');
    expect(f.ctx.store.endpoints.has(EP)).toBe(true);
  });

  it('answers operational info for a known endpoint only', async () => {
    f.ctx.store.putEndpoint({ id: EP, networkId: NET, address: '192.0.2.2/24' });
    expect(await endpoint.endpointOperInfo(f.ctx, { NetworkID: NET, EndpointID: EP })).toEqual({ Value: {} });
    await expect(endpoint.endpointOperInfo(f.ctx, { NetworkID: NET, EndpointID: hex64('e9') })).rejects.toThrow(`endpoint id "${hex64('e9')}" not found`);
  });
});

describe('Join / Leave', () => {
  const joinReq = (id = EP) => ({ NetworkID: NET, EndpointID: id, SandboxKey: '/var/run/docker/netns/x', Options: {} });

  it('makes the macvlan link with the endpoint MAC and answers its name and the gateways', async () => {
    f.ctx.store.putNetwork(net({ macvlanMode: 'private' }));
    f.ctx.store.putEndpoint({ id: EP, networkId: NET, address: '192.0.2.2/24', addressV6: '2001:db8::2/64', mac: '02:42:c0:00:02:02' });
    const r = await joinleave.join(f.ctx, joinReq());
    expect(r).toEqual({ InterfaceName: { SrcName: LINK, DstPrefix: 'eth' }, Gateway: '192.0.2.1', GatewayIPv6: '2001:db8::1' });
    expect(f.links.calls).toEqual([{ method: 'createMacvlan', req: { name: LINK, parent: 'eth1', mode: 'private', mac: '02:42:c0:00:02:02' } }]);
    expect(f.links.links.get(LINK)).toMatchObject({ kind: 'macvlan', parentIndex: f.links.links.get('eth1')!.index, mac: '02:42:c0:00:02:02' });
    expect(f.ctx.store.endpoints.get(EP)!.srcName).toBe(LINK);
    expect(f.reread().endpoints.get(EP)!.srcName).toBe(LINK);
    // A repeated Join finds the link and makes none.
    expect(await joinleave.join(f.ctx, joinReq())).toEqual(r);
    expect(f.links.calls).toHaveLength(1);
  });

  it('starts the announcement of a macvlan endpoint after it answered (driver/announce.ts), not of an ipvlan one; Leave cancels it', async () => {
    const targets: unknown[] = [];
    const cancelled: string[] = [];
    const ctx = { ...f.ctx, announcer: { announce: async (t: unknown) => (targets.push(t), 'sent' as const), cancel: (id: string) => void cancelled.push(id) } };
    f.ctx.store.putNetwork(net());
    f.ctx.store.putEndpoint({ id: EP, networkId: NET, address: '192.0.2.2/24', addressV6: '2001:db8::2/64', mac: '02:42:C0:00:02:02' });
    await joinleave.join(ctx, joinReq());
    expect(targets).toEqual([{ endpointId: EP, networkId: NET, sandboxKey: '/var/run/docker/netns/x', mac: '02:42:c0:00:02:02', address: '192.0.2.2', addressV6: '2001:db8::2' }]);
    await joinleave.join(ctx, { ...joinReq(), SandboxKey: '' }); // no namespace to announce in
    f.ctx.store.putNetwork(net({ type: 'ipvlan' }));
    await joinleave.join(ctx, joinReq());
    expect(targets).toHaveLength(1);
    await joinleave.leave(ctx, { NetworkID: NET, EndpointID: EP });
    expect(cancelled).toEqual([EP]);
  });

  it('answers no gateway for an internal network or an address outside every subnet', async () => {
    f.ctx.store.putNetwork(net({ internal: true }));
    f.ctx.store.putEndpoint({ id: EP, networkId: NET, address: '192.0.2.2/24' });
    expect(await joinleave.join(f.ctx, joinReq())).toEqual({ InterfaceName: { SrcName: LINK, DstPrefix: 'eth' } });
    f.ctx.store.putNetwork(net());
    f.ctx.store.putEndpoint({ id: hex64('e2'), networkId: NET, address: '198.51.100.2/24' });
    expect(await joinleave.join(f.ctx, joinReq(hex64('e2')))).toEqual({ InterfaceName: { SrcName: `ul${hex64('e2').slice(0, 11)}`, DstPrefix: 'eth' } });
  });

  it('gives an ipvlan L3 endpoint default routes on its device and no gateway, and makes its link without a MAC', async () => {
    f.ctx.store.putNetwork(net({ type: 'ipvlan', ipvlanMode: 'l3', ipvlanFlag: 'private' }));
    f.ctx.store.putEndpoint({ id: EP, networkId: NET, address: '192.0.2.2/24', addressV6: '2001:db8::2/64', mac: '02:42:c0:00:02:02' });
    expect(await joinleave.join(f.ctx, joinReq())).toEqual({
      InterfaceName: { SrcName: LINK, DstPrefix: 'eth' },
      StaticRoutes: [{ Destination: '0.0.0.0/0', RouteType: 1 }, { Destination: '::/0', RouteType: 1 }],
      DisableGatewayService: true,
    });
    expect(f.links.calls).toEqual([{ method: 'createIpvlan', req: { name: LINK, parent: 'eth1', mode: 'l3', flag: 'private' } }]);
  });

  it('gives an ipvlan L2 endpoint its gateway', async () => {
    f.ctx.store.putNetwork(net({ type: 'ipvlan', ipvlanMode: 'l2' }));
    f.ctx.store.putEndpoint({ id: EP, networkId: NET, address: '192.0.2.2/24' });
    expect(await joinleave.join(f.ctx, joinReq())).toEqual({ InterfaceName: { SrcName: LINK, DstPrefix: 'eth' }, Gateway: '192.0.2.1' });
  });

  it('refuses unknown networks and endpoints, a missing parent, and a link the kernel refuses', async () => {
    await expect(joinleave.join(f.ctx, joinReq())).rejects.toThrow(`network id "${NET}" not found`);
    f.ctx.store.putNetwork(net({ parent: 'eth7' }));
    await expect(joinleave.join(f.ctx, joinReq())).rejects.toThrow(`endpoint id "${EP}" not found`);
    f.ctx.store.putEndpoint({ id: EP, networkId: NET, address: '192.0.2.2/24' });
    await expect(joinleave.join(f.ctx, joinReq())).rejects.toThrow('the requested parent interface eth7 was not found on the Docker host');
    f.ctx.store.putNetwork(net());
    f.links.failNext('createMacvlan', new Error('device or resource busy'));
    await expect(joinleave.join(f.ctx, joinReq())).rejects.toThrow('failed to create the macvlan port: device or resource busy');
    expect(f.ctx.store.endpoints.get(EP)!.srcName).toBeUndefined();
    expect(f.links.links.has(LINK)).toBe(false);
  });

  it('leaves a known endpoint (Docker moves the link back itself) and refuses an unknown one', async () => {
    f.ctx.store.putNetwork(net());
    f.ctx.store.putEndpoint({ id: EP, networkId: NET, address: '192.0.2.2/24', srcName: LINK });
    expect(await joinleave.leave(f.ctx, { NetworkID: NET, EndpointID: EP })).toEqual({});
    expect(f.ctx.store.endpoints.get(EP)!.srcName).toBe(LINK);
    await expect(joinleave.leave(f.ctx, { NetworkID: NET, EndpointID: hex64('e9') })).rejects.toThrow(new NotFoundError(`endpoint id "${hex64('e9')}" not found`));
  });
});

/**
 * The agent's CreateNetwork / DeleteNetwork handlers (services/node-agent/src/driver/network.ts) against in-memory
 * fakes of the controller client, the kernel's links and the local Docker (test/unit/driver-fakes.ts), with a real
 * LocalStore on a temporary directory.
 */
import { ConflictError, InvalidArgumentError, UnavailableError, plugin } from '@underlay/core';
import * as ipam from '../../services/node-agent/src/driver/ipam';
import * as network from '../../services/node-agent/src/driver/network';
import * as endpoint from '../../services/node-agent/src/driver/endpoint';
import * as joinleave from '../../services/node-agent/src/driver/joinleave';
import { fakeDriver } from './driver-fakes';
import { AddressHolds } from '../../services/node-agent/src/driver/address-holds';
import { DriverMemory } from '../../services/node-agent/src/driver/context';

const hex64 = (c: string) => c.repeat(64).slice(0, 64);
const NET = hex64('a1');
const NET2 = hex64('b2');
const POOL = 'underlay/192.0.2.0/24';

/** CreateNetwork as Docker sends it for `docker network create -d underlay --ipam-driver underlay -o … --subnet …`. */
function createReq(id: string, generic: Record<string, string>, over: Record<string, unknown> = {}) {
  return {
    NetworkID: id,
    Options: { [plugin.netlabel.generic]: generic, [plugin.netlabel.enableIPv6]: false, [plugin.netlabel.internal]: false },
    IPv4Data: [{ AddressSpace: 'underlay', Pool: '192.0.2.0/24', Gateway: '192.0.2.1/24' }],
    IPv6Data: [],
    ...over,
  };
}

/** Polls until `cond` holds (background work of the handler), at most ~3 s. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 150 && !cond(); i++) await new Promise((r) => setTimeout(r, 20));
  expect(cond()).toBe(true);
}

let f: ReturnType<typeof fakeDriver>;
beforeEach(() => {
  f = fakeDriver({ links: ['eth1', 'eth2'] });
});
afterEach(async () => {
  // Let defineLater's background retries see the network gone (they stop then).
  for (const id of [...f.ctx.store.networks.keys()]) f.ctx.store.networks.delete(id);
  await new Promise((r) => setTimeout(r, 250));
  f.cleanup();
});

describe('point-to-point networks (/31, /127)', () => {
  const GW = { RequestAddressType: 'com.docker.network.gateway' };
  const P2P = 'underlay/198.51.100.232/31';
  const p2pReq = (gateway: string) =>
    createReq(NET, { parent: 'eth1' }, { IPv4Data: [{ AddressSpace: 'underlay', Pool: '198.51.100.232/31', Gateway: gateway }] });

  it('records no gateway when none was given: both addresses go to containers, which get no default route and no docker_gwbridge', async () => {
    await ipam.requestPool(f.ctx, { Pool: '198.51.100.232/31' });
    // Docker (before 28, or with a remote driver) asks for a gateway anyway: it gets an address reserved for nobody.
    expect(await ipam.requestAddress(f.ctx, { PoolID: P2P, Address: '', Options: GW })).toEqual({ Address: '198.51.100.232/31', Data: {} });
    expect(f.ctx.store.allocs.size).toBe(0);
    await network.createNetwork(f.ctx, p2pReq('198.51.100.232/31'));
    expect(f.ctx.store.networks.get(NET)!.ipv4).toEqual([{ pool: '198.51.100.232/31' }]);
    for (const [n, address] of [['e1', '198.51.100.232/31'], ['e2', '198.51.100.233/31']] as const) {
      const id = n.repeat(32);
      await endpoint.createEndpoint(f.ctx, { NetworkID: NET, EndpointID: id, Interface: { Address: address, AddressIPv6: '', MacAddress: '' } });
      const res = await joinleave.join(f.ctx, { NetworkID: NET, EndpointID: id, SandboxKey: '/var/run/docker/netns/x', Options: {} });
      expect(res.Gateway).toBeUndefined();
      expect(res.DisableGatewayService).toBe(true);
    }
    // Docker releases that gateway at network removal: nothing to release (it may be a container's address).
    const before = f.controller.calls.length;
    expect(await ipam.releaseAddress(f.ctx, { PoolID: P2P, Address: '198.51.100.232' })).toEqual({});
    expect(f.controller.calls).toHaveLength(before);
  });

  it('releases a held container address once when the network goes and Docker releases it again as the gateway', async () => {
    f.ctx.holds = new AddressHolds({ holdMs: 60_000, release: (h) => ipam.releaseHeld(f.ctx, h), log: () => {} });
    await ipam.requestPool(f.ctx, { Pool: '198.51.100.232/31' });
    await ipam.requestAddress(f.ctx, { PoolID: P2P, Address: '', Options: GW });
    await network.createNetwork(f.ctx, p2pReq('198.51.100.232/31'));
    await ipam.requestAddress(f.ctx, { PoolID: P2P, Address: '198.51.100.232' });
    const seq = f.ctx.store.allocSeq(P2P, '198.51.100.232')!;
    // The container goes and its address is held for a restart (as a dynamic address is).
    f.ctx.holds.hold({ poolId: P2P, address: '198.51.100.232', cidr: '198.51.100.232/31', allocSeq: seq });
    f.controller.calls.length = 0;
    // The network goes (its held addresses with it); Docker then releases its gateway answer (the same address), then the pool.
    await network.deleteNetwork(f.ctx, { NetworkID: NET });
    await ipam.releaseAddress(f.ctx, { PoolID: P2P, Address: '198.51.100.232' });
    await ipam.releasePool(f.ctx, { PoolID: P2P });
    expect(f.ctx.holds.list()).toEqual([]);
    expect(f.controller.calls.filter((c) => c.method !== 'networkRemove')).toEqual([
      { method: 'releaseAddress', req: { poolId: P2P, address: '198.51.100.232', allocSeq: seq } },
      { method: 'releasePool', req: { poolId: P2P } },
    ]);
    expect(f.ctx.store.allocSeq(P2P, '198.51.100.232')).toBeUndefined();
  });

  it('keeps a --gateway the user gave', async () => {
    await ipam.requestPool(f.ctx, { Pool: '198.51.100.232/31' });
    expect(await ipam.requestAddress(f.ctx, { PoolID: P2P, Address: '198.51.100.233', Options: GW })).toEqual({ Address: '198.51.100.233/31', Data: {} });
    await network.createNetwork(f.ctx, p2pReq('198.51.100.233/31'));
    expect(f.ctx.store.networks.get(NET)!.ipv4).toEqual([{ pool: '198.51.100.232/31', gateway: '198.51.100.233/31' }]);
    await endpoint.createEndpoint(f.ctx, { NetworkID: NET, EndpointID: 'e1'.repeat(32), Interface: { Address: '198.51.100.232/31', AddressIPv6: '', MacAddress: '' } });
    const res = await joinleave.join(f.ctx, { NetworkID: NET, EndpointID: 'e1'.repeat(32), SandboxKey: '/var/run/docker/netns/x', Options: {} });
    expect(res.Gateway).toBe('198.51.100.233');
    expect(res.DisableGatewayService).toBeUndefined();
  });
});

describe('CreateNetwork', () => {
  it('records a macvlan network on an existing parent with the pools RequestPool returned, and tells the controller', async () => {
    await ipam.requestPool(f.ctx, { Pool: '192.0.2.0/24' });
    expect(await network.createNetwork(f.ctx, createReq(NET, { parent: 'eth1' }))).toEqual({});
    const rec = f.ctx.store.networks.get(NET);
    expect(rec).toEqual({
      id: NET, type: 'macvlan', requestedParent: 'eth1', parent: 'eth1', createdParent: false, macvlanMode: 'bridge', ipvlanMode: 'l2', ipvlanFlag: 'bridge',
      internal: false, ipv4: [{ pool: '192.0.2.0/24', gateway: '192.0.2.1/24' }], ipv6: [], poolIds: [POOL],
    });
    expect(f.reread().networks.get(NET)).toEqual(rec);
    expect(f.controller.calls.at(-1)).toEqual({ method: 'networkRecord', req: { networkId: NET, poolIds: [POOL], options: { parent: 'eth1' } } });
    expect(f.controller.networks.get(NET)).toEqual({ poolIds: [POOL], options: { parent: 'eth1' } });
    expect(f.links.calls).toEqual([{ method: 'setUp', req: 'eth1' }]);
    expect(f.changed()).toBe(1);
    expect(f.logs).toContain(`network ${NET.slice(0, 12)} created: macvlan on eth1`);
  });

  it('creates an 802.1q parent, or a dummy for a network without one, and says it made them', async () => {
    await network.createNetwork(f.ctx, createReq(NET, { parent: 'eth1.20', macvlan_mode: 'private' }));
    expect(f.links.links.get('eth1.20')).toMatchObject({ kind: 'vlan', vlanId: 20, parentIndex: f.links.links.get('eth1')!.index, up: true });
    expect(f.ctx.store.networks.get(NET)).toMatchObject({ parent: 'eth1.20', createdParent: true, macvlanMode: 'private', internal: false });
    await network.createNetwork(f.ctx, createReq(NET2, { type: 'ipvlan', ipvlan_mode: 'l3' }));
    const dummy = `di-${NET2.slice(0, 12)}`;
    expect(f.links.links.get(dummy)).toMatchObject({ kind: 'dummy', up: true });
    expect(f.ctx.store.networks.get(NET2)).toMatchObject({ type: 'ipvlan', ipvlanMode: 'l3', parent: dummy, createdParent: true, internal: true });
    expect(f.logs).toContain(`network ${NET2.slice(0, 12)} created: ipvlan on ${dummy} (created by underlay)`);
  });

  it("maps the cluster's parent name to this host's (--parent-map)", async () => {
    f.ctx.parentMap = { eth0: 'eth2' };
    await network.createNetwork(f.ctx, createReq(NET, { parent: 'eth0' }));
    expect(f.ctx.store.networks.get(NET)).toMatchObject({ requestedParent: 'eth2', parent: 'eth2' });
    // The controller gets the definition's own options.
    expect(f.controller.networks.get(NET)!.options).toEqual({ parent: 'eth0' });
  });

  it('refuses with libnetwork-like texts, and records nothing', async () => {
    await expect(network.createNetwork(f.ctx, createReq(NET, { parent: 'eth1' }, { IPv4Data: [] }))).rejects.toThrow(new InvalidArgumentError('ipv4 pool is empty'));
    await expect(network.createNetwork(f.ctx, createReq(NET, { parent: 'eth1' }, { IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: '10.9.0.0/24' }] }))).rejects.toThrow(
      'this network takes its addresses from another IPAM driver (address space "LocalDefault"), which allocates on each host alone, so the same address would be handed out on several hosts. ' +
        'Create it with the underlay IPAM driver instead: docker network create -d underlay --ipam-driver underlay --subnet 10.9.0.0/24 -o parent=IFACE NAME',
    );
    await expect(network.createNetwork(f.ctx, createReq(NET, { parent: 'eth9' }))).rejects.toThrow('-o parent interface was not found on the host: eth9');
    await expect(network.createNetwork(f.ctx, createReq(NET, { parent: 'eth9.20' }))).rejects.toThrow('-o parent interface was not found on the host: eth9');
    f.links.failNext('createVlan', new Error('operation not permitted'));
    await expect(network.createNetwork(f.ctx, createReq(NET, { parent: 'eth1.30' }))).rejects.toThrow('failed to create eth1.30 vlan link: operation not permitted');
    expect(f.ctx.store.networks.size).toBe(0);
    expect(f.controller.calls).toEqual([]);
    expect(f.changed()).toBe(0);
  });

  it('keeps the parent rules, naming the other network by its name and short id', async () => {
    f.docker.put({ Id: NET, Name: 'lan', Driver: 'underlay' });
    await network.createNetwork(f.ctx, createReq(NET, { parent: 'eth1' }));
    await expect(network.createNetwork(f.ctx, createReq(NET2, { parent: 'eth1', type: 'ipvlan' }))).rejects.toThrow(
      new ConflictError(`macvlan network "lan" (${NET.slice(0, 12)}) is already using parent interface eth1: macvlan and ipvlan cannot share a parent`),
    );
    await expect(network.createNetwork(f.ctx, createReq(NET2, { parent: 'eth1', macvlan_mode: 'passthru' }))).rejects.toThrow(
      `cannot use mode passthru, macvlan network "lan" (${NET.slice(0, 12)}) is already using parent interface eth1`,
    );
    // Another macvlan network on the same parent is fine. Docker does not know it: the cluster view's name (its
    // NetworkNamed event) is used, and with neither, its id.
    f.docker.networks.clear();
    await network.createNetwork(f.ctx, createReq(NET2, { parent: 'eth1' }));
    const names = new Map([[NET, 'lan-cluster']]);
    const ctx = { ...f.ctx, clusterNetworkName: (id: string) => names.get(id) };
    await expect(network.createNetwork(ctx, createReq(hex64('c3'), { parent: 'eth1', type: 'ipvlan' }))).rejects.toThrow(
      `macvlan network "lan-cluster" (${NET.slice(0, 12)}) is already using parent interface eth1`,
    );
    names.clear();
    await expect(network.createNetwork(ctx, createReq(hex64('c3'), { parent: 'eth1', type: 'ipvlan' }))).rejects.toThrow(
      `macvlan network ${NET.slice(0, 12)} is already using parent interface eth1`,
    );
    expect([...f.ctx.store.networks.keys()].sort()).toEqual([NET, NET2]);
    // libnetwork's "network id … not found" names the network when Docker knows it.
    f.docker.put({ Id: hex64('d4'), Name: 'elsewhere', Driver: 'underlay' });
    await expect(network.deleteNetwork(f.ctx, { NetworkID: hex64('d4') })).rejects.toThrow(`network "elsewhere" (id "${hex64('d4')}") not found`);
    await expect(network.deleteNetwork(f.ctx, { NetworkID: hex64('d5') })).rejects.toThrow(`network id "${hex64('d5')}" not found`);
  });

  it('answers a repeated create of a network it has without doing anything', async () => {
    await network.createNetwork(f.ctx, createReq(NET, { parent: 'eth1' }));
    const calls = f.controller.calls.length;
    expect(await network.createNetwork(f.ctx, createReq(NET, { parent: 'eth2' }))).toEqual({});
    expect(f.controller.calls).toHaveLength(calls);
    expect(f.ctx.store.networks.get(NET)!.parent).toBe('eth1');
  });

  it("names the network for the cluster once Docker shows it, and remembers the controller's refusal", async () => {
    f.controller.nameVerdict = { member: false, conflict: 'network lan exists in the cluster with another definition: subnet differs', seq: 41, chains: { c: 40, 'h.h1': 41 } };
    await network.createNetwork(f.ctx, createReq(NET, { parent: 'eth1' }));
    // Docker stores the network only after CreateNetwork returned.
    await new Promise((r) => setTimeout(r, 300));
    expect(f.controller.methods()).not.toContain('networkName');
    f.docker.put({ Id: NET, Name: 'lan', Driver: 'underlay', Options: { parent: 'eth1' }, IPAM: { Driver: 'underlay', Config: [{ Subnet: '192.0.2.0/24', Gateway: '192.0.2.1' }] }, Labels: { 'io.underlay.replica': 'h2' } });
    await until(() => f.controller.methods().includes('networkName'));
    const named = f.controller.calls.find((c) => c.method === 'networkName')!.req as Record<string, unknown>;
    expect(named).toMatchObject({ networkId: NET, name: 'lan', replica: true, definition: expect.objectContaining({ options: { parent: 'eth1' } }) });
    expect(f.memory.conflicts.get(NET)).toBe('network lan exists in the cluster with another definition: subnet differs');
    expect(f.ctx.conflicts.get(NET)).toBe(f.memory.conflicts.get(NET));
    // The replica reconcile acts on the network only with a view that read both chains through the answer's heads.
    expect(f.memory.awaitChains).toEqual({ c: 40, 'h.h1': 41 });
    expect(f.memory.definesInFlight).toBe(0);
    expect(f.logs).toContain(`network lan (${NET.slice(0, 12)}) refused: network lan exists in the cluster with another definition: subnet differs; it will be removed from this host`);
  });
});

describe('DeleteNetwork', () => {
  beforeEach(async () => {
    await ipam.requestPool(f.ctx, { Pool: '192.0.2.0/24' });
    await network.createNetwork(f.ctx, createReq(NET, { parent: 'eth1.20' }));
    f.ctx.store.putEndpoint({ id: hex64('e1'), networkId: NET, address: '192.0.2.2/24', srcName: 'ule1e1e1e1e1e' });
    f.ctx.store.putEndpoint({ id: hex64('e2'), networkId: NET, address: '192.0.2.3/24' });
    await f.links.createMacvlan({ name: 'ule1e1e1e1e1e', parent: 'eth1.20', mode: 'bridge' });
    f.controller.calls.length = 0;
    f.links.calls.length = 0;
  });

  it('gives back the addresses held on the network for a restart before asking the cluster (no container comes back to it)', async () => {
    f.ctx.holds = new AddressHolds({ holdMs: 60_000, release: (h) => ipam.releaseHeld(f.ctx, h), log: () => {} });
    await ipam.requestAddress(f.ctx, { PoolID: POOL });
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' });
    expect(f.ctx.holds.list().map((h) => h.address)).toEqual(['192.0.2.2']);
    f.controller.calls.length = 0;
    await network.deleteNetwork(f.ctx, { NetworkID: NET });
    expect(f.controller.methods()).toEqual(['releaseAddress', 'networkRemove']);
    expect(f.ctx.holds.list()).toEqual([]);
    expect(f.controller.alloc(POOL, '192.0.2.2')).toBeUndefined();
  });

  it('removes the network from the cluster first, then its endpoints, links and the parent it made', async () => {
    expect(await network.deleteNetwork(f.ctx, { NetworkID: NET })).toEqual({});
    expect(f.controller.calls).toEqual([{ method: 'networkRemove', req: { req: { networkId: NET }, opts: { deadlineMs: 10_000 } } }]);
    expect(f.controller.networks.has(NET)).toBe(false);
    // The replica reconcile waits for the view to see this removal.
    expect(f.memory.awaitSeq).toBeGreaterThan(100);
    expect(f.ctx.memory).toBe(f.memory);
    expect(f.links.calls.map((c) => `${c.method} ${c.req}`)).toEqual(['deleteLink ule1e1e1e1e1e', 'deleteLink eth1.20']);
    expect([...f.links.links.keys()].sort()).toEqual(['eth1', 'eth2']);
    expect(f.ctx.store.networks.size).toBe(0);
    expect(f.ctx.store.endpoints.size).toBe(0);
    const again = f.reread();
    expect([again.networks.size, again.endpoints.size]).toEqual([0, 0]);
    expect(f.changed()).toBe(2);
    expect(f.logs).toContain(`network ${NET.slice(0, 12)} deleted`);
  });

  it('keeps a created parent another network still uses', async () => {
    await network.createNetwork(f.ctx, createReq(NET2, { parent: 'eth1.20' }));
    expect(f.ctx.store.networks.get(NET2)!.createdParent).toBe(true);
    await network.deleteNetwork(f.ctx, { NetworkID: NET });
    expect(f.links.links.has('eth1.20')).toBe(true);
    await network.deleteNetwork(f.ctx, { NetworkID: NET2 });
    expect(f.links.links.has('eth1.20')).toBe(false);
  });

  it('records only this host\'s removal when the cluster refuses, and still removes it here', async () => {
    f.controller.removeError = new ConflictError('network lan has endpoints on h2');
    await network.deleteNetwork(f.ctx, { NetworkID: NET });
    expect(f.controller.calls.map((c) => c.req)).toEqual([
      { req: { networkId: NET }, opts: { deadlineMs: 10_000 } },
      { req: { networkId: NET, cluster: false }, opts: { deadlineMs: 10_000 } },
    ]);
    expect(f.logs).toContain('docker network rm refused for the cluster, so the network comes back on this host: network lan has endpoints on h2');
    expect(f.memory.awaitSeq).toBe(0);
    expect(f.ctx.store.networks.has(NET)).toBe(false);
  });

  it('removes it here when the controller does not answer, and fails on any other error', async () => {
    f.controller.failNext('networkRemove', new UnavailableError('the underlay controller did not answer networkRemove'));
    await network.deleteNetwork(f.ctx, { NetworkID: NET });
    expect(f.logs).toContain(`network ${NET.slice(0, 12)} removal not recorded (the controller did not answer): the underlay controller did not answer networkRemove`);
    expect(f.ctx.store.networks.has(NET)).toBe(false);

    await network.createNetwork(f.ctx, createReq(NET2, { parent: 'eth2' }));
    f.controller.failNext('networkRemove', new InvalidArgumentError('bad networkRemove request'));
    await expect(network.deleteNetwork(f.ctx, { NetworkID: NET2 })).rejects.toThrow('bad networkRemove request');
    expect(f.ctx.store.networks.has(NET2)).toBe(true);
  });

  it('refuses a network it does not know', async () => {
    await expect(network.deleteNetwork(f.ctx, { NetworkID: NET2 })).rejects.toThrow(`network id "${NET2}" not found`);
    expect(f.controller.calls).toEqual([]);
  });
});

describe('DriverMemory.define (what the replica reconcile waits for)', () => {
  it('counts a name in flight, records its heads before the count drops, and keeps counting one whose answer never came', async () => {
    const m = new DriverMemory();
    let answer!: (r: { member: boolean; seq: number; chains: Record<string, number> }) => void;
    const sent = m.define('n1', () => new Promise((res) => (answer = res)));
    expect(m.definesInFlight).toBe(1);
    // Seen by whatever runs once the answer is in: the heads are there when the count is 0.
    let seenAtZero: Readonly<Record<string, number>> | undefined;
    void sent.then(() => (seenAtZero = m.definesInFlight === 0 ? { ...m.awaitChains } : undefined));
    answer({ member: true, seq: 8, chains: { c: 7, 'h.h1': 8 } });
    await sent;
    await Promise.resolve();
    expect(seenAtZero).toEqual({ c: 7, 'h.h1': 8 });
    expect(m.awaitSeq).toBe(8);
    // A deadline ran out: the controller may have recorded the name all the same, so it still counts.
    await expect(m.define('n2', () => Promise.reject(new UnavailableError('no answer')))).rejects.toThrow('no answer');
    expect(m.definesInFlight).toBe(1);
    expect(m.defineFailed('n2')).toBe(true);
    // Sent again and answered (an older controller answers no heads: nothing more to wait for).
    await m.define('n2', async () => ({ member: true }));
    expect(m.definesInFlight).toBe(0);
    await expect(m.define('n3', () => Promise.reject(new UnavailableError('no answer')))).rejects.toThrow();
    m.networkGone('n3');
    expect(m.definesInFlight).toBe(0);
    expect(m.awaitChains).toEqual({ c: 7, 'h.h1': 8 });
  });
});

/**
 * `underlay ipam check` and `ipam release`: the pure logic (libs/core/src/ipam/check.ts) on a cluster state built
 * with the real decisions, and node reports as the controller's NodeDirectory keeps them.
 */
import {
  IpamCheck,
  IpamReleaseResponse,
  checkIpam,
  decideBindEndpoint,
  decideNetworkNamed,
  decideNetworkRecorded,
  decideOperatorRelease,
  decideRequestAddress,
  decideRequestPool,
  ipamCheck,
  type CheckEndpoint,
  type CheckNode,
} from '@underlay/core';
import { engineWithClock } from './support';

const NET1 = 'a'.repeat(64);
const NET2 = 'b'.repeat(64);
const mac = (n: number) => ({ 'com.docker.network.endpoint.macaddress': `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` });
const epId = (n: number) => n.toString(16).padStart(64, 'e');
const ctr = (n: number) => n.toString(16).padStart(64, 'c');

/** Two nodes with network n1 (192.0.2.0/24, /28 blocks) recorded and named on both. */
function cluster() {
  const t = engineWithClock();
  const poolId = t.run((s) => decideRequestPool(s, { node: 'h1', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: { block_size: '28' }, v6: false })).poolId;
  t.run((s) => decideRequestPool(s, { node: 'h2', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: { block_size: '28' }, v6: false }));
  for (const [node, net] of [['h1', NET1], ['h2', NET2]] as const) {
    t.run((s) => decideNetworkRecorded(s, { node, networkId: net, poolIds: [poolId], options: {} }));
    t.run((s) => decideNetworkNamed(s, { node, networkId: net, name: 'n1' }));
  }
  /** A container's address: allocated and bound, as Docker's RequestAddress and CreateEndpoint do. */
  const container = (node: 'h1' | 'h2', n: number) => {
    const r = t.run((s) => decideRequestAddress(s, { node, poolId, address: '', options: mac(n) }));
    const address = r.address.split('/')[0]!;
    t.run((s) => decideBindEndpoint(s, { node, poolId, address, allocSeq: r.allocSeq, endpointId: epId(n), networkId: node === 'h1' ? NET1 : NET2 }));
    const ep: CheckEndpoint = { endpointId: epId(n), networkId: node === 'h1' ? NET1 : NET2, network: 'n1', container: `c${n}`, containerId: ctr(n), address: r.address };
    return { address, ep };
  };
  /** What a node reported, `agoMs` before now. */
  const node = (name: string, eps: CheckEndpoint[], o: { ready?: boolean; agoMs?: number; held?: string[] } = {}): CheckNode => ({
    node: name,
    ready: o.ready ?? true,
    lastSeenMs: t.nowMs() - (o.agoMs ?? 0),
    endpoints: new Set(eps.map((e) => e.endpointId)),
    endpointStates: eps,
    held: o.held ?? [],
  });
  return { t, poolId, container, node };
}

describe('ipam check', () => {
  it('finds nothing on a clean cluster, and says so', () => {
    const { t, container, node } = cluster();
    const a = container('h1', 1);
    const b = container('h2', 2);
    t.advance(10_000);
    const r = checkIpam(t.engine.state, [node('h1', [a.ep]), node('h2', [b.ep])], t.nowMs());
    expect(r).toMatchObject({ clean: true, findings: 0, pending: 0, nodes: { ready: ['h1', 'h2'], notReady: [] } });
    expect(IpamCheck.parse(r)).toEqual(r);
  });

  it('reports an allocation no container holds: never bound (planted) and bound to an endpoint that went', () => {
    const { t, poolId, container, node } = cluster();
    const a = container('h1', 1);
    const gone = container('h1', 2);
    const planted = t.run((s) => decideRequestAddress(s, { node: 'h2', poolId, address: '', options: {}, kind: 'endpoint' }));
    t.advance(10_000);
    const r = checkIpam(t.engine.state, [node('h1', [a.ep]), node('h2', [])], t.nowMs());
    expect(r.clean).toBe(false);
    expect(r.findings).toBe(2);
    expect(r.allocationsWithoutContainer.map((x) => [x.address, x.node, x.network, x.reason])).toEqual([
      [gone.address, 'h1', 'n1', 'endpoint-gone'],
      [planted.address.split('/')[0], 'h2', 'n1', 'unbound'],
    ]);
    expect(r.allocationsWithoutContainer[1]!.detail).toBe(`allocated to h2 10 s ago and never bound to an endpoint; h2 reports no container with it`);
    expect(r.allocationsWithoutContainer[0]!.detail).toContain(`bound to endpoint ${epId(2).slice(0, 12)}, which h1 no longer reports`);
  });

  it('does not judge an allocation newer than its node\'s report (a container starting), nor a held address', () => {
    const { t, poolId, container, node } = cluster();
    const a = container('h1', 1);
    const held = container('h1', 2);
    t.advance(10_000);
    t.run((s) => decideRequestAddress(s, { node: 'h1', poolId, address: '', options: mac(3) }));
    // The report came 1 s before the allocation: not judged.
    const r = checkIpam(t.engine.state, [node('h1', [a.ep], { agoMs: 1_000, held: [held.address] }), node('h2', [])], t.nowMs());
    expect(r).toMatchObject({ clean: true, pending: 1, held: [{ address: held.address, node: 'h1', poolId, network: 'n1' }] });
    // A report 5 s after the allocation judges it.
    t.advance(5_000);
    const later = checkIpam(t.engine.state, [node('h1', [a.ep], { held: [held.address] }), node('h2', [])], t.nowMs());
    expect(later.allocationsWithoutContainer.map((x) => x.reason)).toEqual(['unbound']);
  });

  it('reports a container the cluster has no allocation for, or has for another node or as the gateway', () => {
    const { t, poolId, container, node } = cluster();
    const a = container('h1', 1);
    const other = container('h1', 2);
    t.advance(10_000);
    const p = t.engine.state.pools.get(poolId)!;
    const stray: CheckEndpoint = { endpointId: epId(9), networkId: NET2, network: 'n1', container: 'stray', containerId: ctr(9), address: '192.0.2.200/24' };
    const copy: CheckEndpoint = { endpointId: epId(8), networkId: NET2, network: 'n1', container: 'copy', containerId: ctr(8), address: `${other.address}/24` };
    const unknown: CheckEndpoint = { endpointId: epId(7), networkId: 'f'.repeat(64), network: 'bridge2', container: 'x', containerId: ctr(7), address: '198.51.100.9/24' };
    // An endpoint no container has yet (Docker's `ep-` key) is not a container.
    const starting: CheckEndpoint = { endpointId: epId(6), networkId: NET2, containerId: `ep-${epId(6)}`, address: '192.0.2.201/24' };
    const gw = t.run((s) => decideRequestAddress(s, { node: 'h2', poolId, address: '', options: { RequestAddressType: 'com.docker.network.gateway' } })).address;
    const onGateway: CheckEndpoint = { endpointId: epId(5), networkId: NET2, network: 'n1', container: 'gw', containerId: ctr(5), address: gw };
    expect(p.allocs.size).toBeGreaterThan(0);
    const r = checkIpam(t.engine.state, [node('h1', [a.ep, other.ep]), node('h2', [stray, copy, unknown, starting, onGateway])], t.nowMs());
    expect(r.containersWithoutAllocation.map((x) => [x.address, x.node, x.container, x.reason])).toEqual([
      ['198.51.100.9', 'h2', 'x', 'network-unknown'],
      [other.address, 'h2', 'copy', 'other-node'],
      [gw.split('/')[0], 'h2', 'gw', 'reserved'],
      ['192.0.2.200', 'h2', 'stray', 'no-allocation'],
    ]);
    expect(r.containersWithoutAllocation[1]!.detail).toBe(`container copy on h2 has ${other.address}, which the cluster IPAM allocated to node h1`);
    // The same address in two containers: held twice.
    expect(r.duplicateAddresses).toEqual([
      {
        address: other.address,
        poolId,
        network: 'n1',
        holders: [
          { node: 'h1', container: 'c2', containerId: ctr(2), endpointId: epId(2) },
          { node: 'h2', container: 'copy', containerId: ctr(8), endpointId: epId(8) },
        ],
        detail: `${other.address} is held by container c2 on h1 and container copy on h2`,
      },
    ]);
    expect(r.findings).toBe(5);
    expect(IpamCheck.parse(r)).toEqual(r);
  });

  it('reports the blocks of a node that is gone, and its addresses, without judging its containers', () => {
    const { t, container, node } = cluster();
    const a = container('h1', 1);
    const b = container('h2', 2);
    t.advance(10_000);
    const r = checkIpam(t.engine.state, [node('h1', [a.ep]), node('h2', [b.ep], { ready: false, agoMs: 300_000 })], t.nowMs());
    expect(r.goneNodeBlocks.map((x) => [x.block, x.node, x.endpoints, x.detail])).toEqual([['192.0.2.16/28', 'h2', 1, 'node h2 is not reporting (last report 5 minutes ago)']]);
    expect(r.allocationsWithoutContainer.map((x) => [x.address, x.reason])).toEqual([[b.address, 'node-gone']]);
    expect(r.nodes).toEqual({ ready: ['h1'], notReady: ['h2'] });
    // A node that never reported to this controller.
    const never = checkIpam(t.engine.state, [node('h1', [a.ep])], t.nowMs());
    expect(never.goneNodeBlocks[0]!.detail).toBe('node h2 has not reported since this controller started');
  });

  it('builds its input from the controller\'s node directory entries (ipamCheck view)', () => {
    const { t, container } = cluster();
    const a = container('h1', 1);
    container('h2', 2);
    t.advance(10_000);
    const report = (node: string, eps: CheckEndpoint[]) => ({ node, endpoints: eps.map((e) => e.endpointId), endpointStates: eps.map((e) => ({ ...e, state: 'joined' as const })), networkStates: [] });
    const seen = [
      { node: 'h1', lastSeenMs: t.nowMs() - 1_000, leaseMs: 15_000, report: report('h1', [a.ep]) },
      { node: 'h2', lastSeenMs: t.nowMs() - 60_000, leaseMs: 15_000, report: report('h2', []) },
    ];
    const r = ipamCheck({ state: t.engine.state, seen, nowMs: t.nowMs() });
    expect(r.nodes).toEqual({ ready: ['h1'], notReady: ['h2'] });
    expect(r.goneNodeBlocks.map((x) => x.node)).toEqual(['h2']);
  });
});

describe('ipam release (operator)', () => {
  it('releases a leaked address with an event naming the reason, and gives the pool back when nothing else holds it', () => {
    const { t, poolId, container, node } = cluster();
    const a = container('h1', 1);
    const planted = t.run((s) => decideRequestAddress(s, { node: 'h2', poolId, address: '', options: {}, kind: 'endpoint' }));
    const address = planted.address.split('/')[0]!;
    const nodes = [node('h1', [a.ep]), node('h2', [])];
    const d = decideOperatorRelease(t.engine.state, { address }, nodes, t.nowMs());
    expect(d.result).toEqual({ address, poolId, node: 'h2', allocSeq: planted.allocSeq, network: 'n1' });
    expect(IpamReleaseResponse.parse(d.result)).toEqual(d.result);
    expect(d.events).toEqual([{ type: 'AddressReleased', data: { poolId, address, node: 'h2', allocSeq: planted.allocSeq, reason: 'operator release' } }]);
    const r = t.run((s) => decideOperatorRelease(s, { address: `${address}/24`, network: 'n1' }, nodes, t.nowMs()));
    expect(r.node).toBe('h2');
    expect([...t.engine.state.pools.get(poolId)!.allocs.values()].map((x) => x.seq)).not.toContain(planted.allocSeq);
    t.advance(10_000);
    expect(checkIpam(t.engine.state, nodes, t.nowMs()).clean).toBe(true);
  });

  it('refuses a live container\'s address, naming the container and host; a held one; a gateway; an unknown one', () => {
    const { t, poolId, container, node } = cluster();
    const a = container('h1', 1);
    const held = container('h2', 2);
    t.advance(2_000);
    const nodes = [node('h1', [a.ep]), node('h2', [], { held: [held.address] })];
    expect(() => decideOperatorRelease(t.engine.state, { address: a.address }, nodes, t.nowMs())).toThrow(
      `address ${a.address} of network "n1" is in use by container c1 on h1, as h1 reported 0 s ago; remove the container (docker rm on h1) instead`,
    );
    // A node that stopped reporting still counts: its last report showed the container.
    const stale = [node('h1', [a.ep], { ready: false, agoMs: 600_000 }), node('h2', [])];
    expect(() => decideOperatorRelease(t.engine.state, { address: a.address }, stale, t.nowMs())).toThrow(/in use by container c1 on h1, as h1 reported 10 minutes ago \(it is not reporting now\)/);
    expect(() => decideOperatorRelease(t.engine.state, { address: held.address }, nodes, t.nowMs())).toThrow(`address ${held.address} of network "n1" is held by h2 for a container's restart (--address-hold-ms); h2 gives it back by itself when the time is up`);
    const gw = t.run((s) => decideRequestAddress(s, { node: 'h1', poolId, address: '', options: { RequestAddressType: 'com.docker.network.gateway' } }));
    expect(() => decideOperatorRelease(t.engine.state, { address: gw.address.split('/')[0]! }, nodes, t.nowMs())).toThrow(/is the gateway of network "n1", not a container's; it goes with the network/);
    expect(() => decideOperatorRelease(t.engine.state, { address: '192.0.2.250' }, nodes, t.nowMs())).toThrow('address 192.0.2.250 is not allocated');
    expect(() => decideOperatorRelease(t.engine.state, { address: a.address, network: 'nope' }, nodes, t.nowMs())).toThrow('network "nope" not found');
    expect(() => decideOperatorRelease(t.engine.state, { address: 'x' }, nodes, t.nowMs())).toThrow('address: "x" is not an IP address');
    // A node that never reported to this controller: nothing says whether a container holds it.
    expect(() => decideOperatorRelease(t.engine.state, { address: held.address }, [node('h1', [a.ep])], t.nowMs())).toThrow(/allocated to node h2, which has not reported since this controller started/);
  });

  it('asks for --network when the address is allocated in several address spaces', () => {
    const { t, node } = cluster();
    const other = t.run((s) => decideRequestPool(s, { node: 'h1', space: 'vlan30', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false })).poolId;
    t.run((s) => decideNetworkRecorded(s, { node: 'h1', networkId: 'd'.repeat(64), poolIds: [other], options: {} }));
    t.run((s) => decideNetworkNamed(s, { node: 'h1', networkId: 'd'.repeat(64), name: 'v30' }));
    const p1 = t.run((s) => decideRequestAddress(s, { node: 'h1', poolId: 'underlay/192.0.2.0/24', address: '192.0.2.9', options: {}, kind: 'endpoint' }));
    const p2 = t.run((s) => decideRequestAddress(s, { node: 'h1', poolId: other, address: '192.0.2.9', options: {}, kind: 'endpoint' }));
    expect(p1.address).toBe(p2.address);
    const nodes = [node('h1', []), node('h2', [])];
    expect(() => decideOperatorRelease(t.engine.state, { address: '192.0.2.9' }, nodes, t.nowMs())).toThrow(
      'address 192.0.2.9 is allocated in several address spaces: 192.0.2.0/24 in address space "underlay" (network n1), 192.0.2.0/24 in address space "vlan30" (network v30); name the network with --network NAME',
    );
    expect(decideOperatorRelease(t.engine.state, { address: '192.0.2.9', network: 'v30' }, nodes, t.nowMs()).result.poolId).toBe(other);
  });
});

/**
 * The API's views (networks, one network, endpoints, nodes, IPAM usage) computed from the folded state,
 * the nodes' latest reports and the time, and checked against the API's own schemas.
 */
import {
  EndpointList,
  ClusterEngine,
  IpamUsage,
  NetworkDetail,
  NetworkList,
  NodeList,
  decideBindEndpoint,
  decideClusterNetworkCreate,
  decideNetworkDefine,
  decideNetworkRecorded,
  decideNodeHello,
  decideRequestAddress,
  decideRequestPool,
  driverOf,
  endpointList,
  ipamUsage,
  networkInspect,
  networkList,
  nodeList,
  type ClusterState,
  type NodeReport,
  type NodeSeen,
} from '@underlay/core';

const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const GW = { RequestAddressType: 'com.docker.network.gateway' };
const DEF = { options: { parent: 'eth1' }, subnets: [{ subnet: '192.0.2.0/24', gateway: '192.0.2.1' }] };

function cluster() {
  let n = 0;
  const engine = new ClusterEngine(undefined, { now: () => new Date(T0), newId: () => `id${++n}` });
  const run = <R>(d: (s: ClusterState) => { events: any[]; result: R }, actor = 'node:h1') => engine.execute(d, { actor }).result;
  // net1: defined through the API; h1 and h2 hold replicas; h1 runs two containers (one dual-stack pool is not needed).
  run((s) => decideClusterNetworkCreate(s, { name: 'net1', definition: DEF }), 'user:alice');
  run((s) => decideClusterNetworkCreate(s, { name: 'iso', definition: { options: { type: 'ipvlan', ipvlan_mode: 'l3' }, subnets: [{ subnet: '198.51.100.0/24' }] } }), 'user:alice');
  for (const node of ['h1', 'h2']) {
    run((s) => decideNodeHello(s, { node, address: node === 'h1' ? '203.0.113.1' : '203.0.113.2', version: '0.1.0', interfaces: ['eth0', 'eth1'] }), `node:${node}`);
  }
  const pool = run((s) => decideRequestPool(s, { node: 'h1', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false }));
  run((s) => decideRequestPool(s, { node: 'h2', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false }), 'node:h2');
  run((s) => decideRequestAddress(s, { node: 'h1', poolId: pool.poolId, address: '192.0.2.1', options: GW }));
  for (const node of ['h1', 'h2']) {
    run((s) => decideNetworkRecorded(s, { node, networkId: `nid-${node}`, poolIds: [pool.poolId], options: { parent: 'eth1' } }), `node:${node}`);
    run((s) => decideNetworkDefine(s, { node, networkId: `nid-${node}`, name: 'net1', definition: DEF }), `node:${node}`);
  }
  const a1 = run((s) => decideRequestAddress(s, { node: 'h1', poolId: pool.poolId, address: '', options: {}, requestId: 'r1', kind: 'endpoint' }));
  const a2 = run((s) => decideRequestAddress(s, { node: 'h1', poolId: pool.poolId, address: '', options: {}, requestId: 'r2', kind: 'endpoint' }));
  const a3 = run((s) => decideRequestAddress(s, { node: 'h2', poolId: pool.poolId, address: '', options: {}, requestId: 'r3', kind: 'endpoint' }), 'node:h2');
  const bind = (node: string, a: { address: string; allocSeq: number }, ep: string) =>
    run((s) => decideBindEndpoint(s, { node, poolId: pool.poolId, address: a.address.split('/')[0]!, allocSeq: a.allocSeq, endpointId: ep, networkId: `nid-${node}` }), `node:${node}`);
  bind('h1', a1, 'ep1'.padEnd(64, '0'));
  bind('h2', a3, 'ep3'.padEnd(64, '0'));
  // a2 is allocated but never bound.
  return { state: engine.state, pool, a1, a2, a3 };
}

const report = (node: string, extra: Partial<NodeReport> = {}): NodeReport => ({ node, endpoints: [], endpointStates: [], networkStates: [], ...extra });

describe('views', () => {
  const c = cluster();
  const ep1 = 'ep1'.padEnd(64, '0');
  const ep3 = 'ep3'.padEnd(64, '0');
  const seen: NodeSeen[] = [
    {
      node: 'h1',
      lastSeenMs: T0 + 10_000,
      leaseMs: 15_000,
      report: report('h1', {
        address: '203.0.113.1',
        version: '0.1.0',
        interfaces: ['eth0', 'eth1'],
        endpoints: [ep1],
        endpointStates: [
          { endpointId: ep1, networkId: 'nid-h1', network: 'net1', container: 'web1', containerId: 'c1', address: `${c.a1.address}`, link: 'ulep1', state: 'joined' },
          { endpointId: 'bad'.padEnd(64, '0'), networkId: 'nid-h1', network: 'net1', container: 'broken', state: 'error', error: 'parent eth1 missing' },
        ],
        networkStates: [{ name: 'net1', networkId: 'nid-h1', state: 'ready', parent: 'eth1', replica: false }],
      }),
    },
    // h2 reported long ago: NotReady; its report does not list net1's state yet.
    { node: 'h2', lastSeenMs: T0 - 60_000, leaseMs: 15_000, report: report('h2', { endpoints: [ep3] }) },
  ];
  const now = T0 + 12_000;
  const input = { state: c.state, seen, nowMs: now };

  it('lists cluster networks with mode, parent, subnets, hosts and endpoint counts', () => {
    const list = networkList(input);
    expect(NetworkList.parse({ networks: list }).networks).toHaveLength(2);
    const [iso, net1] = list;
    expect(iso).toMatchObject({ name: 'iso', driver: 'ipvlan', mode: 'l3', subnets: ['198.51.100.0/24'], hosts: [], readyHosts: 0, totalHosts: 2, endpointCount: 0 });
    expect(iso!.parent).toBeUndefined();
    expect(net1).toMatchObject({
      name: 'net1',
      driver: 'macvlan',
      mode: 'bridge',
      parent: 'eth1',
      subnets: ['192.0.2.0/24'],
      readyHosts: 1,
      totalHosts: 2,
      endpointCount: 2,
      created: { seq: 1, time: new Date(T0).toISOString(), actor: 'user:alice' },
    });
    expect(net1!.hosts).toEqual([
      { node: 'h1', nodeReady: true, state: 'ready', networkId: 'nid-h1', replica: false, parent: 'eth1' },
      { node: 'h2', nodeReady: false, state: 'recorded', networkId: 'nid-h2' },
    ]);
  });

  it('inspects one network: definition, hosts and its endpoints; nothing for an unknown name', () => {
    const d = NetworkDetail.parse(networkInspect(input, 'net1'));
    expect(d.definition.subnets).toEqual([{ subnet: '192.0.2.0/24', gateway: '192.0.2.1', auxAddresses: {} }]);
    expect(d.endpoints.map((e) => [e.address, e.node, e.container, e.state])).toEqual([
      [c.a1.address.split('/')[0], 'h1', 'web1', 'joined'],
      [c.a3.address.split('/')[0], 'h2', undefined, 'bound'],
      [undefined, 'h1', 'broken', 'error'],
    ]);
    expect(networkInspect(input, 'nope')).toBeUndefined();
  });

  it('lists endpoint addresses with host, container, network and state, from allocations and reports', () => {
    const list = EndpointList.parse({ endpoints: endpointList(input) }).endpoints;
    const byAddr = new Map(list.map((e) => [e.address ?? e.container, e]));
    expect(byAddr.get(c.a1.address.split('/')[0])).toMatchObject({ node: 'h1', network: 'net1', container: 'web1', containerId: 'c1', state: 'joined', endpointId: ep1, link: 'ulep1', family: 4, poolId: c.pool.poolId, allocSeq: c.a1.allocSeq });
    expect(byAddr.get(c.a2.address.split('/')[0])).toMatchObject({ node: 'h1', state: 'allocated' });
    expect(byAddr.get(c.a2.address.split('/')[0])!.network).toBeUndefined();
    expect(byAddr.get(c.a3.address.split('/')[0])).toMatchObject({ node: 'h2', network: 'net1', state: 'bound', endpointId: ep3 });
    expect(byAddr.get('broken')).toMatchObject({ node: 'h1', network: 'net1', state: 'error', error: 'parent eth1 missing' });
    // The gateway is not an endpoint.
    expect(list.some((e) => e.address === '192.0.2.1')).toBe(false);
    // Filters.
    expect(endpointList(input, { node: 'h2' }).map((e) => e.endpointId)).toEqual([ep3]);
    expect(endpointList(input, { network: 'iso' })).toEqual([]);
  });

  it('shows nodes Ready while their lease holds, NotReady after it', () => {
    const nodes = NodeList.parse({ nodes: nodeList(input) }).nodes;
    expect(nodes.map((n) => [n.name, n.status, n.lastSeenAgoMs, n.address, n.version, n.endpointCount])).toEqual([
      ['h1', 'Ready', 2_000, '203.0.113.1', '0.1.0', 1],
      ['h2', 'NotReady', 72_000, '203.0.113.2', '0.1.0', 1],
    ]);
    expect(nodes[0]!.lastSeen).toBe(new Date(T0 + 10_000).toISOString());
    expect(nodes[0]!.networks).toEqual([{ name: 'net1', networkId: 'nid-h1', state: 'ready', parent: 'eth1', replica: false }]);
    expect(nodes[0]!.interfaces).toEqual(['eth0', 'eth1']);
    // 30 s later h1's lease (15 s) has run out too.
    expect(nodeList({ ...input, nowMs: T0 + 40_000 })[0]!.status).toBe('NotReady');
    // A registered node that never reported since the controller started.
    const never = nodeList({ ...input, seen: [] });
    expect(never.map((n) => [n.name, n.status, n.lastSeen])).toEqual([
      ['h1', 'NotReady', undefined],
      ['h2', 'NotReady', undefined],
    ]);
  });

  it('counts address use per pool and per block', () => {
    const u = IpamUsage.parse(ipamUsage(c.state));
    expect(u.pools).toHaveLength(1);
    const p = u.pools[0]!;
    expect(p).toMatchObject({ cidr: '192.0.2.0/24', space: 'underlay', size: '254', used: 4, free: '250', endpoints: 3, reserved: 1, networks: ['net1'], nodes: ['h1', 'h2'], blockPrefix: 26 });
    // h1's block holds the gateway and two endpoints; h2's block one endpoint.
    expect(p.blocks.map((b) => [b.block, b.node, b.used, b.size, b.endpoints])).toEqual([
      ['192.0.2.0/26', 'h1', 3, '63', 2],
      ['192.0.2.64/26', 'h2', 1, '64', 1],
    ]);
  });

  it('counts an IPv6 /64 exactly', () => {
    const engine = new ClusterEngine();
    engine.execute((s) => decideRequestPool(s, { node: 'h1', space: 'underlay', pool: '2001:db8::/64', subPool: '', options: {}, v6: true }), { actor: 'node:h1' });
    expect(ipamUsage(engine.state).pools[0]).toMatchObject({ size: '18446744073709551615', used: 0, v6: true });
  });

  it('reads driver, mode and parent from options, as libnetwork defaults them', () => {
    expect(driverOf({})).toEqual({ driver: 'macvlan', mode: 'bridge' });
    expect(driverOf({ host_iface: 'eth0.30', macvlan_mode: 'vepa' })).toEqual({ driver: 'macvlan', mode: 'vepa', parent: 'eth0.30' });
    expect(driverOf({ ipvlan_flag: 'private' })).toEqual({ driver: 'ipvlan', mode: 'l2 private' });
    expect(driverOf({ type: 'bogus', parent: 'eth9' })).toEqual({ driver: 'bogus', mode: '', parent: 'eth9' });
  });
});

/** Cluster network decisions and definitions (pure logic: no I/O). */
import {
  attachedEndpoints,
  decideBindEndpoint,
  decideClusterNetworkCreate,
  decideClusterNetworkRemove,
  decideNetworkDefine,
  decideNetworkRecorded,
  decideNetworkRemoved,
  decideRequestAddress,
  decideRequestPool,
  definitionFromDocker,
  describe as describeState,
  diffDefinitions,
  dockerCreateBody,
  fold,
  normalizeDefinition,
  restore,
  snapshot,
  type NetworkDefinitionInput,
} from '@underlay/core';
import { engineWithLog } from './support';

const DEF: NetworkDefinitionInput = { options: { parent: 'eth0' }, subnets: [{ subnet: '192.0.2.0/24' }] };

function setup() {
  const { engine, log, run } = engineWithLog();
  /** A Docker network on a node, using the 192.0.2.0/24 pool, as CreateNetwork records it. */
  const dockerNetwork = (node: string, networkId: string) => {
    const p = run((s) => decideRequestPool(s, { node, space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false, requestId: `rq-${networkId}` }));
    run((s) => decideNetworkRecorded(s, { node, networkId, poolIds: [p.poolId], options: { parent: 'eth0' } }));
    return p.poolId;
  };
  return { engine, log, run, dockerNetwork };
}

describe('network definitions', () => {
  it('normalises order, empty values, Docker-internal options and underlay labels', () => {
    const a = normalizeDefinition({
      options: { parent: 'eth0', 'com.docker.network.enable_ipv4': 'true' },
      subnets: [{ subnet: '198.51.100.0/24', ipRange: '' }, { subnet: '192.0.2.0/24', auxAddresses: { b: '192.0.2.3', a: '192.0.2.2' } }],
      labels: { 'io.underlay.replica': 'h1', team: 'x' },
    });
    expect(a).toEqual({
      options: { parent: 'eth0' },
      ipamOptions: {},
      subnets: [{ subnet: '192.0.2.0/24', auxAddresses: { a: '192.0.2.2', b: '192.0.2.3' } }, { subnet: '198.51.100.0/24', auxAddresses: {} }],
      ipv6: false,
      internal: false,
      labels: { team: 'x' },
    });
    expect(JSON.stringify(Object.keys(a.subnets[0]!.auxAddresses))).toBe('["a","b"]');
  });

  it('describes every difference field by field', () => {
    expect(diffDefinitions(DEF, DEF)).toEqual([]);
    expect(
      diffDefinitions(
        { ...DEF, ipamOptions: { block_size: '28' }, subnets: [{ subnet: '192.0.2.0/24', gateway: '192.0.2.1' }] },
        { options: { parent: 'eth1', ipvlan_mode: 'l3' }, subnets: [{ subnet: '192.0.2.0/24' }, { subnet: '2001:db8::/64' }], ipv6: true, internal: true },
      ),
    ).toEqual([
      'option ipvlan_mode: cluster has not set, this one has "l3"',
      'option parent: cluster has "eth0", this one has "eth1"',
      'ipam option block_size: cluster has "28", this one has not set',
      'subnet 2001:db8::/64: this one has it, the cluster does not',
      'subnet 192.0.2.0/24 gateway: cluster has "192.0.2.1", this one has not set',
      'ipv6: cluster has false, this one has true',
      'internal: cluster has false, this one has true',
    ]);
  });

  it('round-trips through a Docker create body and what Docker answers for it', () => {
    const def = normalizeDefinition({ options: { parent: 'eth0', macvlan_mode: 'bridge' }, ipamOptions: { block_size: '28' }, subnets: [{ subnet: '192.0.2.0/24', ipRange: '192.0.2.0/25', gateway: '192.0.2.1', auxAddresses: { r: '192.0.2.2' } }], labels: { a: 'b' } });
    const body = dockerCreateBody('n1', def, 'underlay', { 'io.underlay.replica': 'h1' }) as any;
    expect(body).toMatchObject({ Name: 'n1', CheckDuplicate: true, Driver: 'underlay', IPAM: { Driver: 'underlay' }, Labels: { a: 'b', 'io.underlay.replica': 'h1' } });
    // As Docker 20.10 shows the network it made from that body.
    const inspect = {
      Name: 'n1', Id: 'x', Driver: 'underlay', EnableIPv6: false, Internal: false, Options: body.Options, Labels: body.Labels,
      IPAM: { Driver: 'underlay', Options: body.IPAM.Options, Config: [{ Subnet: '192.0.2.0/24', IPRange: '192.0.2.0/25', Gateway: '192.0.2.1', AuxiliaryAddresses: { r: '192.0.2.2' } }] },
    };
    expect(definitionFromDocker(inspect as any)).toEqual(def);
  });
});

describe('cluster network decisions', () => {
  it('the first Docker network of a name becomes the cluster network; the same definition elsewhere is a member; another is refused', () => {
    const { engine, run, dockerNetwork } = setup();
    dockerNetwork('a', 'na');
    expect(run((s) => decideNetworkDefine(s, { node: 'a', networkId: 'na', name: 'n1', definition: DEF }))).toEqual({ member: true });
    expect(engine.state.clusterNetworks.get('n1')).toMatchObject({ name: 'n1', originNode: 'a', originNetworkId: 'na', definition: normalizeDefinition(DEF) });
    dockerNetwork('b', 'nb');
    expect(run((s) => decideNetworkDefine(s, { node: 'b', networkId: 'nb', name: 'n1', definition: DEF, replica: true }))).toEqual({ member: true });
    // Repeats decide nothing new.
    expect(engine.execute((s) => decideNetworkDefine(s, { node: 'b', networkId: 'nb', name: 'n1', definition: DEF }), { actor: 'node:b' }).events).toEqual([]);
    dockerNetwork('c', 'nc');
    const r = run((s) => decideNetworkDefine(s, { node: 'c', networkId: 'nc', name: 'n1', definition: { ...DEF, options: { parent: 'eth9' } } }));
    expect(r).toEqual({ member: false, conflict: 'network n1 already exists in the cluster with a different definition: option parent: cluster has "eth0", this one has "eth9"' });
    expect(engine.state.networks.get('nc')).toMatchObject({ name: 'n1', cluster: false });
    expect([...engine.state.networks.values()].filter((n) => n.cluster).map((n) => n.node)).toEqual(['a', 'b']);
  });

  it('a replica never creates a cluster network (it was removed meanwhile), and another name on a used subnet is refused', () => {
    const { engine, run, dockerNetwork } = setup();
    dockerNetwork('a', 'na');
    expect(run((s) => decideNetworkDefine(s, { node: 'a', networkId: 'na', name: 'gone', definition: DEF, replica: true }))).toEqual({ member: true });
    expect(engine.state.clusterNetworks.size).toBe(0);
    expect(engine.state.networks.get('na')?.cluster).toBe(true); // its agent removes it: a member of nothing
    run(() => ({ events: [{ type: 'NetworkRemoved', data: { networkId: 'na', node: 'a' } }], result: {} }));
    dockerNetwork('c', 'nc');
    run((s) => decideNetworkDefine(s, { node: 'c', networkId: 'nc', name: 'n1', definition: DEF }));
    dockerNetwork('b', 'nb');
    expect(run((s) => decideNetworkDefine(s, { node: 'b', networkId: 'nb', name: 'n2', definition: DEF }))).toEqual({
      member: false,
      conflict: 'subnet 192.0.2.0/24 overlaps with 192.0.2.0/24 of network "n1" (on c); use another subnet, or --ipam-opt space=NAME for the same subnet on another VLAN',
    });
  });

  it('defines through the API: validates, refuses another definition with the difference, and overlapping pools', () => {
    const { engine, run, dockerNetwork } = setup();
    expect(run((s) => decideClusterNetworkCreate(s, { name: 'api', definition: { subnets: [{ subnet: '203.0.113.0/24' }] } }))).toEqual({ created: true });
    expect(engine.state.clusterNetworks.get('api')?.originNode).toBeUndefined();
    expect(run((s) => decideClusterNetworkCreate(s, { name: 'api', definition: { subnets: [{ subnet: '203.0.113.0/24' }] } }))).toEqual({ created: false });
    expect(() => run((s) => decideClusterNetworkCreate(s, { name: 'api', definition: { subnets: [{ subnet: '203.0.113.0/25' }] } }))).toThrow(
      'network api already exists with a different definition: subnet 203.0.113.0/24: cluster has it, this one does not; subnet 203.0.113.0/25: this one has it, the cluster does not',
    );
    expect(() => run((s) => decideClusterNetworkCreate(s, { name: 'x', definition: { subnets: [{ subnet: '203.0.113.5/24' }] } }))).toThrow(/subnets: /);
    expect(() => run((s) => decideClusterNetworkCreate(s, { name: 'x', definition: { subnets: [{ subnet: '2001:db8::/64' }] } }))).toThrow('subnets: 2001:db8::/64 is IPv6: set ipv6 to true');
    expect(() => run((s) => decideClusterNetworkCreate(s, { name: 'x', definition: { subnets: [{ subnet: '203.0.113.128/25' }] } }))).toThrow(/overlaps with 203.0.113.0\/24 of network "api" \(on no host yet\); use another subnet, or --ipam-opt space=NAME/);
    dockerNetwork('a', 'na'); // a pool of a network that is not (yet) a cluster network
    expect(() => run((s) => decideClusterNetworkCreate(s, { name: 'y', definition: { subnets: [{ subnet: '192.0.2.0/25' }] } }))).toThrow(
      'subnet 192.0.2.0/25 overlaps with 192.0.2.0/24 of network "na" (on a), already in use in address space "underlay"; use another subnet, or --ipam-opt space=NAME for the same subnet on another VLAN',
    );
  });

  it('removal is refused while any host has an endpoint, naming hosts and containers; then it removes the cluster network', () => {
    const { engine, run, dockerNetwork, log } = setup();
    const pool = dockerNetwork('a', 'na');
    run((s) => decideNetworkDefine(s, { node: 'a', networkId: 'na', name: 'n1', definition: DEF }));
    dockerNetwork('b', 'nb');
    run((s) => decideNetworkDefine(s, { node: 'b', networkId: 'nb', name: 'n1', definition: DEF, replica: true }));
    const got = run((s) => decideRequestAddress(s, { node: 'b', poolId: pool, address: '', options: {}, requestId: 'e1', kind: 'endpoint' }), 'node:b');
    run((s) => decideBindEndpoint(s, { node: 'b', poolId: pool, address: got.address.split('/')[0]!, allocSeq: got.allocSeq, endpointId: 'ep1'.padEnd(64, '0'), networkId: 'nb' }), 'node:b');
    expect(attachedEndpoints(engine.state, 'n1')).toEqual([{ node: 'b', endpointId: 'ep1'.padEnd(64, '0'), networkId: 'nb', poolId: pool, address: '192.0.2.1' }]);
    const who = (node: string, ep: string) => (node === 'b' && ep.startsWith('ep1') ? 'web' : undefined);
    const msg = 'error while removing network: network n1 has active endpoints on b: container web (192.0.2.1). Stop those containers or disconnect them (docker network disconnect n1 CONTAINER on their host) first';
    expect(() => run((s) => decideClusterNetworkRemove(s, { name: 'n1' }, who))).toThrow(msg);
    expect(() => run((s) => decideNetworkRemoved(s, { node: 'a', networkId: 'na' }, who))).toThrow(msg);
    // Only this host's removal (the agent puts the replica back) is recorded.
    run((s) => decideNetworkRemoved(s, { node: 'a', networkId: 'na', cluster: false }));
    expect(engine.state.clusterNetworks.has('n1')).toBe(true);
    expect(engine.state.networks.has('na')).toBe(false);
    // An address its node reports held for a restart (the container went) is no active endpoint.
    const heldOnB = (node: string, address: string) => node === 'b' && address === '192.0.2.1';
    expect(attachedEndpoints(engine.state, 'n1', heldOnB)).toEqual([]);
    // (decided only, not applied)
    expect(decideNetworkRemoved(engine.state, { node: 'b', networkId: 'nb' }, who, heldOnB).events.map((e) => e.type)).toEqual(['ClusterNetworkRemoved', 'NetworkRemoved']);
    expect(decideClusterNetworkRemove(engine.state, { name: 'n1' }, who, heldOnB).events.map((e) => e.type)).toEqual(['ClusterNetworkRemoved']);
    // Without a container name the endpoint id stands in.
    expect(() => run((s) => decideClusterNetworkRemove(s, { name: 'n1' }))).toThrow('on b: endpoint ep1000000000 (192.0.2.1)');
    expect(() => run((s) => decideClusterNetworkRemove(s, { name: 'nope' }))).toThrow('network nope not found');

    run((s) => decideRequestAddress(s, { node: 'b', poolId: pool, address: '', options: {}, requestId: 'e1', kind: 'endpoint' }), 'node:b');
    run(() => ({ events: [{ type: 'AddressReleased', data: { poolId: pool, address: '192.0.2.1', node: 'b', allocSeq: got.allocSeq } }], result: {} }));
    run((s) => decideNetworkRemoved(s, { node: 'b', networkId: 'nb' }));
    expect(engine.state.clusterNetworks.has('n1')).toBe(false);
    // The fold and a snapshot reach the same state, cluster networks included.
    expect(describeState(fold(log))).toEqual(describeState(engine.state));
    expect(describeState(restore(JSON.parse(JSON.stringify(snapshot(engine.state)))))).toEqual(describeState(engine.state));
  });

  it('snapshots keep cluster networks and membership', () => {
    const { engine, run, dockerNetwork } = setup();
    dockerNetwork('a', 'na');
    run((s) => decideNetworkDefine(s, { node: 'a', networkId: 'na', name: 'n1', definition: DEF }));
    const back = restore(JSON.parse(JSON.stringify(snapshot(engine.state))));
    expect(back.clusterNetworks.get('n1')).toEqual(engine.state.clusterNetworks.get('n1'));
    expect(back.networks.get('na')).toMatchObject({ name: 'n1', cluster: true });
    // Snapshots written before cluster networks existed still load.
    const old = JSON.parse(JSON.stringify(snapshot(engine.state)));
    delete old.clusterNetworks;
    expect(restore(old).clusterNetworks.size).toBe(0);
  });
});

/**
 * Two hosts (namespaces on a bridge), each with its own dockerd and agent, one controller: the same
 * network on both hands out different addresses from the same /24, containers ping across hosts,
 * and the network's removal returns the addresses (`docker rm` holds them a while for a restart). (Docker's own
 * macvlan gives both containers 192.0.2.2.) A running container's address that the collector released while its
 * agent was unheard (SIGSTOP past --node-expired-ms) is taken back by the agent when it is heard again.
 */
import * as fs from 'node:fs';
import { BUSYBOX_IMAGE, waitFor, withLab } from '../lab';
import { containerIp, extraLinks, startCluster, type Cluster, type HostNode } from './support/cluster';

jest.setTimeout(240_000);
const ctx = withLab({ hosts: ['h1', 'h2'] });
let cluster: Cluster;

beforeAll(async () => {
  // The leak collector runs every 200 ms with short periods: it must never take a running container's address.
  cluster = await startCluster(ctx.lab, [ctx.host('h1'), ctx.host('h2')], {
    controller: { collectIntervalMs: 200, unboundGraceMs: 1_000, reportSlackMs: 500, nodeExpiredMs: 5_000, blockGraceMs: 1_000 },
    reportIntervalMs: 200,
  });
}, 300_000);

const POOL = 'underlay/192.0.2.0/24';

/** Whether an IPv4 address lies in a CIDR. */
function inCidr(ip: string, cidr: string): boolean {
  const int = (a: string) => a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  const [net, len] = cidr.split('/');
  const size = 2 ** (32 - Number(len));
  return Math.floor(int(ip) / size) === Math.floor(int(net!) / size);
}

/** Waits until the network is present (or gone) in that host's Docker. */
async function onHost(n: HostNode, name: string, present: boolean): Promise<void> {
  await waitFor(async () => ((await n.docker.docker(['network', 'inspect', name])).code === 0) === present, { timeoutMs: 10_000, intervalMs: 50, what: `network ${name} ${present ? 'replicated' : 'removed'}` });
}

describe('two hosts', () => {
  it('gives containers on different hosts different addresses from one /24, and they ping each other', async () => {
    const h1 = cluster.nodes.get('h1')!;
    const h2 = cluster.nodes.get('h2')!;
    // Created once: the agent on h2 makes the replica.
    await h1.docker.dockerOk(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '192.0.2.0/24', '--gateway', '192.0.2.1', '-o', 'parent=eth1', 'n1']);
    await onHost(h2, 'n1', true);
    await h1.docker.dockerOk(['run', '-d', '--name', 'ca', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    await h2.docker.dockerOk(['run', '-d', '--name', 'cb', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    const ipA = await containerIp(h1.docker, 'ca', 'n1');
    const ipB = await containerIp(h2.docker, 'cb', 'n1');
    expect(ipA).toMatch(/^192\.0\.2\.\d+$/);
    expect(ipB).toMatch(/^192\.0\.2\.\d+$/);
    expect(ipA).not.toBe(ipB);
    const macA = (await h1.docker.dockerOk(['exec', 'ca', 'cat', '/sys/class/net/eth0/address'])).trim();
    const macB = (await h2.docker.dockerOk(['exec', 'cb', 'cat', '/sys/class/net/eth0/address'])).trim();
    expect(macA).not.toBe(macB);
    await h1.docker.dockerOk(['exec', 'ca', 'ping', '-c', '2', '-W', '3', ipB]);
    await h2.docker.dockerOk(['exec', 'cb', 'ping', '-c', '2', '-W', '3', ipA]);

    // The controller knows which node holds which address.
    const pool = cluster.controller.writer.state.pools.get(POOL)!;
    const endpoints = [...pool.allocs.values()].filter((x) => x.kind === 'endpoint').map((x) => x.node).sort();
    expect(endpoints).toEqual(['h1', 'h2']);
    // Each address is bound to the Docker endpoint holding it, and each agent registered its node.
    const epIds = [...pool.allocs.values()].filter((x) => x.kind === 'endpoint').map((x) => x.endpointId);
    const dockerEp = (await h1.docker.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "n1").EndpointID}}', 'ca'])).trim();
    expect(epIds).toContain(dockerEp);
    expect(epIds.every((e) => typeof e === 'string' && e.length === 64)).toBe(true);
    expect([...cluster.controller.writer.state.nodes.keys()].sort()).toEqual(['h1', 'h2']);
    // Each host filled its own block: the two addresses come from different /26 blocks.
    expect([...pool.blocks.values()].map((b) => b.node).sort()).toEqual(['h1', 'h2']);

    // The controller knows the network on both hosts by its Docker name, and names it when refusing an overlap.
    const named = () => [...cluster.controller.writer.state.networks.values()].filter((n) => n.name === 'n1').map((n) => n.node).sort();
    await waitFor(() => named().join() === 'h1,h2', { timeoutMs: 10_000, what: 'network n1 recorded and named on both hosts' });
    const overlap = await h1.docker.docker(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '192.0.2.128/25', '-o', 'parent=eth1', 'n2']);
    expect(overlap.code).not.toBe(0);
    expect(overlap.stderr).toContain('subnet 192.0.2.128/25 overlaps with 192.0.2.0/24 of network "n1" (on h1, h2)');

    // Many collector passes later, both running containers still hold their addresses.
    const passes = cluster.controller.collector!.passes;
    await waitFor(() => cluster.controller.collector!.passes >= passes + 15, { timeoutMs: 20_000, what: '15 collector passes' });
    expect(cluster.controller.collector!.reclaimed).toEqual([]);
    expect([...pool.allocs.values()].filter((x) => x.kind === 'endpoint')).toHaveLength(2);
    await h1.docker.dockerOk(['exec', 'ca', 'ping', '-c', '1', '-W', '3', ipB]);
    expect([...pool.refs].sort()).toEqual(['h1', 'h2']);

    // docker rm: each host keeps its container's address a while for a restart (--address-hold-ms), reported held
    // (no endpoint's: the network's removal is not refused for it); removing the network gives them back.
    await h1.docker.dockerOk(['rm', '-f', 'ca']);
    await h2.docker.dockerOk(['rm', '-f', 'cb']);
    await waitFor(() => cluster.controller.nodes.heldBy('h1', ipA) && cluster.controller.nodes.heldBy('h2', ipB), { timeoutMs: 5_000, what: 'both addresses reported held' });
    expect([...pool.allocs.values()].filter((x) => x.kind === 'endpoint').map((x) => x.node).sort()).toEqual(['h1', 'h2']);
    // Removed once (on h2): gone from both hosts, cleanly.
    await h2.docker.dockerOk(['network', 'rm', 'n1']);
    await onHost(h1, 'n1', false);
    for (const n of [h1, h2]) expect(await extraLinks(ctx.lab, n.host)).toEqual([]);
    await waitFor(() => !cluster.controller.writer.state.pools.has(POOL), { timeoutMs: 5_000, what: 'pool released' });
    expect(cluster.controller.writer.state.pools.has(POOL)).toBe(false);
  });

  it('keeps a static --ip unique across hosts and shares --aux-address reservations', async () => {
    const h1 = cluster.nodes.get('h1')!;
    const h2 = cluster.nodes.get('h2')!;
    await h1.docker.dockerOk(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '203.0.113.0/24', '--ip-range', '203.0.113.0/29',
      '--aux-address', 'router=203.0.113.2', '-o', 'parent=eth1', 'n3']);
    await onHost(h2, 'n3', true);
    await h1.docker.dockerOk(['run', '-d', '--name', 's1', '--network', 'n3', '--ip', '203.0.113.50', BUSYBOX_IMAGE, 'sleep', '600']);
    expect(await containerIp(h1.docker, 's1', 'n3')).toBe('203.0.113.50');
    const clash = await h2.docker.docker(['run', '-d', '--name', 's2', '--network', 'n3', '--ip', '203.0.113.50', BUSYBOX_IMAGE, 'sleep', '600']);
    expect(clash.code).not.toBe(0);
    expect(clash.stderr).toContain('address 203.0.113.50 is already in use by an endpoint on node h1');
    await h2.docker.docker(['rm', '-f', 's2']);
    // Dynamic addresses skip the gateway and the aux reservation on both hosts, and come from --ip-range
    // 203.0.113.0/29 only, though the subnet is a /24: five containers take exactly .3 to .7 (the range less its
    // network address, the gateway and the aux reservation), and a sixth finds the range full.
    const got = [];
    for (const [i, n] of [h1, h2, h1, h2, h1].entries()) {
      await n.docker.dockerOk(['run', '-d', '--name', `d${i}`, '--network', 'n3', BUSYBOX_IMAGE, 'sleep', '600']);
      got.push(await containerIp(n.docker, `d${i}`, 'n3'));
    }
    expect(new Set(got).size).toBe(5);
    expect(got).not.toContain('203.0.113.1');
    expect(got).not.toContain('203.0.113.2');
    expect(got.map((ip) => ({ ip, inRange: inCidr(ip, '203.0.113.0/29') }))).toEqual(got.map((ip) => ({ ip, inRange: true })));
    expect([...got].sort()).toEqual(['203.0.113.3', '203.0.113.4', '203.0.113.5', '203.0.113.6', '203.0.113.7']);
    const full = await h2.docker.docker(['run', '-d', '--name', 'd5', '--network', 'n3', BUSYBOX_IMAGE, 'sleep', '600']);
    expect(full.code).not.toBe(0);
    expect(full.stderr).toContain('no free address in 203.0.113.0/29');
    await h2.docker.docker(['rm', '-f', 'd5']);
    await h1.docker.dockerOk(['rm', '-f', 's1', 'd0', 'd2', 'd4']);
    await h2.docker.dockerOk(['rm', '-f', 'd1', 'd3']);
    // The static address is free again for the other host.
    await h2.docker.dockerOk(['run', '-d', '--name', 's3', '--network', 'n3', '--ip', '203.0.113.50', BUSYBOX_IMAGE, 'sleep', '600']);
    await h2.docker.dockerOk(['rm', '-f', 's3']);
    await h1.docker.dockerOk(['network', 'rm', 'n3']);
    await onHost(h2, 'n3', false);
    await waitFor(() => !cluster.controller.writer.state.pools.has('underlay/203.0.113.0/24'), { timeoutMs: 5_000, what: 'pool released' });
  });

  it('takes back a running container\'s address that the collector released while its agent was unheard', async () => {
    const h1 = cluster.nodes.get('h1')!;
    await h1.docker.dockerOk(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '192.0.2.0/24', '--gateway', '192.0.2.1', '-o', 'parent=eth1', 'n4']);
    await h1.docker.dockerOk(['run', '-d', '--name', 'k1', '--network', 'n4', BUSYBOX_IMAGE, 'sleep', '600']);
    const ip = await containerIp(h1.docker, 'k1', 'n4');
    const endpointId = (await h1.docker.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "n4").EndpointID}}', 'k1'])).trim();
    const alloc = () => {
      const p = cluster.controller.writer.state.pools.get(POOL);
      return p ? [...p.allocs].find(([v]) => v === BigInt(ip.split('.').reduce((n, o) => n * 256 + Number(o), 0)))?.[1] : undefined;
    };
    await waitFor(() => alloc()?.endpointId === endpointId, { timeoutMs: 10_000, what: `${ip} bound to k1's endpoint` });
    const before = alloc()!.seq;
    // The agent stops (SIGSTOP) past --node-expired-ms (5 s here): the collector takes h1 for gone and releases its address.
    process.kill(h1.agent.pid, 'SIGSTOP');
    try {
      await waitFor(() => cluster.controller.collector!.reclaimed.some((c) => c.address === ip && c.rule === 'node-expired'), { timeoutMs: 30_000, what: `the collector to release ${ip} of the unheard h1` });
      expect(alloc()).toBeUndefined();
    } finally {
      process.kill(h1.agent.pid, 'SIGCONT');
    }
    // Back, the agent sees the release of an address its container holds, and takes it back for that endpoint.
    await waitFor(() => alloc()?.endpointId === endpointId, { timeoutMs: 30_000, what: `${ip} allocated to h1 again and bound to k1's endpoint` });
    expect(alloc()).toMatchObject({ node: 'h1', kind: 'endpoint', endpointId });
    expect(alloc()!.seq).toBeGreaterThan(before);
    await waitFor(() => fs.readFileSync(h1.agent.logFile, 'utf8').includes(`addresses that containers here still hold (${ip}): allocated to this node again`), { timeoutMs: 5_000, what: 'the agent to log it' });
    // And the address goes back as usual when the container and the network go.
    await h1.docker.dockerOk(['rm', '-f', 'k1']);
    await h1.docker.dockerOk(['network', 'rm', 'n4']);
    await waitFor(() => !cluster.controller.writer.state.pools.has(POOL), { timeoutMs: 10_000, what: 'pool released' });
  });
});

/**
 * Issue 5 on real parts: four hosts (namespaces on a bridge), each with its own dockerd and agent.
 * A network created once (on a host, or through the controller) appears in every Docker; removal
 * once removes it everywhere, and is refused while any host still has a container on it; a host that
 * starts later, or was down during a removal, catches up; nodes hold leases and turn NotReady when
 * their agent dies.
 */
import { BUSYBOX_IMAGE, waitFor, withLab } from '../lab';
import { containerIp, operatorCli, extraLinks, startCluster, type Cluster, type HostNode } from './support/cluster';

jest.setTimeout(300_000);
const ctx = withLab({ hosts: ['h1', 'h2', 'h3', 'h4'] });
let cluster: Cluster;

const REPORT_MS = 250;
const LEASE_MS = 1_500;

beforeAll(async () => {
  cluster = await startCluster(ctx.lab, [ctx.host('h1'), ctx.host('h2'), ctx.host('h3')], {
    reportIntervalMs: REPORT_MS,
    // Every host names its uplink eth1; the cluster's definitions say "lan0".
    agentArgs: ['--lease-ms', String(LEASE_MS), '--parent-map', 'lan0=eth1', '--reconcile-interval-ms', '1000'],
    // Lets `docker network rm` be refused up front (libnetwork ignores DeleteNetwork's answer).
    authz: true,
  });
}, 300_000);

const node = (name: string): HostNode => cluster.nodes.get(name)!;

/** The operator CLI against this cluster's controller. */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return operatorCli(cluster, args);
}
async function cliJson<T = any>(args: string[]): Promise<T> {
  const r = await cli([...args, '--json']);
  if (r.code !== 0) throw new Error(`underlay ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}
const hasNetwork = async (n: HostNode, name: string) => (await n.docker.docker(['network', 'inspect', name])).code === 0;

/** Polls every 20 ms until the network exists (or not) in that host's Docker; returns how long it took. */
async function timeUntil(n: HostNode, name: string, present: boolean, timeoutMs = 10_000): Promise<number> {
  const t0 = Date.now();
  await waitFor(async () => (await hasNetwork(n, name)) === present, { timeoutMs, intervalMs: 20, what: `network ${name} ${present ? 'on' : 'gone from'} ${n.host.name}` });
  return Date.now() - t0;
}

describe('cluster-wide networks', () => {
  it('a network created on one host appears on every host within 2 s; containers everywhere get distinct addresses and ping each other; a late host gets it', async () => {
    const t0 = Date.now();
    await node('h1').docker.dockerOk(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '192.0.2.0/24', '-o', 'parent=lan0', '--label', 'team=net', 'cn1']);
    const created = Date.now() - t0;
    const times = await Promise.all(['h2', 'h3'].map((h) => timeUntil(node(h), 'cn1', true)));
    // Measured from when `docker network create` returned on h1.
    for (const t of times) expect(t).toBeLessThanOrEqual(2_000);
    process.stderr.write(`cn1 created on h1 in ${created} ms; on h2/h3 ${times.join('/')} ms later\n`);

    // The replicas are marked as such and carry the same definition (the parent maps to eth1 on each host).
    const inspect = JSON.parse(await node('h2').docker.dockerOk(['network', 'inspect', 'cn1']))[0];
    expect(inspect.Labels).toMatchObject({ team: 'net', 'io.underlay.replica': 'h1' });
    expect(inspect.Options).toEqual({ parent: 'lan0' });
    expect(inspect.IPAM.Config).toEqual([{ Subnet: '192.0.2.0/24' }]);
    const h1Inspect = JSON.parse(await node('h1').docker.dockerOk(['network', 'inspect', 'cn1']))[0];
    expect(h1Inspect.Labels['io.underlay.replica']).toBeUndefined();

    // One cluster network; every host's Docker network is a member of it.
    const s = cluster.controller.writer.state;
    expect([...s.clusterNetworks.keys()]).toEqual(['cn1']);
    await waitFor(() => [...s.networks.values()].filter((n) => n.name === 'cn1' && n.cluster).length === 3, { timeoutMs: 5_000, what: 'three members' });

    // A fourth host that starts later gets the network. (It runs without the authorization hook: with
    // it, dockerd answers nothing while the agent is down, and this host's agent is stopped below.)
    const h4 = await cluster.addHost(ctx.host('h4'), { authz: false });
    await timeUntil(h4, 'cn1', true, 15_000);

    for (const h of ['h1', 'h2', 'h3', 'h4']) await node(h).docker.dockerOk(['run', '-d', '--name', `c-${h}`, '--network', 'cn1', BUSYBOX_IMAGE, 'sleep', '600']);
    const ips = new Map<string, string>();
    for (const h of ['h1', 'h2', 'h3', 'h4']) ips.set(h, await containerIp(node(h).docker, `c-${h}`, 'cn1'));
    expect(new Set(ips.values()).size).toBe(4);
    for (const ip of ips.values()) expect(ip).toMatch(/^192\.0\.2\.\d+$/);
    for (const [from, _] of ips) {
      for (const [to, ip] of ips) {
        if (from !== to) await node(from).docker.dockerOk(['exec', `c-${from}`, 'ping', '-c', '1', '-W', '3', ip]);
      }
    }
  });

  it('status comes back: the controller holds each node\'s endpoints (with container names) and networks', async () => {
    await waitFor(
      () => ['h1', 'h2', 'h3', 'h4'].every((h) => cluster.controller.nodes.get(h)?.report.endpointStates.some((e) => e.container === `c-${h}` && e.state === 'joined' && e.network === 'cn1')),
      { timeoutMs: 5_000, what: 'reports with joined endpoints' },
    );
    for (const h of ['h1', 'h2', 'h3', 'h4']) {
      const r = cluster.controller.nodes.get(h)!.report;
      expect(r.networkStates).toEqual([expect.objectContaining({ name: 'cn1', state: 'ready', parent: 'eth1', replica: h !== 'h1' })]);
      expect(r.address).toBe(ctx.host(h).address);
      expect(r.interfaces).toContain('eth1');
      expect(cluster.controller.writer.state.nodes.get(h)?.address).toBe(ctx.host(h).address);
    }
    // The same through the operator CLI: tables for people, --json for scripts.
    const nodes = await cli(['node', 'ls']);
    expect(nodes.code).toBe(0);
    for (const h of ['h1', 'h2', 'h3', 'h4']) expect(nodes.stdout).toMatch(new RegExp(`^${h}\\s+Ready\\s`, 'm'));
    const eps = await cli(['endpoint', 'ls']);
    for (const h of ['h1', 'h2', 'h3', 'h4']) expect(eps.stdout).toMatch(new RegExp(`192\\.0\\.2\\.\\d+\\s+${h}\\s+c-${h}\\s+cn1\\s+joined`));
    const epJson = await cliJson<any>(['endpoint', 'ls']);
    expect(JSON.stringify(epJson)).toContain('c-h3');
    const nets = await cli(['network', 'ls']);
    expect(nets.stdout.split('\n')[0]).toMatch(/^NAME\s/);
    expect(nets.stdout).toMatch(/^cn1\s/m);
    const inspect = await cliJson<any>(['network', 'inspect', 'cn1']);
    expect(JSON.stringify(inspect)).toContain('"parent":"lan0"');
    const usage = await cli(['ipam', 'usage']);
    expect(usage.code).toBe(0);
    expect(usage.stdout).toContain('192.0.2.0/24');
  });

  it('removal is refused while a container is attached elsewhere, naming the host and container; then removing on another host removes it everywhere, and a host that was down catches up', async () => {
    for (const h of ['h1', 'h3', 'h4']) await node(h).docker.dockerOk(['rm', '-f', `c-${h}`]);
    const refused = await node('h3').docker.docker(['network', 'rm', 'cn1']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('on h2: container c-h2');
    const refusedCli = await cli(['network', 'rm', 'cn1']);
    expect(refusedCli.code).toBe(1);
    expect(refusedCli.stderr).toContain('network cn1 has active endpoints on h2: container c-h2');
    // Still there, everywhere, and still usable.
    for (const h of ['h1', 'h2', 'h3', 'h4']) expect(await hasNetwork(node(h), 'cn1')).toBe(true);
    expect(cluster.controller.writer.state.clusterNetworks.has('cn1')).toBe(true);

    await node('h2').docker.dockerOk(['rm', '-f', 'c-h2']);
    // h4's agent is down during the removal.
    await cluster.stopAgent('h4');
    await node('h3').docker.dockerOk(['network', 'rm', 'cn1']);
    expect(cluster.controller.writer.state.clusterNetworks.has('cn1')).toBe(false);
    for (const h of ['h1', 'h2']) await timeUntil(node(h), 'cn1', false);
    for (const h of ['h1', 'h2', 'h3']) expect(await extraLinks(ctx.lab, node(h).host)).toEqual([]);
    expect(await hasNetwork(node('h4'), 'cn1')).toBe(true);

    await cluster.restartAgent('h4');
    await timeUntil(node('h4'), 'cn1', false, 15_000);
    // With the last member gone, the pool is gone too.
    await waitFor(() => cluster.controller.writer.state.pools.size === 0, { timeoutMs: 5_000, what: 'pools released' });
  });

  it('a network created with `underlay network create` appears on every host; `underlay network rm` removes it everywhere', async () => {
    const created = await cli(['network', 'create', 'api1', '--subnet', '203.0.113.0/24', '--gateway', '203.0.113.1', '-o', 'parent=lan0', '-o', 'macvlan_mode=bridge']);
    expect(created.code).toBe(0);
    await Promise.all(['h1', 'h2', 'h3', 'h4'].map((h) => timeUntil(node(h), 'api1', true)));
    const inspect = JSON.parse(await node('h4').docker.dockerOk(['network', 'inspect', 'api1']))[0];
    expect(inspect.Labels['io.underlay.replica']).toBe('api');
    expect(inspect.IPAM.Config).toEqual([{ Subnet: '203.0.113.0/24', Gateway: '203.0.113.1' }]);

    // Without the authorization hook (h4), Docker removes its network whatever the driver says; the
    // cluster refuses, and the agent puts the network back.
    await node('h1').docker.dockerOk(['run', '-d', '--name', 'a-h1', '--network', 'api1', BUSYBOX_IMAGE, 'sleep', '600']);
    await node('h4').docker.dockerOk(['network', 'rm', 'api1']);
    await timeUntil(node('h4'), 'api1', true);
    expect(cluster.controller.writer.state.clusterNetworks.has('api1')).toBe(true);
    await node('h1').docker.dockerOk(['rm', '-f', 'a-h1']);

    // Same name, other definition: refused with the difference.
    const other = await cli(['network', 'create', 'api1', '--subnet', '203.0.113.0/25', '-o', 'parent=lan0']);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain(
      'network api1 already exists with a different definition: option macvlan_mode: cluster has "bridge", this one has not set; subnet 203.0.113.0/24: cluster has it, this one does not; subnet 203.0.113.0/25: this one has it, the cluster does not',
    );
    // Docker itself refuses the same name on a host that has the replica.
    const dup = await node('h2').docker.docker(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '203.0.113.0/24', '-o', 'parent=lan0', 'api1']);
    expect(dup.code).not.toBe(0);
    expect(dup.stderr).toMatch(/already exists/);

    expect((await cli(['network', 'rm', 'api1'])).code).toBe(0);
    await Promise.all(['h1', 'h2', 'h3', 'h4'].map((h) => timeUntil(node(h), 'api1', false)));
    await waitFor(() => cluster.controller.writer.state.networks.size === 0, { timeoutMs: 5_000, what: 'per-host networks removed' });
  });

  it('a host without the parent reports parent-missing (and does not churn the IPAM trying)', async () => {
    const c = cluster.controller;
    await c.networks.clusterNetworkCreate({ name: 'pm1', definition: { options: { parent: 'nosuch0' }, subnets: [{ subnet: '198.51.100.0/26' }], ipamOptions: { space: 'pm' } } }, { actor: 'user:test' });
    const seq = c.writer.state.seq;
    await waitFor(
      () => ['h1', 'h2', 'h3', 'h4'].every((h) => c.nodes.get(h)?.report.networkStates.some((n) => n.name === 'pm1' && n.state === 'parent-missing' && n.detail === 'parent interface nosuch0 not found on this host')),
      { timeoutMs: 5_000, what: 'parent-missing reported by every host' },
    );
    await new Promise((r) => setTimeout(r, 2_500)); // more than two reconcile intervals
    expect(c.writer.state.seq).toBe(seq); // no pool requested and released over and over
    for (const h of ['h1', 'h4']) expect(await hasNetwork(node(h), 'pm1')).toBe(false);
    await c.networks.clusterNetworkRemove({ name: 'pm1' }, { actor: 'user:test' });
    await waitFor(() => ['h1', 'h2', 'h3', 'h4'].every((h) => !c.nodes.get(h)?.report.networkStates.some((n) => n.name === 'pm1')), { timeoutMs: 5_000, what: 'pm1 gone from reports' });
  });

  it('an agent killed with SIGKILL turns its node NotReady within the lease; started again, Ready', async () => {
    const c = cluster.controller;
    await waitFor(() => c.nodes.ready('h3'), { timeoutMs: 5_000, what: 'h3 Ready' });
    await cluster.stopAgent('h3', 'SIGKILL');
    const killedAt = Date.now();
    await waitFor(() => !c.nodes.ready('h3'), { timeoutMs: LEASE_MS + 2_000, intervalMs: 50, what: 'h3 NotReady' });
    const took = Date.now() - killedAt;
    expect(took).toBeLessThanOrEqual(LEASE_MS + REPORT_MS);
    expect(c.nodes.ready('h2')).toBe(true);
    expect((await cli(['node', 'ls'])).stdout).toMatch(/^h3\s+NotReady\s/m);
    await cluster.restartAgent('h3');
    await waitFor(() => c.nodes.ready('h3'), { timeoutMs: 10_000, what: 'h3 Ready again' });
    expect((await cli(['node', 'ls'])).stdout).toMatch(/^h3\s+Ready\s/m);
  });
});

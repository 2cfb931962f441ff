/**
 * Host access (`-o host_access=true`, issue 15 item 1) on the host kernel: two lab hosts (network namespaces on a
 * bridge, eth1 198.51.100.<n>/24), a dockerd and an agent each. The network's subnet is the hosts' own LAN, as users
 * set up macvlan (`--ip-range` keeps the containers off the hosts' addresses):
 * - without the option, a host cannot ping its container nor the container its host, as with Docker's macvlan;
 * - with it, each host has a shim `ulh<12 hex>` with a /32 from the cluster IPAM (kind `host`, never a container's),
 *   routes its own blocks through it (proto 202), and host and container ping each other both ways; another host's
 *   container still reaches the host and is reached as before;
 * - an agent restart keeps it and repairs what went meanwhile; `docker network rm` removes the shims and the host
 *   addresses go back.
 */
import { BUSYBOX_IMAGE, waitFor, withLab, type LabHost } from '../lab';
import { containerIp, extraLinks, startCluster, type Cluster, type HostNode } from './support/cluster';

// Measured: the whole file 22 to 31 s on the 2-CPU test VM (most of it dockerd and container starts, and the lab's teardown); the margin is
// for a loaded machine.
jest.setTimeout(240_000);
const ctx = withLab({ hosts: ['h1', 'h2'] });
let cluster: Cluster;

beforeAll(async () => {
  cluster = await startCluster(ctx.lab, [ctx.host('h1'), ctx.host('h2')], { agentArgs: ['--route-reconcile-ms', '1000'] });
}, 300_000);

const SUBNET = ['--subnet', '198.51.100.0/24', '--ip-range', '198.51.100.128/25', '--gateway', '198.51.100.254', '-o', 'parent=eth1'];
const POOL = 'underlay/198.51.100.0/24';

/** A ping's result: true when answered, false when not; throws when ping did not run (so a test can fail). */
function answered(r: { code: number | null; stdout: string; stderr: string }, what: string): boolean {
  if (!/packets transmitted/.test(r.stdout)) throw new Error(`${what} did not run: ${r.stderr || r.stdout}`);
  return r.code === 0;
}
/** ping from a host's namespace (busybox-static: the lab's namespaces have no ping of their own on PATH). */
async function hostPings(h: LabHost, ip: string): Promise<boolean> {
  return answered(await ctx.lab.exec(h, 'busybox', ['ping', '-c', '1', '-W', '2', ip]), `ping ${ip} on ${h.name}`);
}
async function containerPings(n: HostNode, c: string, ip: string): Promise<boolean> {
  return answered(await n.docker.docker(['exec', c, 'ping', '-c', '1', '-W', '2', ip]), `ping ${ip} in ${c}`);
}
async function onHost(n: HostNode, name: string): Promise<void> {
  await waitFor(async () => (await n.docker.docker(['network', 'inspect', name])).code === 0, { timeoutMs: 10_000, intervalMs: 50, what: `network ${name} replicated to ${n.host.name}` });
}
/** The host addresses (kind `host`) the controller has for a node. */
function hostAddresses(node: string): string[] {
  const p = cluster.controller.writer.state.pools.get(POOL);
  if (!p) return [];
  return [...p.allocs].filter(([, a]) => a.kind === 'host' && a.node === node).map(([v]) => `198.51.100.${Number(v & 255n)}`);
}
const networkId = async (n: HostNode, name: string) => (await n.docker.dockerOk(['network', 'inspect', '-f', '{{.Id}}', name])).trim();
/** The shim's addresses (`ip -o -4 addr show dev …`), e.g. ['198.51.100.130/32']. */
async function shimAddresses(h: LabHost, shim: string): Promise<string[]> {
  const r = await ctx.lab.exec(h, 'ip', ['-o', '-4', 'addr', 'show', 'dev', shim]);
  return r.code === 0 ? [...r.stdout.matchAll(/inet (\S+)/g)].map((m) => m[1]!) : [];
}
const routes202 = async (h: LabHost) => (await ctx.lab.execOk(h, 'ip', ['-4', 'route', 'show', 'proto', '202'])).trim();

describe('host access', () => {
  it('without host_access the host and its container cannot reach each other, as with Docker\'s macvlan', async () => {
    const h1 = cluster.nodes.get('h1')!;
    await h1.docker.dockerOk(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', ...SUBNET, 'n0']);
    await h1.docker.dockerOk(['run', '-d', '--name', 'c0', '--network', 'n0', BUSYBOX_IMAGE, 'sleep', '600']);
    const ip = await containerIp(h1.docker, 'c0', 'n0');
    expect(await hostPings(h1.host, ip)).toBe(false);
    expect(await containerPings(h1, 'c0', h1.host.address)).toBe(false);
    expect(await extraLinks(ctx.lab, h1.host)).toEqual([]); // no shim
    expect(hostAddresses('h1')).toEqual([]);
    await h1.docker.dockerOk(['rm', '-f', 'c0']);
    await h1.docker.dockerOk(['network', 'rm', 'n0']);
    await waitFor(async () => (await h1.docker.docker(['network', 'inspect', 'n0'])).code !== 0 && (await cluster.nodes.get('h2')!.docker.docker(['network', 'inspect', 'n0'])).code !== 0, { timeoutMs: 10_000, what: 'n0 gone from both hosts' });
    await waitFor(() => !cluster.controller.writer.state.pools.has(POOL), { timeoutMs: 10_000, what: 'the pool of n0 released' });
  });

  it('with host_access=true host and container ping each other both ways; another host\'s container as before; kept over an agent restart; removed with the network', async () => {
    const h1 = cluster.nodes.get('h1')!;
    const h2 = cluster.nodes.get('h2')!;
    await h1.docker.dockerOk(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', ...SUBNET, '-o', 'host_access=true', 'n1']);
    await onHost(h2, 'n1');
    // Each host's Docker has its own id for the network (h2's is a replica), so its own shim name.
    const shimOf = new Map<HostNode, string>();
    for (const n of [h1, h2]) shimOf.set(n, `ulh${(await networkId(n, 'n1')).slice(0, 12)}`);
    const shim = shimOf.get(h1)!;
    // Each host gets its shim with its /32 from the cluster IPAM.
    for (const n of [h1, h2]) {
      const s = shimOf.get(n)!;
      await waitFor(async () => hostAddresses(n.host.name).length === 1 && (await shimAddresses(n.host, s)).length === 1, { timeoutMs: 15_000, what: `the shim ${s} of ${n.host.name} with its address` });
      expect(await shimAddresses(n.host, s)).toEqual([`${hostAddresses(n.host.name)[0]}/32`]);
      expect(await ctx.lab.execOk(n.host, 'ip', ['-d', 'link', 'show', s])).toContain('macvlan mode bridge');
    }
    const [ha1] = hostAddresses('h1');
    const [ha2] = hostAddresses('h2');
    expect(ha1).not.toBe(ha2);
    // No second connected route for the subnet: the host's own /24 on eth1 stays the only one.
    expect(await ctx.lab.execOk(h1.host, 'ip', ['-4', 'route', 'show', '198.51.100.0/24'])).toMatch(/dev eth1/);
    await h1.docker.dockerOk(['run', '-d', '--name', 'c1', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    await h2.docker.dockerOk(['run', '-d', '--name', 'c2', '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    const ip1 = await containerIp(h1.docker, 'c1', 'n1');
    const ip2 = await containerIp(h2.docker, 'c2', 'n1');
    expect([ip1, ip2]).not.toContain(ha1);
    expect([ip1, ip2]).not.toContain(ha2);
    // h1's block is routed through its shim (the host address is in it too).
    await waitFor(async () => (await routes202(h1.host)).includes(`dev ${shim}`), { timeoutMs: 10_000, what: 'h1\'s block routed through its shim' });
    expect(await routes202(h1.host)).toMatch(new RegExp(`^198\\.51\\.100\\.\\d+/\\d+ dev ${shim} scope link`, 'm'));
    // Both ways on each host.
    expect(await hostPings(h1.host, ip1)).toBe(true);
    expect(await containerPings(h1, 'c1', ha1!)).toBe(true);
    expect(await hostPings(h2.host, ip2)).toBe(true);
    expect(await containerPings(h2, 'c2', ha2!)).toBe(true);
    // Across hosts, as before: the other host's container and host.
    expect(await hostPings(h1.host, ip2)).toBe(true);
    expect(await containerPings(h2, 'c2', ha1!)).toBe(true);
    expect(await containerPings(h1, 'c1', ip2)).toBe(true);

    // Agent restart: nothing changes, and what went while it was down (a route deleted by hand) comes back.
    const before = await routes202(h1.host);
    await cluster.stopAgent('h1');
    expect(await shimAddresses(h1.host, shim)).toEqual([`${ha1}/32`]); // the agent's stop leaves the shim
    const block = before.split('\n')[0]!.split(' ')[0]!;
    await ctx.lab.execOk(h1.host, 'ip', ['route', 'del', block, 'proto', '202']);
    await cluster.restartAgent('h1');
    await waitFor(async () => (await routes202(h1.host)) === before, { timeoutMs: 20_000, what: 'h1\'s routes back after the agent\'s restart' });
    expect(hostAddresses('h1')).toEqual([ha1]);
    expect(await shimAddresses(h1.host, shim)).toEqual([`${ha1}/32`]);
    expect(await hostPings(h1.host, ip1)).toBe(true);
    expect(await containerPings(h1, 'c1', ha1!)).toBe(true);

    // The network goes: the shims go and the host addresses go back.
    await h1.docker.dockerOk(['rm', '-f', 'c1']);
    await h2.docker.dockerOk(['rm', '-f', 'c2']);
    await h1.docker.dockerOk(['network', 'rm', 'n1']);
    for (const n of [h1, h2]) {
      await waitFor(async () => (await extraLinks(ctx.lab, n.host)).length === 0, { timeoutMs: 10_000, what: `the shim gone from ${n.host.name}` });
      expect(await routes202(n.host)).toBe('');
    }
    await waitFor(() => hostAddresses('h1').length === 0 && hostAddresses('h2').length === 0, { timeoutMs: 10_000, what: 'the host addresses released' });
  });
});

/**
 * One host, real dockerd and a real agent: a macvlan network from underlay, two containers that
 * ping each other, and nothing left behind after `docker network rm`.
 */
import { BUSYBOX_IMAGE, runOk, withLab } from '../lab';
import { containerIp, extraLinks, pluginPost as post, startCluster, type Cluster } from './support/cluster';

jest.setTimeout(240_000);
const ctx = withLab({ hosts: ['h1'] });
let cluster: Cluster;

beforeAll(async () => {
  cluster = await startCluster(ctx.lab, [ctx.host('h1')]);
}, 300_000);

describe('one host', () => {
  it('speaks the plugin protocol on its socket: Activate, capabilities, Err vs Error', async () => {
    const sock = cluster.nodes.get('h1')!.docker.pluginSocket();
    expect(await post(sock, '/Plugin.Activate', '')).toEqual({ Implements: ['NetworkDriver', 'IpamDriver', 'authz'] });
    expect(await post(sock, '/NetworkDriver.GetCapabilities', '')).toEqual({ Scope: 'local', ConnectivityScope: 'global' });
    expect(await post(sock, '/IpamDriver.GetCapabilities', '')).toEqual({ RequiresMACAddress: false, RequiresRequestReplay: false });
    expect(await post(sock, '/IpamDriver.GetDefaultAddressSpaces', '')).toEqual({ LocalDefaultAddressSpace: 'underlay', GlobalDefaultAddressSpace: 'underlay-global' });
    expect(await post(sock, '/NetworkDriver.DiscoverNew', '{"DiscoveryType":1,"DiscoveryData":{}}')).toEqual({});
    // NetworkDriver errors use Err, IpamDriver errors use Error (both on HTTP 200).
    expect(await post(sock, '/NetworkDriver.Leave', '{"NetworkID":"n","EndpointID":"e"}')).toEqual({ Err: 'endpoint id "e" not found' });
    const ipamErr = (await post(sock, '/IpamDriver.RequestAddress', '{"PoolID":"underlay/203.0.113.0/24","Address":""}')) as { Error?: string };
    expect(ipamErr.Error).toMatch(/unknown pool underlay\/203.0.113.0\/24/);
  });

  it('refuses a network that would use Docker\'s host-local IPAM, saying what to type instead', async () => {
    const d = cluster.nodes.get('h1')!.docker;
    const r = await d.docker(['network', 'create', '-d', 'underlay', '--subnet', '192.0.2.0/24', '-o', 'parent=eth1', 'bad']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('same address would be handed out on several hosts');
    expect(r.stderr).toContain('--ipam-driver underlay --subnet 192.0.2.0/24');
  });

  it('refuses bad options with the option and the allowed values', async () => {
    const d = cluster.nodes.get('h1')!.docker;
    const r = await d.docker(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '192.0.2.0/24', '-o', 'parent=eth1', '-o', 'macvlan_mode=bogus', 'bad2']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("requested macvlan mode 'bogus' is not valid, 'bridge' mode is the macvlan driver default (allowed: bridge, private, vepa, passthru)");
    const r2 = await d.docker(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '192.0.2.0/24', '-o', 'parent=eth9', 'bad3']);
    expect(r2.stderr).toContain('-o parent interface was not found on the host: eth9');
  });

  it('puts two containers on a macvlan network where they ping each other, and cleans up', async () => {
    const { docker: d, host } = cluster.nodes.get('h1')!;
    await d.dockerOk(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', '192.0.2.0/24', '--gateway', '192.0.2.1', '-o', 'parent=eth1', 'n1']);
    for (const c of ['c1', 'c2']) await d.dockerOk(['run', '-d', '--name', c, '--network', 'n1', BUSYBOX_IMAGE, 'sleep', '600']);
    const ip1 = await containerIp(d, 'c1', 'n1');
    const ip2 = await containerIp(d, 'c2', 'n1');
    expect(ip1).toMatch(/^192\.0\.2\.\d+$/);
    expect(ip2).toMatch(/^192\.0\.2\.\d+$/);
    expect(ip1).not.toBe(ip2);
    expect([ip1, ip2]).not.toContain('192.0.2.1');
    // Inside the container: a macvlan eth0 and the default route via the gateway.
    const route = await d.dockerOk(['exec', 'c1', 'ip', 'route']);
    expect(route).toContain('default via 192.0.2.1 dev eth0');
    const sandbox = d.sandboxPath((await d.dockerOk(['inspect', '-f', '{{.NetworkSettings.SandboxKey}}', 'c1'])).trim());
    const link = await runOk('nsenter', [`--net=${sandbox}`, 'ip', '-d', 'link', 'show', 'eth0']);
    expect(link).toContain('macvlan mode bridge');
    await d.dockerOk(['exec', 'c1', 'ping', '-c', '2', '-W', '3', ip2]);
    await d.dockerOk(['exec', 'c2', 'ping', '-c', '2', '-W', '3', ip1]);
    await d.dockerOk(['rm', '-f', 'c1', 'c2']);
    await d.dockerOk(['network', 'rm', 'n1']);
    expect(await extraLinks(ctx.lab, host)).toEqual([]);
    // The controller released the endpoints and, with the last holder gone, the pool.
    expect([...cluster.controller.writer.state.pools.keys()]).not.toContain('underlay/192.0.2.0/24');
  });
});

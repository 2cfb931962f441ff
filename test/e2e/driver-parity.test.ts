/**
 * Driver parity on the host kernel (macvlan only here; ipvlan, 802.1q and dummy are tested in
 * user-mode-linux): every macvlan mode, the parent rules, name resolution, and an agent restart
 * with running containers.
 */
import { BUSYBOX_IMAGE, runOk, waitFor, withLab, type Dockerd, type LabHost } from '../lab';
import { containerIp, extraLinks, startCluster, type Cluster } from './support/cluster';

jest.setTimeout(240_000);
const ctx = withLab({ hosts: ['h1'] });
let cluster: Cluster;
let d: Dockerd;
let host: LabHost;

beforeAll(async () => {
  cluster = await startCluster(ctx.lab, [ctx.host('h1')]);
  d = cluster.nodes.get('h1')!.docker;
  host = ctx.host('h1');
}, 300_000);

const create = (name: string, subnet: string, ...opts: string[]) =>
  d.docker(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', subnet, ...opts.flatMap((o) => ['-o', o]), name]);
const run = (name: string, net: string) => d.dockerOk(['run', '-d', '--name', name, '--network', net, BUSYBOX_IMAGE, 'sleep', '600']);
const canPing = async (from: string, ip: string) => (await d.docker(['exec', from, 'ping', '-c', '1', '-W', '2', ip])).code === 0;
const cleanup = async (containers: string[], networks: string[]) => {
  if (containers.length) await d.docker(['rm', '-f', ...containers]);
  for (const n of networks) await d.dockerOk(['network', 'rm', n]);
  expect(await extraLinks(ctx.lab, host)).toEqual([]);
};

describe('macvlan modes', () => {
  it('bridge: containers on one parent talk to each other, and resolve each other by name', async () => {
    expect((await create('mb', '192.0.2.0/24', 'parent=eth1', 'macvlan_mode=bridge')).code).toBe(0);
    await run('b1', 'mb');
    await run('b2', 'mb');
    const ip2 = await containerIp(d, 'b2', 'mb');
    expect(await canPing('b1', ip2)).toBe(true);
    // The MAC is derived from the IPv4 address as libnetwork does (unique, since addresses are unique cluster-wide).
    const mac2 = (await d.dockerOk(['exec', 'b2', 'cat', '/sys/class/net/eth0/address'])).trim();
    const octets = ip2.split('.').map((x) => Number(x).toString(16).padStart(2, '0'));
    expect(mac2).toBe(`02:42:${octets.join(':')}`);
    // Docker's embedded DNS answers for underlay networks as for the built-in drivers.
    await d.dockerOk(['exec', 'b1', 'ping', '-c', '1', '-W', '2', 'b2']);
    await d.dockerOk(['exec', 'b2', 'ping', '-c', '1', '-W', '2', 'b1']);
    await cleanup(['b1', 'b2'], ['mb']);
  });

  it('private: containers on one parent cannot talk to each other', async () => {
    expect((await create('mp', '192.0.2.0/24', 'parent=eth1', 'macvlan_mode=private')).code).toBe(0);
    await run('p1', 'mp');
    await run('p2', 'mp');
    const link = await d.dockerOk(['exec', 'p1', 'cat', '/sys/class/net/eth0/address']);
    expect(link.trim()).toMatch(/^[0-9a-f:]{17}$/);
    expect(await canPing('p1', await containerIp(d, 'p2', 'mp'))).toBe(false);
    await cleanup(['p1', 'p2'], ['mp']);
  });

  it('vepa: traffic between containers goes out to the switch (it comes back only with hairpin on)', async () => {
    expect((await create('mv', '192.0.2.0/24', 'parent=eth1', 'macvlan_mode=vepa')).code).toBe(0);
    await run('v1', 'mv');
    await run('v2', 'mv');
    const ip2 = await containerIp(d, 'v2', 'mv');
    expect(await canPing('v1', ip2)).toBe(false);
    // The lab's "switch" is a Linux bridge: turn on hairpin on this host's port and VEPA frames come back.
    await runOk('bridge', ['link', 'set', 'dev', host.vethRoot, 'hairpin', 'on']);
    try {
      await waitFor(() => canPing('v1', ip2), { timeoutMs: 10_000, what: 'vepa ping through the hairpin' });
    } finally {
      await runOk('bridge', ['link', 'set', 'dev', host.vethRoot, 'hairpin', 'off']);
    }
    await cleanup(['v1', 'v2'], ['mv']);
  });

  it('passthru: one container takes the parent alone', async () => {
    // Not on eth1: passthru hands the whole parent to the container, and eth1 carries this host's own traffic.
    await ctx.lab.execOk(host, 'ip', ['link', 'add', 'par3', 'type', 'veth', 'peer', 'name', 'par3p']);
    try {
      expect((await create('mt', '192.0.2.0/24', 'parent=par3', 'macvlan_mode=passthru')).code).toBe(0);
      await run('t1', 'mt');
      const r = await d.docker(['run', '-d', '--name', 't2', '--network', 'mt', BUSYBOX_IMAGE, 'sleep', '600']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain('failed to create the macvlan port');
      await d.docker(['rm', '-f', 't2', 't1']);
      await d.dockerOk(['network', 'rm', 'mt']);
    } finally {
      await ctx.lab.exec(host, 'ip', ['link', 'del', 'par3']);
    }
    expect(await extraLinks(ctx.lab, host)).toEqual([]);
  });
});

describe('gateways', () => {
  it('--internal: containers talk to each other but get no gateway', async () => {
    const r = await d.docker(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--internal', '--subnet', '192.0.2.0/24', '-o', 'parent=eth1', 'ni']);
    expect(r.code).toBe(0);
    await run('n1', 'ni');
    await run('n2', 'ni');
    expect(await canPing('n1', await containerIp(d, 'n2', 'ni'))).toBe(true);
    expect(await d.dockerOk(['exec', 'n1', 'ip', 'route'])).not.toContain('default');
    await cleanup(['n1', 'n2'], ['ni']);
  });

  it('dual stack: IPv4 and IPv6 addresses and both gateways', async () => {
    const r = await d.docker(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--ipv6', '--subnet', '192.0.2.0/24', '--gateway', '192.0.2.1',
      '--subnet', '2001:db8:5::/64', '--gateway', '2001:db8:5::1', '-o', 'parent=eth1', 'ds']);
    expect(r.code).toBe(0);
    await run('ds1', 'ds');
    await run('ds2', 'ds');
    const v6 = (await d.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "ds").GlobalIPv6Address}}', 'ds2'])).trim();
    expect(v6).toMatch(/^2001:db8:5::[0-9a-f]+$/);
    expect(await d.dockerOk(['exec', 'ds1', 'ip', '-6', 'route'])).toContain('default via 2001:db8:5::1 dev eth0');
    expect(await d.dockerOk(['exec', 'ds1', 'ip', 'route'])).toContain('default via 192.0.2.1 dev eth0');
    await waitFor(() => canPing('ds1', v6), { timeoutMs: 10_000, what: 'IPv6 ping (after duplicate address detection)' });
    await cleanup(['ds1', 'ds2'], ['ds']);
  });
});

describe('parent rules', () => {
  it('refuses macvlan and ipvlan on one parent, a second ipvlan network, and sharing with passthru, naming the other network', async () => {
    // A second parent for the ipvlan cases.
    await ctx.lab.execOk(host, 'ip', ['link', 'add', 'par2', 'type', 'veth', 'peer', 'name', 'par2p']);
    try {
      expect((await create('ma', '192.0.2.0/25', 'parent=eth1')).code).toBe(0);
      expect((await create('mb2', '192.0.2.128/25', 'parent=eth1')).code).toBe(0); // macvlan networks may share a parent
      const mixed = await create('ia', '203.0.113.0/25', 'parent=eth1', 'ipvlan_mode=l2');
      expect(mixed.stderr).toMatch(/macvlan network (ma|mb2) is already using parent interface eth1: macvlan and ipvlan cannot share a parent/);
      const pt = await create('pt', '203.0.113.0/25', 'parent=eth1', 'macvlan_mode=passthru');
      expect(pt.stderr).toMatch(/cannot use mode passthru, macvlan network (ma|mb2) is already using parent interface eth1/);
      expect((await create('i1', '203.0.113.0/25', 'parent=par2', 'type=ipvlan')).code).toBe(0);
      const second = await create('i2', '203.0.113.128/25', 'parent=par2', 'type=ipvlan');
      expect(second.stderr).toContain('network i1 is already using parent interface par2');
      const mac = await d.docker(['run', '-d', '--name', 'im', '--network', 'i1', '--mac-address', '02:11:22:33:44:55', BUSYBOX_IMAGE, 'true']);
      expect(mac.stderr).toContain('ipvlan interfaces do not support custom mac address assignment');
      await d.docker(['rm', '-f', 'im']);
      const bad = await create('bad', '198.51.100.0/25', 'parent=eth1', 'type=ipvlan', 'macvlan_mode=bridge');
      expect(bad.stderr).toContain('option macvlan_mode cannot be used with type=ipvlan');
      for (const n of ['ma', 'mb2', 'i1']) await d.dockerOk(['network', 'rm', n]);
    } finally {
      await ctx.lab.exec(host, 'ip', ['link', 'del', 'par2']);
    }
    expect(await extraLinks(ctx.lab, host)).toEqual([]);
  });
});

describe('agent restart', () => {
  it('keeps running containers connected during and after a restart, restores the network, and removes stale links', async () => {
    const node = cluster.nodes.get('h1')!;
    expect((await create('rn', '192.0.2.0/24', 'parent=eth1')).code).toBe(0);
    await run('r1', 'rn');
    await run('r2', 'rn');
    const ip2 = await containerIp(d, 'r2', 'rn');
    process.kill(node.agent.pid, 'SIGKILL');
    await node.agent.exited;
    // A link a crashed agent left behind (as if created at Join, then never handed to a container).
    await ctx.lab.execOk(host, 'ip', ['link', 'add', 'ul0123456789a', 'link', 'eth1', 'type', 'macvlan', 'mode', 'bridge']);
    expect(await canPing('r1', ip2)).toBe(true); // no agent: the data path is the kernel's
    node.agent = await cluster.startAgent(host, d);
    await waitFor(async () => !(await extraLinks(ctx.lab, host)).includes('ul0123456789a'), { timeoutMs: 10_000, what: 'the stale link to be removed' });
    expect(await canPing('r1', ip2)).toBe(true);
    // The restored agent knows the network and its endpoints: new containers join, old ones leave cleanly.
    await run('r3', 'rn');
    expect(await canPing('r3', ip2)).toBe(true);
    await cleanup(['r1', 'r2', 'r3'], ['rn']);
  });
});

/**
 * Driver parity on the host kernel (macvlan only here; ipvlan, 802.1q and dummy are tested in
 * user-mode-linux): every macvlan mode, the parent rules, name resolution, and an agent restart
 * with running containers. Lab host h1 runs dockerd and the agent; h2 is a bare namespace on the same
 * switch, used as an outside machine (the private-mode test's peer).
 */
import { BUSYBOX_IMAGE, runOk, waitFor, withLab, type Dockerd, type LabHost } from '../lab';
import { containerIp, extraLinks, startCluster, type Cluster } from './support/cluster';

jest.setTimeout(240_000);
// h2 has no dockerd and no agent: it is an outside machine on the same switch (the private test's peer).
const ctx = withLab({ hosts: ['h1', 'h2'] });
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
/**
 * The private test's subnet and its outside peer's address (on h2, kept out of the IPAM with --aux-address).
 * Not 192.0.2.0/24, which holds this machine's own eth0 address (192.0.2.2): a peer pinging that must never be
 * answered by anything but a container (the lab bridge has arp_ignore=1 for that reason too).
 */
const PRIVATE_SUBNET = '203.0.113.0/24';
const PEER_IP = '203.0.113.250';
/** libnetwork's MAC for an IPv4 address: 02:42 and the four octets. */
const macOf = (ip: string) => `02:42:${ip.split('.').map((x) => Number(x).toString(16).padStart(2, '0')).join(':')}`;
interface IpLink {
  address?: string;
  operstate?: string;
  linkinfo?: { info_kind?: string; info_data?: { mode?: string } };
  addr_info?: Array<{ family: string; local: string; prefixlen: number }>;
}
/** The container's eth0 as the kernel reports it (`ip -d -j addr` of the host's iproute2 in its netns). */
const containerLink = async (name: string): Promise<IpLink> => {
  const pid = (await d.dockerOk(['inspect', '-f', '{{.State.Pid}}', name])).trim();
  return (JSON.parse(await runOk('nsenter', ['-t', pid, '-n', 'ip', '-d', '-j', 'addr', 'show', 'dev', 'eth0'])) as IpLink[])[0]!;
};
const txPackets = async (name: string) => Number((await d.dockerOk(['exec', name, 'cat', '/sys/class/net/eth0/statistics/tx_packets'])).trim());
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

  it('private: both containers are up and reachable from outside, yet cannot reach each other, even through a hairpin switch', async () => {
    // --aux-address keeps the outside peer's address out of the IPAM.
    const made = await d.docker(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', '--subnet', PRIVATE_SUBNET, '--aux-address', `peer=${PEER_IP}`, '-o', 'parent=eth1', '-o', 'macvlan_mode=private', 'mp']);
    expect({ code: made.code, stderr: made.stderr }).toEqual({ code: 0, stderr: '' });
    await run('p1', 'mp');
    await run('p2', 'mp');
    const ends = [];
    for (const name of ['p1', 'p2']) {
      const ip = await containerIp(d, name, 'mp');
      // The kernel made the container's eth0 a macvlan in mode private, up, with the address.
      const link = await containerLink(name);
      expect({ name, kind: link.linkinfo?.info_kind, mode: link.linkinfo?.info_data?.mode, up: link.operstate, addr: link.addr_info?.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`) })
        .toEqual({ name, kind: 'macvlan', mode: 'private', up: 'UP', addr: [`${ip}/24`] });
      ends.push({ name, ip, mac: link.address! });
    }
    const [p1, p2] = ends as [typeof ends[0], typeof ends[0]];
    // The MAC is the one libnetwork derives from the address: unique per container since the address is.
    for (const e of [p1, p2]) expect(e.mac).toBe(macOf(e.ip));
    expect(p1.mac).not.toBe(p2.mac);

    // Positive control: a bridge-mode macvlan peer on another lab host (same switch, same subnet) reaches both,
    // and the answer came from each container's own link (the peer learned exactly that MAC for that address).
    const peer = ctx.host('h2');
    await ctx.lab.execOk(peer, 'ip', ['link', 'add', 'ulpeer', 'link', peer.parent, 'type', 'macvlan', 'mode', 'bridge']);
    try {
      await ctx.lab.execOk(peer, 'ip', ['addr', 'add', `${PEER_IP}/24`, 'dev', 'ulpeer']);
      await ctx.lab.execOk(peer, 'ip', ['link', 'set', 'ulpeer', 'up']);
      for (const e of [p1, p2]) {
        await waitFor(async () => (await ctx.lab.exec(peer, 'busybox', ['ping', '-c', '1', '-W', '2', e.ip])).code === 0, { timeoutMs: 15_000, what: `the outside peer ${PEER_IP} on h2 to ping ${e.name} ${e.ip}` });
        const neigh = JSON.parse(await ctx.lab.execOk(peer, 'ip', ['-j', 'neigh', 'show', e.ip, 'dev', 'ulpeer'])) as Array<{ lladdr?: string }>;
        expect({ ip: e.ip, lladdr: neigh[0]?.lladdr }).toEqual({ ip: e.ip, lladdr: e.mac });
        // Each container's own path out works too: it pings the peer.
        expect({ from: e.name, ok: await canPing(e.name, PEER_IP) }).toEqual({ from: e.name, ok: true });
      }

      // The absence: pings between the two go out (transmitted, and eth0 sent frames) and get no reply: on a plain
      // switch, and with hairpin on this host's switch port (a vepa network talks then, see below; private must not).
      const isolated = async (from: typeof p1, to: typeof p1, how: string) => {
        const before = await txPackets(from.name);
        const r = await d.docker(['exec', from.name, 'ping', '-c', '3', '-W', '1', to.ip]);
        const out = `${r.stdout}${r.stderr}`;
        const sent = Number(/(\d+) packets transmitted/.exec(out)?.[1] ?? 0);
        const received = Number(/(\d+) packets received/.exec(out)?.[1] ?? -1);
        const tx = (await txPackets(from.name)) - before;
        expect({ how, from: from.name, to: to.ip, code: r.code, sent, received, txFrames: tx > 0 }).toEqual({ how, from: from.name, to: to.ip, code: 1, sent: 3, received: 0, txFrames: true });
      };
      await isolated(p1, p2, 'plain switch');
      await runOk('bridge', ['link', 'set', 'dev', host.vethRoot, 'hairpin', 'on']);
      try {
        await isolated(p1, p2, 'hairpin switch');
        await isolated(p2, p1, 'hairpin switch');
      } finally {
        await runOk('bridge', ['link', 'set', 'dev', host.vethRoot, 'hairpin', 'off']);
      }
      // And the two are still up: the peer reaches both after the attempts.
      for (const e of [p1, p2]) expect({ to: e.name, code: (await ctx.lab.exec(peer, 'busybox', ['ping', '-c', '1', '-W', '2', e.ip])).code }).toEqual({ to: e.name, code: 0 });
    } finally {
      await ctx.lab.exec(peer, 'ip', ['link', 'del', 'ulpeer']);
    }
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
      // Named as the user typed it, with Docker's short id (libnetwork names the id only).
      const shortId = async (n: string) => (await d.dockerOk(['network', 'inspect', '-f', '{{.Id}}', n])).trim().slice(0, 12);
      const either = `("ma" \\(${await shortId('ma')}\\)|"mb2" \\(${await shortId('mb2')}\\))`;
      const mixed = await create('ia', '203.0.113.0/25', 'parent=eth1', 'ipvlan_mode=l2');
      expect(mixed.stderr).toMatch(new RegExp(`macvlan network ${either} is already using parent interface eth1: macvlan and ipvlan cannot share a parent`));
      const pt = await create('pt', '203.0.113.0/25', 'parent=eth1', 'macvlan_mode=passthru');
      expect(pt.stderr).toMatch(new RegExp(`cannot use mode passthru, macvlan network ${either} is already using parent interface eth1`));
      expect((await create('i1', '203.0.113.0/25', 'parent=par2', 'type=ipvlan')).code).toBe(0);
      const second = await create('i2', '203.0.113.128/25', 'parent=par2', 'type=ipvlan');
      expect(second.stderr).toContain(`network "i1" (${await shortId('i1')}) is already using parent interface par2`);
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

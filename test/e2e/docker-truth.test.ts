/**
 * Issue 16's acceptance on real parts: two lab hosts, each with its own dockerd (this machine's docker.io 20.10) and a
 * real agent, one controller on real etcd and NATS.
 *  - Point-to-point networks: a /31 across the two hosts gives its two addresses to two containers, which ping each
 *    other, with no default route and no docker_gwbridge (no gateway without --gateway); the same with a /127
 *    (`--ipv6 --internal`, dual stack with a /31). A third container finds the subnet full.
 *  - Overlap refusals as `docker network create` shows them (moby's TestMacvlanIPAMOverlap shape first): each names
 *    the network holding the subnet, with its hosts, and says what to do; following the hint (`--ipam-opt space=`)
 *    works.
 *  - Docker is the truth on its host: Docker's network database removed while the agent and dockerd are down, and the
 *    network removed from the cluster meanwhile: the agent removes its record at start, logs it, tells the controller
 *    (the host's member and pool go), and the same network is created again with no "already used" refusal. Then the
 *    issue's own scenario: dockerd's data root reset under a kept state directory, with a container on the network:
 *    the phantom network and endpoint records go (logged), the container's address is given back by the agent (not
 *    the leak collector), the cluster's definition brings the network back as a fresh Docker network, and once it is
 *    removed, a passthru network is created on the parent the phantom held. And the check leaves address holds alone: a
 *    `--restart always` container comes back with its address after a dockerd power cut.
 *
 * The leak collector runs at its default period (30 s, two sightings): whatever the controller frees within these
 * waits, the agent freed. Waits: replication and reconcile passes are 1 s (measured 0.2 s); the agent's start and
 * its check against Docker take 1-3 s here (limit 20 s); IPv6 ping waits out duplicate address detection (10 s).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BUSYBOX_IMAGE, importBusybox, startDockerd, waitFor, withLab } from '../lab';
import { containerIp, extraLinks, startCluster, type Cluster, type HostNode } from './support/cluster';

jest.setTimeout(300_000);
const ctx = withLab({ hosts: ['h1', 'h2'] });
let cluster: Cluster;

beforeAll(async () => {
  cluster = await startCluster(ctx.lab, [ctx.host('h1'), ctx.host('h2')], {
    reportIntervalMs: 500,
    agentArgs: ['--reconcile-interval-ms', '1000'],
  });
}, 300_000);

const node = (name: string): HostNode => cluster.nodes.get(name)!;
const state = () => cluster.controller.writer.state;
const agentLog = (name: string) => fs.readFileSync(node(name).agent.logFile, 'utf8');
const create = (n: HostNode, name: string, ...args: string[]) => n.docker.docker(['network', 'create', '-d', 'underlay', '--ipam-driver', 'underlay', ...args, name]);
const runOn = (n: HostNode, name: string, net: string) => n.docker.dockerOk(['run', '-d', '--name', name, '--network', net, BUSYBOX_IMAGE, 'sleep', '600']);
const networkId = async (n: HostNode, name: string) => (await n.docker.dockerOk(['network', 'inspect', '-f', '{{.Id}}', name])).trim();
const hasNetwork = async (n: HostNode, name: string) => (await n.docker.docker(['network', 'inspect', name])).code === 0;
async function onHost(n: HostNode, name: string, present: boolean, timeoutMs = 10_000): Promise<void> {
  await waitFor(async () => (await hasNetwork(n, name)) === present, { timeoutMs, intervalMs: 100, what: `network ${name} ${present ? 'on' : 'gone from'} ${n.host.name}` });
}
/** The first line of a refusal as the docker CLI prints it. */
const refusal = (r: { code: number | null; stderr: string }) => {
  expect(r.code).not.toBe(0);
  return r.stderr.trim().split('\n')[0]!;
};
/** The member networks the controller holds for `node` (network ids). */
const membersOn = (nodeName: string) => [...state().networks.values()].filter((n) => n.node === nodeName).map((n) => n.networkId);
/** The releases of `address` the event log holds, with who and why. */
async function releasesOf(address: string): Promise<{ node: unknown; reason: unknown }[]> {
  const events = await cluster.controller.log.readAll(1);
  return events.flatMap((e) => (e.type === 'AddressReleased' && e.data.address === address ? [{ node: e.data.node, reason: e.data.reason }] : []));
}

describe('point-to-point networks (docker.io 20.10)', () => {
  it('/31 across two hosts: both addresses go to containers, which ping each other; no gateway, no default route, no docker_gwbridge', async () => {
    const made = await create(node('h1'), 'pp4', '--subnet', '203.0.113.232/31', '-o', 'parent=eth1');
    expect({ code: made.code, stderr: made.stderr }).toEqual({ code: 0, stderr: '' });
    await onHost(node('h2'), 'pp4', true);
    // Docker before 28 asks for a gateway anyway (20.10 does not show the answer: only a --gateway given); nothing is
    // reserved for it.
    const ipam = JSON.parse(await node('h1').docker.dockerOk(['network', 'inspect', '-f', '{{json .IPAM.Config}}', 'pp4']));
    expect(ipam).toEqual([{ Subnet: '203.0.113.232/31' }]);
    const pool = state().pools.get('underlay/203.0.113.232/31')!;
    expect([...pool.allocs.values()].filter((a) => a.kind === 'gateway')).toEqual([]);

    await runOn(node('h1'), 'a1', 'pp4');
    await runOn(node('h2'), 'a2', 'pp4');
    const ip1 = await containerIp(node('h1').docker, 'a1', 'pp4');
    const ip2 = await containerIp(node('h2').docker, 'a2', 'pp4');
    expect([ip1, ip2].sort()).toEqual(['203.0.113.232', '203.0.113.233']);
    await node('h1').docker.dockerOk(['exec', 'a1', 'ping', '-c', '2', '-W', '3', ip2]);
    await node('h2').docker.dockerOk(['exec', 'a2', 'ping', '-c', '2', '-W', '3', ip1]);
    for (const [h, c] of [['h1', 'a1'], ['h2', 'a2']] as const) {
      const d = node(h).docker;
      // The /31 on-link route only; only lo and eth0 (no docker_gwbridge leg), and Docker made no docker_gwbridge.
      expect((await d.dockerOk(['exec', c, 'ip', 'route'])).trim()).toMatch(/^203\.0\.113\.232\/31 dev eth0 [^\n]*$/);
      expect((await d.dockerOk(['exec', c, 'ls', '/sys/class/net'])).split(/\s+/).filter(Boolean).sort()).toEqual(['eth0', 'lo']);
      expect(await d.dockerOk(['network', 'ls', '--format', '{{.Name}}'])).not.toContain('docker_gwbridge');
    }
    // Both addresses are taken: a third container finds the subnet full.
    const third = await node('h1').docker.docker(['run', '-d', '--name', 'a3', '--network', 'pp4', BUSYBOX_IMAGE, 'sleep', '600']);
    expect(refusal(third)).toContain('no free address in 203.0.113.232/31');
    await node('h1').docker.docker(['rm', '-f', 'a3']);

    await node('h1').docker.dockerOk(['rm', '-f', 'a1']);
    await node('h2').docker.dockerOk(['rm', '-f', 'a2']);
    await node('h1').docker.dockerOk(['network', 'rm', 'pp4']);
    await onHost(node('h2'), 'pp4', false);
    await waitFor(() => !state().pools.has('underlay/203.0.113.232/31'), { timeoutMs: 5_000, what: 'the /31 pool released' });
  });

  it('/127 (--ipv6 --internal, with a /31): both IPv6 addresses go to containers on two hosts, which ping each other', async () => {
    const made = await create(node('h1'), 'pp6', '--ipv6', '--internal', '--subnet', '203.0.113.234/31', '--subnet', '2001:db8:16::/127', '-o', 'parent=eth1');
    expect({ code: made.code, stderr: made.stderr }).toEqual({ code: 0, stderr: '' });
    await onHost(node('h2'), 'pp6', true);
    await runOn(node('h1'), 'b1', 'pp6');
    await runOn(node('h2'), 'b2', 'pp6');
    const v6 = async (h: string, c: string) => (await node(h).docker.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "pp6").GlobalIPv6Address}}', c])).trim();
    const a1 = await v6('h1', 'b1');
    const a2 = await v6('h2', 'b2');
    expect([a1, a2].sort()).toEqual(['2001:db8:16::', '2001:db8:16::1']);
    expect([await containerIp(node('h1').docker, 'b1', 'pp6'), await containerIp(node('h2').docker, 'b2', 'pp6')].sort()).toEqual(['203.0.113.234', '203.0.113.235']);
    await waitFor(async () => (await node('h1').docker.docker(['exec', 'b1', 'ping', '-6', '-c', '1', '-W', '2', a2])).code === 0, { timeoutMs: 10_000, what: 'IPv6 ping b1 → b2 (after duplicate address detection)' });
    await node('h2').docker.dockerOk(['exec', 'b2', 'ping', '-6', '-c', '2', '-W', '3', a1]);
    expect(await node('h1').docker.dockerOk(['exec', 'b1', 'ip', '-6', 'route'])).not.toContain('default');
    const pool6 = state().pools.get('underlay/2001:db8:16::/127')!;
    expect([...pool6.allocs.values()].map((a) => a.kind).sort()).toEqual(['endpoint', 'endpoint']);
    await node('h1').docker.dockerOk(['rm', '-f', 'b1']);
    await node('h2').docker.dockerOk(['rm', '-f', 'b2']);
    await node('h2').docker.dockerOk(['network', 'rm', 'pp6']);
    await onHost(node('h1'), 'pp6', false);
    await waitFor(() => state().pools.size === 0, { timeoutMs: 5_000, what: 'the point-to-point pools released' });
  });
});

describe('overlap refusals as docker network create shows them', () => {
  it('name the network holding the subnet, with its hosts, and say what to do; the hint works', async () => {
    const h1 = node('h1');
    const made = await create(h1, 'macvlannet1', '--subnet', '198.51.100.176/28', '--ip-range', '198.51.100.176/29', '-o', 'parent=eth1');
    expect(made.code).toBe(0);
    await onHost(node('h2'), 'macvlannet1', true);
    const named = () => [...state().networks.values()].filter((n) => n.name === 'macvlannet1').map((n) => n.node).sort().join();
    await waitFor(() => named() === 'h1,h2', { timeoutMs: 10_000, what: 'macvlannet1 named on both hosts' });
    const hint = 'use another subnet, or --ipam-opt space=NAME for the same subnet on another VLAN';

    // moby's TestMacvlanIPAMOverlap: the same subnet with another --ip-range.
    const other = await create(h1, 'macvlannet2', '--subnet', '198.51.100.176/28', '--ip-range', '198.51.100.184/29', '-o', 'parent=eth1');
    const otherText = refusal(other);
    process.stderr.write(`docker network create macvlannet2: ${otherText}\n`);
    expect(otherText).toContain(
      `subnet 198.51.100.176/28 is already in use in the cluster by network "macvlannet1" (on h1, h2) with --ip-range 198.51.100.176/29; ${hint} (a replica of network "macvlannet1" (on h1, h2) needs the same --ip-range 198.51.100.176/29)`,
    );
    // An overlapping subnet.
    const overlap = await create(node('h2'), 'macvlannet3', '--subnet', '198.51.100.176/29', '-o', 'parent=eth1');
    const overlapText = refusal(overlap);
    process.stderr.write(`docker network create macvlannet3: ${overlapText}\n`);
    expect(overlapText).toContain(`subnet 198.51.100.176/29 overlaps with 198.51.100.176/28 of network "macvlannet1" (on h1, h2), already in use in address space "underlay"; ${hint}`);
    // The same definition under a second name on a host that has it.
    const twice = await create(h1, 'macvlannet4', '--subnet', '198.51.100.176/28', '--ip-range', '198.51.100.176/29', '-o', 'parent=eth1');
    const twiceText = refusal(twice);
    process.stderr.write(`docker network create macvlannet4: ${twiceText}\n`);
    expect(twiceText).toContain(`subnet 198.51.100.176/28 is already used on this host by network "macvlannet1" (on h1); ${hint}`);
    // No refused network is left in Docker.
    for (const n of ['macvlannet2', 'macvlannet3', 'macvlannet4']) expect(await hasNetwork(h1, n)).toBe(false);

    // The hint: the same subnet in its own address space is accepted.
    const spaced = await create(h1, 'macvlannet2', '--subnet', '198.51.100.176/28', '--ip-range', '198.51.100.184/29', '--ipam-opt', 'space=vlan2', '-o', 'parent=eth1');
    expect({ code: spaced.code, stderr: spaced.stderr }).toEqual({ code: 0, stderr: '' });
    await onHost(node('h2'), 'macvlannet2', true);
    for (const n of ['macvlannet1', 'macvlannet2']) await h1.docker.dockerOk(['network', 'rm', n]);
    for (const n of ['macvlannet1', 'macvlannet2']) await onHost(node('h2'), n, false);
    await waitFor(() => state().pools.size === 0, { timeoutMs: 5_000, what: 'pools released' });
  });
});

describe('Docker is the truth on its host', () => {
  /** Stops the host's agent, then its dockerd (`crash`: a power cut), runs `lose` on the stopped dockerd's directory, and starts dockerd again. */
  async function downAndBack(name: string, how: 'stop' | 'crash', lose: (dockerDir: string) => void): Promise<void> {
    const n = node(name);
    await cluster.stopAgent(name);
    await (how === 'crash' ? n.docker.crash() : n.docker.stop());
    lose(n.docker.dir);
    n.docker = await startDockerd(ctx.lab, n.host);
    await importBusybox(n.docker);
    expect((await n.docker.dockerOk(['network', 'ls', '--filter', 'driver=underlay', '--format', '{{.Name}}'])).trim()).toBe('');
  }
  /** Restarts the agent and returns its log from this start on, once it has logged its check against Docker. */
  async function restartAndCheck(name: string): Promise<string> {
    const before = agentLog(name).length;
    await cluster.restartAgent(name);
    await waitFor(() => agentLog(name).slice(before).includes('removed records Docker does not have'), { timeoutMs: 20_000, what: `the agent on ${name} to log the records it removed` });
    return agentLog(name).slice(before);
  }

  it('a network Docker lost while the agent was down, and removed from the cluster meanwhile: its record goes, the controller is told, the same network is created again', async () => {
    const h1 = node('h1');
    const h2 = node('h2');
    const POOL = 'underlay/192.0.2.0/24';
    expect((await create(h1, 'n0', '--subnet', '192.0.2.0/24', '-o', 'parent=eth1')).code).toBe(0);
    await onHost(h2, 'n0', true);
    const oldId = await networkId(h1, 'n0');
    await waitFor(() => membersOn('h1').includes(oldId), { timeoutMs: 5_000, what: 'n0 recorded for h1' });
    const record = path.join(h1.stateDir, 'networks', `${oldId}.json`);
    expect(fs.existsSync(record)).toBe(true);

    // dockerd stops and its network database is removed (Docker forgets its networks) while the agent is down.
    await downAndBack('h1', 'stop', (dir) => fs.rmSync(path.join(dir, 'data', 'network'), { recursive: true, force: true }));
    // Meanwhile the network is removed from the cluster: h2's copy goes; the controller still has h1's, with its pool.
    await cluster.controller.networks.clusterNetworkRemove({ name: 'n0' }, { actor: 'user:e2e' });
    await onHost(h2, 'n0', false);
    expect(membersOn('h1')).toContain(oldId);
    expect(state().pools.get(POOL)?.refs.has('h1')).toBe(true);

    const log = await restartAndCheck('h1');
    expect(log).toContain(`removed records Docker does not have: 1 networks (${oldId.slice(0, 12)} (parent eth1)) and 0 endpoints (-)`);
    expect(fs.existsSync(record)).toBe(false);
    // The controller was told: h1's member and the pool are gone.
    await waitFor(() => !membersOn('h1').includes(oldId) && !state().pools.has(POOL), { timeoutMs: 10_000, what: "h1's member of n0 and its pool gone from the controller" });

    // The same network again, on the same host: no "already used" refusal; it works across both hosts.
    const again = await create(h1, 'n0', '--subnet', '192.0.2.0/24', '-o', 'parent=eth1');
    expect({ code: again.code, stderr: again.stderr }).toEqual({ code: 0, stderr: '' });
    await onHost(h2, 'n0', true);
    await runOn(h1, 'm1', 'n0');
    await runOn(h2, 'm2', 'n0');
    const ip2 = await containerIp(h2.docker, 'm2', 'n0');
    await h1.docker.dockerOk(['exec', 'm1', 'ping', '-c', '2', '-W', '3', ip2]);
    await h1.docker.dockerOk(['rm', '-f', 'm1']);
    await h2.docker.dockerOk(['rm', '-f', 'm2']);
    await h1.docker.dockerOk(['network', 'rm', 'n0']);
    await onHost(h2, 'n0', false);
    await waitFor(() => state().pools.size === 0, { timeoutMs: 5_000, what: 'pools released' });
  });

  it("the issue's scenario: dockerd's data root reset under a kept state directory; the phantom records go and the passthru network is created on their parent", async () => {
    const h1 = node('h1');
    const POOL = 'underlay/203.0.113.0/28';
    // A parent of its own: passthru takes the parent alone, and eth1 carries the host's traffic (NATS among it).
    await ctx.lab.execOk(h1.host, 'ip', ['link', 'add', 'par1', 'type', 'veth', 'peer', 'name', 'par1p']);
    try {
      expect((await create(h1, 'p0', '--subnet', '203.0.113.0/28', '-o', 'parent=par1')).code).toBe(0);
      await runOn(h1, 'c0', 'p0');
      const ip0 = await containerIp(h1.docker, 'c0', 'p0');
      const ep0 = (await h1.docker.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "p0").EndpointID}}', 'c0'])).trim();
      const oldId = await networkId(h1, 'p0');
      for (const f of [path.join('networks', `${oldId}.json`), path.join('endpoints', `${ep0}.json`)]) expect(fs.existsSync(path.join(h1.stateDir, f))).toBe(true);

      // A power cut, and dockerd comes back on an empty data root; the agent's state directory is kept.
      await downAndBack('h1', 'crash', (dir) => fs.rmSync(path.join(dir, 'data'), { recursive: true, force: true }));
      const releasedBefore = (await releasesOf(ip0)).length;
      const log = await restartAndCheck('h1');
      expect(log).toContain(`removed records Docker does not have: 1 networks (${oldId.slice(0, 12)} (parent par1)) and 1 endpoints (${ep0.slice(0, 12)} ${ip0}/28)`);
      for (const f of [path.join('networks', `${oldId}.json`), path.join('endpoints', `${ep0}.json`)]) expect(fs.existsSync(path.join(h1.stateDir, f))).toBe(false);
      // The controller was told: h1's old member is gone, and the agent (no leak rule) gave c0's address back.
      await waitFor(async () => !membersOn('h1').includes(oldId) && (await releasesOf(ip0)).length > releasedBefore, { timeoutMs: 10_000, what: `the old member gone and ${ip0} released` });
      expect((await releasesOf(ip0)).slice(releasedBefore)).toEqual([{ node: 'h1', reason: undefined }]);

      // Docker and the cluster's definitions decide what exists: p0 is still a cluster network, so the agent makes it
      // again here, as a new Docker network; the refusal names it by name, not the phantom.
      await onHost(h1, 'p0', true);
      const newId = await networkId(h1, 'p0');
      expect(newId).not.toBe(oldId);
      const blocked = await create(h1, 'p1', '--subnet', '203.0.113.16/28', '-o', 'parent=par1', '-o', 'macvlan_mode=passthru');
      expect(refusal(blocked)).toContain(`cannot use mode passthru, macvlan network "p0" (${newId.slice(0, 12)}) is already using parent interface par1`);
      // Removed (nothing attached any more: c0's address was given back), the parent is free for passthru.
      await h1.docker.dockerOk(['network', 'rm', 'p0']);
      await waitFor(() => !state().clusterNetworks.has('p0'), { timeoutMs: 5_000, what: 'cluster network p0 removed' });
      const passthru = await create(h1, 'p1', '--subnet', '203.0.113.16/28', '-o', 'parent=par1', '-o', 'macvlan_mode=passthru');
      expect({ code: passthru.code, stderr: passthru.stderr }).toEqual({ code: 0, stderr: '' });
      await runOn(h1, 't1', 'p1');
      expect(await containerIp(h1.docker, 't1', 'p1')).toMatch(/^203\.0\.113\.(1[7-9]|2\d|30)$/);
      await h1.docker.dockerOk(['rm', '-f', 't1']);
      await h1.docker.dockerOk(['network', 'rm', 'p1']);
      await waitFor(() => !state().pools.has(POOL) && !state().pools.has('underlay/203.0.113.16/28'), { timeoutMs: 5_000, what: 'pools released' });
    } finally {
      await ctx.lab.exec(h1.host, 'ip', ['link', 'del', 'par1']);
    }
    expect(await extraLinks(ctx.lab, h1.host)).toEqual([]);
  });

  it('the check does not break address holds: a --restart always container comes back with its address after a dockerd power cut, the agent checking every second', async () => {
    const h1 = node('h1');
    expect((await create(h1, 'r0', '--subnet', '203.0.113.64/26', '-o', 'parent=eth1')).code).toBe(0);
    await h1.docker.dockerOk(['run', '-d', '--restart', 'always', '--name', 'cr', '--network', 'r0', BUSYBOX_IMAGE, 'sleep', '3600']);
    const before = await containerIp(h1.docker, 'cr', 'r0');
    const logFrom = agentLog('h1').length;
    // dockerd and its containers die together; the agent stays (its checks cannot read Docker meanwhile: no removal).
    await h1.docker.crash();
    await new Promise((r) => setTimeout(r, 2_500)); // more than two reconcile passes
    h1.docker = await startDockerd(ctx.lab, h1.host);
    await waitFor(async () => (await h1.docker.docker(['inspect', '-f', '{{.State.Running}}', 'cr'])).stdout.trim() === 'true', {
      timeoutMs: 60_000,
      intervalMs: 200,
      what: 'container cr restored by dockerd (restart policy always)',
    });
    expect(await containerIp(h1.docker, 'cr', 'r0')).toBe(before);
    // Passes later, still its address, held by nothing and bound to its new endpoint at the controller.
    await new Promise((r) => setTimeout(r, 3_000));
    const ep = (await h1.docker.dockerOk(['inspect', '-f', '{{(index .NetworkSettings.Networks "r0").EndpointID}}', 'cr'])).trim();
    const pool = state().pools.get('underlay/203.0.113.64/26')!;
    const allocs = [...pool.allocs.values()].filter((a) => a.kind === 'endpoint');
    expect(allocs.map((a) => ({ node: a.node, endpointId: a.endpointId }))).toEqual([{ node: 'h1', endpointId: ep }]);
    expect(cluster.controller.nodes.heldBy('h1', before)).toBe(false);
    process.stderr.write(`agent h1 during the power cut:\n${agentLog('h1').slice(logFrom).split('\n').filter((l) => /removed records|given back|held/.test(l)).join('\n')}\n`);
    await h1.docker.dockerOk(['rm', '-f', 'cr']);
    await h1.docker.dockerOk(['network', 'rm', 'r0']);
    await waitFor(() => !state().pools.has('underlay/203.0.113.64/26'), { timeoutMs: 5_000, what: 'pool released' });
  });
});

/**
 * BGP with real gobgpd 3.10 processes in network namespaces (test/bgp/lab.ts): a "top-of-rack" gobgpd
 * (AS 65000, 203.0.113.254) and two hosts (AS 65001/65002, 203.0.113.1/.2), each with a bare gobgpd whose
 * API is a unix socket. The BgpService of each host runs in this process, driven by a real ClusterView on a
 * real controller, etcd and NATS; IPAM requests are made as an agent makes them for Docker.
 *
 * Addresses: the lab link is 203.0.113.0/24; pools and external prefixes are data only (198.18.0.0/15,
 * 2001:db8::/32) and are never installed anywhere (onLearned is a recorder here).
 */
import { GobgpClient, RpcClient, connectNats, sleep, type BgpPath } from '@underlay/adapters';
import { EmptyRes, RequestAddressRes, type DesiredRoute } from '@underlay/core';
import type { Controller } from '@underlay/controller';
import { ClusterView } from '../../services/node-agent/src/cluster-view';
import { startBgp, type BgpService } from '../../services/node-agent/src/bgp/index';
import { FakeDockerHost, startEnv, type Env } from '../integration/support';
import { bgpLabMissing, createBgpLab, TOR_ADDRESS, TOR_ASN, type BgpHost, type BgpLab } from '../bgp/lab';
import { waitFor } from '../lab/wait';

jest.setTimeout(240_000);

const POOL = '198.18.0.0/22';
const H1_BLOCK = '198.18.0.0/26';
const H2_BLOCK = '198.18.0.64/26';
const EXT4 = '198.19.0.0/24';
const EXT6 = '2001:db8:ff::/48';
const EXT6_NH = '2001:db8::fe';
const verbose = !!process.env.UNDERLAY_TEST_LOG;

interface Agent {
  host: BgpHost;
  view: ClusterView;
  svc: BgpService;
  logs: string[];
  learnedCalls: DesiredRoute[][];
  client: GobgpClient;
}

// A missing tool fails the suite with the reason (it never skips).
const missing = bgpLabMissing();
const d = describe;

d('BGP through gobgpd 3.10 (ToR + 2 hosts in namespaces)', () => {
  let lab: BgpLab;
  let env: Env;
  let controller: Controller;
  const agents = new Map<string, Agent>();
  let h1: BgpHost;
  let h2: BgpHost;
  let docker1: FakeDockerHost;
  let docker2: FakeDockerHost;
  let poolId: string;
  let h2Addr: RequestAddressRes;

  async function startAgent(host: BgpHost, installLearned = true): Promise<Agent> {
    const nc = await connectNats(env.nats.url, `bgp-${host.name}`);
    env.conns.push(nc);
    const logs: string[] = [];
    const logger = (m: string) => {
      logs.push(m);
      if (verbose) process.stderr.write(`${new Date().toISOString()} ${host.name}: ${m}\n`);
    };
    const view = new ClusterView({ nc, rpc: new RpcClient(nc, host.name), logger });
    await view.start();
    const learnedCalls: DesiredRoute[][] = [];
    // The test's own client (the service would make the same from `api`), so the test can close it.
    const client = GobgpClient.connect(host.api);
    const svc = await startBgp({
      node: host.name,
      view,
      address: host.address,
      asn: host.asn,
      peers: [{ address: TOR_ADDRESS, asn: TOR_ASN }],
      api: host.api,
      installLearned,
      onLearned: (routes) => learnedCalls.push(routes),
      logger,
      client,
    });
    const a = { host, view, svc, logs, learnedCalls, client };
    agents.set(host.name, a);
    return a;
  }

  async function stopAgent(a: Agent): Promise<void> {
    await a.svc.stop();
    await a.view.stop();
    a.client.close();
    agents.delete(a.host.name);
  }

  const torPaths = async (family: 'ipv4' | 'ipv6' = 'ipv4'): Promise<BgpPath[]> => lab.tor.listPath({ family });
  const torHas = async (prefix: string, nextHop: string, neighbor: string) =>
    (await torPaths()).some((p) => p.prefix === prefix && p.nextHop === nextHop && p.neighbor === neighbor && !p.withdraw);
  const lastLearned = (a: Agent) => a.learnedCalls[a.learnedCalls.length - 1];

  beforeAll(async () => {
    if (missing) throw new Error(`the BGP lab cannot run here: ${missing} (bash scripts/install-deps.sh installs gobgpd)`);
    lab = await createBgpLab(2);
    [h1, h2] = lab.hosts as [BgpHost, BgpHost];
    env = await startEnv();
    controller = await env.controller({ blockGraceMs: 500, collectIntervalMs: 200, unboundGraceMs: 3_600_000 });
    const rpc = await env.client();
    docker1 = new FakeDockerHost(rpc, h1.name);
    docker2 = new FakeDockerHost(rpc, h2.name);
    poolId = (await docker1.pool(POOL)).poolId;
    await docker2.pool(POOL);
    expect((await docker1.address(poolId, 1)).address).toBe('198.18.0.1/22'); // h1 claims 198.18.0.0/26
    h2Addr = await docker2.address(poolId, 2);
    expect(h2Addr.address).toBe('198.18.0.64/22'); // h2 claims 198.18.0.64/26
  });

  afterAll(async () => {
    for (const a of [...agents.values()]) await stopAgent(a).catch(() => {});
    await env?.close();
    await lab?.close();
    void controller;
  });

  it('the ToR learns each host\'s blocks with the host as next hop (a host whose gobgpd starts late catches up)', async () => {
    await lab.startHostGobgpd(h1);
    const a1 = await startAgent(h1);
    // h2's agent starts before its gobgpd: it must retry, not crash.
    const a2 = await startAgent(h2);
    await sleep(1_500);
    expect(a2.logs.some((m) => /retrying/.test(m))).toBe(true);
    expect(a2.svc.advertised()).toEqual([]);
    await lab.startHostGobgpd(h2);

    await waitFor(async () => (await torHas(H1_BLOCK, h1.address, h1.address)) && (await torHas(H2_BLOCK, h2.address, h2.address)), {
      timeoutMs: 60_000,
      what: 'the ToR to learn both hosts\' blocks',
      intervalMs: 250,
    });
    expect(a1.svc.advertised()).toEqual([H1_BLOCK]);
    expect(a2.svc.advertised()).toEqual([H2_BLOCK]);

    // The hosts' gobgpd were configured through the API: AS, router id, no listener, the ToR as a peer.
    const g = await a1.client.getBgp();
    expect(g).toMatchObject({ asn: h1.asn, routerId: h1.address, listenPort: -1 });
    const peers = await a1.client.listPeers();
    expect(peers).toEqual([expect.objectContaining({ address: TOR_ADDRESS, asn: TOR_ASN, description: 'underlay', state: 'ESTABLISHED' })]);

    // Cross-check with the gobgp CLI (its own decoding): the ToR's RIB, AS paths and next hops.
    const rib = JSON.parse(await lab.cli(lab.torApi, ['global', 'rib', '-a', 'ipv4', '-j'])) as Record<string, { attrs: { type: number; nexthop?: string; as_paths?: { asns: number[] }[] }[]; 'neighbor-ip': string }[]>;
    for (const [prefix, h] of [[H1_BLOCK, h1], [H2_BLOCK, h2]] as const) {
      const paths = rib[prefix];
      expect(paths).toHaveLength(1);
      expect(paths![0]!['neighbor-ip']).toBe(h.address);
      expect(paths![0]!.attrs.find((x) => x.type === 3)?.nexthop).toBe(h.address);
      expect(paths![0]!.attrs.find((x) => x.type === 2)?.as_paths?.[0]?.asns).toEqual([h.asn]);
    }
    // The ToR's adj-in of h1, and an exact-prefix lookup.
    const adjIn = await lab.tor.listPath({ family: 'ipv4', table: 'adj-in', peer: h1.address });
    expect(adjIn.map((p) => [p.prefix, p.nextHop, p.neighbor, p.asPath])).toEqual([[H1_BLOCK, h1.address, h1.address, [h1.asn]]]);
    expect((await lab.tor.listPath({ family: 'ipv4', prefixes: [H2_BLOCK] })).map((p) => [p.prefix, p.nextHop])).toEqual([[H2_BLOCK, h2.address]]);
    // Each host's gobgpd holds exactly one local path per block (marked as underlay's).
    const local1 = (await a1.client.listPath({ family: 'ipv4' })).filter((p) => p.local);
    expect(local1.map((p) => [p.prefix, p.nextHop, p.largeCommunities])).toEqual([[H1_BLOCK, h1.address, [`${h1.asn}:201:1`]]]);
  });

  it('a host passes a peer\'s routes (IPv4 and IPv6) to onLearned, not other nodes\' blocks, and drops them on withdrawal', async () => {
    const a1 = agents.get('h1')!;
    const a2 = agents.get('h2')!;
    await lab.tor.addPath({ prefix: EXT4, nextHop: TOR_ADDRESS });
    await lab.tor.addPath({ prefix: EXT6, nextHop: EXT6_NH });
    const want = [
      { dst: EXT4, via: TOR_ADDRESS, dev: '' },
      { dst: EXT6, via: EXT6_NH, dev: '' },
    ];
    for (const a of [a1, a2]) {
      await waitFor(() => JSON.stringify(lastLearned(a)) === JSON.stringify(want), { timeoutMs: 30_000, what: `${a.host.name} to learn the ToR's routes`, intervalMs: 100 });
      expect(a.svc.learned()).toEqual(want);
    }
    // h1's gobgpd did receive h2's block from the ToR, but blocks are the event stream's business.
    const rib1 = await a1.client.listPath({ family: 'ipv4' });
    expect(rib1.some((p) => p.prefix === H2_BLOCK && p.neighbor === TOR_ADDRESS)).toBe(true);
    expect(a1.learnedCalls.flat().some((r) => r.dst === H2_BLOCK)).toBe(false);

    await lab.tor.deletePath({ prefix: EXT4 });
    for (const a of [a1, a2]) {
      await waitFor(() => JSON.stringify(lastLearned(a)) === JSON.stringify([want[1]]), { timeoutMs: 30_000, what: `${a.host.name} to drop ${EXT4}`, intervalMs: 100 });
    }
    await lab.tor.deletePath({ prefix: EXT6 });
    for (const a of [a1, a2]) {
      await waitFor(() => JSON.stringify(lastLearned(a)) === '[]', { timeoutMs: 30_000, what: `${a.host.name} to drop ${EXT6}`, intervalMs: 100 });
      expect(a.svc.learned()).toEqual([]);
    }
  });

  it('a gobgpd restarted under a running agent gets its config, peer and paths back', async () => {
    const a2 = agents.get('h2')!;
    await lab.stopHostGobgpd(h2);
    await waitFor(async () => !(await torHas(H2_BLOCK, h2.address, h2.address)), { timeoutMs: 30_000, what: 'the ToR to drop h2\'s block with its session', intervalMs: 250 });
    await lab.startHostGobgpd(h2);
    await waitFor(async () => torHas(H2_BLOCK, h2.address, h2.address), { timeoutMs: 60_000, what: 'h2 to re-advertise after its gobgpd restarted', intervalMs: 250 });
    expect((await a2.client.getBgp())?.asn).toBe(h2.asn);
  });

  it('a restarted agent neither duplicates nor withdraws and re-advertises its paths, and withdraws only stale ones', async () => {
    const before = agents.get('h1')!;
    const torPeer = async () => (await lab.tor.listPeers(h1.address))[0]!;
    await stopAgent(before);
    // While the agent is down: a stale underlay path (as if a block were released meanwhile) and an
    // operator's own path, which must survive.
    const c = GobgpClient.connect(h1.api);
    let operatorUuid: Uint8Array = new Uint8Array();
    try {
      await c.addPath({ prefix: '198.18.3.0/26', nextHop: h1.address, largeCommunities: [`${h1.asn}:201:1`] });
      operatorUuid = await c.addPath({ prefix: '198.19.9.0/24', nextHop: h1.address });
      await waitFor(async () => torHas('198.18.3.0/26', h1.address, h1.address), { timeoutMs: 30_000, what: 'the stale path at the ToR', intervalMs: 100 });
    } finally {
      c.close();
    }
    const peerBefore = await torPeer();
    const ageBefore = (await torPaths()).find((p) => p.prefix === H1_BLOCK)!.age!.getTime();
    const torEvents: BgpPath[] = [];
    const watch = lab.tor.watch({ onPaths: (ps) => torEvents.push(...ps) }, { init: false });
    try {
      await sleep(300);
      const after = await startAgent(h1);
      await waitFor(() => after.svc.advertised().length > 0, { timeoutMs: 30_000, what: 'the restarted agent\'s first pass', intervalMs: 100 });
      await waitFor(async () => !(await torHas('198.18.3.0/26', h1.address, h1.address)), { timeoutMs: 30_000, what: 'the stale path to be withdrawn', intervalMs: 100 });
      await sleep(1_500); // let any (unwanted) update reach the ToR
      expect(after.svc.advertised()).toEqual([H1_BLOCK]);
      expect(after.logs.filter((m) => /advertising|withdrew/.test(m))).toEqual(['bgp: withdrew 198.18.3.0/26']);
      expect(after.logs.some((m) => /already runs AS 65001, router id 203\.0\.113\.1: adopted/.test(m))).toBe(true);
      // The ToR saw no event for the block: no withdrawal, no re-advertisement, same path (same age).
      expect(torEvents.filter((p) => p.prefix === H1_BLOCK)).toEqual([]);
      expect(torEvents.filter((p) => p.prefix === '198.18.3.0/26').map((p) => p.withdraw)).toEqual([true]);
      expect((await torPaths()).find((p) => p.prefix === H1_BLOCK)!.age!.getTime()).toBe(ageBefore);
      const peerAfter = await torPeer();
      expect(peerAfter.updatesReceived - peerBefore.updatesReceived).toBe(1); // the stale path's withdrawal only
      // One local path per prefix on h1: its block once, and the operator's path left alone.
      // (gobgpd lists destinations in no fixed order)
      const local = (await after.client.listPath({ family: 'ipv4' })).filter((p) => p.local).map((p) => p.prefix).sort();
      expect(local).toEqual([H1_BLOCK, '198.19.9.0/24'].sort());
      expect(operatorUuid).toHaveLength(16);
      await after.client.deletePath({ uuid: operatorUuid, family: 'ipv4' }); // by the uuid AddPath returned
      expect((await after.client.listPath({ family: 'ipv4' })).filter((p) => p.local).map((p) => p.prefix)).toEqual([H1_BLOCK]);
      // Learned routes: the full (here empty) set is handed over once after the restart.
      await waitFor(() => after.learnedCalls.length > 0, { timeoutMs: 10_000, what: 'the first onLearned call', intervalMs: 100 });
      expect(after.learnedCalls[0]).toEqual([]);
    } finally {
      watch.cancel();
    }
  });

  it('a released block is withdrawn: the ToR loses it', async () => {
    const a2 = agents.get('h2')!;
    await docker2.rpc.call('releaseAddress', { node: h2.name, poolId, address: h2Addr.address.replace(/\/\d+$/, ''), allocSeq: h2Addr.allocSeq }, EmptyRes);
    await waitFor(async () => !(await torPaths()).some((p) => p.prefix === H2_BLOCK), { timeoutMs: 30_000, what: 'the ToR to lose h2\'s released block', intervalMs: 100 });
    expect(a2.svc.advertised()).toEqual([]);
    expect(a2.logs).toContain(`bgp: withdrew ${H2_BLOCK}`);
    expect((await a2.client.listPath({ family: 'ipv4' })).filter((p) => p.local)).toEqual([]);
    // h1's block is untouched.
    expect(await torHas(H1_BLOCK, h1.address, h1.address)).toBe(true);
  });
});

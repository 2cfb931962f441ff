/**
 * The pure parts of BGP: gobgpd API targets (loopback or unix socket only), Any packing of unicast paths
 * against the pinned v3.10 protos, and the service's plan (what to advertise, add, withdraw, and which
 * learned routes to hand over), on states built by the real IPAM decisions.
 */
import {
  GobgpClient,
  GobgpTargetError,
  gobgpRoot,
  gobgpTarget,
  packAny,
  pathFromApi,
  routeToApiPath,
  unpackAny,
  type BgpPath,
} from '@underlay/adapters';
import {
  ClusterEngine,
  decideReleaseAddress,
  decideReleaseEmptyBlocks,
  decideRequestAddress,
  decideRequestPool,
  type EngineClock,
  type ClusterState,
} from '@underlay/core';
import {
  applyBestPaths,
  desiredAdvertisements,
  isUnderlayPath,
  learnedRoutes,
  planAdvertisements,
  underlayMark,
} from '../../services/node-agent/src/bgp/plan';
import { parseBgpPeer, startBgp } from '../../services/node-agent/src/bgp/index';

describe('gobgpd API target', () => {
  it('accepts loopback addresses and unix sockets', () => {
    expect(gobgpTarget('127.0.0.1:50051')).toBe('127.0.0.1:50051');
    expect(gobgpTarget('127.1.2.3:1')).toBe('127.1.2.3:1');
    expect(gobgpTarget('[::1]:50051')).toBe('[::1]:50051');
    expect(gobgpTarget('localhost:50051')).toBe('127.0.0.1:50051');
    expect(gobgpTarget('unix:/run/gobgpd.sock')).toBe('unix:/run/gobgpd.sock');
    expect(gobgpTarget('unix:///run/gobgpd.sock')).toBe('unix:///run/gobgpd.sock');
  });

  it.each([':50051', '0.0.0.0:50051', '192.0.2.1:50051', '[2001:db8::1]:50051', '[::]:50051', 'gobgp.example:50051', 'dns:///127.0.0.1:50051', '127.0.0.1', '127.0.0.1:0', 'unix:'])(
    'refuses %s with a clear error',
    (t) => {
      expect(() => gobgpTarget(t)).toThrow(GobgpTargetError);
      expect(() => gobgpTarget(t)).toThrow(/use 127\.0\.0\.1:PORT, \[::1\]:PORT or unix:\/PATH .*no authentication/);
    },
  );

  it('GobgpClient.connect refuses a routable address before any connection', () => {
    expect(() => GobgpClient.connect('198.51.100.7:50051')).toThrow(/198\.51\.100\.7 is not a loopback address/);
  });
});

describe('gobgp Any packing (v3.10 protos)', () => {
  it('loads the pinned protos with the GobgpApi service', () => {
    const root = gobgpRoot();
    expect(root.lookupService('apipb.GobgpApi').methods.AddPath).toBeDefined();
    expect(root.lookupType('apipb.IPAddressPrefix').fields.prefixLen!.id).toBe(1);
  });

  it('round-trips a message through Any with the type.googleapis.com URL', () => {
    const a = packAny('IPAddressPrefix', { prefixLen: 26, prefix: '198.18.0.64' });
    expect(a.type_url).toBe('type.googleapis.com/apipb.IPAddressPrefix');
    // field 1 varint 26, field 2 string
    expect(Buffer.from(a.value).toString('hex')).toBe('081a' + '12' + '0b' + Buffer.from('198.18.0.64').toString('hex'));
    expect(unpackAny(a)).toEqual({ type: 'IPAddressPrefix', value: { prefixLen: 26, prefix: '198.18.0.64' } });
  });

  it('packs an IPv4 route with NEXT_HOP, and an IPv6 route with MP_REACH_NLRI carrying the NLRI', () => {
    const v4 = routeToApiPath({ prefix: '198.18.0.65/26', nextHop: '203.0.113.1', largeCommunities: ['65001:201:1'], communities: ['65001:7'], med: 5 });
    expect(v4.family).toEqual({ afi: 'AFI_IP', safi: 'SAFI_UNICAST' });
    expect(unpackAny(v4.nlri!).value).toEqual({ prefixLen: 26, prefix: '198.18.0.64' }); // host bits cleared
    const attrs4 = v4.pattrs!.map(unpackAny);
    expect(attrs4.map((a) => a.type)).toEqual(['OriginAttribute', 'NextHopAttribute', 'MultiExitDiscAttribute', 'CommunitiesAttribute', 'LargeCommunitiesAttribute']);
    expect(attrs4[1]!.value).toEqual({ nextHop: '203.0.113.1' });
    expect(attrs4[3]!.value).toEqual({ communities: [65001 * 65536 + 7] });
    expect(attrs4[4]!.value).toEqual({ communities: [{ globalAdmin: 65001, localData1: 201, localData2: 1 }] });

    const v6 = routeToApiPath({ prefix: '2001:db8:0:1::/64', nextHop: '2001:DB8::1' });
    expect(v6.family).toEqual({ afi: 'AFI_IP6', safi: 'SAFI_UNICAST' });
    const attrs6 = v6.pattrs!.map(unpackAny);
    expect(attrs6.map((a) => a.type)).toEqual(['OriginAttribute', 'MpReachNLRIAttribute']);
    const mp = attrs6[1]!.value as { family: unknown; nextHops: string[]; nlris: { type_url: string; value: Uint8Array }[] };
    expect(mp.family).toEqual({ afi: 'AFI_IP6', safi: 'SAFI_UNICAST' });
    expect(mp.nextHops).toEqual(['2001:db8::1']);
    expect(mp.nlris.map((n) => unpackAny(n).value)).toEqual([{ prefixLen: 64, prefix: '2001:db8:0:1::' }]);
  });

  it('refuses bad prefixes, next hops and communities', () => {
    expect(() => routeToApiPath({ prefix: '198.18.0.0', nextHop: '203.0.113.1' })).toThrow(/invalid CIDR/);
    expect(() => routeToApiPath({ prefix: '198.18.0.0/24', nextHop: 'router' })).toThrow(/invalid next hop/);
    expect(() => routeToApiPath({ prefix: '198.18.0.0/24', nextHop: '203.0.113.1', communities: ['70000:1'] })).toThrow(/invalid community/);
  });

  it('reads paths back: local vs learned, next hop from NEXT_HOP or MP_REACH, attributes, non-unicast skipped', () => {
    const local = pathFromApi({ ...routeToApiPath({ prefix: '198.18.0.0/26', nextHop: '203.0.113.1', largeCommunities: ['65001:201:1'] }), neighborIp: '<nil>', sourceId: '<nil>', best: true });
    expect(local).toMatchObject({ prefix: '198.18.0.0/26', nextHop: '203.0.113.1', family: 'ipv4', local: true, best: true, withdraw: false, origin: 'igp', largeCommunities: ['65001:201:1'] });
    expect(local!.neighbor).toBeUndefined();
    expect(isUnderlayPath(local!)).toBe(true);

    const learned = pathFromApi({
      ...routeToApiPath({ prefix: '2001:db8:ff::/48', nextHop: '2001:db8::fe', asPath: [65000, 65010] }),
      neighborIp: '203.0.113.254',
      sourceAsn: 65000,
      sourceId: '203.0.113.254',
      isWithdraw: true,
      age: { seconds: 1_700_000_000, nanos: 5_000_000 },
    });
    expect(learned).toMatchObject({ prefix: '2001:db8:ff::/48', nextHop: '2001:db8::fe', family: 'ipv6', local: false, neighbor: '203.0.113.254', sourceAsn: 65000, withdraw: true, asPath: [65000, 65010] });
    expect(learned!.age!.getTime()).toBe(1_700_000_000_005);
    expect(isUnderlayPath(learned!)).toBe(false);

    const flowspec = pathFromApi({ nlri: packAny('RouteTargetMembershipNLRI', { asn: 1 }), pattrs: [] });
    expect(flowspec).toBeUndefined();
  });
});

function setup() {
  let now = Date.parse('2026-01-01T00:00:00Z');
  let id = 0;
  let macs = 0;
  const clock: EngineClock = { now: () => new Date(now), newId: () => `id-${++id}` };
  const engine = new ClusterEngine(undefined, clock);
  const run = <R>(d: (s: ClusterState) => { events: any[]; result: R }, actor = 'node:a') => engine.execute(d, { actor }).result;
  const pool = (node: string, cidr: string, options: Record<string, string> = {}) =>
    run((s) => decideRequestPool(s, { node, space: 'underlay', pool: cidr, subPool: '', options, v6: cidr.includes(':') })).poolId;
  const mac = () => ({ 'com.docker.network.endpoint.macaddress': `02:00:00:00:00:${(++macs).toString(16).padStart(2, '0')}` });
  const addr = (node: string, poolId: string) => run((s) => decideRequestAddress(s, { node, poolId, address: '', options: mac() }));
  const release = (node: string, poolId: string, a: { address: string; allocSeq: number }) =>
    run((s) => decideReleaseAddress(s, { node, poolId, address: a.address.replace(/\/\d+$/, ''), allocSeq: a.allocSeq }));
  return { engine, pool, addr, release, advance: (ms: number) => (now += ms), nowMs: () => now, run };
}

const local = (prefix: string, nextHop: string, mark = true): BgpPath => ({
  prefix,
  nextHop,
  family: prefix.includes(':') ? 'ipv6' : 'ipv4',
  local: true,
  sourceAsn: 0,
  withdraw: false,
  best: true,
  filtered: false,
  stale: false,
  nextHopInvalid: false,
  ...(mark ? { largeCommunities: [underlayMark(65001)] } : {}),
});
const learned = (prefix: string, nextHop: string, neighbor = '203.0.113.254', withdraw = false): BgpPath => ({
  ...local(prefix, nextHop, false),
  local: false,
  neighbor,
  sourceAsn: 65000,
  best: false,
  withdraw,
});

describe('BGP plan', () => {
  it('advertises every block the node owns, in every pool, with the host address; IPv6 blocks need an IPv6 next hop', () => {
    const t = setup();
    const p4 = t.pool('h1', '198.18.0.0/22', { block_size: '26' });
    const q4 = t.pool('h1', '198.18.8.0/24', { block_size: '28' });
    const p6 = t.pool('h1', '2001:db8:1::/64');
    t.pool('h2', '198.18.0.0/22');
    t.addr('h1', p4);
    t.addr('h2', p4);
    t.addr('h1', q4);
    t.addr('h1', p6);
    const s = t.engine.state;
    const a = desiredAdvertisements(s, 'h1', '203.0.113.1', 65001);
    expect([...a.routes.keys()]).toEqual(['198.18.0.0/26', '198.18.8.0/28']);
    expect(a.routes.get('198.18.0.0/26')).toEqual({ prefix: '198.18.0.0/26', nextHop: '203.0.113.1', origin: 'igp', largeCommunities: ['65001:201:1'] });
    expect(a.skipped).toEqual(['2001:db8:1::/122']);
    expect([...desiredAdvertisements(s, 'h2', '203.0.113.2', 65002).routes.keys()]).toEqual(['198.18.0.64/26']);
    const v6 = desiredAdvertisements(s, 'h1', '2001:db8::1', 65001);
    expect([...v6.routes.keys()]).toEqual(['2001:db8:1::/122']);
    expect(v6.skipped).toEqual(['198.18.0.0/26', '198.18.8.0/28']);
    expect(desiredAdvertisements(s, 'h3', '203.0.113.3', 65003).routes.size).toBe(0);
  });

  it('a released block leaves the advertisements', () => {
    const t = setup();
    const p = t.pool('h1', '198.18.0.0/22');
    const a1 = t.addr('h1', p);
    t.release('h1', p, a1);
    expect([...desiredAdvertisements(t.engine.state, 'h1', '203.0.113.1', 65001).routes.keys()]).toEqual(['198.18.0.0/26']); // grace period
    t.advance(10_000);
    t.run((s) => decideReleaseEmptyBlocks(s, t.nowMs(), 1_000), 'controller');
    expect(desiredAdvertisements(t.engine.state, 'h1', '203.0.113.1', 65001).routes.size).toBe(0);
  });

  it('plans only the difference with what gobgpd holds, and never touches unmarked paths', () => {
    const t = setup();
    const p = t.pool('h1', '198.18.0.0/22');
    t.addr('h1', p);
    for (let i = 0; i < 63; i++) t.addr('h1', p); // fills 198.18.0.1-63 and claims .64/26
    const wanted = desiredAdvertisements(t.engine.state, 'h1', '203.0.113.1', 65001).routes;
    expect([...wanted.keys()]).toEqual(['198.18.0.0/26', '198.18.0.64/26']);

    // Nothing held: add both.
    expect(planAdvertisements(wanted, [])).toEqual({ add: [...wanted.values()], withdraw: [], kept: [] });
    // A restart: everything held as wanted: nothing to do (no duplicate, no withdraw-and-readvertise).
    const held = [local('198.18.0.0/26', '203.0.113.1'), local('198.18.0.64/26', '203.0.113.1')];
    expect(planAdvertisements(wanted, held)).toEqual({ add: [], withdraw: [], kept: ['198.18.0.0/26', '198.18.0.64/26'] });
    // A stale marked path, an operator's unmarked path, a learned path and a path with an old next hop.
    const mixed = [
      local('198.18.0.0/26', '203.0.113.9'),
      local('198.18.4.0/26', '203.0.113.1'),
      local('198.19.0.0/24', '203.0.113.1', false),
      learned('198.18.0.64/26', '203.0.113.254'),
    ];
    const plan = planAdvertisements(wanted, mixed);
    expect(plan.add.map((r) => r.prefix)).toEqual(['198.18.0.0/26', '198.18.0.64/26']); // re-added (replaces), not withdrawn first
    expect(plan.withdraw).toEqual(['198.18.4.0/26']);
  });

  it('keeps a table of peers\' best paths: set on a best path, removed on withdrawal or when the best path is local', () => {
    const table = new Map<string, BgpPath>();
    applyBestPaths(table, [learned('198.19.0.0/24', '203.0.113.254'), learned('198.19.1.0/24', '203.0.113.254'), local('198.18.0.0/26', '203.0.113.1')]);
    expect([...table.keys()]).toEqual(['198.19.0.0/24', '198.19.1.0/24']);
    applyBestPaths(table, [learned('198.19.0.0/24', '203.0.113.253', '203.0.113.253')]);
    expect(table.get('198.19.0.0/24')!.nextHop).toBe('203.0.113.253');
    applyBestPaths(table, [learned('198.19.1.0/24', '203.0.113.254', '203.0.113.254', true), local('198.19.0.0/24', '203.0.113.1')]);
    expect(table.size).toBe(0);
  });

  it('hands over learned routes except cluster blocks, this host, unspecified or cross-family next hops', () => {
    const t = setup();
    t.pool('h1', '198.18.0.0/22');
    const table = new Map<string, BgpPath>();
    applyBestPaths(table, [
      learned('198.19.0.0/24', '203.0.113.254'),
      learned('198.18.0.64/26', '203.0.113.254'), // another node's block, reflected by the ToR
      learned('198.18.0.0/16', '203.0.113.254'), // covers the pool: also left to the event stream
      learned('198.19.1.0/24', '203.0.113.1'), // this host
      learned('198.19.2.0/24', '0.0.0.0'),
      learned('2001:db8:ff::/48', '2001:db8::fe'),
      learned('2001:db8:fe::/48', '203.0.113.254'),
    ]);
    expect(learnedRoutes(table, t.engine.state, '203.0.113.1')).toEqual([
      { dst: '198.19.0.0/24', via: '203.0.113.254', dev: '' },
      { dst: '2001:db8:ff::/48', via: '2001:db8::fe', dev: '' },
    ]);
  });
});

describe('startBgp configuration errors', () => {
  const base = {
    node: 'h1',
    view: {} as never,
    address: '203.0.113.1',
    asn: 65001,
    peers: [{ address: '203.0.113.254', asn: 65000 }],
    api: '127.0.0.1:50051',
    installLearned: false,
    onLearned: () => {},
    logger: () => {},
  };

  it('refuses an API address that is not loopback or a unix socket', async () => {
    await expect(startBgp({ ...base, api: '0.0.0.0:50051' })).rejects.toThrow(/0\.0\.0\.0 is not a loopback address/);
    await expect(startBgp({ ...base, api: ':50051' })).rejects.toThrow(GobgpTargetError);
  });

  it('needs an IPv4 router id, valid AS numbers and peer addresses', async () => {
    await expect(startBgp({ ...base, address: '2001:db8::1' })).rejects.toThrow(/host address 2001:db8::1 is IPv6; give an IPv4 router id \(--bgp-router-id\)/);
    await expect(startBgp({ ...base, routerId: 'r1' })).rejects.toThrow(/router id must be an IPv4 address/);
    await expect(startBgp({ ...base, asn: 0 })).rejects.toThrow(/invalid AS number 0/);
    await expect(startBgp({ ...base, peers: [{ address: 'tor', asn: 65000 }] })).rejects.toThrow(/peer "tor" is not an IP address/);
  });

  it('parses --bgp-peers entries', () => {
    expect(parseBgpPeer('198.51.100.254:65000')).toEqual({ address: '198.51.100.254', asn: 65000 });
    expect(parseBgpPeer('2001:db8::fe:4200000000')).toEqual({ address: '2001:db8::fe', asn: 4200000000 });
    expect(parseBgpPeer('[2001:db8::fe]:65000')).toEqual({ address: '2001:db8::fe', asn: 65000 });
    expect(() => parseBgpPeer('198.51.100.254')).toThrow(/expected ADDRESS:ASN/);
    expect(() => parseBgpPeer('tor:65000')).toThrow(/expected ADDRESS:ASN/);
  });
});

/**
 * Stable identities (`--ipam-opt sticky=true`, services/node-agent/src/driver/sticky.ts): the option's check, the MAC
 * derivation, telling the container being started from Docker's container list (and the authorization hook's start
 * requests), and the IPAM and CreateEndpoint handlers holding an address for its container's name, against the
 * in-memory fakes of test/unit/driver-fakes.ts.
 */
import { ConflictError, InvalidArgumentError, STICKY_OPTION, booleanPoolOption, decideRequestPool, emptyState } from '@underlay/core';
import * as ipam from '../../services/node-agent/src/driver/ipam';
import * as endpoint from '../../services/node-agent/src/driver/endpoint';
import * as authz from '../../services/node-agent/src/driver/authz';
import { AddressHolds } from '../../services/node-agent/src/driver/address-holds';
import { StickyIdentities, candidates, pickIdentity, startedContainer, stickyMac, START_SEEN_MS } from '../../services/node-agent/src/driver/sticky';
import { fakeDriver } from './driver-fakes';

const hex64 = (c: string) => c.repeat(64).slice(0, 64);
const NET = hex64('a1');
const OTHER_NET = hex64('b2');
const POOL = 'underlay/192.0.2.0/24';

/**
 * A container as Docker 20.10's GET /containers/json?all=1 shows it while another is started (the replica of the
 * containers' state): on the network filed under `network` (default n1, `NET`'s name), with an endpoint there when
 * `endpoint`. A container never started (state `created`: `docker run`, `docker create`) has no NetworkID yet, one
 * started before (running, exited) has it (seen in the lab, test/e2e/sticky.test.ts).
 */
const container = (name: string, o: { id?: string; state?: string; endpoint?: string; network?: string; networkId?: string } = {}) => {
  const state = o.state ?? 'created';
  return {
    Id: o.id ?? hex64(name.charCodeAt(0).toString(16)),
    Names: [`/${name}`],
    State: state,
    NetworkSettings: { Networks: { [o.network ?? 'n1']: { NetworkID: o.networkId ?? (state === 'created' ? '' : NET), EndpointID: o.endpoint ?? '' } } },
  };
};
const NETWORKS = [{ id: NET, name: 'n1' }];
const networkName = async (id: string) => (id === NET ? 'n1' : id === OTHER_NET ? 'n2' : undefined);

describe('--ipam-opt sticky', () => {
  it('takes true and false, and refuses anything else naming the option', () => {
    expect(booleanPoolOption({ sticky: 'true' }, STICKY_OPTION)).toBe(true);
    expect(booleanPoolOption({ sticky: 'false' }, STICKY_OPTION)).toBe(false);
    expect(booleanPoolOption({}, STICKY_OPTION)).toBe(false);
    const req = { node: 'h1', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: { sticky: 'yes' }, v6: false };
    expect(() => decideRequestPool(emptyState(), req)).toThrow(new InvalidArgumentError('--ipam-opt sticky=yes is not valid: use sticky=true or sticky=false (the default)'));
    const ok = decideRequestPool(emptyState(), { ...req, options: { sticky: 'true' } });
    expect(ok.events[0]).toMatchObject({ type: 'PoolCreated', data: { options: { sticky: 'true' } } });
  });
});

describe('stickyMac', () => {
  it('is the same for the same network and name, differs otherwise, and is locally administered unicast never 02:42:…', () => {
    const m = stickyMac('n1', 'web');
    expect(m).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    expect(stickyMac('n1', 'web')).toBe(m);
    expect(stickyMac('n1', 'web2')).not.toBe(m);
    expect(stickyMac('n2', 'web')).not.toBe(m);
    for (let i = 0; i < 200; i++) {
      const first = parseInt(stickyMac('n1', `c${i}`).slice(0, 2), 16);
      expect(first & 0x01).toBe(0); // unicast
      expect(first & 0x02).toBe(2); // locally administered
      expect(first).not.toBe(0x02);
    }
  });
});

describe('which container is being started', () => {
  it('is the one container on the network with no endpoint there; running ones, other networks and removals are not candidates', () => {
    const list = [
      container('db', { state: 'running', endpoint: hex64('e1') }),
      container('web'),
      container('elsewhere', { networkId: OTHER_NET, network: 'n2' }),
      container('going', { state: 'removing' }),
    ];
    const c = candidates(list.map((x) => x as never), NETWORKS);
    expect(c.map((x) => x.container)).toEqual(['web']);
    expect(pickIdentity(c, [])).toEqual({ identity: { container: 'web', network: 'n1' } });
  });

  it('finds a container never started by the key Docker filed its network under (name, id or id prefix) and names the network by its name', () => {
    const filed = (key: string) => container('web', { network: key });
    for (const key of ['n1', NET, NET.slice(0, 12)]) {
      expect(candidates([filed(key)] as never, NETWORKS)).toEqual([{ id: expect.any(String), container: 'web', network: 'n1' }]);
    }
    expect(candidates([filed('n2')] as never, NETWORKS)).toEqual([]);
    expect(candidates([filed('b2b2')] as never, NETWORKS)).toEqual([]);
    // The network's name unknown (Docker did not answer): found by its id, filed under the key it was given.
    expect(candidates([filed(NET.slice(0, 12))] as never, [{ id: NET }])).toEqual([{ id: expect.any(String), container: 'web', network: NET.slice(0, 12) }]);
    expect(candidates([filed('n1')] as never, [{ id: NET }])).toEqual([]);
  });

  it('is ambiguous with stopped containers on the network, unless the start request the authorization hook saw names one', () => {
    const list = [container('web', { id: hex64('1') }), container('old', { id: hex64('2'), state: 'exited' })];
    const c = candidates(list as never, NETWORKS);
    expect(pickIdentity(c, [])).toEqual({ ambiguous: ['old', 'web'] });
    expect(pickIdentity(c, ['web'])).toEqual({ identity: { container: 'web', network: 'n1' } });
    expect(pickIdentity(c, ['2222'])).toEqual({ identity: { container: 'old', network: 'n1' } });
    expect(pickIdentity(c, ['web', 'old'])).toEqual({ ambiguous: ['old', 'web'] });
    expect(pickIdentity([], ['web'])).toEqual({ none: true });
  });

  it('reads the target of POST /containers/{id or name}/start and /restart only', () => {
    expect(startedContainer('POST', '/v1.41/containers/web/start')).toBe('web');
    expect(startedContainer('POST', '/containers/abc123/restart?t=10')).toBe('abc123');
    expect(startedContainer('GET', '/v1.41/containers/web/start')).toBeUndefined();
    expect(startedContainer('POST', '/v1.41/containers/web/stop')).toBeUndefined();
    expect(startedContainer('POST', '/v1.41/containers/%E0%A4%A/start')).toBeUndefined();
  });

  it('the authorization hook notes start requests (and allows them), and they count for START_SEEN_MS', async () => {
    let now = 0;
    const f = fakeDriver();
    try {
      f.docker.containers = [container('web', { id: hex64('1') }), container('old', { id: hex64('2'), state: 'exited' })];
      const sticky = new StickyIdentities({ docker: f.docker, log: () => {}, networkName, now: () => now });
      const ctx = { docker: f.docker, controller: f.controller, log: () => {}, sticky };
      expect(await authz.authzRequest(ctx, { RequestMethod: 'POST', RequestUri: '/v1.41/containers/web/start' })).toEqual({ Allow: true });
      expect(await sticky.resolve(POOL, [NET])).toEqual({ container: 'web', network: 'n1' });
      now += START_SEEN_MS;
      expect(await sticky.resolve(POOL, [NET])).toBeUndefined();
    } finally {
      f.cleanup();
    }
  });
});

describe('sticky pools in the IPAM and CreateEndpoint handlers', () => {
  let f: ReturnType<typeof fakeDriver>;
  const logs: string[] = [];
  let now = 1_000_000;
  beforeEach(async () => {
    jest.useFakeTimers();
    logs.length = 0;
    f = fakeDriver();
    const log = (m: string) => logs.push(m);
    f.ctx.holds = new AddressHolds({ holdMs: 60_000, stickyHoldMs: 600_000, release: (h) => ipam.releaseHeld(f.ctx, h), log, now: () => now });
    f.ctx.sticky = new StickyIdentities({ docker: f.docker, log, networkName });
    await ipam.requestPool(f.ctx, { Pool: '192.0.2.0/24', Options: { sticky: 'true' } });
    f.ctx.store.putNetwork({ id: NET, type: 'macvlan', parent: 'eth1', createdParent: false, macvlanMode: 'bridge', ipvlanMode: 'l2', ipvlanFlag: 'bridge', internal: false, ipv4: [{ pool: '192.0.2.0/24' }], ipv6: [], poolIds: [POOL] });
  });
  afterEach(() => {
    jest.useRealTimers();
    f.cleanup();
  });

  /** Docker starts a container named `name` on the network: RequestAddress, then CreateEndpoint. */
  async function start(name: string, ep: string, o: { mac?: string; ip?: string } = {}) {
    f.docker.containers = [container(name)];
    const { Address } = await ipam.requestAddress(f.ctx, { PoolID: POOL, ...(o.ip ? { Address: o.ip } : {}) });
    const r = await endpoint.createEndpoint(f.ctx, { NetworkID: NET, EndpointID: ep, Interface: { Address, AddressIPv6: '', MacAddress: o.mac ?? '' }, Options: {} });
    return { address: Address, mac: r.Interface?.MacAddress };
  }
  /** docker rm -f: DeleteEndpoint, then ReleaseAddress. */
  async function remove(ep: string, address: string) {
    await endpoint.deleteEndpoint(f.ctx, { NetworkID: NET, EndpointID: ep });
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: address.split('/')[0] });
  }

  it('gives a re-created container of the same name its address and MAC back; another name gets neither while held', async () => {
    const web = await start('web', hex64('e1'));
    expect(web).toEqual({ address: '192.0.2.2/24', mac: stickyMac('n1', 'web') });
    await remove(hex64('e1'), web.address);
    expect(f.ctx.holds!.list()).toMatchObject([{ address: '192.0.2.2', owner: 'web' }]);
    // Another name: a new address, and its own MAC.
    const other = await start('other', hex64('e2'));
    expect(other).toEqual({ address: '192.0.2.3/24', mac: stickyMac('n1', 'other') });
    // Naming web's held address (--ip) is refused while held.
    f.docker.containers = [container('third')];
    await expect(ipam.requestAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' })).rejects.toThrow(ConflictError);
    // web again: its address and MAC.
    now += 120_000;
    expect(await start('web', hex64('e3'))).toEqual(web);
    expect(logs).toContain('address 192.0.2.2 given back to container "web" on this host, 120 s after its endpoint went (sticky)');
    // --mac-address stays the user's.
    await remove(hex64('e3'), web.address);
    expect(await start('web', hex64('e4'), { mac: '02:00:00:00:00:09' })).toEqual({ address: web.address, mac: undefined });
  });

  it('holds for --sticky-hold-ms, then gives the address back to the cluster', async () => {
    const web = await start('web', hex64('e1'));
    await remove(hex64('e1'), web.address);
    await jest.advanceTimersByTimeAsync(599_000);
    expect(f.controller.alloc(POOL, '192.0.2.2')).toBeDefined();
    await jest.advanceTimersByTimeAsync(1_000);
    expect(f.controller.alloc(POOL, '192.0.2.2')).toBeUndefined();
    expect(f.ctx.holds!.list()).toEqual([]);
    // A new web gets a fresh allocation (the same address here, free again) and the same MAC.
    expect((await start('web', hex64('e2'))).mac).toBe(stickyMac('n1', 'web'));
  });

  it('without a container it can tell (ambiguous), allocates and holds as a plain pool does, and says so', async () => {
    f.docker.containers = [container('a', { id: hex64('1') }), container('b', { id: hex64('2'), state: 'exited' })];
    const { Address } = await ipam.requestAddress(f.ctx, { PoolID: POOL });
    const r = await endpoint.createEndpoint(f.ctx, { NetworkID: NET, EndpointID: hex64('e1'), Interface: { Address, AddressIPv6: '', MacAddress: '' }, Options: {} });
    expect(r).toEqual({ Interface: { MacAddress: '02:42:c0:00:02:02' } });
    expect(logs.join('\n')).toContain('cannot tell which container is being started among "a", "b"');
    await remove(hex64('e1'), Address);
    expect(f.ctx.holds!.list().map((h) => [h.address, h.owner])).toEqual([['192.0.2.2', undefined]]);
  });

  it('a pool without the option is not sticky: no container list, the address-derived MAC, a hold for anyone', async () => {
    await ipam.requestPool(f.ctx, { Pool: '198.51.100.0/24' });
    expect(f.ctx.sticky!.isSticky('underlay/198.51.100.0/24')).toBe(false);
    expect(f.ctx.sticky!.isSticky(POOL)).toBe(true);
    // The cluster view's options count too (an agent restarted after Docker asked for the pool).
    const viewed = new StickyIdentities({ docker: f.docker, log: () => {}, poolOptions: (id) => (id === 'underlay/203.0.113.0/24' ? { sticky: 'true' } : undefined) });
    expect(viewed.isSticky('underlay/203.0.113.0/24')).toBe(true);
    expect(viewed.isSticky('underlay/198.51.100.0/24')).toBe(false);
  });

  it('with --sticky-hold-ms 0 no address is held for a name: the plain restart hold (--address-hold-ms) applies', async () => {
    f.ctx.holds = new AddressHolds({ holdMs: 60_000, stickyHoldMs: 0, release: (h) => ipam.releaseHeld(f.ctx, h), log: () => {} });
    const web = await start('web', hex64('e1'));
    await remove(hex64('e1'), web.address);
    // Not held for the name: the plain restart hold keeps it for any container here.
    expect(f.ctx.holds.list().map((h) => [h.address, h.owner])).toEqual([['192.0.2.2', undefined]]);
  });
});

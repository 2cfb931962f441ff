/**
 * desiredRoutes (libs/core/src/routes/desired.ts): the routes a host programs for its ipvlan L3 networks,
 * computed from states built by the real decisions (ClusterEngine + decide*), as the controller makes them.
 */
import {
  UNDERLAY_RT_PROTO,
  decideNodeHello,
  decideReleaseAddress,
  decideReleaseEmptyBlocks,
  decideRequestAddress,
  decideRequestPool,
  desiredRoutes,
  fold,
  nextHopOf,
  type ClusterEvent,
  type ClusterState,
  type RouteNetwork,
} from '@underlay/core';
import { engineWithClock } from './support';

const mac = (n: number) => ({ 'com.docker.network.endpoint.macaddress': `02:00:00:00:${(n >> 8).toString(16).padStart(2, '0')}:${(n & 0xff).toString(16).padStart(2, '0')}` });

function setup() {
  const t = engineWithClock();
  const { run } = t;
  let macs = 0;
  const hello = (node: string, address?: string) => run((s) => decideNodeHello(s, { node, ...(address ? { address } : {}) }), `node:${node}`);
  const pool = (node: string, pool: string, options: Record<string, string> = {}) =>
    run((s) => decideRequestPool(s, { node, space: 'underlay', pool, subPool: '', options, v6: pool.includes(':') }), `node:${node}`).poolId;
  const addr = (node: string, poolId: string) => run((s) => decideRequestAddress(s, { node, poolId, address: '', options: mac(++macs) }), `node:${node}`);
  const release = (node: string, poolId: string, a: { address: string; allocSeq: number }) =>
    run((s) => decideReleaseAddress(s, { node, poolId, address: a.address.replace(/\/\d+$/, ''), allocSeq: a.allocSeq }), `node:${node}`);
  /** `nodes` say hello with 198.51.100.1, .2, … in order, then each requests the pool `cidr` (block_size `blockSize`): its id. */
  const hostsOnPool = (nodes: string[], cidr: string, blockSize: string) => {
    nodes.forEach((n, i) => hello(n, `198.51.100.${i + 1}`));
    return nodes.map((n) => pool(n, cidr, { block_size: blockSize }))[0]!;
  };
  return { ...t, hello, pool, addr, release, hostsOnPool };
}

const l3 = (poolIds: string[], parent = 'eth1'): RouteNetwork => ({ type: 'ipvlan', ipvlanMode: 'l3', parent, poolIds });

describe('desiredRoutes', () => {
  it('routes each block of another node via that node\'s address out of the network\'s parent', () => {
    const t = setup();
    const id = t.hostsOnPool(['a', 'b', 'c'], '192.0.2.0/24', '28');
    t.addr('a', id); // a: 192.0.2.0/28
    t.addr('b', id); // b: 192.0.2.16/28
    t.addr('c', id); // c: 192.0.2.32/28
    for (let i = 0; i < 16; i++) t.addr('b', id); // b fills .16/28 (16 addresses) and claims .48/28
    const s = t.engine.state;
    expect(desiredRoutes(s, 'a', [l3([id])])).toEqual([
      { dst: '192.0.2.16/28', via: '198.51.100.2', dev: 'eth1' },
      { dst: '192.0.2.32/28', via: '198.51.100.3', dev: 'eth1' },
      { dst: '192.0.2.48/28', via: '198.51.100.2', dev: 'eth1' },
    ]);
    expect(desiredRoutes(s, 'b', [l3([id], 'ens4')])).toEqual([
      { dst: '192.0.2.0/28', via: '198.51.100.1', dev: 'ens4' },
      { dst: '192.0.2.32/28', via: '198.51.100.3', dev: 'ens4' },
    ]);
    // l3s too; the same state folded from the log gives the same routes (the agent folds the event stream).
    expect(desiredRoutes(fold(t.log), 'c', [{ ...l3([id]), ipvlanMode: 'l3s' }])).toEqual([
      { dst: '192.0.2.0/28', via: '198.51.100.1', dev: 'eth1' },
      { dst: '192.0.2.16/28', via: '198.51.100.2', dev: 'eth1' },
      { dst: '192.0.2.48/28', via: '198.51.100.2', dev: 'eth1' },
    ]);
    expect(UNDERLAY_RT_PROTO).toBeGreaterThan(0);
    expect(UNDERLAY_RT_PROTO).toBeLessThan(256);
  });

  it('programs nothing for macvlan, ipvlan l2, unknown pools or a node with no address', () => {
    const t = setup();
    t.hello('a', '198.51.100.1');
    t.hello('b'); // no address yet
    const id = t.pool('a', '192.0.2.0/24', { block_size: '28' });
    t.pool('b', '192.0.2.0/24', { block_size: '28' });
    t.addr('b', id);
    const s = t.engine.state;
    expect(desiredRoutes(s, 'a', [l3([id])])).toEqual([]); // b has no address
    expect(desiredRoutes(s, 'b', [l3([id])])).toEqual([]); // a has no block
    t.hello('b', '198.51.100.2');
    expect(desiredRoutes(s, 'a', [l3([id])])).toEqual([{ dst: '192.0.2.0/28', via: '198.51.100.2', dev: 'eth1' }]);
    expect(desiredRoutes(s, 'a', [{ ...l3([id]), ipvlanMode: 'l2' }])).toEqual([]);
    expect(desiredRoutes(s, 'a', [{ ...l3([id]), type: 'macvlan' }])).toEqual([]);
    expect(desiredRoutes(s, 'a', [l3(['underlay/203.0.113.0/24'])])).toEqual([]);
    expect(desiredRoutes(s, 'a', [])).toEqual([]);
  });

  it('adds a host route for an address borrowed outside its owner\'s blocks (also inside my own block)', () => {
    const t = setup();
    const id = t.hostsOnPool(['a', 'b', 'c'], '192.0.2.0/28', '29');
    for (let n = 1; n <= 7; n++) t.addr('a', id); // a owns 192.0.2.0/29 (full)
    t.addr('b', id); // b claims 192.0.2.8/29 and gets .8
    const borrowed = t.addr('a', id); // no block left: a borrows .9 from b's block
    expect(borrowed.address).toBe('192.0.2.9/28');
    const cBorrowed = t.addr('c', id); // c owns nothing: borrows .10 from b's block
    expect(cBorrowed.address).toBe('192.0.2.10/28');
    const s = t.engine.state;
    // b: a's block, and the two addresses taken from b's own block by a and c.
    expect(desiredRoutes(s, 'b', [l3([id])])).toEqual([
      { dst: '192.0.2.0/29', via: '198.51.100.1', dev: 'eth1' },
      { dst: '192.0.2.9/32', via: '198.51.100.1', dev: 'eth1' },
      { dst: '192.0.2.10/32', via: '198.51.100.3', dev: 'eth1' },
    ]);
    // a: b's block, and c's address inside it (longest prefix wins); not its own borrowed .9.
    expect(desiredRoutes(s, 'a', [l3([id])])).toEqual([
      { dst: '192.0.2.8/29', via: '198.51.100.2', dev: 'eth1' },
      { dst: '192.0.2.10/32', via: '198.51.100.3', dev: 'eth1' },
    ]);
    // c: both blocks and a's borrowed address.
    expect(desiredRoutes(s, 'c', [l3([id])])).toEqual([
      { dst: '192.0.2.0/29', via: '198.51.100.1', dev: 'eth1' },
      { dst: '192.0.2.8/29', via: '198.51.100.2', dev: 'eth1' },
      { dst: '192.0.2.9/32', via: '198.51.100.1', dev: 'eth1' },
    ]);
    // Releasing the borrowed address removes its host route.
    t.release('a', id, borrowed);
    expect(desiredRoutes(t.engine.state, 'b', [l3([id])])).toEqual([
      { dst: '192.0.2.0/29', via: '198.51.100.1', dev: 'eth1' },
      { dst: '192.0.2.10/32', via: '198.51.100.3', dev: 'eth1' },
    ]);
  });

  it('drops a block\'s route when the block goes back to the pool', () => {
    const t = setup();
    const id = t.hostsOnPool(['a', 'b'], '192.0.2.0/24', '28');
    t.addr('a', id);
    const x = t.addr('b', id);
    expect(desiredRoutes(t.engine.state, 'a', [l3([id])])).toEqual([{ dst: '192.0.2.16/28', via: '198.51.100.2', dev: 'eth1' }]);
    t.release('b', id, x);
    // The empty block stays b's for the grace period, then is released.
    expect(desiredRoutes(t.engine.state, 'a', [l3([id])])).toHaveLength(1);
    t.advance(60_000);
    const r = t.run((s) => decideReleaseEmptyBlocks(s, t.nowMs(), 30_000), 'controller');
    expect(r.released).toContain('underlay/192.0.2.0/24 192.0.2.16/28');
    expect(desiredRoutes(t.engine.state, 'a', [l3([id])])).toEqual([]);
  });

  it('never routes gateway or aux addresses, and gives one route per destination', () => {
    const t = setup();
    const id = t.hostsOnPool(['a', 'b'], '192.0.2.0/24', '28');
    t.run((s) => decideRequestAddress(s, { node: 'b', poolId: id, address: '192.0.2.1', options: { RequestAddressType: 'com.docker.network.gateway' } }), 'node:b');
    t.run((s) => decideRequestAddress(s, { node: 'b', poolId: id, address: '192.0.2.200', options: {}, kind: 'aux' }), 'node:b');
    expect(desiredRoutes(t.engine.state, 'a', [l3([id])])).toEqual([]);
    t.addr('b', id); // claims 192.0.2.0/28, which holds the gateway
    const twice = desiredRoutes(t.engine.state, 'a', [l3([id]), l3([id], 'eth2')]);
    expect(twice).toEqual([{ dst: '192.0.2.0/28', via: '198.51.100.2', dev: 'eth1' }]);
  });

  it('covers several subnets of one network and IPv6 with an IPv6 next hop, IPv4 first', () => {
    const t = setup();
    t.hello('a', '198.51.100.1,2001:db8:ffff::1');
    t.hello('b', '198.51.100.2, 2001:db8:ffff::2');
    t.hello('c', '198.51.100.3'); // no IPv6 address: no IPv6 routes to it
    const v4a = t.pool('a', '192.0.2.0/24', { block_size: '28' });
    const v4b = t.pool('a', '203.0.113.0/24', { block_size: '28' });
    const v6 = t.pool('a', '2001:db8:1::/64', { block_size: '124' });
    for (const n of ['b', 'c']) for (const p of ['192.0.2.0/24', '203.0.113.0/24', '2001:db8:1::/64']) t.pool(n, p, { block_size: p.includes(':') ? '124' : '28' });
    t.addr('a', v6); // a: 2001:db8:1::/124
    t.addr('b', v6); // b: 2001:db8:1::10/124
    t.addr('c', v6); // c: 2001:db8:1::20/124 (no v6 next hop)
    t.addr('b', v4b); // b: 203.0.113.0/28
    t.addr('c', v4a); // c: 192.0.2.0/28
    expect(desiredRoutes(t.engine.state, 'a', [l3([v6, v4b, v4a])])).toEqual([
      { dst: '192.0.2.0/28', via: '198.51.100.3', dev: 'eth1' },
      { dst: '203.0.113.0/28', via: '198.51.100.2', dev: 'eth1' },
      { dst: '2001:db8:1::10/124', via: '2001:db8:ffff::2', dev: 'eth1' },
    ]);
    // A borrowed IPv6 address gets a /128: b claims 2001:db8:2::/126, a fills ::4/126 and then borrows from b's block.
    const t2 = setup();
    t2.hello('a', '2001:db8:ffff::1');
    t2.hello('b', '2001:db8:ffff::2');
    const p = t2.pool('a', '2001:db8:2::/125', { block_size: '126' });
    t2.pool('b', '2001:db8:2::/125', { block_size: '126' });
    t2.addr('b', p);
    let borrowed: string | undefined;
    for (let i = 0; i < 8 && !borrowed; i++) {
      const a = t2.addr('a', p).address.replace(/\/\d+$/, '');
      if (/^2001:db8:2::[0-3]?$/.test(a)) borrowed = a;
    }
    expect(borrowed).toBeDefined();
    expect(desiredRoutes(t2.engine.state, 'b', [l3([p])])).toEqual([
      { dst: `${borrowed}/128`, via: '2001:db8:ffff::1', dev: 'eth1' },
      { dst: '2001:db8:2::4/126', via: '2001:db8:ffff::1', dev: 'eth1' },
    ]);
    expect(desiredRoutes(t2.engine.state, 'a', [l3([p])])).toEqual([{ dst: '2001:db8:2::/126', via: '2001:db8:ffff::2', dev: 'eth1' }]);
  });

  it('nextHopOf picks the address of the family, tolerating a prefix length', () => {
    expect(nextHopOf('198.51.100.7', 4)).toBe('198.51.100.7');
    expect(nextHopOf('198.51.100.7', 6)).toBeUndefined();
    expect(nextHopOf('198.51.100.7/24,2001:DB8::7', 6)).toBe('2001:db8::7');
    expect(nextHopOf('not-an-address', 4)).toBeUndefined();
    expect(nextHopOf(undefined, 4)).toBeUndefined();
  });

  it('is deterministic whatever the order of networks and pools', () => {
    const t = setup();
    for (const [n, i] of [['a', 1], ['b', 2], ['c', 3], ['d', 4]] as const) t.hello(n, `198.51.100.${i}`);
    const ids = ['192.0.2.0/24', '203.0.113.0/24'].map((c) => {
      const id = t.pool('a', c, { block_size: '28' });
      for (const n of ['b', 'c', 'd']) t.pool(n, c, { block_size: '28' });
      return id;
    });
    for (let i = 0; i < 40; i++) t.addr(['d', 'b', 'c'][i % 3]!, ids[i % 2]!);
    const r1 = desiredRoutes(t.engine.state, 'a', [l3([ids[0]!]), l3([ids[1]!])]);
    const r2 = desiredRoutes(fold(t.log), 'a', [l3([ids[1]!]), l3([ids[0]!])]);
    expect(r2).toEqual(r1);
    expect(r1.length).toBeGreaterThan(4);
    const keys = r1.map((r) => r.dst);
    expect(new Set(keys).size).toBe(keys.length);
  });
});

// ------------------------------------------------------------------------------------------------
// The agent's RouteService against an in-memory table (the kernel side is test/e2e/netlink-routes and uml-routes).
// ------------------------------------------------------------------------------------------------
import { MemoryRouteOps, startRoutes, type RouteService } from '../../services/node-agent/src/routes/index';
import type { ClusterView } from '../../services/node-agent/src/cluster-view';
import type { NetworkRecord } from '../../services/node-agent/src/driver/store';

/** A ClusterView stand-in: the engine's state, listeners called like the real view (batched per tick). */
function fakeView(t: ReturnType<typeof setup>) {
  const listeners = new Set<(evs: readonly ClusterEvent[], s: ClusterState) => void>();
  let ready!: () => void;
  const readyP = new Promise<void>((r) => (ready = r));
  let sent = t.log.length;
  const view = {
    get state() {
      return t.engine.state;
    },
    get seq() {
      return t.engine.state.seq;
    },
    onChange(l: (evs: readonly ClusterEvent[], s: ClusterState) => void) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    ready: () => readyP,
  };
  const flush = () => {
    const evs = t.log.slice(sent);
    sent = t.log.length;
    if (evs.length) for (const l of listeners) l(evs, t.engine.state);
  };
  return { view: view as unknown as ClusterView, flush, setReady: () => ready() };
}

const netRec = (poolIds: string[], parent = 'eth1', mode = 'l3'): NetworkRecord => ({
  id: `n-${poolIds.join()}`,
  type: 'ipvlan',
  parent,
  createdParent: false,
  macvlanMode: '',
  ipvlanMode: mode,
  ipvlanFlag: 'bridge',
  internal: false,
  ipv4: [],
  ipv6: [],
  poolIds,
});

const until = async (cond: () => boolean, ms = 2000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('RouteService (in-memory table)', () => {
  let svc: RouteService | undefined;
  afterEach(async () => {
    await svc?.stop();
    svc = undefined;
  });

  function cluster() {
    const t = setup();
    const id = t.hostsOnPool(['a', 'b'], '192.0.2.0/24', '28');
    return { t, id };
  }

  it('starts when the view is ready, keeps correct routes, deletes only stale underlay routes', async () => {
    const { t, id } = cluster();
    t.addr('b', id); // b: 192.0.2.0/28
    const v = fakeView(t);
    const ops = new MemoryRouteOps();
    await ops.addRoute({ dst: '192.0.2.0/28', via: '198.51.100.2', dev: 'eth1', protocol: UNDERLAY_RT_PROTO }); // correct, from before a restart
    await ops.addRoute({ dst: '192.0.2.224/28', via: '198.51.100.9', dev: 'eth1', protocol: UNDERLAY_RT_PROTO }); // stale
    await ops.addRoute({ dst: '192.0.2.240/28', via: '198.51.100.9', dev: 'eth1', protocol: 4 }); // someone else's
    const logs: string[] = [];
    svc = await startRoutes({ node: 'a', view: v.view, localNetworks: () => [netRec([id])], reconcileMs: 60_000, logger: (m) => logs.push(m), ops });
    await new Promise((r) => setTimeout(r, 20));
    expect(svc.stats().syncs).toBe(0); // not before the view caught up
    v.setReady();
    await until(() => svc!.stats().deletes === 1);
    expect([...ops.table.keys()].sort()).toEqual(['192.0.2.0/28', '192.0.2.240/28']);
    expect(svc.stats()).toMatchObject({ adds: 0, deletes: 1 });
    expect(logs.join('\n')).toMatch(/deleted 192\.0\.2\.224\/28/);
  });

  it('applies view changes at once and reconciles a route deleted by hand', async () => {
    const { t, id } = cluster();
    const v = fakeView(t);
    const ops = new MemoryRouteOps();
    const seen: number[] = [];
    ops.onChange = (k) => k === 'add' && seen.push(Date.now());
    v.setReady();
    svc = await startRoutes({ node: 'a', view: v.view, localNetworks: () => [netRec([id])], reconcileMs: 150, logger: () => {}, ops });
    const t0 = Date.now();
    const x = t.addr('b', id);
    v.flush();
    await until(() => ops.table.has('192.0.2.0/28'));
    expect(seen[0]! - t0).toBeLessThan(100);
    expect(ops.table.get('192.0.2.0/28')).toMatchObject({ via: '198.51.100.2', dev: 'eth1', protocol: UNDERLAY_RT_PROTO });
    ops.table.delete('192.0.2.0/28'); // `ip route del` by hand
    await until(() => ops.table.has('192.0.2.0/28'), 1000);
    // The block goes back: its route goes.
    t.release('b', id, x);
    t.advance(60_000);
    t.run((s) => decideReleaseEmptyBlocks(s, t.nowMs(), 1000), 'controller');
    v.flush();
    await until(() => !ops.table.has('192.0.2.0/28'));
  });

  it('times each route from its event to the kernel, counts its passes and the routes held (metrics hooks)', async () => {
    const { t, id } = cluster();
    const v = fakeView(t);
    const ops = new MemoryRouteOps();
    const timed: number[] = [];
    const passes: string[] = [];
    v.setReady();
    svc = await startRoutes({ node: 'a', view: v.view, localNetworks: () => [netRec([id])], reconcileMs: 60_000, logger: () => {}, ops, onProgrammed: (s) => timed.push(s), observe: (loop, ok) => passes.push(`${loop} ${ok}`) });
    await until(() => passes.length >= 1);
    t.advance(Date.now() - 50 - t.nowMs()); // the event is decided 50 ms before now
    t.addr('b', id);
    v.flush();
    await until(() => ops.table.has('192.0.2.0/28'));
    expect(timed).toHaveLength(1);
    expect(timed[0]).toBeGreaterThanOrEqual(0.04);
    expect(timed[0]).toBeLessThan(5);
    expect(svc.stats().routes).toBe(1);
    expect(passes[0]).toBe('routes true');
  });

  it('logs and retries errors (missing parent), never overwrites another protocol\'s route, and merges external routes', async () => {
    const { t, id } = cluster();
    t.addr('b', id);
    const v = fakeView(t);
    const ops = new MemoryRouteOps();
    ops.devices = new Set(); // eth1 does not exist yet
    const logs: string[] = [];
    v.setReady();
    svc = await startRoutes({ node: 'a', view: v.view, localNetworks: () => [netRec([id])], reconcileMs: 300, logger: (m) => logs.push(m), ops });
    await until(() => logs.some((l) => /not found/.test(l)));
    ops.devices.add('eth1');
    await until(() => ops.table.has('192.0.2.0/28'), 3000);
    expect(logs.filter((l) => /not found/.test(l))).toHaveLength(1); // logged once, not per retry

    // A static route to a destination underlay wants: left alone, reported.
    await ops.addRoute({ dst: '192.0.2.16/28', via: '198.51.100.77', dev: 'eth1', protocol: 4 });
    for (let i = 0; i < 16; i++) t.addr('b', id); // b claims 192.0.2.16/28
    v.flush();
    await until(() => logs.some((l) => /another protocol is in the way/.test(l)));
    expect(ops.table.get('192.0.2.16/28')).toMatchObject({ via: '198.51.100.77', protocol: 4 });

    // External (BGP) routes: added, replaced per source, never over the cluster's.
    svc.setExternal('bgp', [
      { dst: '203.0.113.0/24', via: '198.51.100.254', dev: 'eth1' },
      { dst: '192.0.2.0/28', via: '198.51.100.254', dev: 'eth1' },
    ]);
    await until(() => ops.table.has('203.0.113.0/24'));
    expect(ops.table.get('192.0.2.0/28')).toMatchObject({ via: '198.51.100.2' });
    svc.setExternal('bgp', []);
    await until(() => !ops.table.has('203.0.113.0/24'));
    svc.sync();
  });

  it('does nothing for l2 networks and removes routes when the network goes', async () => {
    const { t, id } = cluster();
    t.addr('b', id);
    const v = fakeView(t);
    const ops = new MemoryRouteOps();
    let nets = [netRec([id])];
    v.setReady();
    svc = await startRoutes({ node: 'a', view: v.view, localNetworks: () => nets, reconcileMs: 60_000, logger: () => {}, ops });
    await until(() => ops.table.size === 1);
    nets = [];
    svc.sync();
    await until(() => ops.table.size === 0);
    nets = [netRec([id], 'eth1', 'l2')];
    svc.sync();
    await new Promise((r) => setTimeout(r, 30));
    expect(ops.table.size).toBe(0);
  });
});

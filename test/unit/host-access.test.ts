/**
 * Host access (`-o host_access=true`): the option, the controller's `host` addresses (allocated in the node's blocks,
 * released by their node only, never taken by the leak collector while the node lives, kept by snapshots), the routes
 * through the shim, and the agent's level-triggered pass on in-memory fakes (the kernel's side is tested end to end in
 * test/e2e/host-access.test.ts).
 */
import {
  DEFAULT_LEAK_POLICY,
  HOST_ACCESS_RT_PROTO,
  decideReleaseAddress,
  decideRequestAddress,
  decideRequestPool,
  findLeakCandidates,
  hostAccessRoutes,
  hostAddressRequestId,
  hostShimName,
  parseNetworkOptions,
  restore,
  snapshot,
  type ClusterEvent,
  type ClusterState,
  type NodeLiveness,
} from '@underlay/core';
import { KeyedMutex } from '../../services/node-agent/src/driver/context';
import { removeHostAccess, startHostAccess } from '../../services/node-agent/src/driver/host-access';
import { MemoryRouteOps } from '../../services/node-agent/src/routes/memory';
import { FakeController, FakeLinks, fakeDriver } from './driver-fakes';
import { engineWithClock } from './support';

const mac = (n: number) => ({ 'com.docker.network.endpoint.macaddress': `02:00:00:00:00:${n.toString(16).padStart(2, '0')}` });

function setup() {
  const t = engineWithClock();
  const pool = (node: string) => t.run((s) => decideRequestPool(s, { node, space: 'underlay', pool: '198.51.100.0/24', subPool: '', options: { block_size: '28' }, v6: false })).poolId;
  const addr = (node: string, poolId: string, n: number) => t.run((s) => decideRequestAddress(s, { node, poolId, address: '', options: mac(n) }));
  const host = (node: string, poolId: string, networkId = 'a'.repeat(64)) =>
    t.run((s) => decideRequestAddress(s, { node, poolId, address: '', options: {}, requestId: hostAddressRequestId(networkId, poolId), kind: 'host' }));
  return { ...t, pool, addr, host };
}

describe('option host_access', () => {
  it('is off by default, true or false, and needs a mode in which the shim reaches the containers', () => {
    expect(parseNetworkOptions({ parent: 'eth1' }).hostAccess).toBe(false);
    expect(parseNetworkOptions({ parent: 'eth1', host_access: 'true' }).hostAccess).toBe(true);
    expect(parseNetworkOptions({ parent: 'eth1', host_access: 'false' }).hostAccess).toBe(false);
    expect(parseNetworkOptions({ parent: 'eth1', ipvlan_mode: 'l2', host_access: 'true' }).hostAccess).toBe(true);
    expect(() => parseNetworkOptions({ parent: 'eth1', host_access: 'yes' })).toThrow('option host_access=yes is not valid: use host_access=true or host_access=false (the default)');
    expect(() => parseNetworkOptions({ parent: 'eth1', host_access: 'true', macvlan_mode: 'private' })).toThrow(/host_access=true needs macvlan_mode=bridge/);
    expect(() => parseNetworkOptions({ parent: 'eth1', host_access: 'true', ipvlan_flag: 'private' })).toThrow(/host_access=true needs ipvlan_flag=bridge/);
    expect(hostShimName('0123456789abcdef0123')).toBe('ulh0123456789ab');
    expect(hostAddressRequestId('f'.repeat(64), 'underlay/198.51.100.0/24').length).toBeLessThanOrEqual(64);
  });
});

describe('host addresses at the controller', () => {
  it('come from the node\'s block, repeat to the same address, are never a container\'s and go back only by their node', () => {
    const t = setup();
    const id = t.pool('a');
    t.pool('b');
    const h = t.host('a', id);
    expect(h.address).toBe('198.51.100.1/24');
    expect(t.host('a', id).address).toBe(h.address); // the same request id: the same address
    const p = t.engine.state.pools.get(id)!;
    expect(p.allocs.get(p.handles.get(`a/req/${hostAddressRequestId('a'.repeat(64), id)}`)!)!.kind).toBe('host');
    // Containers get the next addresses, never the host's.
    expect(t.addr('a', id, 1).address).toBe('198.51.100.2/24');
    // b cannot release it; a can.
    expect(() => t.run((s) => decideReleaseAddress(s, { node: 'b', poolId: id, address: '198.51.100.1', allocSeq: h.allocSeq }))).toThrow(/held by node a, not b/);
    t.run((s) => decideReleaseAddress(s, { node: 'a', poolId: id, address: '198.51.100.1', allocSeq: h.allocSeq }));
    expect(t.engine.state.pools.get(id)!.allocs.has(p.cidr.network + 1n)).toBe(false);
  });

  it('are not leaks while their node lives (reclaimed with an expired node), and survive a snapshot', () => {
    const t = setup();
    const id = t.pool('a');
    t.host('a', id);
    t.advance(2 * DEFAULT_LEAK_POLICY.unboundGraceMs);
    const alive = new Map<string, NodeLiveness>([['a', { lastSeenMs: t.nowMs(), report: { atMs: t.nowMs(), endpoints: new Set() } }]]);
    expect(findLeakCandidates(t.engine.state, t.nowMs(), alive, DEFAULT_LEAK_POLICY, 0)).toEqual([]);
    const dead = new Map<string, NodeLiveness>([['a', { lastSeenMs: t.nowMs() - DEFAULT_LEAK_POLICY.nodeExpiredMs }]]);
    expect(findLeakCandidates(t.engine.state, t.nowMs(), dead, DEFAULT_LEAK_POLICY, 0).map((c) => `${c.address} ${c.rule}`)).toEqual(['198.51.100.1 node-expired']);
    const back = restore(JSON.parse(JSON.stringify(snapshot(t.engine.state))));
    expect([...back.pools.get(id)!.allocs.values()].map((a) => a.kind)).toEqual(['host']);
  });
});

describe('routes through the shim', () => {
  it('are the node\'s blocks and its addresses borrowed outside them, nothing of other nodes', () => {
    const t = setup();
    const id = t.pool('a');
    t.pool('b');
    t.host('a', id);
    for (let n = 1; n <= 15; n++) t.addr('a', id, n); // fills a's first /28 (.1-.15 with the host) and claims a second
    t.addr('b', id, 40);
    const s: ClusterState = t.engine.state;
    expect(hostAccessRoutes(s, 'a', [id])).toEqual(['198.51.100.0/28', '198.51.100.16/28']);
    expect(hostAccessRoutes(s, 'b', [id])).toEqual(['198.51.100.32/28']);
    expect(hostAccessRoutes(s, 'c', [id])).toEqual([]);
    expect(hostAccessRoutes(s, 'a', ['underlay/unknown'])).toEqual([]);
  });
});

/** A cluster view over an engine's state (the agent's ClusterView, as host access uses it). */
function viewOf(t: ReturnType<typeof setup>) {
  const listeners: ((events: readonly ClusterEvent[], s: ClusterState) => void)[] = [];
  return {
    get state() {
      return t.engine.state;
    },
    onChange(l: (events: readonly ClusterEvent[], s: ClusterState) => void) {
      listeners.push(l);
      return () => listeners.splice(listeners.indexOf(l), 1);
    },
    ready: () => Promise.resolve(),
    emit: (events: ClusterEvent[]) => listeners.forEach((l) => l(events, t.engine.state)),
  };
}

/** The fakes' controller answering from the engine (so the view sees what it allocates). */
function engineController(t: ReturnType<typeof setup>, node: string): Pick<FakeController, 'requestAddress' | 'releaseAddress'> & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    requestAddress: async (req) => {
      calls.push(`request ${req.poolId} ${req.kind}`);
      return t.run((s) => decideRequestAddress(s, { node, poolId: req.poolId, address: req.address ?? '', options: req.options ?? {}, requestId: req.requestId, kind: req.kind }));
    },
    releaseAddress: async (req) => {
      calls.push(`release ${req.address}`);
      t.run((s) => decideReleaseAddress(s, { node, ...req }));
    },
  };
}

const until = async (what: string, ok: () => boolean, ms = 2000) => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('the agent\'s pass', () => {
  it('makes the shim, its /32, its routes; changes nothing when repeated; follows blocks; removes all of it with the network', async () => {
    const t = setup();
    const id = t.pool('h1');
    const drv = fakeDriver();
    const netId = 'ab'.repeat(32);
    drv.ctx.store.putNetwork({ id: netId, type: 'macvlan', parent: 'eth1', createdParent: false, macvlanMode: 'bridge', ipvlanMode: 'l2', ipvlanFlag: 'bridge', internal: false, ipv4: [{ pool: '198.51.100.0/24' }], ipv6: [], poolIds: [id], hostAccess: true });
    const ops = new MemoryRouteOps();
    const links = drv.links as FakeLinks;
    const view = viewOf(t);
    const controller = engineController(t, 'h1');
    const svc = startHostAccess({ node: 'h1', view, store: drv.ctx.store, lock: new KeyedMutex(), controller, links, ops, reconcileMs: 60_000, log: (m) => drv.logs.push(m) });
    const shim = hostShimName(netId);
    try {
      await until('the shim and its route', () => ops.table.size === 1 && !!links.links.get(shim));
      expect(links.links.get(shim)).toMatchObject({ kind: 'macvlan', mode: 'bridge', up: true, parentIndex: links.links.get('eth1')!.index });
      expect([...ops.addresses.get(shim)!]).toEqual(['198.51.100.1/32']);
      expect([...ops.table.values()]).toEqual([expect.objectContaining({ dst: '198.51.100.0/28', dev: shim, protocol: HOST_ACCESS_RT_PROTO })]);
      expect(drv.ctx.store.networks.get(netId)!.hostAddresses).toEqual([{ poolId: id, address: '198.51.100.1/32', allocSeq: expect.any(Number) }]);
      // A second block of this node (a container borrowed nothing; its own blocks grew): routed at once.
      for (let n = 1; n <= 15; n++) t.addr('h1', id, n);
      view.emit([{ type: 'BlockClaimed' } as ClusterEvent]);
      await until('the second block', () => ops.table.has('198.51.100.16/28'));
      // Repeated passes change nothing: one request, one link made.
      const made = links.calls.filter((c) => c.method === 'createMacvlan').length;
      svc.trigger();
      view.emit([{ type: 'AddressAllocated' } as ClusterEvent]);
      await new Promise((r) => setTimeout(r, 50));
      expect(links.calls.filter((c) => c.method === 'createMacvlan').length).toBe(made);
      expect(controller.calls.filter((c) => c.startsWith('request'))).toHaveLength(1);
      // Deleted by hand: back on the next pass.
      links.links.delete(shim);
      ops.dropDevice(shim);
      svc.trigger();
      await until('the shim again', () => !!links.links.get(shim) && ops.table.size === 2 && ops.addresses.get(shim)?.size === 1);
      // The network goes: DeleteNetwork's part, then the pass has nothing left to do.
      const rec = drv.ctx.store.networks.get(netId)!;
      await removeHostAccess({ links, controller, log: () => {} }, rec);
      drv.ctx.store.deleteNetwork(netId);
      ops.dropDevice(shim);
      svc.trigger();
      await until('no routes', () => ops.table.size === 0);
      expect(links.links.has(shim)).toBe(false);
      expect(controller.calls).toContain('release 198.51.100.1');
      expect([...t.engine.state.pools.get(id)!.allocs.values()].some((a) => a.kind === 'host')).toBe(false);
    } finally {
      await svc.stop();
      drv.cleanup();
    }
  });

  it('removes a shim and releases a host address whose network is gone (a crash between the two)', async () => {
    const t = setup();
    const id = t.pool('h1');
    t.host('h1', id, 'cd'.repeat(32));
    const drv = fakeDriver({ links: ['eth1', hostShimName('cd'.repeat(32))] });
    const ops = new MemoryRouteOps();
    ops.table.set('198.51.100.0/28', { family: 4, dst: '198.51.100.0/28', dev: hostShimName('cd'.repeat(32)), protocol: HOST_ACCESS_RT_PROTO, scope: 253 });
    const controller = engineController(t, 'h1');
    const svc = startHostAccess({ node: 'h1', view: viewOf(t), store: drv.ctx.store, lock: new KeyedMutex(), controller, links: drv.links, ops, reconcileMs: 60_000, log: () => {} });
    try {
      await until('the release', () => controller.calls.includes('release 198.51.100.1'));
      await until('the stale route deleted', () => ops.table.size === 0);
      expect(drv.links.links.has(hostShimName('cd'.repeat(32)))).toBe(false);
    } finally {
      await svc.stop();
      drv.cleanup();
    }
  });
});

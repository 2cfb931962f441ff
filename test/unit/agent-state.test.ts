/**
 * The agent's state survives damage: its store writes durably (fsync of file and directory), moves corrupt files
 * aside instead of failing; what it lost is rebuilt from Docker (networks, endpoints) and the controller's state
 * (pools, allocations, bindings); and its report lists every endpoint Docker holds, so the leak rules see a
 * container as live even when the store lost it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  cloneState,
  decideBindEndpoint,
  decideNetworkRecorded,
  decideRequestAddress,
  decideRequestPool,
  dummyParentName,
  findLeakCandidates,
  formatValue,
  type ClusterState,
} from '@underlay/core';
import { LocalStore } from '../../services/node-agent/src/driver/store';
import { PRUNE_CONFIRM_MS, PRUNE_GRACE_MS, claimReleased, forgetPruned, pruneStale, pruneSummary, rebuildFromController, rebuildFromDocker, restore } from '../../services/node-agent/src/driver/restore';
import { readDockerUnderlay } from '../../services/node-agent/src/driver/docker-state';
import { KeyedMutex, driverContext, type DriverContext } from '../../services/node-agent/src/driver/context';
import { rpcControllerClient } from '../../services/node-agent/src/driver/controller-client';
import type { RpcClient } from '@underlay/adapters';
import { FakeDocker, FakeLinks } from './driver-fakes';
import { buildReport } from '../../services/node-agent/src/status';
import { NodeDirectory } from '../../services/controller/src/nodes';
import { engineWithClock } from './support';
import { AddressHolds } from '../../services/node-agent/src/driver/address-holds';

// fsync is observed through a pass-through mock (node:fs's own properties cannot be spied on).
jest.mock('node:fs', () => {
  const real = jest.requireActual<typeof import('node:fs')>('node:fs');
  return { ...real, fsyncSync: jest.fn(real.fsyncSync), fdatasyncSync: jest.fn(real.fdatasyncSync) };
});
const fsync = fs.fsyncSync as jest.MockedFunction<typeof fs.fsyncSync>;
const fdatasync = fs.fdatasyncSync as jest.MockedFunction<typeof fs.fdatasyncSync>;

const hex64 = (c: string) => c.repeat(64).slice(0, 64);
const NET = hex64('a1');
const NET_ISOLATED = hex64('b2');
const EP1 = hex64('e1');
const EP2 = hex64('e2');

/** A Docker network as `GET /networks/{id}` shows it. */
function dockerNetwork(over: Record<string, unknown> = {}) {
  return {
    Name: 'n1',
    Id: NET,
    Driver: 'underlay',
    EnableIPv6: false,
    Internal: false,
    IPAM: { Driver: 'underlay', Options: {}, Config: [{ Subnet: '192.0.2.0/24', Gateway: '192.0.2.1' }] },
    Options: { parent: 'eth1' },
    Labels: {},
    Containers: {
      c1c1c1: { Name: 'web', EndpointID: EP1, MacAddress: '02:42:c0:00:02:02', IPv4Address: '192.0.2.2/24', IPv6Address: '' },
      c2c2c2: { Name: 'db', EndpointID: EP2, MacAddress: '02:42:c0:00:02:03', IPv4Address: '192.0.2.3/24', IPv6Address: '' },
    },
    ...over,
  };
}

function fakeDocker(networks: Record<string, unknown>[]): FakeDocker {
  return new FakeDocker(networks);
}

/** The agent's controller client over a NATS RPC client that records each request (with the node it fills in). */
function context(stateDir: string, docker: FakeDocker, calls: { method: string; req: unknown }[] = []): DriverContext {
  const rpc = {
    node: 'h1',
    call: async (method: string, req: unknown) => {
      calls.push({ method, req });
      return { bound: true };
    },
  };
  return driverContext({
    node: 'h1',
    store: new LocalStore(stateDir),
    links: new FakeLinks(['x']),
    controller: rpcControllerClient(rpc as unknown as RpcClient),
    lock: new KeyedMutex(),
    log: () => {},
    docker,
    parentMap: {},
  });
}

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-agent-state-'));
});
afterEach(() => {
  fsync.mockClear();
  fdatasync.mockClear();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('local store', () => {
  it('fsyncs every write (the file, then its directory) and leaves no temporary file', () => {
    const store = new LocalStore(dir);
    fsync.mockClear();
    // An allocation: a line appended to the journal and fdatasynced (its directory too when the journal is new).
    store.setAlloc('underlay/192.0.2.0/24', '192.0.2.2', 7);
    expect([fdatasync.mock.calls.length, fsync.mock.calls.length]).toEqual([1, 1]);
    store.setAlloc('underlay/192.0.2.0/24', '192.0.2.3', 8);
    expect([fdatasync.mock.calls.length, fsync.mock.calls.length]).toEqual([2, 1]);
    fsync.mockClear();
    store.putEndpoint({ id: EP1, networkId: NET, address: '192.0.2.2/24' });
    expect(fsync).toHaveBeenCalledTimes(2);
    store.deleteEndpoint(EP1);
    expect(fsync).toHaveBeenCalledTimes(3);
    store.close();
    const all = [dir, path.join(dir, 'networks'), path.join(dir, 'endpoints')].flatMap((d) => fs.readdirSync(d));
    expect(all.filter((f) => f.includes('.tmp-'))).toEqual([]);
    expect(new LocalStore(dir).allocSeq('underlay/192.0.2.0/24', '192.0.2.2')).toBe(7);
  });

  it('moves corrupt or invalid files aside and starts with the rest', () => {
    const store = new LocalStore(dir);
    store.putNetwork({ id: NET, type: 'macvlan', parent: 'eth1', requestedParent: 'eth1', createdParent: false, macvlanMode: 'bridge', ipvlanMode: 'l2', ipvlanFlag: 'bridge', internal: false, ipv4: [{ pool: '192.0.2.0/24' }], ipv6: [], poolIds: ['underlay/192.0.2.0/24'] });
    store.putEndpoint({ id: EP1, networkId: NET, address: '192.0.2.2/24', srcName: 'ule1e1e1e1e1e' });
    store.setAlloc('underlay/192.0.2.0/24', '192.0.2.2', 7);
    // Damage: truncated JSON, a record failing its schema, a record under another name, a half-written temporary.
    fs.writeFileSync(path.join(dir, 'allocations.json'), '{"underlay/192.0.2.0/24|192.0.2.2": {"seq"');
    fs.writeFileSync(path.join(dir, 'endpoints', `${EP2}.json`), JSON.stringify({ id: EP2, networkId: 42 }));
    fs.writeFileSync(path.join(dir, 'endpoints', `${hex64('e3')}.json`), JSON.stringify({ id: EP1, networkId: NET }));
    fs.writeFileSync(path.join(dir, 'networks', `${NET}.json.tmp-999`), '{"id":');

    const again = new LocalStore(dir, () => new Date('2026-01-02T03:04:05.678Z'));
    expect(again.damaged.map((d) => path.relative(dir, d.file)).sort()).toEqual(['allocations.json', 'allocations.log', `endpoints/${EP2}.json`, `endpoints/${hex64('e3')}.json`]);
    expect(again.damaged.find((d) => d.file.endsWith('allocations.json'))!.reason).toMatch(/^is not valid JSON/);
    // The allocations journal holds changes to that snapshot: moved aside with it.
    expect(again.damaged.find((d) => d.file.endsWith('allocations.log'))!.reason).toBe(`holds changes to ${path.join(dir, 'allocations.json')}, which was damaged`);
    expect(fs.existsSync(path.join(dir, 'allocations.log.corrupt-2026-01-02T03-04-05-678Z'))).toBe(true);
    expect(again.damaged.find((d) => d.file.endsWith(`${EP2}.json`))!.reason).toMatch(/^does not match its schema: networkId/);
    expect(fs.existsSync(path.join(dir, 'allocations.json.corrupt-2026-01-02T03-04-05-678Z'))).toBe(true);
    expect(fs.existsSync(path.join(dir, 'allocations.json'))).toBe(false);
    expect(fs.readdirSync(path.join(dir, 'networks'))).toEqual([`${NET}.json`]);
    // What was intact is kept.
    expect([...again.networks.keys()]).toEqual([NET]);
    expect([...again.endpoints.keys()]).toEqual([EP1]);
    expect(again.allocs.size).toBe(0);
    expect(again.allocationsMissing).toBe(true);
    // A third start finds nothing damaged any more.
    expect(new LocalStore(dir).damaged).toEqual([]);
  });
});

describe('rebuild from Docker', () => {
  it('records the networks and container endpoints Docker holds that the store lost', async () => {
    const docker = fakeDocker([
      dockerNetwork(),
      dockerNetwork({ Name: 'iso', Id: NET_ISOLATED, Options: { type: 'ipvlan', ipvlan_mode: 'l3' }, IPAM: { Options: { space: 'vlan30' }, Config: [{ Subnet: '198.51.100.0/24' }, { Subnet: '2001:db8::/64', Gateway: '2001:db8::1' }] }, Containers: {} }),
      { ...dockerNetwork({ Name: 'bridge', Id: hex64('cc'), Containers: {} }), Driver: 'bridge' },
    ]);
    const ctx = context(dir, docker);
    ctx.parentMap = { eth1: 'ens4' };
    const r = await rebuildFromDocker(ctx);
    expect(r).toEqual({ dockerRead: true, networks: ['n1', 'iso'], endpoints: ['web 192.0.2.2/24', 'db 192.0.2.3/24'], errors: [], pruned: { networks: [], endpoints: [], links: [], errors: [], removed: [] } });
    expect(ctx.store.networks.get(NET)).toEqual({
      id: NET, type: 'macvlan', requestedParent: 'ens4', parent: 'ens4', createdParent: false, macvlanMode: 'bridge', ipvlanMode: 'l2', ipvlanFlag: 'bridge',
      internal: false, ipv4: [{ pool: '192.0.2.0/24', gateway: '192.0.2.1/24' }], ipv6: [], poolIds: ['underlay/192.0.2.0/24'],
    });
    const iso = ctx.store.networks.get(NET_ISOLATED)!;
    expect(iso).toMatchObject({ type: 'ipvlan', ipvlanMode: 'l3', parent: `di-${NET_ISOLATED.slice(0, 12)}`, createdParent: true, internal: true, poolIds: ['vlan30/198.51.100.0/24', 'vlan30/2001:db8::/64'] });
    expect(iso.ipv6).toEqual([{ pool: '2001:db8::/64', gateway: '2001:db8::1/64' }]);
    expect(ctx.store.endpoints.get(EP1)).toEqual({ id: EP1, networkId: NET, address: '192.0.2.2/24', mac: '02:42:c0:00:02:02', srcName: `ul${EP1.slice(0, 11)}` });
    expect(ctx.store.networks.has(hex64('cc'))).toBe(false);
    // Durable: a restart reads what was rebuilt; a second rebuild finds nothing to do.
    const ctx2 = context(dir, docker);
    expect([...ctx2.store.endpoints.keys()].sort()).toEqual([EP1, EP2]);
    expect(await rebuildFromDocker(ctx2)).toEqual({ dockerRead: true, networks: [], endpoints: [], errors: [], pruned: { networks: [], endpoints: [], links: [], errors: [], removed: [] } });
    // The rebuilt endpoints own their links: restore removes none of them.
    ctx2.links.listLinks = async () => [{ name: `ul${EP1.slice(0, 11)}`, index: 3 }, { name: 'ul0123456789a', index: 4 }];
    const deleted: string[] = [];
    ctx2.links.deleteLink = async (n: string) => (deleted.push(n), true);
    await restore(ctx2, async () => (await ctx2.links.listLinks()).map((l) => l.name));
    expect(deleted).toEqual(['ul0123456789a']);
  });

  it('starts without Docker and says so', async () => {
    const docker = fakeDocker([dockerNetwork()]);
    docker.down = true;
    const ctx = context(dir, docker);
    const r = await rebuildFromDocker(ctx);
    expect(r.dockerRead).toBe(false);
    expect(r.errors[0]).toMatch(/Docker's networks could not be listed: connect ENOENT/);
    expect(ctx.store.networks.size).toBe(0);
  });
});

describe('check against Docker (Docker is the truth on its host)', () => {
  const PHANTOM = hex64('1b');
  const PASSTHRU = hex64('2c');
  const EP3 = hex64('e3');
  const EP4 = hex64('e4');
  const linkOf = (ep: string) => `ul${ep.slice(0, 11)}`;

  /** A store written by an earlier agent: NET (Docker has it), a passthru network on eth1 and a dummy-parent network Docker no longer has. */
  function oldStore(): void {
    const store = new LocalStore(dir);
    const base = { type: 'macvlan' as const, macvlanMode: 'bridge', ipvlanMode: 'l2', ipvlanFlag: 'bridge', internal: false, ipv6: [] };
    store.putNetwork({ ...base, id: NET, requestedParent: 'eth1', parent: 'eth1', createdParent: false, ipv4: [{ pool: '192.0.2.0/24', gateway: '192.0.2.1/24' }], poolIds: ['underlay/192.0.2.0/24'] });
    store.putNetwork({ ...base, id: PASSTHRU, requestedParent: 'eth1', parent: 'eth1', createdParent: false, macvlanMode: 'passthru', ipv4: [{ pool: '198.51.100.0/24' }], poolIds: ['underlay/198.51.100.0/24'] });
    store.putNetwork({ ...base, id: PHANTOM, parent: dummyParentName('macvlan', PHANTOM), createdParent: true, internal: true, ipv4: [{ pool: '203.0.113.0/24' }], poolIds: ['underlay/203.0.113.0/24'] });
    store.putEndpoint({ id: EP1, networkId: NET, address: '192.0.2.2/24', srcName: linkOf(EP1) });
    store.putEndpoint({ id: EP3, networkId: NET, address: '192.0.2.9/24', srcName: linkOf(EP3) });
    store.putEndpoint({ id: EP4, networkId: PHANTOM, address: '203.0.113.2/24', srcName: linkOf(EP4) });
    store.setAlloc('underlay/203.0.113.0/24', '203.0.113.2', 7);
    // An address of NET held for a restart (its endpoint went): no record names it, and nothing here removes it.
    store.setAlloc('underlay/192.0.2.0/24', '192.0.2.5', 8);
  }

  it('removes at start every record Docker does not have, with the links underlay made, and says what', async () => {
    oldStore();
    // Docker's data root was reset: it holds NET with one container only.
    const docker = fakeDocker([dockerNetwork({ Containers: { c1c1c1: { Name: 'web', EndpointID: EP1, MacAddress: '02:42:c0:00:02:02', IPv4Address: '192.0.2.2/24', IPv6Address: '' } } })]);
    const ctx = context(dir, docker);
    const links = ctx.links as FakeLinks;
    await links.createDummy({ name: dummyParentName('macvlan', PHANTOM), up: true });
    await links.createMacvlan({ name: linkOf(EP3), parent: 'x', mode: 'bridge' });
    const r = await rebuildFromDocker(ctx);
    expect(r.pruned).toEqual({
      networks: [`${PASSTHRU.slice(0, 12)} (parent eth1)`, `${PHANTOM.slice(0, 12)} (parent ${dummyParentName('macvlan', PHANTOM)})`].sort(),
      endpoints: expect.arrayContaining([`${EP4.slice(0, 12)} 203.0.113.2/24`, `${EP3.slice(0, 12)} 192.0.2.9/24`]),
      links: expect.arrayContaining([linkOf(EP3), dummyParentName('macvlan', PHANTOM)]),
      errors: [],
      removed: expect.arrayContaining([
        { id: PASSTHRU, poolIds: ['underlay/198.51.100.0/24'], allocs: [] },
        // Docker will never release the phantom network's addresses: they go back with it.
        { id: PHANTOM, poolIds: ['underlay/203.0.113.0/24'], allocs: [{ poolId: 'underlay/203.0.113.0/24', address: '203.0.113.2', seq: 7 }] },
      ]),
    });
    // The allocations stay until the controller has been told (forgetPruned); the held address of NET stays.
    expect(ctx.store.allocSeq('underlay/192.0.2.0/24', '192.0.2.5')).toBe(8);
    expect(r.pruned!.endpoints).toHaveLength(2);
    expect([...ctx.store.networks.keys()]).toEqual([NET]);
    expect([...ctx.store.endpoints.keys()]).toEqual([EP1]);
    expect(links.links.has(dummyParentName('macvlan', PHANTOM))).toBe(false);
    expect(links.links.has('x')).toBe(true);
    // Gone from disk: a restart does not bring them back; eth1 is free for a passthru network.
    const again = new LocalStore(dir);
    expect([...again.networks.keys()]).toEqual([NET]);
    expect([...again.networks.values()].filter((n) => n.parent === 'eth1' && n.macvlanMode === 'passthru')).toEqual([]);
    expect(pruneSummary(r.pruned!)).toMatch(new RegExp(`^removed records Docker does not have: 2 networks \\(.*${PHANTOM.slice(0, 12)}.*\\) and 2 endpoints`));
  });

  it('removes nothing while Docker cannot be read in full, nor what this process wrote moments ago', async () => {
    oldStore();
    const docker = fakeDocker([]);
    const ctx = context(dir, docker);
    docker.down = true;
    expect((await rebuildFromDocker(ctx)).pruned).toBeUndefined();
    expect(ctx.store.networks.size).toBe(3);
    docker.down = false;
    // Written by this process (a CreateNetwork Docker has not stored yet): kept within the grace, removed after.
    ctx.store.putNetwork({ ...ctx.store.networks.get(PHANTOM)! });
    const state = await readDockerUnderlay(docker, ctx.store.networks.keys());
    const first = await pruneStale(ctx, state);
    expect(first.networks.map((n) => n.slice(0, 12)).sort()).toEqual([NET, PASSTHRU].map((id) => id.slice(0, 12)).sort());
    expect([...ctx.store.networks.keys()]).toEqual([PHANTOM]);
    expect(PRUNE_GRACE_MS).toBeGreaterThan(10_000);
    const later = await pruneStale(ctx, state, 0);
    expect(later.networks.map((n) => n.slice(0, 12))).toEqual([PHANTOM.slice(0, 12)]);
    expect(ctx.store.networks.size).toBe(0);
    expect(ctx.store.endpoints.size).toBe(0);
  });

  it('the periodic check prunes a network only once Docker has not listed it for PRUNE_CONFIRM_MS (docker network rm hides it before DeleteNetwork)', async () => {
    oldStore();
    const docker = fakeDocker([]);
    const ctx = context(dir, docker);
    const state = await readDockerUnderlay(docker, ctx.store.networks.keys());
    let t = 1_000_000;
    const confirm = { missingSince: new Map<string, number>(), now: () => t };
    const before = [...ctx.store.networks.keys()].sort();
    // First seen missing: kept (a DeleteNetwork on its way finds its record), and still kept just before the time.
    expect((await pruneStale(ctx, state, 0, confirm)).networks).toEqual([]);
    t += PRUNE_CONFIRM_MS - 1;
    expect((await pruneStale(ctx, state, 0, confirm)).networks).toEqual([]);
    expect([...ctx.store.networks.keys()].sort()).toEqual(before);
    // Its endpoints wait with it, so their addresses go back with the network.
    expect(ctx.store.endpoints.has(EP4)).toBe(true);
    // Listed again meanwhile: the count starts over.
    const listed = await readDockerUnderlay(fakeDocker([dockerNetwork()]), ctx.store.networks.keys());
    await pruneStale(ctx, listed, 0, confirm);
    expect(confirm.missingSince.has(NET)).toBe(false);
    t += 1;
    const pruned = await pruneStale(ctx, state, 0, confirm);
    expect(pruned.networks.map((n) => n.slice(0, 12)).sort()).toEqual(before.filter((id) => id !== NET).map((id) => id.slice(0, 12)).sort());
    expect([...ctx.store.networks.keys()]).toEqual([NET]);
    expect(pruned.removed.find((x) => x.id === PHANTOM)?.allocs).toEqual([{ poolId: 'underlay/203.0.113.0/24', address: '203.0.113.2', seq: 7 }]);
    t += PRUNE_CONFIRM_MS;
    expect((await pruneStale(ctx, state, 0, confirm)).networks.map((n) => n.slice(0, 12))).toEqual([NET.slice(0, 12)]);
    expect(ctx.store.networks.size).toBe(0);
    expect(confirm.missingSince.size).toBe(0);
  });

  it('tells the controller this host no longer has the network, gives back its addresses, and the pools nothing else here uses (with their held addresses)', async () => {
    const calls: { method: string; req: unknown }[] = [];
    const ctx = context(dir, fakeDocker([]), calls);
    const released: string[] = [];
    ctx.holds = new AddressHolds({ holdMs: 60_000, release: async (h) => void released.push(h.address), log: () => {} });
    ctx.store.putNetwork({ id: NET, type: 'macvlan', parent: 'eth1', requestedParent: 'eth1', createdParent: false, macvlanMode: 'bridge', ipvlanMode: 'l2', ipvlanFlag: 'bridge', internal: false, ipv4: [{ pool: '192.0.2.0/24' }], ipv6: [], poolIds: ['underlay/192.0.2.0/24'] });
    ctx.store.setAlloc('underlay/203.0.113.0/24', '203.0.113.2', 7);
    ctx.holds.hold({ poolId: 'underlay/203.0.113.0/24', address: '203.0.113.9', cidr: '203.0.113.9/24', allocSeq: 9 });
    // NET (still Docker's) uses 192.0.2.0/24: its held address stays held.
    ctx.holds.hold({ poolId: 'underlay/192.0.2.0/24', address: '192.0.2.5', cidr: '192.0.2.5/24', allocSeq: 8 });
    const errors = await forgetPruned(ctx, [
      { id: PHANTOM, poolIds: ['underlay/203.0.113.0/24', 'underlay/192.0.2.0/24'], allocs: [{ poolId: 'underlay/203.0.113.0/24', address: '203.0.113.2', seq: 7 }] },
    ]);
    expect(errors).toEqual([]);
    expect(calls).toEqual([
      { method: 'networkRemove', req: { node: 'h1', networkId: PHANTOM, cluster: false } },
      { method: 'releaseAddress', req: { node: 'h1', poolId: 'underlay/203.0.113.0/24', address: '203.0.113.2', allocSeq: 7 } },
      { method: 'releasePool', req: { node: 'h1', poolId: 'underlay/203.0.113.0/24' } },
    ]);
    expect(ctx.store.allocSeq('underlay/203.0.113.0/24', '203.0.113.2')).toBeUndefined();
    expect(released).toEqual(['203.0.113.9']);
    expect(ctx.holds.list().map((h) => h.address)).toEqual(['192.0.2.5']);
    await ctx.holds.releaseAll();
  });

  it('keeps a pool this host\'s Docker asked for a moment ago (a network being created with it)', async () => {
    const calls: { method: string; req: unknown }[] = [];
    const ctx = context(dir, fakeDocker([]), calls);
    await ctx.controller.requestPool({ space: 'underlay', pool: '203.0.113.0/24', subPool: '', options: {}, v6: false });
    ctx.memory.poolRequestedAt.set('underlay/203.0.113.0/24', Date.now());
    calls.length = 0;
    expect(await forgetPruned(ctx, [{ id: PHANTOM, poolIds: ['underlay/203.0.113.0/24'], allocs: [] }])).toEqual([]);
    expect(calls.map((c) => c.method)).toEqual(['networkRemove']);
    // Later than the grace, it goes.
    expect(await forgetPruned(ctx, [{ id: PHANTOM, poolIds: ['underlay/203.0.113.0/24'], allocs: [] }], () => Date.now() + PRUNE_GRACE_MS)).toEqual([]);
    expect(calls.map((c) => c.method)).toEqual(['networkRemove', 'networkRemove', 'releasePool']);
  });

  it('gives back nothing of a network the controller says another host owns', async () => {
    const calls: { method: string; req: unknown }[] = [];
    const ctx = context(dir, fakeDocker([]), calls);
    ctx.controller.networkRemove = async () => {
      throw new Error('network 1b1b1b1b1b1b is h2\'s');
    };
    const errors = await forgetPruned(ctx, [{ id: PHANTOM, poolIds: ['underlay/203.0.113.0/24'], allocs: [{ poolId: 'underlay/203.0.113.0/24', address: '203.0.113.2', seq: 7 }] }]);
    expect(errors).toEqual([`the controller was not told that network ${PHANTOM.slice(0, 12)} is gone from this host: network 1b1b1b1b1b1b is h2's`]);
    expect(calls).toEqual([]);
  });
});

/** The controller's state: h1 holds the gateway .1, 192.0.2.2 (bound to EP1) and .3 (never bound); h2 holds one in its block. */
function clusterState(t = engineWithClock()): ClusterState {
  const { run } = t;
  const poolId = run((s) => decideRequestPool(s, { node: 'h1', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false })).poolId;
  run((s) => decideRequestPool(s, { node: 'h2', space: 'underlay', pool: '192.0.2.0/24', subPool: '', options: {}, v6: false }));
  run((s) => decideRequestAddress(s, { node: 'h1', poolId, address: '192.0.2.1', options: { RequestAddressType: 'com.docker.network.gateway' } }));
  run((s) => decideNetworkRecorded(s, { node: 'h1', networkId: NET, poolIds: [poolId], options: { parent: 'eth1' } }));
  const a = run((s) => decideRequestAddress(s, { node: 'h1', poolId, address: '', options: {}, requestId: 'r1', kind: 'endpoint' }));
  run((s) => decideRequestAddress(s, { node: 'h1', poolId, address: '', options: {}, requestId: 'r2', kind: 'endpoint' }));
  run((s) => decideRequestAddress(s, { node: 'h2', poolId, address: '', options: {}, requestId: 'r3', kind: 'endpoint' }));
  run((s) => decideBindEndpoint(s, { node: 'h1', poolId, address: a.address.split('/')[0]!, allocSeq: a.allocSeq, endpointId: EP1, networkId: NET }));
  return t.engine.state;
}

describe('rebuild from the controller', () => {
  it('restores the allocations this node holds, with their seqs, and binds what the controller has unbound', async () => {
    const state = clusterState();
    const calls: { method: string; req: unknown }[] = [];
    const ctx = context(dir, fakeDocker([dockerNetwork()]), calls);
    await rebuildFromDocker(ctx);
    // The pool the controller recorded for this network wins over the derived one.
    ctx.store.putNetwork({ ...ctx.store.networks.get(NET)!, poolIds: [] });
    const r = await rebuildFromController(ctx, state);
    expect(r.poolsFixed).toEqual([NET.slice(0, 12)]);
    expect(ctx.store.networks.get(NET)!.poolIds).toEqual(['underlay/192.0.2.0/24']);
    const pool = state.pools.get('underlay/192.0.2.0/24')!;
    const mine = [...pool.allocs].filter(([, a]) => a.node === 'h1').map(([v, a]) => [`underlay/192.0.2.0/24|${formatValue(4, v)}`, { seq: a.seq }]);
    expect(r.allocations).toBe(mine.length);
    expect(Object.fromEntries(ctx.store.allocs)).toEqual(Object.fromEntries(mine));
    // 192.0.2.2 is bound already; 192.0.2.3 (held by container db, EP2) was not: it is bound now.
    expect(r.bound).toEqual(['192.0.2.3']);
    expect(calls).toEqual([{ method: 'bindEndpoint', req: { node: 'h1', poolId: 'underlay/192.0.2.0/24', address: '192.0.2.3', allocSeq: pool.allocs.get(pool.cidr.network + 3n)!.seq, endpointId: EP2, networkId: NET } }]);
    expect(r.errors).toEqual([]);
    // The allocations file is back on disk.
    expect(new LocalStore(dir).allocs.size).toBe(mine.length);
  });
});

describe('an address released while its endpoint holds it', () => {
  /** The state of clusterState after the collector released 192.0.2.2 (h1 unheard for --node-expired-ms); `taken`: h2 got it since. */
  function released(taken: boolean) {
    const t = engineWithClock();
    const state = clusterState(t);
    const poolId = 'underlay/192.0.2.0/24';
    const seq = state.pools.get(poolId)!.allocs.get(state.pools.get(poolId)!.cidr.network + 2n)!.seq;
    t.run(() => ({ events: [{ type: 'AddressReleased', data: { poolId, address: '192.0.2.2', node: 'h1', allocSeq: seq, reason: 'leak: node-expired' } }], result: {} }), 'controller');
    if (taken) t.run((s) => decideRequestAddress(s, { node: 'h2', poolId, address: '192.0.2.2', options: {}, requestId: 'r9', kind: 'endpoint' }));
    return { t, state, poolId, seq };
  }

  /** The agent's context rebuilt from Docker (EP1 holds 192.0.2.2), its controller answering with the decisions on `t`'s state. */
  async function claiming(t: ReturnType<typeof engineWithClock>, calls: { method: string; req: unknown }[] = [], stateDir = dir) {
    const ctx = context(stateDir, fakeDocker([dockerNetwork()]), calls);
    await rebuildFromDocker(ctx);
    ctx.controller.bindEndpoint = async (req) => {
      calls.push({ method: 'bindEndpoint', req });
      return t.run((s) => decideBindEndpoint(s, { node: 'h1', ...req }));
    };
    return ctx;
  }

  it('is allocated to this node again and bound to the endpoint (one claim), the store keeping the new seq', async () => {
    const { t, state, poolId, seq } = released(false);
    const calls: { method: string; req: unknown }[] = [];
    const ctx = await claiming(t, calls);
    const r = await rebuildFromController(ctx, state);
    expect(r.errors).toEqual([]);
    expect(r.claimed).toEqual(['192.0.2.2']);
    const now = state.pools.get(poolId)!.allocs.get(state.pools.get(poolId)!.cidr.network + 2n)!;
    expect(now).toMatchObject({ node: 'h1', kind: 'endpoint', endpointId: EP1, networkId: NET });
    expect(now.seq).toBeGreaterThan(seq);
    expect(ctx.store.allocSeq(poolId, '192.0.2.2')).toBe(now.seq);
    expect(calls.filter((c) => (c.req as { address?: string }).address === '192.0.2.2')).toEqual([
      { method: 'bindEndpoint', req: { poolId, address: '192.0.2.2', endpointId: EP1, networkId: NET, claim: true } },
    ]);
    // Repeated (the view saw the release again, a resync): nothing more to do.
    calls.length = 0;
    const again = await rebuildFromController(ctx, state);
    expect(again.claimed).toEqual([]);
    expect(calls).toEqual([]);
  });

  it('claims nothing new when only this view lags (the controller has it for this endpoint already)', async () => {
    const { t, state } = released(false);
    const ctx = await claiming(t);
    // The controller took it back already (an earlier claim); this view has not seen that yet.
    const lagging = cloneState(state);
    await rebuildFromController(ctx, state);
    const r = await rebuildFromController(ctx, lagging);
    expect({ claimed: r.claimed, errors: r.errors }).toEqual({ claimed: [], errors: [] });
  });

  it('is not claimed for an endpoint no container joined (a CreateEndpoint that failed left it)', async () => {
    const { t, state } = released(false);
    const calls: { method: string; req: unknown }[] = [];
    const ctx = await claiming(t, calls);
    const { srcName: _, ...ghost } = ctx.store.endpoints.get(EP1)!;
    ctx.store.putEndpoint(ghost);
    expect(await claimReleased(ctx, state)).toEqual({ claimed: [], errors: [] });
    expect(calls).toEqual([]);
  });

  it('says so when another container of this host got the address since', async () => {
    const { t, state, poolId } = released(false);
    const ctx = await claiming(t);
    // A new container here took 192.0.2.2 after the release (its endpoint EP3, bound).
    const EP3 = hex64('e3');
    const r = t.run((s) => decideRequestAddress(s, { node: 'h1', poolId, address: '192.0.2.2', options: {}, requestId: 'r8', kind: 'endpoint' }));
    t.run((s) => decideBindEndpoint(s, { node: 'h1', poolId, address: '192.0.2.2', allocSeq: r.allocSeq, endpointId: EP3, networkId: NET }));
    ctx.store.putEndpoint({ id: EP3, networkId: NET, address: '192.0.2.2/24', srcName: 'ul-e3' });
    expect(await claimReleased(ctx, state)).toEqual({
      claimed: [],
      errors: [`endpoint ${EP1.slice(0, 12)} holds 192.0.2.2, which the controller has bound to endpoint ${EP3.slice(0, 12)} of this host: two containers here have this address (see \`underlay ipam check\`)`],
    });
  });

  it('is reported (two containers may have it) when another host has it since', async () => {
    const { t, state } = released(true);
    const ctx = await claiming(t);
    const r = await rebuildFromController(ctx, state);
    expect(r.claimed).toEqual([]);
    expect(r.errors).toEqual([`endpoint ${EP1.slice(0, 12)} holds 192.0.2.2, which the controller has for node h2`]);
    // Had this view not seen it yet, the controller refuses the claim, and says who has it.
    const before = released(false);
    const dir2 = path.join(dir, 'second');
    fs.mkdirSync(dir2);
    const ctx2 = await claiming(before.t, [], dir2);
    before.t.run((s) => decideRequestAddress(s, { node: 'h2', poolId: before.poolId, address: '192.0.2.2', options: {}, requestId: 'r9', kind: 'endpoint' }));
    const stale = cloneState(before.state);
    stale.pools.get(before.poolId)!.allocs.delete(stale.pools.get(before.poolId)!.cidr.network + 2n);
    const r2 = await rebuildFromController(ctx2, stale);
    expect(r2.errors).toEqual([
      `endpoint ${EP1.slice(0, 12)} holds 192.0.2.2, which the cluster released and could not give back: address 192.0.2.2 is already in use by an endpoint on node h2 (two containers may have this address now: see \`underlay ipam check\`)`,
    ]);
  });
});

describe('point-to-point networks rebuilt from Docker', () => {
  const P2P_NET = hex64('f1');
  /** A /31 network as Docker 20.10 shows it: the address its gateway request got appears as Gateway. */
  const p2pNetwork = () =>
    dockerNetwork({ Id: P2P_NET, Name: 'p2p', IPAM: { Driver: 'underlay', Options: {}, Config: [{ Subnet: '198.51.100.232/31', Gateway: '198.51.100.232' }] }, Containers: {} });
  const p2pState = (gateway?: string) => {
    const t = engineWithClock();
    const poolId = t.run((s) => decideRequestPool(s, { node: 'h1', space: 'underlay', pool: '198.51.100.232/31', subPool: '', options: {}, v6: false })).poolId;
    t.run((s) => decideRequestAddress(s, { node: 'h1', poolId, address: gateway ?? '', options: { RequestAddressType: 'com.docker.network.gateway' } }));
    t.run((s) => decideNetworkRecorded(s, { node: 'h1', networkId: P2P_NET, poolIds: [poolId], options: { parent: 'eth1' } }));
    return t.engine.state;
  };

  it('records no gateway for a /31 Docker shows one for, unless the controller holds a --gateway reservation', async () => {
    const ctx = context(dir, fakeDocker([p2pNetwork()]));
    await rebuildFromDocker(ctx);
    expect(ctx.store.networks.get(P2P_NET)!.ipv4).toEqual([{ pool: '198.51.100.232/31' }]);
    // No --gateway: the controller reserved nothing, nothing to fix.
    expect((await rebuildFromController(ctx, p2pState())).gatewaysFixed).toEqual([]);
    expect(ctx.store.networks.get(P2P_NET)!.ipv4).toEqual([{ pool: '198.51.100.232/31' }]);
    // --gateway 198.51.100.233: the controller's reservation is the network's gateway.
    const r = await rebuildFromController(ctx, p2pState('198.51.100.233'));
    expect(r.gatewaysFixed).toEqual([`${P2P_NET.slice(0, 12)} 198.51.100.232/31`]);
    expect(new LocalStore(dir).networks.get(P2P_NET)!.ipv4).toEqual([{ pool: '198.51.100.232/31', gateway: '198.51.100.233/31' }]);
  });
});

describe('node report', () => {
  it('lists every endpoint Docker holds on underlay networks, even with a wiped store, and the collector sees them live', async () => {
    const ctx = context(dir, fakeDocker([dockerNetwork()]));
    const report = await buildReport({ ctx, version: '0.1.0', leaseMs: 15_000 });
    expect(report.endpoints.sort()).toEqual([EP1, EP2]);
    expect(report.endpointStates).toEqual(
      expect.arrayContaining([expect.objectContaining({ endpointId: EP1, container: 'web', containerId: 'c1c1c1', address: '192.0.2.2/24', network: 'n1', state: 'joined' })]),
    );
    // The collector's view after this report: no candidate for h1's bound address; the unbound .3 is held by a
    // container Docker reports, so it is no candidate either; h2's address is untouched by h1's report.
    const state = clusterState();
    const nodes = new NodeDirectory(15_000);
    const t0 = Date.now() + 3_600_000;
    nodes.record(report, t0);
    const found = findLeakCandidates(state, t0 + 1, nodes.liveness, { unboundGraceMs: 1, reportSlackMs: 1, nodeExpiredMs: 10 * 3_600_000 }, t0);
    expect(found.filter((c) => c.node === 'h1')).toEqual([]);
    // Without Docker's endpoints (the store alone, as before), both of h1's addresses are candidates.
    const blind = { ...report, endpoints: [], endpointStates: [] };
    nodes.record(blind, t0);
    const found2 = findLeakCandidates(state, t0 + 1, nodes.liveness, { unboundGraceMs: 1, reportSlackMs: 1, nodeExpiredMs: 10 * 3_600_000 }, t0);
    expect(found2.filter((c) => c.node === 'h1').map((c) => `${c.address} ${c.rule}`).sort()).toEqual(['192.0.2.2 endpoint-gone', '192.0.2.3 unbound']);
  });

  it('lists the addresses held for a restart; the controller leaves them to the node and does not count them attached', async () => {
    const ctx = context(dir, fakeDocker([dockerNetwork()]));
    ctx.holds = new AddressHolds({ holdMs: 60_000, release: async () => {}, log: () => {} });
    ctx.holds.hold({ poolId: 'underlay/192.0.2.0/24', address: '192.0.2.3', cidr: '192.0.2.3/24', allocSeq: 5 });
    const report = await buildReport({ ctx, version: '0.1.0', leaseMs: 15_000 });
    expect(report.heldAddresses).toEqual(['192.0.2.3']);
    const nodes = new NodeDirectory(15_000);
    nodes.record(report);
    expect(nodes.heldBy('h1', '192.0.2.3')).toBe(true);
    expect(nodes.heldBy('h1', '192.0.2.2')).toBe(false);
    expect(nodes.heldBy('h2', '192.0.2.3')).toBe(false);
    await ctx.holds.releaseAll();
  });

  it('keeps what it knew while Docker cannot be read, and sends nothing when it knows nothing', async () => {
    const docker = fakeDocker([dockerNetwork()]);
    const ctx = context(dir, docker);
    await buildReport({ ctx, version: '0.1.0', leaseMs: 15_000 });
    docker.down = true;
    const state = clusterState();
    const report = await buildReport({ ctx, version: '0.1.0', leaseMs: 15_000, state });
    expect(report.endpoints.sort()).toEqual([EP1, EP2]);
    // A fresh agent (nothing seen from Docker) still lists what the cluster says this node holds.
    const fresh = context(fs.mkdtempSync(path.join(dir, 'b-')), docker);
    expect((await buildReport({ ctx: fresh, version: '0.1.0', leaseMs: 15_000, state })).endpoints).toEqual([EP1]);
    await expect(buildReport({ ctx: fresh, version: '0.1.0', leaseMs: 15_000 })).rejects.toThrow(/report postponed: Docker's networks could not be listed/);
  });
});

/**
 * The agent's IpamDriver handlers (services/node-agent/src/driver/ipam.ts) against in-memory fakes of the controller
 * client (test/unit/driver-fakes.ts) and a real LocalStore on a temporary directory: what they ask the controller,
 * what they answer Docker, and what they remember.
 */
import { ConflictError, NotFoundError, plugin } from '@underlay/core';
import { ZodError } from 'zod';
import * as ipam from '../../services/node-agent/src/driver/ipam';
import { fakeDriver } from './driver-fakes';
import { AddressHolds } from '../../services/node-agent/src/driver/address-holds';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const POOL = 'underlay/192.0.2.0/24';
const NET = 'a1'.repeat(32);

let f: ReturnType<typeof fakeDriver>;
beforeEach(() => {
  f = fakeDriver();
});
afterEach(() => f.cleanup());

describe('RequestPool / ReleasePool', () => {
  it('asks the controller for the pool in the local space and remembers it for CreateNetwork', async () => {
    const r = await ipam.requestPool(f.ctx, { AddressSpace: '', Pool: '192.0.2.0/24', Options: { a: 'b' } });
    expect(r).toEqual({ PoolID: POOL, Pool: '192.0.2.0/24', Data: {} });
    expect(f.controller.calls).toHaveLength(1);
    const req = f.controller.calls[0]!.req as Record<string, unknown>;
    expect(req).toEqual({ space: plugin.LOCAL_ADDRESS_SPACE, pool: '192.0.2.0/24', subPool: '', options: { a: 'b' }, v6: false, requestId: expect.stringMatching(UUID) });
    expect(f.memory.recentPools.get('192.0.2.0/24')).toBe(POOL);
    expect(f.controller.pools.has(POOL)).toBe(true);
    // When it asked, by pool id (a pool asked for a moment ago is not given back for a stale record: restore.ts).
    expect(Date.now() - f.memory.poolRequestedAt.get(POOL)!).toBeLessThan(5_000);
  });

  it('keeps the address space Docker names and makes a new request id per call', async () => {
    await ipam.requestPool(f.ctx, { AddressSpace: plugin.GLOBAL_ADDRESS_SPACE, Pool: '198.51.100.0/24', V6: false });
    await ipam.requestPool(f.ctx, { AddressSpace: plugin.GLOBAL_ADDRESS_SPACE, Pool: '198.51.100.0/24' });
    const [a, b] = f.controller.calls.map((c) => c.req as { space: string; requestId: string });
    expect(a!.space).toBe('underlay-global');
    expect(a!.requestId).not.toBe(b!.requestId);
    expect(f.memory.recentPools.get('198.51.100.0/24')).toBe('underlay-global/198.51.100.0/24');
  });

  it("passes the controller's refusal on and remembers nothing", async () => {
    f.controller.failNext('requestPool', new ConflictError('pool 192.0.2.0/24 overlaps pool underlay/192.0.2.0/23'));
    await expect(ipam.requestPool(f.ctx, { Pool: '192.0.2.0/24' })).rejects.toThrow('pool 192.0.2.0/24 overlaps pool underlay/192.0.2.0/23');
    expect(f.memory.recentPools.size).toBe(0);
  });

  it('releases a pool by id, and refuses a request without one before calling anyone', async () => {
    await ipam.requestPool(f.ctx, { Pool: '192.0.2.0/24' });
    expect(await ipam.releasePool(f.ctx, { PoolID: POOL })).toEqual({});
    expect(f.controller.calls.at(-1)).toEqual({ method: 'releasePool', req: { poolId: POOL } });
    expect(f.controller.pools.has(POOL)).toBe(false);
    await expect(ipam.releasePool(f.ctx, { PoolID: POOL })).rejects.toThrow(new NotFoundError(`pool ${POOL} not found`));
    const n = f.controller.calls.length;
    await expect(ipam.releasePool(f.ctx, {})).rejects.toBeInstanceOf(ZodError);
    expect(f.controller.calls).toHaveLength(n);
  });
});

describe('RequestAddress / ReleaseAddress', () => {
  beforeEach(async () => {
    await ipam.requestPool(f.ctx, { Pool: '192.0.2.0/24' });
    f.controller.calls.length = 0;
  });

  it('answers the allocated address as a CIDR and stores its seq durably', async () => {
    const r = await ipam.requestAddress(f.ctx, { PoolID: POOL });
    expect(r).toEqual({ Address: '192.0.2.2/24', Data: {} });
    const req = f.controller.calls[0]!.req;
    expect(req).toEqual({ poolId: POOL, address: '', options: {}, requestId: expect.stringMatching(UUID), kind: undefined });
    const seq = f.controller.alloc(POOL, '192.0.2.2')!.seq;
    expect(f.ctx.store.allocSeq(POOL, '192.0.2.2')).toBe(seq);
    expect(f.reread().allocSeq(POOL, '192.0.2.2')).toBe(seq);
  });

  it('tells an aux-address reservation (network not here yet) from an endpoint address (network here)', async () => {
    await ipam.requestAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.9' });
    expect(f.controller.alloc(POOL, '192.0.2.9')!.kind).toBe('aux');
    f.ctx.store.putNetwork({ id: NET, type: 'macvlan', parent: 'eth1', createdParent: false, macvlanMode: 'bridge', ipvlanMode: 'l2', ipvlanFlag: 'bridge', internal: false, ipv4: [{ pool: '192.0.2.0/24' }], ipv6: [], poolIds: [POOL] });
    await ipam.requestAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.10' });
    expect(f.controller.alloc(POOL, '192.0.2.10')!.kind).toBe('endpoint');
    // A typed request (the gateway) carries no kind.
    await ipam.requestAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.1', Options: { RequestAddressType: 'com.docker.network.gateway' } });
    expect(f.controller.alloc(POOL, '192.0.2.1')!.kind).toBeUndefined();
    expect((f.controller.calls.at(-1)!.req as { options: unknown }).options).toEqual({ RequestAddressType: 'com.docker.network.gateway' });
  });

  it("passes the controller's refusal on and stores nothing", async () => {
    await ipam.requestAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.9' });
    await expect(ipam.requestAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.9' })).rejects.toThrow('address 192.0.2.9 is in use');
    expect([...f.ctx.store.allocs.keys()]).toEqual([`${POOL}|192.0.2.9`]);
  });

  it('releases with the seq of the allocation it holds, and forgets it', async () => {
    await ipam.requestAddress(f.ctx, { PoolID: POOL });
    const seq = f.ctx.store.allocSeq(POOL, '192.0.2.2');
    expect(await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' })).toEqual({});
    expect(f.controller.calls.at(-1)).toEqual({ method: 'releaseAddress', req: { poolId: POOL, address: '192.0.2.2', allocSeq: seq } });
    expect(f.controller.alloc(POOL, '192.0.2.2')).toBeUndefined();
    expect(f.ctx.store.allocSeq(POOL, '192.0.2.2')).toBeUndefined();
    expect(f.reread().allocSeq(POOL, '192.0.2.2')).toBeUndefined();
  });

  it('releases an address it has no seq for without one, and keeps its seq when the controller fails', async () => {
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.77' });
    expect(f.controller.calls.at(-1)!.req).toEqual({ poolId: POOL, address: '192.0.2.77', allocSeq: undefined });
    await ipam.requestAddress(f.ctx, { PoolID: POOL });
    f.controller.failNext('releaseAddress', new Error('the underlay controller did not answer releaseAddress'));
    await expect(ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' })).rejects.toThrow('did not answer');
    expect(f.ctx.store.allocSeq(POOL, '192.0.2.2')).toBe(f.controller.alloc(POOL, '192.0.2.2')!.seq);
  });
});

describe('addresses held for a restart (address-holds.ts)', () => {
  const logs: string[] = [];
  let now = 1_000_000;
  beforeEach(async () => {
    jest.useFakeTimers();
    logs.length = 0;
    f.ctx.holds = new AddressHolds({ holdMs: 60_000, release: (h) => ipam.releaseHeld(f.ctx, h), log: (m) => logs.push(m), now: () => now });
    await ipam.requestPool(f.ctx, { Pool: '192.0.2.0/24' });
    f.ctx.store.putNetwork({ id: NET, type: 'macvlan', parent: 'eth1', createdParent: false, macvlanMode: 'bridge', ipvlanMode: 'l2', ipvlanFlag: 'bridge', internal: false, ipv4: [{ pool: '192.0.2.0/24' }], ipv6: [], poolIds: [POOL] });
    f.controller.calls.length = 0;
  });
  afterEach(() => jest.useRealTimers());

  it('hands an endpoint address released here back to the next endpoint request here, without asking the controller', async () => {
    const a = await ipam.requestAddress(f.ctx, { PoolID: POOL });
    const b = await ipam.requestAddress(f.ctx, { PoolID: POOL });
    const seq = f.ctx.store.allocSeq(POOL, '192.0.2.2');
    f.controller.calls.length = 0;
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' });
    // Still this host's, in the cluster and in the store.
    expect(f.controller.calls).toEqual([]);
    expect(f.controller.alloc(POOL, '192.0.2.2')!.seq).toBe(seq);
    expect(f.reread().allocSeq(POOL, '192.0.2.2')).toBe(seq);
    now += 8_000;
    expect(await ipam.requestAddress(f.ctx, { PoolID: POOL })).toEqual({ Address: a.Address, Data: {} });
    expect(f.controller.calls).toEqual([]);
    expect(logs).toEqual(['address 192.0.2.2 given back to a container on this host, 8 s after its endpoint went (restart)']);
    // Taken: the next request is a new allocation.
    expect((await ipam.requestAddress(f.ctx, { PoolID: POOL })).Address).not.toBe(b.Address);
    expect(f.controller.calls.map((c) => c.method)).toEqual(['requestAddress']);
  });

  it('hands the address released last back first (a restart releases and asks at once)', async () => {
    for (let i = 0; i < 3; i++) await ipam.requestAddress(f.ctx, { PoolID: POOL });
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.3' });
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' });
    expect((await ipam.requestAddress(f.ctx, { PoolID: POOL })).Address).toBe('192.0.2.2/24');
    expect((await ipam.requestAddress(f.ctx, { PoolID: POOL })).Address).toBe('192.0.2.3/24');
  });

  it('gives a held address back to the cluster after the hold', async () => {
    await ipam.requestAddress(f.ctx, { PoolID: POOL });
    const seq = f.ctx.store.allocSeq(POOL, '192.0.2.2');
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' });
    await jest.advanceTimersByTimeAsync(59_000);
    expect(f.controller.alloc(POOL, '192.0.2.2')).toBeDefined();
    await jest.advanceTimersByTimeAsync(1_000);
    expect(f.controller.calls.at(-1)).toEqual({ method: 'releaseAddress', req: { poolId: POOL, address: '192.0.2.2', allocSeq: seq } });
    expect(f.controller.alloc(POOL, '192.0.2.2')).toBeUndefined();
    expect(f.reread().allocSeq(POOL, '192.0.2.2')).toBeUndefined();
    expect(f.ctx.holds!.list()).toEqual([]);
  });

  it('does not hold a named address request, the gateway, or addresses of a pool no network here uses', async () => {
    await ipam.requestAddress(f.ctx, { PoolID: POOL });
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' });
    // A request naming an address (--ip) is the controller's, even with a hold.
    await ipam.requestAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.40' });
    expect(f.controller.calls.at(-1)!.method).toBe('requestAddress');
    expect(f.ctx.holds!.list().map((h) => h.address)).toEqual(['192.0.2.2']);
    // The network goes: its gateway is released at once.
    await ipam.requestAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.1', Options: { RequestAddressType: 'com.docker.network.gateway' } });
    f.ctx.store.deleteNetwork(NET);
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.1' });
    expect(f.controller.calls.at(-1)).toMatchObject({ method: 'releaseAddress', req: { address: '192.0.2.1' } });
  });

  it('releases a pool’s held addresses before the pool, and every held address at stop', async () => {
    await ipam.requestAddress(f.ctx, { PoolID: POOL });
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' });
    f.ctx.store.deleteNetwork(NET);
    f.controller.calls.length = 0;
    await ipam.releasePool(f.ctx, { PoolID: POOL });
    expect(f.controller.calls.map((c) => `${c.method} ${(c.req as { address?: string }).address ?? ''}`.trim())).toEqual(['releaseAddress 192.0.2.2', 'releasePool']);
    await ipam.requestPool(f.ctx, { Pool: '192.0.2.0/24' });
    f.ctx.store.putNetwork({ id: NET, type: 'macvlan', parent: 'eth1', createdParent: false, macvlanMode: 'bridge', ipvlanMode: 'l2', ipvlanFlag: 'bridge', internal: false, ipv4: [{ pool: '192.0.2.0/24' }], ipv6: [], poolIds: [POOL] });
    await ipam.requestAddress(f.ctx, { PoolID: POOL });
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' });
    await f.ctx.holds!.releaseAll();
    expect(f.controller.alloc(POOL, '192.0.2.2')).toBeUndefined();
  });

  it('releases a named address (--ip) at once, and hands a held address to an endpoint naming it', async () => {
    await ipam.requestAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.40' });
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.40' });
    expect(f.controller.alloc(POOL, '192.0.2.40')).toBeUndefined();
    expect(f.ctx.holds!.list()).toEqual([]);
    // A dynamic address, held; a container then names it (--ip): it gets it without asking the controller.
    await ipam.requestAddress(f.ctx, { PoolID: POOL });
    const seq = f.ctx.store.allocSeq(POOL, '192.0.2.2');
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' });
    f.controller.calls.length = 0;
    expect(await ipam.requestAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' })).toEqual({ Address: '192.0.2.2/24', Data: {} });
    expect(f.controller.calls).toEqual([]);
    expect(f.ctx.holds!.list()).toEqual([]);
    expect(f.ctx.store.allocSeq(POOL, '192.0.2.2')).toBe(seq);
    // Named now: released at once when it goes.
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' });
    expect(f.controller.alloc(POOL, '192.0.2.2')).toBeUndefined();
  });

  it('releases at once with a hold of 0', async () => {
    f.ctx.holds = new AddressHolds({ holdMs: 0, release: (h) => ipam.releaseHeld(f.ctx, h), log: () => {} });
    await ipam.requestAddress(f.ctx, { PoolID: POOL });
    await ipam.releaseAddress(f.ctx, { PoolID: POOL, Address: '192.0.2.2' });
    expect(f.controller.alloc(POOL, '192.0.2.2')).toBeUndefined();
  });
});

describe('capabilities', () => {
  it('asks for no MAC address and no replay; names both address spaces', () => {
    expect(ipam.capabilities()).toEqual({ RequiresMACAddress: false, RequiresRequestReplay: false });
    expect(ipam.defaultAddressSpaces()).toEqual({ LocalDefaultAddressSpace: 'underlay', GlobalDefaultAddressSpace: 'underlay-global' });
  });
});

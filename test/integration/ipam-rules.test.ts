/**
 * Issue 3 on real etcd and NATS: exactness under concurrency, and Docker's address rules
 * (dual stack, static addresses, --ip-range, --aux-address, overlaps and address spaces, exhaustion).
 */
import { EtcdEventLog } from '@underlay/adapters';
import { EmptyRes, blockOf, contains, parseAddr, parseCidr } from '@underlay/core';
import { FakeDockerHost, startEnv, windowed, type Env } from './support';

jest.setTimeout(240_000);
let env: Env;
beforeAll(async () => {
  env = await startEnv();
  await env.controller();
});
afterAll(() => env?.close());

const hosts = async (n: number) => Promise.all(Array.from({ length: n }, async (_, i) => new FakeDockerHost(await env.client(), `h${i + 1}`)));

it('8 requesters × 2,000 allocations, 2,000 in flight at once: no duplicate, none lost, all inside pool and range', async () => {
  // Data only: 198.18.0.0/17 (RFC 2544 benchmarking range) is never configured on any link.
  const hs = await hosts(8);
  const pools = await Promise.all(hs.map((h) => h.pool('198.18.0.0/17', { subPool: '198.18.64.0/18' })));
  const poolId = pools[0]!.poolId;
  const perHost = await Promise.all(hs.map((h, hi) => windowed(2000, 250, (i) => h.address(poolId, hi * 10_000 + i))));
  const results = perHost.flat();
  const addrs = results.map((r) => r.address.split('/')[0]!);
  expect(new Set(addrs).size).toBe(16_000);
  const range = parseCidr('198.18.64.0/18');
  expect(addrs.filter((a) => !contains(range, parseAddr(a)))).toEqual([]);
  // None lost: every acknowledged allocation is in the durable log, with the seq that was returned.
  const log = new EtcdEventLog({ endpoints: [env.etcd.url] });
  try {
    const events = await log.readAll();
    const bySeq = new Map(events.map((e) => [e.seq, e]));
    for (const r of results) {
      const e = bySeq.get(r.allocSeq)!;
      expect(e.type).toBe('AddressAllocated');
      expect((e as { data: { address: string } }).data.address).toBe(r.address.split('/')[0]);
    }
  } finally {
    log.close();
  }
  // Each host filled blocks of its own (/26 by default), borrowing none.
  const p = env.controllers[0]!.writer.state.pools.get(poolId)!;
  const borrowed = [...p.allocs].filter(([v, a]) => p.blocks.get(blockOf(p, v))?.node !== a.node);
  expect(borrowed).toEqual([]);
});

it('serves dual-stack networks: an IPv4 and an IPv6 pool, each with its gateway', async () => {
  const [h] = await hosts(1);
  const v4 = await h!.pool('203.0.113.0/24');
  const v6 = await h!.pool('2001:db8:77::/64', { v6: true });
  expect((await h!.gateway(v4.poolId)).address).toBe('203.0.113.1/24');
  expect((await h!.gateway(v6.poolId)).address).toBe('2001:db8:77::1/64');
  expect((await h!.address(v4.poolId, 1)).address).toMatch(/^203\.0\.113\.\d+\/24$/);
  expect((await h!.address(v6.poolId, 1)).address).toMatch(/^2001:db8:77::[0-9a-f]+\/64$/);
});

it('records static addresses and refuses one another endpoint holds', async () => {
  const [a, b] = await hosts(2);
  const p = await a!.pool('192.0.2.0/24');
  await b!.pool('192.0.2.0/24');
  expect((await a!.address(p.poolId, 1, '192.0.2.50')).address).toBe('192.0.2.50/24');
  await expect(b!.address(p.poolId, 2, '192.0.2.50')).rejects.toThrow('address 192.0.2.50 is already in use by an endpoint on node h1');
  await expect(b!.address(p.poolId, 3, '192.0.3.1')).rejects.toThrow('address 192.0.3.1 is not in subnet 192.0.2.0/24');
});

it('keeps --aux-address reservations out of allocation and allocates only inside --ip-range', async () => {
  const [h] = await hosts(1);
  const p = await h!.pool('198.51.100.0/24', { subPool: '198.51.100.8/29' });
  await h!.gateway(p.poolId, '198.51.100.1');
  for (const aux of ['198.51.100.9', '198.51.100.10']) await h!.aux(p.poolId, aux);
  const got = [];
  for (let i = 0; i < 6; i++) got.push((await h!.address(p.poolId, 100 + i)).address);
  expect(got.sort()).toEqual(['8', '11', '12', '13', '14', '15'].map((x) => `198.51.100.${x}/24`).sort());
  // Exhaustion is a clear error, not a hang.
  const t0 = Date.now();
  await expect(h!.address(p.poolId, 200)).rejects.toThrow('no free address in 198.51.100.8/29');
  expect(Date.now() - t0).toBeLessThan(5_000);
});

it('refuses an overlapping pool unless it is in another address space, naming the network that holds it', async () => {
  const [h1, h2] = await hosts(2);
  const held = await h1!.pool('203.0.113.0/24');
  await expect(h2!.pool('203.0.113.128/25')).rejects.toThrow(
    'subnet 203.0.113.128/25 overlaps with 203.0.113.0/24 of a network being created, already in use in address space "underlay"',
  );
  // Once the agents have recorded and named their Docker networks, the refusal names them and their hosts.
  for (const [h, id] of [[h1!, 'a'.repeat(64)], [h2!, 'b'.repeat(64)]] as const) {
    await h.pool('203.0.113.0/24');
    await h.rpc.call('networkRecord', { node: h.node, networkId: id, poolIds: [held.poolId], options: { parent: 'eth1' } }, EmptyRes);
    await h.rpc.call('networkName', { node: h.node, networkId: id, name: 'vlan20' }, EmptyRes);
  }
  await expect(h2!.pool('203.0.113.128/25')).rejects.toThrow('overlaps with 203.0.113.0/24 of network "vlan20" (on h1, h2)');
  const other = await h1!.pool('203.0.113.0/24', { options: { space: 'vlan30' } });
  expect(other.poolId).toBe('vlan30/203.0.113.0/24');
  const a1 = await h1!.address(other.poolId, 900);
  expect(a1.address).toMatch(/^203\.0\.113\.\d+\/24$/);
});

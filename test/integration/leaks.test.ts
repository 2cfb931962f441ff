/**
 * The leak collector on real etcd, NATS and a real controller: planted leaks (an address never bound
 * to an endpoint, an endpoint its node no longer reports, a node unseen for too long) are reclaimed,
 * and addresses held by live endpoints (bound and reported, including ones allocated during the run)
 * never are. Empty blocks go back to the pool after their grace period.
 */
import { BindEndpointRes, EmptyRes } from '@underlay/core';
import { EtcdEventLog } from '@underlay/adapters';
import { waitFor } from '../lab/wait';
import { FakeDockerHost, startEnv, type Env } from './support';

jest.setTimeout(120_000);
let env: Env;
beforeAll(async () => {
  env = await startEnv();
});
afterAll(() => env?.close());

it('reclaims planted leaks and never a live allocation', async () => {
  const c = await env.controller({ collectIntervalMs: 150, unboundGraceMs: 1_500, reportSlackMs: 300, nodeExpiredMs: 4_000, blockGraceMs: 1_000 });
  const live = new FakeDockerHost(await env.client(), 'live');
  const dying = new FakeDockerHost(await env.client(), 'dying');
  const poolId = (await live.pool('192.0.2.0/24', { options: { block_size: '28' } })).poolId;
  await dying.pool('192.0.2.0/24', { options: { block_size: '28' } });
  const endpoints: Record<string, Set<string>> = { live: new Set(), dying: new Set() };
  const bind = (h: FakeDockerHost, r: { address: string; allocSeq: number }, ep: string) => {
    endpoints[h.node]!.add(ep);
    return h.rpc.call('bindEndpoint', { node: h.node, poolId, address: r.address.split('/')[0]!, allocSeq: r.allocSeq, endpointId: ep, networkId: 'net' }, BindEndpointRes);
  };
  const report = (h: FakeDockerHost) => h.rpc.call('nodeReport', { node: h.node, endpoints: [...endpoints[h.node]!] }, EmptyRes);

  // Live endpoints, and the planted leaks.
  const kept = [await live.address(poolId, 1), await live.address(poolId, 2)];
  await bind(live, kept[0]!, 'ep-1');
  await bind(live, kept[1]!, 'ep-2');
  const neverBound = await live.address(poolId, 3); // Docker asked, then never created the endpoint
  const gone = await live.address(poolId, 4);
  await bind(live, gone, 'ep-gone');
  endpoints.live!.delete('ep-gone'); // the container went away without a release
  const onDeadNode = await dying.address(poolId, 5);
  await bind(dying, onDeadNode, 'ep-dying');
  await report(dying); // then the node stops reporting

  // The live node keeps reporting and keeps starting containers (allocate, then bind a moment later).
  let stop = false;
  const churn: { address: string; allocSeq: number }[] = [];
  const liveLoop = (async () => {
    for (let i = 100; !stop && i < 200; i++) {
      const r = await live.address(poolId, i);
      await new Promise((res) => setTimeout(res, 100));
      await bind(live, r, `ep-${i}`);
      churn.push(r);
      await report(live);
      await new Promise((res) => setTimeout(res, 100));
    }
  })();

  const reclaimed = () => c.collector?.reclaimed.map((x) => x.address) ?? [];
  const planted = [neverBound, gone, onDeadNode].map((r) => r.address.split('/')[0]!);
  await waitFor(() => planted.every((a) => reclaimed().includes(a)), { timeoutMs: 30_000, intervalMs: 100, what: 'the planted leaks to be reclaimed' });
  // Let the collector run a few more passes over the live endpoints.
  const passes = c.collector!.passes;
  await waitFor(() => c.collector!.passes >= passes + 10, { timeoutMs: 10_000, what: 'ten more collector passes' });
  stop = true;
  await liveLoop;

  expect([...reclaimed()].sort()).toEqual([...planted].sort());
  const rules = Object.fromEntries(c.collector!.reclaimed.map((x) => [x.address, x.rule]));
  expect(rules[planted[0]!]).toBe('unbound');
  expect(rules[planted[1]!]).toBe('endpoint-gone');
  expect(rules[planted[2]!]).toBe('node-expired');
  const pool = c.writer.state.pools.get(poolId)!;
  const held = [...pool.allocs.values()].filter((a) => a.kind === 'endpoint').map((a) => a.endpointId).sort();
  expect(held).toEqual(['ep-1', 'ep-2', ...churn.map((_, i) => `ep-${100 + i}`)].sort());
  expect(churn.length).toBeGreaterThan(5);

  // The dead node's block, now empty, went back to the pool after the grace period.
  await waitFor(() => ![...c.writer.state.pools.get(poolId)!.blocks.values()].some((b) => b.node === 'dying'), { timeoutMs: 10_000, what: 'the dead node\'s empty block to be released' });
  const log = new EtcdEventLog({ endpoints: [env.etcd.url] });
  try {
    const events = await log.readAll();
    const releases = events.filter((e) => e.type === 'AddressReleased' && (e.data as { reason?: string }).reason?.startsWith('leak'));
    expect(releases).toHaveLength(3);
    expect(events.some((e) => e.type === 'BlockReleased' && e.data.node === 'dying')).toBe(true);
  } finally {
    log.close();
  }
});

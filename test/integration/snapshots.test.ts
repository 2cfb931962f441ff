/**
 * Cold start from 100,000 events: the controller writes snapshots as the log grows; a new controller
 * restores the latest snapshot and folds only the events after it, reaching exactly the state of the
 * whole log folded from the start.
 */
import { EtcdEventLog, EtcdSnapshots } from '@underlay/adapters';
import { describe as describeState, fold, MAC_OPTION } from '@underlay/core';
import { startEnv, windowed, mac, type Env } from './support';

jest.setTimeout(300_000);
let env: Env;
beforeAll(async () => {
  env = await startEnv();
});
afterAll(() => env?.close());

it('cold-starts from 100,000 events with snapshots to the same state', async () => {
  const c1 = await env.controller({ snapshotEvery: 10_000 });
  const ctx = { actor: 'node:h1' };
  const pools: string[] = [];
  for (const [i, node] of ['h1', 'h2', 'h3', 'h4'].entries()) {
    pools.push((await c1.ipam.requestPool({ node, space: 'underlay', pool: `2001:db8:${i + 1}::/64`, subPool: '', options: {}, v6: true }, { actor: `node:${node}` })).poolId);
  }
  let n = 0;
  const t0 = Date.now();
  while (c1.ipam.state.seq < 100_000) {
    const base = n;
    const batch = await windowed(5_000, 256, async (i) => {
      const k = base + i;
      const node = `h${(k % 4) + 1}`;
      const poolId = pools[k % 4]!;
      const r = await c1.ipam.requestAddress({ node, poolId, address: '', options: { [MAC_OPTION]: mac(k) } }, { actor: `node:${node}` });
      if (k % 3 === 0) await c1.ipam.bindEndpoint({ node, poolId, address: r.address.split('/')[0]!, allocSeq: r.allocSeq, endpointId: `ep${k}`, networkId: 'net' }, ctx);
      if (k % 10 === 0) await c1.ipam.releaseAddress({ node, poolId, address: r.address.split('/')[0]!, allocSeq: r.allocSeq }, ctx);
      return r;
    });
    n += batch.length;
  }
  await c1.ipam.settled();
  const seq = c1.ipam.state.seq;
  console.log(`${seq} events committed in ${Date.now() - t0} ms (${c1.ipam.transactions} transactions)`);
  expect(seq).toBeGreaterThanOrEqual(100_000);
  const before = JSON.stringify(describeState(c1.ipam.state));
  await c1.stop();

  const log = new EtcdEventLog({ endpoints: [env.etcd.url] });
  const snaps = new EtcdSnapshots(log.client);
  try {
    // The snapshot is recent: a cold start folds at most snapshotEvery events after it.
    const latest = await snaps.latest();
    expect(latest).toBeDefined();
    expect(seq - latest!.seq).toBeLessThan(2 * 10_000);

    const tFull = Date.now();
    const full = fold(await log.readAll());
    const fullMs = Date.now() - tFull;
    expect(JSON.stringify(describeState(full))).toBe(before);

    const tCold = Date.now();
    const c2 = await env.controller();
    const coldMs = Date.now() - tCold;
    expect(c2.ipam.state.seq).toBe(seq);
    expect(JSON.stringify(describeState(c2.ipam.state))).toBe(before);
    console.log(`cold start to leader with snapshot at ${latest!.seq}: ${coldMs} ms; folding the whole log: ${fullMs} ms`);
  } finally {
    log.close();
  }
});

/**
 * An agent's view starts from the controller's latest snapshot (read in pieces that fit NATS max_payload, checked
 * against its SHA-256) when the log behind it was trimmed, then follows the stream through its own consumer: it ends
 * with the controller's state, although it could not have folded the log from seq 1. Real etcd, NATS (with a 64 KiB
 * max_payload, so one 512 KiB snapshot part needs many pieces; the first test's snapshot is over 512 KiB, so its two
 * parts are read at once) and controller. With interest-based delivery the view reads the snapshot's head and the
 * allocations of the pools it follows only (the snapshot's index), and a pool followed later takes its section then.
 */
import { connectNats, EtcdEventLog, EtcdSnapshots } from '@underlay/adapters';
import { describe as describeState, EVENTS_STREAM, MAC_OPTION, RequestAddressRes, nodeInboxPrefix, poolChain, snapshot } from '@underlay/core';
import { RpcClient } from '@underlay/adapters';
import { jetstreamManager } from '@nats-io/jetstream';
import { ClusterView } from '../../services/node-agent/src/cluster-view';
import { waitFor as labWaitFor } from '../lab/wait';
import { startEnv, windowed, mac, type Env } from './support';

jest.setTimeout(120_000);
let env: Env;
beforeAll(async () => {
  env = await startEnv({ natsConfig: 'max_payload: 65536\n' });
});
afterAll(async () => {
  await env?.close();
});

it('starts from the latest snapshot when the log was trimmed, and converges with the controller', async () => {
  const c = await env.controller({ snapshotEvery: 2_000, eventRetention: 50 });
  const pool = (await c.ipam.requestPool({ node: 'h1', space: 'underlay', pool: '10.89.0.0/16', subPool: '', options: {}, v6: false }, { actor: 'node:h1' })).poolId;
  await windowed(8_500, 64, (i) => c.ipam.requestAddress({ node: 'h1', poolId: pool, address: '', options: { [MAC_OPTION]: mac(i) } }, { actor: 'node:h1' }));
  await c.writer.settled();
  await c.snapshotter.flush();
  const log = new EtcdEventLog({ endpoints: [env.etcd.url] });
  const first = await log.firstSeq().finally(() => log.close());
  expect(first).toBeGreaterThan(1); // the log was trimmed: folding from seq 1 is impossible

  const nc = await connectNats(env.nats.url, 'view-h2', { inboxPrefix: nodeInboxPrefix('h2') });
  env.conns.push(nc);
  const logs: string[] = [];
  const rpc = new RpcClient(nc, 'h2');
  const reads: unknown[] = [];
  const call = rpc.call.bind(rpc);
  rpc.call = ((method, req, schema, o) => {
    if (method === 'snapshotRead') reads.push(req);
    return call(method, req, schema, o);
  }) as RpcClient['call'];
  const view = new ClusterView({ nc, rpc, logger: (m) => logs.push(m) });
  await view.start();
  try {
    await view.ready();
    expect(view.snapshotSeq).toBeGreaterThanOrEqual(first - 1);
    expect(logs.some((m) => /started from snapshot \d+/.test(m))).toBe(true);
    expect(reads.length).toBeGreaterThan(8); // the snapshot (over 512 KiB) came in pieces of at most 64 KiB
    expect(reads.some((r) => (r as { part: number }).part >= 1)).toBe(true); // in more than one part (read a few at once)
    // Live events after the start reach it too.
    const r = await rpc.call('requestAddress', { node: 'h2', poolId: pool, address: '', options: { [MAC_OPTION]: mac(10_000) } }, RequestAddressRes);
    const deadline = Date.now() + 10_000;
    while (view.seq < r.allocSeq && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    expect(view.seq).toBe(c.writer.committedSeq);
    expect(snapshot(view.state)).toEqual(snapshot(c.writer.state));
    expect(describeState(view.state)).toEqual(describeState(c.writer.state));
  } finally {
    await view.stop();
  }
});

it("interest-based: the view reads the snapshot's head and its own pools' allocations only; a pool followed later takes its section", async () => {
  const c = env.controllers[0]!;
  const big = [...c.writer.state.pools.keys()][0]!;
  // h5's pool, in the next snapshot beside the big pool of h1 (8,500 allocations).
  const mine = (await c.ipam.requestPool({ node: 'h5', space: 'underlay', pool: '10.90.0.0/20', subPool: '', options: {}, v6: false }, { actor: 'node:h5' })).poolId;
  const before = (await new EtcdSnapshots(c.log).latestManifest())!.seq;
  await windowed(2_100, 64, (i) => c.ipam.requestAddress({ node: 'h5', poolId: mine, address: '', options: { [MAC_OPTION]: mac(50_000 + i) } }, { actor: 'node:h5' }));
  await c.writer.settled();
  await c.snapshotter.flush();
  const man = (await new EtcdSnapshots(c.log).latestManifest())!;
  expect(man.seq).toBeGreaterThan(before); // a snapshot holding both pools
  const nc = await connectNats(env.nats.url, 'view-h5', { inboxPrefix: nodeInboxPrefix('h5') });
  env.conns.push(nc);
  const logs: string[] = [];
  // No network of h5 names a pool yet: it reads the allocations of the pool the controller says it holds.
  const pools: string[] = [];
  const view = new ClusterView({ nc, rpc: new RpcClient(nc, 'h5'), logger: (m) => logs.push(m), pools: () => pools });
  await view.start();
  try {
    await view.ready();
    expect(view.snapshotSeq).toBe(man.seq);
    expect(logs).toContain(`cluster view: started from snapshot ${man.seq} (allocations of 1 of its 2 pools read)`);
    // The big pool's allocations are most of the snapshot's text: the view read less than half of it.
    expect(view.snapshotCharsRead).toBeLessThan(man.bytes / 2);
    expect(view.snapshotCharsRead).toBeGreaterThan(0);
    expect(view.state.pools.get(big)!.allocs.size).toBe(0);
    const poolOf = (s: typeof c.writer.state, id: string) => (describeState(s) as { pools: { poolId: string }[] }).pools.find((p) => p.poolId === id);
    expect(poolOf(view.state, mine)).toEqual(poolOf(c.writer.state, mine));
    expect(view.state.pools.get(mine)).toEqual(c.writer.state.pools.get(mine));
    // h5 makes a network on the big pool: its part of the state comes from the latest snapshot, then its chain.
    pools.push(big);
    view.refreshInterest();
    const r = await c.ipam.requestAddress({ node: 'h1', poolId: big, address: '', options: { [MAC_OPTION]: mac(60_000) } }, { actor: 'node:h1' });
    await c.writer.settled();
    await labWaitFor(() => view.state.pools.get(big)?.allocs.size === c.writer.state.pools.get(big)!.allocs.size && view.state.chains.get(poolChain(big)) === r.allocSeq, {
      timeoutMs: 30_000,
      what: "h5's view to hold the big pool as the controller does",
    });
    expect(view.state.pools.get(big)).toEqual(c.writer.state.pools.get(big));
    expect(logs.some((m) => m.startsWith(`cluster view: took chain ${poolChain(big)} from snapshot ${man.seq} (its allocations were not read at start)`))).toBe(true);
    expect(view.resyncs).toBe(0);
    expect(view.snapshotCharsRead).toBeGreaterThan(man.bytes / 2);
  } finally {
    await view.stop();
  }
});

it('a running view that fell behind the trimmed log starts again from the latest snapshot and tells its listeners', async () => {
  const c = env.controllers[0]!;
  const pool = [...c.writer.state.pools.keys()][0]!;
  const nc = await connectNats(env.nats.url, 'view-h3', { inboxPrefix: nodeInboxPrefix('h3') });
  env.conns.push(nc);
  const logs: string[] = [];
  const view = new ClusterView({ nc, rpc: new RpcClient(nc, 'h3'), logger: (m) => logs.push(m) });
  // A gate in front of the view's fold: while it is shut the view takes nothing (as if the host were cut off).
  let open = true;
  let opened: () => void = () => {};
  const take = (view as unknown as { take(ev: unknown): void }).take.bind(view);
  (view as unknown as { take(ev: unknown): Promise<void> }).take = async (ev) => {
    if (!open) await new Promise<void>((r) => (opened = r));
    take(ev);
  };
  const resyncs: number[] = [];
  view.onChange((evs, state, info) => {
    if (info?.resync) resyncs.push(state.seq);
  });
  await view.start();
  try {
    await view.ready();
    const before = view.seq;
    open = false;
    let k = 20_000;
    const alloc = () => c.ipam.requestAddress({ node: 'h1', poolId: pool, address: '', options: { [MAC_OPTION]: mac(k++) } }, { actor: 'node:h1' });
    await alloc(); // the view holds this one at the gate
    // Meanwhile the log moves on and is trimmed behind new snapshots, and an operator purges the stream.
    await windowed(4_500, 64, () => alloc());
    await c.writer.settled();
    await c.snapshotter.flush();
    await c.flushEvents();
    const log = new EtcdEventLog({ endpoints: [env.etcd.url] });
    const first = await log.firstSeq().finally(() => log.close());
    expect(first).toBeGreaterThan(before + 2);
    const purger = await connectNats(env.nats.url, 'purger');
    env.conns.push(purger);
    const jsm = await jetstreamManager(purger);
    await jsm.streams.purge(EVENTS_STREAM);
    await alloc(); // a message after the hole
    await c.flushEvents();
    open = true;
    opened();
    await labWaitFor(() => view.seq === c.writer.committedSeq, { timeoutMs: 30_000, what: `the view to reach seq ${c.writer.committedSeq} after starting again from a snapshot` });
    expect(view.resyncs).toBe(1);
    expect(resyncs).toHaveLength(1);
    expect(resyncs[0]).toBeGreaterThanOrEqual(first - 1);
    expect(logs.some((m) => /fell behind the trimmed log at seq \d+; started again from snapshot \d+/.test(m))).toBe(true);
    expect(snapshot(view.state)).toEqual(snapshot(c.writer.state));
  } finally {
    open = true;
    opened();
    await view.stop();
  }
});

it('interest-based: a pool followed again long after the view left it, behind the trimmed log, is taken from the latest snapshot', async () => {
  const c = env.controllers[0]!;
  const pool = [...c.writer.state.pools.keys()][0]!;
  const nc = await connectNats(env.nats.url, 'view-h4', { inboxPrefix: nodeInboxPrefix('h4') });
  env.conns.push(nc);
  const logs: string[] = [];
  const pools: string[] = [pool];
  const view = new ClusterView({ nc, rpc: new RpcClient(nc, 'h4'), logger: (m) => logs.push(m), pools: () => pools });
  await view.start();
  try {
    await view.ready();
    const base = view.snapshotSeq;
    // h4's network on the pool goes: it holds nothing there, so the view stops following the pool.
    pools.length = 0;
    view.refreshInterest();
    await labWaitFor(() => !view.followed.includes(poolChain(pool)), { timeoutMs: 10_000, what: 'the view to stop following the pool' });
    let k = 40_000;
    // The pool moves on while h4 does not follow it: new snapshots, and the log trimmed past the view's snapshot.
    await windowed(4_500, 64, () => c.ipam.requestAddress({ node: 'h1', poolId: pool, address: '', options: { [MAC_OPTION]: mac(k++) } }, { actor: 'node:h1' }));
    await c.writer.settled();
    await c.snapshotter.flush();
    const log = new EtcdEventLog({ endpoints: [env.etcd.url] });
    const first = await log.firstSeq().finally(() => log.close());
    expect(first).toBeGreaterThan(base + 1);
    // A new leader (its last committed events in memory start empty: the chain's read goes to etcd).
    await c.stop();
    const c2 = await env.controller({ snapshotEvery: 2_000, eventRetention: 50 });
    // h4 makes a network on the pool again: its chain from where the view left it is gone from the log.
    pools.push(pool);
    view.refreshInterest();
    await c2.ipam.requestAddress({ node: 'h1', poolId: pool, address: '', options: { [MAC_OPTION]: mac(k++) } }, { actor: 'node:h1' });
    await c2.writer.settled();
    const poolOf = (s: typeof c2.writer.state) => (describeState(s) as { pools: { poolId: string }[] }).pools.find((p) => p.poolId === pool);
    await labWaitFor(() => JSON.stringify(poolOf(view.state)) === JSON.stringify(poolOf(c2.writer.state)), { timeoutMs: 30_000, what: "h4's view to hold the pool as the controller does" });
    expect(view.resyncs).toBe(1);
    expect(logs.some((m) => /chain p\.\S+ fell behind the trimmed log; took it from snapshot \d+/.test(m))).toBe(true);
    expect(view.snapshotSeq).toBe(base); // the chains it does not follow stay the first snapshot's
  } finally {
    await view.stop();
  }
});

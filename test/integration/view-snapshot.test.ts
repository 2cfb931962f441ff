/**
 * An agent's view starts from the controller's latest snapshot (read in pieces that fit NATS max_payload, checked
 * against its SHA-256) when the log behind it was trimmed, then follows the stream through its own consumer: it ends
 * with the controller's state, although it could not have folded the log from seq 1. Real etcd, NATS (with a 64 KiB
 * max_payload, so one 512 KiB snapshot part needs many pieces) and controller.
 */
import { connectNats, EtcdEventLog } from '@underlay/adapters';
import { describe as describeState, MAC_OPTION, RequestAddressRes, nodeInboxPrefix, snapshot } from '@underlay/core';
import { RpcClient } from '@underlay/adapters';
import { ClusterView } from '../../services/node-agent/src/cluster-view';
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
  await windowed(6_000, 64, (i) => c.ipam.requestAddress({ node: 'h1', poolId: pool, address: '', options: { [MAC_OPTION]: mac(i) } }, { actor: 'node:h1' }));
  await c.ipam.settled();
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
    // Live events after the start reach it too.
    const r = await rpc.call('requestAddress', { node: 'h2', poolId: pool, address: '', options: { [MAC_OPTION]: mac(10_000) } }, RequestAddressRes);
    const deadline = Date.now() + 10_000;
    while (view.seq < r.allocSeq && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    expect(view.seq).toBe(c.ipam.committedSeq);
    expect(snapshot(view.state)).toEqual(snapshot(c.ipam.state));
    expect(describeState(view.state)).toEqual(describeState(c.ipam.state));
  } finally {
    await view.stop();
  }
});

/**
 * The controller on real etcd and real NATS: concurrent agents get distinct addresses, the state
 * survives a restart (rebuilt from the log), events reach JetStream once each, and two writers on
 * the same log can never both commit.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { Controller } from '@underlay/controller';
import { EtcdEventLog, RpcClient, connectNats, CommitConflictError, type NatsConnection } from '@underlay/adapters';
import {
  EVENTS_STREAM,
  RequestAddressRes,
  RequestPoolRes,
  describe as describeState,
  parseAddr,
  parseCidr,
  contains,
  headers,
  type ClusterEvent,
} from '@underlay/core';
import { AnyNodeRpc } from '../lab/any-node-rpc';
import { startEtcd, startNats, type EtcdService, type NatsService } from '../lab/services';

jest.setTimeout(180_000);

// IPAM data only: this /22 is never configured on any link (RFC 2544 benchmarking range).
const SUBNET = '198.18.0.0/22';
const GW = { RequestAddressType: 'com.docker.network.gateway' };
const macOf = (i: number) => `02:aa:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;

let dir: string;
let etcd: EtcdService;
let nats: NatsService;
const conns: NatsConnection[] = [];
const controllers: Controller[] = [];

async function startController(name = 'c1'): Promise<Controller> {
  const c = new Controller({ etcd: [etcd.url], nats: nats.url, listen: '127.0.0.1:0', name });
  await c.start();
  await c.whenLeader();
  controllers.push(c);
  return c;
}

async function agentClient(): Promise<RpcClient> {
  const nc = await connectNats(nats.url, 'test-agent');
  conns.push(nc);
  return new AnyNodeRpc(nc);
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-int-'));
  [etcd, nats] = await Promise.all([startEtcd({ dir }), startNats({ dir })]);
});

afterAll(async () => {
  for (const c of controllers) await c.stop().catch(() => {});
  for (const nc of conns) await nc.close().catch(() => {});
  await Promise.all([etcd?.stop(), nats?.stop()]);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('controller IPAM on real etcd and NATS', () => {
  let poolId: string;
  let before: unknown;

  it('gives 1,000 concurrent requests from 4 agents 1,000 distinct addresses, never the gateway, network or broadcast', async () => {
    const controller = await startController();
    const agents = await Promise.all([0, 1, 2, 3].map(() => agentClient()));
    const nodes = ['h1', 'h2', 'h3', 'h4'];
    const pools = await Promise.all(
      agents.map((a, i) => a.call('requestPool', { node: nodes[i], space: 'underlay', pool: SUBNET, subPool: '', options: {}, v6: false }, RequestPoolRes)),
    );
    poolId = pools[0]!.poolId;
    expect(new Set(pools.map((p) => p.poolId)).size).toBe(1);
    const gws = await Promise.all(agents.map((a, i) => a.call('requestAddress', { node: nodes[i], poolId, address: '', options: GW }, RequestAddressRes)));
    expect(new Set(gws.map((g) => g.address))).toEqual(new Set(['198.18.0.1/22']));

    const results = await Promise.all(
      Array.from({ length: 1000 }, (_, i) =>
        agents[i % 4]!.call(
          'requestAddress',
          { node: nodes[i % 4], poolId, address: '', options: { 'com.docker.network.endpoint.macaddress': macOf(i) } },
          RequestAddressRes,
        ),
      ),
    );
    const addrs = results.map((r) => r.address.split('/')[0]!);
    expect(new Set(addrs).size).toBe(1000);
    const cidr = parseCidr(SUBNET);
    for (const a of addrs) {
      expect(contains(cidr, parseAddr(a))).toBe(true);
      expect(['198.18.0.0', '198.18.3.255', '198.18.0.1']).not.toContain(a);
    }
    // Group commit: far fewer transactions than events.
    expect(controller.writer.transactions).toBeLessThan(controller.writer.state.seq / 2);
    // Repeating a request with the same handle returns the same allocation, with no new event.
    const seqBefore = controller.writer.state.seq;
    const again = await agents[0]!.call('requestAddress', { node: 'h1', poolId, address: '', options: { 'com.docker.network.endpoint.macaddress': macOf(0) } }, RequestAddressRes);
    expect(again).toEqual(results[0]);
    expect(controller.writer.state.seq).toBe(seqBefore);
    before = describeState(controller.writer.state);
  });

  it('publishes every committed event on JetStream exactly once, in order, with its seq as message id', async () => {
    const c = controllers[0]!;
    await c.flushEvents();
    const jsm = await jetstreamManager(conns[0]!);
    const info = await jsm.streams.info(EVENTS_STREAM);
    expect(info.state.messages).toBe(c.writer.state.seq);
    const first = await jsm.streams.getMessage(EVENTS_STREAM, { seq: info.state.first_seq });
    const last = await jsm.streams.getMessage(EVENTS_STREAM, { seq: info.state.last_seq });
    expect(first!.header!.get(headers.eventSeq)).toBe('1');
    expect(last!.header!.get(headers.eventSeq)).toBe(String(c.writer.state.seq));
    expect((last!.json() as ClusterEvent).seq).toBe(c.writer.state.seq);
  });

  it('rebuilds the same state from the etcd log after a restart, and does not republish', async () => {
    await controllers[0]!.stop();
    controllers.shift();
    const c2 = await startController('c2');
    expect(describeState(c2.writer.state)).toEqual(before);
    await c2.flushEvents();
    const jsm = await jetstreamManager(conns[0]!);
    expect((await jsm.streams.info(EVENTS_STREAM)).state.messages).toBe(c2.writer.state.seq);
    // The restarted controller keeps serving, continuing the sequence.
    const a = await agentClient();
    const r = await a.call('requestAddress', { node: 'h1', poolId, address: '', options: { 'com.docker.network.endpoint.macaddress': macOf(5000) } }, RequestAddressRes);
    expect(r.allocSeq).toBe((before as { seq: number }).seq + 1);
  });

  it('lets only one of two writers append at the same head', async () => {
    const l1 = new EtcdEventLog({ endpoints: [etcd.url] });
    const l2 = new EtcdEventLog({ endpoints: [etcd.url] });
    try {
      const head = await l1.head();
      const ev = (seq: number, node: string): ClusterEvent => ({
        seq, id: `x-${node}`, time: new Date().toISOString(), actor: `node:${node}`,
        type: 'PoolRefAdded', data: { poolId, node },
      });
      const outcomes = await Promise.allSettled([l1.append([ev(head + 1, 'w1')], head), l2.append([ev(head + 1, 'w2')], head)]);
      expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
      const rejected = outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult;
      expect(rejected.reason).toBeInstanceOf(CommitConflictError);
      expect(await l1.head()).toBe(head + 1);
    } finally {
      l1.close();
      l2.close();
    }
  });

  it('stays exact when another writer moved the log under the leader (conflict, reload, retry)', async () => {
    // The write above moved the head behind the leader's back: its next commit conflicts, it reloads, the agent retries.
    const a = await agentClient();
    const p2 = await a.call('requestPool', { node: 'h2', space: 'underlay', pool: '198.18.8.0/24', subPool: '', options: {}, v6: false }, RequestPoolRes, { deadlineMs: 30_000 });
    const res = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        a.call('requestAddress', { node: 'h2', poolId: p2.poolId, address: '', options: { 'com.docker.network.endpoint.macaddress': macOf(6000 + i) } }, RequestAddressRes, { deadlineMs: 60_000 }),
      ),
    );
    expect(new Set(res.map((r) => r.address)).size).toBe(200);
    const log = new EtcdEventLog({ endpoints: [etcd.url] });
    try {
      const events = await log.readAll();
      expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
      const allocated = events.filter((e) => e.type === 'AddressAllocated').map((e) => (e as { data: { address: string } }).data.address);
      expect(new Set(allocated).size).toBe(allocated.length);
      for (const r of res) expect(allocated).toContain(r.address.split('/')[0]);
    } finally {
      log.close();
    }
  });
});

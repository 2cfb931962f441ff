/**
 * EventConsumer on real etcd, real NATS JetStream and a real controller: every committed event is
 * delivered once, in seq order, with no gaps, whether it comes from the stream or (after messages
 * went missing from the stream) is re-read from etcd through the controller.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Controller } from '@underlay/controller';
import { EtcdEventLog, RpcClient, connectNats, type NatsConnection } from '@underlay/adapters';
import { EVENTS_STREAM, EventsConsumerRes, RpcReply, nodeConsumerName, rpcSubject, RequestAddressRes, RequestPoolRes, headers, type ClusterEvent } from '@underlay/core';
import { EventConsumer, type EventConsumerOptions } from '@underlay/adapters';
import { AnyNodeRpc } from '../lab/any-node-rpc';
import { startEtcd, startNats, type EtcdService, type NatsService } from '../lab/services';
import { waitFor as labWaitFor } from '../lab/wait';

jest.setTimeout(120_000);

// IPAM data only: never configured on any link (RFC 2544 benchmarking range).
const SUBNET = '198.18.4.0/24';
const macOf = (i: number) => `02:bb:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let dir: string;
let etcd: EtcdService;
let nats: NatsService;
let controller: Controller;
let agentNc: NatsConnection;
let consumerNc: NatsConnection;
let agent: RpcClient;
let jsm: JetStreamManager;
let poolId: string;
let macs = 0;
const consumers: EventConsumer[] = [];

/** The lab's waitFor, polling every 20 ms. */
const waitFor = (cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<unknown> => labWaitFor(cond, { timeoutMs, what, intervalMs: 20 });

/** `n` address requests through the controller; resolves when their events are on JetStream. */
async function allocate(n: number, concurrent = true): Promise<RequestAddressRes[]> {
  const one = () => agent.call('requestAddress', { node: 'h1', poolId, address: '', options: { 'com.docker.network.endpoint.macaddress': macOf(macs++) } }, RequestAddressRes);
  const out: RequestAddressRes[] = [];
  if (concurrent) out.push(...(await Promise.all(Array.from({ length: n }, one))));
  else for (let i = 0; i < n; i++) out.push(await one());
  await controller.flushEvents();
  return out;
}

const head = () => controller.writer.state.seq;

interface Collected {
  consumer: EventConsumer;
  /** The JetStream consumer the controller made for this reader's node. */
  name: string;
  events: ClusterEvent[];
  seqs: () => number[];
  log: string[];
}

let readers = 0;
/** Each consumer reads for a node of its own (`reader-N`), through that node's consumer `agent-reader-N`. */
async function collect(opts: Partial<EventConsumerOptions> = {}): Promise<Collected> {
  const events: ClusterEvent[] = [];
  const log: string[] = [];
  const node = `reader-${++readers}`;
  const consumer = new EventConsumer({
    nc: consumerNc,
    rpc: new RpcClient(consumerNc, node),
    onEvent: (ev) => {
      events.push(ev);
    },
    logger: (m) => log.push(m),
    ...opts,
  });
  consumers.push(consumer);
  await consumer.start();
  return { consumer, name: nodeConsumerName(node), events, seqs: () => events.map((e) => e.seq), log };
}

async function stopConsumer(c: EventConsumer): Promise<void> {
  await c.stop();
  consumers.splice(consumers.indexOf(c), 1);
}

/** Event seq → stream seq for everything still in the stream. */
async function streamIndex(): Promise<Map<number, number>> {
  const { state } = await jsm.streams.info(EVENTS_STREAM);
  const out = new Map<number, number>();
  for (let s = state.first_seq; s <= state.last_seq; s++) {
    const m = await jsm.streams.getMessage(EVENTS_STREAM, { seq: s });
    if (m) out.set(Number(m.header.get(headers.eventSeq)), m.seq);
  }
  return out;
}

async function logEvents(fromSeq = 1): Promise<ClusterEvent[]> {
  const log = new EtcdEventLog({ endpoints: [etcd.url] });
  try {
    return await log.readAll(fromSeq);
  } finally {
    log.close();
  }
}

const consumerNames = async () => {
  const names: string[] = [];
  for await (const ci of jsm.consumers.list(EVENTS_STREAM)) names.push(ci.name);
  return names.sort();
};

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-evc-'));
  [etcd, nats] = await Promise.all([startEtcd({ dir }), startNats({ dir })]);
  controller = new Controller({ etcd: [etcd.url], nats: nats.url, listen: '127.0.0.1:0', name: 'evc' });
  await controller.start();
  agentNc = await connectNats(nats.url, 'test-agent');
  consumerNc = await connectNats(nats.url, 'test-consumer');
  agent = new AnyNodeRpc(agentNc);
  jsm = await jetstreamManager(consumerNc);
  const pool = await agent.call('requestPool', { node: 'h1', space: 'underlay', pool: SUBNET, subPool: '', options: {}, v6: false }, RequestPoolRes);
  poolId = pool.poolId;
  await allocate(40);
});

afterAll(async () => {
  for (const c of [...consumers]) await c.stop().catch(() => {});
  await controller?.stop().catch(() => {});
  for (const nc of [agentNc, consumerNc]) await nc?.close().catch(() => {});
  await Promise.all([etcd?.stop(), nats?.stop()]);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('EventConsumer on a real controller, etcd and JetStream', () => {
  it('delivers every event produced through the controller once, in order, from the stream alone', async () => {
    const n = head();
    expect(n).toBeGreaterThanOrEqual(41);
    const c = await collect();
    await waitFor(() => c.consumer.lastSeq >= n, 15_000, `consumer to reach seq ${n}`);
    await sleep(300); // nothing more may arrive
    expect(c.seqs()).toEqual(range(1, n));
    expect(c.consumer.gapReads).toBe(0);
    expect(c.events).toEqual(await logEvents());
    await stopConsumer(c.consumer);
    // It read through the consumer the controller made for its node, and made none itself.
    expect(await consumerNames()).toEqual([c.name]);
  });

  it('re-reads messages missing from the stream from etcd through the controller, still once and in order', async () => {
    const n = head();
    const index = await streamIndex();
    expect(index.size).toBe(n);
    const missing = [1, 10, 11, 12, n - 3];
    for (const seq of missing) expect(await jsm.streams.deleteMessage(EVENTS_STREAM, index.get(seq)!)).toBe(true);
    expect((await jsm.streams.info(EVENTS_STREAM)).state.messages).toBe(n - missing.length);

    const c = await collect({ pageSize: 2 }); // pages smaller than the 3-event gap
    await waitFor(() => c.consumer.lastSeq >= n, 15_000, `consumer to reach seq ${n}`);
    await sleep(300);
    expect(c.seqs()).toEqual(range(1, n));
    expect(c.consumer.gapReads).toBe(3); // {1}, {10..12}, {n-3}
    expect(c.events).toEqual(await logEvents());
    await stopConsumer(c.consumer);
  });

  it('starts after a given seq: delivers exactly afterSeq+1 .. head', async () => {
    const n = head();
    // Still missing from the stream (previous test): 1, 10..12, n-3. The start is found in the
    // stream exactly, so the only gap reads are for those (a start too late would add one).
    const cases = [
      { afterSeq: 25, gaps: 1 }, // n-3
      { afterSeq: 9, gaps: 2 }, // 10..12 right at the start, then n-3
      { afterSeq: 12, gaps: 1 }, // n-3
      { afterSeq: n - 5, gaps: 1 }, // n-3
      { afterSeq: n - 3, gaps: 0 },
      { afterSeq: n, gaps: 0 }, // nothing to deliver yet
    ];
    const started = await Promise.all(cases.map((k) => collect({ afterSeq: k.afterSeq })));
    try {
      await waitFor(() => started.every((c) => c.consumer.lastSeq >= n), 15_000, `consumers to reach seq ${n}`);
      await sleep(500);
      expect(cases.map((k, i) => ({ afterSeq: k.afterSeq, seqs: started[i]!.seqs(), gapReads: started[i]!.consumer.gapReads }))).toEqual(
        cases.map((k) => ({ afterSeq: k.afterSeq, seqs: range(k.afterSeq + 1, n), gapReads: k.gaps })),
      );
    } finally {
      for (const c of started) await stopConsumer(c.consumer);
    }
  });

  it('delivers live events promptly while running', async () => {
    const n = head();
    const fromStart = await collect();
    const fromHead = await collect({ afterSeq: n });
    await waitFor(() => fromStart.consumer.lastSeq >= n, 15_000, `catch-up to seq ${n}`);

    // One at a time: each committed event reaches both consumers within a bound.
    const latencies: number[] = [];
    for (let i = 0; i < 10; i++) {
      const [r] = await allocate(1, false);
      const t0 = Date.now();
      await waitFor(() => fromHead.consumer.lastSeq >= r!.allocSeq && fromStart.consumer.lastSeq >= r!.allocSeq, 5_000, `live event ${r!.allocSeq}`);
      latencies.push(Date.now() - t0);
    }
    // And a concurrent burst.
    await allocate(50);
    const n2 = head();
    await waitFor(() => fromHead.consumer.lastSeq >= n2 && fromStart.consumer.lastSeq >= n2, 10_000, `burst up to seq ${n2}`);
    await sleep(300);
    expect(fromHead.seqs()).toEqual(range(n + 1, n2));
    expect(fromStart.seqs()).toEqual(range(1, n2));
    expect(fromHead.consumer.gapReads).toBe(0);
    expect(fromHead.events).toEqual(await logEvents(n + 1));
    expect(Math.max(...latencies)).toBeLessThan(2_000);
    for (const c of [fromStart, fromHead]) await stopConsumer(c.consumer);
  });

  it('re-subscribes when its JetStream consumer is deleted from under it, without losing or repeating events', async () => {
    const n = head();
    const others = new Set<string>();
    for await (const ci of jsm.consumers.list(EVENTS_STREAM)) others.add(ci.name);
    const c = await collect({ afterSeq: n, fetchExpiresMs: 2_000, minBackoffMs: 50, maxBackoffMs: 500 });
    await allocate(5);
    await waitFor(() => c.consumer.lastSeq >= head(), 5_000, 'first events');
    const names: string[] = [];
    for await (const ci of jsm.consumers.list(EVENTS_STREAM)) if (!others.has(ci.name)) names.push(ci.name);
    expect(names).toHaveLength(1);
    for (const name of names) await jsm.consumers.delete(EVENTS_STREAM, name);
    await allocate(5);
    await waitFor(() => c.consumer.lastSeq >= head(), 20_000, 'events after the consumer was deleted');
    await allocate(5);
    const n2 = head();
    await waitFor(() => c.consumer.lastSeq >= n2, 20_000, 'events after re-subscribing');
    await sleep(300);
    expect(c.seqs()).toEqual(range(n + 1, n2));
    expect(c.log.some((m) => /re-subscribing/.test(m))).toBe(true);
    await stopConsumer(c.consumer);
    // The controller made the node's consumer again, under the same name.
    expect(await consumerNames()).toContain(c.name);
    expect(names).toEqual([c.name]);
  });

  it('offers an event again when onEvent throws, and never skips or repeats a delivered one', async () => {
    const n = head();
    const delivered: number[] = [];
    const failOnce = new Set([5, 11, n]); // 11: inside a gap re-read
    const c = await collect({
      minBackoffMs: 20,
      maxBackoffMs: 200,
      onEvent: (ev) => {
        if (failOnce.delete(ev.seq)) throw new Error(`handler failed at ${ev.seq}`);
        delivered.push(ev.seq);
      },
    });
    await waitFor(() => c.consumer.lastSeq >= n, 15_000, `consumer to reach seq ${n}`);
    await sleep(300);
    expect(failOnce.size).toBe(0);
    expect(delivered).toEqual(range(1, n));
    expect(c.log.filter((m) => /handler failed/.test(m))).toHaveLength(3);
    await stopConsumer(c.consumer);
  });

  it('serves concurrent consumer requests of one node one at a time: each succeeds and the consumer is the last one asked for', async () => {
    const rpc = new RpcClient(consumerNc, 'racer');
    const answers = await Promise.all([0, 3, 5, 2].map((afterSeq) => rpc.call('eventsConsumer', { afterSeq }, EventsConsumerRes)));
    expect(answers.map((a) => a.consumer)).toEqual(Array(4).fill(nodeConsumerName('racer')));
    const info = await jsm.consumers.info(EVENTS_STREAM, nodeConsumerName('racer'));
    expect(info.config.opt_start_seq).toBe(answers[3]!.startStreamSeq);
  });

  it("bounds a node's consumer requests: a flood is answered 'retry later', the rest are served", async () => {
    const enc = new TextEncoder();
    const replies = await Promise.all(
      Array.from({ length: 12 }, (_, i) => consumerNc.request(rpcSubject('eventsConsumer', 'flooder'), enc.encode(JSON.stringify({ afterSeq: i })), { timeout: 20_000 })),
    );
    const answers = replies.map((m) => RpcReply.parse(m.json()));
    const refused = answers.filter((a) => !a.ok);
    expect(answers.filter((a) => a.ok).length).toBeGreaterThanOrEqual(4);
    expect(refused.length).toBeGreaterThan(0);
    for (const r of refused) expect(r).toMatchObject({ ok: false, error: { code: 'unavailable', retriable: true, message: expect.stringMatching(/retry later/) } });
  });
});

describe('EventConsumer: the tail', () => {
  it('reads events missing at the very end of the stream from the controller, beside the fetch loop, and says when it caught up', async () => {
    await allocate(3);
    const n = head();
    const index = await streamIndex();
    for (const seq of [n - 1, n]) expect(await jsm.streams.deleteMessage(EVENTS_STREAM, index.get(seq)!)).toBe(true);
    // Without the tail check the last two events wait for a next publication.
    const without = await collect({ headCheckMs: 0, fetchExpiresMs: 1000 });
    await waitFor(() => without.consumer.lastSeq >= n - 2, 15_000, `consumer without the tail check to reach seq ${n - 2}`);
    await sleep(1_500);
    expect(without.consumer.lastSeq).toBe(n - 2);
    await stopConsumer(without.consumer);
    // With it (the default), they come from the controller once the stream has nothing more to give.
    let caughtUpAt: number | undefined;
    const c = await collect({ headCheckMs: 200, onCaughtUp: () => (caughtUpAt = c.consumer.lastSeq) });
    await waitFor(() => c.consumer.lastSeq >= n, 15_000, `consumer with the tail check to reach seq ${n}`);
    await sleep(300);
    expect(c.seqs()).toEqual(range(1, n));
    expect(c.events).toEqual(await logEvents());
    expect(c.consumer.tailReads).toBe(1);
    expect(caughtUpAt).toBe(n);
    await stopConsumer(c.consumer);
  });
});

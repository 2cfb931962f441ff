/**
 * The JetStream event stream on real NATS, etcd and a real controller: it has the controller's limits (discard
 * old), an existing stream is brought to them, and a stream an operator deleted comes back by itself — on the
 * next publish or, with nothing published, by the periodic check — holding what it should (the new event; for
 * an empty stream, the events since the latest snapshot). Readers lose nothing: a fresh EventConsumer and one
 * that ran across the deletion both deliver every event once, in order.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Controller, type ControllerConfigInput } from '@underlay/controller';
import { EtcdEventLog, EtcdSnapshots, connectNats, type NatsConnection } from '@underlay/adapters';
import { EVENTS_STREAM, RequestAddressRes, RequestPoolRes, headers, type ClusterEvent } from '@underlay/core';
import { EventConsumer } from '../../libs/adapters/src/nats/consumer';
import { RpcClient } from '../../libs/adapters/src/nats/rpc';
import { AnyNodeRpc } from '../lab/any-node-rpc';
import { startEtcd, startNats, type EtcdService, type NatsService } from '../lab/services';
import { waitFor as labWaitFor } from '../lab/wait';

jest.setTimeout(120_000);

// IPAM data only: never configured on any link (RFC 2544 benchmarking range).
const SUBNET = '198.18.16.0/20';
const NS_PER_MS = 1_000_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

let dir: string;
let etcd: EtcdService;
let nats: NatsService;
let nc: NatsConnection;
let jsm: JetStreamManager;
let agent: AnyNodeRpc;
let controller: Controller | undefined;
let poolId: string;
let macs = 0;
const consumers: EventConsumer[] = [];

/** The lab's waitFor, polling every 50 ms. */
const waitFor = (cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<unknown> => labWaitFor(cond, { timeoutMs, what, intervalMs: 50 });

async function startController(extra: Partial<ControllerConfigInput> = {}): Promise<Controller> {
  const logger = process.env.UNDERLAY_TEST_LOG ? (m: string) => process.stderr.write(`controller: ${m}\n`) : undefined;
  const c = new Controller({ etcd: [etcd.url], nats: nats.url, listen: '127.0.0.1:0', name: 'sl', snapshotEvery: 100, ...extra }, logger);
  await c.start();
  await c.whenLeader();
  return c;
}

/** `n` address requests; resolves when their events have been handed to JetStream. */
async function allocate(n: number): Promise<void> {
  await Promise.all(
    Array.from({ length: n }, () => {
      const m = macs++;
      return agent.call('requestAddress', { node: 'h1', poolId, address: '', options: { 'com.docker.network.endpoint.macaddress': `02:cc:00:00:${((m >> 8) & 255).toString(16).padStart(2, '0')}:${(m & 255).toString(16).padStart(2, '0')}` } }, RequestAddressRes);
    }),
  );
  await controller!.flushEvents();
}

const head = () => controller!.writer.state.seq;

async function streamInfo() {
  return jsm.streams.info(EVENTS_STREAM).catch(() => undefined);
}

/** Event seqs the stream holds, in stream order. */
async function streamEventSeqs(): Promise<number[]> {
  const info = await streamInfo();
  if (!info || info.state.messages === 0) return [];
  const out: number[] = [];
  for (let s = info.state.first_seq; s <= info.state.last_seq; s++) {
    const m = await jsm.streams.getMessage(EVENTS_STREAM, { seq: s });
    if (m) out.push(Number(m.header.get(headers.eventSeq)));
  }
  return out;
}

async function logEvents(): Promise<ClusterEvent[]> {
  const log = new EtcdEventLog({ endpoints: [etcd.url] });
  try {
    return await log.readAll(1);
  } finally {
    log.close();
  }
}

async function latestSnapshotSeq(): Promise<number> {
  const log = new EtcdEventLog({ endpoints: [etcd.url] });
  try {
    return (await new EtcdSnapshots(log).latestManifest())?.seq ?? 0;
  } finally {
    log.close();
  }
}

let readers = 0;
async function reader(): Promise<{ consumer: EventConsumer; seqs: number[] }> {
  const seqs: number[] = [];
  const node = `sl-reader-${++readers}`;
  const consumer = new EventConsumer({ nc, rpc: new RpcClient(nc, node), onEvent: (ev) => void seqs.push(ev.seq), maxBackoffMs: 500, fetchExpiresMs: 1_000 });
  consumers.push(consumer);
  await consumer.start();
  return { consumer, seqs };
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ul-stream-'));
  [etcd, nats] = await Promise.all([startEtcd({ dir }), startNats({ dir })]);
  nc = await connectNats(nats.url, 'test-stream');
  jsm = await jetstreamManager(nc);
  agent = new AnyNodeRpc(nc);
});

afterAll(async () => {
  for (const c of consumers) await c.stop().catch(() => {});
  await controller?.stop().catch(() => {});
  await nc?.close().catch(() => {});
  await Promise.all([etcd?.stop(), nats?.stop()]);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('the JetStream event stream', () => {
  it('has the controller\'s limits, discards the oldest events beyond them, and an existing stream is brought to new limits', async () => {
    // A stream made by an older controller, without limits.
    await jsm.streams.add({ name: EVENTS_STREAM, subjects: ['underlay.events.>'] });
    controller = await startController({ streamMaxMsgs: 1_000, streamMaxBytes: 64 * 1024 ** 2, streamMaxAgeMs: 3_600_000 });
    let { config } = (await streamInfo())!;
    expect({ max_msgs: config.max_msgs, max_bytes: config.max_bytes, max_age: config.max_age, discard: config.discard }).toEqual({
      max_msgs: 1_000,
      max_bytes: 64 * 1024 ** 2,
      max_age: 3_600_000 * NS_PER_MS,
      discard: 'old',
    });
    const pool = await agent.call('requestPool', { node: 'h1', space: 'underlay', pool: SUBNET, subPool: '', options: {}, v6: false }, RequestPoolRes);
    poolId = pool.poolId;
    await allocate(1_200);
    // Bounded: the oldest events went, the newest 1,000 stay.
    const n = head();
    expect(n).toBeGreaterThan(1_200);
    await waitFor(async () => (await streamInfo())!.state.last_seq >= n, 10_000, 'the stream to hold the last event');
    const info = (await streamInfo())!;
    expect(info.state.messages).toBe(1_000);
    const seqs = await streamEventSeqs();
    expect(seqs).toEqual(range(n - 999, n));

    // A controller with other limits updates the stream in place: its messages stay.
    await controller.stop();
    controller = await startController({ streamMaxMsgs: 2_000, streamMaxBytes: 128 * 1024 ** 2, streamMaxAgeMs: 7_200_000 });
    ({ config } = (await streamInfo())!);
    expect({ max_msgs: config.max_msgs, max_bytes: config.max_bytes, max_age: config.max_age, discard: config.discard }).toEqual({
      max_msgs: 2_000,
      max_bytes: 128 * 1024 ** 2,
      max_age: 7_200_000 * NS_PER_MS,
      discard: 'old',
    });
    expect(await streamEventSeqs()).toEqual(range(n - 999, n));
  });

  it('refuses limits out of bounds with the range in the message', () => {
    expect(() => new Controller({ etcd: [etcd.url], nats: nats.url, streamMaxBytes: 1_000 })).toThrow(/--stream-max-bytes must be 1048576 to 1099511627776 bytes/);
    expect(() => new Controller({ etcd: [etcd.url], nats: nats.url, streamMaxAgeMs: 10 })).toThrow(/--stream-max-age-ms must be 60000 to 31536000000 ms/);
    expect(() => new Controller({ etcd: [etcd.url], nats: nats.url, streamMaxMsgs: 5e9 })).toThrow(/--stream-max-msgs must be 1000 to 1000000000 events/);
  });

  it('comes back after an operator deleted it, holding the next event, and readers lose nothing', async () => {
    const before = await reader();
    await waitFor(() => before.consumer.lastSeq >= head(), 20_000, 'the first reader to catch up');
    expect(before.seqs).toEqual(range(1, head()));

    await jsm.streams.delete(EVENTS_STREAM);
    expect(await streamInfo()).toBeUndefined();
    const deletedAt = head();
    await allocate(1);
    const n = head();
    expect(n).toBe(deletedAt + 1);
    // Recreated (on the failed publish or by the periodic check) and republished: it holds the new event.
    await waitFor(async () => (await streamEventSeqs()).includes(n), 15_000, `the recreated stream to hold event ${n}`);
    const info = (await streamInfo())!;
    expect(info.config.max_msgs).toBe(2_000);
    // What an empty stream is refilled with: the events since the latest snapshot, then the new one.
    const snap = await latestSnapshotSeq();
    expect(snap).toBeGreaterThan(0);
    const held = await streamEventSeqs();
    expect(held[held.length - 1]).toBe(n);
    expect(held).toEqual(range(held[0]!, n));
    expect(held[0]).toBe(Math.max(1, snap + 1, n - 9_999));

    // More events after the recreation reach the stream too.
    await allocate(5);
    await waitFor(async () => (await streamEventSeqs()).includes(head()), 10_000, 'later events on the recreated stream');

    // A fresh reader gets every event once and in order (what the stream lacks is read from etcd).
    const fresh = await reader();
    await waitFor(() => fresh.consumer.lastSeq >= head(), 20_000, 'a fresh reader to reach the head');
    expect(fresh.seqs).toEqual(range(1, head()));
    expect(fresh.seqs).toEqual((await logEvents()).map((e) => e.seq));
    // The reader that ran across the deletion converges: its consumer is made again, nothing is lost or repeated.
    await waitFor(() => before.consumer.lastSeq >= head(), 30_000, 'the reader that ran across the deletion to reach the head');
    expect(before.seqs).toEqual(range(1, head()));
  });

  it('is recreated by the periodic check when nothing is published', async () => {
    const n = head();
    await jsm.streams.delete(EVENTS_STREAM);
    await waitFor(async () => (await streamInfo()) !== undefined, 10_000, 'the stream to be recreated with nothing published');
    // Refilled from the latest snapshot on (a bounded tail), up to the head.
    await waitFor(async () => (await streamEventSeqs()).includes(n), 10_000, `the recreated stream to hold event ${n}`);
    const held = await streamEventSeqs();
    const snap = await latestSnapshotSeq();
    expect(held).toEqual(range(Math.max(1, snap + 1), n));
  });
});

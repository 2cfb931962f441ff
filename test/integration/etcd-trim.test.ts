/**
 * Growth of etcd is bounded: after each snapshot the leader deletes the events more than `eventRetention` before
 * it (bounded range deletes, the `trimmed` marker moving with them) and compacts etcd's history. A read of a trimmed
 * range fails with a clear events-trimmed error (directly and over NATS, as an agent catching up would see it; an
 * operator's listing over HTTP begins at the first kept event instead); a cold
 * start (snapshot + the events after it) gives the same state; a log trimmed past every usable snapshot is refused
 * loudly instead of folded partially. Real etcd and NATS.
 */
import { waitFor as labWaitFor } from '../lab/wait';
import { Range } from 'etcd3';
import { Controller, loadState } from '@underlay/controller';
import { EtcdEventLog, EtcdSnapshots, keys } from '@underlay/adapters';
import { describe as describeState, MAC_OPTION, ReadEventsRes } from '@underlay/core';
import { startEnv, windowed, mac, type Env } from './support';

jest.setTimeout(120_000);
let env: Env;
let log: EtcdEventLog;
let snaps: EtcdSnapshots;
beforeAll(async () => {
  env = await startEnv();
  log = new EtcdEventLog({ endpoints: [env.etcd.url] });
  snaps = new EtcdSnapshots(log);
});
afterAll(async () => {
  log?.close();
  await env?.close();
});

const EVERY = 300;
const RETENTION = 100;
const trimmedText = (n: number) => `events before seq ${n} were trimmed; load the latest snapshot`;
const countRange = (from: string, to: string) => log.client.getAll().inRange(new Range(from, to)).count();

async function allocate(c: Controller, pool: string, from: number, n: number): Promise<void> {
  await windowed(n, 32, async (i) => {
    const k = from + i;
    const r = await c.ipam.requestAddress({ node: 'h1', poolId: pool, address: '', options: { [MAC_OPTION]: mac(k) } }, { actor: 'node:h1' });
    if (k % 4 === 0) await c.ipam.releaseAddress({ node: 'h1', poolId: pool, address: r.address.split('/')[0]!, allocSeq: r.allocSeq }, { actor: 'node:h1' });
  });
  await c.writer.settled();
  await c.snapshotter.flush();
}

it('trims the log behind the latest snapshot, compacts etcd, and cold-starts to the same state', async () => {
  const cfg = { snapshotEvery: EVERY, eventRetention: RETENTION, etcdCompactMargin: 5 };
  const c1 = await env.controller(cfg);
  const pool = (await c1.ipam.requestPool({ node: 'h1', space: 'underlay', pool: '10.88.0.0/16', subPool: '', options: {}, v6: false }, { actor: 'node:h1' })).poolId;
  await allocate(c1, pool, 0, 1_500);

  const head = await log.head();
  const man = (await snaps.latestManifest())!;
  expect(man.seq).toBeGreaterThan(head - 2 * EVERY);
  const first = await log.firstSeq();
  // Exactly RETENTION events are kept before the latest snapshot's seq, and nothing below them.
  expect(first).toBe(man.seq - RETENTION + 1);
  expect(c1.snapshotter.trimmedBefore).toBe(first);
  expect(await countRange(keys.event(1), keys.event(first))).toBe(0);
  expect(await log.client.getAll().prefix(keys.eventPrefix).count()).toBe(head - first + 1);
  expect(JSON.parse((await log.client.get(keys.trimmed).string())!)).toEqual({ before: first });

  // Reading a trimmed range: a clear events-trimmed error, never a partial answer; the kept range reads as before.
  await expect(log.readAll(1)).rejects.toMatchObject({ code: 'events-trimmed', message: trimmedText(first) });
  await expect(log.readAll(first - 1, 10)).rejects.toMatchObject({ code: 'events-trimmed', message: trimmedText(first) });
  expect((await log.readAll(first, 5)).map((e) => e.seq)).toEqual([first, first + 1, first + 2, first + 3, first + 4]);
  // The same over NATS, as an agent catching up asks the leader.
  const rpc = await env.client();
  await expect(rpc.call('readEvents', { fromSeq: 1, limit: 10 }, ReadEventsRes, { deadlineMs: 1 })).rejects.toMatchObject({ code: 'events-trimmed', message: trimmedText(first) });
  expect((await rpc.call('readEvents', { fromSeq: first, limit: 3 }, ReadEventsRes)).events).toHaveLength(3);

  // An operator's listing (HTTP API) from 0 begins at the first kept event.
  const api = `http://${c1.httpAddress!.host}:${c1.httpAddress!.port}`;
  const page = (await (await fetch(`${api}/v1/events?since=0&limit=3`, { headers: { authorization: `Bearer ${c1.apiToken}` } })).json()) as { events: { seq: number }[] };
  expect(page.events.map((e) => e.seq)).toEqual([first, first + 1, first + 2]);

  // etcd's history is compacted: a read at a revision before the compaction is refused by etcd, one after works.
  const rev = c1.snapshotter.compactedRevision;
  expect(rev).toBeGreaterThan(0);
  await expect(log.client.get(keys.head).revision(rev - 1).string()).rejects.toThrow(/compacted/);
  await expect(log.client.get(keys.head).revision(rev).string()).resolves.not.toBeNull();
  // Compacting to a revision etcd already compacted is nothing to do (known by etcd's error class), not a failure.
  const again = await log.compact(1);
  expect(again === undefined || again > rev).toBe(true);
  expect(await log.compact(1)).toBeUndefined();

  // Cold start: the latest snapshot and the events after it give the same state.
  const before = JSON.stringify(describeState(c1.writer.state));
  const seq = c1.writer.state.seq;
  await c1.stop();
  const c2 = await env.controller(cfg);
  expect(c2.writer.state.seq).toBe(seq);
  expect(JSON.stringify(describeState(c2.writer.state))).toBe(before);
  expect(c2.snapshotter.lastLoad).toMatchObject({ snapshotSeq: (await snaps.latestManifest())!.seq, folded: seq - (await snaps.latestManifest())!.seq });
  // The new leader goes on allocating, snapshotting and trimming.
  await allocate(c2, pool, 1_500, 700);
  const man2 = (await snaps.latestManifest())!;
  expect(man2.seq).toBeGreaterThan(man.seq);
  expect(await log.firstSeq()).toBe(man2.seq - RETENTION + 1);
  console.log(`log: events ${await log.firstSeq()}..${await log.head()} kept, snapshot at ${man2.seq}, etcd compacted to revision ${c2.snapshotter.compactedRevision}`);
  await c2.stop();
});

it('deletes in bounded transactions, only under the fence, and refuses a log trimmed past every usable snapshot', async () => {
  const head = await log.head();
  const man = (await snaps.latestManifest())!;
  const first = await log.firstSeq();
  // A writer without the leader key's fence deletes nothing.
  await expect(log.trimBefore(first + 10, { key: keys.leader, createRevision: '1' })).rejects.toThrow(/trimming the event log stopped at seq/);
  expect(await log.firstSeq()).toBe(first);

  // Bounded deletes: 250 events in chunks of 100 are three transactions. This cuts past the snapshot on purpose.
  const cut = man.seq + 151;
  expect(cut).toBeLessThanOrEqual(head);
  const r = await log.trimBefore(cut, undefined, 100);
  expect(r).toMatchObject({ from: first, to: cut, deleted: cut - first, transactions: Math.ceil((cut - first) / 100) });
  expect(await countRange(keys.event(1), keys.event(cut))).toBe(0);

  // The snapshot no longer reaches the first kept event: loading refuses instead of folding a partial log.
  await expect(loadState(log, snaps)).rejects.toThrow(
    `cannot load the cluster state: the snapshot at seq ${man.seq} is older than the first kept event and the event log before seq ${cut} was trimmed; refusing to fold a partial log`,
  );
  // No snapshot at all, and a trimmed log: the same refusal.
  await log.client.delete().key(keys.snapshot);
  await expect(loadState(log, snaps)).rejects.toThrow(`cannot load the cluster state: there is no snapshot and the event log before seq ${cut} was trimmed`);

  // A controller started on it never serves a partial state: it stays a standby and says why.
  const lines: string[] = [];
  const c = new Controller({ etcd: [env.etcd.url], nats: env.nats.url, listen: '127.0.0.1:0', name: 'c-partial' }, (m) => lines.push(m));
  env.controllers.push(c);
  await c.start();
  await labWaitFor(() => lines.some((l) => l.includes('there is no snapshot and the event log before seq') && l.includes('refusing to fold a partial log')), {
    timeoutMs: 30_000,
    what: 'the controller to refuse folding a partial log',
  });
  expect(c.role).not.toBe('leader');
  expect(c.terms).toBe(0);
  await c.stop();
});

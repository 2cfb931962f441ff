/**
 * Events as large as the schemas allow (a cluster network with 64 labels of 4 KiB each, about 270 KiB) in
 * numbers: every reader of the log pages by bytes, so none is refused by gRPC's answer size limit — a standby
 * follows, a cold start loads, `events.read` over NATS and `GET /v1/events` answer.
 */
import { EtcdEventLog } from '@underlay/adapters';
import { ReadEventsRes } from '@underlay/core';
import { Controller } from '@underlay/controller';
import { startEnv, type Env } from './support';

jest.setTimeout(180_000);

let env: Env;
beforeAll(async () => {
  env = await startEnv();
});
afterAll(async () => {
  await env?.close();
});

const labels = (i: number) => Object.fromEntries(Array.from({ length: 64 }, (_, k) => [`l${k}`, `${i}`.padEnd(4096, 'x')]));

it('a log of large events is read by a standby, a cold start, events.read and the API without hitting any size limit', async () => {
  const leader = await env.controller({ snapshotEvery: 1_000_000 });
  const standby = new Controller({ etcd: [env.etcd.url], nats: env.nats.url, listen: '127.0.0.1:0', name: 'standby', snapshotEvery: 1_000_000 });
  env.controllers.push(standby);
  await standby.start();
  // Enough large events that one etcd range of the default page would be well over gRPC's 4 MiB.
  for (let i = 0; i < 70; i++) {
    await leader.networks.clusterNetworkCreate({ name: `big${i}`, definition: { subnets: [{ subnet: `198.18.${i}.0/24` }], labels: labels(i) } }, { actor: 'user:test' });
  }
  const head = leader.writer.committedSeq;
  expect(head).toBeGreaterThanOrEqual(70);

  const log = new EtcdEventLog({ endpoints: [env.etcd.url] });
  try {
    const all = await log.readAll(1);
    expect(all.map((e) => e.seq)).toEqual(Array.from({ length: head }, (_, i) => i + 1));
    expect(Buffer.byteLength(JSON.stringify(all))).toBeGreaterThan(17 * 1024 * 1024);
  } finally {
    log.close();
  }
  // A standby follows (it folds new events every 250 ms).
  const deadline = Date.now() + 20_000;
  while (standby.writer.state.seq < head && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  expect(standby.role).toBe('standby');
  expect(standby.writer.state.seq).toBe(head);
  expect(standby.writer.state.clusterNetworks.size).toBe(70);
  // events.read over NATS: pages that fit max_payload, and every event comes.
  const rpc = await env.client();
  const got: number[] = [];
  while (got.length < head) {
    const page = await rpc.call('readEvents', { fromSeq: got.length + 1, limit: 10_000 }, ReadEventsRes);
    expect(page.events.length).toBeGreaterThan(0);
    expect(Buffer.byteLength(JSON.stringify(page))).toBeLessThan(1024 * 1024);
    got.push(...page.events.map((e) => (e as { seq: number }).seq));
  }
  expect(got).toEqual(Array.from({ length: head }, (_, i) => i + 1));
  // The HTTP API's pages: at most 16 MiB of events each (the log holds about 19 MiB), read on with `next`.
  const pages: number[][] = [];
  let since = 0;
  while (since < head) {
    const res = await fetch(`http://127.0.0.1:${leader.httpAddress!.port}/v1/events?since=${since}&limit=10000`, { headers: { authorization: `Bearer ${leader.apiToken}` } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { events: { seq: number }[]; next: number };
    expect(body.events.length).toBeGreaterThan(0);
    pages.push(body.events.map((e) => e.seq));
    since = body.next;
  }
  expect(pages.length).toBeGreaterThan(1);
  expect(pages.flat()).toEqual(Array.from({ length: head }, (_, i) => i + 1));
});

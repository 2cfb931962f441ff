/**
 * Cold start from 100,000 events: the controller writes snapshots as the log grows; a new controller
 * restores the latest snapshot and folds only the events after it (its load report says how many: the test
 * bounds that number, so a broken snapshot write or read path fails it), reaching exactly the state of the
 * whole log folded from the start. A corrupt latest snapshot is detected, logged and counted, and the state
 * is still right (folded from the whole log); a new snapshot replaces it.
 */
import { EtcdEventLog, EtcdSnapshots, SNAPSHOT_CHUNK_BYTES, SNAPSHOT_INDEX_MAX_BYTES, keys, sha256Hex, snapshotCuts } from '@underlay/adapters';
import { describe as describeState, fold, MAC_OPTION } from '@underlay/core';
import { Controller, loadState, type LoadReport } from '@underlay/controller';
import { startEnv, windowed, mac, type Env } from './support';

jest.setTimeout(300_000);
let env: Env;
beforeAll(async () => {
  env = await startEnv();
});
afterAll(() => env?.close());

it('cold-starts from 100,000 events with snapshots to the same state', async () => {
  // No trimming here (eventRetention 0): the test folds the whole log to compare.
  const c1 = await env.controller({ snapshotEvery: 10_000, eventRetention: 0 });
  const ctx = { actor: 'node:h1' };
  const pools: string[] = [];
  for (const [i, node] of ['h1', 'h2', 'h3', 'h4'].entries()) {
    pools.push((await c1.ipam.requestPool({ node, space: 'underlay', pool: `2001:db8:${i + 1}::/64`, subPool: '', options: {}, v6: true }, { actor: `node:${node}` })).poolId);
  }
  let n = 0;
  const t0 = Date.now();
  while (c1.writer.state.seq < 100_000) {
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
  await c1.writer.settled();
  const seq = c1.writer.state.seq;
  console.log(`${seq} events committed in ${Date.now() - t0} ms (${c1.writer.transactions} transactions)`);
  expect(seq).toBeGreaterThanOrEqual(100_000);
  const before = JSON.stringify(describeState(c1.writer.state));
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
    const c2 = await env.controller({ eventRetention: 0 });
    const coldMs = Date.now() - tCold;
    expect(c2.writer.state.seq).toBe(seq);
    expect(JSON.stringify(describeState(c2.writer.state))).toBe(before);
    // The cold start restored that snapshot and folded only the events after it: fewer than two snapshot intervals
    // (a snapshot that was not written, or not read, makes this the whole log: about 100,000).
    const load = c2.snapshotter.lastLoad!;
    expect(load).toBeDefined();
    expect(load.snapshotError).toBeUndefined();
    expect(load.snapshotSeq).toBe(latest!.seq);
    expect(load.folded).toBe(seq - latest!.seq);
    expect(load.folded).toBeLessThan(2 * 10_000);
    expect(c2.snapshotter.corruptSnapshots).toBe(0);
    console.log(`cold start to leader with snapshot at ${latest!.seq}, ${load.folded} events folded after it: ${coldMs} ms (load ${load.ms} ms); folding the whole log: ${fullMs} ms`);
  } finally {
    log.close();
  }
});

describe('a corrupt latest snapshot', () => {
  let env2: Env;
  beforeAll(async () => {
    env2 = await startEnv();
  });
  afterAll(() => env2?.close());

  it('is detected, logged and counted; the whole log is folded instead and a new snapshot replaces it', async () => {
    const every = 500;
    const c1 = await env2.controller({ snapshotEvery: every, eventRetention: 0 });
    const pool = (await c1.ipam.requestPool({ node: 'h1', space: 'underlay', pool: '10.77.0.0/16', subPool: '', options: {}, v6: false }, { actor: 'node:h1' })).poolId;
    await windowed(1_600, 64, (k) => c1.ipam.requestAddress({ node: 'h1', poolId: pool, address: '', options: { [MAC_OPTION]: mac(k) } }, { actor: 'node:h1' }));
    await c1.writer.settled();
    const seq = c1.writer.state.seq;
    const before = JSON.stringify(describeState(c1.writer.state));
    await c1.stop();

    const log = new EtcdEventLog({ endpoints: [env2.etcd.url] });
    const snaps = new EtcdSnapshots(log);
    try {
      const man = (await snaps.latestManifest())!;
      expect(man.seq).toBeGreaterThanOrEqual(every);
      expect(man.sha256).toMatch(/^[0-9a-f]{64}$/);
      // Positive control: the intact snapshot is used.
      const good: LoadReport[] = [];
      await loadState(log, snaps, () => {}, (r) => good.push(r));
      expect(good[0]).toMatchObject({ snapshotSeq: man.seq, folded: seq - man.seq });

      // One character of part 0 changed, same length: only the checksum can tell.
      const key = keys.snapshotPart(man.seq, 0);
      const part = (await log.client.get(key).string())!;
      const i = Math.floor(part.length / 2);
      const flipped = part.slice(0, i) + (part[i] === '1' ? '2' : '1') + part.slice(i + 1);
      await log.client.put(key).value(flipped);

      const lines: string[] = [];
      const c2 = new Controller({ etcd: [env2.etcd.url], nats: env2.nats.url, listen: '127.0.0.1:0', name: 'c-after-damage', snapshotEvery: every, eventRetention: 0 }, (m) => lines.push(m));
      env2.controllers.push(c2);
      await c2.start();
      await c2.whenLeader();
      expect(c2.writer.state.seq).toBe(seq);
      expect(JSON.stringify(describeState(c2.writer.state))).toBe(before);
      const load = c2.snapshotter.lastLoad!;
      expect(load.snapshotError).toMatch(new RegExp(`^snapshot ${man.seq} is corrupt: SHA-256 `));
      expect(load).toMatchObject({ snapshotSeq: 0, folded: seq });
      expect(c2.snapshotter.corruptSnapshots).toBe(1);
      expect(lines.filter((l) => l.startsWith(`CORRUPT SNAPSHOT: snapshot ${man.seq} is corrupt`))).toHaveLength(1);
      // The new leader replaced it at once: the latest snapshot reads back whole.
      await c2.snapshotter.flush();
      const repaired = await snaps.latest();
      expect(repaired?.seq).toBe(seq);
      await c2.stop();

      // Other damage is detected too (loadState directly): a missing part, a manifest that is not JSON.
      const reports: LoadReport[] = [];
      const m2 = (await snaps.latestManifest())!;
      await log.client.delete().key(keys.snapshotPart(m2.seq, 0));
      await loadState(log, snaps, () => {}, (r) => reports.push(r));
      await log.client.put(keys.snapshot).value('{"seq": 12, "par');
      await loadState(log, snaps, () => {}, (r) => reports.push(r));
      expect(reports.map((r) => r.snapshotError)).toEqual([
        `snapshot ${m2.seq} is corrupt: part 0 of ${m2.parts} is missing`,
        `snapshot is corrupt: the manifest ${keys.snapshot} is not JSON`,
      ]);
      for (const r of reports) expect(r).toMatchObject({ snapshotSeq: 0, folded: seq, seq });
    } finally {
      log.close();
    }
  });
});

describe('snapshot parts in etcd', () => {
  it('are cut between characters, read a few at once and checked whole; the first missing part is named', async () => {
    const log = new EtcdEventLog({ endpoints: [env.etcd.url] });
    const snaps = new EtcdSnapshots(log);
    try {
      // An emoji (two UTF-16 halves) across the first cut: stored as UTF-8, a part ending in a lone half came back as
      // U+FFFD and the whole snapshot failed its checksum.
      const cut = SNAPSHOT_CHUNK_BYTES;
      const json = JSON.stringify({ a: 'x'.repeat(cut - 7) + '\u{1F600}' + 'y'.repeat(2 * cut) + 'é' + 'z'.repeat(cut / 2) });
      expect(json.charCodeAt(cut - 1)).toBeGreaterThanOrEqual(0xd800);
      expect(json.charCodeAt(cut - 1)).toBeLessThanOrEqual(0xdbff);
      const seq = 9_000_001;
      expect(await snaps.write(seq, json)).toBe(true);
      const man = (await snaps.latestManifest())!;
      expect(man.parts).toBe(4);
      expect(await snaps.latest()).toEqual({ seq, json });
      // Parts are read several at once: whichever are missing, the report names the first.
      await log.client.delete().key(keys.snapshotPart(seq, 3));
      await log.client.delete().key(keys.snapshotPart(seq, 1));
      await expect(snaps.latest()).rejects.toThrow(`snapshot ${seq} is corrupt: part 1 of 4 is missing`);
    } finally {
      log.close();
    }
  });

  it("an index says where each pool's allocations lie: ranges read across parts are the text's, and an index too large is not written", async () => {
    const log = new EtcdEventLog({ endpoints: [env.etcd.url] });
    const snaps = new EtcdSnapshots(log);
    try {
      // Three "sections" of a text over two parts; the second crosses the cut, with an emoji beside it.
      const json = 'h'.repeat(100) + 'A'.repeat(1_000) + 'h'.repeat(SNAPSHOT_CHUNK_BYTES - 2_000) + '\u{1F600}' + 'B'.repeat(3_000) + 'h'.repeat(50) + 'C'.repeat(10) + 'h';
      const a = { poolId: 'a', start: 100, end: 1_100 };
      const b = { poolId: 'b', start: SNAPSHOT_CHUNK_BYTES - 900, end: SNAPSHOT_CHUNK_BYTES + 2_102 };
      const c = { poolId: 'c', start: json.length - 11, end: json.length - 1 };
      const seq = 9_100_001;
      expect(await snaps.write(seq, json, { sections: [a, b, c] })).toBe(true);
      const index = (await snaps.readIndex(seq))!;
      expect(index.cuts).toEqual(snapshotCuts(json));
      expect(index.cuts.length).toBe(2);
      expect(index.pools.map((p) => [p.poolId, p.start, p.end, p.sha256])).toEqual([a, b, c].map((x) => [x.poolId, x.start, x.end, sha256Hex(json.slice(x.start, x.end))]));
      expect(index.head).toBe(sha256Hex(json.slice(0, a.start) + json.slice(a.end, b.start) + json.slice(b.end, c.start) + json.slice(c.end)));
      // A range is answered up to the end of its part; the rest from the next one.
      const read = async (start: number, end: number) => {
        let out = '';
        for (let at = start; at < end; ) {
          const piece = (await snaps.readRange(seq, index.cuts, at, end))!;
          expect(piece.length).toBeGreaterThan(0);
          out += piece;
          at += piece.length;
        }
        return out;
      };
      for (const x of [a, b, c]) expect(await read(x.start, x.end)).toBe(json.slice(x.start, x.end));
      expect((await snaps.readRange(seq, index.cuts, b.start, b.end))!.length).toBe(index.cuts[0]! - b.start);
      // More pools than an index may name (one etcd value, one NATS message): no index; agents read it whole.
      const many = Array.from({ length: Math.ceil(SNAPSHOT_INDEX_MAX_BYTES / 100) }, (_, i) => ({ poolId: `pool-${i}`, start: i, end: i }));
      expect(await snaps.write(seq + 1, json, { sections: many })).toBe(true);
      expect(await snaps.readIndex(seq + 1)).toBeUndefined();
      expect((await snaps.latestManifest())!.seq).toBe(seq + 1);
    } finally {
      log.close();
    }
  });

  it('cuts never leave half a surrogate pair at the end of a part, and parts stay within their size in UTF-8', () => {
    const s = 'ab\u{1F600}cd\u{1F601}';
    expect(snapshotCuts(s, 3)).toEqual([2, 4, 6, 8]); // an emoji alone is 4 bytes: the smallest part there can be
    expect(snapshotCuts(s, 100)).toEqual([8]);
    expect(snapshotCuts('', 3)).toEqual([0]);
    // 3-byte characters: 512 Ki of them would be 1.5 MiB, past etcd's default request limit.
    expect(snapshotCuts('中'.repeat(10), 9)).toEqual([3, 6, 9, 10]);
    const mixed = 'a\u{1F600}中é'.repeat(50) + 'z';
    for (let max = 4; max < 40; max++) {
      const c = snapshotCuts(mixed, max);
      let at = 0;
      for (const end of c) {
        expect(end).toBeGreaterThan(at);
        expect(Buffer.byteLength(mixed.slice(at, end), 'utf8')).toBeLessThanOrEqual(max);
        const last = mixed.charCodeAt(end - 1);
        if (end < mixed.length) expect(last >= 0xd800 && last <= 0xdbff).toBe(false);
        at = end;
      }
      expect(at).toBe(mixed.length);
    }
  });
});

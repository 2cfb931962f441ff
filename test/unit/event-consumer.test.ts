// EventConsumer's delivery (libs/adapters/src/nats/consumer.ts) on an in-memory source: a stream that may lack
// messages (gaps, a missing tail, a purge) and a log that may be trimmed. Whatever the stream holds, the reader is
// handed every committed event once, in order, with no gaps, including the tail; one delivery at a time.
import { UnderlayError, headers, type ClusterEvent } from '@underlay/core';
import { EventConsumer, sleep, type EventSource, type ReadResult, type EventSourceConsumerOptions, type StreamBatch, type StreamMessage } from '@underlay/adapters';

const until = async (cond: () => boolean, what: string, ms = 5000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`waited ${ms} ms for ${what}`);
    await sleep(5);
  }
};
const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

function event(seq: number): ClusterEvent {
  return { seq, id: `id-${seq}`, time: '2026-01-01T00:00:00Z', actor: 'controller', type: 'NodeRegistered', data: { node: `n${seq}` } };
}

/** A stream entry: an event (or an unreadable payload claiming a seq). */
interface Entry {
  streamSeq: number;
  seq: number;
  raw: unknown;
}

/** The controller's log (committed events, maybe trimmed) and the JetStream stream (maybe lacking some). */
class FakeSource implements EventSource {
  log: ClusterEvent[] = [];
  stream: Entry[] = [];
  /** Events below this seq were trimmed from the log. */
  firstKept = 1;
  subscribes: number[] = [];
  reads: Array<[number, number]> = [];
  heads = 0;
  /** Replaces head() (e.g. one that never answers). */
  headImpl?: () => Promise<number>;
  /** Runs inside read() before it answers (e.g. to publish meanwhile). */
  beforeReadAnswer?: (fromSeq: number) => Promise<void>;
  private streamSeq = 0;
  private wakers = new Set<() => void>();
  /** Subscriptions the server lost (their fetches never deliver): all made before this count. */
  private deadBelow = 0;

  /** The server loses every subscription made so far (a lost pull request: no message, no error). */
  loseSubscriptions(): void {
    this.deadBelow = this.subscribes.length;
  }

  /** Commits `n` events; publishes them unless told which not to. */
  commit(n: number, skip: (seq: number) => boolean = () => false): void {
    for (let i = 0; i < n; i++) {
      const ev = event(this.log.length + 1);
      this.log.push(ev);
      if (!skip(ev.seq)) this.publish(ev.seq);
    }
  }

  publish(seq: number, raw: unknown = JSON.parse(JSON.stringify(this.log[seq - 1]))): void {
    this.stream.push({ streamSeq: ++this.streamSeq, seq, raw });
    for (const w of [...this.wakers]) w();
  }

  purge(): void {
    this.stream = [];
  }

  async subscribe(afterSeq: number) {
    this.subscribes.push(afterSeq);
    const id = this.subscribes.length;
    // Like the controller: the first stream message with a seq after afterSeq (the next one to come when none).
    let next = this.stream.find((e) => e.seq > afterSeq)?.streamSeq ?? this.streamSeq + 1;
    const source = this;
    return {
      describe: `fake from stream seq ${next}`,
      subscription: {
        async fetch(opts: { max_messages: number; expires: number }): Promise<StreamBatch> {
          let stopped = false;
          let wake = () => {};
          const deadline = Date.now() + opts.expires;
          return {
            stop() {
              stopped = true;
              wake();
            },
            async *[Symbol.asyncIterator](): AsyncGenerator<StreamMessage> {
              let got = 0;
              while (!stopped && got < opts.max_messages) {
                const e = id > source.deadBelow ? source.stream.find((x) => x.streamSeq >= next) : undefined;
                if (e) {
                  next = e.streamSeq + 1;
                  got++;
                  yield { seq: e.streamSeq, headers: { get: (k: string) => (k === headers.eventSeq ? String(e.seq) : '') }, json: <T>() => e.raw as T };
                  continue;
                }
                if (got > 0 || Date.now() >= deadline) return;
                await new Promise<void>((r) => {
                  const done = () => {
                    clearTimeout(t);
                    source.wakers.delete(done);
                    r();
                  };
                  const t = setTimeout(done, Math.max(0, deadline - Date.now()));
                  source.wakers.add(done);
                  wake = done;
                });
              }
            },
          };
        },
      },
    };
  }

  async read(fromSeq: number, limit: number): Promise<ReadResult> {
    this.reads.push([fromSeq, limit]);
    if (fromSeq < this.firstKept) throw new UnderlayError('events-trimmed', `events before seq ${this.firstKept} were trimmed; load the latest snapshot`);
    await this.beforeReadAnswer?.(fromSeq);
    return this.log.slice(fromSeq - 1, fromSeq - 1 + limit).map((e) => JSON.parse(JSON.stringify(e)));
  }

  async head(): Promise<number> {
    this.heads++;
    return this.headImpl ? this.headImpl() : this.log.length;
  }

  isClosed(): boolean {
    return false;
  }
}

const consumers: EventConsumer[] = [];
afterEach(async () => {
  for (const c of consumers.splice(0)) await c.stop();
});

/** A consumer on `source` that records what it is handed and checks one delivery at a time, in order. */
function reader(source: FakeSource, opts: Partial<EventSourceConsumerOptions> = {}) {
  const seqs: number[] = [];
  const log: string[] = [];
  let active = 0;
  let overlapped = false;
  let caughtUpAt: number | undefined;
  const consumer = new EventConsumer({
    source,
    headCheckMs: 100,
    minBackoffMs: 5,
    maxBackoffMs: 50,
    logger: (m) => log.push(m),
    onCaughtUp: () => (caughtUpAt = consumer.lastSeq),
    ...opts,
    onEvent: async (ev) => {
      if (active++ > 0) overlapped = true;
      try {
        await opts.onEvent?.(ev);
        seqs.push(ev.seq);
      } finally {
        active--;
      }
    },
  });
  consumers.push(consumer);
  return { consumer, seqs, log, overlapped: () => overlapped, caughtUpAt: () => caughtUpAt };
}

describe('EventConsumer on an in-memory source', () => {
  it('delivers what the stream holds once and in order, without reading the log', async () => {
    const src = new FakeSource();
    src.commit(20);
    src.publish(5); // a republished duplicate
    const r = reader(src);
    await r.consumer.start();
    await until(() => r.consumer.lastSeq === 20, 'seq 20');
    src.commit(10);
    await until(() => r.consumer.lastSeq === 30, 'live events');
    expect(r.seqs).toEqual(range(1, 30));
    expect(src.reads).toEqual([]);
    expect([r.consumer.gapReads, r.consumer.tailReads]).toEqual([0, 0]);
    expect(r.caughtUpAt()).toBeGreaterThanOrEqual(20);
  });

  it('re-reads messages missing from the stream (gaps) from the log before the next one', async () => {
    const src = new FakeSource();
    const missing = new Set([1, 5, 6, 7, 15]);
    src.commit(20, (s) => missing.has(s));
    src.publish(12, { not: 'an event' }); // unreadable, its header says 12: read up to it
    const r = reader(src, { pageSize: 2 });
    await r.consumer.start();
    await until(() => r.consumer.lastSeq === 20, 'seq 20');
    expect(r.seqs).toEqual(range(1, 20));
    expect(r.consumer.gapReads).toBe(3); // {1}, {5..7}, {15}; 12 comes again from the stream (a duplicate)
    expect(src.reads).toEqual([[1, 1], [5, 2], [7, 1], [15, 1]]);
    expect(r.consumer.tailReads).toBe(0);
  });

  it('reads the tail: events missing at the end of the stream, with nothing published after them', async () => {
    const src = new FakeSource();
    src.commit(10, (s) => s > 7);
    const r = reader(src);
    await r.consumer.start();
    await until(() => r.consumer.lastSeq === 10, 'the tail up to 10');
    expect(r.caughtUpAt()).toBe(10); // ready only with everything committed at start
    // Later too: committed, never published.
    src.commit(3, () => true);
    await until(() => r.consumer.lastSeq === 13, 'the tail up to 13', 3000);
    src.commit(2);
    await until(() => r.consumer.lastSeq === 15, 'live events after the tail');
    expect(r.seqs).toEqual(range(1, 15));
    expect(r.consumer.tailReads).toBe(2);
    expect(r.consumer.gapReads).toBe(0);
    expect(r.overlapped()).toBe(false);
  });

  it('catches up to the head after a (re)subscribe: a purged stream holds nothing for it', async () => {
    const src = new FakeSource();
    src.commit(8);
    src.purge();
    const r = reader(src);
    await r.consumer.start();
    await until(() => r.consumer.lastSeq === 8, 'seq 8 from the log');
    expect(r.seqs).toEqual(range(1, 8));
    expect(r.consumer.tailReads).toBe(1);
  });

  it('keeps one delivery at a time and the order when the stream brings the tail while it is being read', async () => {
    const src = new FakeSource();
    src.commit(4, (s) => s > 2);
    // As the tail read answers, the stream brings those events and more, while the reader is slow.
    src.beforeReadAnswer = async () => {
      src.beforeReadAnswer = undefined;
      src.publish(3);
      src.publish(4);
      src.commit(3);
    };
    const r = reader(src, { onEvent: () => sleep(20) });
    await r.consumer.start();
    await until(() => r.consumer.lastSeq === 7, 'seq 7');
    await sleep(100);
    expect(r.seqs).toEqual(range(1, 7));
    expect(r.overlapped()).toBe(false);
  });

  it('a subscription that went silent (a pull request the server lost): the tail read brings the events and it subscribes again', async () => {
    const src = new FakeSource();
    src.commit(5);
    const r = reader(src, { fetchExpiresMs: 60_000 });
    await r.consumer.start();
    await until(() => r.consumer.lastSeq === 5, 'seq 5');
    src.loseSubscriptions();
    src.commit(3);
    await until(() => r.consumer.lastSeq === 8, 'seq 8 through the tail read');
    await until(() => src.subscribes.length === 2, 'a new subscription');
    expect(src.subscribes).toEqual([0, 8]);
    // The new subscription delivers from the stream again, without another read.
    for (let i = 0; i < 3; i++) {
      src.commit(1);
      await until(() => r.consumer.lastSeq === src.log.length, `live event ${src.log.length}`, 1000);
    }
    expect(r.seqs).toEqual(range(1, 11));
    expect(r.consumer.tailReads).toBe(1);
  });

  it('never puts the head on the delivery path: a controller that does not answer head does not hold the stream back', async () => {
    const src = new FakeSource();
    src.headImpl = () => new Promise<number>(() => {}); // never answers
    src.commit(5);
    const r = reader(src);
    await r.consumer.start();
    await until(() => r.consumer.lastSeq === 5, 'seq 5');
    // A quiet stream: fetches end empty (at least 1 s each); live events still come at once.
    await sleep(1300);
    for (let i = 0; i < 5; i++) {
      src.commit(1);
      await until(() => r.consumer.lastSeq === src.log.length, `live event ${src.log.length}`, 1000);
    }
    expect(r.seqs).toEqual(range(1, 10));
    expect(r.caughtUpAt()).toBeUndefined();
  });

  it('does not read the tail while the stream flows, even with a slow reader', async () => {
    const src = new FakeSource();
    src.commit(60);
    const r = reader(src, { onEvent: () => sleep(10), batchSize: 8 });
    await r.consumer.start();
    await until(() => r.consumer.lastSeq === 60, 'seq 60', 10_000);
    expect(r.consumer.tailReads).toBe(0);
    expect(src.reads).toEqual([]);
  });

  it('fallen behind the trimmed log: starts again from the snapshot once, then goes on after it', async () => {
    const src = new FakeSource();
    src.commit(3);
    let gate: Promise<void> | undefined;
    let open = () => {};
    const trimmed: number[] = [];
    const r = reader(src, {
      onEvent: async () => {
        await gate;
      },
      onTrimmed: async () => {
        trimmed.push(r.consumer.lastSeq);
        return 20; // the snapshot's seq
      },
    });
    await r.consumer.start();
    await until(() => r.consumer.lastSeq === 3, 'seq 3');
    gate = new Promise<void>((res) => (open = res));
    src.commit(1); // held at the gate
    await until(() => src.stream.length === 4, 'publish');
    src.commit(20); // meanwhile the log moves on past the snapshot and is trimmed, the stream purged
    src.firstKept = 21;
    src.purge();
    src.publish(src.log.length); // a message after the hole: a gap into the trimmed part
    open();
    gate = undefined;
    await until(() => r.consumer.lastSeq === 24, 'seq 24 after the snapshot');
    src.commit(2);
    await until(() => r.consumer.lastSeq === 26, 'seq 26');
    expect(trimmed).toEqual([4]);
    expect(r.seqs).toEqual([...range(1, 4), ...range(21, 26)]);
    expect(r.log.filter((m) => /starting again from the latest snapshot/.test(m))).toHaveLength(1);
    // It subscribed again after the snapshot.
    expect(src.subscribes).toContain(20);
  });

  it('offers an event again when onEvent throws, never skipping or repeating one', async () => {
    const src = new FakeSource();
    src.commit(10, (s) => s === 6 || s === 10); // 6: a gap read, 10: the tail
    const failOnce = new Set([3, 6, 10]);
    const r = reader(src, {
      onEvent: (ev) => {
        if (failOnce.delete(ev.seq)) throw new Error(`handler failed at ${ev.seq}`);
      },
    });
    await r.consumer.start();
    await until(() => r.consumer.lastSeq === 10, 'seq 10');
    expect(failOnce.size).toBe(0);
    expect(r.seqs).toEqual(range(1, 10));
  });

  it('stops: no onEvent runs after stop() resolved', async () => {
    const src = new FakeSource();
    src.commit(5);
    const r = reader(src, { onEvent: () => sleep(5) });
    await r.consumer.start();
    await until(() => r.consumer.lastSeq >= 1, 'a first event');
    await r.consumer.stop();
    const n = r.seqs.length;
    src.commit(5, (s) => s > 7);
    await sleep(300);
    expect(r.seqs.length).toBe(n);
  });
});

/**
 * One chain of the log (interest-based delivery): the log's events go round three chains, each stamped with its chain
 * and prev; the stream (a plain subscription) brings only the chain's events, maybe not all; a read answers the
 * chain's events from `fromSeq` and how far it looked (at most `scan` events of the log per read).
 */
class ChainSource extends FakeSource {
  constructor(
    readonly chain: string,
    readonly scan = 7,
  ) {
    super();
  }
  private readonly chains = ['c', 'p.a', 'p.b'];

  override commit(n: number, skip: (seq: number) => boolean = () => false): void {
    for (let i = 0; i < n; i++) {
      const seq = this.log.length + 1;
      const chain = this.chains[seq % 3]!;
      const prev = [...this.log].reverse().find((e) => e.chain === chain)?.seq ?? 0;
      const ev = { ...event(seq), chain, prev };
      this.log.push(ev);
      if (chain === this.chain && !skip(seq)) this.publish(seq);
    }
  }

  override async read(fromSeq: number, limit: number): Promise<{ events: unknown[]; through: number }> {
    this.reads.push([fromSeq, limit]);
    const scanned = this.log.slice(fromSeq - 1, fromSeq - 1 + this.scan);
    const events = scanned.filter((e) => e.chain === this.chain).slice(0, limit);
    return { events: events.map((e) => JSON.parse(JSON.stringify(e))), through: scanned.at(-1)?.seq ?? fromSeq - 1 };
  }

  override async head(): Promise<number> {
    this.heads++;
    return [...this.log].reverse().find((e) => e.chain === this.chain)?.seq ?? 0;
  }

  seqsOf(upTo: number): number[] {
    return this.log.filter((e) => e.chain === this.chain && e.seq <= upTo).map((e) => e.seq);
  }
}

describe('EventConsumer on one chain', () => {
  it("hands every event of its chain once and in order: gaps found by prev, the tail by the chain's head, reads paged by how far they looked", async () => {
    const src = new ChainSource('p.a');
    // p.a holds 1, 4, 7, …: 4 and 13 never reach the subscription (gaps), nor anything after 22 (the tail).
    src.commit(30, (s) => s === 4 || s === 13 || s > 22);
    const r = reader(src, { chain: 'p.a' });
    await r.consumer.start();
    await until(() => r.consumer.lastSeq >= 28, 'the chain up to its head 28');
    expect(r.seqs).toEqual(src.seqsOf(30));
    expect(r.consumer.gapReads).toBe(2);
    expect(r.consumer.tailReads).toBeGreaterThanOrEqual(1);
    expect(r.caughtUpAt()).toBeGreaterThanOrEqual(28);
    // Live: the next events of the chain come from the subscription, with no read.
    const reads = src.reads.length;
    src.commit(9);
    await until(() => r.consumer.lastSeq >= 37, 'live events of the chain');
    expect(r.seqs).toEqual(src.seqsOf(39));
    expect(src.reads.length).toBe(reads);
    expect(r.overlapped()).toBe(false);
  });

  it('starting after a seq, reads only what its chain had since (an agent that starts to follow a pool)', async () => {
    const src = new ChainSource('p.b', 100);
    src.commit(40, () => true); // nothing published while it did not follow
    const r = reader(src, { chain: 'p.b', afterSeq: 20 });
    await r.consumer.start();
    await until(() => r.consumer.lastSeq >= 38, 'the chain up to its head 38');
    expect(r.seqs).toEqual(src.seqsOf(40).filter((s) => s > 20));
    expect(src.reads.every(([from]) => from > 20)).toBe(true);
  });
});

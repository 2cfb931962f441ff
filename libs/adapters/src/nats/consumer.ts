/**
 * Reads the stream of committed events in order, exactly once per event seq, with no gaps.
 *
 * JetStream is the fast path; etcd (through the controller's `readEvents` RPC) is the truth. The
 * consumer keeps `lastSeq`, the seq of the last event handed to `onEvent`, and for every message:
 *  - `seq <= lastSeq`: a duplicate (republish, overlap after a re-subscribe): skipped;
 *  - `seq == lastSeq + 1`: delivered;
 *  - `seq > lastSeq + 1`: a gap (message deleted or never stored): the missing range is re-read
 *    from the controller in pages and delivered first, then this one.
 * It reads through the node's own pull consumer (`agent-<node>`, no acks), which the controller makes on
 * request (`events.consumer`, see node-consumers.ts) starting after `lastSeq`; it fetches in bounded batches
 * so a slow `onEvent` never makes it buffer the whole stream. Whenever anything breaks (stream missing or
 * recreated, consumer deleted, RPC failed, `onEvent` threw) it asks the controller for a new consumer after
 * `lastSeq`, with bounded exponential backoff.
 *
 * Limitation: a gap is noticed when a later message arrives. Events missing at the very end of the
 * stream are delivered once the next event is published.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream, type Consumer, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import { EventsConsumerRes, ReadEventsRes, UnderlayError, headers, parseEvent, type ClusterEvent } from '@underlay/core';
import { RpcClient } from './rpc.js';


export interface EventConsumerOptions {
  nc: NatsConnection;
  /** Deliver events with seq > afterSeq (0 = from the beginning). */
  afterSeq?: number;
  /**
   * Called for every event exactly once, in seq order, with no gaps. Awaited before the next.
   * If it throws, the event counts as not delivered: the consumer re-subscribes after a backoff
   * and offers the same event again.
   */
  onEvent: (ev: ClusterEvent) => Promise<void> | void;
  /** The node's client: asks the controller for the node's consumer, and re-reads gaps. */
  rpc: RpcClient;
  logger?: (m: string) => void;
  /** Events per `readEvents` page (default 1000, at most 10000). */
  pageSize?: number;
  /**
   * The events after `lastSeq` are gone from the log (trimmed behind a snapshot) and from the stream: the reader
   * must start again from the latest snapshot. Returns the seq it now has; the consumer goes on after it. Without
   * it, the consumer keeps retrying (and logs why).
   */
  onTrimmed?: () => Promise<number>;
  /** Messages per JetStream fetch (default 256). Bounds what is buffered ahead of `onEvent`. */
  batchSize?: number;
  /** How long one fetch waits for messages before the next (default 10 s, at least 1 s). */
  fetchExpiresMs?: number;
  /** Re-subscribe backoff bounds (default 100 ms … 5 s). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}


export class EventConsumer {
  private readonly nc: NatsConnection;
  private readonly onEvent: (ev: ClusterEvent) => Promise<void> | void;
  private readonly onTrimmed?: () => Promise<number>;
  private readonly rpc: RpcClient;
  private readonly logger: (m: string) => void;
  private readonly pageSize: number;
  private readonly batchSize: number;
  private readonly fetchExpiresMs: number;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;

  private _lastSeq: number;
  private _gapReads = 0;
  private started = false;
  private stopped = false;
  private loop?: Promise<void>;
  private batch?: ConsumerMessages;
  private wake?: () => void;

  constructor(opts: EventConsumerOptions) {
    const afterSeq = opts.afterSeq ?? 0;
    if (!Number.isInteger(afterSeq) || afterSeq < 0) throw new RangeError(`afterSeq must be a non-negative integer, not ${afterSeq}`);
    this.nc = opts.nc;
    this.onEvent = opts.onEvent;
    this.onTrimmed = opts.onTrimmed;
    this.rpc = opts.rpc;
    this.logger = opts.logger ?? (() => {});
    this.pageSize = Math.min(Math.max(1, Math.floor(opts.pageSize ?? 1000)), 10_000);
    this.batchSize = Math.max(1, Math.floor(opts.batchSize ?? 256));
    this.fetchExpiresMs = Math.max(1000, opts.fetchExpiresMs ?? 10_000);
    this.minBackoffMs = Math.max(1, opts.minBackoffMs ?? 100);
    this.maxBackoffMs = Math.max(this.minBackoffMs, opts.maxBackoffMs ?? 5000);
    this._lastSeq = afterSeq;
  }

  /** Seq of the last event delivered. */
  get lastSeq(): number {
    return this._lastSeq;
  }

  /** Number of gap re-reads done (for tests/metrics). */
  get gapReads(): number {
    return this._gapReads;
  }

  /**
   * Starts reading in the background. Resolves once the first JetStream consumer is in place, or
   * after the first attempt failed (it keeps retrying in the background, logging why).
   */
  start(): Promise<void> {
    if (this.started) return Promise.reject(new Error('EventConsumer already started'));
    this.started = true;
    let ready!: () => void;
    const firstAttempt = new Promise<void>((r) => (ready = r));
    this.loop = this.run(ready).finally(ready);
    return firstAttempt;
  }

  /** Stops reading; resolves when no `onEvent` call is running any more. Idempotent. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.batch?.stop();
    this.wake?.();
    await this.loop;
  }

  private async run(ready: () => void): Promise<void> {
    let backoff = this.minBackoffMs;
    while (!this.stopped) {
      if (this.nc.isClosed()) {
        this.logger('event consumer: NATS connection closed; stopping');
        return;
      }
      let consumer: Consumer | undefined;
      const progressFrom = this._lastSeq;
      try {
        const made = await this.rpc.call('eventsConsumer', { afterSeq: this._lastSeq }, EventsConsumerRes, { deadlineMs: 10_000 });
        if (this.stopped) return;
        consumer = await jetstream(this.nc).consumers.get(made.stream, made.consumer);
        this.logger(`event consumer: reading ${made.stream} through ${made.consumer} from stream seq ${made.startStreamSeq} (after event seq ${this._lastSeq})`);
        ready();
        while (!this.stopped) {
          const fetchedAt = Date.now();
          let got = 0;
          const batch = await consumer.fetch({ max_messages: this.batchSize, expires: this.fetchExpiresMs });
          this.batch = batch;
          if (this.stopped) batch.stop();
          for await (const m of batch) {
            if (this.stopped) break;
            got++;
            await this.handle(m);
          }
          this.batch = undefined;
          if (this._lastSeq > progressFrom) backoff = this.minBackoffMs;
          // A fetch normally waits `expires` for messages; never spin if one ends early and empty.
          if (got === 0 && Date.now() - fetchedAt < 100) await this.sleep(this.minBackoffMs);
        }
      } catch (err) {
        ready();
        if (this.stopped) break;
        if (this.onTrimmed && isTrimmed(err)) {
          this.logger(`event consumer: ${(err as Error).message} (after event seq ${this._lastSeq}); starting again from the latest snapshot`);
          try {
            this._lastSeq = await this.onTrimmed();
            backoff = this.minBackoffMs;
            continue;
          } catch (e) {
            this.logger(`event consumer: could not start again from the latest snapshot: ${(e as Error).message}`);
          }
        }
        this.logger(`event consumer: ${(err as Error).message ?? String(err)}; re-subscribing after event seq ${this._lastSeq} in ${backoff} ms`);
      } finally {
        this.batch?.stop();
        this.batch = undefined;
        // The consumer stays: only the controller may delete it (it replaces it on the next request, and the
        // server removes one nobody pulls from).
      }
      if (this._lastSeq > progressFrom) backoff = this.minBackoffMs;
      await this.sleep(backoff);
      backoff = Math.min(backoff * 2, this.maxBackoffMs);
    }
  }

  private async handle(m: JsMsg): Promise<void> {
    let ev: ClusterEvent | undefined;
    try {
      ev = parseEvent(m.json());
    } catch (err) {
      // Unreadable payload: treat the message as missing. If the header says which seq it was,
      // read up to it from etcd now; otherwise the next message reveals the gap.
      const hseq = Number(m.headers?.get(headers.eventSeq));
      this.logger(`event consumer: bad event at stream seq ${m.seq} (Underlay-Seq ${hseq || '?'}): ${(err as Error).message}`);
      if (Number.isInteger(hseq) && hseq > this._lastSeq) await this.readThrough(hseq);
      return;
    }
    if (ev.seq <= this._lastSeq) return;
    if (ev.seq > this._lastSeq + 1) await this.readThrough(ev.seq - 1);
    await this.deliver(ev);
  }

  /** Delivers lastSeq+1 … upTo from the log in etcd, through the controller. */
  private async readThrough(upTo: number): Promise<void> {
    this._gapReads++;
    this.logger(`event consumer: gap after seq ${this._lastSeq}; re-reading ${this._lastSeq + 1}..${upTo} from the controller`);
    while (this._lastSeq < upTo && !this.stopped) {
      const fromSeq = this._lastSeq + 1;
      const limit = Math.min(this.pageSize, upTo - this._lastSeq);
      const res = await this.rpc.call('readEvents', { fromSeq, limit }, ReadEventsRes);
      const events = res.events.map((e) => parseEvent(e));
      let progressed = false;
      for (const ev of events) {
        if (this.stopped) return;
        if (ev.seq <= this._lastSeq) continue;
        if (ev.seq > upTo) break;
        if (ev.seq !== this._lastSeq + 1) throw new Error(`readEvents from ${fromSeq} skipped from seq ${this._lastSeq} to ${ev.seq}`);
        await this.deliver(ev);
        progressed = true;
      }
      if (!progressed) throw new Error(`readEvents from ${fromSeq} returned no event (wanted up to ${upTo})`);
    }
  }

  private async deliver(ev: ClusterEvent): Promise<void> {
    await this.onEvent(ev);
    this._lastSeq = ev.seq;
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    }).finally(() => (this.wake = undefined));
  }
}

/** The controller's answer to a read below the first kept event (EventsTrimmedError, `events-trimmed`). */
function isTrimmed(err: unknown): boolean {
  return err instanceof UnderlayError && err.code === 'events-trimmed';
}

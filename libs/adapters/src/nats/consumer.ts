/**
 * Event delivery, complete in one place: hands its reader every committed event exactly once, in seq order, with no
 * gaps, including the tail (events committed but missing at the end of the stream). The reader (the agent's cluster
 * view) only folds what it is handed.
 *
 * JetStream is the fast path; etcd (through the controller's `readEvents` RPC) is the truth. The consumer keeps
 * `lastSeq`, the seq of the last event handed to `onEvent`, and for every message:
 *  - `seq <= lastSeq`: a duplicate (republish, overlap after a re-subscribe): skipped;
 *  - `seq == lastSeq + 1`: delivered;
 *  - `seq > lastSeq + 1`: a gap (message deleted or never stored): the missing range is re-read
 *    from the controller in pages and delivered first, then this one.
 * It reads through the node's own pull consumer (`agent-<node>`, no acks), which the controller makes on
 * request (`events.consumer`, see node-consumers.ts) starting after `lastSeq`; it fetches in bounded batches
 * so a slow `onEvent` never makes it buffer the whole stream. Whenever anything breaks (stream missing or
 * recreated, consumer deleted, RPC failed, `onEvent` threw) it asks the controller for a new consumer after
 * `lastSeq`, after a backoff (libs/core/src/backoff.ts).
 *
 * The tail. A gap is noticed when a later message arrives; events missing at the very end of the stream have no
 * later message. A second, independent loop (a ReconcileRunner, every `headCheckMs` and right after each
 * (re)subscribe or restart from a snapshot) asks the controller for its head, the last committed seq. When the
 * consumer is behind it at two checks in a row, made no progress in between and is not delivering, the stream
 * has nothing more to give: it reads the rest from the controller, and the fetch loop subscribes again (a pull
 * request the server lost delivers nothing and fails only after two missed heartbeats). This check runs BESIDE the fetch loop, never
 * inside it: awaiting the head RPC on the delivery path (commit 79f2074, reverted in 6807f7d) took bench:routes' 200
 * simulated agents from p99 ~60 ms to 2-3 s. Both loops deliver through one lock, so `onEvent` never runs twice
 * at once and the order holds.
 *
 * Readiness: the first head the controller reports is the start head; `onCaughtUp` runs once every event up to it
 * was delivered (the reader then holds everything committed when it started).
 *
 * Fallen behind the trimmed log (a read below the first kept event): `onTrimmed` restarts the reader from the
 * latest snapshot and returns its seq; the consumer goes on after it and re-subscribes there.
 *
 * One chain (interest-based delivery, `chain` set, libs/core/src/state/chains.ts): the consumer hands its reader every
 * event of that chain once, in order, with no gaps. Seqs of one chain are not consecutive: an event's `prev` says no
 * event of the chain lies between it and `prev`, so a gap is `prev > lastSeq`; reads (`events.read` with the chain)
 * answer how far they looked (`through`), and `lastSeq` means "every event of the chain up to here was delivered". The
 * head asked is the chain's (its last committed event). `natsChainSource` reads a chain through a plain NATS
 * subscription to its subject: no JetStream consumer; what the subscription misses (before it was made, a reconnect,
 * messages dropped) is read from the controller as gaps and tail.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import type { Msg, Subscription } from '@nats-io/transport-node';
import { Backoff, EventsConsumerRes, EventsHeadRes, ReadEventsRes, UnderlayError, chainOfEvent, chainSubject, headers, parseEvent, type ClusterEvent } from '@underlay/core';
import { RpcClient } from './rpc.js';
import { sleep } from '../runtime/retry.js';
import { ReconcileRunner, type PassResult } from '../runtime/reconcile-runner.js';
import { failureLog } from '../runtime/failure-log.js';

/** One stream message, as the consumer reads it (a JetStream `JsMsg` is one). */
export interface StreamMessage {
  /** The stream's own sequence number. */
  readonly seq: number;
  readonly headers?: { get(key: string): string };
  json<T = unknown>(): T;
}

/** The messages of one fetch; `stop()` ends the iteration early. */
export interface StreamBatch extends AsyncIterable<StreamMessage> {
  stop(): void;
}

/** A subscription positioned after an event seq (a JetStream pull consumer is one). */
export interface StreamSubscription {
  fetch(opts: { max_messages: number; expires: number }): Promise<StreamBatch>;
  /** Ends it (a plain NATS subscription; a JetStream consumer stays, only the controller deletes it). */
  close?(): void;
}

/** A read from the controller: the events, and (a chain's read) the seq up to which it holds all of the chain's. */
export type ReadResult = readonly unknown[] | { events: readonly unknown[]; through?: number };

/**
 * Where events come from: the stream (fast path) and the controller's log (truth). `natsEventSource` is the real
 * one; tests hand the consumer an in-memory one.
 */
export interface EventSource {
  /** A subscription to the stream positioned after event seq `afterSeq`, and a line saying what it reads. */
  subscribe(afterSeq: number): Promise<{ subscription: StreamSubscription; describe: string }>;
  /** Committed events from `fromSeq`, at most `limit`, in order (raw: the consumer parses them). */
  read(fromSeq: number, limit: number): Promise<ReadResult>;
  /** The seq of the last committed event. */
  head(): Promise<number>;
  /** True once the source can never deliver again (the connection closed): the consumer stops. */
  isClosed(): boolean;
}

/** The real source: the node's JetStream consumer (made by the controller) and the controller's RPCs. */
export function natsEventSource(nc: NatsConnection, rpc: RpcClient): EventSource {
  return {
    async subscribe(afterSeq) {
      const made = await rpc.call('eventsConsumer', { afterSeq }, EventsConsumerRes, { deadlineMs: 10_000 });
      const subscription = await jetstream(nc).consumers.get(made.stream, made.consumer);
      return { subscription, describe: `${made.stream} through ${made.consumer} from stream seq ${made.startStreamSeq}` };
    },
    async read(fromSeq, limit) {
      return (await rpc.call('readEvents', { fromSeq, limit }, ReadEventsRes)).events;
    },
    async head() {
      return (await rpc.call('eventsHead', {}, EventsHeadRes, { deadlineMs: 5_000 })).seq;
    },
    isClosed: () => nc.isClosed(),
  };
}

/**
 * One chain's events: a plain NATS subscription to the chain's subject (the server sends this node nothing of the
 * chains it does not subscribe to), reads of the chain from the controller, and the chain's head (`heads`, shared by
 * the chains of one reader so that one request asks them all).
 */
export function natsChainSource(nc: NatsConnection, rpc: RpcClient, chain: string, heads: (chain: string) => Promise<number>): EventSource {
  return {
    async subscribe() {
      const subscription = new CoreSubscription(nc, chainSubject(chain));
      // The server has the interest before the reads that may follow.
      await nc.flush();
      return { subscription, describe: `chain ${chain} (subject ${chainSubject(chain)})` };
    },
    async read(fromSeq, limit) {
      const r = await rpc.call('readEvents', { fromSeq, limit, chain }, ReadEventsRes);
      return { events: r.events, ...(r.through !== undefined ? { through: r.through } : {}) };
    },
    head: () => heads(chain),
    isClosed: () => nc.isClosed(),
  };
}

/**
 * The chains' heads asked in one `events.head` request: a call while one is in flight (or within `reuseMs` of its
 * answer) shares it, so a reader of many chains asks once per check. `onHeld` gets each answer's `held` (the chains of
 * the pools where this node holds a block or a reference).
 */
export function chainHeads(rpc: RpcClient, chains: () => Iterable<string>, reuseMs = 250, onHeld?: (held: string[]) => void): (chain: string) => Promise<number> {
  let last: { at: number; asked: Set<string>; answer: Promise<Record<string, number>> } | undefined;
  return async (chain) => {
    if (!last || !last.asked.has(chain) || Date.now() - last.at > reuseMs) {
      const asked = new Set([...chains(), chain]);
      const answer = rpc.call('eventsHead', { chains: [...asked] }, EventsHeadRes, { deadlineMs: 5_000 }).then((r) => {
        if (!r.chains) throw new UnderlayError('unavailable', 'the controller answered no chain heads (it predates interest-based delivery); upgrade the controllers first');
        if (r.held) onHeld?.(r.held);
        return r.chains;
      });
      last = { at: Date.now(), asked, answer };
      answer.then(
        () => last && last.answer === answer && (last.at = Date.now()),
        () => last && last.answer === answer && (last = undefined),
      );
    }
    const heads = await last.answer;
    return heads[chain] ?? 0;
  };
}

/** Messages a chain's subscription holds ahead of the consumer; more are dropped (and read again as a gap). */
const CORE_QUEUE_MAX = 10_000;

/** A plain NATS subscription as the consumer fetches from it. */
class CoreSubscription implements StreamSubscription {
  private readonly queue: Msg[] = [];
  private wake?: () => void;
  dropped = 0;

  private readonly sub: Subscription;
  /** Why the server ended the subscription (e.g. a permissions violation): thrown by the next fetch, so it is logged and made again. */
  private error?: Error;

  /** Subscribes to `subject` (with a callback: no promise per message, as the subscription's iterator makes). */
  constructor(nc: NatsConnection, subject: string) {
    this.sub = nc.subscribe(subject, {
      callback: (err, m) => {
        if (err) this.error = err;
        else if (this.queue.length >= CORE_QUEUE_MAX) this.dropped++;
        else this.queue.push(m);
        this.wake?.();
      },
    });
    void this.sub.closed.then(() => this.wake?.(), () => this.wake?.());
  }

  async fetch(opts: { max_messages: number; expires: number }): Promise<StreamBatch> {
    let stopped = false;
    const self = this;
    const until = Date.now() + opts.expires;
    async function* messages(): AsyncGenerator<StreamMessage> {
      let n = 0;
      while (!stopped && n < opts.max_messages && !self.sub.isClosed()) {
        const m = self.queue.shift();
        if (m) {
          n++;
          // Headers are parsed only when asked (the consumer reads them only for a payload it cannot parse).
          yield { seq: 0, get headers() { return m.headers; }, json: <T>() => m.json<T>() };
          continue;
        }
        const left = until - Date.now();
        if (left <= 0) return;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, left);
          self.wake = () => {
            clearTimeout(t);
            self.wake = undefined;
            resolve();
          };
        });
      }
      if (self.error && self.sub.isClosed() && !stopped) throw self.error;
    }
    const it = messages();
    return {
      [Symbol.asyncIterator]: () => it,
      stop: () => {
        stopped = true;
        this.wake?.();
      },
    };
  }

  close(): void {
    this.sub.unsubscribe();
    this.wake?.();
  }
}

interface DeliveryOptions {
  /** Deliver events with seq > afterSeq (0 = from the beginning). */
  afterSeq?: number;
  /** Deliver only this chain's events (its source reads only them): gaps by `prev`, reads by `through`. */
  chain?: string;
  /**
   * Called for every event exactly once, in seq order, with no gaps. Awaited before the next.
   * If it throws, the event counts as not delivered: the consumer re-subscribes after a backoff
   * and offers the same event again.
   */
  onEvent: (ev: ClusterEvent) => Promise<void> | void;
  /** Runs once, when every event up to the controller's head at start was delivered. */
  onCaughtUp?: () => void;
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
  /**
   * How often the controller's head is asked, to find events missing at the end of the stream (default 2 s; every
   * 100 ms until caught up). 0 turns the tail check off (then such events wait for the next publication, and
   * `onCaughtUp` never runs).
   */
  headCheckMs?: number;
  /** Re-subscribe backoff bounds (default 100 ms … 5 s). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export interface EventConsumerOptions extends DeliveryOptions {
  nc: NatsConnection;
  /** The node's client: asks the controller for the node's consumer, re-reads gaps and the tail, reads the head. */
  rpc: RpcClient;
}

/** Options with any source of events instead of NATS (tests). */
export interface EventSourceConsumerOptions extends DeliveryOptions {
  source: EventSource;
}

/** Head checks before the consumer caught up come this often (ms). */
const CATCH_UP_CHECK_MS = 100;

export class EventConsumer {
  private readonly source: EventSource;
  private readonly followed?: string;
  private readonly onEvent: (ev: ClusterEvent) => Promise<void> | void;
  private readonly onCaughtUp?: () => void;
  private readonly onTrimmed?: () => Promise<number>;
  private readonly logger: (m: string) => void;
  private readonly pageSize: number;
  private readonly batchSize: number;
  private readonly fetchExpiresMs: number;
  private readonly minBackoffMs: number;
  private readonly backoff: Backoff;
  private readonly tail?: ReconcileRunner;

  private _lastSeq: number;
  private _gapReads = 0;
  private _tailReads = 0;
  private started = false;
  private stopped = false;
  private readonly abort = new AbortController();
  private loop?: Promise<void>;
  private batch?: StreamBatch;
  /** Set by the tail loop (after a tail read or a restart from a snapshot): the fetch loop re-subscribes after lastSeq. */
  private resubscribe = false;
  /** The delivery lock: every delivery (stream, gap, tail, restart) runs after the previous one ended. */
  private chain: Promise<unknown> = Promise.resolve();
  private holders = 0;
  /** The controller's head when the consumer started (undefined until it answered). */
  private startHead?: number;
  /** The highest head the controller reported (metrics: the view's lag). */
  private _knownHead = 0;
  private _caughtUp = false;
  /** lastSeq when a head check first found it behind (undefined when it was not), and when that was. */
  private behindAt?: number;
  private behindSince = 0;

  constructor(opts: EventConsumerOptions | EventSourceConsumerOptions) {
    const afterSeq = opts.afterSeq ?? 0;
    if (!Number.isInteger(afterSeq) || afterSeq < 0) throw new RangeError(`afterSeq must be a non-negative integer, not ${afterSeq}`);
    this.source = 'source' in opts ? opts.source : natsEventSource(opts.nc, opts.rpc);
    this.followed = opts.chain;
    this.onEvent = opts.onEvent;
    this.onCaughtUp = opts.onCaughtUp;
    this.onTrimmed = opts.onTrimmed;
    this.logger = opts.logger ?? (() => {});
    this.pageSize = Math.min(Math.max(1, Math.floor(opts.pageSize ?? 1000)), 10_000);
    this.batchSize = Math.max(1, Math.floor(opts.batchSize ?? 256));
    this.fetchExpiresMs = Math.max(1000, opts.fetchExpiresMs ?? 10_000);
    this.minBackoffMs = Math.max(1, opts.minBackoffMs ?? 100);
    const backoff = { minMs: this.minBackoffMs, maxMs: Math.max(this.minBackoffMs, opts.maxBackoffMs ?? 5000) };
    this.backoff = new Backoff(backoff);
    const headCheckMs = opts.headCheckMs ?? 2_000;
    if (headCheckMs > 0) {
      const failures = failureLog(this.logger, "event consumer: tail check (the controller's head, events missing at the end of the stream)");
      this.tail = new ReconcileRunner({
        name: 'event consumer tail',
        reconcile: (pass) => this.checkTail(pass.signal),
        resyncMs: Math.max(CATCH_UP_CHECK_MS, headCheckMs),
        backoff: { minMs: Math.min(500, backoff.maxMs), maxMs: Math.max(500, headCheckMs) },
        onError: (err) => failures.failed(err),
        onRecovered: () => failures.recovered(),
      });
    }
    this._lastSeq = afterSeq;
  }

  /** Seq of the last event delivered. */
  /** The controller's head as last known: the highest it reported, or the last seq delivered if later. */
  get knownHead(): number {
    return Math.max(this._knownHead, this._lastSeq);
  }

  get lastSeq(): number {
    return this._lastSeq;
  }

  /** Number of gap re-reads done (for tests/metrics). */
  get gapReads(): number {
    return this._gapReads;
  }

  /** Number of tail reads done: events missing at the end of the stream, read from the controller. */
  get tailReads(): number {
    return this._tailReads;
  }

  /** Whether every event up to the controller's head at start was delivered. */
  get caughtUp(): boolean {
    return this._caughtUp;
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
    // The head is first asked once the first subscription is in place (or failed), like the reads it may lead to.
    void firstAttempt.then(() => this.tail?.start());
    return firstAttempt;
  }

  /** Stops reading; resolves when no `onEvent` call is running any more. Idempotent. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    this.batch?.stop();
    await this.tail?.stop();
    await this.loop;
    await this.chain;
  }

  /** Runs `fn` once every delivery before it ended: one delivery at a time, in the order asked. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.holders++;
    const run = this.chain.then(fn).finally(() => this.holders--);
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** The fetch loop: subscribe after lastSeq, fetch, deliver; on any failure re-subscribe after a backoff. */
  private async run(ready: () => void): Promise<void> {
    while (!this.stopped) {
      if (this.source.isClosed()) {
        this.logger('event consumer: NATS connection closed; stopping');
        return;
      }
      const progressFrom = this._lastSeq;
      let failure: unknown;
      let subscription: StreamSubscription | undefined;
      try {
        this.resubscribe = false;
        const made = await this.source.subscribe(this._lastSeq);
        subscription = made.subscription;
        const describe = made.describe;
        if (this.stopped) return;
        this.logger(`event consumer: reading ${describe} (after event seq ${this._lastSeq})`);
        ready();
        // What the stream lacks at its end is read beside this loop, right after each (re)subscribe.
        this.tail?.trigger();
        while (!this.stopped && !this.resubscribe) {
          const fetchedAt = Date.now();
          let got = 0;
          const batch = await subscription.fetch({ max_messages: this.batchSize, expires: this.fetchExpiresMs });
          this.batch = batch;
          if (this.stopped || this.resubscribe) batch.stop();
          for await (const m of batch) {
            if (this.stopped || this.resubscribe) break;
            got++;
            await this.exclusive(() => this.handle(m));
          }
          this.batch = undefined;
          if (this._lastSeq > progressFrom) this.backoff.reset();
          // A fetch normally waits `expires` for messages; never spin if one ends early and empty.
          if (got === 0 && Date.now() - fetchedAt < 100) await sleep(this.minBackoffMs, this.abort.signal);
        }
        if (this.resubscribe && !this.stopped) this.backoff.reset();
      } catch (err) {
        const at = this._lastSeq;
        ready();
        if (this.stopped) break;
        if (isTrimmed(err) && (await this.exclusive(() => this.restart(at, err)))) continue;
        failure = err;
      } finally {
        this.batch?.stop();
        this.batch = undefined;
        subscription?.close?.();
        // The consumer stays: only the controller may delete it (it replaces it on the next request, and the
        // server removes one nobody pulls from).
      }
      if (this.stopped || this.resubscribe) continue;
      if (this._lastSeq > progressFrom) this.backoff.reset();
      const delay = this.backoff.next();
      if (failure !== undefined) this.logger(`event consumer: ${(failure as Error)?.message ?? String(failure)}; re-subscribing after event seq ${this._lastSeq} in ${delay} ms`);
      await sleep(delay, this.abort.signal);
    }
  }

  private async handle(m: StreamMessage): Promise<void> {
    if (this.stopped) return;
    let ev: ClusterEvent | undefined;
    try {
      ev = parseEvent(m.json());
    } catch (err) {
      // Unreadable payload: treat the message as missing. If the header says which seq it was,
      // read up to it from etcd now; otherwise the next message reveals the gap.
      const hseq = Number(m.headers?.get(headers.eventSeq));
      this.logger(`event consumer: bad event at stream seq ${m.seq} (Underlay-Seq ${hseq || '?'}): ${(err as Error).message}`);
      if (Number.isInteger(hseq) && hseq > this._lastSeq) await this.readThrough(hseq, 'gap');
      return;
    }
    if (ev.seq <= this._lastSeq) return;
    if (this.followed === undefined) {
      if (ev.seq > this._lastSeq + 1) await this.readThrough(ev.seq - 1, 'gap');
    } else {
      if (chainOfEvent(ev) !== this.followed) return;
      // No prev (an event recorded before chains): anything may lie between, read it.
      if ((ev.prev ?? ev.seq - 1) > this._lastSeq) await this.readThrough(ev.seq - 1, 'gap');
    }
    await this.deliver(ev);
  }

  /**
   * One head check (a pass of the tail runner, never on the fetch loop's path). Learns the start head, and reads
   * the tail when the consumer is behind the head at two checks in a row, made no progress in between and is not
   * delivering: the stream has nothing more to give.
   */
  private async checkTail(signal: AbortSignal): Promise<PassResult | void> {
    if (this.stopped) return;
    // stop() does not wait for a controller that does not answer.
    const head = await unlessAborted(this.source.head(), signal);
    if (head === undefined || this.stopped) return;
    this._knownHead = Math.max(this._knownHead, head);
    if (this.startHead === undefined) {
      this.startHead = head;
      this.noteCaughtUp();
    }
    // Quiet: no progress since an earlier check (at least CATCH_UP_CHECK_MS ago) and no delivery running or waiting.
    const quiet = this.behindAt === this._lastSeq && Date.now() - this.behindSince >= CATCH_UP_CHECK_MS && this.holders === 0;
    if (this._lastSeq < head && quiet && !this.stopped) {
      const from = this._lastSeq;
      try {
        await this.exclusive(() => this.readThrough(head, 'tail'));
      } catch (err) {
        if (!isTrimmed(err) || !(await this.exclusive(() => this.restart(from, err)))) throw err;
      }
      // Restarted from a snapshot, or the stream stayed silent while the controller had events: either way the
      // subscription is suspect (a pull request the server lost is only noticed after two missed heartbeats, 2 x
      // fetchExpiresMs / 2), so the fetch loop subscribes again after lastSeq now.
      this.resubscribe = true;
      this.batch?.stop();
    }
    if (this._lastSeq >= head) this.behindAt = undefined;
    else if (this.behindAt !== this._lastSeq) {
      this.behindAt = this._lastSeq;
      this.behindSince = Date.now();
    }
    if (!this._caughtUp) return { requeueAfterMs: CATCH_UP_CHECK_MS };
  }

  /**
   * Fallen behind the trimmed log at `from`: start again from the latest snapshot (once per fall: when the other
   * loop already did, or delivered past it, nothing to do). Returns whether the consumer now stands after a snapshot.
   */
  private async restart(from: number, err: unknown): Promise<boolean> {
    if (!this.onTrimmed || this.stopped) return false;
    if (this._lastSeq !== from) return true;
    this.logger(`event consumer: ${(err as Error).message} (after event seq ${this._lastSeq}); starting again from the latest snapshot`);
    try {
      this._lastSeq = await this.onTrimmed();
    } catch (e) {
      this.logger(`event consumer: could not start again from the latest snapshot: ${(e as Error).message}`);
      return false;
    }
    this.backoff.reset();
    this.behindAt = undefined;
    this.noteCaughtUp();
    this.tail?.trigger();
    return true;
  }

  /** Delivers lastSeq+1 … upTo from the log in etcd, through the controller. */
  private async readThrough(upTo: number, why: 'gap' | 'tail'): Promise<void> {
    if (this._lastSeq >= upTo || this.stopped) return;
    if (why === 'gap') this._gapReads++;
    else this._tailReads++;
    const of = this.followed === undefined ? '' : ` of chain ${this.followed}`;
    this.logger(
      why === 'gap'
        ? `event consumer: gap${of} after seq ${this._lastSeq}; re-reading ${this._lastSeq + 1}..${upTo} from the controller`
        : `event consumer: the stream${of} ends at seq ${this._lastSeq}, the controller's head is ${upTo}; reading the rest from the controller`,
    );
    while (this._lastSeq < upTo && !this.stopped) {
      const fromSeq = this._lastSeq + 1;
      const limit = Math.min(this.pageSize, upTo - this._lastSeq);
      const read = await this.source.read(fromSeq, this.followed === undefined ? limit : this.pageSize);
      const events = (Array.isArray(read) ? read : (read as { events: readonly unknown[] }).events).map((e) => parseEvent(e));
      const through = Array.isArray(read) ? undefined : (read as { through?: number }).through;
      let progressed = false;
      for (const ev of events) {
        if (this.stopped) return;
        if (ev.seq <= this._lastSeq) continue;
        if (ev.seq > upTo) break;
        if (this.followed !== undefined) {
          if (chainOfEvent(ev) !== this.followed) continue;
        } else if (ev.seq !== this._lastSeq + 1) throw new Error(`readEvents from ${fromSeq} skipped from seq ${this._lastSeq} to ${ev.seq}`);
        await this.deliver(ev);
        progressed = true;
      }
      // A chain's read holds every event of the chain up to `through`: the consumer stands there.
      if (this.followed !== undefined && through !== undefined && Math.min(through, upTo) > this._lastSeq) {
        this._lastSeq = Math.min(through, upTo);
        this.noteCaughtUp();
        progressed = true;
      }
      if (!progressed) throw new Error(`readEvents from ${fromSeq} returned no event (wanted up to ${upTo})`);
    }
  }

  private async deliver(ev: ClusterEvent): Promise<void> {
    await this.onEvent(ev);
    this._lastSeq = ev.seq;
    this.noteCaughtUp();
  }

  private noteCaughtUp(): void {
    if (this._caughtUp || this.startHead === undefined || this._lastSeq < this.startHead) return;
    this._caughtUp = true;
    try {
      this.onCaughtUp?.();
    } catch (e) {
      this.logger(`event consumer: onCaughtUp failed: ${(e as Error).message}`);
    }
  }
}

/** `p`'s value, or undefined as soon as `signal` aborts. */
function unlessAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise<T | undefined>((resolve, reject) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** The controller's answer to a read below the first kept event (EventsTrimmedError, `events-trimmed`). */
function isTrimmed(err: unknown): boolean {
  return err instanceof UnderlayError && err.code === 'events-trimmed';
}

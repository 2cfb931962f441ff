/**
 * Publishes committed events to JetStream in order. On start, and after any failure, it catches up
 * from the log in etcd starting after the last event the stream holds, so every event reaches the
 * stream exactly once per message id even if the controller died between commit and publish.
 *
 * The stream itself may go: an operator deletes it (or purges it). A publish then fails (no stream
 * answers), and a periodic check notices it even when nothing is published. Either way the catch-up
 * recreates the stream with its limits and republishes what it should hold: the events after the last
 * one it still has or, for an empty stream, the events since the latest snapshot, at most a bounded
 * tail (readers find anything older in etcd through the controller). Agents' consumers, deleted with the
 * stream, are made again by the controller when their agents ask.
 *
 * Retrying a failed catch-up and the periodic check are one level-triggered loop on the shared ReconcileRunner: a
 * pass catches up while publishing is broken (a failure backs off, 500 ms … 2 s) and checks the stream at each
 * resync.
 */
import { EVENTS_STREAM, type BackoffPolicy, type ClusterEvent } from '@underlay/core';
import { ReconcileRunner, SpanKind, activeSpanContext, attr, traceContext, withSpan, type EtcdEventLog, type EventPublisher, type Pass, type SpanContext, logWarn } from '@underlay/adapters';

export interface OrderedPublisherOptions {
  /** The seq of the latest snapshot in etcd (undefined: none); an empty stream is refilled from after it. */
  snapshotSeq?: () => Promise<number | undefined>;
  /** At most this many events are republished into an empty stream (default 10,000). */
  refillTail?: number;
  /** How often the stream is checked while this controller publishes (default 2 s; 0: never). */
  checkIntervalMs?: number;
  /** Whether this controller publishes now (the leader); the periodic check does nothing otherwise. */
  active?: () => boolean;
}

export const DEFAULT_REFILL_TAIL = 10_000;
/** Between catch-ups while publishing fails. */
const CATCH_UP_BACKOFF: BackoffPolicy = { minMs: 500, maxMs: 2_000 };

export class OrderedPublisher {
  private chain: Promise<void> = Promise.resolve();
  private publishedSeq = 0;
  private broken = false;
  private stopped = false;
  private checking = false;
  private readonly runner: ReconcileRunner;
  /** Last seq handed to JetStream (metrics). */
  get published(): number {
    return this.publishedSeq;
  }
  /** Times the stream was found missing and created again (for logs and tests). */
  recreated = 0;

  constructor(
    private readonly pub: EventPublisher,
    private readonly log: EtcdEventLog,
    private readonly logger: (m: string) => void = () => {},
    private readonly opts: OrderedPublisherOptions = {},
  ) {
    const every = opts.checkIntervalMs ?? 2_000;
    this.runner = new ReconcileRunner({
      name: 'publisher',
      resyncMs: every > 0 ? every : undefined,
      backoff: CATCH_UP_BACKOFF,
      reconcile: (pass) => this.pass(pass),
      // fail() logged the first failure; the runner retries with backoff.
    });
    this.runner.start();
  }

  /** Catches up while broken (throws when that fails: the runner retries), else checks the stream at a resync. */
  private async pass(p: Pass): Promise<void> {
    if (this.stopped) return;
    if (this.broken) await this.catchUp();
    else if (p.reasons.has('resync')) await this.checkStream();
  }

  /** Republishes whatever the stream lacks (recreating it when it is gone). Resolves or rejects with this attempt; retries by itself. */
  catchUp(): Promise<void> {
    const run = this.chain.then(async () => {
      this.pub.resetPosition();
      const made = await this.pub.ensureStream();
      if (made === 'created') {
        this.recreated++;
        this.logger(`the JetStream event stream was missing: created it again`);
      } else if (made === 'updated') {
        this.logger(`the JetStream event stream's limits were updated`);
      }
      const last = await this.pub.lastPublishedSeq();
      const from = last > 0 ? last + 1 : await this.refillStart();
      if (last === 0 && from > 1) this.logger(`the event stream is empty: republishing from event ${from} (earlier events are read from etcd)`);
      this.publishedSeq = from - 1;
      for await (const page of this.log.read(from, 1000)) {
        for (let i = 0; i < page.length; i += 100) {
          const part = page.slice(i, i + 100);
          await this.pub.publish(part);
          this.publishedSeq = part[part.length - 1]!.seq;
        }
      }
      if (this.broken) this.logger(`publishing events to JetStream again: the stream holds every event up to ${this.publishedSeq}`);
      this.broken = false;
    });
    this.chain = run.catch((err) => this.fail(err));
    return run;
  }

  /** Where an empty stream starts: after the latest snapshot, and no more than the tail before the head. */
  private async refillStart(): Promise<number> {
    const head = await this.log.head();
    const snap = (await this.opts.snapshotSeq?.().catch(() => undefined)) ?? 0;
    const tail = Math.max(1, this.opts.refillTail ?? DEFAULT_REFILL_TAIL);
    return Math.max(1, snap + 1, head - tail + 1);
  }

  /** The periodic check: a missing stream (or other limits) starts a catch-up, which recreates it. */
  async checkStream(): Promise<void> {
    if (this.stopped || this.checking || this.broken || !(this.opts.active?.() ?? true)) return;
    this.checking = true;
    try {
      if (!(await this.pub.streamInPlace())) {
        this.logger('the JetStream event stream is missing or has other limits: recreating it');
        await this.catchUp().catch(() => {});
      }
    } catch (e) {
      logWarn(this.logger, `could not check the JetStream event stream: ${(e as Error).message}`);
    } finally {
      this.checking = false;
    }
  }

  enqueue(events: ClusterEvent[], encoded?: string[], commitSpan?: SpanContext): void {
    // Tracing on: the publish span is a child of the commit that hands these events over.
    const parent = commitSpan ?? activeSpanContext();
    this.chain = this.chain
      .then(async () => {
        // While broken, the pending catch-up reads these from etcd.
        if (this.broken) return;
        const skip = events.findIndex((e) => e.seq > this.publishedSeq);
        if (skip < 0) return;
        const fresh = events.slice(skip);
        await withSpan(
          'publish',
          { kind: SpanKind.PRODUCER, parent: traceContext(parent), attributes: { [attr.messagingSystem]: 'nats', [attr.destination]: EVENTS_STREAM, 'messaging.batch.message_count': fresh.length, [attr.seq]: fresh[fresh.length - 1]!.seq } },
          () => this.pub.publish(fresh, encoded?.slice(skip)),
        );
        this.publishedSeq = fresh[fresh.length - 1]!.seq;
      })
      .catch((err) => this.fail(err));
  }

  private fail(err: unknown): void {
    if (this.stopped) return;
    const first = !this.broken;
    this.broken = true;
    if (first) logWarn(this.logger, `publishing events to JetStream failed (${(err as Error).message}); catching up from etcd`);
    this.runner.trigger();
  }

  stop(): void {
    this.stopped = true;
    void this.runner.stop();
  }

  /** Resolves when everything enqueued so far has been published (or has failed). */
  flush(): Promise<void> {
    return this.chain;
  }
}

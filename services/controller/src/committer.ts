/**
 * Group commit. Requests decided back to back queue their events here; one etcd transaction takes
 * as many as fit (etcd allows 128 operations per transaction: up to 127 events plus the head), so
 * throughput grows with concurrency while every reply still waits for a durable commit.
 * One transaction is in flight at a time; a failed one fails everything queued behind it, because
 * their sequence numbers assumed it would succeed. After a failure (etcd's deadline, a conflict, a lost fence)
 * this committer commits nothing more: the state it was fed holds decisions that may not be in etcd. Later
 * commits are refused at once with a clear `unavailable` error (and ask for a reload again if the last one
 * ended) until the owner has reloaded the state from etcd and made a new committer.
 */
import { UnavailableError, type ClusterEvent } from '@underlay/core';
import { MAX_TXN_BYTES, MAX_TXN_OPS, activeSpanContext, attr, runInSpan, secondsSince, traceContext, tracingOn, withSpan, type EtcdEventLog, type Fence, type SpanContext } from '@underlay/adapters';

interface Pending {
  events: ClusterEvent[];
  /** Each event serialised once, for etcd and for JetStream. */
  encoded: string[];
  bytes: number;
  resolve: () => void;
  reject: (e: unknown) => void;
  /** The request's span (tracing on): the commit span links it. */
  span?: SpanContext;
}

export interface CommitterHooks {
  /** Called after each successful transaction, in order, with each event's JSON. */
  /** `commitSpan`: tracing on, the span of the transaction (the publish span's parent). */
  onCommitted(events: ClusterEvent[], encoded: string[], commitSpan?: SpanContext): void;
  /**
   * Called when a transaction fails (and again for a refused commit once the reload it returned has ended); the
   * caller must rebuild its state before deciding again.
   */
  onFailed(err: unknown): void | Promise<unknown>;
  /** Told of each etcd transaction when it ends: its events, its duration and whether it committed (metrics). */
  onTransaction?(events: number, seconds: number, ok: boolean): void;
}

export class GroupCommitter {
  private queue: Pending[] = [];
  private waiters: { seq: number; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private running = false;
  /** The failure that stopped this committer, if one did. */
  private failure?: unknown;
  private reloading?: Promise<unknown>;
  /** The last commit's span (tracing on). */
  private commitSpan?: SpanContext;
  /** Batches committed, for benchmarks and tests. */
  transactions = 0;

  constructor(
    private readonly log: EtcdEventLog,
    /** Last seq known to be in etcd. */
    public committedSeq: number,
    private readonly hooks: CommitterHooks,
    private readonly fence: () => Fence | undefined = () => undefined,
    private readonly maxEvents = MAX_TXN_OPS - 1,
  ) {}

  /** Resolves once the events are durable in etcd. `encoded`: their JSON, when the caller has it already. */
  commit(events: ClusterEvent[], encoded: string[] = events.map((e) => JSON.stringify(e)), span?: SpanContext): Promise<void> {
    if (events.length === 0) return this.waitFor(0);
    if (this.failure !== undefined) return Promise.reject(this.refusal());
    return new Promise((resolve, reject) => {
      const bytes = encoded.reduce((n, j) => n + j.length + 64, 0);
      this.queue.push({ events, encoded, bytes, resolve, reject, span: span ?? activeSpanContext() });
      if (!this.running) void this.loop();
    });
  }

  /** Resolves once everything up to `seq` is durable (for answers that depend on events still in flight). */
  waitFor(seq: number): Promise<void> {
    if (seq <= this.committedSeq) return Promise.resolve();
    if (this.failure !== undefined) return Promise.reject(this.refusal());
    return new Promise((resolve, reject) => this.waiters.push({ seq, resolve, reject }));
  }

  private refusal(): UnavailableError {
    if (!this.reloading) this.askReload(this.failure);
    const why = this.failure instanceof Error ? this.failure.message : String(this.failure);
    return new UnavailableError(`not committed: an earlier commit failed (${why}); the controller is reloading its state from etcd`);
  }

  private askReload(err: unknown): void {
    let asked: unknown;
    try {
      asked = this.hooks.onFailed(err); // synchronously: the owner closes its gate before anyone decides again
    } catch {
      asked = undefined;
    }
    const done = Promise.resolve(asked)
      .catch(() => undefined)
      .finally(() => {
        if (this.reloading === done) this.reloading = undefined;
      });
    this.reloading = done;
  }

  /**
   * One etcd transaction; with tracing on, in a `commit` span: a child of the first request it carries (so a lone
   * request's trace holds its commit), linked to every request it carries.
   */
  private append(batch: Pending[], events: ClusterEvent[], encoded: string[]): Promise<void> {
    if (!tracingOn()) return this.log.append(events, this.committedSeq, this.fence(), encoded);
    const spans = batch.flatMap((p) => (p.span ? [p.span] : []));
    return withSpan(
      'commit',
      {
        parent: traceContext(spans[0]),
        links: spans.map((context) => ({ context })),
        attributes: { [attr.seq]: events[events.length - 1]!.seq, 'underlay.events': events.length, 'underlay.requests': batch.length, 'db.system.name': 'etcd' },
      },
      (span) => {
        this.commitSpan = span.spanContext();
        return this.log.append(events, this.committedSeq, this.fence(), encoded);
      },
    );
  }

  private async loop(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const batch: Pending[] = [];
        let n = 0;
        let bytes = 0;
        while (this.queue.length > 0) {
          const next = this.queue[0]!;
          if (batch.length > 0 && (n + next.events.length > this.maxEvents || bytes + next.bytes > MAX_TXN_BYTES)) break;
          batch.push(this.queue.shift()!);
          n += next.events.length;
          bytes += next.bytes;
        }
        const events = batch.flatMap((p) => p.events);
        const encoded = batch.flatMap((p) => p.encoded);
        const started = process.hrtime.bigint();
        try {
          await this.append(batch, events, encoded);
        } catch (err) {
          this.hooks.onTransaction?.(events.length, secondsSince(started), false);
          const failed = [...batch, ...this.queue];
          this.queue = [];
          const waiters = this.waiters;
          this.waiters = [];
          this.failure = err;
          this.askReload(err);
          for (const p of failed) p.reject(err);
          for (const w of waiters) w.reject(err);
          continue;
        }
        this.hooks.onTransaction?.(events.length, secondsSince(started), true);
        this.transactions++;
        this.committedSeq = events[events.length - 1]!.seq;
        // The publish that follows is a child of this commit (tracing on).
        runInSpan(this.commitSpan, () => this.hooks.onCommitted(events, encoded, this.commitSpan));
        for (const p of batch) p.resolve();
        this.waiters = this.waiters.filter((w) => {
          if (w.seq > this.committedSeq) return true;
          w.resolve();
          return false;
        });
      }
    } finally {
      this.running = false;
    }
  }
}

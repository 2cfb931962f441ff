/**
 * The controller's one write path, where events are appended to the cluster's log: decide → commit → publish.
 * A decision runs against the in-memory cluster state (the fold of the log) and is applied at once (so the
 * next decision sees it); its events are queued for group commit in etcd (committer.ts); once they are
 * durable the caller is answered and `onCommitted` hands them on (the publisher puts them on the stream,
 * the snapshotter folds them). If a commit fails, the state is rebuilt from etcd before anything else is
 * decided. What is decided lives in the request modules (ipam-requests.ts, network-records.ts,
 * node-registration.ts, the collector); this module only runs decisions and writes their events.
 */
import { ClusterEngine, FoldError, buildHandleIndexes, fold, UnderlayError, type ClusterEvent, type ClusterState, type Decision } from '@underlay/core';
import { EventsTrimmedError, attr, currentOperation, traceContext, tracingOn, withSpanSync, type EtcdEventLog, type Fence, type SpanContext } from '@underlay/adapters';
import { GroupCommitter } from './committer.js';

/** Decisions per turn of the event loop. */
const ADMIT_SLICE = 128;

export interface RequestContext {
  actor: string;
  traceId?: string;
  /**
   * Tracing on: the span serving the request (an RPC's `process` span, an API request's SERVER span) and its
   * operation. The controller passes them explicitly rather than through an async context (it runs without
   * one: see "Traces" in docs/ARCHITECTURE.md), so the `decide` span is its child and the commit links it.
   */
  span?: SpanContext;
  operation?: string;
}

export interface ClusterWriterOptions {
  log: EtcdEventLog;
  /** Called after each full load from etcd, with the state (equal to the committed log). */
  onLoaded?: (state: ClusterState) => void;
  /** Loads the starting state: the latest snapshot folded forward with the log (default: the whole log). */
  loadState?: () => Promise<ClusterState>;
  onCommitted?: (events: ClusterEvent[], encoded: string[], commitSpan?: SpanContext) => void;
  /** Each etcd transaction of the group committer: events, seconds, committed or not (metrics). */
  onTransaction?: (events: number, seconds: number, ok: boolean) => void;
  fence?: () => Fence | undefined;
  logger?: (msg: string) => void;
  /** The longest event (JSON bytes) every reader can take in one NATS message; longer ones are refused. */
  maxEventBytes?: () => number;
}

export class ClusterWriter {
  readonly engine = new ClusterEngine();
  private committer!: GroupCommitter;
  private gate: Promise<void> = Promise.resolve();

  constructor(private readonly opts: ClusterWriterOptions) {}

  /** True while the state in memory is exactly a prefix of the log (nothing decided that might not be committed). */
  private clean = false;

  /** Rebuilds the state from etcd (the latest snapshot and the log after it). */
  async load(): Promise<void> {
    this.clean = false;
    const state = this.opts.loadState ? await this.opts.loadState() : fold(await this.opts.log.readAll());
    this.setState(state);
    this.clean = true;
    this.indexHandles(state);
    this.opts.onLoaded?.(state);
  }

  private indexing = 0;

  /**
   * Builds the loaded state's handle indexes (core's HandleIndex: a restored state has none) a slice at a time,
   * yielding to the event loop: at 1M allocations building one at once blocks for ~1 s. A request that needs one
   * before then builds that pool's at once.
   */
  private indexHandles(state: ClusterState): void {
    const generation = ++this.indexing;
    const steps = buildHandleIndexes(state);
    void (async () => {
      while (!steps.next().done) {
        await new Promise((r) => setImmediate(r));
        if (generation !== this.indexing || this.engine.state !== state) return;
      }
    })();
  }

  /**
   * Brings a clean state up to the head of the log by folding only the new events (a hot standby
   * calls this continuously, and once more when elected); a state that may hold uncommitted
   * decisions is rebuilt instead.
   */
  async refresh(): Promise<void> {
    if (!this.clean || !this.committer) return this.load();
    const before = this.engine.state.seq;
    let state = this.engine.state;
    try {
      for await (const page of this.opts.log.read(state.seq + 1)) state = fold(page, state);
    } catch (e) {
      // Fell behind the trimmed log (a standby cut off for long): start again from the latest snapshot.
      if (e instanceof EventsTrimmedError) return this.load();
      throw e;
    }
    // A standby calls this every 250 ms: keep the committer unless the log moved.
    if (state.seq !== before) this.setState(state);
  }

  private setState(state: ClusterState): void {
    this.engine.state = state;
    this.committer = new GroupCommitter(
      this.opts.log,
      state.seq,
      {
        onCommitted: (evs, encoded, commitSpan) => this.opts.onCommitted?.(evs, encoded, commitSpan),
        onTransaction: (n, s, ok) => this.opts.onTransaction?.(n, s, ok),
        onFailed: (err) => {
          this.opts.logger?.(`commit failed, reloading state from etcd: ${(err as Error).message}`);
          return this.reload().catch((e) => this.opts.logger?.(`reload failed: ${(e as Error).message}`));
        },
      },
      this.opts.fence,
    );
  }

  /** Reloads asked for and not yet done: nothing is decided while there is one (see `opened`). */
  private reloads = 0;

  /**
   * Rebuilds state from etcd; requests wait for it. From the call on nothing is decided on the old state, and the
   * load waits until what was decided before is committed or has failed: a load that read etcd while a decision's
   * commit was in flight gave a state without it, though the commit landed and its request was answered (a state
   * missing a committed allocation until the next failed commit; e2e two-hosts saw one).
   */
  reload(): Promise<void> {
    this.reloads++;
    const committer = this.committer;
    const decided = this.engine.state.seq;
    const next = this.gate.then(async () => {
      await committer.waitFor(decided).catch(() => undefined);
      await this.load();
    });
    this.gate = next.then(
      () => {},
      () => {},
    ).finally(() => {
      this.reloads--;
    });
    return next;
  }

  /** Resolves when no reload is pending (a request that passed an older gate waits for a reload asked since). */
  private async opened(): Promise<void> {
    do await this.gate;
    while (this.reloads > 0);
  }

  get state(): ClusterState {
    return this.engine.state;
  }

  get transactions(): number {
    return this.committer.transactions;
  }

  /** Last committed seq (events up to here are durable). */
  get committedSeq(): number {
    return this.committer.committedSeq;
  }

  /** Resolves once everything decided so far is durable. */
  settled(): Promise<void> {
    return this.committer.waitFor(this.engine.state.seq);
  }

  /**
   * Runs a decision for its refusal only (a dry run): after any reload and once everything decided so far is
   * durable, so the answer rests on committed state. Nothing is applied or committed.
   */
  async check(decide: (s: ClusterState) => unknown): Promise<void> {
    await this.opened();
    await this.settled();
    decide(this.state);
  }

  /**
   * Admission: decisions run at most ADMIT_SLICE per turn of the event loop, so a burst of requests
   * cannot starve the leader's lease keepalive or etcd's replies.
   */
  private admitted: (() => void)[] = [];
  private admitting = false;
  private admit(): Promise<void> {
    return new Promise((resolve) => {
      this.admitted.push(resolve);
      if (!this.admitting) void this.drainAdmissions();
    });
  }
  private async drainAdmissions(): Promise<void> {
    this.admitting = true;
    try {
      while (this.admitted.length > 0) {
        for (const go of this.admitted.splice(0, ADMIT_SLICE)) go();
        await new Promise((r) => setImmediate(r));
      }
    } finally {
      this.admitting = false;
    }
  }

  /** One decision, applied to the state; with tracing on, in a `decide <operation>` span. */
  private execute<R>(decide: (s: ClusterState) => Decision<R>, ctx: RequestContext, maxEventBytes: number): { events: ClusterEvent[]; encoded: string[]; result: R } {
    if (!tracingOn()) return this.engine.execute(decide, ctx, maxEventBytes);
    const parent = ctx.span ? traceContext(ctx.span) : undefined;
    return withSpanSync(`decide ${ctx.operation ?? currentOperation() ?? 'request'}`, parent ? { parent } : {}, (span) => {
      const d = this.engine.execute(decide, ctx, maxEventBytes);
      span.setAttributes({ [attr.seq]: this.engine.state.seq, 'underlay.events': d.events.length });
      return d;
    });
  }

  /**
   * Decides with the current state and commits: every write goes through here. Answers once the events (or,
   * with none, those the answer rests on) are durable.
   */
  async run<R>(decide: (s: ClusterState) => Decision<R>, ctx: RequestContext): Promise<R> {
    await this.admit();
    await this.opened();
    let decided: { events: ClusterEvent[]; encoded: string[]; result: R };
    const maxEventBytes = this.opts.maxEventBytes?.() ?? Infinity;
    try {
      decided = this.execute(decide, ctx, maxEventBytes);
    } catch (err) {
      // A refusal must rest on current state: if another writer moved the log, reload and decide again. (An event
      // that does not fold is no refusal: it goes up as it is.) What this writer decided is made durable first, so
      // that its own commits in flight are not taken for another writer's (the log's head passes the committed seq
      // while a commit's answer is on its way).
      if (!(err instanceof UnderlayError) || err instanceof FoldError) throw err;
      await this.settled().catch(() => undefined);
      if ((await this.opts.log.head()) <= this.committer.committedSeq) throw err;
      await this.reload();
      await this.opened();
      decided = this.execute(decide, ctx, maxEventBytes);
    }
    const { events, encoded, result } = decided;
    if (events.length > 0) this.clean = false;
    // With no new events the answer may still rest on events in flight: wait for those.
    if (events.length === 0) await this.committer.waitFor(this.engine.state.seq);
    // The commit links the request's span (and is the child of the first request it carries).
    else await this.committer.commit(events, encoded, ctx.span);
    return result;
  }
}

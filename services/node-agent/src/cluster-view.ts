/**
 * The agent's read-only copy of the cluster state: the same fold the controller runs, started from the
 * controller's latest snapshot (read over NATS in parts; the log behind it may be trimmed) and fed by the
 * node's EventConsumer, which hands it every event once, in order, with no gaps and including the tail (see
 * libs/adapters/src/nats/consumer.ts): the view only folds what it is handed, and is ready when the consumer says it
 * caught up. Replicas of cluster networks, routes to other hosts' blocks and BGP announcements are all reconciled
 * against it.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { EventConsumer, RpcClient, checkSnapshot, logError } from '@underlay/adapters';
import { SnapshotReadRes, apply, emptyState, restore, type ClusterEvent, type ClusterState } from '@underlay/core';

/**
 * `resync`: the view replaced its whole state (it started again from the latest snapshot after falling behind the
 * trimmed log); `events` is empty and a listener must recompute from `state` rather than from events.
 */
export type ViewListener = (events: readonly ClusterEvent[], state: ClusterState, info?: { resync: true }) => void;

export interface ClusterViewOptions {
  nc: NatsConnection;
  /** The node's client (its consumer and its requests are the node's). */
  rpc: RpcClient;
  logger?: (m: string) => void;
  /** How often the consumer compares with the controller's head (catches events missing at the end of the stream). */
  headCheckMs?: number;
}

export class ClusterView {
  private _state: ClusterState = emptyState();
  private readonly rpc: RpcClient;
  private readonly logger: (m: string) => void;
  private consumer?: EventConsumer;
  private listeners = new Set<ViewListener>();
  private pending: ClusterEvent[] = [];
  private flushQueued = false;
  private caughtUp = false;
  private readyWaiters: (() => void)[] = [];

  constructor(private readonly opts: ClusterViewOptions) {
    this.rpc = opts.rpc;
    this.logger = opts.logger ?? (() => {});
  }

  get state(): ClusterState {
    return this._state;
  }

  get seq(): number {
    return this._state.seq;
  }

  /** The controller's head as last known (metrics: underlay_agent_seq_lag_events). */
  get knownHead(): number {
    return Math.max(this.consumer?.knownHead ?? 0, this._state.seq);
  }

  /** The seq of the snapshot the view started from (0: it folded the log from the start). */
  snapshotSeq = 0;

  /** Called (batched per turn of the event loop) with the events just applied. */
  onChange(l: ViewListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  async start(): Promise<void> {
    await this.loadSnapshot();
    this.consumer = new EventConsumer({
      nc: this.opts.nc,
      rpc: this.rpc,
      afterSeq: this._state.seq,
      onEvent: (ev) => this.take(ev),
      onCaughtUp: () => this.markReady(),
      onTrimmed: () => this.resync(),
      logger: this.logger,
      ...(this.opts.headCheckMs !== undefined ? { headCheckMs: this.opts.headCheckMs } : {}),
    });
    await this.consumer.start();
  }

  /**
   * Starts from the controller's latest snapshot when there is one (before any listener runs). A snapshot
   * replaced while its parts are read is read again; after a few tries, or when the controller cannot be
   * asked, the view folds the log from the start (which works while the log is not trimmed).
   */
  private async loadSnapshot(): Promise<boolean> {
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        const read = (seq: number | undefined, part: number, offset: number) =>
          this.rpc.call('snapshotRead', { ...(seq ? { seq } : {}), part, offset }, SnapshotReadRes, { deadlineMs: 10_000 });
        const first = await read(undefined, 0, 0);
        if (first.seq === 0) return false;
        const pieces: string[] = [];
        for (let part = 0; part < first.parts; part++) {
          // Each part comes in pieces that fit a NATS message.
          let piece = part === 0 ? first : await read(first.seq, part, 0);
          pieces.push(piece.data);
          for (let got = piece.data.length; got < (piece.partLength ?? got); got += piece.data.length) {
            piece = await read(first.seq, part, got);
            if (piece.data.length === 0) throw new Error(`part ${part} of snapshot ${first.seq} stopped at ${got} of ${piece.partLength} characters`);
            pieces.push(piece.data);
          }
        }
        const json = pieces.join('');
        // The controller's own checks: size and SHA-256 from the manifest, and the state at the snapshot's seq.
        checkSnapshot({ seq: first.seq, parts: first.parts, bytes: first.bytes ?? json.length, ...(first.sha256 ? { sha256: first.sha256 } : {}) }, json);
        const state = restore(JSON.parse(json));
        if (state.seq !== first.seq) throw new Error(`snapshot ${first.seq} holds the state at seq ${state.seq}`);
        this._state = state;
        this.snapshotSeq = this._state.seq;
        this.logger(`cluster view: started from snapshot ${this._state.seq} (${first.parts} parts)`);
        return true;
      } catch (e) {
        this.logger(
          `cluster view: could not read the latest snapshot (attempt ${attempt} of 3): ${(e as Error).message}` +
            (attempt === 3 ? '; reading the event log from seq 1 instead (which fails if the log was trimmed)' : ''),
        );
      }
    }
    return false;
  }

  /**
   * The view fell behind the trimmed log (a long outage): start again from the latest snapshot, replace the whole
   * state and tell the listeners to recompute. Returns the new seq (the consumer goes on after it).
   */
  private async resync(): Promise<number> {
    const before = this._state.seq;
    if (!(await this.loadSnapshot())) throw new Error('no snapshot to start again from');
    this.resyncs++;
    this.pending = [];
    this.logger(`cluster view: fell behind the trimmed log at seq ${before}; started again from snapshot ${this._state.seq}`);
    for (const l of this.listeners) {
      try {
        l([], this._state, { resync: true });
      } catch (e) {
        logError(this.logger, `cluster view listener failed: ${(e as Error).message}`);
      }
    }
    return this._state.seq;
  }

  /** How often the view started again from a snapshot while running. */
  resyncs = 0;


  /** Resolves once the view holds every event the controller had committed when the agent started. */
  ready(): Promise<void> {
    if (this.caughtUp) return Promise.resolve();
    return new Promise((r) => this.readyWaiters.push(r));
  }

  get isReady(): boolean {
    return this.caughtUp;
  }

  /** The consumer hands every event once, in order, with no gaps: fold it. */
  private take(ev: ClusterEvent): void {
    apply(this._state, ev);
    this.pending.push(ev);
    if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushQueued = false;
    const evs = this.pending.splice(0);
    if (evs.length === 0) return;
    for (const l of this.listeners) {
      try {
        l(evs, this.state);
      } catch (e) {
        logError(this.logger, `cluster view listener failed: ${(e as Error).message}`);
      }
    }
  }

  /** Every event committed when the view started is folded: listeners get them before ready() resolves. */
  private markReady(): void {
    if (this.caughtUp) return;
    this.caughtUp = true;
    this.flush();
    for (const w of this.readyWaiters.splice(0)) w();
  }

  async stop(): Promise<void> {
    await this.consumer?.stop();
  }
}

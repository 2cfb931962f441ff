/**
 * The agent's read-only copy of the cluster state: the same fold the controller runs, started from the
 * controller's latest snapshot (read over NATS in parts; the log behind it may be trimmed) and fed by the
 * node's EventConsumer, which hands it every event once, in order, with no gaps and including the tail (see
 * libs/adapters/src/nats/consumer.ts): the view only folds what it is handed, and is ready when the consumer says it
 * caught up. Replicas of cluster networks, routes to other hosts' blocks and BGP announcements are all reconciled
 * against it.
 *
 * With `node` and `pools` (the agent), delivery is by interest (libs/core/src/state/chains.ts): the view follows the
 * cluster chain, its host's chain and the chains of the pools its networks use (`pools()`, asked again at
 * `refreshInterest()` and every INTEREST_MS, with the pools the snapshot shows this node holding), one EventConsumer
 * per chain on a plain NATS subscription to the chain's subject, and folds with `applyInterest`. A pool it starts to
 * follow is read from the snapshot's seq on (its chain's events since, from the controller), then live. Of the
 * snapshot the view reads the head (everything but allocations) and the allocations of the pools it follows at start
 * (the snapshot's index, `state.snapshotIndex`, says where each pool's lie; `state.snapshotRange` reads them): a pool
 * followed later takes its part of the latest snapshot first (`takeChain`), then its chain after that. Events of
 * chains it does not follow never reach it; the state it holds of them is the snapshot's, stale (nothing reads it:
 * routes, BGP, host access and the driver read their own networks' pools). Ready once the chains followed at start
 * caught up with their heads.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { EventConsumer, READ_PARTS_AT_ONCE, ReconcileRunner, RpcClient, chainHeads, checkSnapshot, eachAtOnce, logError, natsChainSource, sha256Hex } from '@underlay/adapters';
import {
  CLUSTER_CHAIN,
  EventsHeadRes,
  SnapshotIndexRes,
  SnapshotRangeRes,
  SnapshotReadRes,
  apply,
  applyInterest,
  emptyState,
  holdsIn,
  hostChain,
  poolChain,
  restore,
  restorePoolAllocs,
  snapshotHeadRanges,
  takeChain,
  type ClusterEvent,
  type ClusterState,
} from '@underlay/core';

/** How often the pools followed are compared with `pools()` (besides `refreshInterest()`). */
const INTEREST_MS = 2_000;
/** Text of the snapshot between two ranges read that is read through rather than asked for apart (fewer requests). */
const READ_THROUGH_CHARS = 64 * 1024;

/** The pools whose allocations a snapshot read takes: every one, or those `want` names given the head's state. */
type SnapshotWant = 'all' | ((head: ClusterState) => Iterable<string>);

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
  /**
   * Interest-based delivery: the pools this node's networks use (the view follows them, the cluster chain and this
   * node's host chain, and nothing else). Absent: the view reads every event through the node's JetStream consumer.
   */
  pools?: () => Iterable<string>;
}

export class ClusterView {
  private _state: ClusterState = emptyState();
  private readonly rpc: RpcClient;
  private readonly logger: (m: string) => void;
  private consumer?: EventConsumer;
  /** Interest-based delivery: one consumer per chain followed. */
  private readonly chains = new Map<string, EventConsumer>();
  private interest?: ReconcileRunner;
  private stopped = false;
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
    let head = this.consumer?.knownHead ?? 0;
    for (const c of this.chains.values()) head = Math.max(head, c.knownHead);
    return Math.max(head, this._state.seq);
  }

  /** The chains followed (interest-based delivery). */
  get followed(): string[] {
    return [...this.chains.keys()];
  }

  /** The seq of the snapshot the view started from (0: it folded the log from the start). */
  snapshotSeq = 0;

  /** Called (batched per turn of the event loop) with the events just applied. */
  onChange(l: ViewListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  async start(): Promise<void> {
    await this.loadSnapshot(this.opts.pools ? await this.startingInterest() : 'all');
    if (this.opts.pools) return this.startByInterest();
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

  private async startByInterest(): Promise<void> {
    const node = this.rpc.node;
    const held = [...this._state.pools.values()].filter((p) => holdsIn(p, node)).map((p) => p.poolId);
    // A pool whose allocations were not read (named since the read began) is left to the first interest pass: its read
    // may fail, and the start must not.
    const initial = [CLUSTER_CHAIN, hostChain(node), ...new Set([...held, ...this.opts.pools!()].map(poolChain))].filter((c) => !this.unread.has(c));
    let waiting = initial.length;
    const caughtUp = () => {
      if (--waiting === 0) this.markReady();
    };
    this.heads = chainHeads(this.rpc, () => this.chains.keys(), undefined, (held) => this.noteHeld(held));
    await Promise.all(initial.map((c) => this.follow(c, caughtUp)));
    this.interest = new ReconcileRunner({ name: 'cluster view interest', resyncMs: INTEREST_MS, reconcile: () => this.followPools() });
    this.interest.start();
  }

  private heads?: (chain: string) => Promise<number>;

  /**
   * Which pools' allocations the view reads from the snapshot at start: those its networks use, those the controller
   * says this node holds something in (asked now), and those the snapshot's head shows it holding a block or a
   * reference in. When the controller cannot say, all of them.
   */
  private async startingInterest(): Promise<SnapshotWant> {
    const node = this.rpc.node;
    let held: string[];
    try {
      held = (await this.rpc.call('eventsHead', { chains: [CLUSTER_CHAIN] }, EventsHeadRes, { deadlineMs: 5_000, timeoutMs: 5_000 })).held ?? [];
    } catch (e) {
      this.logger(`cluster view: could not ask which pools this node holds (${(e as Error).message}); reading every pool of the snapshot`);
      return 'all';
    }
    return (head) => {
      const chains = new Set([...held, ...[...this.opts.pools!()].map(poolChain)]);
      return [...head.pools.values()].filter((p) => chains.has(poolChain(p.poolId)) || holdsIn(p, node)).map((p) => p.poolId);
    };
  }

  /** Chains of the pools whose allocations the view did not read from its snapshot (it follows none of them). */
  private readonly unread = new Set<string>();
  /** Chains whose consumer is being made (a follow waits for a snapshot read first). */
  private readonly starting = new Set<string>();

  /**
   * The chains of the pools where the controller says this node holds a block or a reference (each head check's
   * answer). Followed like the pools of its networks: whatever claimed the block (a request that did not come through
   * this host's Docker, an agent process before this one), routes and BGP announce what this host holds.
   */
  private held = new Set<string>();

  private noteHeld(held: readonly string[]): void {
    this.held = new Set(held);
    if (held.some((c) => !this.chains.has(c))) this.interest?.trigger();
  }

  /**
   * Whether the view has seen every event up to `seq`. With interest-based delivery the highest seq folded says
   * nothing of a chain that lags behind another: `chains` (heads the controller answered) must each be read through;
   * a chain not followed is not read here, so nothing waits for it. Without `chains`, the seq folded is compared.
   */
  covers(seq: number, chains: Readonly<Record<string, number>> = {}): boolean {
    const entries = Object.entries(chains);
    if (!this.opts.pools || entries.length === 0) return this._state.seq >= seq;
    return entries.every(([chain, head]) => {
      const consumer = this.chains.get(chain);
      return !consumer || consumer.lastSeq >= head;
    });
  }

  /** Follows the pools `pools()` names now (the agent calls it when its networks changed). */
  refreshInterest(): void {
    this.interest?.trigger();
  }

  /**
   * Follows the pools `pools()` names, and stops following a pool this host no longer uses and holds nothing in (no
   * reference, block or address: while it does, the view must see their release, e.g. BGP stops announcing a block only
   * then). A pool left is followed again after the seq where it was left (its part of the state is complete up to
   * there).
   */
  private async followPools(): Promise<void> {
    const wanted = new Set([...[...(this.opts.pools?.() ?? [])].map(poolChain), ...this.held]);
    let failed: unknown;
    for (const chain of wanted) {
      if (this.chains.has(chain)) continue;
      // One pool whose part of the snapshot cannot be read now does not keep the others from being followed or left.
      await this.follow(chain).catch((e: unknown) => {
        failed ??= e;
        this.logger(`cluster view: cannot follow chain ${chain} yet: ${(e as Error).message}`);
      });
    }
    const node = this.rpc.node;
    for (const [chain, consumer] of [...this.chains]) {
      if (!chain.startsWith('p.') || wanted.has(chain) || !consumer.caughtUp) continue;
      const pool = [...this._state.pools.values()].find((p) => poolChain(p.poolId) === chain);
      if (pool && holdsIn(pool, node)) continue;
      this.chains.delete(chain);
      await consumer.stop();
      this.leftAt.set(chain, consumer.lastSeq);
      this.logger(`cluster view: no longer following chain ${chain} (after seq ${consumer.lastSeq}): this host uses and holds nothing of it`);
    }
    // The runner tries again (backing off) and counts the error.
    if (failed !== undefined) throw failed;
  }

  /** Chains no longer followed: the seq up to which the state holds them. */
  private readonly leftAt = new Map<string, number>();

  /**
   * Follows one chain from the snapshot's seq on: every event of it since then is read (from the controller), then live.
   * A chain fallen behind the trimmed log takes its part of the latest snapshot (`takeChain`) and goes on after it.
   */
  private async follow(chain: string, onCaughtUp?: () => void): Promise<void> {
    if (this.chains.has(chain) || this.starting.has(chain) || this.stopped) return;
    let afterSeq = this.leftAt.get(chain) ?? this.snapshotSeq;
    if (this.unread.has(chain)) {
      this.starting.add(chain);
      try {
        afterSeq = await this.takeUnread(chain);
      } finally {
        this.starting.delete(chain);
      }
      if (this.chains.has(chain) || this.stopped) return;
    }
    const consumer = new EventConsumer({
      source: natsChainSource(this.opts.nc, this.rpc, chain, this.heads!),
      chain,
      afterSeq,
      onEvent: (ev) => this.take(ev),
      ...(onCaughtUp ? { onCaughtUp } : {}),
      onTrimmed: () => this.resyncChain(chain),
      logger: this.logger,
      ...(this.opts.headCheckMs !== undefined ? { headCheckMs: this.opts.headCheckMs } : {}),
    });
    this.chains.set(chain, consumer);
    this.logger(`cluster view: following chain ${chain} after seq ${afterSeq}`);
    this.leftAt.delete(chain);
    await consumer.start();
  }

  /**
   * A pool whose allocations the view did not read at start is followed now: its part of the state comes from the
   * latest snapshot (its head and this pool's allocations); its chain goes on after that snapshot's seq.
   */
  private async takeUnread(chain: string): Promise<number> {
    return this.takeFromSnapshot(chain, (seq) => `took chain ${chain} from snapshot ${seq} (its allocations were not read at start)`);
  }

  /** One chain fell behind the trimmed log: its part of the state comes from the latest snapshot; the others stay. */
  private async resyncChain(chain: string): Promise<number> {
    // The other chains go on meanwhile; the chains not followed yet stay the first snapshot's (and start after it).
    const seq = await this.takeFromSnapshot(chain, (seq) => `chain ${chain} fell behind the trimmed log; took it from snapshot ${seq}`);
    this.resyncs++;
    return seq;
  }

  /**
   * `chain`'s part of the state from the latest snapshot (its head, and a pool chain's allocations: `takeChain`); the
   * other chains stay, and the listeners recompute. Returns the snapshot's seq (the chain goes on after it).
   */
  private async takeFromSnapshot(chain: string, what: (seq: number) => string): Promise<number> {
    const from = (await this.readSnapshot((head) => [...head.pools.keys()].filter((id) => poolChain(id) === chain)))?.state;
    if (!from) throw new Error(`no snapshot to take chain ${chain} from`);
    takeChain(this._state, from, chain);
    this.unread.delete(chain);
    this.logger(`cluster view: ${what(from.seq)}`);
    this.notifyResync();
    return from.seq;
  }

  /**
   * Starts from the controller's latest snapshot when there is one (before any listener runs). A snapshot
   * replaced while its parts are read is read again; after a few tries, or when the controller cannot be
   * asked, the view folds the log from the start (which works while the log is not trimmed).
   */
  private async loadSnapshot(want: SnapshotWant): Promise<boolean> {
    const read = await this.readSnapshot(want);
    if (!read) return false;
    const { state, unread } = read;
    this._state = state;
    this.snapshotSeq = state.seq;
    this.unread.clear();
    for (const id of unread) this.unread.add(poolChain(id));
    this.logger(`cluster view: started from snapshot ${state.seq}` + (unread.length ? ` (allocations of ${state.pools.size - unread.length} of its ${state.pools.size} pools read)` : ''));
    return true;
  }

  /** Characters of snapshot text this view received (every read: at start, for a pool followed later, after a gap). */
  snapshotCharsRead = 0;

  /**
   * The latest snapshot's state (undefined: none, or it could not be read), with the allocations of the pools `want`
   * names only when the snapshot has an index (`unread`: the pools whose allocations were left out); otherwise whole.
   */
  private async readSnapshot(want: SnapshotWant): Promise<{ state: ClusterState; unread: string[] } | undefined> {
    if (want !== 'all') {
      for (let attempt = 1; attempt <= 3; attempt++) {
        try {
          const r = await this.readSections(want);
          if (r !== 'whole') return r;
          break;
        } catch (e) {
          this.logger(`cluster view: could not read the latest snapshot's sections (attempt ${attempt} of 3): ${(e as Error).message}` + (attempt === 3 ? '; reading it whole' : ''));
        }
      }
    }
    const state = await this.readWhole();
    return state && { state, unread: [] };
  }

  /**
   * The latest snapshot's head and the allocations of the pools `want` names, each checked against the index's
   * SHA-256; 'whole' when the snapshot has no index (or the controller cannot answer one); undefined when there is no
   * snapshot.
   */
  private async readSections(want: (head: ClusterState) => Iterable<string>): Promise<{ state: ClusterState; unread: string[] } | 'whole' | undefined> {
    let index: SnapshotIndexRes;
    try {
      index = await this.rpc.call('snapshotIndex', {}, SnapshotIndexRes, { deadlineMs: 10_000 });
    } catch (e) {
      this.logger(`cluster view: the controller answers no snapshot index (${(e as Error).message}); reading the snapshot whole`);
      return 'whole';
    }
    if (index.seq === 0) return undefined;
    if (!index.sections) return 'whole';
    const { seq } = index;
    const sections = index.sections.pools;
    const head = (await this.readRanges(seq, snapshotHeadRanges(index.bytes, sections))).join('');
    if (sha256Hex(head) !== index.sections.head) throw new Error(`the head of snapshot ${seq} does not match its SHA-256`);
    const state = restore(JSON.parse(head));
    if (state.seq !== seq) throw new Error(`snapshot ${seq} holds the state at seq ${state.seq}`);
    const wanted = new Set(want(state));
    const take = sections.filter((s) => wanted.has(s.poolId) && s.end > s.start);
    const texts = await this.readRanges(seq, take.map((s) => [s.start, s.end]));
    take.forEach((s, i) => {
      const text = texts[i]!;
      if (sha256Hex(text) !== s.sha256) throw new Error(`the allocations of pool ${s.poolId} in snapshot ${seq} do not match their SHA-256`);
      const pool = state.pools.get(s.poolId);
      if (!pool) throw new Error(`snapshot ${seq} has a section for pool ${s.poolId} but no such pool`);
      restorePoolAllocs(pool, text);
    });
    return { state, unread: sections.filter((s) => !wanted.has(s.poolId) && s.end > s.start).map((s) => s.poolId) };
  }

  /**
   * The text of snapshot `seq` in each of `ranges` (sorted, not overlapping), a few requests at once, each answered in
   * pieces that fit a NATS message; ranges close to each other are read as one (READ_THROUGH_CHARS).
   */
  private async readRanges(seq: number, ranges: readonly (readonly [number, number])[]): Promise<string[]> {
    const spans: { start: number; end: number; ranges: number[] }[] = [];
    ranges.forEach(([a, b], i) => {
      const last = spans[spans.length - 1];
      if (last && a - last.end <= READ_THROUGH_CHARS) {
        last.end = b;
        last.ranges.push(i);
      } else spans.push({ start: a, end: b, ranges: [i] });
    });
    const out: string[] = new Array(ranges.length);
    await eachAtOnce(spans.length, READ_PARTS_AT_ONCE, async (k) => {
      const span = spans[k]!;
      const pieces: string[] = [];
      for (let at = span.start; at < span.end; ) {
        const r = await this.rpc.call('snapshotRange', { seq, start: at, end: span.end }, SnapshotRangeRes, { deadlineMs: 10_000 });
        if (r.data.length === 0) throw new Error(`snapshot ${seq} stopped at character ${at} of ${span.end}`);
        this.snapshotCharsRead += r.data.length;
        pieces.push(r.data);
        at += r.data.length;
      }
      const text = pieces.join('');
      for (const i of span.ranges) out[i] = text.slice(ranges[i]![0] - span.start, ranges[i]![1] - span.start);
    });
    return out;
  }

  /** The latest snapshot's state, read whole (undefined: none, or it could not be read). */
  private async readWhole(): Promise<ClusterState | undefined> {
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        const read = (seq: number | undefined, part: number, offset: number) =>
          this.rpc.call('snapshotRead', { ...(seq ? { seq } : {}), part, offset }, SnapshotReadRes, { deadlineMs: 10_000 });
        const first = await read(undefined, 0, 0);
        if (first.seq === 0) return undefined;
        // A few parts at once (as the controller reads them from etcd); each part in pieces that fit a NATS message.
        const parts: string[][] = new Array(first.parts);
        await eachAtOnce(first.parts, READ_PARTS_AT_ONCE, async (part) => {
          let piece = part === 0 ? first : await read(first.seq, part, 0);
          const pieces = [piece.data];
          for (let got = piece.data.length; got < (piece.partLength ?? got); got += piece.data.length) {
            piece = await read(first.seq, part, got);
            if (piece.data.length === 0) throw new Error(`part ${part} of snapshot ${first.seq} stopped at ${got} of ${piece.partLength} characters`);
            pieces.push(piece.data);
          }
          parts[part] = pieces;
          this.snapshotCharsRead += pieces.reduce((n, p) => n + p.length, 0);
        });
        const json = parts.flat().join('');
        // The controller's own checks: size and SHA-256 from the manifest, and the state at the snapshot's seq.
        checkSnapshot({ seq: first.seq, parts: first.parts, bytes: first.bytes ?? json.length, ...(first.sha256 ? { sha256: first.sha256 } : {}) }, json);
        const state = restore(JSON.parse(json));
        if (state.seq !== first.seq) throw new Error(`snapshot ${first.seq} holds the state at seq ${state.seq}`);
        return state;
      } catch (e) {
        this.logger(
          `cluster view: could not read the latest snapshot (attempt ${attempt} of 3): ${(e as Error).message}` +
            (attempt === 3 ? '; reading the event log from seq 1 instead (which fails if the log was trimmed)' : ''),
        );
      }
    }
    return undefined;
  }

  /**
   * The view fell behind the trimmed log (a long outage): start again from the latest snapshot, replace the whole
   * state and tell the listeners to recompute. Returns the new seq (the consumer goes on after it).
   */
  private async resync(): Promise<number> {
    const before = this._state.seq;
    if (!(await this.loadSnapshot('all'))) throw new Error('no snapshot to start again from');
    this.resyncs++;
    this.pending = [];
    this.logger(`cluster view: fell behind the trimmed log at seq ${before}; started again from snapshot ${this._state.seq}`);
    this.notifyResync();
    return this._state.seq;
  }

  private notifyResync(): void {
    for (const l of this.listeners) {
      try {
        l([], this._state, { resync: true });
      } catch (e) {
        logError(this.logger, `cluster view listener failed: ${(e as Error).message}`);
      }
    }
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
    if (this.opts.pools) applyInterest(this._state, ev);
    else apply(this._state, ev);
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
    this.stopped = true;
    await this.interest?.stop();
    await this.consumer?.stop();
    await Promise.all([...this.chains.values()].map((c) => c.stop()));
  }
}

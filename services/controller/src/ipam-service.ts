/**
 * The controller's IPAM: decides each request against the in-memory state (the fold of the log),
 * queues the resulting events for group commit, and answers once they are durable.
 * If a commit fails, the state is rebuilt from etcd before anything else is decided.
 */
import {
  ClusterEngine,
  decideBindEndpoint,
  decideClusterNetworkCreate,
  decideClusterNetworkRemove,
  decideNetworkDefine,
  decideNetworkNamed,
  decideNetworkRecorded,
  decideNetworkRemoved,
  decideNodeHello,
  decideReleaseAddress,
  decideReleasePool,
  decideRequestAddress,
  decideRequestPool,
  fold,
  UnderlayError,
  type ClusterEvent,
  type Decision,
  type ClusterState,
  type BindEndpointReq,
  type NetworkRecordReq,
  type ContainerLookup,
  type NetworkDefinitionInput,
  type NetworkNameReq,
  type NodeReport,
  type PoolLimits,
  type ReleaseAddressReq,
  type ReleasePoolReq,
  type RequestAddressReq,
  type RequestPoolReq,
} from '@underlay/core';
import { EventsTrimmedError, type EtcdEventLog, type Fence } from '@underlay/adapters';
import { GroupCommitter } from './committer.js';

/** Decisions per turn of the event loop. */
const ADMIT_SLICE = 128;

export interface RequestContext {
  actor: string;
  traceId?: string;
}

export interface IpamServiceOptions {
  log: EtcdEventLog;
  /** Called after each full load from etcd, with the state (equal to the committed log). */
  onLoaded?: (state: ClusterState) => void;
  /** Loads the starting state: the latest snapshot folded forward with the log (default: the whole log). */
  loadState?: () => Promise<ClusterState>;
  onCommitted?: (events: ClusterEvent[], encoded: string[]) => void;
  fence?: () => Fence | undefined;
  logger?: (msg: string) => void;
  /** The largest pools handed out (--max-pool-prefix-v4/-v6; default core's DEFAULT_POOL_LIMITS). */
  poolLimits?: PoolLimits;
  /** The longest event (JSON bytes) every reader can take in one NATS message; longer ones are refused. */
  maxEventBytes?: () => number;
}

export class IpamService {
  readonly engine = new ClusterEngine();
  private committer!: GroupCommitter;
  private gate: Promise<void> = Promise.resolve();

  constructor(private readonly opts: IpamServiceOptions) {}

  /** True while the state in memory is exactly a prefix of the log (nothing decided that might not be committed). */
  private clean = false;

  /** Rebuilds the state from etcd (the latest snapshot and the log after it). */
  async load(): Promise<void> {
    this.clean = false;
    const state = this.opts.loadState ? await this.opts.loadState() : fold(await this.opts.log.readAll());
    this.setState(state);
    this.clean = true;
    this.opts.onLoaded?.(state);
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
        onCommitted: (evs, encoded) => this.opts.onCommitted?.(evs, encoded),
        onFailed: (err) => {
          this.opts.logger?.(`commit failed, reloading state from etcd: ${(err as Error).message}`);
          return this.reload().catch((e) => this.opts.logger?.(`reload failed: ${(e as Error).message}`));
        },
      },
      this.opts.fence,
    );
  }

  /** Rebuilds state from etcd; requests wait for it. Repeated calls share one reload. */
  reload(): Promise<void> {
    const next = this.gate.then(() => this.load());
    this.gate = next.catch(() => {});
    return next;
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

  /** Decides with the current state and commits: for the collector and other internal actors. */
  async run<R>(decide: (s: ClusterState) => Decision<R>, ctx: RequestContext): Promise<R> {
    await this.admit();
    await this.gate;
    let decided: { events: ClusterEvent[]; encoded: string[]; result: R };
    const maxEventBytes = this.opts.maxEventBytes?.() ?? Infinity;
    try {
      decided = this.engine.execute(decide, ctx, maxEventBytes);
    } catch (err) {
      // A refusal must rest on current state: if another writer moved the log, reload and decide again.
      if (!(err instanceof UnderlayError) || (await this.opts.log.head()) === this.committer.committedSeq) throw err;
      await this.reload();
      decided = this.engine.execute(decide, ctx, maxEventBytes);
    }
    const { events, encoded, result } = decided;
    if (events.length > 0) this.clean = false;
    // With no new events the answer may still rest on events in flight: wait for those.
    if (events.length === 0) await this.committer.waitFor(this.engine.state.seq);
    else await this.committer.commit(events, encoded);
    return result;
  }

  requestPool(req: RequestPoolReq, ctx: RequestContext) {
    return this.run((s) => decideRequestPool(s, req, this.opts.poolLimits), ctx);
  }
  releasePool(req: ReleasePoolReq, ctx: RequestContext) {
    return this.run((s) => decideReleasePool(s, req), ctx);
  }
  requestAddress(req: RequestAddressReq, ctx: RequestContext) {
    return this.run((s) => decideRequestAddress(s, req), ctx);
  }
  releaseAddress(req: ReleaseAddressReq, ctx: RequestContext) {
    return this.run((s) => decideReleaseAddress(s, req), ctx);
  }
  bindEndpoint(req: BindEndpointReq, ctx: RequestContext) {
    return this.run((s) => decideBindEndpoint(s, req), ctx);
  }
  networkRecord(req: NetworkRecordReq, ctx: RequestContext) {
    return this.run((s) => decideNetworkRecorded(s, req), ctx);
  }
  /** The network's name (and, from agents that know cluster networks, its definition). */
  networkName(req: NetworkNameReq, ctx: RequestContext): Promise<{ member: boolean; conflict?: string }> {
    const { definition } = req;
    if (definition) return this.run((s) => decideNetworkDefine(s, { ...req, definition }), ctx);
    return this.run((s) => decideNetworkNamed(s, req), ctx).then(() => ({ member: false }));
  }
  async networkRemove(req: { networkId: string; node: string; cluster?: boolean; dryRun?: boolean }, ctx: RequestContext, who?: ContainerLookup) {
    if (req.dryRun) {
      // Throws the refusal, if any, without deciding anything.
      await this.gate;
      await this.settled();
      decideNetworkRemoved(this.state, req, who);
      return {};
    }
    await this.run((s) => decideNetworkRemoved(s, req, who), ctx);
    return { seq: this.committedSeq };
  }
  clusterNetworkCreate(req: { name: string; definition: NetworkDefinitionInput }, ctx: RequestContext) {
    return this.run((s) => decideClusterNetworkCreate(s, req, this.opts.poolLimits), ctx);
  }
  clusterNetworkRemove(req: { name: string }, ctx: RequestContext, who?: ContainerLookup) {
    return this.run((s) => decideClusterNetworkRemove(s, req, who), ctx);
  }
  async nodeReport(req: NodeReport, ctx: RequestContext) {
    await this.run((s) => decideNodeHello(s, req), ctx);
    return {};
  }
}

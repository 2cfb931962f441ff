/**
 * The controller's IPAM: decides each request against the in-memory state (the fold of the log),
 * queues the resulting events for group commit, and answers once they are durable.
 * If a commit fails, the state is rebuilt from etcd before anything else is decided.
 */
import {
  IpamEngine,
  decideReleaseAddress,
  decideReleasePool,
  decideRequestAddress,
  decideRequestPool,
  fold,
  UnderlayError,
  type ClusterEvent,
  type Decision,
  type IpamState,
  type ReleaseAddressReq,
  type ReleasePoolReq,
  type RequestAddressReq,
  type RequestPoolReq,
} from '@underlay/core';
import type { EtcdEventLog, Fence } from '@underlay/adapters';
import { GroupCommitter } from './committer.js';

export interface RequestContext {
  actor: string;
  traceId?: string;
}

export interface IpamServiceOptions {
  log: EtcdEventLog;
  onCommitted?: (events: ClusterEvent[]) => void;
  fence?: () => Fence | undefined;
  logger?: (msg: string) => void;
}

export class IpamService {
  readonly engine = new IpamEngine();
  private committer!: GroupCommitter;
  private gate: Promise<void> = Promise.resolve();

  constructor(private readonly opts: IpamServiceOptions) {}

  /** Rebuilds the state from the log in etcd. */
  async load(): Promise<void> {
    const state = fold(await this.opts.log.readAll());
    this.engine.state = state;
    this.committer = new GroupCommitter(
      this.opts.log,
      state.seq,
      {
        onCommitted: (evs) => this.opts.onCommitted?.(evs),
        onFailed: (err) => {
          this.opts.logger?.(`commit failed, reloading state from etcd: ${(err as Error).message}`);
          void this.reload().catch((e) => this.opts.logger?.(`reload failed: ${(e as Error).message}`));
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

  get state(): IpamState {
    return this.engine.state;
  }

  get transactions(): number {
    return this.committer.transactions;
  }

  private async run<R>(decide: (s: IpamState) => Decision<R>, ctx: RequestContext): Promise<R> {
    await this.gate;
    let decided: { events: ClusterEvent[]; result: R };
    try {
      decided = this.engine.execute(decide, ctx);
    } catch (err) {
      // A refusal must rest on current state: if another writer moved the log, reload and decide again.
      if (!(err instanceof UnderlayError) || (await this.opts.log.head()) === this.committer.committedSeq) throw err;
      await this.reload();
      decided = this.engine.execute(decide, ctx);
    }
    const { events, result } = decided;
    // With no new events the answer may still rest on events in flight: wait for those.
    if (events.length === 0) await this.committer.waitFor(this.engine.state.seq);
    else await this.committer.commit(events);
    return result;
  }

  requestPool(req: RequestPoolReq, ctx: RequestContext) {
    return this.run((s) => decideRequestPool(s, req), ctx);
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
}

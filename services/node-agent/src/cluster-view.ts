/**
 * The agent's read-only copy of the cluster state: the same fold the controller runs, fed by the
 * JetStream event stream (gaps re-read from the controller). Replicas of cluster networks, routes to
 * other hosts' blocks and BGP announcements are all reconciled against it.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { EventConsumer, RpcClient } from '@underlay/adapters';
import { EventsHeadRes, apply, emptyState, type ClusterEvent, type IpamState } from '@underlay/core';

export type ViewListener = (events: readonly ClusterEvent[], state: IpamState) => void;

export interface ClusterViewOptions {
  nc: NatsConnection;
  rpc?: RpcClient;
  logger?: (m: string) => void;
  /** How long the stream may be quiet before the consumer compares with the controller's head (events missing at the end of the stream). */
  headCheckMs?: number;
}

export class ClusterView {
  readonly state: IpamState = emptyState();
  private readonly rpc: RpcClient;
  private readonly logger: (m: string) => void;
  private consumer?: EventConsumer;
  private listeners = new Set<ViewListener>();
  private pending: ClusterEvent[] = [];
  private flushQueued = false;
  private stopped = false;
  /** The controller's head when the view started; undefined until known. */
  private startHead?: number;
  private caughtUp = false;
  private readyWaiters: (() => void)[] = [];

  constructor(private readonly opts: ClusterViewOptions) {
    this.rpc = opts.rpc ?? new RpcClient(opts.nc);
    this.logger = opts.logger ?? (() => {});
  }

  get seq(): number {
    return this.state.seq;
  }

  /** Called (batched per turn of the event loop) with the events just applied. */
  onChange(l: ViewListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  async start(): Promise<void> {
    const head = async () => (await this.rpc.call('eventsHead', {}, EventsHeadRes, { deadlineMs: 5_000 })).seq;
    this.consumer = new EventConsumer({
      nc: this.opts.nc,
      rpc: this.rpc,
      afterSeq: 0,
      onEvent: (ev) => this.take(ev),
      logger: this.logger,
      head,
      fetchExpiresMs: this.opts.headCheckMs ?? 2_000,
    });
    await this.consumer.start();
    void this.learnStartHead(head);
  }

  /** The head at start decides when the view is ready; asked until the controller answers. */
  private async learnStartHead(head: () => Promise<number>): Promise<void> {
    while (!this.stopped && this.startHead === undefined) {
      try {
        this.startHead = await head();
      } catch (e) {
        this.logger(`cluster view: could not read the controller's head: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 500).unref());
      }
    }
    this.checkReady();
  }

  /** Resolves once the view holds every event the controller had committed when the agent started. */
  ready(): Promise<void> {
    if (this.caughtUp) return Promise.resolve();
    return new Promise((r) => this.readyWaiters.push(r));
  }

  get isReady(): boolean {
    return this.caughtUp;
  }

  /** The consumer delivers every event once, in order. */
  private take(ev: ClusterEvent): void {
    apply(this.state, ev);
    this.pending.push(ev);
    if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushQueued = false;
    const evs = this.pending.splice(0);
    this.checkReady();
    if (evs.length === 0) return;
    for (const l of this.listeners) {
      try {
        l(evs, this.state);
      } catch (e) {
        this.logger(`cluster view listener failed: ${(e as Error).message}`);
      }
    }
  }

  private checkReady(): void {
    if (this.caughtUp || this.startHead === undefined || this.state.seq < this.startHead || this.pending.length > 0) return;
    this.caughtUp = true;
    for (const w of this.readyWaiters.splice(0)) w();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.consumer?.stop();
  }
}

/**
 * The agent's read-only copy of the cluster state: the same fold the controller runs, fed by the
 * JetStream event stream (gaps re-read from the controller). Replicas of cluster networks, routes to
 * other hosts' blocks and BGP announcements are all reconciled against it.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { EventConsumer, RpcClient } from '@underlay/adapters';
import { EventsHeadRes, ReadEventsRes, apply, emptyState, parseEvent, type ClusterEvent, type IpamState } from '@underlay/core';

export type ViewListener = (events: readonly ClusterEvent[], state: IpamState) => void;

export interface ClusterViewOptions {
  nc: NatsConnection;
  rpc?: RpcClient;
  logger?: (m: string) => void;
  /** How often to compare with the controller's head (catches events missing at the end of the stream). */
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
  private timer?: NodeJS.Timeout;
  private caughtUp = false;
  private readyWaiters: (() => void)[] = [];
  private lastBehind?: number;

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
    this.consumer = new EventConsumer({ nc: this.opts.nc, rpc: this.rpc, afterSeq: 0, onEvent: (ev) => this.take(ev), logger: this.logger });
    await this.consumer.start();
    void this.checkHead();
    this.timer = setInterval(() => void this.checkHead(), this.opts.headCheckMs ?? 2_000);
    this.timer.unref();
  }

  /** Resolves once the view holds every event the controller had committed when the agent started. */
  ready(): Promise<void> {
    if (this.caughtUp) return Promise.resolve();
    return new Promise((r) => this.readyWaiters.push(r));
  }

  get isReady(): boolean {
    return this.caughtUp;
  }

  private take(ev: ClusterEvent): void {
    if (ev.seq <= this.state.seq) return;
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
    if (evs.length === 0) return;
    for (const l of this.listeners) {
      try {
        l(evs, this.state);
      } catch (e) {
        this.logger(`cluster view listener failed: ${(e as Error).message}`);
      }
    }
  }

  private async checkHead(): Promise<void> {
    try {
      const { seq: head } = await this.rpc.call('eventsHead', {}, EventsHeadRes, { deadlineMs: 5_000 });
      // Behind at two checks in a row with no progress: read the rest from the controller.
      if (this.state.seq < head && this.lastBehind === this.state.seq) {
        while (this.state.seq < head) {
          const r = await this.rpc.call('readEvents', { fromSeq: this.state.seq + 1, limit: 1000 }, ReadEventsRes);
          if (r.events.length === 0) break;
          for (const raw of r.events) this.take(parseEvent(raw));
        }
      }
      this.lastBehind = this.state.seq < head ? this.state.seq : undefined;
      if (!this.caughtUp && this.state.seq >= head) {
        this.caughtUp = true;
        this.flush();
        for (const w of this.readyWaiters.splice(0)) w();
      } else if (!this.caughtUp) {
        setTimeout(() => void this.checkHead(), 100).unref();
      }
    } catch (e) {
      this.logger(`cluster view: could not read the controller's head: ${(e as Error).message}`);
      if (!this.caughtUp) setTimeout(() => void this.checkHead(), 500).unref();
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.consumer?.stop();
  }
}

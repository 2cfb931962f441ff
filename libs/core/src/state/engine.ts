/**
 * Runs decisions (ipam/, network/, node/) against the cluster state: decides, stamps the events with sequence numbers, ids and
 * time, and applies them at once, so the next decision sees them. Used by the controller (which
 * then commits the events) and by tests.
 */
import { randomUUID } from 'node:crypto';
import type { ClusterEvent, EventBody } from './events.js';
import type { Decision } from './decision.js';
import { chainHead, emptyState, type ClusterState } from './cluster-state.js';
import { apply, networkNodeIn } from './fold.js';
import { chainOf } from './chains.js';
import { InvalidArgumentError } from '../errors.js';

export interface EventContext {
  actor: string;
  traceId?: string;
}

export interface EngineClock {
  now(): Date;
  newId(): string;
}

const systemClock: EngineClock = { now: () => new Date(), newId: () => randomUUID() };

export class ClusterEngine {
  constructor(
    public state: ClusterState = emptyState(),
    private readonly clock: EngineClock = systemClock,
  ) {}

  stamp(body: EventBody, seq: number, ctx: EventContext): ClusterEvent {
    const ev = { seq, id: this.clock.newId(), time: this.clock.now().toISOString(), actor: ctx.actor, ...body } as ClusterEvent;
    if (ctx.traceId) ev.traceId = ctx.traceId;
    return ev;
  }

  /**
   * Stamps each event's chain and `prev` (state/chains.ts) before any is applied: the chains' heads and the networks'
   * nodes as they will be after the earlier events of the batch.
   */
  private chained(events: ClusterEvent[]): ClusterEvent[] {
    const heads = new Map<string, number>();
    const recorded = new Map<string, string | undefined>();
    const nodeOf = (id: string) => (recorded.has(id) ? recorded.get(id) : networkNodeIn(this.state)(id));
    for (const ev of events) {
      const chain = chainOf(ev, nodeOf);
      ev.chain = chain;
      ev.prev = heads.get(chain) ?? chainHead(this.state, chain);
      heads.set(chain, ev.seq);
      if (ev.type === 'NetworkRecorded') recorded.set(ev.data.networkId, ev.data.node);
      if (ev.type === 'NetworkRemoved') recorded.set(ev.data.networkId, undefined);
    }
    return events;
  }

  /**
   * Decides and applies. Throws (with nothing applied) when the decision refuses the request, or when an event's
   * JSON would be longer than `maxEventBytes` (an event every reader must be able to take in one message: the
   * stream's and `events.read`'s NATS max_payload). Returns each event's JSON too, for the commit.
   */
  execute<R>(decide: (s: ClusterState) => Decision<R>, ctx: EventContext, maxEventBytes = Infinity): { events: ClusterEvent[]; encoded: string[]; result: R } {
    const d = decide(this.state);
    const events = this.chained(d.events.map((b, i) => this.stamp(b, this.state.seq + 1 + i, ctx)));
    const encoded = events.map((e) => JSON.stringify(e));
    for (const [i, json] of encoded.entries()) {
      // Characters bound bytes from below; only a long event pays for the exact count.
      if (json.length > maxEventBytes / 3 && Buffer.byteLength(json) > maxEventBytes) {
        throw new InvalidArgumentError(`this request would record a ${events[i]!.type} event of ${Buffer.byteLength(json)} bytes, more than the ${maxEventBytes} bytes every reader of the event stream can take; make it smaller (fewer or shorter labels and options)`);
      }
    }
    for (const ev of events) apply(this.state, ev);
    return { events, encoded, result: d.result };
  }
}


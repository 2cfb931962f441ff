/**
 * Runs IPAM decisions against a state: decides, stamps the events with sequence numbers, ids and
 * time, and applies them at once, so the next decision sees them. Used by the controller (which
 * then commits the events) and by tests.
 */
import { randomUUID } from 'node:crypto';
import type { ClusterEvent, EventBody } from '../events.js';
import type { Decision } from './decide.js';
import { apply, emptyState, type IpamState } from './state.js';

export interface EventContext {
  actor: string;
  traceId?: string;
}

export interface EngineClock {
  now(): Date;
  newId(): string;
}

const systemClock: EngineClock = { now: () => new Date(), newId: () => randomUUID() };

export class IpamEngine {
  constructor(
    public state: IpamState = emptyState(),
    private readonly clock: EngineClock = systemClock,
  ) {}

  stamp(body: EventBody, seq: number, ctx: EventContext): ClusterEvent {
    const ev = { seq, id: this.clock.newId(), time: this.clock.now().toISOString(), actor: ctx.actor, ...body } as ClusterEvent;
    if (ctx.traceId) ev.traceId = ctx.traceId;
    return ev;
  }

  /** Decides and applies. Throws (with nothing applied) when the decision refuses the request. */
  execute<R>(decide: (s: IpamState) => Decision<R>, ctx: EventContext): { events: ClusterEvent[]; result: R } {
    const d = decide(this.state);
    const events = d.events.map((b, i) => this.stamp(b, this.state.seq + 1 + i, ctx));
    for (const ev of events) apply(this.state, ev);
    return { events, result: d.result };
  }
}

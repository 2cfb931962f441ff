/**
 * What a decision returns: the events to append (in order) and the answer to give. Every decision folder
 * (ipam/, network/, node/) returns one; state/engine.ts stamps and applies the events.
 */
import type { EventBody } from './events.js';

export interface Decision<R> {
  events: EventBody[];
  result: R;
}

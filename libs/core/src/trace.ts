/**
 * W3C trace context, carried in NATS headers (`traceparent`) from the agent through the controller
 * into each event's traceId. OpenTelemetry plugs in here later; until then ids are made locally.
 */
import { randomBytes } from 'node:crypto';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The form of a W3C trace id (32 lowercase hex digits); all zeros is the spec's invalid id (isTraceId refuses it). */
export const TRACE_ID_PATTERN = /^[0-9a-f]{32}$/;
/** What a trace id must be, as the API and the CLI say when given something else. */
export const TRACE_ID_RULE = 'must be a W3C trace id: 32 lowercase hex digits, not all zeros';

/** A valid W3C trace id: 32 lowercase hex digits, not all zeros. */
export function isTraceId(s: string): boolean {
  return TRACE_ID_PATTERN.test(s) && !/^0+$/.test(s);
}

export function newTraceparent(traceId?: string): string {
  // One call for both ids: randomBytes is a system call and this runs for every request.
  const r = randomBytes(24).toString('hex');
  const tid = traceId && /^[0-9a-f]{32}$/.test(traceId) ? traceId : r.slice(0, 32);
  return `00-${tid}-${r.slice(32)}-01`;
}

/** The traceparent of a published event: the request's trace, with the event's seq as its span id (no randomness per event). */
export function eventTraceparent(traceId: string, seq: number): string {
  return `00-${traceId}-${(seq || 1).toString(16).padStart(16, '0')}-01`;
}

export function traceIdOf(traceparent: string | undefined): string | undefined {
  const m = traceparent ? TRACEPARENT.exec(traceparent) : null;
  return m ? m[1] : undefined;
}

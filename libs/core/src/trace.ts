/**
 * W3C trace context, carried in NATS headers (`traceparent`) from the agent through the controller
 * into each event's traceId. OpenTelemetry plugs in here later; until then ids are made locally.
 */
import { randomBytes } from 'node:crypto';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export function newTraceparent(traceId?: string): string {
  const tid = traceId && /^[0-9a-f]{32}$/.test(traceId) ? traceId : randomBytes(16).toString('hex');
  return `00-${tid}-${randomBytes(8).toString('hex')}-01`;
}

export function traceIdOf(traceparent: string | undefined): string | undefined {
  const m = traceparent ? TRACEPARENT.exec(traceparent) : null;
  return m ? m[1] : undefined;
}

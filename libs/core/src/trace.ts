/**
 * W3C trace context, carried in NATS headers (`traceparent`) from the agent through the controller
 * into each event's traceId. OpenTelemetry plugs in here later; until then ids are made locally.
 */
import { randomFillSync } from 'node:crypto';

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** The form of a W3C trace id (32 lowercase hex digits); all zeros is the spec's invalid id (isTraceId refuses it). */
export const TRACE_ID_PATTERN = /^[0-9a-f]{32}$/;
/** What a trace id must be, as the API and the CLI say when given something else. */
export const TRACE_ID_RULE = 'must be a W3C trace id: 32 lowercase hex digits, not all zeros';

/** A valid W3C trace id: 32 lowercase hex digits, not all zeros. */
export function isTraceId(s: string): boolean {
  return TRACE_ID_PATTERN.test(s) && !/^0+$/.test(s);
}

/**
 * Random bytes for ids, from a pool filled 8 KiB at a time (as Node's randomUUID does): a system call per request
 * (randomBytes(24)) was ~7% of bench:ipam's thread, where its requesters make a traceparent for every request.
 */
const idPool = Buffer.alloc(8192);
let idPoolAt = idPool.length;
function randomHex(bytes: number): string {
  if (idPoolAt + bytes > idPool.length) {
    randomFillSync(idPool);
    idPoolAt = 0;
  }
  const s = idPool.toString('hex', idPoolAt, idPoolAt + bytes);
  idPoolAt += bytes;
  return s;
}

export function newTraceparent(traceId?: string): string {
  const tid = traceId && /^[0-9a-f]{32}$/.test(traceId) ? traceId : randomHex(16);
  return `00-${tid}-${randomHex(8)}-01`;
}

/** The traceparent of a published event: the request's trace, with the event's seq as its span id (no randomness per event). */
export function eventTraceparent(traceId: string, seq: number): string {
  return `00-${traceId}-${(seq || 1).toString(16).padStart(16, '0')}-01`;
}

export function traceIdOf(traceparent: string | undefined): string | undefined {
  const m = traceparent ? TRACEPARENT.exec(traceparent) : null;
  return m ? m[1] : undefined;
}

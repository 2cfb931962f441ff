/**
 * Finished spans as plain data on the export thread: the rows span-wire.ts reads a batch into, which otlp-rows.ts
 * encodes for http/protobuf, and `fromSpanBatch` turns back into spans for the SDK's other exporters.
 *
 * Hand-written because the SDK has no such form: a ReadableSpan is a class instance holding its tracer, processor
 * and resource (it cannot cross to a thread). `fromSpanBatch` rebuilds objects with exactly the ReadableSpan fields
 * the OTLP exporters read, so the thread's exporter produces the request the SDK's exporter would have produced
 * (test/unit/span-batch.test.ts).
 */
import type { Attributes, HrTime, SpanContext, SpanKind, SpanStatus } from '@opentelemetry/api';
import type { ReadableSpan, TimedEvent } from '@opentelemetry/sdk-trace-base';

/** A span context without methods (trace state as its W3C string). */
export interface ContextRecord {
  traceId: string;
  spanId: string;
  traceFlags: number;
  isRemote?: boolean;
  traceState?: string;
}

/**
 * One span as a flat row. Attributes are `[key, value, key, value, …]`; links (one per request a group commit
 * carries) are flat rows too (LinkRow); events, rare, stay objects (0 when there are none).
 */
export type SpanRow = [
  name: string,
  kind: SpanKind,
  traceId: string,
  spanId: string,
  traceFlags: number,
  /** 0 no, 1 yes, -1 not set */
  isRemote: number,
  traceState: string,
  /** '' when the span has no parent */
  parentTraceId: string,
  parentSpanId: string,
  parentTraceFlags: number,
  parentIsRemote: number,
  parentTraceState: string,
  startS: number,
  startNs: number,
  endS: number,
  endNs: number,
  statusCode: number,
  /** undefined when the status has none */
  statusMessage: string | undefined,
  attributes: unknown[],
  links: LinkRow[] | 0,
  events: TimedEvent[] | 0,
  droppedAttributesCount: number,
  droppedEventsCount: number,
  droppedLinksCount: number,
  /** Index into SpanBatch.resources and SpanBatch.scopes. */
  resource: number,
  scope: number,
];

export interface SpanBatch {
  resources: { attributes: Attributes; schemaUrl?: string }[];
  scopes: { name: string; version?: string; schemaUrl?: string }[];
  spans: SpanRow[];
}

/** A link as a flat row. */
export type LinkRow = [
  traceId: string,
  spanId: string,
  traceFlags: number,
  /** 0 no, 1 yes, -1 not set */
  isRemote: number,
  traceState: string,
  /** flat as a span's; 0 when the link has no attributes object */
  attributes: unknown[] | 0,
  droppedAttributesCount: number,
];

/** A trace state that only serializes (all the exporters ask of it). */
function traceState(s: string | undefined): SpanContext['traceState'] {
  if (!s) return undefined;
  const unsupported = (): never => {
    throw new Error('trace state of an exported span is read-only');
  };
  return { serialize: () => s, get: () => undefined, set: unsupported, unset: unsupported };
}

function spanContext(c: ContextRecord): SpanContext {
  const sc: SpanContext = { traceId: c.traceId, spanId: c.spanId, traceFlags: c.traceFlags };
  if (c.isRemote !== undefined) sc.isRemote = c.isRemote;
  const ts = traceState(c.traceState);
  if (ts) sc.traceState = ts;
  return sc;
}

function duration(start: HrTime, end: HrTime): HrTime {
  let s = end[0] - start[0];
  let ns = end[1] - start[1];
  if (ns < 0) {
    s -= 1;
    ns += 1e9;
  }
  return [s, ns];
}

function rowContext(traceId: string, spanId: string, traceFlags: number, remote: number, state: string): SpanContext {
  const c: ContextRecord = { traceId, spanId, traceFlags };
  if (remote !== -1) c.isRemote = remote === 1;
  if (state) c.traceState = state;
  return spanContext(c);
}

function attributesOf(flat: unknown[]): Attributes {
  const a: Attributes = {};
  for (let i = 0; i < flat.length; i += 2) a[flat[i] as string] = flat[i + 1] as Attributes[string];
  return a;
}

function linkOf([traceId, spanId, flags, remote, state, attrs, dropped]: LinkRow): ReadableSpan['links'][number] {
  return { context: rowContext(traceId, spanId, flags, remote, state), ...(attrs ? { attributes: attributesOf(attrs) } : {}), ...(dropped ? { droppedAttributesCount: dropped } : {}) };
}

/** ReadableSpans again (on the export thread), sharing one resource object per resource of the batch. */
export function fromSpanBatch(batch: SpanBatch, makeResource: (r: SpanBatch['resources'][number]) => ReadableSpan['resource']): ReadableSpan[] {
  const resources = batch.resources.map(makeResource);
  return batch.spans.map((r) => {
    const [name, kind, traceId, spanId, flags, remote, state, pTraceId, pSpanId, pFlags, pRemote, pState, s0, s1, e0, e1, code, message, attrs, links, events, dA, dE, dL, resource, scope] = r;
    const ctx = rowContext(traceId, spanId, flags, remote, state);
    const startTime: HrTime = [s0, s1];
    const endTime: HrTime = [e0, e1];
    const status: SpanStatus = message === undefined ? { code } : { code, message };
    return {
      name,
      kind,
      spanContext: () => ctx,
      ...(pSpanId ? { parentSpanContext: rowContext(pTraceId, pSpanId, pFlags, pRemote, pState) } : {}),
      startTime,
      endTime,
      duration: duration(startTime, endTime),
      ended: true,
      status,
      attributes: attributesOf(attrs),
      links: links ? links.map(linkOf) : [],
      events: events || [],
      resource: resources[resource]!,
      instrumentationScope: batch.scopes[scope]!,
      droppedAttributesCount: dA,
      droppedEventsCount: dE,
      droppedLinksCount: dL,
    };
  });
}

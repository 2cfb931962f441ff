/**
 * Finished spans as plain data, to hand a batch to the export thread (export-thread.ts) with one structured clone.
 *
 * Hand-written because the SDK has no such form: a ReadableSpan is a class instance holding its tracer, processor
 * and resource (a structured clone of it fails or copies the whole SDK), and OTLP's own transformation
 * (`createExportTraceServiceRequest`, then protobuf or JSON) is the cost this exists to move off the caller's
 * thread. `fromSpanBatch` rebuilds objects with exactly the ReadableSpan fields the OTLP exporters read, so the
 * thread's exporter produces the request the SDK's exporter would have produced (test/unit/span-batch.test.ts).
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

export interface SpanRecord {
  name: string;
  kind: SpanKind;
  context: ContextRecord;
  parent?: ContextRecord;
  startTime: HrTime;
  endTime: HrTime;
  status: SpanStatus;
  attributes: Attributes;
  links: { context: ContextRecord; attributes?: Attributes; droppedAttributesCount?: number }[];
  events: TimedEvent[];
  droppedAttributesCount: number;
  droppedEventsCount: number;
  droppedLinksCount: number;
  /** Index into SpanBatch.resources and SpanBatch.scopes. */
  resource: number;
  scope: number;
}

export interface SpanBatch {
  resources: { attributes: Attributes; schemaUrl?: string }[];
  scopes: { name: string; version?: string; schemaUrl?: string }[];
  spans: SpanRecord[];
}

function contextRecord(c: SpanContext): ContextRecord {
  const r: ContextRecord = { traceId: c.traceId, spanId: c.spanId, traceFlags: c.traceFlags };
  if (c.isRemote !== undefined) r.isRemote = c.isRemote;
  const ts = c.traceState?.serialize();
  if (ts) r.traceState = ts;
  return r;
}

/** The spans as plain data (resources and scopes once each). Called on the thread that ended the spans. */
export function toSpanBatch(spans: readonly ReadableSpan[]): SpanBatch {
  const batch: SpanBatch = { resources: [], scopes: [], spans: [] };
  const resources = new Map<unknown, number>();
  const scopes = new Map<unknown, number>();
  for (const s of spans) {
    let resource = resources.get(s.resource);
    if (resource === undefined) {
      resource = batch.resources.push({ attributes: { ...s.resource.attributes }, ...(s.resource.schemaUrl ? { schemaUrl: s.resource.schemaUrl } : {}) }) - 1;
      resources.set(s.resource, resource);
    }
    let scope = scopes.get(s.instrumentationScope);
    if (scope === undefined) {
      const { name, version, schemaUrl } = s.instrumentationScope;
      scope = batch.scopes.push({ name, ...(version ? { version } : {}), ...(schemaUrl ? { schemaUrl } : {}) }) - 1;
      scopes.set(s.instrumentationScope, scope);
    }
    const r: SpanRecord = {
      name: s.name,
      kind: s.kind,
      context: contextRecord(s.spanContext()),
      startTime: s.startTime,
      endTime: s.endTime,
      status: s.status,
      attributes: s.attributes,
      links: s.links.map((l) => ({ context: contextRecord(l.context), ...(l.attributes ? { attributes: l.attributes } : {}), ...(l.droppedAttributesCount ? { droppedAttributesCount: l.droppedAttributesCount } : {}) })),
      events: s.events,
      droppedAttributesCount: s.droppedAttributesCount,
      droppedEventsCount: s.droppedEventsCount,
      droppedLinksCount: s.droppedLinksCount,
      resource,
      scope,
    };
    if (s.parentSpanContext) r.parent = contextRecord(s.parentSpanContext);
    batch.spans.push(r);
  }
  return batch;
}

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

/** ReadableSpans again (on the export thread), sharing one resource object per resource of the batch. */
export function fromSpanBatch(batch: SpanBatch, makeResource: (r: SpanBatch['resources'][number]) => ReadableSpan['resource']): ReadableSpan[] {
  const resources = batch.resources.map(makeResource);
  return batch.spans.map((r) => {
    const ctx = spanContext(r.context);
    return {
      name: r.name,
      kind: r.kind,
      spanContext: () => ctx,
      ...(r.parent ? { parentSpanContext: spanContext(r.parent) } : {}),
      startTime: r.startTime,
      endTime: r.endTime,
      duration: duration(r.startTime, r.endTime),
      ended: true,
      status: r.status,
      attributes: r.attributes,
      links: r.links.map((l) => ({ ...l, context: spanContext(l.context) })),
      events: r.events,
      resource: resources[r.resource]!,
      instrumentationScope: batch.scopes[r.scope]!,
      droppedAttributesCount: r.droppedAttributesCount,
      droppedEventsCount: r.droppedEventsCount,
      droppedLinksCount: r.droppedLinksCount,
    };
  });
}

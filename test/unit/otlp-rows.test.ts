/**
 * otlp-rows.ts: a batch of span rows encoded straight to an OTLP/protobuf ExportTraceServiceRequest is, byte for byte,
 * what the SDK's own serializer (@opentelemetry/otlp-transformer) makes of the same spans: every field, the ones left
 * out when empty, span and link flags, lengths past one and two varint bytes, several resources and scopes.
 */
import { SpanKind, SpanStatusCode, TraceFlags, context, trace, createTraceState } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { fromSpanBatch, type SpanBatch } from '../../libs/adapters/src/telemetry/span-batch';
import { wireTrip } from './span-wire-trip';
import { encodeSpanBatch } from '../../libs/adapters/src/telemetry/otlp-rows';

function spansOf(resource: Record<string, string>, scopes: [string, string?][], make: (tracer: ReturnType<BasicTracerProvider['getTracer']>, i: number) => void): ReadableSpan[] {
  const memory = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ resource: resourceFromAttributes(resource), spanProcessors: [new SimpleSpanProcessor(memory)] });
  scopes.forEach(([name, version], i) => make(provider.getTracer(name, version), i));
  return memory.getFinishedSpans();
}

const sdkBytes = (batch: SpanBatch): Buffer =>
  Buffer.from(ProtobufTraceSerializer.serializeRequest(fromSpanBatch(structuredClone(batch), (r) => resourceFromAttributes(r.attributes, r.schemaUrl ? { schemaUrl: r.schemaUrl } : undefined)))!);

describe('encodeSpanBatch', () => {
  it('encodes a batch as the SDK serializer does, byte for byte', async () => {
    const remote = trace.setSpanContext(context.active(), {
      traceId: '4BF92F3577B34DA6A3CE929D0E0E4736'.toLowerCase(),
      spanId: '00f067aa0ba902b7',
      traceFlags: TraceFlags.SAMPLED,
      isRemote: true,
      traceState: createTraceState('vendor=a,other=b'),
    });
    const local = trace.setSpanContext(context.active(), { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), traceFlags: TraceFlags.SAMPLED, isRemote: false });
    const long = 'x'.repeat(300);
    const huge = 'y'.repeat(20_000);
    const a = spansOf({ 'service.name': 'underlay-controller', 'service.instance.id': 'c1', 'host.name': 'hôte-☃' }, [['underlay', '0.1.0'], ['other']], (tracer, i) => {
      for (let n = 0; n < 40; n++) {
        const server = tracer.startSpan(`process requestAddress ${i}.${n}`, { kind: SpanKind.SERVER, attributes: { 'messaging.system': 'nats', 'underlay.seq': n * 1_000_003, 'underlay.neg': -n - 1, 'underlay.big': 2 ** 60, 'underlay.ratio': n / 7, 'underlay.ok': n % 2 === 0 } }, n % 3 ? remote : undefined);
        const inner = tracer.startSpan('décide ☃', { attributes: { long, list: ['a', 'b'], nums: [1, 2.5, -3], flags: [true, false] } }, trace.setSpan(context.active(), server));
        inner.addEvent('chosen', { 'underlay.network': 'n1', count: 3 });
        inner.addEvent('bare');
        if (n % 5 === 0) inner.setStatus({ code: SpanStatusCode.ERROR, message: n === 0 ? huge : 'pool exhausted' });
        else inner.setStatus({ code: SpanStatusCode.OK });
        inner.end();
        const commit = tracer.startSpan('etcd commit', {
          kind: SpanKind.CLIENT,
          links: [
            { context: server.spanContext(), attributes: { 'underlay.seq': 43, empty: '' } },
            { context: trace.getSpanContext(remote)! },
            { context: trace.getSpanContext(local)!, attributes: {} },
          ],
        }, local);
        commit.end();
        server.end();
      }
    });
    const b = spansOf({ 'service.name': 'underlay-agent' }, [['underlay']], (tracer) => tracer.startSpan('docker Join', { kind: SpanKind.PRODUCER }).end());
    const interleaved: ReadableSpan[] = [];
    for (let i = 0; i < Math.max(a.length, b.length); i++) interleaved.push(...(a[i] ? [a[i]!] : []), ...(b[i] ? [b[i]!] : []));
    const batch = await wireTrip(interleaved);
    expect(batch.resources).toHaveLength(2);
    expect(batch.scopes.length).toBeGreaterThanOrEqual(3);
    expect(batch.spans.length).toBe(40 * 3 * 2 + 1);
    const mine = Buffer.from(encodeSpanBatch(structuredClone(batch)));
    const theirs = sdkBytes(batch);
    expect(mine.length).toBe(theirs.length);
    expect(mine.equals(theirs)).toBe(true);
    // The SDK's own request for the spans as they were made.
    expect(mine.equals(Buffer.from(ProtobufTraceSerializer.serializeRequest(interleaved)!))).toBe(true);
    // A second batch reuses the writer's buffer: still exact, and the first result was not overwritten.
    const small = await wireTrip(b);
    expect(Buffer.from(encodeSpanBatch(small)).equals(sdkBytes(small))).toBe(true);
    expect(mine.equals(theirs)).toBe(true);
  });

  it('an empty batch is an empty request', () => {
    const empty: SpanBatch = { resources: [], scopes: [], spans: [] };
    expect(Buffer.from(encodeSpanBatch(empty)).equals(Buffer.from(ProtobufTraceSerializer.serializeRequest([])!))).toBe(true);
  });
});

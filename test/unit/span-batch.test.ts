/**
 * The controller's export thread (libs/adapters/src/telemetry/export-thread.ts): spans made by the real SDK go to the
 * thread as plain data (span-batch.ts) and leave it as the OTLP request the SDK's own exporter would send.
 * - Round trip: the batch, structured-cloned as postMessage does, rebuilds spans whose OTLP request (JSON and
 *   protobuf, by OpenTelemetry's own serializers) equals the original spans' request, byte for byte.
 * - The thread: a real worker thread with the real OTLP/HTTP exporters (http/json and http/protobuf), posting to a
 *   receiver in this test; what arrives equals the serializers' request for the original spans.
 * The worker runs the compiled entry (libs/adapters/dist): `npx tsc -b` first, as the test command does.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SpanKind, SpanStatusCode, TraceFlags, context, trace, createTraceState } from '@opentelemetry/api';
import { BasicTracerProvider, BatchSpanProcessor, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan, type SpanExporter, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { RowSpanProcessor, fromSpanBatch, toSpanBatch, type SpanBatch } from '../../libs/adapters/src/telemetry/span-batch';
import { ThreadSpanExporter } from '../../libs/adapters/src/telemetry/export-thread';

/**
 * Spans of every shape the controller makes: server and internal spans, parents, links, events, errors, trace state.
 * `also`: more processors on the same provider (they see the same spans end).
 */
function makeSpans(also: SpanProcessor[] = []): ReadableSpan[] {
  const memory = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'underlay-controller', 'service.instance.id': 'c1' }),
    spanProcessors: [new SimpleSpanProcessor(memory), ...also],
  });
  const tracer = provider.getTracer('underlay', '0.1.0');
  const remote = trace.setSpanContext(context.active(), {
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    spanId: '00f067aa0ba902b7',
    traceFlags: TraceFlags.SAMPLED,
    isRemote: true,
    traceState: createTraceState('vendor=a,other=b'),
  });
  const request = tracer.startSpan('ipam.requestAddress', { kind: SpanKind.SERVER, attributes: { 'messaging.system': 'nats', 'underlay.node': 'h1', 'underlay.seq': 42 } }, remote);
  const decide = tracer.startSpan('decide', { attributes: { 'underlay.address': '198.51.100.7', flags: [true, false], sizes: [1, 2, 3] } }, trace.setSpan(context.active(), request));
  decide.addEvent('pool chosen', { 'underlay.network': 'n1' });
  decide.setStatus({ code: SpanStatusCode.ERROR, message: 'pool exhausted' });
  decide.end();
  const commit = tracer.startSpan('etcd.commit', { links: [{ context: request.spanContext(), attributes: { 'underlay.seq': 43 } }, { context: trace.getSpanContext(remote)! }] });
  commit.end();
  request.end();
  return memory.getFinishedSpans();
}

const rebuild = (spans: ReadableSpan[]): ReadableSpan[] =>
  fromSpanBatch(structuredClone(toSpanBatch(spans)), (r) => resourceFromAttributes(r.attributes, r.schemaUrl ? { schemaUrl: r.schemaUrl } : undefined));

describe('span batches', () => {
  it('rebuild spans whose OTLP request equals the original spans’ request (JSON and protobuf)', () => {
    const spans = makeSpans();
    expect(spans).toHaveLength(3);
    const copy = rebuild(spans);
    const json = (s: ReadableSpan[]) => JSON.parse(Buffer.from(JsonTraceSerializer.serializeRequest(s)!).toString('utf8'));
    expect(json(copy)).toEqual(json(spans));
    expect(Buffer.from(ProtobufTraceSerializer.serializeRequest(copy)!).equals(Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!))).toBe(true);
    // The parts a careless copy loses: trace state, the remote parent, links, events, the error status.
    const [request] = json(copy).resourceSpans[0].scopeSpans[0].spans.filter((s: { name: string }) => s.name === 'ipam.requestAddress');
    expect(request.traceState).toBe('vendor=a,other=b');
    expect(request.parentSpanId).toBe('00f067aa0ba902b7');
  });

  it('are the same when a RowSpanProcessor queued the spans as rows in the SDK\'s BatchSpanProcessor', async () => {
    const batches: SpanBatch[] = [];
    // What ThreadSpanExporter does with what the BatchSpanProcessor hands it.
    const exporter: SpanExporter = { export: (spans, done) => (batches.push(toSpanBatch(spans)), done({ code: ExportResultCode.SUCCESS })), shutdown: async () => {} };
    const rows = new RowSpanProcessor(new BatchSpanProcessor(exporter, { scheduledDelayMillis: 60_000 }));
    const spans = makeSpans([rows]);
    expect(batches).toHaveLength(0); // queued, not yet exported
    await rows.forceFlush();
    expect(batches).toEqual([toSpanBatch(spans)]);
    expect(structuredClone(batches[0])).toEqual(batches[0]);
  });

  it('keep one resource and scope entry per distinct resource and scope', () => {
    const batch = toSpanBatch(makeSpans());
    expect(batch.resources).toHaveLength(1);
    expect(batch.scopes).toEqual([{ name: 'underlay', version: '0.1.0' }]);
  });
});

describe('the export thread', () => {
  let server: http.Server;
  let endpoint: string;
  const received: { type: string; body: Buffer }[] = [];
  let status = 200;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({ type: String(req.headers['content-type']), body: Buffer.concat(chunks) });
        res.writeHead(status, { 'content-type': String(req.headers['content-type']) }).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));
  beforeEach(() => {
    received.length = 0;
    status = 200;
  });

  const exportOnce = (exporter: ThreadSpanExporter, spans: ReadableSpan[]) => new Promise<ExportResult>((r) => exporter.export(spans, r));

  it.each([
    ['http/json', (s: ReadableSpan[]) => Buffer.from(JsonTraceSerializer.serializeRequest(s)!), 'application/json'],
    ['http/protobuf', (s: ReadableSpan[]) => Buffer.from(ProtobufTraceSerializer.serializeRequest(s)!), 'application/x-protobuf'],
  ])('exports with %s what the SDK’s exporter would send', async (protocol, serialize, type) => {
    const exporter = new ThreadSpanExporter({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: protocol } });
    try {
      const spans = makeSpans();
      expect((await exportOnce(exporter, spans)).code).toBe(ExportResultCode.SUCCESS);
      expect(received).toHaveLength(1);
      expect(received[0]!.type).toBe(type);
      const want = serialize(spans);
      if (protocol === 'http/json') expect(JSON.parse(received[0]!.body.toString('utf8'))).toEqual(JSON.parse(want.toString('utf8')));
      else expect(received[0]!.body.equals(want)).toBe(true);
    } finally {
      await exporter.shutdown();
    }
  });

  it('reports a refused export as failed, and fails exports after shutdown without throwing', async () => {
    const errors: string[] = [];
    const exporter = new ThreadSpanExporter({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }, onError: (m) => errors.push(m) });
    status = 400;
    const refused = await exportOnce(exporter, makeSpans());
    expect(refused.code).toBe(ExportResultCode.FAILED);
    expect(refused.error?.message).toBeTruthy();
    await exporter.shutdown();
    const after = await exportOnce(exporter, makeSpans());
    expect(after.code).toBe(ExportResultCode.FAILED);
    // A deliberate shutdown is not an error of the thread.
    expect(errors).toEqual([]);
  });
});

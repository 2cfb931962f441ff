/**
 * The controller's export path (libs/adapters/src/telemetry/export-thread.ts): spans made by the real SDK are written
 * as they end (span-wire.ts), cross to a worker thread and leave it as the OTLP request the SDK's own exporter would
 * send.
 * - Round trip: the batch, transferred as postMessage does and read back, rebuilds spans whose OTLP request (JSON and
 *   protobuf, by OpenTelemetry's own serializers) equals the original spans' request, byte for byte.
 * - The processor: a real worker thread with the real OTLP/HTTP exporters (http/json and http/protobuf), posting to a
 *   receiver in this test; what arrives equals the serializers' request for the original spans; the SDK's batching
 *   settings (OTEL_BSP_*), unsampled spans, a full queue, failed exports and shutdown.
 * The worker runs the compiled entry (libs/adapters/dist): `npx tsc -b` first, as the test command does.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SpanKind, SpanStatusCode, TraceFlags, context, trace, createTraceState } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SamplingDecision, SimpleSpanProcessor, type ReadableSpan, type Sampler, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { fromSpanBatch } from '../../libs/adapters/src/telemetry/span-batch';
import { ThreadSpanProcessor } from '../../libs/adapters/src/telemetry/export-thread';
import { SpanWriter } from '../../libs/adapters/src/telemetry/span-wire';
import { wireTrip } from './span-wire-trip';

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

// The export thread's tests wait for a worker to start (about a second on a loaded 2-core machine).
jest.setTimeout(60_000);

const rebuild = async (spans: ReadableSpan[]): Promise<ReadableSpan[]> =>
  fromSpanBatch(await wireTrip(spans), (r) => resourceFromAttributes(r.attributes, r.schemaUrl ? { schemaUrl: r.schemaUrl } : undefined));

describe('span batches', () => {
  it('rebuild spans whose OTLP request equals the original spans’ request (JSON and protobuf)', async () => {
    const spans = makeSpans();
    expect(spans).toHaveLength(3);
    const copy = await rebuild(spans);
    const json = (s: ReadableSpan[]) => JSON.parse(Buffer.from(JsonTraceSerializer.serializeRequest(s)!).toString('utf8'));
    expect(json(copy)).toEqual(json(spans));
    expect(Buffer.from(ProtobufTraceSerializer.serializeRequest(copy)!).equals(Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!))).toBe(true);
    // The parts a careless copy loses: trace state, the remote parent, links, events, the error status.
    const [request] = json(copy).resourceSpans[0].scopeSpans[0].spans.filter((s: { name: string }) => s.name === 'ipam.requestAddress');
    expect(request.traceState).toBe('vendor=a,other=b');
    expect(request.parentSpanId).toBe('00f067aa0ba902b7');
  });

  it('carry counts past 2^32, links without attributes and events’ dropped counts, in a buffer used again', async () => {
    const [base] = makeSpans();
    const odd: ReadableSpan = {
      ...base!,
      spanContext: () => base!.spanContext(),
      droppedAttributesCount: 2 ** 32 + 5,
      droppedEventsCount: 2 ** 40,
      droppedLinksCount: 7,
      links: [{ context: base!.spanContext() }],
      events: [{ name: 'évènement', time: [1, 2], droppedAttributesCount: 3 }],
    };
    const writer = new SpanWriter(64);
    const first = await wireTrip([odd], writer);
    const [row] = first.spans;
    expect([row![21], row![22], row![23]]).toEqual([2 ** 32 + 5, 2 ** 40, 7]);
    const sc = base!.spanContext();
    expect(row![19]).toEqual([[sc.traceId, sc.spanId, TraceFlags.SAMPLED, -1, 'vendor=a,other=b', 0, 0]]);
    expect(row![20]).toEqual([{ name: 'évènement', time: [1, 2], droppedAttributesCount: 3 }]);
    // The buffer the first trip sent back is written again: the same rows.
    expect(await wireTrip([odd], writer)).toEqual(first);
  });

  it('carry a batch with more distinct attribute keys than its string table holds, and a parent in another trace', async () => {
    const [first] = makeSpans();
    // A plain copy (the SDK's counts are getters a spread leaves out).
    const base: ReadableSpan = { ...first!, droppedAttributesCount: 0, droppedEventsCount: 0, droppedLinksCount: 0 };
    const sc = first!.spanContext();
    // 5,000 distinct keys (the table holds 4,096; the rest go whole) and keys repeated across spans.
    const many: ReadableSpan[] = Array.from({ length: 50 }, (_, i) => ({
      ...base!,
      spanContext: () => sc,
      attributes: Object.fromEntries([...Array.from({ length: 100 }, (_, k) => [`key.${i}.${k}`, k]), ['underlay.node', `h${i}`], ['messaging.system', 'nats']]),
    }));
    const foreign: ReadableSpan = { ...base!, spanContext: () => sc, parentSpanContext: { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1 } };
    const spans = [...many, foreign, ...many.slice(0, 3)];
    const json = (s: ReadableSpan[]) => JSON.parse(Buffer.from(JsonTraceSerializer.serializeRequest(s)!).toString('utf8'));
    const copy = await rebuild(spans);
    expect(json(copy)).toEqual(json(spans));
    const out = json(copy).resourceSpans[0].scopeSpans[0].spans;
    expect(out[50].parentSpanId).toBe('b7ad6b7169203331');
    expect(out[50].traceId).toBe(sc.traceId);
    expect(out[0].parentSpanId).toBe(base!.parentSpanContext!.spanId);
  });

  it('keep one resource and scope entry per distinct resource and scope, and grow past their first buffer', async () => {
    const batch = await wireTrip(makeSpans());
    expect(batch.resources).toHaveLength(1);
    expect(batch.scopes).toEqual([{ name: 'underlay', version: '0.1.0' }]);
    // Two providers: two resources and scopes, each span pointing at its own.
    const two = await wireTrip([...makeSpans(), ...makeSpans()]);
    expect(two.resources).toHaveLength(2);
    expect(two.spans.map((r) => [r[24], r[25]])).toEqual([[0, 0], [0, 0], [0, 0], [1, 1], [1, 1], [1, 1]]);
  });
});

describe('the export thread (ThreadSpanProcessor)', () => {
  let server: http.Server;
  let endpoint: string;
  const received: { type: string; body: Buffer }[] = [];
  let status = 200;
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ type: String(req.headers['content-type']), body: Buffer.concat(chunks) });
      res.writeHead(status, { 'content-type': String(req.headers['content-type']) }).end();
    });
  };
  beforeAll(async () => {
    server = http.createServer(handler);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));
  beforeEach(() => {
    received.length = 0;
    status = 200;
  });

  /** A provider whose spans go to a ThreadSpanProcessor with these settings (and are counted as they end). */
  function threaded(env: Record<string, string>, sampler?: Sampler) {
    const errors: string[] = [];
    const processor = new ThreadSpanProcessor({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf', ...env }, onError: (m) => errors.push(m) });
    const ended = { count: 0 };
    const counter: SpanProcessor = { onStart: () => {}, onEnd: () => void ended.count++, forceFlush: async () => {}, shutdown: async () => {} };
    const provider = new BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': 'underlay-controller' }),
      spanProcessors: [counter, processor],
      ...(sampler ? { sampler } : {}),
    });
    const tracer = provider.getTracer('underlay');
    const spans = (n: number) => {
      for (let i = 0; i < n; i++) tracer.startSpan(`span ${i}`, { attributes: { i } }).end();
    };
    return { processor, ended, spans, errors };
  }
  /** Polls `ok`; the tests that use it get a longer jest timeout than `ms` (the worker may take a second to start). */
  const until = async (what: string, ok: () => boolean, ms = 30_000) => {
    const end = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > end) throw new Error(`waited ${ms} ms for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  /** Spans in the protobuf requests received (counted by their names in the bytes). */
  const receivedSpans = () => received.reduce((n, r) => n + (r.body.toString('latin1').match(/span \d+/g) ?? []).length, 0);

  it.each([
    ['http/json', (s: ReadableSpan[]) => Buffer.from(JsonTraceSerializer.serializeRequest(s)!), 'application/json'],
    ['http/protobuf', (s: ReadableSpan[]) => Buffer.from(ProtobufTraceSerializer.serializeRequest(s)!), 'application/x-protobuf'],
  ])('exports with %s what the SDK’s exporter would send', async (protocol, serialize, type) => {
    const processor = new ThreadSpanProcessor({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: protocol } });
    try {
      const spans = makeSpans([processor]);
      expect(received).toHaveLength(0); // batched: waits for a full batch or its delay
      await processor.forceFlush();
      expect(received).toHaveLength(1);
      expect(received[0]!.type).toBe(type);
      const want = serialize(spans);
      if (protocol === 'http/json') expect(JSON.parse(received[0]!.body.toString('utf8'))).toEqual(JSON.parse(want.toString('utf8')));
      else expect(received[0]!.body.equals(want)).toBe(true);
    } finally {
      await processor.shutdown();
    }
  });

  it('sends a full batch at once (OTEL_BSP_MAX_EXPORT_BATCH_SIZE), the rest only when flushed', async () => {
    // A delay no test run reaches: what arrives before the flush was sent because its batch was full.
    const t = threaded({ OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '4', OTEL_BSP_SCHEDULE_DELAY: '600000' });
    try {
      t.spans(6);
      await until('the full batch', () => receivedSpans() >= 4);
      expect(receivedSpans()).toBe(4);
      await t.processor.forceFlush();
      expect(received.map((r) => (r.body.toString('latin1').match(/span \d+/g) ?? []).length)).toEqual([4, 2]);
      expect(t.processor.queuedSpans).toBe(0);
      expect(t.errors).toEqual([]);
    } finally {
      await t.processor.shutdown();
    }
  });

  it('sends a batch that is not full after OTEL_BSP_SCHEDULE_DELAY, without a flush', async () => {
    const t = threaded({ OTEL_BSP_SCHEDULE_DELAY: '200' });
    try {
      t.spans(2);
      await until('the batch after its delay', () => receivedSpans() === 2);
      expect(received).toHaveLength(1);
    } finally {
      await t.processor.shutdown();
    }
  });

  it('exports only sampled spans', async () => {
    // Recorded, not sampled: the processor sees them end and must not export them.
    const t = threaded({}, { shouldSample: () => ({ decision: SamplingDecision.RECORD }), toString: () => 'record only' });
    try {
      t.spans(3);
      expect(t.ended.count).toBe(3);
      await t.processor.forceFlush();
      expect(received).toHaveLength(0);
    } finally {
      await t.processor.shutdown();
    }
  });

  it('drops spans past OTEL_BSP_MAX_QUEUE_SIZE while exports are out, and says how many once', async () => {
    let release = () => {};
    const held = new Promise<void>((r) => (release = r));
    server.removeAllListeners('request');
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({ type: String(req.headers['content-type']), body: Buffer.concat(chunks) });
        void held.then(() => res.writeHead(200, { 'content-type': String(req.headers['content-type']) }).end());
      });
    });
    const t = threaded({ OTEL_BSP_MAX_QUEUE_SIZE: '4', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '4' });
    try {
      t.spans(4); // one full batch, out and unanswered
      await until('the batch at the receiver', () => received.length === 1);
      t.spans(3); // the queue is full: dropped
      expect(t.errors).toEqual([]);
      release();
      await t.processor.forceFlush(); // the first batch answered: room again
      t.spans(1);
      expect(t.errors).toEqual(['tracing: 3 spans dropped: the export queue was full (OTEL_BSP_MAX_QUEUE_SIZE 4)']);
      await t.processor.forceFlush();
      expect(receivedSpans()).toBe(5);
    } finally {
      release();
      await t.processor.shutdown();
      server.removeAllListeners('request');
      server.on('request', handler);
    }
  });

  it('reports failed exports once, and once again when they work', async () => {
    const t = threaded({});
    try {
      status = 400;
      t.spans(2);
      await t.processor.forceFlush();
      t.spans(3);
      await t.processor.forceFlush();
      expect(t.errors).toHaveLength(1);
      expect(t.errors[0]).toMatch(/^tracing: span export failed, 2 spans lost: .+ \(reported again when exports work\)$/);
      status = 200;
      t.spans(1);
      await t.processor.forceFlush();
      expect(t.errors[1]).toBe('tracing: span export works again (2 batches, 5 spans were lost meanwhile)');
      expect(t.errors).toHaveLength(2);
    } finally {
      await t.processor.shutdown();
    }
  });

  it('exports what waits at shutdown, then takes no more spans and reports no error', async () => {
    const t = threaded({});
    t.spans(2);
    await t.processor.shutdown();
    expect(receivedSpans()).toBe(2);
    t.spans(2);
    expect(t.processor.queuedSpans).toBe(0); // not even written
    await t.processor.forceFlush();
    await t.processor.shutdown();
    expect(receivedSpans()).toBe(2);
    expect(t.errors).toEqual([]);
  });
});

/**
 * An OTLP/HTTP trace receiver for tests: accepts `POST /v1/traces` with a JSON body (exporters configured with
 * OTEL_EXPORTER_OTLP_PROTOCOL=http/json; no protobuf decoding) and keeps every span, flattened with its service.
 */
import * as http from 'node:http';

export interface ReceivedSpan {
  service: string;
  instance?: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  /** OTLP's SpanKind number: 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  kind: number;
  attributes: Record<string, string | number | boolean>;
  links: { traceId: string; spanId: string }[];
  startNs: bigint;
  endNs: bigint;
  status?: { code?: number; message?: string };
}

export const KIND = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;

/** OTLP/JSON ids are hex; some exporters send base64: both become hex. */
function hexId(v: unknown): string {
  if (typeof v !== 'string' || v === '') return '';
  if (/^[0-9a-f]+$/i.test(v) && (v.length === 32 || v.length === 16)) return v.toLowerCase();
  return Buffer.from(v, 'base64').toString('hex');
}

interface AnyValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
}
function value(v: AnyValue | undefined): string | number | boolean {
  if (!v) return '';
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.boolValue !== undefined) return v.boolValue;
  return JSON.stringify(v);
}
function attrs(list: { key: string; value?: AnyValue }[] | undefined): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const a of list ?? []) out[a.key] = value(a.value);
  return out;
}

/** Flattens one OTLP/JSON ExportTraceServiceRequest. */
export function spansOf(body: unknown): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  const req = body as { resourceSpans?: { resource?: { attributes?: { key: string; value?: AnyValue }[] }; scopeSpans?: { spans?: Record<string, unknown>[] }[] }[] };
  for (const rs of req.resourceSpans ?? []) {
    const res = attrs(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        const parent = hexId(s.parentSpanId);
        out.push({
          service: String(res['service.name'] ?? ''),
          ...(res['service.instance.id'] !== undefined ? { instance: String(res['service.instance.id']) } : {}),
          traceId: hexId(s.traceId),
          spanId: hexId(s.spanId),
          ...(parent ? { parentSpanId: parent } : {}),
          name: String(s.name),
          kind: Number(s.kind ?? 0),
          attributes: attrs(s.attributes as { key: string; value?: AnyValue }[]),
          links: ((s.links as { traceId: string; spanId: string }[] | undefined) ?? []).map((l) => ({ traceId: hexId(l.traceId), spanId: hexId(l.spanId) })),
          startNs: BigInt(String(s.startTimeUnixNano ?? 0)),
          endNs: BigInt(String(s.endTimeUnixNano ?? 0)),
          ...(s.status ? { status: s.status as { code?: number; message?: string } } : {}),
        });
      }
    }
  }
  return out;
}

export interface OtlpReceiver {
  /** `http://HOST:PORT` for OTEL_EXPORTER_OTLP_ENDPOINT. */
  endpoint: string;
  spans: ReceivedSpan[];
  /** Requests received (any path), and bodies that were not OTLP/JSON. */
  requests: number;
  rejected: number;
  /** OTLP/protobuf bodies (http/protobuf exporters): accepted and counted, not decoded. */
  protobufBodies: number;
  /** Resolves when a span matching `pred` has arrived (rejects after timeoutMs, naming `what`). */
  waitFor(what: string, pred: (s: ReceivedSpan) => boolean, timeoutMs: number): Promise<ReceivedSpan>;
  close(): Promise<void>;
}

/** Starts a receiver on `host` (default 127.0.0.1), on an ephemeral port unless one is given. */
export async function startOtlpReceiver(host = '127.0.0.1', port = 0): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const waiters = new Set<() => void>();
  const r: OtlpReceiver = {
    endpoint: '',
    spans,
    requests: 0,
    rejected: 0,
    protobufBodies: 0,
    waitFor(what, pred, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = (): boolean => {
          const s = spans.find(pred);
          if (!s) return false;
          clearTimeout(timer);
          waiters.delete(onSpans);
          resolve(s);
          return true;
        };
        const onSpans = () => void check();
        const timer = setTimeout(() => {
          waiters.delete(onSpans);
          reject(new Error(`no span ${what} within ${timeoutMs} ms (received ${spans.length}: ${[...new Set(spans.map((s) => `${s.service}:${s.name}`))].join(', ')})`));
        }, timeoutMs);
        if (!check()) waiters.add(onSpans);
      });
    },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
  const server = http.createServer((req, res) => {
    r.requests++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || (req.url ?? '').split('?')[0] !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      if ((req.headers['content-type'] ?? '').includes('protobuf')) {
        r.protobufBodies++;
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
        return;
      }
      try {
        spans.push(...spansOf(JSON.parse(Buffer.concat(chunks).toString('utf8'))));
      } catch {
        r.rejected++;
        res.writeHead(400, { 'content-type': 'application/json' }).end('{}');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      for (const w of [...waiters]) w();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address() as { address: string; port: number };
  r.endpoint = `http://${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`;
  return r;
}

/** The OTEL_* environment of a traced process exporting to `endpoint` (always-on sampling, short batch delay). */
export function otelEnv(endpoint: string): Record<string, string> {
  return {
    OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_TRACES_SAMPLER: 'always_on',
    OTEL_BSP_SCHEDULE_DELAY: '100',
  };
}

/**
 * An OTLP/gRPC trace receiver (OTEL_EXPORTER_OTLP_PROTOCOL=grpc): answers TraceService/Export with an empty
 * response and counts the calls and bytes (no protobuf decoding).
 */
export async function startOtlpGrpcReceiver(host = '127.0.0.1'): Promise<{ endpoint: string; exports: number; bytes: number; close(): Promise<void> }> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const grpc = require('@grpc/grpc-js') as typeof import('@grpc/grpc-js');
  const server = new grpc.Server();
  const out = { endpoint: '', exports: 0, bytes: 0, close: () => new Promise<void>((r) => server.tryShutdown(() => r())) };
  const raw = (b: Buffer) => b;
  server.register<Buffer, Buffer>(
    '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
    (call: { request: Buffer }, callback: (err: null, res: Buffer) => void) => {
      out.exports++;
      out.bytes += call.request.length;
      callback(null, Buffer.alloc(0));
    },
    raw,
    raw,
    'unary',
  );
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(`${host}:0`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  out.endpoint = `http://${host}:${port}`;
  return out;
}

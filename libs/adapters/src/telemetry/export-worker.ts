/**
 * The export thread's entry (a worker_threads Worker started by export-thread.ts): the OTLP exporter the
 * environment names (OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL `http/protobuf` | `http/json` | `grpc`, endpoint, headers
 * and timeout read by the exporter itself, as the SDK does), fed with the batches the service's thread sends.
 * The OTLP transformation and encoding run here, not on the thread that serves requests.
 *
 * Messages in: {type:'export', id, batch} | {type:'flush', id} | {type:'shutdown', id}; out: {id, ok, error?}.
 */
import { parentPort } from 'node:worker_threads';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { fromSpanBatch, type SpanBatch } from './span-batch.js';

export type ExportRequest = { type: 'export'; id: number; batch: SpanBatch } | { type: 'flush' | 'shutdown'; id: number };
export interface ExportReply {
  id: number;
  ok: boolean;
  error?: string;
}

/** The exporter of OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL (as the Node SDK chooses it). */
export function otlpExporterFromEnv(env: NodeJS.ProcessEnv = process.env): SpanExporter {
  const protocol = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? '').trim() || (env.OTEL_EXPORTER_OTLP_PROTOCOL ?? '').trim() || 'http/protobuf';
  /* eslint-disable @typescript-eslint/no-require-imports */
  switch (protocol) {
    case 'grpc':
      return new (require('@opentelemetry/exporter-trace-otlp-grpc') as typeof import('@opentelemetry/exporter-trace-otlp-grpc')).OTLPTraceExporter();
    case 'http/json':
      return new (require('@opentelemetry/exporter-trace-otlp-http') as typeof import('@opentelemetry/exporter-trace-otlp-http')).OTLPTraceExporter();
    default:
      // http/protobuf, and what the SDK falls back to for an unknown protocol.
      return new (require('@opentelemetry/exporter-trace-otlp-proto') as typeof import('@opentelemetry/exporter-trace-otlp-proto')).OTLPTraceExporter();
  }
  /* eslint-enable @typescript-eslint/no-require-imports */
}

function serve(port: NonNullable<typeof parentPort>): void {
  const exporter = otlpExporterFromEnv();
  const reply = (r: ExportReply): void => port.postMessage(r);
  const fail = (id: number, e: unknown): void => reply({ id, ok: false, error: e instanceof Error ? e.message : String(e) });
  port.on('message', (m: ExportRequest) => {
    if (m.type === 'export') {
      try {
        const spans = fromSpanBatch(m.batch, (r) => resourceFromAttributes(r.attributes, r.schemaUrl ? { schemaUrl: r.schemaUrl } : undefined));
        exporter.export(spans, (res) => reply({ id: m.id, ok: res.code === 0, ...(res.error ? { error: res.error.message } : {}) }));
      } catch (e) {
        fail(m.id, e);
      }
    } else if (m.type === 'flush') {
      (exporter.forceFlush ? exporter.forceFlush() : Promise.resolve()).then(() => reply({ id: m.id, ok: true }), (e: unknown) => fail(m.id, e));
    } else {
      exporter.shutdown().then(() => reply({ id: m.id, ok: true }), (e: unknown) => fail(m.id, e));
    }
  });
}

if (parentPort) serve(parentPort);

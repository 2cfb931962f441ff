/**
 * The export thread's entry (a worker_threads Worker started by export-thread.ts): the OTLP exporter the
 * environment names (OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL `http/protobuf` | `http/json` | `grpc`, endpoint, headers
 * and timeout read by the exporter itself, as the SDK does), fed with the batches the service's thread sends.
 * The batches arrive as written (span-wire.ts) and are read into rows here; the OTLP transformation and encoding run
 * here, not on the thread that serves requests: for http/protobuf straight from the rows (otlp-rows.ts), for
 * http/json and grpc through the SDK's exporter.
 *
 * Messages in: {type:'export', id, wire} | {type:'flush', id} | {type:'shutdown', id}; out: {id, ok, error?}, and
 * {id: 0, ok, buffer} handing an export's buffer back once it is read.
 */
import { parentPort } from 'node:worker_threads';
import type { SpanExporter } from '@opentelemetry/sdk-trace-base';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ExportResult } from '@opentelemetry/core';
import { OTLPExporterBase } from '@opentelemetry/otlp-exporter-base';
import { convertLegacyHttpOptions, createOtlpHttpExportDelegate } from '@opentelemetry/otlp-exporter-base/node-http';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { fromSpanBatch, type SpanBatch } from './span-batch.js';
import { readSpanWire, type SpanWire } from './span-wire.js';
import { encodeSpanBatch } from './otlp-rows.js';

export type ExportRequest = { type: 'export'; id: number; wire: SpanWire } | { type: 'flush' | 'shutdown'; id: number };
export interface ExportReply {
  id: number;
  ok: boolean;
  error?: string;
  /** An export's buffer, sent back once read, for the service's thread to write into again. */
  buffer?: ArrayBuffer;
}

/** The exporter of OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL (as the Node SDK chooses it). */
export function otlpExporterFromEnv(env: NodeJS.ProcessEnv = process.env): SpanExporter {
  const protocol = otlpProtocol(env);
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

/** The protocol the SDK would use (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL, http/protobuf). */
export function otlpProtocol(env: NodeJS.ProcessEnv = process.env): string {
  return (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? '').trim() || (env.OTEL_EXPORTER_OTLP_PROTOCOL ?? '').trim() || 'http/protobuf';
}

/** A request already encoded (otlp-rows.ts) and how many spans it holds. */
interface EncodedSpans {
  bytes: Uint8Array;
  spans: number;
}

/**
 * http/protobuf: the batch is encoded from its rows at once (otlp-rows.ts) and sent by the SDK's own OTLP/HTTP
 * transport (endpoint, headers, timeout, compression, TLS and retries from the OTEL_* variables, as its
 * OTLPTraceExporter reads them), which is handed the bytes as they are.
 */
function encodedExporter(): OTLPExporterBase<EncodedSpans> {
  const options = convertLegacyHttpOptions({}, 'TRACES', 'v1/traces', { 'Content-Type': 'application/x-protobuf' });
  const serializer = { serializeRequest: (r: EncodedSpans) => r.bytes, deserializeResponse: (b: Uint8Array) => ProtobufTraceSerializer.deserializeResponse(b) };
  return new OTLPExporterBase(createOtlpHttpExportDelegate(options, serializer, 'otlp_http_span_exporter', { name: 'span', countItems: (r: EncodedSpans) => r.spans }, undefined));
}

/** What the thread does with a batch: the exporter of the configured protocol, fed from the rows. */
interface BatchExporter {
  export(batch: SpanBatch, done: (r: ExportResult) => void): void;
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

function batchExporter(): BatchExporter {
  if (otlpProtocol() === 'http/protobuf') {
    const e = encodedExporter();
    return { export: (batch, done) => e.export({ bytes: encodeSpanBatch(batch), spans: batch.spans.length }, done), forceFlush: () => e.forceFlush(), shutdown: () => e.shutdown() };
  }
  const e = otlpExporterFromEnv();
  return {
    export: (batch, done) => e.export(fromSpanBatch(batch, (r) => resourceFromAttributes(r.attributes, r.schemaUrl ? { schemaUrl: r.schemaUrl } : undefined)), done),
    forceFlush: () => (e.forceFlush ? e.forceFlush() : Promise.resolve()),
    shutdown: () => e.shutdown(),
  };
}

function serve(port: NonNullable<typeof parentPort>): void {
  const exporter = batchExporter();
  const reply = (r: ExportReply): void => port.postMessage(r);
  const fail = (id: number, e: unknown): void => reply({ id, ok: false, error: e instanceof Error ? e.message : String(e) });
  port.on('message', (m: ExportRequest) => {
    if (m.type === 'export') {
      try {
        const batch = readSpanWire(m.wire);
        // Read: the buffer goes back at once (id 0 answers no request).
        port.postMessage({ id: 0, ok: true, buffer: m.wire.buffer } satisfies ExportReply, [m.wire.buffer]);
        exporter.export(batch, (res) => reply({ id: m.id, ok: res.code === 0, ...(res.error ? { error: res.error.message } : {}) }));
      } catch (e) {
        fail(m.id, e);
      }
    } else if (m.type === 'flush') {
      exporter.forceFlush().then(() => reply({ id: m.id, ok: true }), (e: unknown) => fail(m.id, e));
    } else {
      exporter.shutdown().then(() => reply({ id: m.id, ok: true }), (e: unknown) => fail(m.id, e));
    }
  });
}

if (parentPort) serve(parentPort);

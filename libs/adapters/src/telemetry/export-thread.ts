/**
 * A SpanExporter that exports on a worker thread: the BatchSpanProcessor on the service's thread hands each batch
 * over as plain data (span-batch.ts, one structured clone) and the thread (export-worker.ts) runs the OTLP exporter
 * the environment names. The controller uses it: at thousands of requests a second, turning spans into OTLP
 * protobuf was a tenth of its thread's time (bench:ipam's tracing ratio), time taken from serving requests.
 *
 * The thread holds the process open only while a request to it is outstanding. If it dies, exports fail (the SDK
 * drops those spans and says so through its diag logger) and the error is reported once.
 */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { toSpanBatch, type EndedSpan } from './span-batch.js';
import type { ExportReply, ExportRequest } from './export-worker.js';

/** The compiled worker entry (under ts-jest this module runs from src/, the entry from dist/). */
function workerEntry(): string {
  const js = path.join(__dirname, 'export-worker.js');
  return __filename.endsWith('.ts') ? path.join(__dirname, '../../dist/telemetry/export-worker.js') : js;
}

type Distributive<T> = T extends unknown ? Omit<T, 'id'> : never;

export class ThreadSpanExporter implements SpanExporter {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, (r: ExportReply) => void>();
  private dead: Error | undefined;
  private closed: Promise<void> | undefined;

  constructor(opts: { env?: NodeJS.ProcessEnv; onError?: (m: string) => void } = {}) {
    this.worker = new Worker(workerEntry(), { env: opts.env ?? process.env, stdout: false, stderr: false });
    this.worker.unref();
    this.worker.on('message', (r: ExportReply) => {
      const done = this.pending.get(r.id);
      if (!done) return;
      this.pending.delete(r.id);
      if (this.pending.size === 0) this.worker.unref();
      done(r);
    });
    const die = (e: Error): void => {
      if (this.dead) return;
      this.dead = e;
      opts.onError?.(`tracing: the export thread stopped: ${e.message}`);
      for (const [id, done] of this.pending) done({ id, ok: false, error: e.message });
      this.pending.clear();
    };
    this.worker.on('error', die);
    this.worker.on('exit', (code) => die(new Error(`exited with code ${code}`)));
  }

  private send(m: Distributive<ExportRequest>): Promise<ExportReply> {
    const id = this.nextId++;
    if (this.dead) return Promise.resolve({ id, ok: false, error: this.dead.message });
    return new Promise((resolve) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, resolve);
      this.worker.postMessage({ ...m, id });
    });
  }

  /** The SDK's spans, or the EndedSpans a RowSpanProcessor queued (typed as spans for the SDK's processor). */
  export(spans: (ReadableSpan | EndedSpan)[], resultCallback: (result: ExportResult) => void): void {
    this.send({ type: 'export', batch: toSpanBatch(spans) }).then((r) =>
      resultCallback(r.ok ? { code: ExportResultCode.SUCCESS } : { code: ExportResultCode.FAILED, error: new Error(r.error ?? 'export failed') }),
    );
  }

  async forceFlush(): Promise<void> {
    const r = await this.send({ type: 'flush' });
    if (!r.ok && !this.dead) throw new Error(r.error);
  }

  shutdown(): Promise<void> {
    return (this.closed ??= this.send({ type: 'shutdown' }).then(async () => {
      this.dead ??= new Error('shut down');
      await this.worker.terminate();
    }));
  }
}

/**
 * A SpanProcessor that batches as the SDK's BatchSpanProcessor does and exports on a worker thread: each span is
 * written into the batch's buffer when it ends (span-wire.ts), the buffer is transferred to the thread when the batch
 * is full or its delay is up, and the thread (export-worker.ts) turns it into the OTLP request the environment names
 * and sends it. The controller uses it: at thousands of requests a second, the spans' way out (queued span objects,
 * a structured clone, OTLP encoding) was most of what tracing cost the thread that serves requests (bench:ipam's
 * tracing ratio).
 *
 * Hand-written in place of the SDK's BatchSpanProcessor because that one queues span objects (the garbage collector
 * then copies them while they wait) and hands its exporter arrays of them (which a thread can only get by a copy).
 * It keeps that processor's behaviour and settings: OTEL_BSP_MAX_EXPORT_BATCH_SIZE (512), OTEL_BSP_MAX_QUEUE_SIZE
 * (2048: spans written or on their way, past which new spans are dropped and counted), OTEL_BSP_SCHEDULE_DELAY
 * (5000 ms), OTEL_BSP_EXPORT_TIMEOUT (30000 ms: a batch the thread has not answered by then stops counting against
 * the queue); unsampled spans are not exported; forceFlush and shutdown export what is waiting first. Two differences:
 * the queue counts spans on their way to the collector too, so up to OTEL_BSP_MAX_QUEUE_SIZE / batch size requests
 * (4 by default) may be open at once where the SDK's sends one at a time; and forceFlush resolves when an export
 * failed (the failure is logged, once) where the SDK's rejects.
 *
 * The thread holds the process open only while a request to it is outstanding. A failed export, a full queue and a
 * dead thread are each reported once through `onError` (and the recovery once), not per batch.
 */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { TraceFlags } from '@opentelemetry/api';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { SpanWriter, plainResources } from './span-wire.js';
import type { ExportReply, ExportRequest } from './export-worker.js';

/** The compiled worker entry (under ts-jest this module runs from src/, the entry from dist/). */
function workerEntry(): string {
  const js = path.join(__dirname, 'export-worker.js');
  return __filename.endsWith('.ts') ? path.join(__dirname, '../../dist/telemetry/export-worker.js') : js;
}

type Distributive<T> = T extends unknown ? Omit<T, 'id'> : never;

/** The worker and its outstanding requests. */
class ExportThread {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, (r: ExportReply) => void>();
  dead: Error | undefined;

  constructor(env: NodeJS.ProcessEnv, onDeath: (e: Error) => void, onBuffer: (b: ArrayBuffer) => void) {
    this.worker = new Worker(workerEntry(), { env, stdout: false, stderr: false });
    this.worker.unref();
    this.worker.on('message', (r: ExportReply) => {
      if (r.buffer) return onBuffer(r.buffer);
      const done = this.pending.get(r.id);
      if (!done) return;
      this.pending.delete(r.id);
      if (this.pending.size === 0) this.worker.unref();
      done(r);
    });
    const die = (e: Error): void => {
      if (this.dead) return;
      this.dead = e;
      onDeath(e);
      for (const [id, done] of this.pending) done({ id, ok: false, error: e.message });
      this.pending.clear();
    };
    this.worker.on('error', die);
    this.worker.on('exit', (code) => die(new Error(`exited with code ${code}`)));
  }

  send(m: Distributive<ExportRequest>, transfer: ArrayBuffer[] = []): Promise<ExportReply> {
    const id = this.nextId++;
    if (this.dead) return Promise.resolve({ id, ok: false, error: this.dead.message });
    return new Promise((resolve) => {
      if (this.pending.size === 0) this.worker.ref();
      this.pending.set(id, resolve);
      this.worker.postMessage({ ...m, id }, transfer);
    });
  }

  terminate(): Promise<number> {
    return this.worker.terminate();
  }
}

export interface ThreadSpanProcessorOptions {
  /** The OTEL_* variables for the thread's exporter and the batching settings (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Failures, once per episode: the thread died, exports fail, the queue overflowed. */
  onError?: (m: string) => void;
}

/** A non-negative number from the environment (the SDK's reading of OTEL_BSP_*), else the default. */
function envNumber(env: NodeJS.ProcessEnv, name: string, dflt: number): number {
  const raw = (env[name] ?? '').trim();
  const v = raw ? Number(raw) : NaN;
  return Number.isFinite(v) && v >= 0 ? v : dflt;
}

export class ThreadSpanProcessor implements SpanProcessor {
  readonly maxExportBatchSize: number;
  readonly maxQueueSize: number;
  readonly scheduledDelayMillis: number;
  readonly exportTimeoutMillis: number;
  private readonly thread: ExportThread;
  private readonly report: (m: string) => void;
  private writer = new SpanWriter();
  private queued = 0;
  /** Spans written and not yet answered for (exported, failed or timed out). */
  get queuedSpans(): number {
    return this.queued;
  }
  private dropped = 0;
  /** While exports fail: how many batches and spans were lost. */
  private failing: { batches: number; spans: number } | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Exports on their way (forceFlush waits for them). */
  private readonly inFlight = new Set<Promise<void>>();
  private shut: Promise<void> | undefined;
  private stopping = false;

  constructor(opts: ThreadSpanProcessorOptions = {}) {
    const env = opts.env ?? process.env;
    this.report = opts.onError ?? (() => {});
    this.maxQueueSize = envNumber(env, 'OTEL_BSP_MAX_QUEUE_SIZE', 2048);
    this.maxExportBatchSize = Math.min(envNumber(env, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 512), this.maxQueueSize);
    this.scheduledDelayMillis = envNumber(env, 'OTEL_BSP_SCHEDULE_DELAY', 5000);
    this.exportTimeoutMillis = envNumber(env, 'OTEL_BSP_EXPORT_TIMEOUT', 30000);
    this.thread = new ExportThread(env, (e) => {
      if (!this.stopping) this.report(`tracing: the export thread stopped: ${e.message}; spans are dropped from now on`);
    }, (b) => this.writer.recycle(b));
  }

  onStart(): void {}

  onEnd(span: ReadableSpan): void {
    // After shutdown, or once the thread is dead (reported then), a span is not even written.
    if (this.shut || this.thread.dead || (span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
    if (this.queued >= this.maxQueueSize) {
      this.dropped++;
      return;
    }
    if (this.dropped > 0) {
      this.report(`tracing: ${this.dropped} spans dropped: the export queue was full (OTEL_BSP_MAX_QUEUE_SIZE ${this.maxQueueSize})`);
      this.dropped = 0;
    }
    this.writer.write(span);
    this.queued++;
    if (this.writer.spans >= this.maxExportBatchSize) this.exportBatch();
    else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.exportBatch();
      }, this.scheduledDelayMillis);
      this.timer.unref();
    }
  }

  /** Hands the batch written so far to the thread. */
  private exportBatch(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.writer.spans === 0) return;
    const { wire, resources } = this.writer.take();
    // The batch is settled once: by the thread's answer, a failure, or OTEL_BSP_EXPORT_TIMEOUT from now (a resource
    // detector that never ends included); flush waits for the settling, not for the thread.
    let settle!: (ok: boolean, error?: string) => void;
    const done = new Promise<void>((resolve) => {
      let settled = false;
      settle = (ok, error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timeout);
        this.queued -= wire.spans;
        this.outcome(ok, wire.spans, error);
        resolve();
      };
    });
    const timeout = setTimeout(() => settle(false, `no answer in ${this.exportTimeoutMillis} ms (OTEL_BSP_EXPORT_TIMEOUT)`), this.exportTimeoutMillis);
    timeout.unref();
    void (async () => {
      const plain = await plainResources(resources);
      const r = await this.thread.send({ type: 'export', wire: { ...wire, resources: plain } }, [wire.buffer]);
      settle(r.ok, r.error);
    })().catch((e: unknown) => settle(false, e instanceof Error ? e.message : String(e)));
    this.inFlight.add(done);
    void done.then(() => this.inFlight.delete(done));
  }

  private outcome(ok: boolean, spans: number, error: string | undefined): void {
    if (ok) {
      if (this.failing) {
        const f = this.failing;
        this.failing = undefined;
        this.report(`tracing: span export works again (${f.batches} batches, ${f.spans} spans were lost meanwhile)`);
      }
      return;
    }
    if (this.thread.dead && !this.failing) {
      // The thread's death was reported already.
      this.failing = { batches: 1, spans };
      return;
    }
    if (!this.failing) {
      this.failing = { batches: 0, spans: 0 };
      this.report(`tracing: span export failed, ${spans} spans lost: ${error ?? 'export failed'} (reported again when exports work)`);
    }
    this.failing.batches++;
    this.failing.spans += spans;
  }

  forceFlush(): Promise<void> {
    return this.shut ?? this.flush();
  }

  private async flush(): Promise<void> {
    this.exportBatch();
    await Promise.all([...this.inFlight]);
    const r = await this.thread.send({ type: 'flush' });
    if (!r.ok && !this.thread.dead) throw new Error(r.error);
  }

  shutdown(): Promise<void> {
    return (this.shut ??= (async () => {
      try {
        await this.flush();
      } finally {
        this.stopping = true;
        await this.thread.send({ type: 'shutdown' });
        await this.thread.terminate();
      }
    })());
  }
}

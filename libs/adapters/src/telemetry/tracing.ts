/**
 * OpenTelemetry traces, configured only by the standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL `http/protobuf` | `http/json` | `grpc`,
 * OTEL_TRACES_EXPORTER, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER(_ARG), OTEL_RESOURCE_ATTRIBUTES, OTEL_SDK_DISABLED).
 *
 * Off unless an exporter is configured: with no endpoint (and no console/zipkin exporter named), with
 * OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true, no SDK is loaded at all and every helper below runs its
 * function straight away (`on` is false): the cost is one boolean test per instrumented call.
 *
 * The trace context travels in NATS headers as W3C `traceparent` (a TextMapSetter/Getter over MsgHdrs). The same
 * header has always been sent (libs/core/src/trace.ts): with tracing on it is the CLIENT span's context, so the
 * trace id stored in each event is the trace id of the spans that made it.
 */
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  context,
  propagation,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type SpanContext,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
} from '@opentelemetry/api';
import type { MsgHdrs } from '@nats-io/transport-node';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';

export { ROOT_CONTEXT, SpanKind, type Attributes, type Context, type Link, type Span, type SpanContext };

/** Attribute names (messaging semantic conventions and underlay's own). */
export const attr = {
  messagingSystem: 'messaging.system',
  destination: 'messaging.destination.name',
  operation: 'messaging.operation.type',
  node: 'underlay.node',
  network: 'underlay.network',
  address: 'underlay.address',
  seq: 'underlay.seq',
} as const;

export interface TracingOptions {
  /** Default service name (OTEL_SERVICE_NAME wins): `underlay-controller` or `underlay-agent`. */
  service: string;
  /** `service.instance.id`: the controller's or the node's name. */
  instance: string;
  logger?: (m: string) => void;
  /** The environment to read (default process.env). */
  env?: NodeJS.ProcessEnv;
  /**
   * Tests only: these processors instead of the exporter the environment names (tracing then starts without an
   * endpoint). Jest cannot run the OTLP exporters (they load `http` by a dynamic import).
   */
  spanProcessors?: SpanProcessor[];
  /**
   * How a span's context reaches the code it calls. `async` (default; the agent, `up`): an AsyncLocalStorage context
   * manager, so spans nest through awaits by themselves. `explicit` (the controller): no context manager — Node 20's
   * AsyncLocalStorage puts a hook on every promise of the process, which at the controller's request rate cost more
   * than the spans themselves (bench:ipam) — and the controller hands each request's span to the spans it makes
   * (RpcContext.span → RequestContext.span → decide → commit link → publish). In that mode no span is "active":
   * log lines carry no trace_id and `traceMethods` wrappers make no spans.
   */
  contextPropagation?: 'async' | 'explicit';
  /**
   * Export on a worker thread (export-thread.ts) when the exporter is OTLP (the default): the OTLP transformation
   * and encoding leave the thread that serves requests. The controller sets it; other exporters (console, zipkin)
   * stay on the SDK's own processors.
   */
  exportThread?: boolean;
}

export interface Tracing {
  /** Flushes and stops the exporter. */
  shutdown(): Promise<void>;
  /** Benchmarks: stops (true) or resumes (false) making spans, the SDK staying loaded (tracing on vs off in one run). */
  pause(paused: boolean): void;
}

let contextManager: AsyncLocalStorageContextManager | undefined;
/** Explicit context propagation (no context manager): no context is ever active, so withSpan builds none. */
let explicit = false;

let enabled = false;
const TRACER = 'underlay';
/** The tracer of the running SDK (looked up once per start: getTracer builds a key and searches a map each call). */
let tracerCache: Tracer | undefined;
const tracer = (): Tracer => (tracerCache ??= trace.getTracer(TRACER));
const OPERATION = Symbol.for('underlay.operation');

/** True while an SDK is started in this process. */
export function tracingOn(): boolean {
  return enabled;
}

/** Why tracing stays off with this environment (undefined: it starts). */
export function tracingOffReason(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if ((env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true') return 'OTEL_SDK_DISABLED=true';
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '').split(',').map((s) => s.trim().toLowerCase()).filter((s) => s && s !== 'null');
  if (exporters.length > 0 && exporters.every((e) => e === 'none')) return 'OTEL_TRACES_EXPORTER=none';
  // Exporters that need no endpoint.
  if (exporters.some((e) => e === 'console' || e === 'zipkin')) return undefined;
  if (!(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? '').trim() && !(env.OTEL_EXPORTER_OTLP_ENDPOINT ?? '').trim()) return 'no OTEL_EXPORTER_OTLP_ENDPOINT';
  return undefined;
}

/**
 * Starts the OpenTelemetry Node SDK for traces when the environment configures an exporter; returns undefined (and
 * loads nothing) otherwise. Metrics and logs of the SDK stay off (Prometheus serves metrics).
 */
export function startTracing(opts: TracingOptions): Tracing | undefined {
  const env = opts.env ?? process.env;
  const off = tracingOffReason(env);
  if (off && !(opts.spanProcessors && !off.startsWith('OTEL_SDK_DISABLED'))) return undefined;
  if (enabled) throw new Error('tracing is already started in this process');
  // Loaded only when on: tracing off costs no module load.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { NodeSDK } = require('@opentelemetry/sdk-node') as typeof import('@opentelemetry/sdk-node');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { defaultResource, resourceFromAttributes } = require('@opentelemetry/resources') as typeof import('@opentelemetry/resources');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { AsyncLocalStorageContextManager: Manager } = require('@opentelemetry/context-async-hooks') as typeof import('@opentelemetry/context-async-hooks');
  contextManager = undefined;
  explicit = opts.contextPropagation === 'explicit';
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '').split(',').map((e) => e.trim().toLowerCase()).filter((e) => e && e !== 'null' && e !== 'none');
  const threaded = opts.exportThread && !opts.spanProcessors && exporters.every((e) => e === 'otlp');
  let spanProcessors = opts.spanProcessors;
  if (threaded) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { ThreadSpanProcessor } = require('./export-thread.js') as typeof import('./export-thread.js');
    // Batches as the SDK's BatchSpanProcessor does (OTEL_BSP_*), written as the spans end and exported on a thread.
    spanProcessors = [new ThreadSpanProcessor({ env, ...(opts.logger ? { onError: opts.logger } : {}) })];
  }
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { CryptoIdGenerator } = require('./ids.js') as typeof import('./ids.js');
  const sdk = new NodeSDK({
    idGenerator: new CryptoIdGenerator(),
    resource: defaultResource().merge(resourceFromAttributes({ 'service.instance.id': opts.instance })),
    // OTEL_SERVICE_NAME (read by the SDK's environment detector) wins over the default.
    ...((env.OTEL_SERVICE_NAME ?? '').trim() ? {} : { serviceName: opts.service }),
    ...(spanProcessors ? { spanProcessors } : {}),
    // null: no context manager at all (explicit propagation); the SDK's setupContextManager skips it (its type
    // does not say so).
    contextManager: (opts.contextPropagation === 'explicit' ? null : (contextManager = new Manager())) as unknown as undefined,
    instrumentations: [],
    metricReaders: [],
    logRecordProcessors: [],
  });
  sdk.start();
  tracerCache = undefined;
  enabled = true;
  opts.logger?.(`tracing on: ${env.OTEL_TRACES_EXPORTER || 'otlp'} ${env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT || ''} (${env.OTEL_EXPORTER_OTLP_PROTOCOL || 'http/protobuf'}${threaded ? ', exported on a worker thread' : ''}), service ${(env.OTEL_SERVICE_NAME ?? '').trim() || opts.service}, instance ${opts.instance}`);
  let done: Promise<void> | undefined;
  return {
    pause: (paused) => {
      if (done || enabled === !paused) return;
      enabled = !paused;
      // Paused is off: the context manager's promise hook goes too (it costs without any span).
      if (!contextManager) return;
      if (paused) {
        context.disable();
      } else {
        contextManager.enable();
        context.setGlobalContextManager(contextManager);
      }
    },
    shutdown: () =>
      (done ??= sdk.shutdown().then(
        () => {
          enabled = false;
        },
        (e) => {
          enabled = false;
          opts.logger?.(`tracing: shutdown failed: ${(e as Error).message}`);
        },
      )),
  };
}

/** Writes trace context into NATS message headers. */
export const natsHeaderSetter: TextMapSetter<MsgHdrs> = {
  set: (h, key, value) => h.set(key, value),
};

/** Reads trace context from NATS message headers (none: nothing). */
export const natsHeaderGetter: TextMapGetter<MsgHdrs | undefined> = {
  keys: (h) => (h ? h.keys() : []),
  get: (h, key) => h?.get(key) || undefined,
};

/** Plain header objects (HTTP requests, a traceparent string). */
const recordGetter: TextMapGetter<Record<string, string | string[] | undefined>> = {
  keys: (c) => Object.keys(c),
  get: (c, key) => c[key],
};

/** The context a W3C traceparent (or HTTP headers holding one) names, under `base` (default: the root). */
export function contextFrom(carrier: string | Record<string, string | string[] | undefined> | undefined, base: Context = ROOT_CONTEXT): Context {
  if (!enabled || !carrier) return base;
  return propagation.extract(base, typeof carrier === 'string' ? { traceparent: carrier } : carrier, recordGetter);
}

/** The context in NATS headers. */
export function contextFromNats(h: MsgHdrs | undefined, base: Context = ROOT_CONTEXT): Context {
  if (!enabled || !h) return base;
  return propagation.extract(base, h, natsHeaderGetter);
}

/** Puts the active (or the given) context into NATS headers. */
export function injectNats(h: MsgHdrs, ctx: Context = context.active()): void {
  propagation.inject(ctx, h, natsHeaderSetter);
}

/** A span's context as a W3C traceparent. */
export function traceparentOf(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/** The span context of the active span (tracing on and a span active), for links. */
export function activeSpanContext(): SpanContext | undefined {
  if (!enabled) return undefined;
  const sc = trace.getActiveSpan()?.spanContext();
  return sc && trace.isSpanContextValid(sc) ? sc : undefined;
}

/** The trace id of the active span (tracing on and a span active). */
export function activeTraceId(): string | undefined {
  return activeSpanContext()?.traceId;
}

/** A context whose parent is the given span (none: the root). */
export function traceContext(sc: SpanContext | undefined): Context {
  return sc ? trace.setSpanContext(ROOT_CONTEXT, sc) : ROOT_CONTEXT;
}

/** Runs fn with the given span as the active one (tracing off or none: as it is). */
export function runInSpan<T>(sc: SpanContext | undefined, fn: () => T): T {
  return enabled && sc ? context.with(trace.setSpanContext(ROOT_CONTEXT, sc), fn) : fn();
}

/** A link to the trace a W3C traceparent names. */
export function linkTo(traceparent: string | undefined, attributes?: Attributes): Link | undefined {
  if (!enabled || !traceparent) return undefined;
  const sc = trace.getSpanContext(contextFrom(traceparent));
  return sc && trace.isSpanContextValid(sc) ? { context: sc, ...(attributes ? { attributes } : {}) } : undefined;
}

const NOOP_SPAN = trace.wrapSpanContext({ traceId: '00000000000000000000000000000000', spanId: '0000000000000000', traceFlags: 0 });

export interface SpanOpts {
  kind?: SpanKind;
  attributes?: Attributes;
  links?: Link[];
  /** The parent (default: the active context). */
  parent?: Context;
  /** The operation (RPC method, HTTP route) the span serves, for currentOperation() inside it (withOperation). */
  operation?: string;
}

function endWith(span: Span, err?: unknown): void {
  if (err !== undefined) {
    span.recordException(err instanceof Error ? err : String(err));
    span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
    const code = (err as { code?: unknown })?.code;
    if (typeof code === 'string') span.setAttribute('error.type', code);
  }
  span.end();
}

/**
 * Runs `fn` inside a span (active while it runs; ended when it settles; an error marks it and goes on). With
 * tracing off, runs `fn` with a no-op span and nothing else.
 */
export function withSpan<T>(name: string, opts: SpanOpts, fn: (span: Span) => Promise<T>): Promise<T> {
  if (!enabled) return fn(NOOP_SPAN);
  const parent = opts.parent ?? context.active();
  const span = tracer().startSpan(name, { kind: opts.kind ?? SpanKind.INTERNAL, attributes: opts.attributes, links: opts.links }, parent);
  // Explicit propagation: no context manager, so a context made active would be seen by nobody; build none.
  if (explicit) return settle(span, fn);
  let ctx = trace.setSpan(parent, span);
  if (opts.operation !== undefined) ctx = ctx.setValue(OPERATION, opts.operation);
  // One context switch and no async wrapper: this runs for every request the controller serves.
  return context.with(ctx, settle<T>, undefined, span, fn);
}

/** Runs fn(span) and ends the span when its promise settles (an error marks it and goes on). */
function settle<T>(span: Span, fn: (span: Span) => Promise<T>): Promise<T> {
  let out: Promise<T>;
  try {
    out = fn(span);
  } catch (e) {
    endWith(span, e);
    throw e;
  }
  return out.then(
    (v) => {
      endWith(span);
      return v;
    },
    (e: unknown) => {
      endWith(span, e);
      throw e;
    },
  );
}

/** The synchronous form of withSpan. */
export function withSpanSync<T>(name: string, opts: SpanOpts, fn: (span: Span) => T): T {
  if (!enabled) return fn(NOOP_SPAN);
  const parent = opts.parent ?? context.active();
  const span = tracer().startSpan(name, { kind: opts.kind ?? SpanKind.INTERNAL, attributes: opts.attributes, links: opts.links }, parent);
  return explicit ? settleSync(span, fn) : context.with(trace.setSpan(parent, span), settleSync<T>, undefined, span, fn);
}

function settleSync<T>(span: Span, fn: (span: Span) => T): T {
  try {
    const out = fn(span);
    endWith(span);
    return out;
  } catch (e) {
    endWith(span, e);
    throw e;
  }
}

/** Wraps an async function so each call runs in a span named by `name(args)` (the call itself when off). */
export function traced<A extends unknown[], R>(name: string | ((...args: A) => string), fn: (...args: A) => Promise<R>, opts: Omit<SpanOpts, 'parent'> = {}): (...args: A) => Promise<R> {
  return (...args: A) => (enabled ? withSpan(typeof name === 'string' ? name : name(...args), opts, () => fn(...args)) : fn(...args));
}

/** The operation (RPC method, HTTP route) the active context serves, for names of inner spans (`decide <op>`). */
export function currentOperation(): string | undefined {
  if (!enabled) return undefined;
  return context.active().getValue(OPERATION) as string | undefined;
}

/** The active context with the operation it serves set (see currentOperation). */
export function withOperation<T>(op: string, fn: () => T): T {
  if (!enabled) return fn();
  return context.with(context.active().setValue(OPERATION, op), fn);
}

/**
 * The object with the named async methods each run in a child span (`names[method]`, e.g. `netlink createMacvlan`),
 * only when a span is active: background loops start no traces of their own. Tracing off: the object itself.
 * `describe` turns the call's arguments into attributes.
 */
export function traceMethods<T extends object>(obj: T, names: Partial<Record<keyof T & string, string>>, describe?: (args: unknown[]) => Attributes): T {
  if (!enabled) return obj;
  return new Proxy(obj, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      const name = typeof prop === 'string' ? (names as Record<string, string | undefined>)[prop] : undefined;
      if (!name || typeof value !== 'function') return typeof value === 'function' ? value.bind(target) : value;
      return (...args: unknown[]) => {
        if (!trace.getActiveSpan()) return (value as (...a: unknown[]) => unknown).apply(target, args);
        return withSpan(name, { attributes: describe?.(args) }, async () => (value as (...a: unknown[]) => unknown).apply(target, args));
      };
    },
  });
}

/** `{ createMacvlan: 'netlink createMacvlan', … }` for the given methods. */
export function spanNames<K extends string>(prefix: string, methods: readonly K[]): Record<K, string> {
  return Object.fromEntries(methods.map((m) => [m, `${prefix} ${m}`])) as Record<K, string>;
}

/**
 * Request/reply over NATS with zod validation on both ends. The client speaks for one node: its requests go
 * on that node's subjects (`underlay.rpc.v1.<node>.…`), which its NATS credentials allow and no other node's
 * do. What it retries is decided by error code (the one error model, libs/core/src/errors.ts), never by message
 * text: NATS's own failures are first turned into UnderlayErrors by their class (no controller answered or in
 * time: `unavailable`, retriable; NATS refused the subject: `permission-denied`, final), then every retriable
 * failure is tried again with the shared backoff (`retry`, libs/adapters/src/runtime/retry.ts) up to a deadline.
 *
 * The server side takes the caller's node from the subject, refuses a body naming another node, and never
 * lets a request stop the process: parse errors, handler errors and replies too large for NATS all become
 * error replies, and a failure to send a reply is logged.
 */
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import { errors as natsErrors, headers as natsHeaders } from '@nats-io/transport-node';
import type { z } from 'zod';
import {
  CONTROLLER_QUEUE,
  RpcReply,
  UnavailableError,
  UnderlayError,
  InvalidArgumentError,
  PermissionDeniedError,
  fromErrorBody,
  headers,
  isRetriable,
  newTraceparent,
  nodeOfRpcSubject,
  rpcServeSubject,
  rpcSubject,
  toErrorBody,
  type BackoffPolicy,
  type RpcMethod,
} from '@underlay/core';
import { RetryExhausted, retry } from '../runtime/retry.js';
import { context, trace, type SpanContext } from '@opentelemetry/api';
import { SpanKind, attr, contextFrom, contextFromNats, injectNats, traceparentOf, tracingOn, withSpan } from '../telemetry/tracing.js';
import { secondsSince, type RpcObserver } from '../telemetry/metrics.js';

const enc = new TextEncoder();

export interface CallOptions {
  /** Per attempt (default 10 s: a deep queue at the controller is still progress, not a failure). */
  timeoutMs?: number;
  /**
   * Time to keep retrying retriable failures (default 30 s). An attempt started within it runs its whole `timeoutMs`:
   * a caller on a schedule (the agent's reports) sets both.
   */
  deadlineMs?: number;
  traceparent?: string;
  /** Stops retrying when aborted (the last failure is thrown). */
  signal?: AbortSignal;
}

/** Waits between attempts: 50 ms doubling to 1 s, with jitter. */
export const RPC_BACKOFF: BackoffPolicy = { minMs: 50, maxMs: 1_000 };

/**
 * A failed NATS request as an error of the one model, decided by the error's class: no responders, a timeout or
 * a lost connection (RequestError) mean no controller answered (`unavailable`, retriable); a permission violation
 * means this node's credentials do not allow the subject (`permission-denied`, final). UnderlayErrors and anything
 * else are returned as they are (anything else is not retriable).
 */
export function fromNatsRequestError(err: unknown, method: RpcMethod, subject: string, node: string): unknown {
  if (err instanceof UnderlayError) return err;
  const cause = err instanceof natsErrors.RequestError ? err.cause : undefined;
  if (err instanceof natsErrors.PermissionViolationError || cause instanceof natsErrors.PermissionViolationError) {
    return new PermissionDeniedError(`NATS refused ${subject} for node ${node}: check --node and --nats-creds (${(err as Error).message})`, { cause: err });
  }
  if (err instanceof natsErrors.NoRespondersError || err instanceof natsErrors.TimeoutError || err instanceof natsErrors.RequestError) {
    return new UnavailableError(`the underlay controller did not answer ${method}: ${err.message}`, { cause: err });
  }
  return err;
}

/**
 * Per connection: who waits on an answer that a lost server would take with it. A reply on its way through the server
 * that went away never comes; without this, a caller would wait out its attempt's timeout (10 s by default) although
 * the connection moved to another server of the cluster within a fraction of a second.
 */
class ConnectionLoss {
  private readonly waiting = new Set<(server: string) => void>();
  constructor(nc: NatsConnection) {
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type !== 'disconnect') continue;
        const now = [...this.waiting];
        this.waiting.clear();
        for (const w of now) w(s.server);
      }
    })().catch(() => {});
  }
  /** Calls `fn` with the server's address if the connection loses its server before `off()` is called. */
  on(fn: (server: string) => void): () => void {
    this.waiting.add(fn);
    return () => this.waiting.delete(fn);
  }
}
const losses = new WeakMap<NatsConnection, ConnectionLoss>();
function lossOf(nc: NatsConnection): ConnectionLoss {
  let l = losses.get(nc);
  if (!l) losses.set(nc, (l = new ConnectionLoss(nc)));
  return l;
}

export class RpcClient {
  /**
   * @param node the node this client speaks for (its credentials must allow that node's subjects).
   * @param observe told of each call when it ends (method, `ok` or the error code, seconds, traceparent): metrics.
   */
  constructor(
    private readonly nc: NatsConnection,
    readonly node: string,
    private readonly observe?: RpcObserver,
  ) {}

  async call<S extends z.ZodType>(method: RpcMethod, req: unknown, resSchema: S, opts: CallOptions = {}): Promise<z.infer<S>> {
    if (!tracingOn()) return this.observed(method, req, resSchema, opts, opts.traceparent ?? newTraceparent());
    // A CLIENT span, child of the active span (or of opts.traceparent when none is active); its context is the traceparent sent.
    const subject = rpcSubject(method, this.node);
    const parent = opts.traceparent && !trace.getActiveSpan() ? contextFrom(opts.traceparent) : context.active();
    return withSpan(
      `request ${subject}`,
      { kind: SpanKind.CLIENT, parent, attributes: { [attr.messagingSystem]: 'nats', [attr.destination]: subject, [attr.operation]: 'send', [attr.node]: this.node } },
      (span) => this.observed(method, req, resSchema, opts, traceparentOf(span.spanContext())),
    );
  }

  /** The call, counted and timed by the observer (metrics on), with the traceparent it sends as the exemplar. */
  private async observed<S extends z.ZodType>(method: RpcMethod, req: unknown, resSchema: S, opts: CallOptions, traceparent: string): Promise<z.infer<S>> {
    if (!this.observe) return this.send(method, req, resSchema, opts, traceparent);
    const start = process.hrtime.bigint();
    try {
      const r = await this.send(method, req, resSchema, opts, traceparent);
      this.observe(method, 'ok', secondsSince(start), traceparent);
      return r;
    } catch (e) {
      this.observe(method, toErrorBody(e).code, secondsSince(start), traceparent);
      throw e;
    }
  }

  private async send<S extends z.ZodType>(method: RpcMethod, req: unknown, resSchema: S, opts: CallOptions, traceparent: string): Promise<z.infer<S>> {
    const timeout = opts.timeoutMs ?? 10_000;
    const deadline = Date.now() + (opts.deadlineMs ?? 30_000);
    const h = natsHeaders();
    h.set(headers.traceparent, traceparent);
    if (tracingOn()) injectNats(h); // tracestate and baggage, when the propagators carry any
    const payload = enc.encode(JSON.stringify(req));
    const subject = rpcSubject(method, this.node);
    const loss = lossOf(this.nc);
    const attempt = async (): Promise<z.infer<S>> => {
      let msg: Msg;
      // The server this request went through went away: the attempt fails at once as `unavailable` and is retried as
      // after a timeout (the request goes out again once the connection is on a server), without waiting out `timeout`.
      let off = () => {};
      const lost = new Promise<never>((_, reject) => {
        off = loss.on((server) => reject(new UnavailableError(`the NATS connection to ${server} was lost while waiting for the controller's answer to ${method}`)));
      });
      try {
        msg = await Promise.race([this.nc.request(subject, payload, { timeout, headers: h }), lost]);
      } catch (err) {
        throw fromNatsRequestError(err, method, subject, this.node);
      } finally {
        off();
      }
      const reply = RpcReply.parse(msg.json());
      if (!reply.ok) throw fromErrorBody(reply.error);
      return resSchema.parse(reply.result);
    };
    try {
      return await retry(attempt, { backoff: RPC_BACKOFF, retryIf: isRetriable, deadline, ...(opts.signal ? { signal: opts.signal } : {}) });
    } catch (err) {
      // Out of time while no controller could answer: to the caller, the controller is unavailable (a later call may succeed).
      if (err instanceof RetryExhausted) throw new UnavailableError(err.message, { cause: err });
      throw err;
    }
  }
}

export interface RpcContext {
  /** The caller, from the request's subject (which its credentials allow). */
  node: string;
  traceparent?: string;
  /** Tracing on: the `process <method>` span serving the request (its context, for explicit parenting). */
  span?: SpanContext;
  /** The RPC method (names inner spans: `decide <method>`). */
  method?: string;
}

export interface ServeOptions {
  logger?: (m: string) => void;
  /** Counts handler failures that could not even be answered (for metrics and tests). */
  onUnanswered?: (err: unknown) => void;
  /** Told of each request when its reply is sent (method, `ok` or the error code, seconds, traceparent): metrics. */
  observe?: RpcObserver;
}

/** Room left in a reply for its envelope (`{"ok":true,"result":…}`) and NATS headers. */
export const REPLY_ENVELOPE_BYTES = 4096;

/** The largest reply payload this connection's server accepts. */
export function maxPayload(nc: NatsConnection): number {
  return nc.info?.max_payload ?? 1024 * 1024;
}

/** Serves one method in the controllers' queue group. The handler's errors become error replies. */
export function serveRpc<S extends z.ZodType>(
  nc: NatsConnection,
  method: RpcMethod,
  reqSchema: S,
  handler: (req: z.infer<S>, ctx: RpcContext) => Promise<unknown>,
  opts: ServeOptions = {},
): Subscription {
  const logger = opts.logger ?? (() => {});
  const send = (msg: Msg, reply: RpcReply): void => {
    let data = enc.encode(JSON.stringify(reply));
    // Handlers keep REPLY_ENVELOPE_BYTES free for the envelope; the reply itself may use all of max_payload.
    const limit = maxPayload(nc);
    if (data.byteLength > limit) {
      const err = new InvalidArgumentError(`the reply to ${method} would be ${data.byteLength} bytes, more than NATS allows (${limit}); ask for less`);
      data = enc.encode(JSON.stringify({ ok: false, error: toErrorBody(err) } satisfies RpcReply));
    }
    msg.respond(data);
  };
  return nc.subscribe(rpcServeSubject(method), {
    queue: CONTROLLER_QUEUE,
    callback: (err, msg: Msg) => {
      if (err) {
        logger(`rpc ${method}: subscription error: ${err.message}`);
        return;
      }
      if (!msg.reply) return; // nobody to answer
      const start = process.hrtime.bigint();
      void (async () => {
        let reply: RpcReply;
        try {
          const node = nodeOfRpcSubject(msg.subject);
          if (!node) throw new InvalidArgumentError(`bad ${method} request: the subject ${msg.subject} names no node`);
          let body: unknown;
          try {
            body = msg.json();
          } catch {
            throw new InvalidArgumentError(`bad ${method} request: the body is not JSON`);
          }
          const parsed = reqSchema.safeParse(body);
          if (!parsed.success) {
            const issue = parsed.error.issues[0];
            throw new InvalidArgumentError(`bad ${method} request: ${issue ? `${issue.path.join('.') || '(body)'}: ${issue.message}` : 'invalid'}`);
          }
          const named = (parsed.data as { node?: unknown } | null)?.node;
          if (typeof named === 'string' && named !== node) {
            throw new PermissionDeniedError(`node ${node} cannot send ${method} for node ${named}: a node acts only for itself`);
          }
          const traceparent = msg.headers?.get(headers.traceparent) || undefined;
          const result = tracingOn()
            ? await withSpan(
                `process ${method}`,
                { kind: SpanKind.SERVER, parent: contextFromNats(msg.headers), operation: method, attributes: { [attr.messagingSystem]: 'nats', [attr.destination]: msg.subject, [attr.operation]: 'process', [attr.node]: node } },
                // The caller's trace is the events' trace; a request without one gets this span's.
                (span) => {
                  const sc = span.spanContext();
                  return handler(parsed.data, { node, traceparent: traceparent ?? traceparentOf(sc), span: sc, method });
                },
              )
            : await handler(parsed.data, { node, traceparent });
          reply = { ok: true, result: result ?? {} };
        } catch (e) {
          reply = { ok: false, error: toErrorBody(e) };
        }
        send(msg, reply);
        opts.observe?.(method, reply.ok ? 'ok' : reply.error.code, secondsSince(start), msg.headers?.get(headers.traceparent) || undefined);
      })().catch((e) => {
        opts.onUnanswered?.(e);
        logger(`rpc ${method}: could not answer ${msg.subject}: ${(e as Error)?.message ?? String(e)}`);
      });
    },
  });
}

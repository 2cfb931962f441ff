/**
 * Request/reply over NATS with zod validation on both ends. The client retries while no controller
 * answers (none running, leader switch) or the controller says the error is retriable, up to a deadline.
 */
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import { headers as natsHeaders } from '@nats-io/transport-node';
import type { z } from 'zod';
import {
  CONTROLLER_QUEUE,
  RpcReply,
  UnavailableError,
  UnderlayError,
  InvalidArgumentError,
  fromErrorBody,
  headers,
  newTraceparent,
  rpc,
  toErrorBody,
  type RpcMethod,
} from '@underlay/core';

const enc = new TextEncoder();

export interface CallOptions {
  /** Per attempt (default 10 s: a deep queue at the controller is still progress, not a failure). */
  timeoutMs?: number;
  /** Total time to keep retrying retriable failures. */
  deadlineMs?: number;
  traceparent?: string;
}

function isTransient(err: unknown): boolean {
  const name = (err as Error)?.name ?? '';
  const msg = (err as Error)?.message ?? '';
  return /NoResponders|Timeout|RequestError/.test(name) || /no responders|timeout|503/i.test(msg);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class RpcClient {
  constructor(private readonly nc: NatsConnection) {}

  async call<S extends z.ZodType>(method: RpcMethod, req: unknown, resSchema: S, opts: CallOptions = {}): Promise<z.infer<S>> {
    const timeout = opts.timeoutMs ?? 10_000;
    const deadline = Date.now() + (opts.deadlineMs ?? 30_000);
    const h = natsHeaders();
    h.set(headers.traceparent, opts.traceparent ?? newTraceparent());
    const payload = enc.encode(JSON.stringify(req));
    let backoff = 50;
    for (let attempt = 1; ; attempt++) {
      let failure: UnderlayError;
      try {
        const msg = await this.nc.request(rpc[method], payload, { timeout, headers: h });
        const reply = RpcReply.parse(msg.json());
        if (reply.ok) return resSchema.parse(reply.result);
        failure = fromErrorBody(reply.error);
        if (!failure.retriable) throw failure;
      } catch (err) {
        if (err instanceof UnderlayError && !err.retriable) throw err;
        if (!(err instanceof UnderlayError) && !isTransient(err)) throw err;
        failure = err instanceof UnderlayError ? err : new UnavailableError(`the underlay controller did not answer ${method}: ${(err as Error).message}`);
      }
      if (Date.now() + backoff > deadline) {
        throw new UnavailableError(`${failure.message} (gave up after ${attempt} attempts)`);
      }
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 1000);
    }
  }
}

export interface RpcContext {
  traceparent?: string;
}

/** Serves one method in the controllers' queue group. The handler's errors become error replies. */
export function serveRpc<S extends z.ZodType>(
  nc: NatsConnection,
  method: RpcMethod,
  reqSchema: S,
  handler: (req: z.infer<S>, ctx: RpcContext) => Promise<unknown>,
): Subscription {
  return nc.subscribe(rpc[method], {
    queue: CONTROLLER_QUEUE,
    callback: (err, msg: Msg) => {
      if (err) return;
      void (async () => {
        let reply: RpcReply;
        try {
          const parsed = reqSchema.safeParse(msg.json());
          if (!parsed.success) {
            const issue = parsed.error.issues[0];
            throw new InvalidArgumentError(`bad ${method} request: ${issue ? `${issue.path.join('.') || '(body)'}: ${issue.message}` : 'invalid'}`);
          }
          const result = await handler(parsed.data, { traceparent: msg.headers?.get(headers.traceparent) || undefined });
          reply = { ok: true, result: result ?? {} };
        } catch (e) {
          reply = { ok: false, error: toErrorBody(e) };
        }
        msg.respond(enc.encode(JSON.stringify(reply)));
      })();
    },
  });
}

/** Envelope of every controller reply: either a result or an error body. */
import { z } from 'zod';

export const ErrorBodySchema = z.object({
  code: z.enum(['invalid-argument', 'not-found', 'conflict', 'exhausted', 'unavailable', 'internal']),
  message: z.string(),
  retriable: z.boolean(),
});

export const RpcReply = z.union([
  z.object({ ok: z.literal(true), result: z.unknown() }),
  z.object({ ok: z.literal(false), error: ErrorBodySchema }),
]);
export type RpcReply = z.infer<typeof RpcReply>;

export const ReadEventsReq = z.object({ fromSeq: z.number().int().positive(), limit: z.number().int().positive().max(10000).default(1000) });
export type ReadEventsReq = z.infer<typeof ReadEventsReq>;
export const ReadEventsRes = z.object({ events: z.array(z.unknown()) });

export const EmptyReq = z.looseObject({});

/** Envelope of every controller reply: either a result or an error body. */
import { z } from 'zod';
import { ERROR_CODES } from '../errors.js';
import { LIMITS } from '../limits.js';

/** An error on the wire. Its code enum is made from errors.ts ERROR_CODES, the one list (no copy here). */
export const ErrorBodySchema = z.object({
  code: z.enum(ERROR_CODES),
  message: z.string().max(LIMITS.message),
  retriable: z.boolean(),
});

export const RpcReply = z.union([
  z.object({ ok: z.literal(true), result: z.unknown() }),
  z.object({ ok: z.literal(false), error: ErrorBodySchema }),
]);
export type RpcReply = z.infer<typeof RpcReply>;

export const ReadEventsReq = z.object({ fromSeq: z.number().int().positive(), limit: z.number().int().positive().max(LIMITS.readEvents).default(1000) });
export type ReadEventsReq = z.infer<typeof ReadEventsReq>;
export const ReadEventsRes = z.object({ events: z.array(z.unknown()).max(LIMITS.readEvents) });

export const EmptyReq = z.looseObject({});

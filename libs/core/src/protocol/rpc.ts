/** Envelope of every controller reply: either a result or an error body. */
import { z } from 'zod';
import { ERROR_CODES } from '../errors.js';
import { LIMITS, text } from '../limits.js';

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

const chain = text(LIMITS.chain).min(1);
/** `chain`: only the events of that chain (state/chains.ts); the answer's `through` says how far the log was read. */
export const ReadEventsReq = z.object({ fromSeq: z.number().int().positive(), limit: z.number().int().positive().max(LIMITS.readEvents).default(1000), chain: chain.optional() });
export type ReadEventsReq = z.infer<typeof ReadEventsReq>;
/** `through` (with `chain`): every event of the chain up to this seq is in `events`. */
export const ReadEventsRes = z.object({ events: z.array(z.unknown()).max(LIMITS.readEvents), through: z.number().int().nonnegative().optional() });
/** `chains`: also the seq of each one's last committed event (at most the last committed seq). */
export const EventsHeadReq = z.object({ chains: z.array(chain).max(LIMITS.headChains).optional() });
export type EventsHeadReq = z.infer<typeof EventsHeadReq>;

export const EmptyReq = z.looseObject({});

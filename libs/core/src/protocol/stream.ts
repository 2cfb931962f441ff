/** Requests about the event stream that an agent's view sends to the controller. */
import { z } from 'zod';
import { LIMITS } from '../limits.js';

/** Make (or remake) the caller's own JetStream consumer, starting with the first event after `afterSeq`. */
export const EventsConsumerReq = z.object({ afterSeq: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER) });
export type EventsConsumerReq = z.infer<typeof EventsConsumerReq>;
export const EventsConsumerRes = z.object({
  stream: z.string().min(1).max(256),
  consumer: z.string().min(1).max(256),
  /** The stream seq it starts at. */
  startStreamSeq: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
});
export type EventsConsumerRes = z.infer<typeof EventsConsumerRes>;

/** One part of the latest snapshot (`seq` pins the snapshot being read; absent: the latest). */
export const SnapshotReadReq = z.object({
  seq: z.number().int().positive().max(Number.MAX_SAFE_INTEGER).optional(),
  part: z.number().int().nonnegative().max(1_000_000),
  /** Where in the part to start (a part is sent in pieces that fit NATS max_payload). */
  offset: z.number().int().nonnegative().max(1024 * 1024).default(0),
});
export type SnapshotReadReq = z.infer<typeof SnapshotReadReq>;
/** `seq: 0` means there is no snapshot: read the log from the start. */
export const SnapshotReadRes = z.object({
  seq: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  parts: z.number().int().nonnegative().max(1_000_000),
  part: z.number().int().nonnegative().max(1_000_000),
  /** The part's text from `offset`, as much as fits one NATS message (at most one etcd chunk, 512 KiB of text). */
  data: z.string().max(512 * 1024),
  offset: z.number().int().nonnegative().max(1024 * 1024).default(0),
  /** Characters of the whole part (the reader asks again from `offset + data.length` until it has them all). */
  partLength: z.number().int().nonnegative().max(1024 * 1024).optional(),
  /** Of the whole snapshot's JSON text, when the manifest has it: the reader checks what it put together. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  /** Characters of the whole snapshot's JSON text. */
  bytes: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
});
export type SnapshotReadRes = z.infer<typeof SnapshotReadRes>;

/**
 * The latest snapshot's index (`state.snapshotIndex`): where each pool's allocations lie in its text, so an agent reads
 * the head (everything else) and the pools it follows only (`state.snapshotRange`). `seq: 0`: no snapshot. No
 * `sections`: the snapshot has no index (written before indexes) or the index would not fit a message: read it whole
 * (`state.snapshot`).
 */
export const SnapshotIndexReq = z.object({});
export const SnapshotIndexRes = z.object({
  seq: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  /** Characters of the whole snapshot's JSON text. */
  bytes: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  sections: z
    .object({
      /** SHA-256 of the text outside every pool's section, joined in order. */
      head: z.string().regex(/^[0-9a-f]{64}$/),
      pools: z
        .array(
          z.object({
            poolId: z.string().max(LIMITS.poolId),
            start: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
            end: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
            sha256: z.string().regex(/^[0-9a-f]{64}$/),
          }),
        )
        .max(100_000),
    })
    .optional(),
});
export type SnapshotIndexRes = z.infer<typeof SnapshotIndexRes>;

/** Characters `[start, end)` of snapshot `seq`'s text (`state.snapshotRange`). */
export const SnapshotRangeReq = z
  .object({
    seq: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
    start: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
    end: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  })
  .refine((r) => r.end > r.start, { message: 'end must be after start', path: ['end'] });
export type SnapshotRangeReq = z.infer<typeof SnapshotRangeReq>;
/** The text from `start`: as much as fits one NATS message and one etcd part (the reader asks again for the rest). */
export const SnapshotRangeRes = z.object({
  seq: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  start: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  data: z.string().max(512 * 1024),
});
export type SnapshotRangeRes = z.infer<typeof SnapshotRangeRes>;

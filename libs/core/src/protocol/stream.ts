/** Requests about the event stream that an agent's view sends to the controller. */
import { z } from 'zod';

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

/**
 * The JetStream stream of committed events. Each event is published once per sequence number:
 * the message id is the seq, so a republish after a crash is dropped by the server as a duplicate.
 *
 * The stream is bounded (limits retention, discard old): at most `maxMsgs` messages, `maxBytes` bytes, and
 * nothing older than `maxAgeMs`. It is a fast path, not the record: etcd holds every event, and a reader
 * that finds the stream trimmed, purged or recreated reads what it lacks from the controller. Reading is done in one
 * place, the EventConsumer (consumer.ts): gaps, the tail and restarts from a snapshot, handed on as one stream.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { headers as natsHeaders } from '@nats-io/transport-node';
import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  jetstream,
  jetstreamManager,
  type JetStreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from '@nats-io/jetstream';
import { EVENTS_STREAM, EVENTS_WILDCARD, UnderlayError, chainOfEvent, eventSubject, eventTraceparent, headers, type ClusterEvent } from '@underlay/core';

const enc = new TextEncoder();
/** JetStream's de-duplication header (what `msgID` sets on a JetStream publish). */
const NATS_MSG_ID = 'Nats-Msg-Id';
const NS_PER_MS = 1_000_000;
/** How long the server remembers message ids to drop a republished event. */
const DUPLICATE_WINDOW_MS = 120_000;

/** The stream's limits (what the controller's --stream-max-bytes, --stream-max-age-ms, --stream-max-msgs set). */
export interface StreamLimits {
  maxBytes: number;
  maxAgeMs: number;
  maxMsgs: number;
}

/**
 * The stream's limits and its replicas (what the controller's --events-replicas sets): how many JetStream servers
 * of a NATS cluster keep a copy of it (1 on a single server; 3 on a three-node cluster survives one server down).
 */
export interface StreamOptions extends StreamLimits {
  replicas?: number;
}

/** Most replicas JetStream keeps of a stream. */
export const MAX_STREAM_REPLICAS = 5;

/** Defaults: 1 GiB, 7 days, 1,000,000 events (an event is a few hundred bytes: the count binds first). */
export const DEFAULT_STREAM_LIMITS: Readonly<StreamLimits> = { maxBytes: 1024 ** 3, maxAgeMs: 7 * 24 * 3_600_000, maxMsgs: 1_000_000 };

/** Allowed ranges of the limits (inclusive). */
export const STREAM_LIMIT_BOUNDS: Readonly<Record<keyof StreamLimits, { min: number; max: number }>> = {
  maxBytes: { min: 1024 ** 2, max: 1024 ** 4 },
  maxAgeMs: { min: 60_000, max: 365 * 24 * 3_600_000 },
  maxMsgs: { min: 1_000, max: 1_000_000_000 },
};

/** The limit fields of the stream's configuration and its replicas, as the server takes them. */
function limitConfig(l: StreamOptions): Pick<StreamConfig, 'max_bytes' | 'max_age' | 'max_msgs' | 'discard' | 'duplicate_window' | 'num_replicas'> {
  return {
    num_replicas: l.replicas ?? 1,
    max_bytes: l.maxBytes,
    max_age: l.maxAgeMs * NS_PER_MS,
    max_msgs: l.maxMsgs,
    discard: DiscardPolicy.Old,
    // The server refuses a duplicate window longer than the maximum age.
    duplicate_window: Math.min(DUPLICATE_WINDOW_MS, l.maxAgeMs) * NS_PER_MS,
  };
}

/** True for JetStream's "stream not found" (the stream was never made, or was deleted), by its API error code. */
export function isStreamNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound;
}

/** JetStream's API error code for "stream name already in use" (another controller made the stream first). */
const STREAM_NAME_IN_USE = 10058;

/** Whether a stream's configuration has exactly these limits and replicas. */
function hasLimits(config: StreamConfig, limits: StreamOptions): boolean {
  const want = limitConfig(limits);
  return (Object.keys(want) as (keyof typeof want)[]).every((k) => config[k] === want[k]);
}

/**
 * JetStream's refusal of a replica count, as a clear error: the server is not clustered, or the cluster has fewer
 * JetStream servers up than the replicas asked for.
 */
function replicasError(what: string, replicas: number, e: unknown): UnderlayError {
  const why = (e as Error).message;
  const hint =
    replicas > 1
      ? `--events-replicas ${replicas} needs a NATS cluster with JetStream on at least ${replicas} servers, all up and routed to each other (a single nats-server keeps 1 replica)`
      : 'check the NATS servers\' JetStream';
  return new UnderlayError('unavailable', `could not ${what} (${why}); ${hint}`, { cause: e });
}

/**
 * Makes the event stream exist with these limits and replicas: creates it when missing, updates its limits and
 * replicas when they differ (the messages it holds stay, unless the new limits drop the oldest; JetStream copies them
 * to new replicas). A refusal (a replica count the servers cannot hold) is an error that says so; others are thrown.
 */
export async function ensureEventStream(jsm: JetStreamManager, limits: StreamOptions = DEFAULT_STREAM_LIMITS): Promise<'created' | 'updated' | 'unchanged'> {
  const want = limitConfig(limits);
  let current: StreamConfig;
  try {
    current = (await jsm.streams.info(EVENTS_STREAM)).config;
  } catch (err) {
    if (!isStreamNotFound(err)) throw err;
    try {
      await jsm.streams.add({ name: EVENTS_STREAM, subjects: [EVENTS_WILDCARD], storage: StorageType.File, retention: RetentionPolicy.Limits, ...want });
      return 'created';
    } catch (e) {
      // Another controller made it in between.
      if (e instanceof JetStreamApiError && e.code === STREAM_NAME_IN_USE) return ensureEventStream(jsm, limits);
      if (want.num_replicas > 1 && e instanceof JetStreamApiError) throw replicasError(`create the JetStream stream ${EVENTS_STREAM} with ${want.num_replicas} replicas`, want.num_replicas, e);
      throw new UnderlayError('internal', `could not create the JetStream stream ${EVENTS_STREAM} (${(e as Error).message}); if the server lacks room, lower --stream-max-bytes`, { cause: e });
    }
  }
  if (hasLimits(current, limits)) return 'unchanged';
  try {
    await jsm.streams.update(EVENTS_STREAM, want);
  } catch (e) {
    if (current.num_replicas !== want.num_replicas && e instanceof JetStreamApiError) {
      throw replicasError(`change the JetStream stream ${EVENTS_STREAM} from ${current.num_replicas} to ${want.num_replicas} replicas`, want.num_replicas, e);
    }
    throw e;
  }
  return 'updated';
}

export class EventPublisher {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
    readonly limits: StreamOptions,
  ) {}

  static async open(nc: NatsConnection, limits: StreamOptions = DEFAULT_STREAM_LIMITS): Promise<EventPublisher> {
    const jsm = await jetstreamManager(nc);
    await ensureEventStream(jsm, limits);
    return new EventPublisher(nc, jsm, limits);
  }

  /** Creates the stream when it is missing (deleted by an operator), updates limits and replicas that differ. */
  ensureStream(): Promise<'created' | 'updated' | 'unchanged'> {
    return ensureEventStream(this.jsm, this.limits);
  }

  /** Whether the stream exists with these limits and replicas (a periodic check; throws only when the server cannot be asked). */
  async streamInPlace(): Promise<boolean> {
    try {
      return hasLimits((await this.jsm.streams.info(EVENTS_STREAM)).config, this.limits);
    } catch (err) {
      if (isStreamNotFound(err)) return false;
      throw err;
    }
  }

  /** The seq of the last event in the stream (0 when empty), read from its header. */
  async lastPublishedSeq(): Promise<number> {
    const info = await this.jsm.streams.info(EVENTS_STREAM);
    if (info.state.messages === 0) return 0;
    const m = await this.jsm.streams.getMessage(EVENTS_STREAM, { seq: info.state.last_seq });
    const v = m?.header?.get(headers.eventSeq);
    return v ? Number(v) : 0;
  }

  /**
   * Publishes a batch in order, each event on its chain's subject (`underlay.events.<chain>.<type>`: an agent
   * subscribes to the chains it needs, state/chains.ts). All but the last go out as plain NATS messages on the stream's
   * subjects (JetStream stores them; `Nats-Msg-Id` = seq dedupes repeats); the last is a JetStream
   * publish whose acknowledgement confirms the batch, since one connection keeps its order. One
   * round trip per batch instead of one per event. If the stream's sequence did not advance by the
   * batch's size, the caller is told so and catches up from etcd.
   */
  async publish(events: readonly ClusterEvent[], encoded?: readonly string[]): Promise<void> {
    if (events.length === 0) return;
    const js = jetstream(this.nc);
    const message = (ev: ClusterEvent, i: number) => {
      const h = natsHeaders();
      h.set(headers.eventSeq, String(ev.seq));
      h.set(NATS_MSG_ID, String(ev.seq));
      if (ev.traceId) h.set(headers.traceparent, eventTraceparent(ev.traceId, ev.seq));
      return { subject: eventSubject(chainOfEvent(ev), ev.type), data: enc.encode(encoded?.[i] ?? JSON.stringify(ev)), headers: h };
    };
    for (const [i, ev] of events.slice(0, -1).entries()) {
      const m = message(ev, i);
      this.nc.publish(m.subject, m.data, { headers: m.headers });
    }
    const last = message(events[events.length - 1]!, events.length - 1);
    const ack = await js.publish(last.subject, last.data, { msgID: String(events[events.length - 1]!.seq), headers: last.headers });
    const advanced = this.lastStreamSeq === undefined ? events.length : ack.seq - this.lastStreamSeq;
    if (!ack.duplicate && advanced !== events.length) {
      this.lastStreamSeq = ack.seq;
      throw new Error(`stream advanced by ${advanced} for a batch of ${events.length}: some events may be missing`);
    }
    this.lastStreamSeq = ack.seq;
  }

  /** Stream sequence of the last acknowledged publish (undefined until the first, or after a catch-up). */
  private lastStreamSeq?: number;

  /** Forget the stream position (after a catch-up republished with possible duplicates). */
  resetPosition(): void {
    this.lastStreamSeq = undefined;
  }
}

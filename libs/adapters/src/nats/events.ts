/**
 * The JetStream stream of committed events. Each event is published once per sequence number:
 * the message id is the seq, so a republish after a crash is dropped by the server as a duplicate.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { headers as natsHeaders } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { EVENTS_STREAM, EVENTS_WILDCARD, eventSubject, eventTraceparent, headers, type ClusterEvent } from '@underlay/core';

const enc = new TextEncoder();
/** JetStream's de-duplication header (what `msgID` sets on a JetStream publish). */
const NATS_MSG_ID = 'Nats-Msg-Id';
const NS_PER_MS = 1_000_000;

export async function ensureEventStream(jsm: JetStreamManager): Promise<void> {
  try {
    await jsm.streams.info(EVENTS_STREAM);
  } catch {
    await jsm.streams.add({
      name: EVENTS_STREAM,
      subjects: [EVENTS_WILDCARD],
      storage: StorageType.File,
      retention: RetentionPolicy.Limits,
      duplicate_window: 120_000 * NS_PER_MS,
    });
  }
}

export class EventPublisher {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: JetStreamManager,
  ) {}

  static async open(nc: NatsConnection): Promise<EventPublisher> {
    const jsm = await jetstreamManager(nc);
    await ensureEventStream(jsm);
    return new EventPublisher(nc, jsm);
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
   * Publishes a batch in order. All but the last go out as plain NATS messages on the stream's
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
      return { subject: eventSubject(ev.type), data: enc.encode(encoded?.[i] ?? JSON.stringify(ev)), headers: h };
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

/**
 * The JetStream stream of committed events. Each event is published once per sequence number:
 * the message id is the seq, so a republish after a crash is dropped by the server as a duplicate.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { headers as natsHeaders } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, type JetStreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { EVENTS_STREAM, EVENTS_WILDCARD, eventSubject, headers, newTraceparent, type ClusterEvent } from '@underlay/core';

const enc = new TextEncoder();
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

  async publish(events: readonly ClusterEvent[]): Promise<void> {
    const js = jetstream(this.nc);
    await Promise.all(
      events.map((ev) => {
        const h = natsHeaders();
        h.set(headers.eventSeq, String(ev.seq));
        if (ev.traceId) h.set(headers.traceparent, newTraceparent(ev.traceId));
        return js.publish(eventSubject(ev.type), enc.encode(JSON.stringify(ev)), { msgID: String(ev.seq), headers: h });
      }),
    );
  }
}

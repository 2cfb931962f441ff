/**
 * Each node reads the event stream through its own pull consumer (`agent-<node>`), which only the controller
 * creates: a node's credentials allow asking for that consumer's info and pulling from it, nothing else on
 * JetStream. So a node cannot create consumers, read other nodes' consumers, or delete or edit the stream.
 *
 * Stream seqs are not event seqs (the stream may have been created earlier, purged, recreated, or have gaps),
 * so the starting point is found by a binary search over the stream reading the `Underlay-Seq` header. The
 * search only has to be close: starting early costs skipped duplicates and starting late costs a gap re-read,
 * so when it cannot tell (deleted messages) it errs early.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy, jetstreamManager, type JetStreamManager, type StoredMsg } from '@nats-io/jetstream';
import { EVENTS_STREAM, UnavailableError, headers, nodeConsumerName } from '@underlay/core';
import { sleep } from '../runtime/retry.js';

const NS_PER_MS = 1_000_000;
/** A consumer nobody pulled from for this long is removed by the server. */
export const NODE_CONSUMER_INACTIVE_MS = 10 * 60_000;
/** Deleted stream messages probed one by one before the start search gives up and errs early. */
const PROBE_SCAN = 16;
const managers = new WeakMap<NatsConnection, JetStreamManager>();
/** Per consumer name: the last remake queued, how many wait, when the last one ended. */
const queues = new Map<string, { tail: Promise<void>; waiting: number; lastMs: number }>();
/** Remakes of one node's consumer waiting at most, and the least time between two. */
const MAX_QUEUED = 4;
const MIN_INTERVAL_MS = 100;

/** (Re)creates `node`'s consumer so that it delivers the events after `afterSeq`. */
export function ensureNodeConsumer(
  nc: NatsConnection,
  node: string,
  afterSeq: number,
): Promise<{ stream: string; consumer: string; startStreamSeq: number }> {
  // One at a time per consumer: a delete and an add of the same name from two requests would interleave (the server
  // refuses an add whose start differs from the existing consumer's). Each remake costs the controller a few dozen
  // JetStream calls, so a node gets at most MAX_QUEUED waiting and one remake per MIN_INTERVAL_MS: a node that asks
  // in a loop is answered "retry later" instead of queueing work without bound.
  const name = nodeConsumerName(node);
  const q = queues.get(name) ?? { tail: Promise.resolve(), waiting: 0, lastMs: 0 };
  if (q.waiting >= MAX_QUEUED) {
    return Promise.reject(new UnavailableError(`node ${node} asked for its event consumer ${q.waiting} times at once; retry later`));
  }
  q.waiting++;
  queues.set(name, q);
  const run = q.tail.then(async () => {
    const wait = q.lastMs + MIN_INTERVAL_MS - Date.now();
    await sleep(wait); // spacing between two remakes (not a retry)
    try {
      return await remakeConsumer(nc, node, afterSeq);
    } finally {
      q.lastMs = Date.now();
    }
  });
  const tail = run.then(
    () => {},
    () => {},
  );
  q.tail = tail;
  // The entry stays (one per node identity ever seen) so the spacing holds for requests made one after another.
  void tail.then(() => void q.waiting--);
  return run;
}

async function remakeConsumer(nc: NatsConnection, node: string, afterSeq: number): Promise<{ stream: string; consumer: string; startStreamSeq: number }> {
  let jsm = managers.get(nc);
  if (!jsm) {
    jsm = await jetstreamManager(nc);
    managers.set(nc, jsm);
  }
  const name = nodeConsumerName(node);
  const startStreamSeq = await findStart(jsm, afterSeq);
  await jsm.consumers.delete(EVENTS_STREAM, name).catch(() => {});
  await jsm.consumers.add(EVENTS_STREAM, {
    name,
    ack_policy: AckPolicy.None,
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: startStreamSeq,
    inactive_threshold: NODE_CONSUMER_INACTIVE_MS * NS_PER_MS,
    max_waiting: 16,
  });
  return { stream: EVENTS_STREAM, consumer: name, startStreamSeq };
}

/**
 * The stream seq to start at: the first message whose event seq is > afterSeq, found by binary search (event
 * seqs grow with stream seqs). Errs early when deleted messages hide the answer.
 */
export async function findStart(jsm: JetStreamManager, afterSeq: number): Promise<number> {
  const { state } = await jsm.streams.info(EVENTS_STREAM);
  const end = state.last_seq + 1; // where the next published message will land
  if (state.messages === 0) return Math.max(1, end);
  let lo = Math.max(1, state.first_seq);
  if (afterSeq === 0) return lo;
  let hi = end;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const probe = await probeFrom(jsm, mid, hi);
    if (probe === undefined || probe.eventSeq > afterSeq) hi = mid;
    else lo = probe.streamSeq + 1;
  }
  return lo;
}

/** The first message at or after stream seq `from` (below `end`), looking past a few deleted ones. */
async function probeFrom(jsm: JetStreamManager, from: number, end: number): Promise<{ streamSeq: number; eventSeq: number } | undefined> {
  for (let s = from; s < end && s < from + PROBE_SCAN; s++) {
    const m = await jsm.streams.getMessage(EVENTS_STREAM, { seq: s });
    if (!m) continue;
    const eventSeq = eventSeqOf(m);
    if (eventSeq !== undefined) return { streamSeq: m.seq, eventSeq };
  }
  return undefined;
}

function eventSeqOf(m: StoredMsg): number | undefined {
  const h = Number(m.header?.get(headers.eventSeq));
  if (Number.isInteger(h) && h > 0) return h;
  try {
    const seq = (m.json() as { seq?: unknown })?.seq;
    return typeof seq === 'number' && Number.isInteger(seq) && seq > 0 ? seq : undefined;
  } catch {
    return undefined;
  }
}

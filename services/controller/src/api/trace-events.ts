/**
 * `GET /v1/events?trace=ID` (what `underlay trace ID` reads): the events of one W3C trace, found by the controller
 * reading the log page by page and keeping only that trace's events, so a client does not page the whole log.
 *
 * A scan of the log rather than an index kept in memory (trace id → seqs): an index would know only the events this
 * controller folded since it started (it starts from a snapshot and never reads the events behind it), would need its
 * own bound and eviction (and then answer "nothing" for an evicted trace that the log still holds), and would be one
 * more copy of the log to keep right on the leader and on every standby. The log itself is short (the leader trims it
 * behind each snapshot) and is the truth on any controller, so reading it is the simple answer that is always right.
 *
 * Bounds of one request: at most TRACE_SCAN_MAX events read (its time), one page of the log in memory at a time (the
 * log's own paging, a few MiB at most), and at most `limit` matches and `maxBytes` of their JSON (the answer). The
 * answer's `next` is the last event read, matched or not: the client reads on from it until `next` stops moving.
 */
import { EventsTrimmedError, type EtcdEventLog } from '@underlay/adapters';
import { LIMITS, type ClusterEvent } from '@underlay/core';

/** Events one request reads at most: ten of the largest pages of `GET /v1/events`. */
export const TRACE_SCAN_MAX = 10 * LIMITS.readEvents;

/** Times a scan starts again at the first kept event when trimming moved it (the leader trims in the background). */
const TRIMMED_RESTARTS = 3;

export interface TraceScan {
  /** Matches at most (the request's `limit`). */
  limit: number;
  /** JSON bytes of matches at most (at least one match is returned, so a reader always progresses). */
  maxBytes: number;
  /** Events read at most (TRACE_SCAN_MAX by default). */
  maxScan?: number;
}

/**
 * The events after `since` whose traceId is `trace`, in seq order, and the last seq read. A start below the trimmed
 * log begins at the first kept event, as an operator's listing does (`GET /v1/events`).
 */
export async function traceEvents(log: Pick<EtcdEventLog, 'readSized'>, trace: string, since: number, o: TraceScan): Promise<{ events: ClusterEvent[]; next: number }> {
  const maxScan = o.maxScan ?? TRACE_SCAN_MAX;
  const events: ClusterEvent[] = [];
  let next = since;
  let scanned = 0;
  let bytes = 0;
  let from = since + 1;
  for (let restarts = 0; ; restarts++) {
    try {
      for await (const page of log.readSized(from)) {
        for (const [i, e] of page.events.entries()) {
          if (e.traceId === trace) {
            bytes += page.sizes[i]! + 1;
            if (events.length >= o.limit || (bytes > o.maxBytes && events.length > 0)) return { events, next };
            events.push(e);
          }
          next = e.seq;
          if (++scanned >= maxScan) return { events, next };
        }
      }
      return { events, next };
    } catch (e) {
      if (restarts < TRIMMED_RESTARTS && e instanceof EventsTrimmedError && e.firstKept > next + 1) {
        from = e.firstKept;
        continue;
      }
      throw e;
    }
  }
}

/**
 * The event log in etcd. Appends are one transaction: compare the head (and, when given, a fence
 * such as the leader key), then write every event and the new head. Reads page through the log.
 *
 * Growth: the leader trims the log behind its latest snapshot (`trimBefore`, bounded range deletes, each with the
 * `trimmed` marker in the same transaction) and compacts etcd's history (`compact`). A read that starts below the
 * first kept event fails with `EventsTrimmedError` (code events-trimmed) instead of returning a partial log; a gap that
 * no trimming explains fails too. Every call has a deadline (`EtcdCalls`).
 */
import type { Etcd3 } from 'etcd3';
import { etcd3 } from './lib.js';
import { parseEvent, type ClusterEvent, UnderlayError, UnavailableError } from '@underlay/core';
import { keys } from './keys.js';
import { createEtcdClient, EtcdCalls, type EtcdClientOptions } from './client.js';

/** etcd's default limits: 128 operations and 1.5 MiB per transaction. We stay below both. */
export const MAX_TXN_OPS = 128;
export const MAX_TXN_BYTES = 1024 * 1024;
/** Events deleted per trimming transaction (one range delete each). */
export const TRIM_CHUNK = 10_000;

export class CommitConflictError extends UnderlayError {
  constructor(expected: number) {
    super('commit-conflict', `event log moved past sequence ${expected}: another writer committed; state is reloaded`, { retriable: true });
    this.name = 'CommitConflictError';
  }
}

/**
 * A read from below the first kept event: the caller must start from the latest snapshot instead. Code
 * `events-trimmed`, which the NATS reply carries, so an agent reading through the controller knows it by code.
 */
export class EventsTrimmedError extends UnderlayError {
  constructor(readonly firstKept: number) {
    super('events-trimmed', `events before seq ${firstKept} were trimmed; load the latest snapshot`);
    this.name = 'EventsTrimmedError';
  }
}

export interface Fence {
  key: string;
  /** The leader key's create revision while this writer holds it. */
  createRevision: string;
}

export interface EventLogOptions extends EtcdClientOptions {}

/** What one `trimBefore` did. */
export interface TrimResult {
  /** First kept seq before and after. */
  from: number;
  to: number;
  deleted: number;
  transactions: number;
  /** etcd revision of the last trimming transaction (0 when nothing was deleted). */
  revision: number;
}

const TrimmedMarker = (v: string): number => {
  const before = (JSON.parse(v) as { before?: unknown }).before;
  if (typeof before !== 'number' || !Number.isInteger(before) || before < 1) throw new UnderlayError('internal', `${keys.trimmed} holds ${v.slice(0, 100)}, not {"before": N}`);
  return before;
};

/** Events in the first page of a read (grown after it while pages are small). */
const FIRST_PAGE = 128;
/** Aim of one page's size in bytes (gRPC's own default limit is 4 MiB). */
const PAGE_BYTES = 4 * 1024 * 1024;

export class EtcdEventLog {
  readonly client: Etcd3;
  /** Deadlines and error texts of every call. */
  readonly calls: EtcdCalls;

  /**
   * From options (the controller: endpoints, TLS, auth, deadline), or around a client made elsewhere (its
   * deadline `timeoutMs`, default 5000; `endpoints` only name it in errors).
   */
  constructor(opts: EventLogOptions | Etcd3, existing: { endpoints?: string[]; timeoutMs?: number } = {}) {
    if (opts instanceof etcd3().Etcd3) {
      this.client = opts;
      this.calls = new EtcdCalls(existing.endpoints ?? [], existing.timeoutMs);
    } else {
      this.client = createEtcdClient(opts);
      this.calls = new EtcdCalls(opts.endpoints, opts.timeoutMs);
    }
  }

  async head(): Promise<number> {
    const v = await this.calls.run(`get ${keys.head}`, (o) => this.client.get(keys.head).options(o).string());
    return v === null ? 0 : (JSON.parse(v) as { seq: number }).seq;
  }

  /** The first event the log keeps: 1, or where trimming left it. */
  async firstSeq(): Promise<number> {
    const v = await this.calls.run(`get ${keys.trimmed}`, (o) => this.client.get(keys.trimmed).options(o).string());
    return v === null ? 1 : TrimmedMarker(v);
  }

  /**
   * Reads events with seq ≥ fromSeq, in order, page by page. Throws EventsTrimmedError when fromSeq (or the
   * position of a later page, if trimming overtook the reader) lies below the first kept event.
   */
  async *read(fromSeq = 1, pageSize = 5000): AsyncGenerator<ClusterEvent[]> {
    for await (const { events } of this.readSized(fromSeq, pageSize)) yield events;
  }

  /** As `read`, with each event's size in the log (bytes of its JSON). */
  async *readSized(fromSeq = 1, pageSize = 5000): AsyncGenerator<{ events: ClusterEvent[]; sizes: number[] }> {
    let next = fromSeq;
    const end = etcd3().Range.prefix(keys.eventPrefix).end;
    // Paged by count and by bytes: start small, grow while pages stay well under PAGE_BYTES, shrink when one is
    // over it, so a run of large events never makes one answer too big for gRPC (or for memory).
    let size = Math.min(pageSize, FIRST_PAGE);
    for (;;) {
      const start = keys.event(next);
      const limit = size;
      const res = await this.calls.run(`range ${start}… limit ${limit}`, (o) =>
        this.client.getAll().inRange(new (etcd3().Range)(start, end)).sort('Key', 'Ascend').limit(limit).options(o).exec(),
      );
      const bytes = res.kvs.reduce((n, kv) => n + kv.value.length, 0);
      const page = res.kvs.map((kv) => parseEvent(JSON.parse(kv.value.toString())));
      // An empty page is the head (trimming never deletes the last event), not a trimmed start: no check needed.
      if (page.length === 0) return;
      if (page[0]!.seq !== next) await this.checkStart(next, page[0]!.seq);
      yield { events: page, sizes: res.kvs.map((kv) => kv.value.length) };
      next = page[page.length - 1]!.seq + 1;
      if (res.kvs.length < limit) return;
      if (bytes > PAGE_BYTES) size = Math.max(1, Math.floor((limit * PAGE_BYTES) / bytes));
      else if (bytes < PAGE_BYTES / 4) size = Math.min(pageSize, size * 4);
    }
  }

  /** A read at `from` found `found` (or nothing): fine past the head, trimmed, or a hole etcd should not have. */
  private async checkStart(from: number, found: number | undefined): Promise<void> {
    const first = await this.firstSeq();
    if (from < first) throw new EventsTrimmedError(first);
    if (found !== undefined) {
      throw new UnderlayError('internal', `the event log has no event ${from} (the next one is ${found}) and was not trimmed there; refusing to fold a log with a hole`);
    }
  }

  /**
   * Events with seq ≥ fromSeq, at most `limit` of them. With `fromFirstKept` (an operator's listing), a start below
   * the trimmed log begins at the first kept event instead of failing with EventsTrimmedError.
   */
  async readAll(fromSeq = 1, limit = Infinity, o: { fromFirstKept?: boolean; maxBytes?: number } = {}): Promise<ClusterEvent[]> {
    try {
      return await this.readPages(fromSeq, limit, o.maxBytes);
    } catch (e) {
      if (o.fromFirstKept && e instanceof EventsTrimmedError && e.firstKept > fromSeq) return this.readPages(e.firstKept, limit, o.maxBytes);
      throw e;
    }
  }

  /** At most `limit` events and `maxBytes` of their JSON (but at least one event, so a reader always progresses). */
  private async readPages(fromSeq: number, limit: number, maxBytes = Infinity): Promise<ClusterEvent[]> {
    const out: ClusterEvent[] = [];
    let bytes = 0;
    for await (const { events, sizes } of this.readSized(fromSeq, Math.min(limit, 5000))) {
      for (const [i, ev] of events.entries()) {
        bytes += sizes[i]! + 1;
        if (out.length >= limit || (bytes > maxBytes && out.length > 0)) return out;
        out.push(ev);
      }
    }
    return out;
  }


  /**
   * Appends events whose seqs continue `expectHead` without gaps. Throws CommitConflictError when the
   * head moved (or the fence no longer holds): nothing was written then. An UnavailableError (deadline)
   * leaves the outcome unknown: the caller reloads from etcd.
   */
  async append(events: ClusterEvent[], expectHead: number, fence?: Fence, encoded?: readonly string[]): Promise<void> {
    if (events.length === 0) return;
    if (events.length + 1 > MAX_TXN_OPS) throw new Error(`too many events for one transaction: ${events.length}`);
    events.forEach((e, i) => {
      if (e.seq !== expectHead + 1 + i) throw new Error(`event seq ${e.seq} does not follow head ${expectHead + i}`);
    });
    const last = events[events.length - 1]!.seq;
    const res = await this.calls.run(`txn append events ${expectHead + 1}..${last}`, (o) => {
      const cmp =
        expectHead === 0
          ? this.client.if(keys.head, 'Create', '==', 0)
          : this.client.if(keys.head, 'Value', '==', JSON.stringify({ seq: expectHead }));
      if (fence) cmp.and(fence.key, 'Create', '==', fence.createRevision);
      const ops = events.map((e, i) => this.client.put(keys.event(e.seq)).value(encoded?.[i] ?? JSON.stringify(e)));
      ops.push(this.client.put(keys.head).value(JSON.stringify({ seq: last })));
      return cmp.then(...ops).options(o).commit();
    });
    if (!res.succeeded) throw new CommitConflictError(expectHead);
  }

  /**
   * Deletes every event with seq < `cut` (never the head's), at most `chunk` per transaction, each transaction
   * moving the `trimmed` marker with it and, when given, comparing the fence (so only the leader trims).
   */
  async trimBefore(cut: number, fence?: Fence, chunk = TRIM_CHUNK): Promise<TrimResult> {
    if (!Number.isInteger(cut) || cut < 1) throw new UnderlayError('invalid-argument', `cannot trim before seq ${cut}`);
    if (!Number.isInteger(chunk) || chunk < 1) throw new UnderlayError('invalid-argument', `trim chunk must be ≥ 1, got ${chunk}`);
    const head = await this.head();
    if (cut > head) throw new UnderlayError('invalid-argument', `cannot trim before seq ${cut}: the log ends at ${head}`);
    const from = await this.firstSeq();
    let first = from;
    const out: TrimResult = { from, to: from, deleted: 0, transactions: 0, revision: 0 };
    while (first < cut) {
      const to = Math.min(cut, first + chunk);
      const prev = first;
      const res = await this.calls.run(`txn trim events ${prev}..${to - 1}`, (o) => {
        const cmp = prev === 1 ? this.client.if(keys.trimmed, 'Create', '==', 0) : this.client.if(keys.trimmed, 'Value', '==', JSON.stringify({ before: prev }));
        if (fence) cmp.and(fence.key, 'Create', '==', fence.createRevision);
        return cmp
          .then(this.client.delete().range(new (etcd3().Range)(keys.event(prev), keys.event(to))), this.client.put(keys.trimmed).value(JSON.stringify({ before: to })))
          .options(o)
          .commit();
      });
      if (!res.succeeded) throw new UnavailableError(`trimming the event log stopped at seq ${prev}: the leader key or the trimmed marker changed (another writer)`);
      out.deleted += Number(res.responses[0]?.response_delete_range?.deleted ?? 0);
      out.transactions++;
      out.revision = Number(res.header.revision);
      first = to;
      out.to = to;
      // Let requests in between: trimming is background work.
      await new Promise((r) => setImmediate(r));
    }
    return out;
  }

  /**
   * Compacts etcd's history up to the current revision minus `marginRevisions` (physical=false: etcd frees the
   * space in the background). Returns the revision compacted to, or undefined when there was nothing to do
   * (too few revisions, or etcd had already compacted past it).
   */
  async compact(marginRevisions: number): Promise<number | undefined> {
    const res = await this.calls.run(`get ${keys.head} (for the revision)`, (o) => this.client.get(keys.head).options(o).exec());
    const rev = Number(res.header.revision) - marginRevisions;
    if (rev <= 1) return undefined;
    try {
      await this.calls.run(`compact to revision ${rev}`, (o) => this.client.kv.compact({ revision: rev, physical: false }, o));
    } catch (e) {
      // etcd had already compacted past it (OUT_OF_RANGE: "required revision has been compacted"), by its class.
      if (e instanceof UnderlayError && e.cause instanceof etcd3().GRPCOutOfRangeError) return undefined;
      throw e;
    }
    return rev;
  }

  close(): void {
    this.client.close();
  }
}

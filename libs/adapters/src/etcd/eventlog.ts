/**
 * The event log in etcd. Appends are one transaction: compare the head (and, when given, a fence
 * such as the leader key), then write every event and the new head. Reads page through the log.
 */
import { Etcd3, Range } from 'etcd3';
import { parseEvent, type ClusterEvent, UnderlayError } from '@underlay/core';
import { keys } from './keys.js';

/** etcd's default limits: 128 operations and 1.5 MiB per transaction. We stay below both. */
export const MAX_TXN_OPS = 128;
export const MAX_TXN_BYTES = 1024 * 1024;

export class CommitConflictError extends UnderlayError {
  constructor(expected: number) {
    super('unavailable', `event log moved past sequence ${expected}: another writer committed; state is reloaded`, { retriable: true });
    this.name = 'CommitConflictError';
  }
}

export interface Fence {
  key: string;
  /** The leader key's create revision while this writer holds it. */
  createRevision: string;
}

export interface EventLogOptions {
  endpoints: string[];
  dialTimeoutMs?: number;
}

export class EtcdEventLog {
  readonly client: Etcd3;

  constructor(opts: EventLogOptions | Etcd3) {
    this.client = opts instanceof Etcd3 ? opts : new Etcd3({ hosts: opts.endpoints, dialTimeout: opts.dialTimeoutMs ?? 3000 });
  }

  async head(): Promise<number> {
    const v = await this.client.get(keys.head).string();
    return v === null ? 0 : (JSON.parse(v) as { seq: number }).seq;
  }

  /** Reads events with seq ≥ fromSeq, in order, page by page. */
  async *read(fromSeq = 1, pageSize = 5000): AsyncGenerator<ClusterEvent[]> {
    let next = fromSeq;
    const end = Range.prefix(keys.eventPrefix).end;
    for (;;) {
      const res = await this.client
        .getAll()
        .inRange(new Range(keys.event(next), end))
        .sort('Key', 'Ascend')
        .limit(pageSize)
        .exec();
      if (res.kvs.length === 0) return;
      const page = res.kvs.map((kv) => parseEvent(JSON.parse(kv.value.toString())));
      yield page;
      next = page[page.length - 1]!.seq + 1;
      if (res.kvs.length < pageSize) return;
    }
  }

  /** Events with seq ≥ fromSeq, at most `limit` of them. */
  async readAll(fromSeq = 1, limit = Infinity): Promise<ClusterEvent[]> {
    const out: ClusterEvent[] = [];
    for await (const page of this.read(fromSeq, Math.min(limit, 5000))) {
      out.push(...page);
      if (out.length >= limit) break;
    }
    return out.slice(0, limit);
  }

  /**
   * Appends events whose seqs continue `expectHead` without gaps. Throws CommitConflictError when the
   * head moved (or the fence no longer holds): nothing was written then.
   */
  async append(events: ClusterEvent[], expectHead: number, fence?: Fence, encoded?: readonly string[]): Promise<void> {
    if (events.length === 0) return;
    if (events.length + 1 > MAX_TXN_OPS) throw new Error(`too many events for one transaction: ${events.length}`);
    events.forEach((e, i) => {
      if (e.seq !== expectHead + 1 + i) throw new Error(`event seq ${e.seq} does not follow head ${expectHead + i}`);
    });
    const last = events[events.length - 1]!.seq;
    const cmp =
      expectHead === 0
        ? this.client.if(keys.head, 'Create', '==', 0)
        : this.client.if(keys.head, 'Value', '==', JSON.stringify({ seq: expectHead }));
    if (fence) cmp.and(fence.key, 'Create', '==', fence.createRevision);
    const ops = events.map((e, i) => this.client.put(keys.event(e.seq)).value(encoded?.[i] ?? JSON.stringify(e)));
    ops.push(this.client.put(keys.head).value(JSON.stringify({ seq: last })));
    const res = await cmp.then(...ops).commit();
    if (!res.succeeded) throw new CommitConflictError(expectHead);
  }

  close(): void {
    this.client.close();
  }
}

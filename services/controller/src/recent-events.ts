/**
 * The last committed events in memory, so that an agent's read of one chain (`events.read {chain}`: catch-up after a
 * restart, a pool it starts to follow, a gap) is answered without reading etcd: each chain's catch-up would otherwise
 * scan the same range of the log once per chain and per agent. Filled from the commits (in order, contiguous); a read
 * that starts before the oldest event held goes to etcd.
 */
import { chainOfEvent, type ClusterEvent } from '@underlay/core';

/** Events kept (their JSON, a few hundred bytes each: a few MB). */
export const RECENT_EVENTS = 20_000;

export class RecentEvents {
  private events: { seq: number; chain: string; json: string }[] = [];

  constructor(private readonly max = RECENT_EVENTS) {}

  /** Committed events, in order. A batch that does not follow the last one held starts the window again. */
  add(events: readonly ClusterEvent[], encoded?: readonly string[]): void {
    if (events.length === 0) return;
    const last = this.events.at(-1)?.seq;
    if (last !== undefined && events[0]!.seq !== last + 1) this.events = [];
    for (const [i, ev] of events.entries()) this.events.push({ seq: ev.seq, chain: chainOfEvent(ev), json: encoded?.[i] ?? JSON.stringify(ev) });
    if (this.events.length > this.max * 1.25) this.events = this.events.slice(-this.max);
  }

  /**
   * The events of `chain` from `fromSeq` (at most `limit`, and `maxBytes` of JSON: at least one), and `through`: every
   * event of the chain up to it is in the answer. Undefined when the window does not reach back to `fromSeq`.
   */
  readChain(chain: string, fromSeq: number, limit: number, maxBytes: number): { events: ClusterEvent[]; through: number } | undefined {
    const first = this.events[0]?.seq;
    if (first === undefined || fromSeq < first) return undefined;
    const out: ClusterEvent[] = [];
    let bytes = 2;
    let through = fromSeq - 1;
    for (let i = fromSeq - first; i < this.events.length; i++) {
      const e = this.events[i]!;
      if (e.chain === chain) {
        bytes += Buffer.byteLength(e.json) + 1;
        if ((bytes > maxBytes && out.length > 0) || out.length >= limit) break;
        out.push(JSON.parse(e.json) as ClusterEvent);
      }
      through = e.seq;
    }
    return { events: out, through };
  }
}

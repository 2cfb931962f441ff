/**
 * Snapshots: every `every` committed events the leader writes the state to etcd; a cold start
 * restores the latest snapshot and folds only the events after it.
 */
import { apply, fold, restore, snapshot, snapshotJsonParts, type ClusterEvent, type IpamState } from '@underlay/core';
import type { EtcdEventLog, EtcdSnapshots } from '@underlay/adapters';

export async function loadState(log: EtcdEventLog, snaps: EtcdSnapshots, logger: (m: string) => void = () => {}): Promise<IpamState> {
  let base: IpamState | undefined;
  try {
    const s = await snaps.latest();
    if (s) base = restore(JSON.parse(s.json));
  } catch (e) {
    logger(`snapshot unreadable, folding the whole log: ${(e as Error).message}`);
  }
  let state = base ?? fold([]);
  for await (const page of log.read(state.seq + 1)) state = fold(page, state);
  return state;
}

/**
 * Writes snapshots without stalling the leader. It keeps a shadow of the state folded from committed
 * events only (so it never holds a decision that might not commit), and serialises it in slices that
 * yield to the event loop, buffering the events committed meanwhile. Costs a second copy of the state
 * in memory; serialising 60,000 allocations at once would block the leader for about 50 ms.
 */
export class Snapshotter {
  private shadow?: IpamState;
  private lastSeq = 0;
  private busy = false;
  private buffered: ClusterEvent[] = [];
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly snaps: EtcdSnapshots,
    private readonly every: number,
    private readonly logger: (m: string) => void = () => {},
  ) {}

  /** Starts from a state equal to the committed log (the leader's state right after taking over). */
  reset(committed: IpamState): void {
    this.shadow = restore(JSON.parse(JSON.stringify(snapshot(committed))));
    this.lastSeq = committed.seq;
    this.buffered = [];
  }

  /** Called with every committed batch, in order. */
  onCommitted(events: readonly ClusterEvent[]): void {
    if (!this.shadow) return;
    if (this.busy) {
      this.buffered.push(...events);
      return;
    }
    try {
      for (const ev of events) apply(this.shadow, ev);
    } catch (e) {
      // The log moved under us (another writer): snapshots resume after the next full reload.
      this.logger(`snapshot shadow dropped: ${(e as Error).message}`);
      this.shadow = undefined;
      return;
    }
    if (this.shadow.seq - this.lastSeq >= this.every) this.writing = this.write();
  }

  /** Resolves when the snapshot being written (if any) is done: a stopping controller finishes it. */
  async flush(): Promise<void> {
    // A write that ends may start the next one from the events buffered meanwhile.
    let p: Promise<void>;
    do {
      p = this.writing;
      await p;
    } while (p !== this.writing);
  }

  private async write(): Promise<void> {
    const shadow = this.shadow!;
    this.busy = true;
    const seq = shadow.seq;
    try {
      const parts: string[] = [];
      for (const part of snapshotJsonParts(shadow)) {
        parts.push(part);
        await new Promise((r) => setImmediate(r));
      }
      const json = parts.join('');
      await this.snaps.write(seq, json);
      this.logger(`snapshot written at seq ${seq} (${json.length} bytes)`);
    } catch (e) {
      this.logger(`snapshot at ${seq} not written: ${(e as Error).message}`);
    } finally {
      // Written or not, the next attempt comes `every` events later (no retry loop while etcd is away).
      this.lastSeq = seq;
      this.busy = false;
      if (this.shadow === shadow) {
        const pending = this.buffered;
        this.buffered = [];
        this.onCommitted(pending);
      }
    }
  }
}

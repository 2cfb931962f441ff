/**
 * Snapshots: every `every` committed events the leader writes the state to etcd; a cold start
 * restores the latest snapshot and folds only the events after it (`loadState`, which reports how many
 * it folded and whether the snapshot was usable). After each snapshot the leader trims the event log
 * behind it (keeping `retention` events before the snapshot's seq) and compacts etcd's history.
 */
import {
  apply,
  cloneStateInSlices,
  fold,
  restore,
  snapshotJsonParts,
  type SnapshotSection,
  UnavailableError,
  UnderlayError,
  type ClusterEvent,
  type ClusterState,
} from '@underlay/core';
import { EventsTrimmedError, type EtcdEventLog, type EtcdSnapshots, type Fence, logError, logWarn } from '@underlay/adapters';

/** What one cold start (`loadState`) did. */
export interface LoadReport {
  /** Seq of the snapshot restored; 0 when none was (no snapshot, or an unusable one). */
  snapshotSeq: number;
  /** Events folded after the snapshot (the whole log without one). */
  folded: number;
  /** Seq of the state loaded. */
  seq: number;
  ms: number;
  /** Why the latest snapshot was not used, when there was one and it could not be. */
  snapshotError?: string;
}

/**
 * Loads the state: the latest snapshot, then the events after it. A corrupt snapshot (checksum, missing part,
 * invalid content) is logged and reported, and the whole log is folded instead — unless the log was trimmed,
 * then this fails rather than fold a partial log. etcd being unreachable is an error, never a fallback.
 */
export async function loadState(
  log: EtcdEventLog,
  snaps: EtcdSnapshots,
  logger: (m: string) => void = () => {},
  report: (r: LoadReport) => void = () => {},
): Promise<ClusterState> {
  const t0 = Date.now();
  let base: ClusterState | undefined;
  let snapshotError: string | undefined;
  try {
    const s = await snaps.latest();
    if (s) base = restoreSnapshot(s);
  } catch (e) {
    if (e instanceof UnavailableError) throw e; // etcd unreachable: nothing to conclude about the snapshot
    base = undefined;
    const msg = (e as Error).message.replace(/\s+/g, ' ').slice(0, 400);
    snapshotError = msg.startsWith('snapshot') ? msg : `the latest snapshot is unusable: ${msg}`;
    logError(logger, `CORRUPT SNAPSHOT: ${snapshotError}; folding the whole event log instead`);
  }
  let state = base ?? fold([]);
  const snapshotSeq = base?.seq ?? 0;
  try {
    for await (const page of log.read(state.seq + 1)) state = fold(page, state);
  } catch (e) {
    if (e instanceof EventsTrimmedError) {
      const why = base ? `the snapshot at seq ${snapshotSeq} is older than the first kept event` : snapshotError ? `the latest snapshot is unusable (${snapshotError})` : 'there is no snapshot';
      throw new UnderlayError(
        'internal',
        `cannot load the cluster state: ${why} and the event log before seq ${e.firstKept} was trimmed; refusing to fold a partial log (restore etcd from a backup)`,
        { cause: e },
      );
    }
    throw e;
  }
  const r: LoadReport = { snapshotSeq, folded: state.seq - snapshotSeq, seq: state.seq, ms: Date.now() - t0, snapshotError };
  logger(
    snapshotSeq
      ? `state loaded: snapshot at seq ${snapshotSeq}, then ${r.folded} events folded (seq ${r.seq}) in ${r.ms} ms`
      : `state loaded: no usable snapshot, ${r.folded} events folded (seq ${r.seq}) in ${r.ms} ms`,
  );
  report(r);
  return state;
}

/** The state a snapshot holds; throws when its JSON or content is invalid, or its seq is not the manifest's. */
function restoreSnapshot(s: { seq: number; json: string }): ClusterState {
  const state = restore(JSON.parse(s.json));
  if (state.seq !== s.seq) throw new Error(`snapshot ${s.seq} holds the state at seq ${state.seq}`);
  return state;
}

/** Trimming behind snapshots (the leader's). */
export interface RetentionOptions {
  log: EtcdEventLog;
  /** Events kept before the latest snapshot's seq; 0: never trim. */
  events: number;
  /** Compact etcd's history after trimming, to the current revision minus `compactMargin` revisions. */
  compact: boolean;
  compactMargin: number;
  /** The leader's fence (throws or returns undefined when not leader: nothing is trimmed then). */
  fence: () => Fence | undefined;
}

/**
 * Writes snapshots without stalling the leader. It keeps a shadow of the state folded from committed
 * events only (so it never holds a decision that might not commit), and serialises it in slices that
 * yield to the event loop, buffering the events committed meanwhile. Costs a second copy of the state
 * in memory; serialising 60,000 allocations at once would block the leader for about 50 ms.
 */
export class Snapshotter {
  private shadow?: ClusterState;
  private lastSeq = 0;
  private busy = false;
  /** The shadow is being copied (reset); committed events wait in `buffered`. */
  private building = false;
  private generation = 0;
  private buffered: ClusterEvent[] = [];
  private writing: Promise<void> = Promise.resolve();
  /** The last cold start's report, and how many loads and corrupt snapshots this controller saw. */
  lastLoad?: LoadReport;
  loads = 0;
  corruptSnapshots = 0;
  /** First event kept after the last trimming (1: never trimmed by this controller) and the last compaction. */
  trimmedBefore = 1;
  compactedRevision = 0;
  /** The last load found the latest snapshot corrupt: the next leader term writes a new one at once. */
  private repair = false;

  constructor(
    private readonly snaps: EtcdSnapshots,
    private readonly every: number,
    private readonly logger: (m: string) => void = () => {},
    private readonly retention?: RetentionOptions,
  ) {}

  /** Records a load (pass it as loadState's `report`). */
  recordLoad(r: LoadReport): void {
    this.lastLoad = r;
    this.loads++;
    if (r.snapshotError) {
      this.corruptSnapshots++;
      this.repair = true;
    }
  }

  /**
   * Starts from a state equal to the committed log (the leader's state right after taking over). The shadow is copied
   * a slice at a time (core's cloneStateInSlices), yielding to the event loop: at 1M allocations a copy at once blocked
   * the new leader for ~3 s, past its 2 s lease. Events committed meanwhile are buffered and folded when it is done.
   */
  reset(committed: ClusterState): void {
    const generation = ++this.generation;
    this.shadow = undefined;
    this.lastSeq = committed.seq;
    this.buffered = [];
    this.building = true;
    const steps = cloneStateInSlices(committed);
    let step = steps.next(); // takes what it copies from `committed` now, while it equals the committed log
    void (async () => {
      while (!step.done) {
        await new Promise((r) => setImmediate(r));
        if (generation !== this.generation) return; // reset again meanwhile
        step = steps.next();
      }
      this.building = false;
      this.shadow = step.value;
      const pending = this.buffered;
      this.buffered = [];
      if (this.repair && !this.busy) {
        this.repair = false;
        this.logger(`replacing the corrupt snapshot with one at seq ${committed.seq}`);
        this.writing = this.write(true);
      }
      this.onCommitted(pending);
    })();
  }

  /** Called with every committed batch, in order. */
  onCommitted(events: readonly ClusterEvent[]): void {
    if (this.building) {
      this.buffered.push(...events);
      return;
    }
    if (!this.shadow) return;
    if (this.busy) {
      this.buffered.push(...events);
      return;
    }
    try {
      for (const ev of events) apply(this.shadow, ev);
    } catch (e) {
      // The log moved under us (another writer): snapshots resume after the next full reload.
      logWarn(this.logger, `snapshot shadow dropped: ${(e as Error).message}`);
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

  /**
   * Trims the log behind the snapshot just written at `snapshotSeq` — after reading it back whole (a snapshot that
   * cannot be read must not replace the events) — then compacts etcd's history.
   */
  private async trim(snapshotSeq: number): Promise<void> {
    const r = this.retention;
    if (!r || r.events === 0) return;
    const cut = snapshotSeq - r.events + 1;
    if (cut <= this.trimmedBefore) return;
    let fence: Fence | undefined;
    try {
      fence = r.fence();
    } catch {
      fence = undefined;
    }
    if (!fence) return; // not the leader (any more): the next leader trims
    const back = await this.snaps.latest();
    if (!back || back.seq < snapshotSeq) throw new UnderlayError('internal', `snapshot ${snapshotSeq} was written but reads back as ${back ? `snapshot ${back.seq}` : 'nothing'}; the log is not trimmed`);
    const t0 = Date.now();
    const done = await r.log.trimBefore(cut, fence);
    this.trimmedBefore = done.to;
    if (done.deleted === 0) return;
    let compacted = '';
    if (r.compact) {
      const rev = await r.log.compact(r.compactMargin);
      if (rev !== undefined) {
        this.compactedRevision = rev;
        compacted = `; etcd history compacted to revision ${rev}`;
      }
    }
    this.logger(`event log trimmed: ${done.deleted} events before seq ${done.to} deleted in ${done.transactions} transactions (${Date.now() - t0} ms), keeping ${r.events} before snapshot ${snapshotSeq}${compacted}`);
  }

  private async write(replaceCorrupt = false): Promise<void> {
    const shadow = this.shadow!;
    this.busy = true;
    const seq = shadow.seq;
    try {
      const parts: string[] = [];
      const sections: SnapshotSection[] = [];
      for (const part of snapshotJsonParts(shadow, undefined, sections)) {
        parts.push(part);
        await new Promise((r) => setImmediate(r));
      }
      const json = parts.join('');
      const written = await this.snaps.write(seq, json, { replaceSameSeq: replaceCorrupt, sections });
      this.logger(written ? `snapshot written at seq ${seq} (${json.length} bytes)` : `snapshot at seq ${seq} not written: a newer one exists`);
      if (written) await this.trim(seq);
    } catch (e) {
      logWarn(this.logger, `snapshot at ${seq} not written or log not trimmed: ${(e as Error).message}`);
    } finally {
      // Written or not, the next attempt comes `every` events later (no retry loop while etcd is away).
      this.lastSeq = seq;
      this.busy = false;
      // The events committed during the write go to the shadow: this one, or one a takeover copied meanwhile (a shadow
      // still being copied takes them itself when done).
      if (this.shadow && !this.building) {
        const pending = this.buffered;
        this.buffered = [];
        this.onCommitted(pending);
      }
    }
  }
}


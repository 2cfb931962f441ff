/**
 * Snapshots: every `every` committed events the leader writes the state to etcd; a cold start
 * restores the latest snapshot and folds only the events after it.
 * The state in memory may run ahead of etcd (events decided, not yet committed), so a snapshot is
 * serialised at once but written only after everything up to its seq is durable.
 */
import { fold, restore, snapshot, type IpamState } from '@underlay/core';
import type { EtcdEventLog, EtcdSnapshots } from '@underlay/adapters';
import type { IpamService } from './ipam-service.js';

export async function loadState(log: EtcdEventLog, snaps: EtcdSnapshots, logger: (m: string) => void = () => {}): Promise<IpamState> {
  let base: IpamState | undefined;
  try {
    const s = await snaps.latest();
    if (s) base = restore(JSON.parse(s.json));
  } catch (e) {
    logger(`snapshot unreadable, folding the whole log: ${(e as Error).message}`);
  }
  const from = base ? base.seq + 1 : 1;
  const state = base ?? undefined;
  let out = state;
  for await (const page of log.read(from)) out = fold(page, out);
  return out ?? fold([]);
}

export class Snapshotter {
  private lastSeq = 0;
  private busy = false;
  written = 0;

  constructor(
    private readonly ipam: IpamService,
    private readonly snaps: EtcdSnapshots,
    private readonly every: number,
    private readonly logger: (m: string) => void = () => {},
  ) {}

  /** Call after commits; cheap when no snapshot is due. */
  maybeSnapshot(): void {
    const state = this.ipam.state;
    if (this.busy || state.seq - this.lastSeq < this.every) return;
    this.busy = true;
    const seq = state.seq;
    const json = JSON.stringify(snapshot(state));
    void this.ipam
      .waitCommitted(seq)
      .then(async () => {
        if ((await this.snaps.write(seq, json)) === true) this.written++;
        this.lastSeq = seq;
        this.logger(`snapshot written at seq ${seq} (${json.length} bytes)`);
      })
      .catch((e) => this.logger(`snapshot at ${seq} not written: ${(e as Error).message}`))
      .finally(() => (this.busy = false));
  }

  /** Start counting from the state just loaded. */
  reset(seq: number): void {
    this.lastSeq = seq;
  }
}

/**
 * Periodic housekeeping on the leader: reclaims leaked addresses (two sightings in a row, see
 * core's leak rules) and releases blocks that have been empty for the grace period. The schedule is the shared
 * ReconcileRunner's resync (the first pass one interval after start, as a pass needs the nodes' reports).
 */
import { ReconcileRunner, logWarn } from '@underlay/adapters';
import { candidateKey, collectLeaks, decideReleaseEmptyBlocks, findLeakCandidates, type LeakCandidate, type LeakPolicy, type LeakSighting, type NodeLiveness } from '@underlay/core';
import type { ClusterWriter } from './cluster-writer.js';

export interface CollectorOptions {
  intervalMs: number;
  leakPolicy: LeakPolicy;
  blockGraceMs: number;
}


export class Collector {
  private readonly runner: ReconcileRunner;
  private previous: ReadonlyMap<string, LeakSighting> = new Map();
  private running?: Promise<void>;
  /** Everything reclaimed so far (for logs and tests). */
  readonly reclaimed: LeakCandidate[] = [];
  passes = 0;
  /** Allocations seen unused once (reclaimed if seen again next pass), by pool (metrics). */
  candidates: ReadonlyMap<string, number> = new Map();

  constructor(
    private readonly writer: ClusterWriter,
    /** What the controller heard from each node (NodeDirectory.liveness). */
    private readonly liveness: ReadonlyMap<string, NodeLiveness>,
    private readonly opts: CollectorOptions,
    /** The time since which the controller could hear from nodes (its start as leader). */
    private readonly sinceMs: number,
    private readonly logger: (m: string) => void = () => {},
    /** Told of the pools of each reclaimed allocation (metrics). */
    private readonly onReclaimed?: (pools: string[]) => void,
  ) {
    this.runner = new ReconcileRunner({
      name: 'collector',
      resyncMs: opts.intervalMs,
      // A pass logs its own failure and is tried again at the next interval.
      reconcile: async (p) => {
        if (p.reasons.size === 1 && p.reasons.has('start')) return; // the first pass comes after one interval
        await this.pass();
      },
    });
  }

  start(): void {
    this.runner.start();
  }

  async stop(): Promise<void> {
    await this.runner.stop();
    await this.running;
  }

  /** One pass; concurrent calls share it. */
  pass(nowMs = Date.now()): Promise<void> {
    this.running ??= this.doPass(nowMs).finally(() => (this.running = undefined));
    return this.running;
  }

  private async doPass(nowMs: number): Promise<void> {
    try {
      await this.writer.settled();
      const r = await this.writer.run((s) => {
        const found = findLeakCandidates(s, nowMs, this.liveness, this.opts.leakPolicy, this.sinceMs);
        const out = collectLeaks(s, this.previous, found);
        return { events: out.events, result: { ...out, seen: found.filter((c) => out.remember.has(candidateKey(c))) } };
      }, { actor: 'controller' });
      this.previous = r.remember;
      const byPool = new Map<string, number>();
      for (const c of r.seen) byPool.set(c.poolId, (byPool.get(c.poolId) ?? 0) + 1);
      this.candidates = byPool;
      this.onReclaimed?.(r.reclaimed.map((c) => c.poolId));
      this.reclaimed.push(...r.reclaimed);
      for (const c of r.reclaimed) this.logger(`reclaimed leaked ${c.address} of ${c.poolId} held by ${c.node} (${c.rule})`);
      const blocks = await this.writer.run((s) => decideReleaseEmptyBlocks(s, nowMs, this.opts.blockGraceMs), { actor: 'controller' });
      for (const b of blocks.released) this.logger(`released empty block ${b}`);
      this.passes++;
    } catch (e) {
      logWarn(this.logger, `collector pass failed: ${(e as Error).message}`);
    }
  }
}

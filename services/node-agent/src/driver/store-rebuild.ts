/**
 * The rebuild of an agent's store at start, with its logs: damaged state files (moved aside by the store) and repairs,
 * then Docker (before the agent serves; if Docker cannot be read yet it tries again in the background, 1 s to
 * 30 s apart with the shared backoff, until it can or the agent stops), then the controller once the cluster view
 * has caught up (and again after a late Docker rebuild). The rebuild steps themselves are in restore.ts (which the
 * UML guest loads alone, so this module's runtime imports stay out of it).
 */
import { Backoff, type ClusterState } from '@underlay/core';
import { sleep, logWarn } from '@underlay/adapters';
import type { Log } from './context.js';
import { claimReleased, forgetPruned, pruneSummary, rebuildFromController, rebuildFromDocker, type PruneReport, type RebuildDeps } from './restore.js';

/** Waits between two tries to read Docker at start. */
export const DOCKER_REBUILD_BACKOFF = { minMs: 1_000, maxMs: 30_000 } as const;

export class StoreRebuild {
  private state?: ClusterState;
  private readonly stopping = new AbortController();
  private retrying?: Promise<void>;
  private forgetting?: Promise<void>;

  constructor(private readonly ctx: RebuildDeps & { log: Log }) {}

  async start(): Promise<void> {
    const { store, log } = this.ctx;
    for (const d of store.damaged) {
      log(`state file ${d.file} ${d.reason}; ${d.movedTo ? `moved aside to ${d.movedTo}` : 'left in place'}: rebuilding what it held from Docker and the controller`);
    }
    for (const r of store.repaired) log(`state file ${r}`);
    if (await this.fromDocker()) return;
    this.retrying = this.retryDocker();
  }

  /** Reads Docker again after each wait until it answers or the rebuild stops; then completes from the controller. */
  private async retryDocker(): Promise<void> {
    const { signal } = this.stopping;
    const backoff = new Backoff(DOCKER_REBUILD_BACKOFF);
    while (!signal.aborted) {
      await sleep(backoff.next(), signal);
      if (signal.aborted) return;
      if (await this.fromDocker()) {
        if (this.state) await this.withController(this.state);
        return;
      }
    }
  }

  /** One rebuild from Docker; true when Docker could be read. */
  private async fromDocker(): Promise<boolean> {
    const { log } = this.ctx;
    const r = await rebuildFromDocker(this.ctx);
    if (r.networks.length || r.endpoints.length) {
      log(`rebuilt from Docker: ${r.networks.length} networks (${r.networks.join(', ') || '-'}) and ${r.endpoints.length} endpoints (${r.endpoints.join(', ') || '-'})`);
    }
    for (const e of r.errors) log(`rebuild from Docker: ${e}`);
    if (r.pruned) this.pruned(r.pruned);
    if (!r.dockerRead) log('Docker could not be read: the agent starts with what its state files hold and tries again');
    return r.dockerRead;
  }

  /** Logs what the check against Docker removed, and tells the controller (in the background: the agent starts serving meanwhile). */
  private pruned(p: PruneReport): void {
    const { log } = this.ctx;
    const summary = pruneSummary(p);
    if (summary) logWarn(log, summary);
    for (const e of p.errors) logWarn(log, `check against Docker: ${e}`);
    if (p.removed.length === 0) return;
    this.forgetting = forgetPruned(this.ctx, p.removed).then((errors) => {
      for (const e of errors) logWarn(log, e);
    });
  }

  /**
   * Completes the store from the caught-up cluster state (pools, allocations, bindings). The controller has been told
   * about the records removed at start first (replicas, which may use the same pools, start after this).
   */
  withController(state: ClusterState): Promise<void> {
    return this.serial(() => this.fromController(state));
  }

  /**
   * While running: takes back its running containers' addresses the cluster released (claimReleased), when the view
   * sees such a release or resyncs; one at a time with the start's rebuild. Logs what it took back and what it could not.
   */
  reclaim(state: ClusterState): Promise<void> {
    return this.serial(async () => {
      const { log } = this.ctx;
      try {
        const r = await claimReleased(this.ctx, state);
        this.logClaimed(r.claimed);
        for (const e of r.errors) logWarn(log, `taking back released addresses: ${e}`);
      } catch (e) {
        logWarn(log, `taking back released addresses failed: ${(e as Error).message}`);
      }
    });
  }

  private serial(f: () => Promise<void>): Promise<void> {
    const run = this.controllerRun.then(f);
    this.controllerRun = run;
    return run;
  }
  private controllerRun: Promise<void> = Promise.resolve();

  private logClaimed(claimed: string[]): void {
    if (claimed.length === 0) return;
    logWarn(this.ctx.log, `the cluster had released ${claimed.length} addresses that containers here still hold (${claimed.join(', ')}): allocated to this node again and bound to their endpoints`);
  }

  private async fromController(state: ClusterState): Promise<void> {
    this.state = state;
    await this.forgetting;
    const { log } = this.ctx;
    try {
      const r = await rebuildFromController(this.ctx, state);
      if (r.poolsFixed.length || r.allocations || r.bound.length) {
        const missing = this.ctx.store.allocationsMissing && r.allocations ? 'the allocations file was missing; ' : '';
        log(`${missing}rebuilt from the controller: ${r.allocations} allocations, pools of ${r.poolsFixed.length} networks, ${r.bound.length} bindings (${r.bound.join(', ') || '-'})`);
      }
      this.logClaimed(r.claimed);
      if (r.gatewaysFixed.length) log(`point-to-point gateways taken from the controller's reservations: ${r.gatewaysFixed.join(', ')}`);
      for (const e of r.errors) log(`rebuild from the controller: ${e}`);
    } catch (e) {
      logWarn(log, `rebuild from the controller failed: ${(e as Error).message}`);
    }
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    await this.retrying;
    await this.forgetting;
  }
}

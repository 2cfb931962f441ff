/**
 * Cluster networks on this host: desired state is the cluster's networks (from the ClusterView),
 * actual state is the local Docker's underlay networks. Each pass is idempotent and safe to repeat
 * after a crash:
 *  - a cluster network missing here is created in Docker through its API (labelled as a replica),
 *    so Docker calls our driver exactly as for `docker network create`;
 *  - a local member of a cluster network that no longer exists is removed (also after this agent was
 *    down during the removal);
 *  - a local network the controller refused (same name, other definition) is removed while unused;
 *  - a local network not yet named in the cluster is defined (a crash between CreateNetwork and that).
 * The loop (coalesced triggers, one pass at a time, the periodic pass, backoff after a failed pass, stop) is the
 * shared ReconcileRunner; a replica whose create failed waits its own Backoff, and the pass asks the runner to come
 * back when the earliest of those waits ends ({ requeueAfterMs }).
 */
import { ROOT_CONTEXT, ReconcileRunner, SpanKind, attr, failureLog, linkTo, tracingOn, withSpan, type Link, type PassResult, logWarn } from '@underlay/adapters';
import { Backoff, type BackoffPolicy, REPLICA_LABEL, dockerCreateBody, eventTraceparent, parseNetworkOptions, plugin, type ClusterEvent, type ClusterNetwork, type ClusterState } from '@underlay/core';
import { mapParent } from '../config.js';
import type { DriverContext } from './context.js';
import { findParent } from './links.js';
import { defineNetwork } from './network.js';
import { readDockerUnderlay } from './docker-state.js';
import { PRUNE_GRACE_MS, forgetPruned, pruneStale, pruneSummary } from './restore.js';

/** How soon a pass looks again at a cluster network whose local network Docker is removing. */
const LEAVING_RECHECK_MS = 1_000;

/** Longest wait between two attempts to create a replica that failed. */
const MAX_BACKOFF_MS = 300_000;

export interface ReplicaState {
  /** Network name → what happened last time (for status reports). */
  readonly lastError: Map<string, { state: 'parent-missing' | 'error'; detail: string }>;
  /** Names being removed here because the cluster removed them, with why they are still here. */
  readonly removing: Map<string, string>;
}

export class ReplicaReconciler {
  readonly status: ReplicaState = { lastError: new Map(), removing: new Map() };
  private readonly runner: ReconcileRunner;
  /** Replicas that failed: when to try again (a failed create costs Docker a pool request and release). */
  private readonly backoff = new Map<string, { at: number; backoff: Backoff; definitionSeq: number }>();
  /** Networks Docker no longer lists: since when (pruned once missing for PRUNE_CONFIRM_MS). */
  private readonly missingSince = new Map<string, number>();
  passes = 0;

  constructor(
    private readonly ctx: DriverContext,
    private readonly view: {
      readonly state: ClusterState;
      readonly isReady: boolean;
      /** Whether the view has seen the log through `seq` (`chains`: through each chain's head; see ClusterView.covers). */
      covers(seq: number, chains: Readonly<Record<string, number>>): boolean;
    },
    intervalMs: number,
    /** The wait of a replica whose create failed (default: one interval, doubling to 5 minutes). */
    private readonly replicaBackoff: BackoffPolicy = { minMs: intervalMs, maxMs: Math.max(intervalMs, MAX_BACKOFF_MS) },
    /** Metrics: the reconcile runner's observer. */
    observe?: (loop: string, ok: boolean) => void,
  ) {
    const failures = failureLog((line) => this.ctx.log(line), 'cluster network reconcile');
    this.runner = new ReconcileRunner({
      name: 'replicas',
      resyncMs: intervalMs,
      // A pass that failed as a whole (Docker not answering) is tried again sooner, never later than the periodic one.
      backoff: { minMs: intervalMs < 1_000 ? intervalMs : 1_000, maxMs: intervalMs },
      reconcile: () => this.pass(),
      ...(observe ? { observe } : {}),
      onError: (e) => failures.failed(e),
      onRecovered: () => failures.recovered(),
    });
  }

  /** The first pass now, then one every interval (triggers before this wait for it). */
  start(): void {
    this.runner.start();
  }

  async stop(): Promise<void> {
    await this.runner.stop();
  }

  /** Tracing on: the trace of each cluster network's creation (name → link), for the `apply event` span of its replica. */
  private readonly createdTraces = new Map<string, Link>();

  /** Notes the traces of cluster networks created (tracing on; at most 256 kept, oldest dropped). */
  noteEvents(events: readonly ClusterEvent[]): void {
    if (!tracingOn()) return;
    for (const e of events) {
      if (e.type !== 'ClusterNetworkCreated' || !e.traceId) continue;
      const link = linkTo(eventTraceparent(e.traceId, e.seq), { [attr.seq]: e.seq });
      if (!link) continue;
      this.createdTraces.delete(e.data.name);
      this.createdTraces.set(e.data.name, link);
      if (this.createdTraces.size > 256) this.createdTraces.delete(this.createdTraces.keys().next().value!);
    }
  }

  /** Runs a pass now, or once more right after the running one. */
  trigger(): void {
    this.runner.trigger();
  }

  /** Resolves when no pass is running or due. */
  idle(): Promise<void> {
    return this.runner.idle();
  }

  /**
   * Whether the view has seen every change this agent caused (the chain heads the controller answered) and no name or
   * definition is on its way to the controller: only then is a cluster network missing from it really gone.
   */
  private viewSettled(): boolean {
    return this.ctx.memory.definesInFlight === 0 && this.viewCovers();
  }

  /** Whether the view has seen every change this agent caused (DriverMemory.changeRecorded). */
  private viewCovers(): boolean {
    return this.view.covers(this.ctx.memory.awaitSeq, this.ctx.memory.awaitChains);
  }

  private async pass(): Promise<PassResult | void> {
    await this.checkAgainstDocker();
    if (!this.view.isReady) return;
    // The view will see the awaited events soon and trigger another pass; the requeue is the fallback (an event of
    // the cluster chain about another host triggers nothing here).
    if (!this.viewCovers()) return { requeueAfterMs: LEAVING_RECHECK_MS };
    let waitDefines = false;
    this.passes++;
    const { ctx } = this;
    const s = this.view.state;
    const local = await ctx.docker.listNetworks(ctx.driverName ?? plugin.PLUGIN_NAME);
    const present = new Set<string>();
    for (const n of local) {
      const info = s.networks.get(n.Id);
      if (!info || !ctx.store.networks.has(n.Id)) {
        present.add(n.Name); // not ours yet (being created) or not recorded: leave it alone
        continue;
      }
      // Not named yet, or named by a define whose answer never came (its heads are unknown: sent again, it answers them).
      if (info.name === undefined || info.cluster === undefined || ctx.memory.defineFailed(n.Id)) {
        await defineNetwork(ctx, n).catch((e) => logWarn(ctx.log, `could not define network ${n.Name}: ${(e as Error).message}`));
        present.add(n.Name);
        continue;
      }
      const removedFromCluster = info.cluster && !s.clusterNetworks.has(info.name);
      const refused = info.cluster === false;
      if (!removedFromCluster && !refused) {
        present.add(n.Name);
        this.status.removing.delete(n.Name);
        continue;
      }
      // Checked again here, right before Docker's network goes (this pass awaited Docker since its start): a name this
      // agent sent a moment ago may be folded from the host chain while the cluster chain's ClusterNetworkCreated is
      // not yet (two chains, two consumers), which looks like a network removed from the cluster. Seen in the lab:
      // `docker network create` then `docker run` answered "network not found".
      if (removedFromCluster && !this.viewSettled()) {
        present.add(n.Name);
        waitDefines = true;
        continue;
      }
      try {
        await ctx.docker.deleteNetwork(n.Id);
        ctx.log(`removed network ${n.Name} from this host: ${refused ? `the cluster refused it (${ctx.conflicts?.get(n.Id) ?? 'another definition'})` : 'it was removed from the cluster'}`);
        this.status.removing.delete(n.Name);
      } catch (e) {
        present.add(n.Name);
        this.status.removing.set(n.Name, (e as Error).message);
        logWarn(ctx.log, `could not remove network ${n.Name}: ${(e as Error).message}`);
      }
    }
    // Names of networks this host still holds a record of while Docker no longer lists them: dockerd hides a network it
    // is removing before it calls DeleteNetwork, so such a network is (most likely) in the middle of `docker network rm`.
    // Created again now, a new network of that name came back after the rm (with its host-access shim: seen in the
    // UML lab). Its DeleteNetwork tells the controller, or the confirmed prune drops the record, before the next pass.
    const listed = new Set(local.map((n) => n.Id));
    const leaving = new Set<string>();
    for (const id of ctx.store.networks.keys()) {
      const name = listed.has(id) ? undefined : s.networks.get(id)?.name;
      if (name !== undefined) leaving.add(name);
    }
    let waitLeaving = false;
    const now = Date.now();
    for (const cn of s.clusterNetworks.values()) {
      if (present.has(cn.name)) {
        this.status.lastError.delete(cn.name);
        this.backoff.delete(cn.name);
        continue;
      }
      if (leaving.has(cn.name)) {
        waitLeaving = true;
        continue;
      }
      const b = this.backoff.get(cn.name);
      if (b && b.definitionSeq === cn.createdSeq && now < b.at) continue;
      const missing = await this.missingParent(cn);
      if (missing) {
        // Not worth a Docker create (and its pool request and release): say so, and look again next pass.
        if (this.status.lastError.get(cn.name)?.detail !== missing) logWarn(ctx.log, `cannot create cluster network ${cn.name} here: ${missing}`);
        this.status.lastError.set(cn.name, { state: 'parent-missing', detail: missing });
        continue;
      }
      try {
        // Tracing on: creating a replica applies the cluster network's event to this host (`apply event`, CONSUMER).
        const link = this.createdTraces.get(cn.name);
        const id = await withSpan('apply event', { kind: SpanKind.CONSUMER, parent: ROOT_CONTEXT, links: link ? [link] : [], attributes: { [attr.node]: ctx.node, [attr.network]: cn.name, [attr.seq]: cn.createdSeq } }, () =>
          ctx.docker.createNetwork(dockerCreateBody(cn.name, cn.definition, ctx.driverName ?? plugin.PLUGIN_NAME, { [REPLICA_LABEL]: cn.originNode ?? 'api' })),
        );
        ctx.log(`created replica of cluster network ${cn.name} (${id.slice(0, 12)})`);
        this.createdTraces.delete(cn.name);
        this.status.lastError.delete(cn.name);
        this.backoff.delete(cn.name);
      } catch (e) {
        const msg = (e as Error).message;
        // Created meanwhile (by a user, or a Docker event's pass that raced this one): Docker now shows it. Decided by
        // what Docker holds, not by the error's text (which is also the text of a refusal).
        if (await this.dockerHas(cn.name)) continue;
        this.status.lastError.set(cn.name, { state: 'error', detail: msg });
        // The same definition failing again waits longer; a new definition (created again) starts over.
        const backoff = b && b.definitionSeq === cn.createdSeq ? b.backoff : new Backoff(this.replicaBackoff);
        const delayMs = backoff.next();
        this.backoff.set(cn.name, { at: now + delayMs, backoff, definitionSeq: cn.createdSeq });
        logWarn(ctx.log, `could not create cluster network ${cn.name} here (next try in ${Math.round(delayMs / 1000)} s): ${msg}`);
      }
    }
    for (const name of this.status.lastError.keys()) if (!s.clusterNetworks.has(name)) this.status.lastError.delete(name);
    for (const name of this.backoff.keys()) if (!s.clusterNetworks.has(name)) this.backoff.delete(name);
    // Come back when the first replica's wait ends (sooner than the periodic pass when it is due sooner).
    // The view triggers a pass when it folds the awaited events; this is only the fallback.
    let next = waitLeaving || waitDefines ? Date.now() + LEAVING_RECHECK_MS : Infinity;
    for (const b of this.backoff.values()) if (b.at < next) next = b.at;
    if (next !== Infinity) return { requeueAfterMs: Math.max(0, next - Date.now()) };
  }

  /**
   * Docker is the truth on its host: records of networks and endpoints Docker does not have are removed (with the links
   * underlay made for them), logged, and the controller is told before the pass goes on.
   */
  private async checkAgainstDocker(): Promise<void> {
    const { ctx } = this;
    const docker = await readDockerUnderlay(ctx.docker, ctx.store.networks.keys(), ctx.driverName);
    // Confirmed over passes: a network `docker network rm` is removing is already missing from Docker's list.
    const pruned = await pruneStale(ctx, docker, PRUNE_GRACE_MS, { missingSince: this.missingSince });
    const summary = pruneSummary(pruned);
    if (summary) logWarn(ctx.log, summary);
    for (const e of pruned.errors) logWarn(ctx.log, `check against Docker: ${e}`);
    for (const n of pruned.removed) ctx.memory.networkGone(n.id);
    if (pruned.removed.length === 0) return;
    // Awaited: this pass may create a replica of the same cluster network next, with the same pool.
    for (const e of await forgetPruned(ctx, pruned.removed)) logWarn(ctx.log, e);
  }

  /** Docker holds a network of this exact name (of any driver); false when Docker cannot be read either. */
  private async dockerHas(name: string): Promise<boolean> {
    const n = await this.ctx.docker.inspectNetwork(name).catch(() => undefined);
    return n?.Name === name;
  }

  /** Why this host cannot have the network's parent (none: it exists, or underlay makes it: a dummy, or a VLAN of an existing link). */
  private async missingParent(cn: ClusterNetwork): Promise<string | undefined> {
    let wanted: string | undefined;
    try {
      wanted = parseNetworkOptions(cn.definition.options).parent;
    } catch {
      return undefined; // options Docker will refuse with libnetwork's text
    }
    if (!wanted) return undefined;
    const parent = mapParent(this.ctx.parentMap ?? {}, wanted);
    const found = await findParent(this.ctx.links, parent).catch(() => undefined);
    if (found?.kind !== 'missing') return undefined;
    return `parent interface ${parent}${parent !== wanted ? ` (${wanted} in the cluster's definition)` : ''} not found on this host`;
  }
}

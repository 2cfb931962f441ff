/**
 * Routes between hosts for ipvlan L3 networks.
 *
 * The desired routes are a pure function of the cluster view and the host's networks
 * (`desiredRoutes` in @underlay/core) plus routes from other sources (BGP). This service keeps the
 * kernel's main table equal to them for the routes carrying UNDERLAY_RT_PROTO, and touches nothing
 * else:
 * - it starts once the view has caught up with the controller (in the background: the agent's start
 *   is not held up), lists the kernel's routes, keeps those that are right (an agent restart does not
 *   flap routes), deletes stale ones with underlay's protocol and adds the missing ones;
 * - it applies every change of the view at once (event driven: the view batches events per tick), recomputing
 *   only the destinations the events touch (`routeKeysOf`/`desiredRouteFor`: O(change), not O(cluster));
 *   everything is recomputed and compared when a change can touch any route (a node's address, a pool
 *   created or deleted), on `sync()`/`setExternal()`, when its own networks differ, after an error, and at
 *   every reconcile;
 * - it re-lists the kernel every `reconcileMs` (a route deleted by hand comes back; one added by hand
 *   with underlay's protocol goes);
 * - a route is only ever added with NLM_F_EXCL (never overwriting another protocol's route to the same
 *   destination) and deleted with its protocol named (the kernel will not delete another protocol's);
 * - errors (parent missing, next hop unreachable, a foreign route in the way) are logged once per
 *   route and cause, and retried with a backoff (at most every reconcile interval); nothing throws.
 * The loop around a pass (coalesced triggers, one pass at a time, the periodic re-list, backoff, stop) is the
 * shared ReconcileRunner; this module is the level-triggered pass. The RouteOps are the caller's (the agent opens
 * and closes them, as it does its LinkOps).
 */
import { ROOT_CONTEXT, ReconcileRunner, SpanKind, attr, linkTo, tracingOn, withSpan, type Link, type Pass, type PassResult, type RouteOps, logWarn } from '@underlay/adapters';
import {
  Backoff,
  UNDERLAY_RT_PROTO,
  desiredRouteFor,
  eventTraceparent,
  desiredRoutes,
  formatCidr,
  formatValue,
  needsRoutes,
  parseCidr,
  routeKeysOf,
  tryParseAddr,
  type ClusterEvent,
  type DesiredRoute,
  type RouteKey,
  type RouteNetwork,
} from '@underlay/core';

import type { ClusterView } from '../cluster-view.js';
import type { NetworkRecord } from '../driver/store.js';

export type { RouteOps } from '@underlay/adapters';
export { MemoryRouteOps } from './memory.js';

export interface RouteDeps {
  node: string;
  view: ClusterView;
  localNetworks: () => Iterable<NetworkRecord>;
  reconcileMs: number;
  logger: (m: string) => void;
  /** Route ops for this host's netns (the caller owns them: opened and closed by the agent). */
  ops: RouteOps;
  /** Metrics: the reconcile runner's observer, and each route added for an event (seconds since the event's time). */
  observe?: (loop: string, ok: boolean) => void;
  onProgrammed?: (seconds: number) => void;
}

export interface RouteService {
  /** Recompute and apply now (the agent calls it after CreateNetwork/DeleteNetwork). */
  sync(): void;
  /** Extra routes from another source (BGP learned routes), replacing that source's previous set. */
  setExternal(source: string, routes: DesiredRoute[]): void;
  stop(): Promise<void>;
  /** Counters for tests/bench: applied adds/deletes, last sync time; `routes`: ours in the kernel now. */
  stats(): { adds: number; deletes: number; syncs: number; routes: number };
}

const MIN_RETRY_MS = 200;

interface Route {
  dst: string;
  via: string;
  dev: string;
}

const same = (a: Route, b: Route): boolean => a.via === b.via && a.dev === b.dev;
const text = (r: Route): string => `${r.dst} via ${r.via} dev ${r.dev}`;

/** Canonical dst/via (so "2001:DB8::1" and "2001:db8::1" compare equal); undefined when invalid. */
function normalise(r: DesiredRoute): Route | undefined {
  try {
    const dst = parseCidr(r.dst.includes('/') ? r.dst : `${r.dst}/${r.dst.includes(':') ? 128 : 32}`);
    const via = tryParseAddr(r.via);
    if (!via || via.family !== dst.family || !r.dev) return undefined;
    return { dst: formatCidr(dst), via: formatValue(via.family, via.value), dev: r.dev };
  } catch {
    return undefined;
  }
}

class Routes implements RouteService {
  private readonly ops: RouteOps;
  private readonly external = new Map<string, Route[]>();
  /** The external routes merged (sources in name order, first wins): dst → route. */
  private externalByDst = new Map<string, Route>();
  /** Our routes in the kernel as last listed and changed by us: dst → route. */
  private current = new Map<string, Route>();
  /** The cluster's desired routes as last computed (whole, then kept up to date per destination): dst → route. */
  private cluster = new Map<string, Route>();
  /** The next pass recomputes and compares every route (otherwise only `touched`). */
  private recomputeAll = true;
  /** Destinations whose route events may have changed since the last pass. */
  private readonly touched = new Map<string, RouteKey>();
  /** The routed local networks the cluster routes were computed for (a change means: recompute all). */
  private networksKey = '';
  private stopped = false;
  private wantList = true;
  /** Routes failing (any of them): the delay before the next try (one pass retries them all). */
  private readonly retryBackoff: Backoff;
  private readonly runner: ReconcileRunner;
  private unsubscribe?: () => void;
  /** Last error logged per route (each cause is logged once until it changes or clears). */
  private readonly lastError = new Map<string, string>();
  private readonly counters = { adds: 0, deletes: 0, syncs: 0 };
  /** Tracing on: the traces of the events the next pass applies (its `apply event` span links them). */
  private eventLinks: Link[] = [];
  /** Metrics: the earliest time (ms) of the events that touched each destination (or any) since the last pass. */
  private readonly eventTimes = new Map<string, number>();
  private anyEventTime?: number;

  constructor(private readonly deps: RouteDeps) {
    this.ops = deps.ops;
    // From MIN_RETRY_MS, doubling, to at most one reconcile interval: for failed routes and for a failed pass.
    const policy = { minMs: MIN_RETRY_MS, maxMs: Math.max(deps.reconcileMs, MIN_RETRY_MS) };
    this.retryBackoff = new Backoff(policy);
    this.runner = new ReconcileRunner({
      name: 'routes',
      resyncMs: deps.reconcileMs,
      backoff: policy,
      reconcile: (pass) => this.pass(pass),
      ...(deps.observe ? { observe: deps.observe } : {}),
      // pass() reports each route's failure itself and never throws for one: this is a bug, logged.
      onError: (e, { retryInMs }) => logWarn(this.deps.logger, `routes: pass failed: ${(e as Error).message} (retry in ${retryInMs} ms)`),
    });
  }

  begin(): void {
    // A resync (the view started again from a snapshot) carries no events: recompute everything.
    this.unsubscribe = this.deps.view.onChange((events, _state, info) => (info?.resync ? this.sync() : this.onEvents(events)));
    void this.deps.view.ready().then(() => {
      if (this.stopped) return;
      this.runner.start();
    });
  }

  sync(): void {
    this.recomputeAll = true;
    this.kick();
  }

  /** Notes which destinations a batch of events may have changed (or that all may have), then runs a pass. */
  private onEvents(events: readonly ClusterEvent[]): void {
    let relevant = false;
    for (const e of events) {
      // routeKeysOf: [] for an event that changes no route, undefined when any may change.
      const keys = routeKeysOf(this.deps.view.state, e);
      if (keys?.length === 0) continue;
      if (e.traceId && tracingOn() && this.eventLinks.length < MAX_EVENT_LINKS) {
        const link = linkTo(eventTraceparent(e.traceId, e.seq), { [attr.seq]: e.seq });
        if (link) this.eventLinks.push(link);
      }
      if (this.deps.onProgrammed) this.noteEventTime(e, keys);
      if (this.recomputeAll) {
        relevant = true;
        continue;
      }
      if (keys === undefined) {
        this.recomputeAll = true;
        this.touched.clear();
        relevant = true;
      } else {
        for (const k of keys) this.touched.set(k.dst, k);
        relevant = true;
      }
    }
    if (relevant) this.kick();
  }

  setExternal(source: string, routes: DesiredRoute[]): void {
    const ok: Route[] = [];
    for (const r of routes) {
      const n = normalise(r);
      if (n) ok.push(n);
      else logWarn(this.deps.logger, `routes: ignoring invalid route from ${source}: ${JSON.stringify(r)}`);
    }
    if (ok.length) this.external.set(source, ok);
    else this.external.delete(source);
    const merged = new Map<string, Route>();
    for (const src of [...this.external.keys()].sort()) {
      for (const r of this.external.get(src)!) if (!merged.has(r.dst)) merged.set(r.dst, r);
    }
    this.externalByDst = merged;
    this.recomputeAll = true;
    this.kick();
  }

  stats(): { adds: number; deletes: number; syncs: number; routes: number } {
    return { ...this.counters, routes: this.current.size };
  }

  private noteEventTime(e: ClusterEvent, keys: RouteKey[] | undefined): void {
    const t = Date.parse(e.time);
    if (!Number.isFinite(t)) return;
    if (keys === undefined) this.anyEventTime = Math.min(this.anyEventTime ?? t, t);
    else for (const k of keys) this.eventTimes.set(k.dst, Math.min(this.eventTimes.get(k.dst) ?? t, t));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    await this.runner.stop();
  }

  /** Runs a pass now, or right after the one in flight (the runner coalesces; before the view is ready, at its start). */
  private kick(): void {
    this.runner.trigger();
  }

  /** The routed local networks, as a key that changes when anything the routes depend on changes. */
  private routedNetworks(): { nets: RouteNetwork[]; key: string } {
    const nets: RouteNetwork[] = [];
    for (const n of this.deps.localNetworks()) if (needsRoutes(n)) nets.push(n);
    return { nets, key: nets.map((n) => `${n.parent}|${n.poolIds.join(',')}`).join(';') };
  }

  /** Recomputes every cluster route; the desired routes: the cluster's, then the external ones for other destinations. */
  private desiredAll(nets: RouteNetwork[]): Map<string, Route> {
    const cluster = new Map<string, Route>();
    // desiredRoutes prints addresses canonically (as the kernel listing does): no re-normalising needed.
    for (const r of desiredRoutes(this.deps.view.state, this.deps.node, nets)) {
      if (!cluster.has(r.dst)) cluster.set(r.dst, r);
    }
    this.cluster = cluster;
    // Routes from other sources never override the cluster's own (the event stream is the source of truth).
    const out = new Map(cluster);
    for (const [dst, r] of this.externalByDst) if (!out.has(dst)) out.set(dst, r);
    return out;
  }

  /** Recomputes the touched destinations only: dst → desired route (undefined: none) for each. */
  private desiredTouched(nets: RouteNetwork[], keys: RouteKey[]): Map<string, Route | undefined> {
    const out = new Map<string, Route | undefined>();
    const state = this.deps.view.state;
    for (const k of keys) {
      const r = desiredRouteFor(state, this.deps.node, nets, k);
      if (r) this.cluster.set(k.dst, r);
      else this.cluster.delete(k.dst);
      out.set(k.dst, r ?? this.externalByDst.get(k.dst));
    }
    return out;
  }

  /**
   * One level-triggered pass. The kernel is listed again at the start, at every resync and after a failure;
   * failing routes are logged once each and the pass asks to run again after a backoff ({ requeueAfterMs }).
   */
  private async pass(p: Pass): Promise<PassResult | void> {
    if (p.reasons.has('start') || p.reasons.has('resync') || p.reasons.has('requeue')) this.wantList = true;
    this.counters.syncs++;
    let failed = false;
    const fail = (key: string, msg: string): void => {
      failed = true;
      if (this.lastError.get(key) !== msg) {
        this.lastError.set(key, msg);
        this.deps.logger(`routes: ${msg} (will retry)`);
      }
    };
    const ok = (key: string): void => {
      if (this.lastError.delete(key)) this.deps.logger(`routes: ${key} is fine again`);
    };
    const extra: Route[] = []; // duplicates of ours in the kernel (same dst twice, e.g. IPv6 metrics)
    const relisted = this.wantList;
    if (this.wantList) {
      this.wantList = false;
      try {
        const listed = await this.ops.listRoutes({ protocol: UNDERLAY_RT_PROTO });
        const cur = new Map<string, Route>();
        for (const k of listed) {
          const r: Route = { dst: k.dst, via: k.via ?? '', dev: k.dev ?? '' };
          const prev = cur.get(r.dst);
          if (prev) extra.push(r);
          else cur.set(r.dst, r);
        }
        this.current = cur;
        ok('listing routes');
      } catch (e) {
        fail('listing routes', `cannot list the kernel's routes: ${(e as Error).message}`);
        this.wantList = true;
        return { requeueAfterMs: this.retryBackoff.next() };
      }
    }
    // The event times and traces this pass answers (routes added below are timed from them; its `apply event` span
    // links them). Taken after the listing's await, in one synchronous run with the reads of the view's state below:
    // an event that came during the listing is in the state this pass reads, so its trace belongs to this pass (taken
    // before the await, it went to the next pass, which found the route already added and made no span).
    const times = new Map(this.eventTimes);
    const anyTime = this.anyEventTime;
    this.eventTimes.clear();
    this.anyEventTime = undefined;
    const links = this.eventLinks;
    this.eventLinks = [];
    // Everything (a relisted kernel, a change that can touch any route, other networks), or only what events touched.
    const { nets, key } = this.routedNetworks();
    let want: Map<string, Route | undefined>;
    const dels: Route[] = [...extra];
    if (relisted || this.recomputeAll || key !== this.networksKey) {
      this.recomputeAll = false;
      this.touched.clear();
      this.networksKey = key;
      want = this.desiredAll(nets);
      for (const [dst, r] of this.current) {
        const w = want.get(dst);
        if (!w || !same(w, r)) dels.push(r);
      }
    } else {
      const keys = [...this.touched.values()];
      this.touched.clear();
      want = this.desiredTouched(nets, keys);
      for (const [dst, w] of want) {
        const r = this.current.get(dst);
        if (r && (!w || !same(w, r))) dels.push(r);
      }
    }
    // Deletes first (stale routes, duplicates, and routes whose next hop or device changed), then adds.
    const apply = async (): Promise<void> => {
      for (const r of dels) {
        const key = `delete ${r.dst}`;
        try {
          await this.ops.deleteRoute({ dst: r.dst, protocol: UNDERLAY_RT_PROTO, ...(r.via ? { via: r.via } : {}), ...(r.dev ? { dev: r.dev } : {}) });
          if (this.current.get(r.dst) === r) this.current.delete(r.dst);
          this.counters.deletes++;
          this.deps.logger(`routes: deleted ${text(r)}`);
          ok(key);
        } catch (e) {
          fail(key, `cannot delete ${text(r)}: ${(e as Error).message}`);
          this.wantList = true;
        }
      }
      for (const [dst, w] of want) {
        if (!w) continue;
        const c = this.current.get(dst);
        if (c && same(c, w)) continue;
        if (c) continue; // its delete failed above; retried with the next pass
        const key = `add ${dst}`;
        try {
          await this.ops.addRoute({ ...w, protocol: UNDERLAY_RT_PROTO });
          this.current.set(dst, w);
          this.counters.adds++;
          const since = times.get(dst) ?? anyTime;
          if (since !== undefined) this.deps.onProgrammed?.((Date.now() - since) / 1000);
          this.deps.logger(`routes: added ${text(w)}`);
          ok(key);
        } catch (e) {
          const errno = (e as { errno?: string }).errno;
          // EEXIST: another protocol's route to dst is there (never overwritten), or ours appeared meanwhile.
          fail(key, errno === 'EEXIST' ? `cannot add ${text(w)}: a route to ${dst} with another protocol is in the way` : `cannot add ${text(w)}: ${(e as Error).message}`);
          this.wantList = true;
        }
      }
    };
    // Tracing on: route changes that follow events are an `apply event` span (CONSUMER) linked to those events' traces.
    if (links.length > 0 && tracingOn() && (dels.length > 0 || [...want].some(([dst, w]) => w && !this.current.has(dst)))) {
      await withSpan('apply event', { kind: SpanKind.CONSUMER, parent: ROOT_CONTEXT, links, attributes: { [attr.messagingSystem]: 'nats', [attr.node]: this.deps.node, [attr.seq]: this.deps.view.seq } }, apply);
    } else {
      await apply();
    }
    if (failed) return { requeueAfterMs: this.retryBackoff.next() };
    this.retryBackoff.reset();
  }
}

/** At most this many event traces linked from one `apply event` span. */
const MAX_EVENT_LINKS = 32;

export async function startRoutes(deps: RouteDeps): Promise<RouteService> {
  const s = new Routes(deps);
  s.begin();
  return s;
}

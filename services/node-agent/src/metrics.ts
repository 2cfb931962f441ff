/**
 * The agent's metrics (docs/ARCHITECTURE.md, "Metrics and health"): plugin calls (one wrapper around the plugin
 * route table), requests to the controllers (RpcClient's observer), the view's applied seq and lag, route
 * programming latency and the routes held, reconcile passes and errors per loop (ReconcileRunner's observer),
 * failed netlink requests (one wrapper around the LinkOps / RouteOps), neighbour announcements after Join, BGP
 * sessions, and readiness. Gauges are
 * read when Prometheus scrapes.
 */
import { ZodError } from 'zod';
import { Counter, Gauge, Histogram, createMetricsRegistry, requestMetrics, rpcMetrics, secondsSince, type Registry, type RpcObserver } from '@underlay/adapters';
import { UnderlayError } from '@underlay/core';
import type { Routes } from './plugin-server.js';

/** What the scrape-time gauges read from the agent. */
export interface AgentMetricsSource {
  /** Last event seq folded into the view. */
  appliedSeq(): number;
  /** The controller's head as last known (at least the applied seq). */
  knownHead(): number;
  /** Underlay routes programmed (undefined when routes are off). */
  routes(): number | undefined;
  /** BGP sessions of the configured peers (undefined when BGP is off or gobgpd does not answer). */
  bgpSessions(): Promise<{ peer: string; up: boolean }[] | undefined>;
  /** /readyz's answer. */
  ready(): Promise<boolean>;
}

/** `/NetworkDriver.RequestAddress` → `RequestAddress`, `/AuthZPlugin.AuthZReq` → `AuthZReq`. */
export const callName = (path: string): string => path.slice(path.lastIndexOf('.') + 1);

/** An error's code for the `result` label: the UnderlayError's code, `invalid-argument` for a bad body, else `internal`. */
export function resultOf(e: unknown): string {
  if (e instanceof UnderlayError) return e.code;
  if (e instanceof ZodError || e instanceof SyntaxError) return 'invalid-argument';
  return 'internal';
}

export class AgentMetrics {
  readonly registry: Registry;
  /** RpcClient's observer (underlay_rpc_client_requests_total, underlay_rpc_client_request_duration_seconds). */
  readonly rpc: RpcObserver;
  private readonly pluginCall: RpcObserver;
  private readonly passes: Counter;
  private readonly errors: Counter;
  private readonly netlinkErrors: Counter;
  private readonly programming: Histogram;
  private readonly announcements: Counter;
  private readonly announcementTime: Histogram;

  constructor(src: AgentMetricsSource, registry: Registry = createMetricsRegistry()) {
    this.registry = registry;
    const registers = [registry];
    this.rpc = rpcMetrics(registry, 'client');
    this.pluginCall = requestMetrics(registry, 'underlay_plugin', 'call', 'Docker plugin calls', 'time from the request to the answer');
    new Gauge({ name: 'underlay_agent_applied_seq', help: 'Last event seq folded into the cluster view', registers, collect() { this.set(src.appliedSeq()); } });
    new Gauge({
      name: 'underlay_agent_seq_lag_events',
      help: "Events committed (the controller's last known head) and not yet folded into the view",
      registers,
      collect() {
        this.set(Math.max(0, src.knownHead() - src.appliedSeq()));
      },
    });
    this.programming = new Histogram({
      name: 'underlay_route_programming_seconds',
      help: 'Time from the commit of the event that needs a route to the route in the kernel on this host',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    new Gauge({
      name: 'underlay_routes',
      help: 'Underlay routes programmed in the kernel on this host',
      registers,
      collect() {
        this.set(src.routes() ?? 0);
      },
    });
    this.passes = new Counter({ name: 'underlay_reconcile_passes_total', help: 'Reconcile passes, by loop', labelNames: ['loop'], registers });
    this.errors = new Counter({ name: 'underlay_reconcile_errors_total', help: 'Reconcile passes that failed, by loop', labelNames: ['loop'], registers });
    this.netlinkErrors = new Counter({ name: 'underlay_netlink_errors_total', help: 'Failed netlink requests, by operation', labelNames: ['op'], registers });
    this.announcements = new Counter({
      name: 'underlay_agent_neighbour_announcements_total',
      help: "Announcements of a joined container's MAC to the network (gratuitous ARP, unsolicited NA), by result: sent, gone (the container went first), timeout, error, unavailable",
      labelNames: ['result'],
      registers,
    });
    this.announcementTime = new Histogram({
      name: 'underlay_agent_neighbour_announcement_seconds',
      help: "Time from Join to the container's MAC announced to the network",
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    new Gauge({
      name: 'underlay_bgp_session_up',
      help: 'BGP sessions of the configured peers: 1 when established',
      labelNames: ['peer'],
      registers,
      async collect() {
        const sessions = await src.bgpSessions().catch(() => undefined);
        if (!sessions) return; // keep the last values while gobgpd does not answer
        this.reset();
        for (const s of sessions) this.set({ peer: s.peer }, s.up ? 1 : 0);
      },
    });
    new Gauge({
      name: 'underlay_agent_ready',
      help: '1 when /readyz is true (NATS connected, cluster view caught up, plugin socket served)',
      registers,
      async collect() {
        this.set((await src.ready().catch(() => false)) ? 1 : 0);
      },
    });
  }

  /** The plugin route table with every call counted and timed (one wrapper around the table). */
  plugin(routes: Routes): Routes {
    return Object.fromEntries(
      Object.entries(routes).map(([path, handler]) => {
        const call = callName(path);
        return [
          path,
          async (body: unknown) => {
            const start = process.hrtime.bigint();
            try {
              const out = await handler(body);
              this.pluginCall(call, 'ok', secondsSince(start));
              return out;
            } catch (e) {
              this.pluginCall(call, resultOf(e), secondsSince(start));
              throw e;
            }
          },
        ];
      }),
    );
  }

  /** ReconcileRunner's observer: a pass of `loop` ended, failed or not. */
  readonly reconcile = (loop: string, ok: boolean): void => {
    this.passes.inc({ loop });
    if (!ok) this.errors.inc({ loop });
  };

  /** A route the view asked for reached the kernel `seconds` after its event's commit. */
  readonly routeProgrammed = (seconds: number): void => {
    if (seconds >= 0 && Number.isFinite(seconds)) this.programming.observe(seconds);
  };

  /** The Announcer's observer: an announcement ended with `result`, `seconds` after Join. */
  readonly neighbourAnnouncement = (result: string, seconds: number): void => {
    this.announcements.inc({ result });
    if (result === 'sent' && seconds >= 0 && Number.isFinite(seconds)) this.announcementTime.observe(seconds);
  };

  /** `ops` (LinkOps, RouteOps) with every failed request counted by its method's name. */
  netlink<T extends object>(ops: T): T {
    const counter = this.netlinkErrors;
    return new Proxy(ops, {
      get(target, prop) {
        const v = Reflect.get(target, prop);
        if (typeof v !== 'function' || typeof prop !== 'string') return v;
        return (...args: unknown[]) => {
          let r: unknown;
          try {
            r = (v as (...a: unknown[]) => unknown).apply(target, args);
          } catch (e) {
            counter.inc({ op: prop });
            throw e;
          }
          if (r instanceof Promise) return r.catch((e: unknown) => {
            counter.inc({ op: prop });
            throw e;
          });
          return r;
        };
      },
    });
  }
}

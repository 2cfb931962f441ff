/**
 * The node agent: serves the Docker plugin socket and carries IPAM requests to the controller.
 * It holds no etcd credentials: everything cluster-wide goes through NATS.
 */
import type { Server } from 'node:http';
import * as fs from 'node:fs';
import { DockerEngine, ReconcileRunner, RpcClient, connectNats, logNatsStatus, natsServers, failureLog, openRouteOps, runReadiness, type FailureLog, spanNames, traceMethods, type Attributes, type NatsConnection, type Readiness, type RouteOps, logDebug, logError, logWarn } from '@underlay/adapters';
import { formatValue, nodeInboxPrefix, plugin, tryParseAddr, type ClusterEvent } from '@underlay/core';
import { AgentConfig, type AgentConfigInput } from './config.js';
import { ClusterView } from './cluster-view.js';
import { ReplicaReconciler } from './driver/replicas.js';
import { buildReport, defaultAddress, deviceLookup, reportCallOptions } from './status.js';
import { startRoutes, type RouteService } from './routes/index.js';
import { startHostAccess, type HostAccessService } from './driver/host-access.js';
import { parseBgpPeer, startBgp, type BgpService } from './bgp/index.js';
import { KeyedMutex, driverContext, type DriverContext } from './driver/context.js';
import { rpcControllerClient } from './driver/controller-client.js';
import * as ipam from './driver/ipam.js';
import * as network from './driver/network.js';
import * as endpoint from './driver/endpoint.js';
import * as joinleave from './driver/joinleave.js';
import * as authz from './driver/authz.js';
import { Announcer } from './driver/announce.js';
import type { LinkOps } from './driver/links.js';
import { LocalStore } from './driver/store.js';
import { AddressHolds } from './driver/address-holds.js';
import { StickyIdentities } from './driver/sticky.js';
import { networkNameOf } from './driver/network-names.js';
import { endpointAddresses, restore } from './driver/restore.js';
import { StoreRebuild } from './driver/store-rebuild.js';
import { createPluginServer, listenOnSocket, type Handler, type Routes } from './plugin-server.js';
import { StartupGate } from './startup-gate.js';
import { AgentMetrics } from './metrics.js';
import { parseListen, startTelemetryServer, type TelemetryServer } from './http.js';

/** Each /readyz check answers within this long. */
const READY_DEADLINE_MS = 2_000;

export type Logger = (msg: string) => void;
export const AGENT_VERSION = '0.1.0';

/** Remembers the error of a failed endpoint call for status reports, and passes it on to Docker. */
function recordingErrors(ctx: DriverContext, fn: (b: unknown) => unknown): (b: unknown) => Promise<unknown> {
  return async (b) => {
    try {
      const r = await fn(b);
      const id = (b as { EndpointID?: string })?.EndpointID;
      if (id) ctx.endpointErrors.delete(id);
      return r;
    } catch (e) {
      const { EndpointID, NetworkID } = (b ?? {}) as { EndpointID?: string; NetworkID?: string };
      if (EndpointID) ctx.endpointErrors.set(EndpointID, { networkId: NetworkID ?? '', error: (e as Error).message, atMs: Date.now() });
      throw e;
    }
  };
}

/** Docker's questions that need no state: answered at once, also while the agent starts (startup-gate.ts). */
export function staticRoutes(): Routes {
  return {
    '/Plugin.Activate': () => ({ Implements: [...plugin.IMPLEMENTS, 'authz'] }),
    '/AuthZPlugin.AuthZRes': () => authz.authzResponse(),
    '/NetworkDriver.GetCapabilities': () => ({ Scope: 'local', ConnectivityScope: 'global' }),
    '/IpamDriver.GetCapabilities': () => ipam.capabilities(),
    '/IpamDriver.GetDefaultAddressSpaces': () => ipam.defaultAddressSpaces(),
  };
}

/** The plugin calls that use the agent's state: they wait for its start-up. */
export const STATEFUL_METHODS = [
  '/AuthZPlugin.AuthZReq',
  '/NetworkDriver.CreateNetwork',
  '/NetworkDriver.DeleteNetwork',
  '/NetworkDriver.CreateEndpoint',
  '/NetworkDriver.DeleteEndpoint',
  '/NetworkDriver.EndpointOperInfo',
  '/NetworkDriver.Join',
  '/NetworkDriver.Leave',
  '/NetworkDriver.DiscoverNew',
  '/NetworkDriver.DiscoverDelete',
  '/NetworkDriver.ProgramExternalConnectivity',
  '/NetworkDriver.RevokeExternalConnectivity',
  '/NetworkDriver.AllocateNetwork',
  '/NetworkDriver.FreeNetwork',
  '/IpamDriver.RequestPool',
  '/IpamDriver.ReleasePool',
  '/IpamDriver.RequestAddress',
  '/IpamDriver.ReleaseAddress',
] as const;

/** Every method the plugin socket serves. */
export const PLUGIN_METHODS: readonly string[] = [...Object.keys(staticRoutes()), ...STATEFUL_METHODS];

export function statefulRoutes(ctx: DriverContext): Record<(typeof STATEFUL_METHODS)[number], Handler> {
  const noop = () => ({});
  return {
    '/AuthZPlugin.AuthZReq': (b) => authz.authzRequest(ctx, b),
    '/NetworkDriver.CreateNetwork': (b) => network.createNetwork(ctx, b),
    '/NetworkDriver.DeleteNetwork': (b) => network.deleteNetwork(ctx, b),
    '/NetworkDriver.CreateEndpoint': recordingErrors(ctx, (b) => endpoint.createEndpoint(ctx, b)),
    '/NetworkDriver.DeleteEndpoint': (b) => endpoint.deleteEndpoint(ctx, b),
    '/NetworkDriver.EndpointOperInfo': (b) => endpoint.endpointOperInfo(ctx, b),
    '/NetworkDriver.Join': recordingErrors(ctx, (b) => joinleave.join(ctx, b)),
    '/NetworkDriver.Leave': (b) => joinleave.leave(ctx, b),
    '/NetworkDriver.DiscoverNew': noop,
    '/NetworkDriver.DiscoverDelete': noop,
    '/NetworkDriver.ProgramExternalConnectivity': noop,
    '/NetworkDriver.RevokeExternalConnectivity': noop,
    '/NetworkDriver.AllocateNetwork': () => {
      throw new Error('AllocateNetwork is only used by swarm, which underlay does not need: create the network on any host');
    },
    '/NetworkDriver.FreeNetwork': noop,
    '/IpamDriver.RequestPool': (b) => ipam.requestPool(ctx, b),
    '/IpamDriver.ReleasePool': (b) => ipam.releasePool(ctx, b),
    '/IpamDriver.RequestAddress': (b) => ipam.requestAddress(ctx, b),
    '/IpamDriver.ReleaseAddress': (b) => ipam.releaseAddress(ctx, b),
  };
}

/** The whole route table of a started agent. */
export function pluginRoutes(ctx: DriverContext): Routes {
  return { ...staticRoutes(), ...statefulRoutes(ctx) };
}

/** Tracing on: netlink link calls, Docker API calls and route changes as child spans (`netlink <op>`, `docker api <op>`, `route add|del`). */
const LINK_SPANS = spanNames('netlink', ['getLink', 'listLinks', 'createMacvlan', 'createIpvlan', 'createVlan', 'createDummy', 'setUp', 'deleteLink'] as const);
const DOCKER_SPANS = spanNames('docker api', ['inspectNetwork', 'listNetworks', 'listNetworkIds', 'createNetwork', 'deleteNetwork', 'networkName', 'listContainers'] as const);
const ROUTE_SPANS = { addRoute: 'route add', deleteRoute: 'route del', replaceRoute: 'route replace' } as const;
const linkAttrs = (args: unknown[]): Attributes => {
  const a = args[0] as { name?: unknown } | string | undefined;
  const name = typeof a === 'string' ? a : typeof a?.name === 'string' ? a.name : undefined;
  return name ? { 'network.interface.name': name } : {};
};
const routeAttrs = (args: unknown[]): Attributes => {
  const r = args[0] as { dst?: unknown; via?: unknown; dev?: unknown } | undefined;
  const out: Attributes = {};
  if (typeof r?.dst === 'string') out['underlay.address'] = r.dst;
  if (typeof r?.via === 'string') out['network.peer.address'] = r.via;
  if (typeof r?.dev === 'string') out['network.interface.name'] = r.dev;
  return out;
};

export class Agent {
  readonly config: AgentConfig;
  private nc?: NatsConnection;
  private server?: Server;
  private links?: LinkOps;
  private routeOps?: RouteOps;
  /** Reports to the controller now and every reportIntervalMs (a report logs its own failure). */
  private reporter?: ReconcileRunner;
  private readonly reportFailures: FailureLog;
  private ctx?: DriverContext;
  view?: ClusterView;
  replicas?: ReplicaReconciler;
  routes?: RouteService;
  /** The host's shims on host_access networks (driver/host-access.ts). */
  hostAccess?: HostAccessService;
  private hostOps?: RouteOps;
  bgp?: BgpService;
  private unlisten?: () => void;
  private rebuild?: StoreRebuild;
  /** Holds Docker's calls until start-up is done (the socket is served from the start). */
  private gate?: StartupGate;
  /** This host's address on the underlay (reported; next hop of routes to its blocks). */
  address?: string;
  socketPath?: string;
  /** Prometheus metrics (GET /metrics on --listen). */
  readonly metrics: AgentMetrics;
  private telemetry?: TelemetryServer;
  /** Where --listen serves /metrics, /healthz and /readyz (undefined when off). */
  listenAddress?: { host: string; port: number };

  constructor(
    config: AgentConfigInput,
    private readonly openLinks: () => LinkOps | Promise<LinkOps>,
    private readonly logger: Logger = () => {},
    /** The kernel's route table (ipvlan L3 routes), opened only when routes are on; closed by stop(). */
    private readonly openRoutes: () => RouteOps = () => openRouteOps(),
  ) {
    this.config = AgentConfig.parse(config);
    this.reportFailures = failureLog(this.logger, 'report to the controller');
    this.metrics = new AgentMetrics({
      appliedSeq: () => this.view?.seq ?? 0,
      knownHead: () => this.view?.knownHead ?? 0,
      routes: () => this.routes?.stats().routes,
      bgpSessions: async () => this.bgp?.sessions(),
      ready: async () => (await this.readiness()).ready,
    });
  }

  /** `/readyz`: NATS connected (a PING answered), the cluster view caught up with the log, the plugin socket served. */
  readiness(): Promise<Readiness> {
    return runReadiness(
      {
        nats: async () => {
          if (!this.nc || this.nc.isClosed()) return { ok: false, detail: 'not connected' };
          await this.nc.flush();
          return { ok: true, detail: `connected to ${this.nc.getServer()}` };
        },
        view: async () => {
          const v = this.view;
          if (!v) return { ok: false, detail: 'not started' };
          const detail = `at seq ${v.seq}, controller head ${v.knownHead}`;
          return v.isReady ? { ok: true, detail } : { ok: false, detail: `catching up: ${detail}` };
        },
        plugin: async () => {
          if (this.gate && !this.gate.isOpen) return { ok: false, detail: `${this.socketPath} served, start-up not done` };
          const ok = !!this.server?.listening && !!this.socketPath && fs.statSync(this.socketPath, { throwIfNoEntry: false })?.isSocket() === true;
          return ok ? { ok, detail: this.socketPath } : { ok, detail: this.socketPath ? `${this.socketPath} is not served` : 'not started' };
        },
      },
      READY_DEADLINE_MS,
    );
  }

  async start(): Promise<void> {
    fs.mkdirSync(this.config.stateDir, { recursive: true });
    // The socket first: Docker disables a managed plugin that does not listen within ~9.5 s of its start, and
    // start-up below may wait on Docker itself (after a power cut its API answers only once it restored containers).
    const gate = new StartupGate({
      node: this.config.node,
      waitMs: this.config.startupWaitMs,
      immediate: staticRoutes(),
      early: { '/AuthZPlugin.AuthZReq': (b) => (authz.removedNetwork(b) === undefined ? authz.authzResponse() : undefined) },
    });
    this.gate = gate;
    this.server = createPluginServer(this.metrics.plugin(gate.table(PLUGIN_METHODS)), this.logger);
    this.socketPath = await listenOnSocket(this.server, this.config.pluginDir);
    this.logger(`agent ${this.config.node} listening on ${this.socketPath}; Docker's calls wait until start-up is done`);
    try {
      await this.startUp(gate);
    } catch (e) {
      // Calls in flight get the reason; the socket goes, so Docker sees a plugin that is not there rather than one that never answers.
      gate.fail(e as Error);
      await this.closeSocket();
      throw e;
    }
  }

  /** The network namespace of the container holding an endpoint, from Docker (`/proc/<pid>/ns/net` once it runs). */
  private async containerNamespace(networkId: string | undefined, endpointId: string): Promise<string | undefined> {
    if (!networkId) return undefined;
    const engine = new DockerEngine(this.config.docker);
    const net = await engine.inspectNetwork(networkId);
    const id = Object.entries(net?.Containers ?? {}).find(([, c]) => (c as { EndpointID?: string }).EndpointID === endpointId)?.[0];
    if (!id || id.startsWith('ep-')) return undefined;
    const pid = await engine.containerPid(id);
    return pid ? `/proc/${pid}/ns/net` : undefined;
  }

  private async startUp(gate: StartupGate): Promise<void> {
    await this.startTelemetry();
    const store = new LocalStore(this.config.stateDir, undefined, (m) => logWarn(this.logger, m));
    gate.stage('opening netlink');
    this.links = this.metrics.netlink(traceMethods(await this.openLinks(), LINK_SPANS, linkAttrs));
    gate.stage(`connecting to NATS at ${natsServers(this.config.nats).join(', ')}`);
    this.nc = await connectNats(this.config.nats, `underlay-agent-${this.config.node}`, { inboxPrefix: nodeInboxPrefix(this.config.node), waitOnFirstConnect: true, creds: this.config.natsCreds, tls: { ca: this.config.natsCa, cert: this.config.natsCert, key: this.config.natsKey } });
    logNatsStatus(this.nc, this.logger);
    const rpc = new RpcClient(this.nc, this.config.node, this.metrics.rpc);
    const controller = rpcControllerClient(rpc);
    const docker = traceMethods(new DockerEngine(this.config.docker), DOCKER_SPANS);
    const clusterNetworkName = (id: string) => (this.view?.isReady ? this.view.state.networks.get(id)?.name : undefined);
    const ctx: DriverContext = driverContext({
      node: this.config.node,
      store,
      links: this.links,
      controller,
      lock: new KeyedMutex(),
      log: this.logger,
      docker,
      parentMap: this.config.parentMap,
      clusterNetworkName,
      driverName: this.config.driverName,
      announcer: new Announcer({
        log: { debug: (m) => logDebug(this.logger, m), warn: (m) => logWarn(this.logger, m) },
        observe: this.metrics.neighbourAnnouncement,
        findNamespace: (t) => this.containerNamespace(t.networkId, t.endpointId),
      }),
      holds: new AddressHolds({
        holdMs: this.config.addressHoldMs,
        stickyHoldMs: this.config.stickyHoldMs,
        release: (h) => ipam.releaseHeld({ controller, store }, h),
        log: this.logger,
        onHold: () => this.reporter?.trigger(),
      }),
      sticky: new StickyIdentities({
        docker,
        log: this.logger,
        networkName: (id) => networkNameOf({ docker, clusterNetworkName }, id),
        poolOptions: (poolId) => (this.view?.isReady ? this.view.state.pools.get(poolId)?.options : undefined),
      }),
      onNetworksChanged: () => {
        this.view?.refreshInterest();
        this.replicas?.trigger();
        this.routes?.sync();
        this.hostAccess?.trigger();
      },
    });
    this.ctx = ctx;
    this.address = this.config.address ?? defaultAddress();
    // Before serving Docker: rebuild lost state from Docker, bring back parents and clear links left by a crash.
    this.rebuild = new StoreRebuild(ctx);
    gate.stage('reading Docker\'s networks and containers');
    await this.rebuild.start();
    gate.stage('restoring links');
    const r = await restore(ctx, async () => (await ctx.links.listLinks()).map((l) => l.name));
    this.logger(
      `restored ${r.networks} networks and ${r.endpoints} endpoints` +
        (r.parentsRecreated.length ? `; re-created parents ${r.parentsRecreated.join(', ')}` : '') +
        (r.staleLinksRemoved.length ? `; removed stale links ${r.staleLinksRemoved.join(', ')}` : ''),
    );
    for (const e of r.errors) this.logger(e);
    gate.open(pluginRoutes(ctx));
    this.logger(`agent ${this.config.node} serving ${this.socketPath}`);
    this.reporter = new ReconcileRunner({ name: 'report', resyncMs: this.config.reportIntervalMs, reconcile: () => this.report(), observe: this.metrics.reconcile });
    this.reporter.start();
    // The cluster's state, for replicas of cluster networks (and routes).
    // Interest-based delivery: the view follows the pools of this host's networks (and the cluster's and host's chains).
    const view = new ClusterView({ nc: this.nc, rpc, logger: this.logger, pools: () => [...ctx.store.networks.values()].flatMap((n) => n.poolIds) });
    this.view = view;
    this.replicas = new ReplicaReconciler(ctx, view, this.config.reconcileIntervalMs, undefined, this.metrics.reconcile);
    // A pass compares the cluster's networks with this host's: other hosts' network events change nothing here.
    const concernsThisHost = (e: ClusterEvent): boolean => {
      switch (e.type) {
        case 'ClusterNetworkCreated':
        case 'ClusterNetworkRemoved':
          return true;
        case 'NetworkRecorded':
        case 'NetworkRemoved':
          return e.data.node === ctx.node;
        case 'NetworkNamed':
          return ctx.store.networks.has(e.data.networkId);
        default:
          return false;
      }
    };
    // An address of this node released while one of its endpoints holds it (the collector took the node for gone):
    // taken back for the endpoint. Checked only for this node's releases (rare), against the endpoints' addresses.
    const releasedFromEndpoint = (evs: readonly ClusterEvent[]): boolean => {
      const mine = evs.filter((e) => e.type === 'AddressReleased' && e.data.node === ctx.node);
      if (mine.length === 0) return false;
      const held = new Set([...ctx.store.endpoints.values()].flatMap((ep) => endpointAddresses(ep).map(({ a }) => formatValue(a.family, a.value))));
      return mine.some((e) => {
        const a = e.type === 'AddressReleased' ? tryParseAddr(e.data.address) : undefined;
        return !!a && held.has(formatValue(a.family, a.value));
      });
    };
    this.unlisten = view.onChange((evs, _state, info) => {
      this.replicas?.noteEvents(evs);
      if (info?.resync || evs.some(concernsThisHost)) this.replicas?.trigger();
      if (view.isReady && (info?.resync || releasedFromEndpoint(evs))) void this.rebuild?.reclaim(view.state);
    });
    await view.start();
    const c = this.config;
    // Routes to other hosts' blocks (ipvlan l3/l3s), and BGP towards the physical network.
    if (c.routes) {
      this.routeOps = this.metrics.netlink(this.openRoutes());
      this.routes = await startRoutes({
        node: c.node, view, localNetworks: () => ctx.store.networks.values(), reconcileMs: c.routeReconcileMs, logger: this.logger, ops: traceMethods(this.routeOps, ROUTE_SPANS, routeAttrs),
        observe: this.metrics.reconcile, onProgrammed: this.metrics.routeProgrammed,
      });
    }
    // The host's shims on host_access networks (their own addresses and routes, protocol 202).
    this.hostOps = this.metrics.netlink(this.openRoutes());
    this.hostAccess = startHostAccess({
      node: c.node, view, store: ctx.store, lock: ctx.lock, controller, links: ctx.links, ops: this.hostOps,
      reconcileMs: c.routeReconcileMs, log: this.logger, observe: this.metrics.reconcile,
    });
    if (c.bgpAsn !== undefined) {
      if (!this.address) throw new Error('BGP needs this host\'s address: set --address');
      this.bgp = await startBgp({
        node: c.node,
        view,
        // The next hop BGP announces: the host's first address (IPv4 when it has both).
        address: this.address.split(',')[0]!.trim(),
        asn: c.bgpAsn,
        routerId: c.bgpRouterId,
        peers: c.bgpPeers.map(parseBgpPeer),
        api: c.bgpApi,
        installLearned: c.bgpInstallLearned,
        // Learned routes name no device: use the one whose subnet holds the next hop.
        onLearned: (routes) => {
          const deviceFor = deviceLookup();
          this.routes?.setExternal('bgp', routes.map((r) => ({ ...r, dev: r.dev || deviceFor(r.via) || '' })));
        },
        logger: this.logger,
        observe: this.metrics.reconcile,
      });
    }
    void view.ready().then(async () => {
      await this.rebuild?.withController(view.state);
      this.logger(`cluster state caught up at seq ${view.seq}: ${view.state.clusterNetworks.size} cluster networks`);
      this.replicas?.start();
    });
  }

  /**
   * `--listen`: /metrics, /healthz, /readyz. A listener that cannot bind (the port taken) is logged and left off:
   * Docker's plugin matters more than the metrics.
   */
  private async startTelemetry(): Promise<void> {
    const listen = parseListen(this.config.listen);
    if (!listen) return;
    try {
      this.telemetry = await startTelemetryServer(listen, { registry: this.metrics.registry, readiness: () => this.readiness() });
      this.listenAddress = this.telemetry.address;
      this.logger(`agent ${this.config.node}: /metrics, /healthz and /readyz on http://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${this.telemetry.address.port}`);
    } catch (e) {
      logError(this.logger, `agent ${this.config.node}: cannot serve /metrics on --listen ${this.config.listen}: ${(e as Error).message}; going on without it`);
    }
  }

  /** Renews the node's lease and reports its endpoints and networks (the leak rules rely on the endpoint list). */
  async report(): Promise<void> {
    const ctx = this.ctx;
    if (!ctx) return;
    try {
      const report = await buildReport({
        ctx,
        version: AGENT_VERSION,
        address: this.address,
        leaseMs: this.config.leaseMs ?? 3 * this.config.reportIntervalMs,
        state: this.view?.isReady ? this.view.state : undefined,
        replicas: this.replicas?.status,
      });
      await ctx.controller.nodeReport(report, reportCallOptions(this.config.reportIntervalMs));
      this.reportFailures.recovered();
    } catch (e) {
      // Docker or NATS down fails every report: logged when it starts, changes, and ends (with the count).
      this.reportFailures.failed(e);
    }
  }

  private async closeSocket(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server?.listening) {
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeAllConnections();
      await closed;
    }
    if (this.socketPath) fs.rmSync(this.socketPath, { force: true });
  }

  async stop(): Promise<void> {
    // Stops the schedule at once; a report in flight is not waited for (it may wait its deadline on a NATS outage).
    void this.reporter?.stop();
    await this.rebuild?.stop();
    this.unlisten?.();
    await this.bgp?.stop();
    await this.routes?.stop();
    await this.hostAccess?.stop();
    await this.replicas?.stop();
    // Before NATS goes: addresses held for a restart that did not come go back to the cluster.
    await this.ctx?.holds?.releaseAll();
    await this.view?.stop();
    await this.closeSocket();
    this.ctx?.store.close();
    await this.telemetry?.close();
    this.links?.close();
    this.routeOps?.close();
    this.hostOps?.close();
    if (this.nc) await this.nc.drain().catch(() => this.nc?.close());
  }
}

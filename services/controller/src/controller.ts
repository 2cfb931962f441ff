/**
 * The controller: the only writer of cluster state. Several may run; one is leader through an etcd
 * election, and every write it makes is fenced by the leader key's create revision, so a deposed
 * leader cannot write. The leader loads the state (snapshot + log), answers agents over NATS,
 * commits events in groups, publishes them on JetStream, collects leaks and writes snapshots.
 * Every controller serves the HTTP API.
 */
import type { Server } from 'node:http';
import type { Subscription } from '@nats-io/transport-node';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import {
  BindEndpointReq,
  NetworkNameRes,
  rpc,
  NetworkNameReq,
  NetworkRecordReq,
  NetworkRemoveReq,
  NodeReport,
  ReadEventsReq,
  ReleaseAddressReq,
  ReleasePoolReq,
  RequestAddressReq,
  RequestPoolReq,
  UnavailableError,
  EmptyReq,
  traceIdOf,
} from '@underlay/core';
import {
  EtcdEventLog,
  EtcdSnapshots,
  EventPublisher,
  connectNats,
  keys,
  serveRpc,
  type Fence,
  type NatsConnection,
  type RpcContext,
} from '@underlay/adapters';
import { ControllerConfig, type ControllerConfigInput } from './config.js';
import { IpamService } from './ipam-service.js';
import { OrderedPublisher } from './publisher.js';
import { createHttpApi } from './http-api.js';
import { Collector } from './collector.js';
import { Snapshotter, loadState } from './snapshots.js';
import { LeaderElection } from './leader.js';
import { NodeDirectory } from './nodes.js';

export type Logger = (msg: string) => void;
export type Role = 'starting' | 'standby' | 'leader' | 'stopped';

/** How often a standby folds new events from the log. */
const FOLLOW_MS = 250;

export class Controller {
  readonly config: ControllerConfig;
  readonly log: EtcdEventLog;
  readonly snaps: EtcdSnapshots;
  readonly ipam: IpamService;
  readonly snapshotter: Snapshotter;
  /** Every node's latest report and lease (kept by leader and standbys alike). */
  readonly nodes: NodeDirectory;
  /** The bearer token the HTTP API requires. */
  readonly apiToken: string;
  role: Role = 'starting';
  collector?: Collector;
  /** Number of times this controller became leader. */
  terms = 0;
  private election?: LeaderElection;
  private nc?: NatsConnection;
  private publisher?: OrderedPublisher;
  private subs: Subscription[] = [];
  private http?: Server;
  private loop?: Promise<void>;
  private stopped = false;
  private leaderWaiters: (() => void)[] = [];
  /** The bound HTTP address once started. */
  httpAddress?: { host: string; port: number };

  constructor(config: ControllerConfigInput, private readonly logger: Logger = () => {}) {
    this.config = ControllerConfig.parse(config);
    this.log = new EtcdEventLog({ endpoints: this.config.etcd });
    this.snaps = new EtcdSnapshots(this.log.client);
    this.ipam = new IpamService({
      log: this.log,
      loadState: () => loadState(this.log, this.snaps, logger),
      onCommitted: (evs, encoded) => {
        this.publisher?.enqueue(evs, encoded);
        this.snapshotter.onCommitted(evs);
      },
      fence: () => this.currentFence(),
      // A reload while leading (after a commit conflict) restarts the snapshotter's shadow from etcd's state.
      onLoaded: (state) => {
        if (this.role === 'leader') this.snapshotter.reset(state);
      },
      logger,
    });
    this.snapshotter = new Snapshotter(this.snaps, this.config.snapshotEvery, logger);
    this.nodes = new NodeDirectory(this.config.nodeLeaseMs);
    this.apiToken = resolveApiToken(this.config, logger);
  }

  private currentFence(): Fence {
    const f = this.role === 'leader' ? this.election?.fence() : undefined;
    if (!f) throw new UnavailableError(`controller ${this.config.name} is not the leader`);
    return f;
  }

  /** Starts the HTTP API and the campaign; resolves once this controller is leader or standby. */
  async start(): Promise<void> {
    this.nc = await connectNats(this.config.nats, `underlay-controller-${this.config.name}`);
    this.publisher = new OrderedPublisher(await EventPublisher.open(this.nc), this.log, this.logger);
    this.listenToReports(this.nc);
    await this.startHttp();
    this.role = 'standby';
    this.loop = this.leadLoop();
  }

  /** Resolves when this controller is leader and serving. */
  whenLeader(): Promise<void> {
    if (this.role === 'leader') return Promise.resolve();
    return new Promise((r) => this.leaderWaiters.push(r));
  }

  private async leadLoop(): Promise<void> {
    while (!this.stopped) {
      const election = new LeaderElection({ client: this.log.client, name: this.config.name, ttlSeconds: this.config.leaseTtlSeconds, key: keys.leader, logger: this.logger });
      this.election = election;
      let lost!: (reason: string) => void;
      const lostP = new Promise<string>((r) => (lost = r));
      election.onLost((reason) => lost(reason));
      // A hot standby: follow the log while waiting, so taking over folds only the last events.
      const follower = this.follow();
      try {
        await election.campaign();
      } catch (e) {
        await follower.stop();
        if (this.stopped) break;
        this.logger(`campaign failed: ${(e as Error).message}; retrying`);
        await new Promise((r) => setTimeout(r, 500));
        continue;
      }
      await follower.stop();
      if (this.stopped) break;
      try {
        await this.lead();
        this.terms++;
        this.logger(`leader (term ${this.terms}) at seq ${this.ipam.state.seq}`);
        for (const w of this.leaderWaiters.splice(0)) w();
        const reason = await Promise.race([lostP, this.stoppedP]);
        if (!this.stopped) this.logger(`leadership lost: ${reason}`);
      } catch (e) {
        this.logger(`failed to take over as leader: ${(e as Error).message}`);
      } finally {
        await this.stepDown();
        await election.stop().catch(() => {});
      }
    }
  }

  private stopSignal!: (reason: string) => void;
  private readonly stoppedP = new Promise<string>((r) => (this.stopSignal = r));

  /** Folds new events from the log every FOLLOW_MS until stopped. */
  private follow(): { stop(): Promise<void> } {
    let stopped = false;
    let wake: () => void = () => {};
    const loop = (async () => {
      while (!stopped && !this.stopped) {
        await this.ipam.refresh().catch((e) => this.logger(`standby could not follow the log: ${(e as Error).message}`));
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, FOLLOW_MS).unref();
        });
      }
    })();
    return {
      stop: async () => {
        stopped = true;
        wake();
        await loop;
      },
    };
  }

  /** Becomes the serving leader: catch up with the log, catch up the stream, answer requests, collect. */
  private async lead(): Promise<void> {
    await this.ipam.refresh();
    // The state equals the committed log here: the snapshotter's shadow starts from it.
    this.snapshotter.reset(this.ipam.state);
    this.role = 'leader';
    await this.publisher!.catchUp();
    const nc = this.nc!;
    const ctx = (req: { node: string }, rc: RpcContext) => ({ actor: `node:${req.node}`, traceId: traceIdOf(rc.traceparent) });
    this.subs.push(
      serveRpc(nc, 'requestPool', RequestPoolReq, (r, rc) => this.ipam.requestPool(r, ctx(r, rc))),
      serveRpc(nc, 'releasePool', ReleasePoolReq, (r, rc) => this.ipam.releasePool(r, ctx(r, rc))),
      serveRpc(nc, 'requestAddress', RequestAddressReq, (r, rc) => this.ipam.requestAddress(r, ctx(r, rc))),
      serveRpc(nc, 'releaseAddress', ReleaseAddressReq, (r, rc) => this.ipam.releaseAddress(r, ctx(r, rc))),
      serveRpc(nc, 'bindEndpoint', BindEndpointReq, (r, rc) => this.ipam.bindEndpoint(r, ctx(r, rc))),
      serveRpc(nc, 'networkRecord', NetworkRecordReq, (r, rc) => this.ipam.networkRecord(r, ctx(r, rc))),
      serveRpc(nc, 'networkName', NetworkNameReq, (r, rc) => this.ipam.networkName(r, ctx(r, rc)).then((x) => NetworkNameRes.parse(x))),
      serveRpc(nc, 'networkRemove', NetworkRemoveReq, (r, rc) => this.ipam.networkRemove(r, ctx(r, rc), this.nodes.containerOf)),
      serveRpc(nc, 'nodeReport', NodeReport, (r, rc) => this.ipam.nodeReport(r, ctx(r, rc))),
      serveRpc(nc, 'readEvents', ReadEventsReq, async (r) => ({ events: await this.log.readAll(r.fromSeq, r.limit) })),
      serveRpc(nc, 'eventsHead', EmptyReq, async () => {
        await this.ipam.settled();
        return { seq: this.ipam.committedSeq };
      }),
    );
    await nc.flush();
    const c = this.config;
    this.collector = new Collector(
      this.ipam,
      this.nodes.liveness,
      { intervalMs: c.collectIntervalMs, blockGraceMs: c.blockGraceMs, leakPolicy: { unboundGraceMs: c.unboundGraceMs, reportSlackMs: c.reportSlackMs, nodeExpiredMs: c.nodeExpiredMs } },
      Date.now(),
      this.logger,
    );
    this.collector.start();
  }

  private async stepDown(): Promise<void> {
    if (this.role === 'leader') this.role = this.stopped ? 'stopped' : 'standby';
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
    await this.collector?.stop();
    this.collector = undefined;
    await this.nc?.flush().catch(() => {});
  }

  /**
   * Every controller hears every node report (a plain subscription next to the leader's queue
   * group), so leases and statuses survive a change of leader.
   */
  private listenToReports(nc: NatsConnection): void {
    const sub = nc.subscribe(rpc.nodeReport, {
      callback: (err, msg) => {
        if (err) return;
        try {
          this.nodes.record(NodeReport.parse(msg.json()));
        } catch {
          /* a malformed report is answered (refused) by the leader */
        }
      },
    });
    this.reportSub = sub;
  }
  private reportSub?: Subscription;

  /** The leader's actions behind POST/DELETE /v1/networks. */
  private leaderOnly(): void {
    if (this.role !== 'leader') throw new UnavailableError(`controller ${this.config.name} is a standby; ask the leader`);
  }

  private async startHttp(): Promise<void> {
    const [host, port] = splitHostPort(this.config.listen);
    this.http = createHttpApi({
      state: () => this.ipam.state,
      status: () => ({ role: this.role, name: this.config.name }),
      nodes: this.nodes,
      log: this.log,
      token: this.apiToken,
      createNetwork: async (name, definition, actor) => {
        this.leaderOnly();
        return this.ipam.clusterNetworkCreate({ name, definition }, { actor });
      },
      removeNetwork: async (name, actor) => {
        this.leaderOnly();
        await this.ipam.clusterNetworkRemove({ name }, { actor }, this.nodes.containerOf);
      },
    }, { logger: this.logger });
    await new Promise<void>((resolve, reject) => {
      this.http!.once('error', reject);
      this.http!.listen(port, host, () => resolve());
    });
    const addr = this.http.address();
    if (addr && typeof addr === 'object') this.httpAddress = { host: addr.address, port: addr.port };
    this.logger(`controller ${this.config.name}: NATS ${this.config.nats}, HTTP ${this.httpAddress?.host}:${this.httpAddress?.port}`);
  }

  /** Waits until every committed event has been handed to JetStream. */
  async flushEvents(): Promise<void> {
    await this.publisher?.flush();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.stopSignal('stopping');
    await this.election?.stop().catch(() => {});
    await this.loop;
    await this.snapshotter.flush();
    this.role = 'stopped';
    this.publisher?.stop();
    await this.publisher?.flush();
    if (this.http) {
      const closed = new Promise<void>((r) => this.http!.close(() => r()));
      this.http.closeAllConnections();
      await closed;
    }
    this.reportSub?.unsubscribe();
    if (this.nc) await this.nc.drain().catch(() => this.nc?.close());
    this.log.close();
  }
}

/** The API token: given, read from a file, or (neither) made up, written to the file when one is named, and logged once. */
export function resolveApiToken(c: ControllerConfig, logger: Logger): string {
  if (c.apiToken) return c.apiToken;
  if (c.apiTokenFile && fs.existsSync(c.apiTokenFile)) {
    const t = fs.readFileSync(c.apiTokenFile, 'utf8').trim();
    if (t) return t;
  }
  const t = randomBytes(24).toString('base64url');
  if (c.apiTokenFile) {
    fs.writeFileSync(c.apiTokenFile, `${t}\n`, { mode: 0o600 });
    logger(`API token written to ${c.apiTokenFile}`);
  } else {
    logger('no --api-token or --api-token-file: made up a token for this run; the HTTP API will refuse every /v1 request without it');
  }
  return t;
}

export function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(':');
  return [s.slice(0, i) || '127.0.0.1', Number(s.slice(i + 1))];
}

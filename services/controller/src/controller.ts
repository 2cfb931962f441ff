/**
 * The controller: the only writer of cluster state. Several may run; one is leader through an etcd
 * election, and every write it makes is fenced by the leader key's create revision, so a deposed
 * leader cannot write. The leader loads the state (snapshot + log), answers agents over NATS,
 * commits events in groups, publishes them on JetStream, collects leaks and writes snapshots.
 * Every controller serves the HTTP API.
 */
import type { Server } from 'node:http';
import type { Subscription } from '@nats-io/transport-node';
import {
  Backoff,
  BindEndpointReq,
  NetworkNameRes,
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
  NotFoundError,
  InvalidArgumentError,
  EventsHeadReq,
  committedHeads,
  holdsIn,
  poolChain,
  chainOfEvent,
  type ClusterEvent,
  EventsConsumerReq,
  SnapshotReadReq,
  type SnapshotReadRes,
  SnapshotIndexReq,
  type SnapshotIndexRes,
  SnapshotRangeReq,
  type SnapshotRangeRes,
  rpcServeSubject,
  nodeOfRpcSubject,
  traceIdOf,
  nodeList,
  checkNodes,
  decideOperatorRelease,
} from '@underlay/core';
import { EtcdEventLog, EtcdSnapshots, type SnapshotIndex, type SnapshotManifest, EventPublisher, ReconcileRunner, activeTraceId, connectNats, logNatsStatus, sleep, failureLog, ensureNodeConsumer, keys, maxPayload, serveRpc, REPLY_ENVELOPE_BYTES, runReadiness, type Fence, type NatsConnection, type RpcContext, logError, logWarn } from '@underlay/adapters';
import { ControllerConfig, type ControllerConfigInput } from './config.js';
import { ClusterWriter } from './cluster-writer.js';
import { IpamRequests } from './ipam-requests.js';
import { NetworkRecords } from './network-records.js';
import { NodeRegistration } from './node-registration.js';
import { RecentEvents } from './recent-events.js';
import { OrderedPublisher } from './publisher.js';
import { createHttpApi, readTlsFiles } from './http-api.js';
import { resolveApiToken, type ApiTokens } from './api/tokens.js';
import { Collector } from './collector.js';
import { Snapshotter, loadState } from './snapshots.js';
import { etcdClientOptions } from './etcd.js';
import { LeaderElection } from './leader.js';
import { NodeDirectory } from './nodes.js';
import { ControllerMetrics } from './metrics.js';

export type Logger = (msg: string) => void;
export type Role = 'starting' | 'standby' | 'leader' | 'stopped';

/** How often a standby folds new events from the log. */
/** Events of the log one chain read scans at most (a reader far behind a quiet chain asks again after `through`). */
const CHAIN_SCAN = 10_000;

const FOLLOW_MS = 250;
/** A standby that cannot read the log tries again after FOLLOW_MS, then less often (at most every second). */
const FOLLOW_RETRY = { minMs: FOLLOW_MS, maxMs: 1_000 };
/** Between campaigns that failed (campaign() retries etcd failures itself: this is for anything else). */
const CAMPAIGN_RETRY = { minMs: 500, maxMs: 5_000 };

/** A snapshot's index, and how many bytes its sections take in JSON. */
type CachedIndex = SnapshotIndex & { sectionsBytes: number };

/**
 * The longest start of `text` (halving) whose JSON string fits `maxBytes` (quotes and non-ASCII text take more bytes
 * in JSON than characters): a piece of a snapshot in one NATS reply.
 */
function pieceThatFits(text: string, maxBytes: number): string {
  let length = text.length;
  while (length > 1 && Buffer.byteLength(JSON.stringify(text.slice(0, length))) > maxBytes) length = Math.floor(length / 2);
  return text.slice(0, length);
}

export class Controller {
  readonly config: ControllerConfig;
  readonly log: EtcdEventLog;
  readonly snaps: EtcdSnapshots;
  /** The write path: decide → commit → publish. */
  readonly writer: ClusterWriter;
  /** The Docker IPAM driver's requests (pools, addresses, endpoint bindings). */
  readonly ipam: IpamRequests;
  /** Host networks recorded and named, cluster networks defined and removed. */
  readonly networks: NetworkRecords;
  /** Agents registering their nodes. */
  readonly registration: NodeRegistration;
  /** The last committed events, for agents' reads of one chain. */
  private readonly recent = new RecentEvents();
  readonly snapshotter: Snapshotter;
  /** Every node's latest report and lease (kept by leader and standbys alike). */
  readonly nodes: NodeDirectory;
  /** The bearer token the HTTP API requires. */
  readonly apiToken: string;
  /** Every named token the HTTP API accepts (apiToken is the first). */
  readonly apiTokens: ApiTokens;
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
  /** Aborted by stop(): ends the waits between campaigns. */
  private readonly abort = new AbortController();
  private leaderWaiters: (() => void)[] = [];
  /** The bound HTTP address once started. */
  httpAddress?: { host: string; port: number };
  /** Prometheus metrics (GET /metrics). */
  readonly metrics: ControllerMetrics;

  constructor(config: ControllerConfigInput, private readonly logger: Logger = () => {}) {
    this.config = ControllerConfig.parse(config);
    this.log = new EtcdEventLog(etcdClientOptions(this.config));
    this.snaps = new EtcdSnapshots(this.log);
    this.writer = new ClusterWriter({
      log: this.log,
      loadState: () => loadState(this.log, this.snaps, logger, (r) => this.snapshotter.recordLoad(r)),
      onCommitted: (evs, encoded, commitSpan) => {
        this.recent.add(evs, encoded);
        this.publisher?.enqueue(evs, encoded, commitSpan);
        this.snapshotter.onCommitted(evs);
      },
      onTransaction: (n, seconds, ok) => this.metrics.transaction(n, seconds, ok),
      fence: () => this.currentFence(),
      // An event must fit one NATS message (the stream, `events.read`) with room for its envelope and headers.
      maxEventBytes: () => (this.nc ? maxPayload(this.nc) - REPLY_ENVELOPE_BYTES : Infinity),
      // A reload while leading (after a commit conflict) restarts the snapshotter's shadow from etcd's state.
      onLoaded: (state) => {
        if (this.role === 'leader') this.snapshotter.reset(state);
      },
      logger,
    });
    const poolLimits = { maxPoolPrefixV4: this.config.maxPoolPrefixV4, maxPoolPrefixV6: this.config.maxPoolPrefixV6 };
    this.ipam = new IpamRequests(this.writer, poolLimits);
    this.networks = new NetworkRecords(this.writer, poolLimits);
    this.registration = new NodeRegistration(this.writer);
    this.snapshotter = new Snapshotter(this.snaps, this.config.snapshotEvery, logger, { log: this.log, events: this.config.eventRetention, compact: this.config.etcdCompact, compactMargin: this.config.etcdCompactMargin, fence: () => this.currentFence() });
    this.nodes = new NodeDirectory(this.config.nodeLeaseMs);
    this.apiTokens = resolveApiToken(this.config, logger);
    this.apiToken = this.apiTokens.tokens[0]!.token;
    this.metrics = new ControllerMetrics({
      state: () => this.writer.state,
      leader: () => this.role === 'leader',
      headSeq: () => (this.role === 'leader' ? this.writer.committedSeq : this.writer.state.seq),
      publishedSeq: () => (this.role === 'leader' ? (this.publisher?.published ?? 0) : 0),
      nodes: () => {
        const all = nodeList({ state: this.writer.state, seen: this.nodes.all(), nowMs: Date.now() });
        const ready = all.filter((n) => n.status === 'Ready').length;
        return { ready, notReady: all.length - ready };
      },
      leakCandidates: () => this.collector?.candidates ?? new Map(),
    });
  }

  /**
   * `/readyz`: etcd answers a read of the leader key within the deadline, and a leader is known (this controller,
   * or another one's key is there).
   */
  async readiness(deadlineMs = Math.min(2_000, this.config.etcdTimeoutMs)) {
    let leaderKey: Promise<string | null> | undefined;
    // One read serves both checks.
    const read = () => (leaderKey ??= this.log.calls.run(`get ${keys.leader}`, (o) => this.log.client.get(keys.leader).options({ deadline: Math.min(o.deadline, Date.now() + deadlineMs) }).string()));
    return runReadiness(
      {
        etcd: async () => {
          await read();
          return { ok: true, detail: `etcd at ${this.log.calls.where} answered` };
        },
        leader: async () => {
          if (this.role === 'leader') return { ok: true, detail: `this controller (${this.config.name}) is the leader` };
          const v = await read();
          return v ? { ok: true, detail: 'another controller is the leader' } : { ok: false, detail: 'no controller is the leader' };
        },
      },
      deadlineMs,
    );
  }

  private currentFence(): Fence {
    const f = this.role === 'leader' ? this.election?.fence() : undefined;
    if (!f) throw new UnavailableError(`controller ${this.config.name} is not the leader`);
    return f;
  }

  /** Starts the HTTP API and the campaign; resolves once this controller is leader or standby. */
  async start(): Promise<void> {
    this.nc = await connectNats(this.config.nats, `underlay-controller-${this.config.name}`, { creds: this.config.natsCreds, tls: { ca: this.config.natsCa, cert: this.config.natsCert, key: this.config.natsKey } });
    logNatsStatus(this.nc, this.logger);
    const streamLimits = { maxBytes: this.config.streamMaxBytes, maxAgeMs: this.config.streamMaxAgeMs, maxMsgs: this.config.streamMaxMsgs, replicas: this.config.eventsReplicas };
    this.publisher = new OrderedPublisher(await EventPublisher.open(this.nc, streamLimits), this.log, this.logger, {
      snapshotSeq: async () => (await this.snaps.latestManifest())?.seq,
      active: () => this.role === 'leader',
    });
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
    const retry = new Backoff(CAMPAIGN_RETRY);
    while (!this.stopped) {
      const election = new LeaderElection({ client: this.log.client, name: this.config.name, ttlSeconds: this.config.leaseTtlSeconds, key: keys.leader, logger: this.logger, callTimeoutMs: this.config.etcdTimeoutMs, describeError: (e, what) => this.log.calls.translate(e, what).message });
      this.election = election;
      let lost!: (reason: string) => void;
      const lostP = new Promise<string>((r) => (lost = r));
      election.onLost((reason) => lost(reason));
      // Load the state before campaigning, not while holding the lease: a cold start at 1M allocations blocks this
      // thread for seconds, and a leader whose keepalives starve that long loses its lease (2 s TTL) at once. A failed
      // load (etcd away) is left to the follower and to lead(), which load again.
      await this.writer.refresh().catch(() => undefined);
      if (this.stopped) break;
      // A hot standby: follow the log while waiting, so taking over folds only the last events.
      const follower = this.follow();
      try {
        await election.campaign();
      } catch (e) {
        await follower.stop();
        if (this.stopped) break;
        const delayMs = retry.next();
        logWarn(this.logger, `campaign failed: ${(e as Error).message}; retrying in ${delayMs} ms`);
        await sleep(delayMs, this.abort.signal);
        continue;
      }
      retry.reset();
      await follower.stop();
      if (this.stopped) break;
      try {
        await this.lead();
        this.terms++;
        this.metrics.electionWon();
        this.logger(`leader (term ${this.terms}) at seq ${this.writer.state.seq}`);
        for (const w of this.leaderWaiters.splice(0)) w();
        const reason = await Promise.race([lostP, this.stoppedP]);
        if (!this.stopped) logWarn(this.logger, `leadership lost: ${reason}`);
      } catch (e) {
        logError(this.logger, `failed to take over as leader: ${(e as Error).message}`);
      } finally {
        await this.stepDown();
        await election.stop().catch(() => {});
      }
    }
  }

  private stopSignal!: (reason: string) => void;
  private readonly stoppedP = new Promise<string>((r) => (this.stopSignal = r));

  /** Folds new events from the log every FOLLOW_MS until stopped (a ReconcileRunner whose pass is one refresh). */
  private follow(): { stop(): Promise<void> } {
    const failures = failureLog(this.logger, 'standby following the log');
    const runner = new ReconcileRunner({
      name: 'standby-follow',
      resyncMs: FOLLOW_MS,
      backoff: FOLLOW_RETRY,
      reconcile: async () => {
        if (!this.stopped) await this.writer.refresh();
      },
      onError: (e) => failures.failed(e),
      onRecovered: () => failures.recovered(),
    });
    runner.start();
    return { stop: () => runner.stop() };
  }

  /** Becomes the serving leader: catch up with the log, catch up the stream, answer requests, collect. */
  private async lead(): Promise<void> {
    await this.writer.refresh();
    // The state equals the committed log here: the snapshotter's shadow starts from it.
    this.snapshotter.reset(this.writer.state);
    this.role = 'leader';
    await this.publisher!.catchUp();
    const nc = this.nc!;
    // The caller is the node its subject names (NATS lets a node's credentials publish only there); serveRpc
    // has already refused a body naming another node.
    const ctx = (rc: RpcContext) => ({ actor: `node:${rc.node}`, traceId: traceIdOf(rc.traceparent), span: rc.span, operation: rc.method });
    const so = { logger: this.logger, observe: this.metrics.rpc };
    this.subs.push(
      serveRpc(nc, 'requestPool', RequestPoolReq, (r, rc) => this.ipam.requestPool(r, ctx(rc)), so),
      serveRpc(nc, 'releasePool', ReleasePoolReq, (r, rc) => this.ipam.releasePool(r, ctx(rc)), so),
      serveRpc(nc, 'requestAddress', RequestAddressReq, (r, rc) => this.ipam.requestAddress(r, ctx(rc)), so),
      serveRpc(nc, 'releaseAddress', ReleaseAddressReq, (r, rc) => this.ipam.releaseAddress(r, ctx(rc)), so),
      serveRpc(nc, 'bindEndpoint', BindEndpointReq, (r, rc) => this.ipam.bindEndpoint(r, ctx(rc)), so),
      serveRpc(nc, 'networkRecord', NetworkRecordReq, (r, rc) => this.networks.networkRecord(r, ctx(rc)), so),
      serveRpc(nc, 'networkName', NetworkNameReq, (r, rc) => this.networks.networkName(r, ctx(rc)).then((x) => NetworkNameRes.parse(x)), so),
      serveRpc(nc, 'networkRemove', NetworkRemoveReq, (r, rc) => this.networks.networkRemove(r, ctx(rc), this.nodes.containerOf, this.nodes.heldBy), so),
      serveRpc(nc, 'nodeReport', NodeReport, (r, rc) => this.registration.nodeReport(r, ctx(rc)), so),
      serveRpc(nc, 'readEvents', ReadEventsReq, (r) => (r.chain === undefined ? this.readEventsPage(r.fromSeq, r.limit, maxPayload(nc) - REPLY_ENVELOPE_BYTES).then((events) => ({ events })) : this.readChainPage(r.chain, r.fromSeq, r.limit, maxPayload(nc) - REPLY_ENVELOPE_BYTES)), so),
      serveRpc(nc, 'eventsHead', EventsHeadReq, async (r, rc) => {
        await this.writer.settled();
        const seq = this.writer.committedSeq;
        if (!r.chains) return { seq };
        const state = this.writer.state;
        // The pools where the asking node holds a reference, a block or an address: its agent follows them whatever asked for them.
        const held: string[] = [];
        for (const p of state.pools.values()) if (holdsIn(p, rc.node)) held.push(poolChain(p.poolId));
        return { seq, chains: committedHeads(state, r.chains, seq), held };
      }, so),
      serveRpc(nc, 'eventsConsumer', EventsConsumerReq, (r, rc) => ensureNodeConsumer(nc, rc.node, r.afterSeq), so),
      serveRpc(nc, 'snapshotRead', SnapshotReadReq, (r) => this.snapshotPart(r.seq, r.part, r.offset, maxPayload(nc) - REPLY_ENVELOPE_BYTES), so),
      serveRpc(nc, 'snapshotIndex', SnapshotIndexReq, () => this.snapshotIndex(maxPayload(nc) - REPLY_ENVELOPE_BYTES), so),
      serveRpc(nc, 'snapshotRange', SnapshotRangeReq, (r) => this.snapshotRange(r.seq, r.start, r.end, maxPayload(nc) - REPLY_ENVELOPE_BYTES), so),
    );
    await nc.flush();
    const c = this.config;
    this.collector = new Collector(
      this.writer,
      this.nodes.liveness,
      { intervalMs: c.collectIntervalMs, blockGraceMs: c.blockGraceMs, leakPolicy: { unboundGraceMs: c.unboundGraceMs, reportSlackMs: c.reportSlackMs, nodeExpiredMs: c.nodeExpiredMs } },
      Date.now(),
      this.logger,
      (pools) => this.metrics.reclaimed(pools),
    );
    this.collector.start();
  }

  /**
   * Events from `fromSeq`, at most `limit`, and no more than fit in `maxBytes` of JSON (a NATS reply must fit the
   * server's max_payload): at least one event, so a reader always progresses.
   */
  private async readEventsPage(fromSeq: number, limit: number, maxBytes: number): Promise<unknown[]> {
    let bytes = 2;
    const out: unknown[] = [];
    for await (const page of this.log.read(fromSeq, Math.min(limit, 1000))) {
      for (const ev of page) {
        bytes += Buffer.byteLength(JSON.stringify(ev)) + 1;
        if ((bytes > maxBytes && out.length > 0) || out.length >= limit) return out;
        out.push(ev);
      }
    }
    return out;
  }

  /**
   * The events of one chain from `fromSeq` (state/chains.ts), at most `limit` and no more than fit in `maxBytes`,
   * from the last committed events in memory when they reach back to `fromSeq`, else scanning at most CHAIN_SCAN
   * events of the log per call; `through` is the seq up to which the answer holds every
   * event of the chain (the reader asks again after it).
   */
  private async readChainPage(chain: string, fromSeq: number, limit: number, maxBytes: number): Promise<{ events: unknown[]; through: number }> {
    const recent = this.recent.readChain(chain, fromSeq, limit, maxBytes);
    if (recent) return recent;
    let bytes = 2;
    const out: ClusterEvent[] = [];
    let through = fromSeq - 1;
    for await (const page of this.log.read(fromSeq, 1000)) {
      for (const ev of page) {
        if (chainOfEvent(ev) === chain) {
          bytes += Buffer.byteLength(JSON.stringify(ev)) + 1;
          if ((bytes > maxBytes && out.length > 0) || out.length >= limit) return { events: out, through };
          out.push(ev);
        }
        through = ev.seq;
        if (through - fromSeq + 1 >= CHAIN_SCAN) return { events: out, through };
      }
    }
    return { events: out, through };
  }

  /**
   * A piece of one part of the latest snapshot in etcd (`seq: 0` when there is none): from `offset`, as much as fits
   * `maxBytes` of JSON (quotes and non-ASCII text take more bytes in JSON than characters in the part).
   */
  private async snapshotPart(seq: number | undefined, part: number, offset: number, maxBytes: number): Promise<SnapshotReadRes> {
    const man = await this.snaps.latestManifest();
    if (!man) return { seq: 0, parts: 0, part: 0, data: '', offset: 0 };
    if (seq !== undefined && seq !== man.seq) throw new NotFoundError(`snapshot ${seq} was replaced by snapshot ${man.seq}; start again from part 0`);
    if (part >= man.parts) throw new InvalidArgumentError(`snapshot ${man.seq} has ${man.parts} parts, not part ${part}`);
    const text = await this.snaps.readPart(man.seq, part);
    if (text === undefined) throw new NotFoundError(`snapshot ${man.seq} was replaced; start again from part 0`);
    if (offset > text.length) throw new InvalidArgumentError(`part ${part} of snapshot ${man.seq} has ${text.length} characters, not offset ${offset}`);
    const data = pieceThatFits(text.slice(offset, offset + maxBytes), maxBytes);
    return { seq: man.seq, parts: man.parts, part, data, offset, partLength: text.length, ...(man.sha256 ? { sha256: man.sha256 } : {}), bytes: man.bytes };
  }

  /**
   * The latest snapshot's index, as read from etcd, for the manifest it was read under (a snapshot replaced at the same
   * seq, as a corrupt one is, has another SHA-256).
   */
  private indexCache?: { key: string; index: Promise<CachedIndex | undefined> };

  private cachedIndex(man: SnapshotManifest): Promise<CachedIndex | undefined> {
    const key = `${man.seq} ${man.sha256 ?? man.bytes}`;
    if (this.indexCache?.key !== key) {
      // The sections' JSON size is measured once, not at every agent's request.
      const index = this.snaps.readIndex(man.seq).then((i) => i && { ...i, sectionsBytes: Buffer.byteLength(JSON.stringify({ head: i.head, pools: i.pools })) });
      this.indexCache = { key, index };
      index.catch(() => this.indexCache?.index === index && (this.indexCache = undefined));
    }
    return this.indexCache.index;
  }

  /**
   * Where each pool's allocations lie in the latest snapshot (`seq: 0`: none; no `sections`: it has no index, or the
   * index does not fit `maxBytes`: the agent reads it whole).
   */
  private async snapshotIndex(maxBytes: number): Promise<SnapshotIndexRes> {
    const man = await this.snaps.latestManifest();
    if (!man) return { seq: 0, bytes: 0 };
    const index = await this.cachedIndex(man);
    if (!index) return { seq: man.seq, bytes: man.bytes };
    const res: SnapshotIndexRes = { seq: man.seq, bytes: man.bytes, sections: { head: index.head, pools: index.pools } };
    // The rest of the answer (`{"seq":…,"bytes":…,"sections":}`) is under 100 bytes.
    return index.sectionsBytes + 100 > maxBytes ? { seq: man.seq, bytes: man.bytes } : res;
  }

  /** Characters of the latest snapshot from `start` (up to `end`, the end of one etcd part, or what fits `maxBytes` of JSON). */
  private async snapshotRange(seq: number, start: number, end: number, maxBytes: number): Promise<SnapshotRangeRes> {
    const man = await this.snaps.latestManifest();
    if (!man || man.seq !== seq) throw new NotFoundError(`snapshot ${seq} was replaced${man ? ` by snapshot ${man.seq}` : ''}; read the latest index again`);
    if (end > man.bytes) throw new InvalidArgumentError(`snapshot ${seq} has ${man.bytes} characters, not up to ${end}`);
    const index = await this.cachedIndex(man);
    if (!index) throw new NotFoundError(`snapshot ${seq} has no index; read it whole`);
    const text = await this.snaps.readRange(seq, index.cuts, start, end);
    if (text === undefined) throw new NotFoundError(`snapshot ${seq} was replaced; read the latest index again`);
    return { seq, start, data: pieceThatFits(text, maxBytes) };
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
    const sub = nc.subscribe(rpcServeSubject('nodeReport'), {
      callback: (err, msg) => {
        if (err) return;
        try {
          const report = NodeReport.parse(msg.json());
          // Only a node's own report counts (the leader refuses the others).
          if (report.node === nodeOfRpcSubject(msg.subject)) this.nodes.record(report);
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
    const c = this.config;
    this.http = createHttpApi({
      state: () => this.writer.state,
      status: () => ({ role: this.role, name: this.config.name }),
      nodes: this.nodes,
      log: this.log,
      tokens: this.apiTokens,
      telemetry: { registry: this.metrics.registry, readiness: () => this.readiness(), http: (route, code, seconds) => this.metrics.http(route, code, seconds) },
      createNetwork: async (name, definition, actor, trace) => {
        this.leaderOnly();
        return this.networks.clusterNetworkCreate({ name, definition }, { actor, traceId: activeTraceId() ?? trace?.span?.traceId, span: trace?.span, operation: trace?.operation });
      },
      releaseAddress: async (req, actor, trace) => {
        this.leaderOnly();
        const r = await this.writer.run(
          (s) => decideOperatorRelease(s, req, checkNodes({ seen: this.nodes.all(), nowMs: Date.now() }), Date.now()),
          { actor, traceId: activeTraceId() ?? trace?.span?.traceId, span: trace?.span, operation: trace?.operation },
        );
        this.logger(`released ${r.address} of ${r.poolId} held by ${r.node} (operator release by ${actor})`);
        return r;
      },
      removeNetwork: async (name, actor, trace) => {
        this.leaderOnly();
        await this.networks.clusterNetworkRemove({ name }, { actor, traceId: activeTraceId() ?? trace?.span?.traceId, span: trace?.span, operation: trace?.operation }, this.nodes.containerOf, this.nodes.heldBy);
      },
    }, {
      logger: this.logger,
      tls: c.tlsCert && c.tlsKey ? readTlsFiles(c.tlsCert, c.tlsKey) : undefined,
      limits: {
        headersTimeoutMs: c.httpHeadersTimeoutMs, requestTimeoutMs: c.httpRequestTimeoutMs, idleTimeoutMs: c.httpIdleTimeoutMs,
        maxHeaderBytes: c.httpMaxHeaderBytes, maxConnections: c.httpMaxConnections, maxBodyBytes: c.httpMaxBodyBytes,
        followMax: c.eventsFollowMax, followMaxMs: c.eventsFollowMaxMs, followStallMs: c.eventsFollowStallMs,
      },
    });
    await new Promise<void>((resolve, reject) => {
      this.http!.once('error', reject);
      this.http!.listen(port, host, () => resolve());
    });
    const addr = this.http.address();
    if (addr && typeof addr === 'object') this.httpAddress = { host: addr.address, port: addr.port };
    this.logger(`controller ${this.config.name}: NATS ${this.config.nats.join(',')}, ${c.tlsCert ? 'HTTPS' : 'HTTP'} ${this.httpAddress?.host}:${this.httpAddress?.port}`);
  }

  /** Waits until every committed event has been handed to JetStream. */
  async flushEvents(): Promise<void> {
    await this.publisher?.flush();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.stopSignal('stopping');
    this.abort.abort();
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

/** Moved to api/tokens.ts (named tokens); kept exported from here. */
export { resolveApiToken } from './api/tokens.js';

export function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(':');
  return [s.slice(0, i) || '127.0.0.1', Number(s.slice(i + 1))];
}
